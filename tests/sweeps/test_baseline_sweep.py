"""End to end (slow): a real sweep of short runs, 2 configurations x 3 seeds with one job failed
and one seed missing, compared with `imblab-compare --baseline` matched by a config-group
choice, with the test-set noise taken from the predictions.npz each training run wrote."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imblab.reports import load_predictions
from imblab.reports.predictions import load_fingerprint

from .helpers import env, job_dirs, run_sweep, status

pytestmark = pytest.mark.slow

QUIET = ["logger=none", "metrics=scalars"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two presets (cross-entropy without and with the inverse-frequency sampler) x seeds 1, 2;
    then the baseline's seed 3, and a job of it that fails (seed=three is no integer)."""
    sweep_dir = tmp_path_factory.mktemp("baseline") / "sweep"
    run_sweep(sweep_dir, "experiment=mnist_lt_ce,mnist_lt_inverse_sampler", "seed=1,2", *QUIET)
    run_sweep(sweep_dir, "experiment=mnist_lt_ce", "seed=3,three", *QUIET)
    return sweep_dir


def compare_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imblab.compare", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env(),
        cwd=cwd,
    )


def test_every_completed_job_wrote_its_test_predictions(sweep: Path) -> None:
    jobs = job_dirs(sweep)
    done = [j for j in jobs if status(j)["status"] == "completed"]
    assert len(jobs) == 6 and len(done) == 5
    fingerprints = set()
    for job in done:
        record = json.loads((job / "metrics.json").read_text())
        probs, targets, _ = load_predictions(job)
        assert load_fingerprint(job) == record["test_fingerprint"]
        accuracy = float(np.mean(probs.argmax(1) == targets))
        assert accuracy == pytest.approx(record["metrics"]["test/accuracy"], abs=1e-6)
        fingerprints.add(record["test_fingerprint"])
    assert len(fingerprints) == 1  # the same test images whatever the seed (subset_seed)


def test_baseline_by_config_group_choice_with_a_failed_job_and_a_missing_seed(
    sweep: Path, tmp_path: Path
) -> None:
    proc = compare_cli(
        str(sweep), "--baseline", "sampler=none", "--out", str(tmp_path), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout
    assert max(len(line) for line in printed.splitlines()) <= 120
    assert "Baseline: experiment=mnist_lt_ce (3 completed runs)" in printed
    assert "1 of 6 runs did not complete" in printed and "seed=three: must be an integer" in printed
    rows = list(csv.DictReader((tmp_path / "compare_baseline.csv").open()))
    assert [r["tag"] for r in rows] == [
        "test/f1_macro",
        "test/balanced_accuracy",
        "test/accuracy_many",
        "test/accuracy_medium",
        "test/accuracy_few",
    ]
    for row in rows:
        assert row["experiment"] == "mnist_lt_inverse_sampler"
        assert row["n_seeds"] == "2" and "seed 3 of the baseline unpaired" in row["note"]
        assert row["method"] == "seed+test", row["note"]
        assert (
            row["lo"] and row["hi"] and float(row["lo"]) <= float(row["diff"]) <= float(row["hi"])
        )
        assert row["p_adjusted"] == row["p_value"]  # one configuration: nothing to adjust
    for suffix in ("csv", "md", "png"):
        assert (tmp_path / f"compare_baseline.{suffix}").stat().st_size > 0
    ambiguous = compare_cli(str(sweep), "--baseline", "loss=ce", cwd=tmp_path)
    assert ambiguous.returncode == 2
    assert "2 configurations match" in ambiguous.stderr and ambiguous.stderr.count("\n") == 1
