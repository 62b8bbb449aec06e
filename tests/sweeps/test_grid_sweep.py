"""End to end: a 2x2x2 grid sweep with the joblib launcher on the bundled MNIST sample, compared
with `imblab-compare`, and served by a real TensorBoard server whose HTTP API must show every
run with its scalars, figures, PR curves, HParams (with the real final metrics) and layout."""

from __future__ import annotations

import csv
import json
import math
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from imblab.compare import build_parser, compare

from .helpers import env, job_dirs, run_sweep, status

GRID = ["seed=1,2", "model.optimizer.lr=0.001,0.003", "sampler=none,sqrt"]
# one figure and the PR curves are enough to find in TensorBoard (each figure costs ~0.2 s)
METRICS = "metrics=[scalars,confusion_matrix,pr_curves]"


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep dir of a 2x2x2 sweep run with two joblib workers."""
    sweep_dir = tmp_path_factory.mktemp("grid") / "sweep"
    proc = run_sweep(sweep_dir, *GRID, METRICS, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    (sweep_dir.parent / "console.txt").write_text(proc.stdout + proc.stderr)
    return sweep_dir


def test_sweep_console_is_quiet(grid: Path) -> None:
    console = (grid.parent / "console.txt").read_text()
    assert "Directory watcher advancing" not in console  # TensorBoard's reader chatter
    # Lightning's banner and tip once per job (not also for the DDP probe of each job)
    assert console.count("GPU available:") == 8
    assert console.count("Tip:") <= 8
    # the sweep ends with the command that opens every job in TensorBoard
    assert f"tensorboard --logdir {grid.resolve() / 'tensorboard'}" in console


def test_every_job_has_its_own_readable_dir(grid: Path) -> None:
    jobs = job_dirs(grid)
    assert [int(p.name.split("_")[0]) for p in jobs] == list(range(8))
    combos = set()
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        swept = tuple(
            o for o in overrides if o.split("=")[0] in {"seed", "model.optimizer.lr", "sampler"}
        )
        combos.add(swept)
        # the swept values lead the name, in the order they were given
        assert job.name.startswith(f"{job.name.split('_')[0]}_{','.join(swept)}"), job.name
        assert "/" not in job.name and len(job.name) <= 200
        record = json.loads((job / "metrics.json").read_text())
        assert record["data"]["source_used"] == "sample"
        assert status(job)["status"] == "completed"
        assert status(job)["objective"]["value"] == pytest.approx(record["metrics"]["val/f1_macro"])
        assert (job / "checkpoints" / "last.ckpt").is_file()
    assert len(combos) == 8  # all 2x2x2 combinations, each once
    summary = (grid / "summary.md").read_text()
    assert summary.count("| completed |") == 8


def compare_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imblab.compare", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env(),
        cwd=cwd,
    )


def test_compare_writes_tables_and_figure(grid: Path, tmp_path: Path) -> None:
    proc = compare_cli(str(grid), "--out", str(tmp_path / "per_run"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "per_run" / "compare.csv").open()))
    assert len(rows) == 8
    assert {"seed", "model.optimizer.lr", "sampler", "status"} <= set(rows[0])
    for row, job in zip(rows, job_dirs(grid), strict=True):
        metrics = json.loads((job / "metrics.json").read_text())["metrics"]
        assert float(row["val/f1_macro (last)"]) == pytest.approx(metrics["val/f1_macro"])
        assert float(row["test/f1_macro"]) == pytest.approx(metrics["test/f1_macro"])
        # one epoch: the best epoch is the last
        assert float(row["val/f1_macro (best)"]) == pytest.approx(metrics["val/f1_macro"])
    assert (
        "| run | seed | model.optimizer.lr | sampler | status |"
        in (tmp_path / "per_run" / "compare.md").read_text()
    )
    header = next(line for line in proc.stdout.splitlines() if line.startswith("run"))
    assert header.split()[:5] == ["run", "seed", "model.optimizer.lr", "sampler", "status"]
    assert max(len(line) for line in proc.stdout.split("not shown")[0].splitlines()) <= 120

    out = tmp_path / "grouped"
    assert compare(build_parser().parse_args([str(grid), "--group-seeds", "--out", str(out)])) == 0
    grouped = list(csv.DictReader((out / "compare.csv").open()))
    assert len(grouped) == 4 and all(r["runs"] == "2" and r["failed"] == "0" for r in grouped)
    by_config: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        by_config.setdefault((row["model.optimizer.lr"], row["sampler"]), []).append(
            float(row["test/f1_macro"])
        )
    for row in grouped:
        values = by_config[(row["model.optimizer.lr"], row["sampler"])]
        assert float(row["test/f1_macro mean"]) == pytest.approx(statistics.fmean(values))
        assert float(row["test/f1_macro std"]) == pytest.approx(statistics.stdev(values))
    png = (out / "compare.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert "±" in (out / "compare.md").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def tensorboard(grid: Path) -> Iterator[str]:
    """A TensorBoard server on 127.0.0.1 over the sweep; its base URL once every run loaded."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(grid / "tensorboard"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast",
            "false",
            "--reload_interval",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env(),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                runs = get(f"{base}/data/runs")
                tags = get(f"{base}/data/plugin/scalars/tags")
                if len(runs) == 8 and all("test/f1_macro" in tags.get(r, {}) for r in runs):
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "TensorBoard did not load the sweep in 120 s"
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_tensorboard_server_shows_every_run(grid: Path, tensorboard: str) -> None:
    runs = get(f"{tensorboard}/data/runs")
    # each job is one TensorBoard run, named by its number and swept values only (its dir name
    # also has the overrides every job shares); its status.json records the name
    jobs = {status(job)["tensorboard"]["run"]: job for job in job_dirs(grid)}
    assert sorted(runs) == sorted(jobs)
    for name, job in jobs.items():
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        swept = [
            o for o in overrides if o.split("=")[0] in {"seed", "model.optimizer.lr", "sampler"}
        ]
        assert name == f"{job.name.split('_')[0]}_{','.join(swept)}"
        assert status(job)["tensorboard"]["logdir"] == "../tensorboard"
    scalars = get(f"{tensorboard}/data/plugin/scalars/tags")
    images = get(f"{tensorboard}/data/plugin/images/tags")
    pr_curves = get(f"{tensorboard}/data/plugin/pr_curves/tags")
    expected = {
        "val/f1_macro",
        "val/recall/9",
        "val/f1/0",
        "test/f1_macro",
        "train/loss_epoch",
        "best/val/f1_macro",
    }
    for run in runs:
        assert expected <= set(scalars[run]), expected - set(scalars[run])
        assert {"val/confusion_matrix", "test/confusion_matrix"} <= set(images[run])
        assert {f"val/pr/{c}" for c in range(10)} <= set(pr_curves[run])
    layout = get(f"{tensorboard}/data/plugin/custom_scalars/layout")
    titles = {c["title"]: c for c in layout["category"]}
    assert {"val F1 per class", "val recall per class"} <= set(titles)
    charts = [c["title"] for c in titles["val F1 per class"]["chart"]]
    assert charts == [f"val/f1/{c}" for c in range(10)]  # one chart per class, merged over runs

    request = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN", "STATUS_FAILURE", "STATUS_RUNNING"],
        "startIndex": 0,
        "sliceSize": 100,
    }
    experiment = get(f"{tensorboard}/data/plugin/hparams/experiment", {"experimentName": ""})
    hparam_names = {h["name"] for h in experiment["hparamInfos"]}
    assert {"seed", "lr", "loss", "sampler", "setup/data/source"} <= hparam_names
    hidden = [h for h in hparam_names if "_target_" in h or "dir" in h or h.startswith("callbacks")]
    assert not hidden, hidden
    metric_tags = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"val/f1_macro", "test/f1_macro", "best/val/f1_macro"} <= metric_tags
    groups = get(f"{tensorboard}/data/plugin/hparams/session_groups", request)["sessionGroups"]
    assert len(groups) == 8
    for group in groups:
        (session,) = group["sessions"]
        assert session["status"] == "STATUS_SUCCESS"
        job = jobs[session["name"]]
        metrics = json.loads((job / "metrics.json").read_text())["metrics"]
        values = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
        for tag in ("val/f1_macro", "test/f1_macro", "test/auroc_macro"):
            assert math.isfinite(values[tag]) and values[tag] == pytest.approx(metrics[tag])
        assert values["best/val/f1_macro"] == pytest.approx(metrics["val/f1_macro"])
