"""Paired bootstrap comparison of two runs' predictions against a direct numpy computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from imblab.compare import build_parser, compare
from imblab.errors import ConfigError
from imblab.metrics.bootstrap import poisson_weights
from imblab.reports import format_paired, load_predictions, paired_compare, save_predictions

C = 4


def _run(path: Path, probs: np.ndarray, targets: np.ndarray, ids: np.ndarray) -> Path:
    path.mkdir(parents=True)
    save_predictions(path / "predictions.npz", probs, targets, ids)
    return path


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray]:
    """Run A (better on the tail class 3) and run B on the same 400 samples, stored in
    different orders."""
    rng = np.random.default_rng(0)
    n = 400
    targets = rng.choice(C, size=n, p=[0.5, 0.25, 0.15, 0.1])
    ids = np.arange(10, 10 + n)
    noise_a, noise_b = rng.normal(size=(n, C)), rng.normal(size=(n, C))
    boost_a = np.where(targets == 3, 2.5, 1.5)
    probs_a = np.exp(noise_a + np.eye(C)[targets] * boost_a[:, None])
    probs_b = np.exp(noise_b + np.eye(C)[targets] * 1.5)
    probs_a /= probs_a.sum(1, keepdims=True)
    probs_b /= probs_b.sum(1, keepdims=True)
    perm = rng.permutation(n)
    a = _run(tmp_path / "a", probs_a, targets, ids)
    b = _run(tmp_path / "b", probs_b[perm], targets[perm], ids[perm])
    return a, b, probs_a.argmax(1), probs_b.argmax(1), targets


def test_paired_compare_matches_a_direct_numpy_bootstrap(runs) -> None:
    a, b, pred_a, pred_b, targets = runs
    n_boot, seed = 150, 4
    result = paired_compare(a, b / "predictions.npz", n_boot=n_boot, seed=seed, confidence=0.9)
    ids = np.arange(10, 10 + len(targets))
    w = poisson_weights(torch.from_numpy(ids), seed, n_boot).numpy()

    def f1(pred: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        """Per-class and macro F1 (over classes present in targets or predictions)."""
        idx = (
            np.arange(len(targets))
            if weights is None
            else np.repeat(np.arange(len(targets)), weights)
        )
        per_class = f1_score(
            targets[idx], pred[idx], labels=range(C), average=None, zero_division=0
        )
        macro = f1_score(targets[idx], pred[idx], average="macro", zero_division=0)
        return np.array([macro, *per_class])

    observed = f1(pred_a, None) - f1(pred_b, None)
    diffs = np.array([f1(pred_a, w[:, k]) - f1(pred_b, w[:, k]) for k in range(n_boot)])
    lo, hi = np.percentile(diffs, [5, 95], axis=0)
    keys = ["f1_macro", *(f"f1/{c}" for c in range(C))]
    for j, key in enumerate(keys):
        got = result["metrics"][key]
        assert got["diff"] == pytest.approx(observed[j], abs=1e-12)
        assert got["a"] - got["b"] == pytest.approx(got["diff"], abs=1e-12)
        assert got["lo"] == pytest.approx(lo[j], abs=1e-12), key
        assert got["hi"] == pytest.approx(hi[j], abs=1e-12), key
        p = min(1.0, 2 * min(np.mean(diffs[:, j] <= 0), np.mean(diffs[:, j] >= 0)))
        assert got["p_value"] == pytest.approx(p)
    assert result["n"] == len(targets) and result["n_boot"] == n_boot
    # A is better on the tail class, and the paired interval says so
    assert result["metrics"]["f1/3"]["lo"] > 0


def test_a_run_against_itself_differs_by_exactly_zero(runs) -> None:
    a, *_ = runs
    same = paired_compare(a, a, n_boot=50)
    assert all(m["diff"] == 0 and m["lo"] == 0 and m["hi"] == 0 for m in same["metrics"].values())


def test_format_paired_is_a_markdown_table(runs) -> None:
    a, b, *_ = runs
    text = format_paired(paired_compare(a, b, n_boot=50))
    lines = text.splitlines()
    assert lines[2].startswith("| metric | A | B | A - B | 95% interval |")
    assert sum(line.startswith("| f1") for line in lines) == 1 + C


def test_different_samples_are_refused(runs, tmp_path: Path) -> None:
    a, *_ = runs
    probs, targets, ids = load_predictions(a)
    other = _run(tmp_path / "other", probs, targets, ids + 1)
    with pytest.raises(ConfigError, match="ids differ"):
        paired_compare(a, other)
    relabelled = _run(tmp_path / "relabelled", probs, (targets + 1) % C, ids)
    with pytest.raises(ConfigError, match="different targets"):
        paired_compare(a, relabelled)
    with pytest.raises(ConfigError, match=r"no predictions\.npz"):
        paired_compare(a, tmp_path / "missing")


def test_imblab_compare_paired_prints_and_writes_the_comparison(
    runs, tmp_path: Path, capsys
) -> None:
    a, b, *_ = runs
    out = tmp_path / "out"
    code = compare(
        build_parser().parse_args(
            ["--paired", str(a), str(b), "--n-boot", "50", "--out", str(out), "--name", "ab"]
        )
    )
    assert code == 0
    expected = paired_compare(a, b, n_boot=50, seed=0, confidence=0.95)
    assert format_paired(expected) in capsys.readouterr().out
    assert json.loads((out / "ab.json").read_text()) == json.loads(json.dumps(expected))
    assert format_paired(expected) in (out / "ab.md").read_text()


def test_imblab_compare_paired_refuses_a_sweep_dir_too_and_bad_runs(runs, tmp_path: Path) -> None:
    a, b, *_ = runs
    parser = build_parser()
    assert compare(parser.parse_args([str(tmp_path), "--paired", str(a), str(b)])) == 2
    assert compare(parser.parse_args([])) == 2
    assert compare(parser.parse_args(["--paired", str(a), str(tmp_path / "nope")])) == 2
