"""End to end: an Optuna search that is killed mid-trial and resumed from its SQLite study in the
sweep dir; an Optuna search running two trials at a time with the joblib launcher, read by
`imblab-compare`; a sweep job that fails is recorded and the other jobs run."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from imblab.compare import build_parser, compare

from .helpers import env, job_dirs, run_sweep, status, sweep_command

# a small search: three trials, two of them random
SEARCH = ["hparams_search=optuna_f1", "hydra.sweeper.n_trials=3", "logger=none", "metrics=scalars"]


def wait_for_running_job(sweep_dir: Path, num: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait until job ``num`` of the sweep has started training (its status says running)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the search ended before it could be interrupted"
        for job in sweep_dir.glob(f"{num}_*"):
            if (job / "status.json").is_file() and status(job)["status"] == "running":
                return
        time.sleep(0.1)
    raise AssertionError(f"job {num} did not start in 240 s")


def test_optuna_search_resumes_after_interruption(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.Popen(
        sweep_command(sweep_dir, *SEARCH),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env(),
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        wait_for_running_job(sweep_dir, 1, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the search dies in the middle of its second trial
        proc.wait(timeout=60)
    storage = f"sqlite:///{sweep_dir}/optuna.db"
    study = optuna.load_study(study_name="train", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    interrupted_params = study.trials[1].params

    run_sweep(sweep_dir, *SEARCH)  # the same command and sweep dir: resume

    trials = optuna.load_study(study_name="train", storage=storage).trials
    states = [t.state for t in trials]
    assert states == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    assert trials[2].params == interrupted_params  # the interrupted trial ran again, first
    assert {"model.optimizer.lr", "model.optimizer.weight_decay", "loss", "sampler"} == set(
        interrupted_params
    )
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    finished = [t.value for t in trials if t.state == TrialState.COMPLETE]
    assert best["best_value"] == max(finished)
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 4  # jobs 0 and 1 of each run, each in its own dir
    assert sorted(status(j)["status"] for j in jobs) == ["completed"] * 3 + ["running"]
    summary = (sweep_dir / "summary.md").read_text()
    assert summary.count("| completed |") == 3 and "1 of 4 runs did not complete" in summary
    assert "| interrupted |" in summary  # the killed job, never finished


def test_optuna_search_runs_two_trials_at_a_time_with_joblib(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    parallel = ["hydra.sweeper.n_jobs=2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    run_sweep(sweep_dir, *SEARCH, "hydra.sweeper.n_trials=4", *parallel)  # the last n_trials

    trials = optuna.load_study(
        study_name="train", storage=f"sqlite:///{sweep_dir}/optuna.db"
    ).trials
    jobs = job_dirs(sweep_dir)
    records = [status(job) for job in jobs]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, records
    assert [int(job.name.split("_")[0]) for job in jobs] == [0, 1, 2, 3]
    for trial, job, record in zip(trials, jobs, records, strict=True):  # trial n ran as job n
        assert Path(trial.user_attrs["job_dir"]) == job
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert {f"{key}={value}" for key, value in trial.params.items()} <= set(overrides)
        assert record["status"] == "completed" and record["objective"]["value"] == trial.value
    for a, b in (records[0:2], records[2:4]):  # the trials of a batch ran at the same time
        assert a["started"] < b["finished"] and b["started"] < a["finished"], (a, b)

    # imblab-compare reads the search as any sweep: one row per job, the searched keys
    assert compare(build_parser().parse_args([str(sweep_dir), "--out", str(tmp_path)])) == 0
    rows = list(csv.DictReader((tmp_path / "compare.csv").open()))
    assert [row["run"] for row in rows] == [job.name for job in jobs]
    for row, trial in zip(rows, trials, strict=True):
        assert float(row["model.optimizer.lr"]) == trial.params["model.optimizer.lr"]
        assert float(row["val/f1_macro (last)"]) == pytest.approx(trial.value)
        assert row["status"] == "completed"


def test_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run_sweep(
        sweep_dir, "data.imbalance_ratio=0.5,10", "logger=none", "metrics=scalars", "test=false"
    )
    bad, good = job_dirs(sweep_dir)
    record = status(bad)
    assert record["status"] == "failed"
    assert record["error"].startswith("ConfigError: data.imbalance_ratio=0.5: must be >= 1")
    assert "Traceback" in record["traceback"]
    assert status(good)["status"] == "completed" and (good / "metrics.json").is_file()
    summary = (sweep_dir / "summary.md").read_text()
    assert "1 of 2 runs did not complete" in summary and bad.name in summary
