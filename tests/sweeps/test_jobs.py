"""Sweep jobs without launching a sweep: directory names, status records of failed and
completed jobs, resuming an Optuna study, the per-class TensorBoard layout."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from omegaconf import OmegaConf
from optuna.trial import TrialState

from imblab.errors import ConfigError
from imblab.pipelines.training import train
from imblab.runs import read_status
from imblab.sweeps import job_subdir, resume_optuna, run_job, split_items, swept_keys
from imblab.tensorboard import class_layout
from imblab.train import main

from ..conftest import FAST

SWEEP_JOB = ["hydra.mode=MULTIRUN", "hydra.job.num=3"]


def test_job_subdir_is_one_readable_unique_component() -> None:
    name = job_subdir(3, "data.mirrors=[http://x:9/],lr=0.1,seed=2", "seed,lr")
    assert name == "3_seed=2,lr=0.1,data.mirrors=[http:__x:9_]"  # swept keys first, no '/'
    assert job_subdir(0, "") == "0"
    long_a, long_b = "k=" + "a" * 300, "k=" + "a" * 299 + "b"
    a, b = job_subdir(1, long_a), job_subdir(1, long_b)
    assert len(a) == len(b) == 200 and a != b  # cut, and told apart by the hash of the whole
    assert job_subdir(1, "x=1") != job_subdir(2, "x=1")  # same overrides, other job number


def test_split_items_keeps_brackets_braces_and_quotes_whole() -> None:
    assert split_items('a=[1,2],b={x:1,y:2},c="p,q",d=3') == [
        "a=[1,2]",
        "b={x:1,y:2}",
        'c="p,q"',
        "d=3",
    ]


def test_swept_keys_are_the_sweeps_of_the_command_line_and_the_search_space() -> None:
    config = OmegaConf.create(
        {
            "hydra": {
                "overrides": {"task": ["seed=1,2", "data.batch_size=16", "+x=range(1,3)"]},
                "sweeper": {"params": {"model.optimizer.lr": "interval(0.001, 0.1)"}},
            }
        }
    )
    assert swept_keys(config) == ["seed", "x", "model.optimizer.lr"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConfigError("data.imbalance_ratio=0.5: must be >= 1; use 1"), "ConfigError: data."),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "OutOfMemoryError"),
    ],
)
def test_failed_sweep_job_is_recorded_not_raised(
    compose_cfg, tmp_path: Path, error: Exception, expected: str
) -> None:
    def task(cfg: object) -> dict[str, float]:
        raise error

    assert run_job(compose_cfg(*FAST, *SWEEP_JOB), task) is None
    record = read_status(tmp_path)
    assert record is not None and record["status"] == "failed"
    assert record["error"].startswith(expected) and "\n" not in record["error"]
    assert record["num"] == 3 and record["finished"] is not None


def test_bad_value_in_a_sweep_job_does_not_exit(compose_cfg, tmp_path: Path) -> None:
    # imblab-train's own entry point: outside a sweep a bad value exits with code 2
    assert main(compose_cfg(*FAST, *SWEEP_JOB, "data.imbalance_ratio=0.5")) is None
    record = read_status(tmp_path)
    assert record is not None and record["error"].startswith("ConfigError: data.imbalance_ratio")


def test_nan_loss_fails_the_job_with_its_error(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        *FAST,
        *SWEEP_JOB,
        "model.optimizer.lr=1e30",
        "+trainer.limit_train_batches=2",
        "logger=none",
        "metrics=scalars",
        "test=false",
    )
    assert run_job(cfg, train) is None
    record = read_status(tmp_path)
    assert record is not None and record["status"] == "failed"
    assert "NaN" in record["error"], record["error"]


def test_completed_sweep_job_is_not_trained_again(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(*FAST, *SWEEP_JOB)
    assert run_job(cfg, lambda c: {"val/f1_macro": 0.25, "val/loss": 1.0}) == 0.25
    record = read_status(tmp_path)
    assert record is not None and record["status"] == "completed"
    assert record["objective"] == {"metric": "val/f1_macro", "mode": "max", "value": 0.25}

    def must_not_run(c: object) -> dict[str, float]:
        raise AssertionError("trained again")

    assert run_job(cfg, must_not_run) == 0.25


def test_failure_outside_a_sweep_propagates_and_is_recorded(compose_cfg, tmp_path: Path) -> None:
    def task(cfg: object) -> dict[str, float]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_job(compose_cfg(*FAST), task)
    record = read_status(tmp_path)
    assert (
        record is not None
        and record["status"] == "failed"
        and record["error"] == "RuntimeError: boom"
    )


def test_resume_optuna_requeues_interrupted_trials(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    assert resume_optuna(storage, "s", 6) == 6  # no storage yet
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for value in (0.1, 0.2):
        trial = study.ask()
        trial.suggest_float("lr", 0.001, 0.1)
        study.tell(trial, value)
    failed = study.ask()
    failed.suggest_float("lr", 0.001, 0.1)
    study.tell(failed, state=TrialState.FAIL)
    running = study.ask()  # the trial a killed search left behind
    lr = running.suggest_float("lr", 0.001, 0.1)

    assert resume_optuna(storage, "other", 6) == 6  # no study of that name
    assert resume_optuna(storage, "s", 6) == 3  # 3 finished (complete or failed) of 6
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert trials[3].state == TrialState.FAIL
    assert trials[4].state == TrialState.WAITING
    assert trials[4].system_attrs["fixed_params"] == {"lr": lr}  # asked first by the sweeper
    assert resume_optuna(storage, "s", 2) == 0  # more done than asked for: nothing to run


def test_class_layout_follows_each_class() -> None:
    layout = class_layout(["0", "a.b"])
    tags = ["val/f1/0", "val/f1/a.b", "val/f1/axb", "val/f1_macro", "val/recall/0", "test/f1/0"]
    charts = layout["val F1 per class"]
    assert list(charts) == ["val/f1/0", "val/f1/a.b"]
    for title, (kind, patterns) in charts.items():
        assert kind == "Multiline"
        assert [t for t in tags if any(re.search(p, t) for p in patterns)] == [title]
    # no all-classes chart: TensorBoard would draw every class of a run in the run's colour
    assert set(layout) == {"val F1 per class", "val recall per class"}


def test_a_run_without_validation_records_no_monitor_from_the_start(
    compose_cfg, tmp_path: Path
) -> None:
    cfg = compose_cfg(*FAST, "data.val_source=none")
    seen: list[dict[str, Any] | None] = []

    def task(c: object) -> dict[str, float]:
        seen.append(read_status(tmp_path))  # the record written before training
        return {"test/f1_macro": 0.5}

    assert run_job(cfg, task) is None  # no monitor, no objective
    assert seen[0] is not None and seen[0]["objective"]["metric"] is None
    record = read_status(tmp_path)
    assert record is not None and record["status"] == "completed"
    assert record["objective"] == {"metric": None, "mode": "max", "value": None}
