"""Sweeps through the other launchers: submitit's local executor (the stand-in for SLURM) and
jobs that are themselves DDP runs (one run dir per job, not one per process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from imblab.runs import EVENTS, event_dir

from .helpers import job_dirs, run_sweep, status

LIGHT = ["logger=none", "metrics=scalars", "test=false"]


@pytest.mark.slow
def test_submitit_local_launcher_runs_every_job(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run_sweep(
        sweep_dir,
        "seed=1,2",
        *LIGHT,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
    )
    jobs = job_dirs(sweep_dir)
    assert [j.name.split(",")[0] for j in jobs] == ["0_seed=1", "1_seed=2"]
    for job in jobs:
        assert status(job)["status"] == "completed" and (job / "metrics.json").is_file()
    assert list((sweep_dir / ".submitit").iterdir())  # submitit's job records and logs
    assert "| completed |" in (sweep_dir / "summary.md").read_text()


@pytest.mark.slow
def test_ddp_jobs_in_a_sweep_write_one_run_dir_each(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    with_tensorboard = [o for o in LIGHT if not o.startswith("logger=")]
    run_sweep(sweep_dir, "seed=1,2", *ddp, *with_tensorboard)
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 2
    assert sorted(p for p in sweep_dir.iterdir() if p.is_dir()) == [*jobs, sweep_dir / EVENTS]
    stray = [p.name for p in tmp_path.iterdir() if p.name not in ("sweep", "data")]
    assert stray == []  # no run dir of a DDP process anywhere else (e.g. under logs/)
    # each job's TensorBoard run is in the sweep's, named by its number and swept value
    assert sorted(p.name for p in (sweep_dir / EVENTS).iterdir()) == ["0_seed=1", "1_seed=2"]
    for job in jobs:
        assert status(job)["status"] == "completed"
        assert event_dir(job) == sweep_dir / EVENTS / status(job)["tensorboard"]["run"]
        record = json.loads((job / "metrics.json").read_text())
        val_counts = [int(n) for n in record["data"]["val_counts"].split(",")]
        supports = [record["metrics"][f"val/support/{c}"] for c in range(len(val_counts))]
        assert supports == val_counts  # each validation image counted once over both processes


def test_slurm_launcher_config_sets_partition_gpus_and_time() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="imblab.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.timeout_min=90",
                "trainer=ddp",
                "trainer.devices=4",
            ],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.timeout_min == 90
    assert launcher.gpus_per_node == 4 and launcher.tasks_per_node == 4  # one rank per GPU
    assert launcher.submitit_folder.endswith("/.submitit/%j")  # in the sweep dir
