"""`imblab-compare` on hand-made run dirs: values at the best and last epoch, minority recall,
mean +- std over seeds, failed runs, and the files it writes."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from imblab.compare import build_parser, compare, default_tags, seed_decimals
from imblab.runs import write_summary

CLASSES = ["a", "b", "c", "d"]
TRAIN_COUNTS = [100, 5, 50, 2]  # the two rarest classes: d, then b


def approx(x: float) -> Any:
    """Values read back from TensorBoard events are float32."""
    return pytest.approx(x, rel=1e-6)


def make_run(
    root: Path,
    name: str,
    overrides: list[str],
    epochs: list[dict[str, float]] | None,
    final_test: dict[str, float] | None = None,
    failed: str | None = None,
    mode: str = "max",
) -> Path:
    """A run dir as imblab-train writes it: overrides, status, metrics.json and events with one
    point per epoch at steps 10, 20, ..."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    status = {"status": "failed" if failed else "completed", "error": failed}
    status["objective"] = {"metric": "val/f1_macro", "mode": mode, "value": None}
    (run / "status.json").write_text(json.dumps(status))
    if epochs is None:
        return run
    writer = SummaryWriter(str(run / "tensorboard"))
    for i, scalars in enumerate(epochs):
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step=10 * (i + 1))
    writer.close()
    record: dict[str, Any] = {
        "monitor": {"metric": "val/f1_macro", "mode": mode},
        "data": {
            "train_counts": ",".join(map(str, TRAIN_COUNTS)),
            "class_names": ",".join(CLASSES),
        },
        "metrics": {**epochs[-1], **(final_test or {})},
    }
    (run / "metrics.json").write_text(json.dumps(record))
    return run


def epoch(f1: float, recalls: list[float]) -> dict[str, float]:
    return {
        "val/f1_macro": f1,
        **{f"val/recall/{c}": r for c, r in zip(CLASSES, recalls, strict=True)},
    }


def run_compare(*args: str) -> int:
    return compare(build_parser().parse_args([str(a) for a in args]))


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_best_and_last_epoch_values_and_minority_recall(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_run(
        sweep,
        "0_lr=0.1",
        ["lr=0.1", "seed=1"],
        [epoch(0.2, [1, 0.1, 1, 0.0]), epoch(0.6, [1, 0.5, 1, 0.25]), epoch(0.4, [1, 0, 1, 0])],
        {"test/f1_macro": 0.55, "test/recall/b": 0.3, "test/recall/d": 0.7},
    )
    make_run(sweep, "1_lr=1", ["lr=1", "seed=1"], None, failed="ValueError: preds contain NaN")
    tags = ["val/f1_macro", "val/minority_recall", "test/f1_macro", "test/minority_recall"]
    out = tmp_path / "out"
    assert run_compare(sweep, "--tags", *tags, "--minority-k", "2", "--out", out) == 0
    good, bad = read_csv(out / "compare.csv")
    assert list(good)[:4] == ["run", "lr", "status", "error"]  # seed is the same everywhere
    assert float(good["val/f1_macro (best)"]) == approx(0.6)  # the monitor's best epoch (step 20)
    assert float(good["val/f1_macro (last)"]) == 0.4
    assert float(good["val/minority_recall (best)"]) == approx((0.5 + 0.25) / 2)
    assert float(good["val/minority_recall (last)"]) == 0.0
    assert float(good["test/f1_macro"]) == 0.55
    assert float(good["test/minority_recall"]) == pytest.approx(0.5)
    assert bad["status"] == "failed" and bad["error"] == "ValueError: preds contain NaN"
    assert bad["val/f1_macro (best)"] == ""
    table = (out / "compare.md").read_text()
    assert "| 1 | 1 | failed: ValueError: preds contain NaN |" in table  # job 1, lr=1
    assert "1 of 2 runs did not complete" in table
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")


def test_min_mode_monitor_picks_the_lowest_epoch(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_run(
        sweep,
        "0_a",
        ["x=1"],
        [epoch(0.5, [1] * 4), epoch(0.3, [0] * 4), epoch(0.9, [1] * 4)],
        mode="min",
    )
    assert run_compare(sweep, "--tags", "val/f1_macro", "--no-figure") == 0
    (row,) = read_csv(sweep / "compare.csv")
    assert float(row["val/f1_macro (best)"]) == approx(0.3)
    assert not (sweep / "compare.png").exists()


def test_group_seeds_gives_mean_and_std_over_completed_runs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    values = {("ce", 1): 0.5, ("ce", 2): 0.7, ("ce", 3): 0.6, ("focal", 1): 0.8, ("focal", 2): 0.9}
    for i, ((loss, seed), f1) in enumerate(values.items()):
        make_run(
            sweep, f"{i}_{loss}_{seed}", [f"loss={loss}", f"seed={seed}"], [epoch(f1, [1] * 4)]
        )
    make_run(sweep, "9_focal_3", ["loss=focal", "seed=3"], None, failed="OutOfMemoryError: x")
    out = tmp_path / "out"
    assert run_compare(sweep, "--group-seeds", "--tags", "val/f1_macro", "--out", out) == 0
    rows = {r["loss"]: r for r in read_csv(out / "compare.csv")}
    assert set(rows) == {"ce", "focal"} and "seed" not in rows["ce"]
    for loss, expected_failed in (("ce", 0), ("focal", 1)):
        f1s = [v for (lo, _), v in values.items() if lo == loss]
        row = rows[loss]
        assert int(row["runs"]) == len(f1s) and int(row["failed"]) == expected_failed
        assert float(row["val/f1_macro (best) mean"]) == approx(statistics.fmean(f1s))
        assert float(row["val/f1_macro (best) std"]) == approx(statistics.stdev(f1s))
    table = (out / "compare.md").read_text()
    # std 0.1 over three seeds: two significant digits of it, the mean to the same decimals
    assert "| ce | 3 | 0 | 0.60 ± 0.10 | 0.60 ± 0.10 |" in table


def test_single_seed_group_has_zero_std_and_missing_tags_are_blank(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_run(sweep, "0_a", ["loss=ce"], [epoch(0.5, [1] * 4)])
    make_run(sweep, "1_b", ["loss=focal"], [epoch(0.7, [1] * 4)])
    assert (
        run_compare(sweep, "--group-seeds", "--tags", "val/f1_macro", "test/mcc", "--no-figure")
        == 0
    )
    rows = read_csv(sweep / "compare.csv")
    assert [float(r["val/f1_macro (last) std"]) for r in rows] == [0.0, 0.0]
    assert all(math.isnan(float(r["test/mcc mean"])) for r in rows)


def test_summary_lists_failed_jobs(tmp_path: Path) -> None:
    make_run(tmp_path, "0_x=1", ["x=1"], [epoch(0.5, [1] * 4)])
    make_run(tmp_path, "1_x=2", ["x=2"], None, failed="ConfigError: x=2: bad; use x=1")
    path = write_summary(tmp_path)
    assert path is not None
    text = path.read_text()
    assert "- `1_x=2`: failed: ConfigError: x=2: bad; use x=1" in text
    assert len(read_csv(tmp_path / "summary.csv")) == 2


def test_no_runs_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_compare(tmp_path) == 2
    assert "no runs" in capsys.readouterr().err
    assert run_compare(tmp_path / "missing") == 2


@pytest.mark.parametrize(
    ("std", "decimals"),
    [(0.1, 2), (0.5, 2), (0.0123, 3), (0.0012, 4), (0.00012, 4), (2.3e-06, 3), (0.0, 3)],
)
def test_seed_decimals_keep_two_significant_digits_of_the_spread(std: float, decimals: int):
    assert seed_decimals(std) == decimals


def test_identical_seeds_print_no_spurious_std(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"
    for i, (seed, f1) in enumerate(((1, 0.6123), (2, 0.6123 + 2.3e-6))):
        make_run(sweep, f"{i}_ce_{seed}", ["loss=ce", f"seed={seed}"], [epoch(f1, [1] * 4)])
    assert run_compare(sweep, "--group-seeds", "--tags", "val/f1_macro", "--no-figure") == 0
    printed = capsys.readouterr().out
    assert "0.612 ± 0" in printed and "e-0" not in printed


def test_printed_table_fits_120_columns_and_wide_shows_all(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"
    tags = ["val/f1_macro", "val/balanced_accuracy", "test/f1_macro", "test/accuracy_many"]
    tags += ["test/accuracy_medium", "test/accuracy_few", "test/balanced_accuracy", "test/mcc"]
    i = 0
    for loss in ("cross_entropy", "focal_long_name"):
        for sampler in ("none", "square_root"):
            for seed in (1, 2, 3):
                test = {t: 0.5 + 0.01 * seed for t in tags if t.startswith("test/")}
                overrides = [f"loss={loss}", f"sampler={sampler}", f"seed={seed}"]
                make_run(sweep, f"{i}_x", overrides, [epoch(0.4 + 0.01 * seed, [1] * 4)], test)
                i += 1
    args = ["--group-seeds", "--tags", *tags, "--no-figure"]
    assert run_compare(sweep, *args) == 0
    narrow = capsys.readouterr().out
    table = narrow.split("\nnot shown")[0]
    assert max(len(line) for line in table.splitlines()) <= 120
    assert "not shown" in narrow and "--wide" in narrow
    assert run_compare(sweep, *args, "--wide") == 0
    wide = capsys.readouterr().out
    assert "not shown" not in wide and "(last)" in wide and "mcc" in wide


def test_default_columns_are_the_long_tail_metrics(tmp_path: Path) -> None:
    args = build_parser().parse_args([str(tmp_path)])
    assert default_tags(args) == [
        "val/f1_macro",
        "test/f1_macro",
        "test/balanced_accuracy",
        "test/accuracy_many",
        "test/accuracy_medium",
        "test/accuracy_few",
    ]
    # a baseline comparison compares the test tags (the monitor's best epoch is selected on it)
    args = build_parser().parse_args([str(tmp_path), "--baseline", "loss=ce"])
    assert default_tags(args) == default_tags(build_parser().parse_args([str(tmp_path)]))[1:]
