"""A sweep with a corrupt job: ``imblab-compare`` and the summary a sweep writes at its end mark
the job ``corrupt: <file>: <reason>`` and compare the rest; ``metrics.json`` and
``status.json`` are written atomically."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from imblab.compare import build_parser, compare
from imblab.data.summary import DataSummary
from imblab.pipelines.training import write_metrics
from imblab.runs import load_run, write_summary
from tests.sweeps.test_compare import epoch, make_run


def run_compare(*args: object) -> int:
    return compare(build_parser().parse_args([str(a) for a in args]))


def rows(path: Path) -> dict[str, dict[str, str]]:
    return {r["run"]: r for r in csv.DictReader(path.open())}


def sweep(root: Path) -> Path:
    """Four jobs of two configurations (lr 0.1 / 0.01, seeds 1 and 2), all completed."""
    for i, (lr, seed) in enumerate([(0.1, 1), (0.1, 2), (0.01, 1), (0.01, 2)]):
        f1 = 0.5 + i / 10
        make_run(
            root, f"{i}_lr={lr},seed={seed}", [f"lr={lr}", f"seed={seed}"], [epoch(f1, [1] * 4)]
        )
    return root


def test_a_truncated_metrics_json_marks_its_job_and_the_rest_are_compared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = sweep(tmp_path)
    metrics = root / "2_lr=0.01,seed=1" / "metrics.json"
    metrics.write_text(metrics.read_text()[:40])
    assert run_compare(root, "--tags", "val/f1_macro", "--no-figure") == 0
    table = rows(root / "compare.csv")
    assert table["2_lr=0.01,seed=1"]["status"] == "corrupt"
    assert table["2_lr=0.01,seed=1"]["error"].startswith("metrics.json: JSONDecodeError: ")
    assert float(table["3_lr=0.01,seed=2"]["val/f1_macro (best)"]) == pytest.approx(0.8)
    printed = capsys.readouterr().out
    assert "- `2_lr=0.01,seed=1`: corrupt: metrics.json: JSONDecodeError" in printed
    summary = write_summary(root)  # what the sweep writes at its end
    assert summary is not None and "corrupt: metrics.json: JSONDecodeError" in summary.read_text()
    assert len(rows(root / "summary.csv")) == 4


@pytest.mark.parametrize(
    ("content", "reason"),
    [('{"status": "comp', "JSONDecodeError"), ("[1, 2]", "not a JSON object")],
)
def test_a_corrupt_status_json_is_marked_not_completed(
    tmp_path: Path, content: str, reason: str
) -> None:
    root = sweep(tmp_path)
    (root / "1_lr=0.1,seed=2" / "status.json").write_text(content)
    run = load_run(root / "1_lr=0.1,seed=2", root)
    assert run.status == "corrupt" and not run.ok
    assert run.error is not None and run.error.startswith(f"status.json: {reason}")
    assert run.overrides == {"lr": "0.1", "seed": "2"}  # still known from .hydra/


def test_a_job_without_overrides_is_marked_and_forms_no_configuration(tmp_path: Path) -> None:
    root = sweep(tmp_path)
    job = make_run(root, "4_lr=0.1,seed=3", ["lr=0.1", "seed=3"], [epoch(0.9, [1] * 4)])
    for name in (".hydra/overrides.yaml", ".hydra"):
        path = job / name
        path.unlink() if path.is_file() else path.rmdir()
    run = load_run(job, root)
    assert run.status == "corrupt" and not run.overrides_known
    assert run.error == ".hydra/overrides.yaml: missing, and status.json records no overrides"
    assert run_compare(root, "--group-seeds", "--tags", "val/f1_macro", "--no-figure") == 0
    groups = list(csv.DictReader((root / "compare.csv").open()))
    assert [(g["lr"], g["runs"], g["failed"]) for g in groups] == [
        ("0.01", "2", "0"),
        ("0.1", "2", "0"),
    ]


def test_overrides_recorded_in_status_json_stand_for_a_missing_hydra_dir(tmp_path: Path) -> None:
    job = make_run(tmp_path, "0_x=1", ["x=1"], [epoch(0.5, [1] * 4)])
    (job / ".hydra" / "overrides.yaml").unlink()
    status = json.loads((job / "status.json").read_text())
    (job / "status.json").write_text(json.dumps({**status, "overrides": ["x=1"]}))
    run = load_run(job, tmp_path)
    assert run.ok and run.overrides == {"x": "1"}


def test_an_unreadable_overrides_yaml_is_marked(tmp_path: Path) -> None:
    job = make_run(tmp_path, "0_x=1", ["x=1"], [epoch(0.5, [1] * 4)])
    (job / ".hydra" / "overrides.yaml").write_text("- x=1\n- [unclosed")
    run = load_run(job, tmp_path)
    assert run.status == "corrupt" and run.error is not None
    assert run.error.startswith(".hydra/overrides.yaml: ")


def test_a_metrics_json_write_that_fails_half_way_leaves_the_previous_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk or a kill while metrics.json is written: a reader sees the old record or
    the new one, never half of one (the half goes to a temporary file, removed)."""
    cfg = OmegaConf.create({"monitor": {"metric": "val/f1_macro", "mode": "max"}})
    data = DataSummary("sample", ("a", "b"), {"train": (5, 1)})
    path = tmp_path / "metrics.json"
    write_metrics(path, {"val/f1_macro": 0.5}, cfg, "", data)
    before = path.read_text()
    real = Path.write_text

    def half_then_fail(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
        real(self, text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_metrics(path, {"val/f1_macro": 0.75, "test/f1_macro": 0.7}, cfg, "", data)
    monkeypatch.undo()
    assert path.read_text() == before
    assert json.loads(before)["metrics"] == {"val/f1_macro": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    write_metrics(path, {"val/f1_macro": 0.75}, cfg, "", data)
    assert json.loads(path.read_text())["metrics"] == {"val/f1_macro": 0.75}
