"""End to end: `imblab-eval` on a checkpoint of a tiny default training (bundled MNIST sample,
imbalanced test split of 241 images): reports, figures, predictions; DDP equal to one process;
clear one-line errors for a missing or corrupt checkpoint."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from imblab.errors import ConfigError
from imblab.metrics import evaluate
from imblab.pipelines.evaluation import load_checkpoint

from ..conftest import FAST

# sample_test_per_class=99 with imbalance_test: test counts 99, 59, 35, 21, 12, 7, 4, 2, 1, 1
# (N = 241: divisible by neither 2 nor 3)
TEST_COUNTS = [99, 59, 35, 21, 12, 7, 4, 2, 1, 1]
TRAIN = [*FAST, "data.sample_test_per_class=99", "data.imbalance_test=true"]
N_TEST = 241
FILES = {
    "report.json",
    "report.md",
    "report.csv",
    "predictions.npz",
    "confusion_matrix.png",
    "roc.png",
    "pr.png",
    "per_class.png",
}


def cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run dir of a one-epoch default training."""
    root = tmp_path_factory.mktemp("trained")
    run = root / "run"
    proc = cli(
        "imblab.train", *TRAIN, f"paths.data_dir={root}/data", f"hydra.run.dir={run}", cwd=root
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def single(trained: Path) -> Path:
    """imblab-eval of the best checkpoint in one process."""
    out = trained.parent / "eval_single"
    ckpt = next((trained / "checkpoints").glob("epoch_*.ckpt"))
    proc = cli("imblab.eval", f"ckpt_path={ckpt}", f"hydra.run.dir={out}", cwd=trained.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_eval_writes_every_report_and_figure(single: Path) -> None:
    assert {p.name for p in single.iterdir()} >= FILES
    for name in FILES:
        assert (single / name).stat().st_size > 0
    assert (single / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predictions_cover_the_test_split_once(single: Path) -> None:
    with np.load(single / "predictions.npz") as data:
        assert set(data.files) == {"probs", "targets", "ids", "split_fingerprint"}
        probs, targets, ids = data["probs"], data["targets"], data["ids"]
        assert len(str(data["split_fingerprint"])) == 64  # the test split's sha256
    assert probs.shape == (N_TEST, 10) and targets.shape == ids.shape == (N_TEST,)
    assert np.array_equal(ids, np.arange(N_TEST))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.bincount(targets, minlength=10).tolist() == TEST_COUNTS


def test_report_json_matches_evaluate_of_the_predictions_and_sklearn(single: Path) -> None:
    report = json.loads((single / "report.json").read_text())
    with np.load(single / "predictions.npz") as data:
        probs, targets = data["probs"], data["targets"]
    expected = evaluate(probs, targets)  # exact: AUROC and AP from every score
    for key, value in expected.items():
        got = report[key]
        assert (got is None and math.isnan(value)) or got == pytest.approx(value, abs=1e-12), key
    # the curve metrics are scikit-learn's on predictions.npz, not the training's binned ones
    for c in range(10):
        y = targets == c
        assert report[f"auroc/{c}"] == pytest.approx(roc_auc_score(y, probs[:, c]), abs=1e-12)
        ap = average_precision_score(y, probs[:, c])
        assert report[f"ap/{c}"] == pytest.approx(ap, abs=1e-12)
    assert report["ap_macro"] == pytest.approx(
        np.mean([average_precision_score(targets == c, probs[:, c]) for c in range(10)]),
        abs=1e-12,
    )
    pred = probs.argmax(axis=1)
    f1 = f1_score(targets, pred, labels=range(10), average=None, zero_division=0)
    assert [report[f"f1/{c}"] for c in range(10)] == pytest.approx(f1.tolist(), abs=1e-12)
    assert report["f1_macro"] == pytest.approx(
        f1_score(targets, pred, average="macro", zero_division=0), abs=1e-12
    )
    # every precision/recall/F key has its bootstrap interval around the point estimate
    for key in ("f1_macro", "f1/0", "recall/9", "precision_weighted", "f2_micro"):
        assert report[f"{key}_lo"] <= report[key] + 1e-12 <= report[f"{key}_hi"] + 2e-12
    assert report["loss"] > 0


def test_report_csv_and_markdown_hold_the_classification_report(single: Path) -> None:
    report = json.loads((single / "report.json").read_text())
    with (single / "report.csv").open() as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    assert {str(c) for c in range(10)} | {"macro avg", "micro avg", "weighted avg"} <= set(rows)
    precision, recall, _, support = precision_recall_fscore_support(
        *_arrays(single), labels=range(10), zero_division=0
    )
    for c in range(10):
        row = rows[str(c)]
        assert float(row["precision"]) == pytest.approx(precision[c], abs=1e-12)
        assert float(row["recall"]) == pytest.approx(recall[c], abs=1e-12)
        assert float(row["support"]) == support[c]
        assert float(row["f1_lo"]) == report[f"f1/{c}_lo"]
        assert float(row["auroc"]) == pytest.approx(report[f"auroc/{c}"])
    assert float(rows["macro avg"]["f2"]) == pytest.approx(report["f2_macro"])
    markdown = (single / "report.md").read_text()
    assert "| macro avg |" in markdown and "AUROC" in markdown and "95%" in markdown


def _arrays(out: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(out / "predictions.npz") as data:
        return data["targets"], data["probs"].argmax(axis=1)


@pytest.mark.parametrize("devices", [pytest.param(2, marks=pytest.mark.slow), 3])
def test_ddp_eval_writes_one_report_equal_to_one_process(
    trained: Path, single: Path, devices: int
) -> None:
    out = trained.parent / f"eval_ddp{devices}"
    ckpt = next((trained / "checkpoints").glob("epoch_*.ckpt"))
    proc = cli(
        "imblab.eval",
        f"ckpt_path={ckpt}",
        "trainer=ddp",
        f"trainer.devices={devices}",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={out}",
        cwd=trained.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name for p in out.iterdir()} >= FILES
    with np.load(single / "predictions.npz") as one, np.load(out / "predictions.npz") as many:
        assert np.array_equal(one["ids"], many["ids"])  # each sample exactly once
        assert np.array_equal(one["targets"], many["targets"])
        np.testing.assert_allclose(one["probs"], many["probs"], rtol=0, atol=1e-6)
    report_1 = json.loads((single / "report.json").read_text())
    report_n = json.loads((out / "report.json").read_text())
    assert report_1.keys() == report_n.keys()
    differ = {
        k: (v, report_n[k])
        for k, v in report_1.items()
        # float32 batch-mean losses depend on the batching; count-derived values are exact
        if v != report_n[k] and not (k == "loss" and abs(v - report_n[k]) < 1e-5)
    }
    assert not differ


@pytest.mark.parametrize("path", ["nope.ckpt", None])
def test_missing_checkpoint_is_a_one_line_error(tmp_path: Path, path: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        load_checkpoint(None if path is None else tmp_path / path)
    message = str(err.value)
    assert message.startswith("ckpt_path=") and "\n" not in message
    assert ("no such file" if path else "no checkpoint given") in message


def test_checkpoint_without_state_dict_is_a_one_line_error(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(ConfigError, match=r"^ckpt_path=.*: has no state_dict: not a Lightning"):
        load_checkpoint(tmp_path / "other.ckpt")


def test_corrupt_checkpoint_is_a_one_line_error(trained: Path, tmp_path: Path) -> None:
    ckpt = trained / "checkpoints" / "broken.ckpt"
    good = (trained / "checkpoints" / "last.ckpt").read_bytes()
    ckpt.write_bytes(good[: len(good) // 2])  # truncated
    try:
        proc = cli("imblab.eval", f"ckpt_path={ckpt}", cwd=tmp_path)
    finally:
        ckpt.unlink()
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert errors[0].startswith(f"error: ckpt_path={ckpt}: not a readable checkpoint")
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").rglob("report.json"))


@pytest.mark.slow
def test_binary_eval_reports_default_and_tuned_threshold(tmp_path: Path) -> None:
    """A two-class checkpoint trained without threshold tuning: imblab-eval tunes it on
    validation first, then reports test scores at 0.5 and at the tuned threshold."""
    run, out = tmp_path / "run", tmp_path / "eval"
    args = [*FAST, "experiment=mnist_binary", f"paths.data_dir={tmp_path}/data"]
    proc = cli("imblab.train", *args, f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = run / "checkpoints" / "last.ckpt"
    proc = cli("imblab.eval", f"ckpt_path={ckpt}", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    with np.load(out / "predictions.npz") as data:
        s, y = data["probs"][:, 1], data["targets"]
    threshold = report["binary_tuned/threshold"]
    assert report["binary/threshold"] == 0.5 and 0 < threshold < 1
    assert report["binary/f1"] == pytest.approx(f1_score(y, s >= np.float32(0.5)), abs=1e-12)
    assert report["binary_tuned/f1"] == pytest.approx(
        f1_score(y, s >= np.float32(threshold)), abs=1e-12
    )
    assert "tuned threshold" in (out / "report.md").read_text()


def _train_log_prior(run: Path) -> np.ndarray:
    ckpt = next((run / "checkpoints").glob("epoch_*.ckpt"))
    counts = np.array(torch.load(ckpt, weights_only=True)["hyper_parameters"]["train_counts"])
    return np.log(counts / counts.sum())


def _eval(trained: Path, name: str, *overrides: str) -> tuple[Path, dict]:
    out = trained.parent / name
    ckpt = next((trained / "checkpoints").glob("epoch_*.ckpt"))
    proc = cli(
        "imblab.eval", f"ckpt_path={ckpt}", *overrides, f"hydra.run.dir={out}", cwd=trained.parent
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text())


def test_logit_adjustment_with_a_given_tau(trained: Path, single: Path) -> None:
    """The adjusted model's predictions are argmax(logits - tau log prior) (NumPy, from the
    unadjusted run's probabilities: log p = logits - logsumexp), the prior the checkpoint's
    training class frequencies; the report holds tau and is exact on the adjusted predictions."""
    out, report = _eval(trained, "eval_la_1", "eval.logit_adjustment=1.0")
    assert report["logit_adjustment_tau"] == 1.0
    with np.load(single / "predictions.npz") as data:
        probs, targets = data["probs"], data["targets"]
    adjusted = np.log(probs.astype(np.float64)) - 1.0 * _train_log_prior(trained)
    pred = adjusted.argmax(axis=1)
    _, recall, _, _ = precision_recall_fscore_support(
        targets, pred, labels=range(10), zero_division=0
    )
    assert [report[f"recall/{c}"] for c in range(10)] == pytest.approx(recall, abs=1e-12)
    with np.load(out / "predictions.npz") as data:
        np.testing.assert_allclose(
            data["probs"], np.exp(adjusted) / np.exp(adjusted).sum(1, keepdims=True), atol=1e-5
        )
        for c in range(10):
            y, s = data["targets"] == c, data["probs"][:, c]
            assert report[f"ap/{c}"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert "logit adjustment tau" in (out / "report.md").read_text()


@pytest.fixture(scope="module")
def val_eval(trained: Path) -> tuple[Path, dict]:
    """imblab-eval of the best checkpoint on the validation split (binned count state)."""
    return _eval(trained, "eval_val", "eval.split=val", "eval.bootstrap=0", "eval.figures=false")


def test_val_report_curves_are_exact_not_the_binned_validation_curves(
    val_eval: tuple[Path, dict],
) -> None:
    """#16 item 10: the validation count state is binned (200 thresholds); the report's AUROC
    and AP are scikit-learn's on predictions.npz all the same."""
    out, report = val_eval
    with np.load(out / "predictions.npz") as data:
        probs, targets = data["probs"], data["targets"]
    aps = []
    for c in range(10):
        y = targets == c
        if 0 < y.sum() < len(y):
            auroc = roc_auc_score(y, probs[:, c])
            assert report[f"auroc/{c}"] == pytest.approx(auroc, abs=1e-12)
        if y.any():
            aps.append(average_precision_score(y, probs[:, c]))
            assert report[f"ap/{c}"] == pytest.approx(aps[-1], abs=1e-12)
    assert report["ap_macro"] == pytest.approx(np.mean(aps), abs=1e-12)


def test_logit_adjustment_auto_tunes_tau_on_validation(
    trained: Path, val_eval: tuple[Path, dict]
) -> None:
    """auto: the tau of 0, 0.25, .., 2 with the best validation balanced accuracy."""
    val, _ = val_eval
    with np.load(val / "predictions.npz") as data:
        log_p, y_val = np.log(data["probs"].astype(np.float64)), data["targets"]
    log_prior = _train_log_prior(trained)
    grid = [0.25 * i for i in range(9)]
    scores = [
        balanced_accuracy_score(y_val, (log_p - tau * log_prior).argmax(axis=1)) for tau in grid
    ]
    _, report = _eval(trained, "eval_la_auto", "eval.logit_adjustment=auto", "eval.bootstrap=0")
    assert report["logit_adjustment_tau"] == grid[int(np.argmax(scores))]


def test_bad_logit_adjustment_fails_before_loading_the_checkpoint(tmp_path: Path) -> None:
    proc = cli("imblab.eval", "ckpt_path=missing.ckpt", "eval.logit_adjustment=fast", cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: eval.logit_adjustment='fast': not null, auto or a number >= 0; use null (off), "
        "auto (tau tuned on validation) or a tau such as 1.0"
    ]
