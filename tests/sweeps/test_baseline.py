"""`imblab-compare SWEEP_DIR --baseline` on hand-made run dirs: pairing by seed (failed runs and
missing seeds), Holm-adjusted verdicts in each tag's direction, matching by override or
config-group choice, the test-set variance from predictions.npz, --predictions, and the files.
Every number is checked against scipy or a direct NumPy computation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

from imblab import baseline
from imblab.canvas import texts_outside
from imblab.errors import ConfigError
from imblab.metrics.bootstrap import poisson_weights
from imblab.reports import save_predictions
from imblab.runs import find_runs, load_run

from .test_compare import epoch, make_run, read_csv, run_compare

COLUMNS = "tag n_seeds baseline_mean mean diff lo hi p_value p_adjusted method verdict"
COLUMNS += " seeds_needed note"


def seed_run(
    sweep: Path,
    index: int,
    loss: str,
    seed: int,
    test: dict[str, float] | None,
    failed: str | None = None,
    choices: dict[str, str] | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """A sweep job ``<index>_loss=<loss>,seed=<seed>`` with test values (None: failed)."""
    given = overrides if overrides is not None else [f"loss={loss}"]
    run = make_run(
        sweep,
        f"{index}_loss={loss},seed={seed}",
        [*given, f"seed={seed}"],
        None if failed else [epoch(0.5, [1] * 4)],
        test,
        failed=failed,
    )
    if choices is not None:
        hydra = {"hydra": {"runtime": {"choices": choices}}}
        (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    return run


# f1 and loss per (loss, seed); focal's seed 3 failed, ldam has only seed 1
F1 = {
    ("ce", 1): 0.60,
    ("ce", 2): 0.62,
    ("ce", 3): 0.59,
    ("focal", 1): 0.66,
    ("focal", 2): 0.69,
    ("ldam", 1): 0.70,
    ("cb", 1): 0.61,
    ("cb", 2): 0.60,
    ("cb", 3): 0.62,
}


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    for i, ((loss, seed), f1) in enumerate(F1.items()):
        seed_run(root, i, loss, seed, {"test/f1_macro": f1, "test/loss": 1 - f1})
    seed_run(root, 20, "focal", 3, None, failed="ValueError: NaN loss")
    return root


def rows_of(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["loss"], r["tag"]): r for r in read_csv(path)}


def test_each_configuration_against_the_baseline_paired_by_seed(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    tags = ["test/f1_macro", "test/loss"]
    assert run_compare(sweep, "--baseline", "loss=ce", "--tags", *tags, "--out", out) == 0
    printed = capsys.readouterr().out
    header = (out / "compare_baseline.csv").read_text().splitlines()[0].split(",")
    assert header == ["loss", *COLUMNS.split()]
    rows = rows_of(out / "compare_baseline.csv")
    assert {loss for loss, _ in rows} == {"focal", "ldam", "cb"}  # the baseline is no row
    p_values = {}
    for loss, seeds in (("focal", [1, 2]), ("cb", [1, 2, 3])):
        a = np.array([F1[loss, s] for s in seeds])
        b = np.array([F1["ce", s] for s in seeds])
        row = rows[loss, "test/f1_macro"]
        assert int(row["n_seeds"]) == len(seeds) and row["method"] == "seed"
        assert float(row["diff"]) == pytest.approx((a - b).mean())
        assert float(row["baseline_mean"]) == pytest.approx(b.mean())
        assert float(row["mean"]) == pytest.approx(a.mean())
        p_values[loss] = stats.ttest_rel(a, b).pvalue
        assert float(row["p_value"]) == pytest.approx(p_values[loss])
        half = stats.t.ppf(0.975, len(seeds) - 1) * (a - b).std(ddof=1) / math.sqrt(len(seeds))
        assert float(row["lo"]) == pytest.approx((a - b).mean() - half)
        assert float(row["hi"]) == pytest.approx((a - b).mean() + half)
        assert "test-set noise not included" in row["note"]
        # the loss is 1 - f1: the same p-value, the other direction
        assert float(rows[loss, "test/loss"]["p_value"]) == pytest.approx(p_values[loss])
    # Holm over the two configurations with a p-value (ldam has none)
    low, high = sorted(p_values.values())
    adjusted = {
        k: min(1, 2 * low) if p == low else max(min(1, 2 * low), min(1, high))
        for k, p in p_values.items()
    }
    for loss, p in adjusted.items():
        assert float(rows[loss, "test/f1_macro"]["p_adjusted"]) == pytest.approx(p)
    focal, focal_loss = rows["focal", "test/f1_macro"], rows["focal", "test/loss"]
    assert focal["verdict"] == ("better" if adjusted["focal"] < 0.05 else "not separable")
    assert focal_loss["verdict"] == focal["verdict"]  # lower loss is better
    assert "seed 3 of the baseline" in focal["note"]  # focal's seed 3 failed
    assert focal["seeds_needed"].isdigit()
    ldam = rows["ldam", "test/f1_macro"]
    assert ldam["n_seeds"] == "1" and ldam["verdict"] == "" and ldam["p_value"] == ""
    assert "1 seed in common" in ldam["note"]
    assert float(ldam["diff"]) == pytest.approx(F1["ldam", 1] - F1["ce", 1])
    # printed: every line within 120 columns, the failed job listed
    assert max(map(len, printed.splitlines())) <= 120
    assert "test/loss (lower is better)" in printed and "failed: ValueError: NaN loss" in printed
    markdown = (out / "compare_baseline.md").read_text()
    assert "| loss | tag | n_seeds |" in markdown and "Holm-adjusted" in markdown
    assert (out / "compare_baseline.png").read_bytes().startswith(b"\x89PNG")


def test_the_forest_plot_keeps_its_text_on_the_canvas(sweep: Path) -> None:
    tags = ["test/f1_macro", "test/loss", "test/accuracy_few", "test/some_very_long_metric_name"]
    runs = [load_run(p, sweep) for p in find_runs(sweep)]
    options = baseline.Options({"loss": "ce"}, tags, ["seed"])
    fig = baseline.forest_figure(baseline.compare_to_baseline(runs, options))
    assert texts_outside(fig) == []
    legend = fig.legends[0]
    assert "per comparison" in legend.get_title().get_text()
    assert "Holm-adjusted" in legend.get_title().get_text()
    assert len(fig.axes) == 6 and sum(ax.get_visible() for ax in fig.axes) == 4


def test_baseline_matches_config_group_choices(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"
    i = 0
    for experiment, loss in (("lt_ce", "ce"), ("lt_focal", "focal")):
        for seed in (1, 2, 3):
            choices = {"loss": loss, "sampler": "none", "experiment": experiment}
            test = {"test/f1_macro": 0.5 + 0.1 * (loss == "focal") + 0.01 * seed**2}
            seed_run(sweep, i, loss, seed, test, choices=choices, overrides=[f"x={experiment}"])
            i += 1
    out = tmp_path / "out"
    args = ["--tags", "test/f1_macro", "--out", out, "--no-figure"]
    assert run_compare(sweep, "--baseline", "loss=ce", *args) == 0  # a choice, not an override
    ((config, tag),) = rows_of_keys(out / "compare_baseline.csv", "x")
    assert config == "lt_focal" and tag == "test/f1_macro"
    capsys.readouterr()
    assert run_compare(sweep, "--baseline", "sampler=none", *args) == 2  # both have it
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 configurations match (x=lt_ce; x=lt_focal)" in err
    assert run_compare(sweep, "--baseline", "loss=ldam", *args) == 2
    assert "no configuration matches" in capsys.readouterr().err
    assert run_compare(sweep, "--baseline", "loss", *args) == 2
    assert "not KEY=VALUE" in capsys.readouterr().err


def rows_of_keys(path: Path, key: str) -> list[tuple[str, str]]:
    return [(r[key], r["tag"]) for r in read_csv(path)]


def test_a_directions_record_decides_and_an_unlisted_tag_gets_no_verdict(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    pairs = [(loss, seed) for loss in ("ce", "focal") for seed in (1, 2, 3)]
    for i, (loss, seed) in enumerate(pairs):
        value = 0.5 + (0.2 if loss == "focal" else 0) + 0.001 * seed * (i % 2)
        run = seed_run(sweep, i, loss, seed, {"test/f1_macro": value, "test/brier": value})
        record = json.loads((run / "metrics.json").read_text())
        record["directions"] = {"test/f1_macro": False}  # as if lower were better
        (run / "metrics.json").write_text(json.dumps(record))
    out = tmp_path / "out"
    tags = ["test/f1_macro", "test/brier"]
    assert run_compare(sweep, "--baseline", "loss=ce", "--tags", *tags, "--out", out) == 0
    rows = rows_of(out / "compare_baseline.csv")
    assert rows["focal", "test/f1_macro"]["verdict"] == "worse"
    assert rows["focal", "test/brier"]["verdict"] == ""  # not in the record: unknown
    assert "direction unknown" in rows["focal", "test/brier"]["note"]


# -- method=seed+test -----------------------------------------------------------------------------

N_TEST = 400


def prediction_run(
    sweep: Path,
    index: int,
    loss: str,
    seed: int,
    skill: float,
    fingerprint: str = "f" * 64,
    where: str = "",
    shift: float = 0.0,
) -> tuple[Path, np.ndarray]:
    """A run whose test/accuracy comes from its predictions of the same N_TEST images (plus
    ``shift`` to make them disagree); the predictions go to ``<run>/<where>``."""
    rng = np.random.default_rng([index, seed])
    targets = np.arange(N_TEST) % 4
    logits = rng.normal(size=(N_TEST, 4))
    logits[np.arange(N_TEST), targets] += skill
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    correct = (probs.argmax(1) == targets).astype(float)
    run = seed_run(sweep, index, loss, seed, {"test/accuracy": correct.mean() + shift})
    target = run / where if where else run
    target.mkdir(exist_ok=True)
    ids = np.arange(N_TEST) * 2 + 3
    save_predictions(target / "predictions.npz", probs, targets, ids, fingerprint=fingerprint)
    return run, correct


def test_seed_test_adds_the_test_sets_bootstrap_variance(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    correct = {}
    for i, (loss, skill) in enumerate((("ce", 1.0), ("focal", 1.4))):
        for seed in (1, 2, 3):
            correct[loss, seed] = prediction_run(sweep, 3 * i + seed, loss, seed, skill)[1]
    out = tmp_path / "out"
    args = ["--baseline", "loss=ce", "--tags", "test/accuracy", "--out", out, "--no-figure"]
    assert run_compare(sweep, *args, "--n-boot", "300", "--seed", "4") == 0
    (row,) = read_csv(out / "compare_baseline.csv")
    assert row["method"] == "seed+test" and row["note"] == ""
    # the direct computation: Poisson weights of (seed 4, id, b), weighted accuracies
    ids = torch.from_numpy(np.arange(N_TEST) * 2 + 3)
    w = poisson_weights(ids, 4, 300).numpy().astype(float)
    boot = {k: (c @ w) / w.sum(0) for k, c in correct.items()}
    d = np.array([correct["focal", s].mean() - correct["ce", s].mean() for s in (1, 2, 3)])
    v_test = np.mean([boot["focal", s] - boot["ce", s] for s in (1, 2, 3)], axis=0).var(ddof=1)
    seed_part = d.var(ddof=1) / 3
    se = math.sqrt(seed_part + v_test)
    crit = (seed_part * stats.t.ppf(0.975, 2) + v_test * stats.norm.ppf(0.975)) / se**2
    assert float(row["diff"]) == pytest.approx(d.mean())
    assert float(row["lo"]) == pytest.approx(d.mean() - crit * se, rel=1e-9)
    assert float(row["hi"]) == pytest.approx(d.mean() + crit * se, rel=1e-9)


@pytest.mark.parametrize(
    ("change", "note"),
    [
        ({"fingerprint": "0" * 64}, "test splits differ"),
        ({"shift": 0.01}, "does not give its test/accuracy"),
    ],
)
def test_predictions_of_other_images_fall_back_to_method_seed(
    tmp_path: Path, change: dict[str, Any], note: str
) -> None:
    sweep = tmp_path / "sweep"
    for i, loss in enumerate(("ce", "focal")):
        for seed in (1, 2, 3):
            odd = change if (loss, seed) == ("focal", 2) else {}
            prediction_run(sweep, 3 * i + seed, loss, seed, 1.0 + 0.3 * i, **odd)
    out = tmp_path / "out"
    args = ["--baseline", "loss=ce", "--tags", "test/accuracy", "--out", out, "--no-figure"]
    assert run_compare(sweep, *args, "--n-boot", "50") == 0
    (row,) = read_csv(out / "compare_baseline.csv")
    assert row["method"] == "seed" and note in row["note"]


def test_predictions_glob_takes_eval_dirs(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"
    runs = []
    for i, loss in enumerate(("ce", "focal")):
        for seed in (1, 2):
            run, _ = prediction_run(sweep, 2 * i + seed, loss, seed, 1 + i, where="eval")
            (run / "eval" / "report.json").write_text("{}")  # an imblab-eval dir in the run
            (run / "eval" / ".hydra").mkdir()
            (run / "eval" / ".hydra" / "overrides.yaml").write_text("- ckpt_path=x\n")
            runs.append(run)
    # one evaluation elsewhere, found by the checkpoint its config names
    outside = tmp_path / "evals" / "last"
    outside.parent.mkdir()
    (runs[-1] / "eval").rename(outside)
    ckpt = runs[-1] / "checkpoints" / "epoch_000.ckpt"
    (outside / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"ckpt_path": str(ckpt)}))
    out = tmp_path / "out"
    args = ["--baseline", "loss=ce", "--tags", "test/accuracy", "--out", out, "--no-figure"]
    assert run_compare(sweep, *args, "--n-boot", "50") == 0  # own predictions: none
    (row,) = read_csv(out / "compare_baseline.csv")
    assert row["method"] == "seed" and "no predictions.npz for 4 of 4 runs" in row["note"]
    globs = [str(sweep / "*" / "eval"), str(tmp_path / "evals" / "*")]
    assert run_compare(sweep, *args, "--n-boot", "50", "--predictions", *globs) == 0
    (row,) = read_csv(out / "compare_baseline.csv")  # the eval dirs are not runs
    assert row["method"] == "seed+test" and row["n_seeds"] == "2"
    capsys.readouterr()
    assert run_compare(sweep, *args, "--predictions", str(tmp_path / "none*")) == 2
    assert "matches nothing" in capsys.readouterr().err


# -- predictions.npz from training ---------------------------------------------------------------


def test_training_writes_the_best_checkpoints_test_predictions(compose_cfg, tmp_path: Path) -> None:
    from imblab.pipelines.training import train
    from imblab.reports import load_predictions
    from imblab.reports.predictions import load_fingerprint

    from ..conftest import FAST

    limits = ("+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1")
    cfg = compose_cfg(*FAST, "logger=none", "metrics=scalars", *limits)
    metrics = train(cfg)
    probs, targets, ids = load_predictions(tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert len(record["test_fingerprint"]) == 64
    assert load_fingerprint(tmp_path) == record["test_fingerprint"]
    assert np.array_equal(ids, np.sort(ids)) and len(ids) == sum(
        record["data"]["class_counts"]["test"]
    )
    accuracy = float(np.mean(probs.argmax(1) == targets))
    assert accuracy == pytest.approx(metrics["test/accuracy"], abs=1e-6)
    assert record["metrics"]["test/accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_test_predictions_is_checked_and_can_be_switched_off(compose_cfg) -> None:
    from imblab.pipelines.training import records_test_predictions

    assert records_test_predictions(compose_cfg())
    assert not records_test_predictions(compose_cfg("test_predictions=false"))
    assert not records_test_predictions(compose_cfg("test=false"))
    with pytest.raises(ConfigError, match=r"^test_predictions=3: .*set test_predictions=true"):
        records_test_predictions(compose_cfg("test_predictions=3"))


def test_a_validation_tag_is_compared_at_the_best_epoch_with_seed_noise_only(
    tmp_path: Path,
) -> None:
    sweep = tmp_path / "sweep"
    best = {}
    for i, (loss, seed) in enumerate((loss, s) for loss in ("ce", "focal") for s in (1, 2, 3)):
        top = 0.6 + 0.1 * (loss == "focal") + 0.01 * seed * i
        best[loss, seed] = top
        epochs = [epoch(top - 0.2, [1] * 4), epoch(top, [1] * 4), epoch(top - 0.1, [1] * 4)]
        make_run(sweep, f"{i}_x", [f"loss={loss}", f"seed={seed}"], epochs)
    out = tmp_path / "out"
    args = ["--baseline", "loss=ce", "--tags", "val/f1_macro", "--out", out, "--no-figure"]
    assert run_compare(sweep, *args) == 0
    (row,) = read_csv(out / "compare_baseline.csv")
    d = np.array([best["focal", s] - best["ce", s] for s in (1, 2, 3)])
    assert float(row["diff"]) == pytest.approx(d.mean(), rel=1e-6)  # the best epochs' values
    assert row["method"] == "seed" and "selected on this tag" in row["note"]


def test_runs_saved_before_test_predictions_existed_still_resume(compose_cfg, tmp_path) -> None:
    from omegaconf import OmegaConf

    from imblab.config import check_rerun, task_config

    run = tmp_path / "run"
    saved = task_config(compose_cfg(run_dir=run))
    del saved["test_predictions"]  # a run of imblab before the key
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    (run / "metrics.json").write_text("{}")
    check_rerun(compose_cfg(run_dir=run), run)  # the new default: not a change of the run
    check_rerun(compose_cfg("test_predictions=false", run_dir=run), run)
    saved["model"]["optimizer"]["lr"] = 0.5  # a real change is still refused
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    with pytest.raises(ConfigError, match="holds a run of another config"):
        check_rerun(compose_cfg(run_dir=run), run)
