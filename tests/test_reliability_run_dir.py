"""A run dir used twice: a rerun with another config is refused before Hydra writes ``.hydra/``
(naming the keys that differ and the ways out), safe changes resume (a longer run under a step
schedule; not past a cosine schedule's plan), and two runs at once are refused by the run dir's
lock (a stale lock of an ended process is taken over; the lock goes when the run ends)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from imblab.config import check_rerun, task_config
from imblab.errors import ConfigError
from imblab.pipelines.training import train
from imblab.runs import LOCK_FILE, RunLock, _process_start

from .conftest import FAST

STEP_SCHEDULE = [  # the papers' step schedule on the small CNN: x0.1 from epoch 1
    "model.scheduler._target_=imblab.models.schedules.warmup_multistep",
    "~model.scheduler.T_max",
    "+model.scheduler.warmup_epochs=0",
    "+model.scheduler.milestones=[1]",
    "+model.scheduler.factors=[0.1]",
    "+model.scheduler.max_epochs=${trainer.max_epochs}",
]

QUICK = [  # two small batches an epoch, no metric callbacks, figures or logger
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=2",
    "metrics=none",
    "monitor.metric=val/loss",
    "monitor.mode=min",
    "logger=none",
    "test=false",
]


def composed(run_dir: Path, *overrides: str) -> DictConfig:
    """``train.yaml`` with ``overrides`` and its ``hydra`` node, as ``on_run_start`` sees it."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="imblab.conf", version_base="1.3"):
            return compose(
                config_name="train",
                overrides=[*overrides, f"hydra.run.dir={run_dir}"],
                return_hydra_config=True,
            )
    finally:
        GlobalHydra.instance().clear()


def saved_run(run_dir: Path, *overrides: str) -> Path:
    """A run dir as a run of ``overrides`` leaves it (its config and a checkpoint)."""
    (run_dir / ".hydra").mkdir(parents=True)
    config = task_config(composed(run_dir, *overrides))
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(config))
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    status = {"status": "completed", "error": None, "overrides": list(overrides)}
    (run_dir / "status.json").write_text(json.dumps(status))
    return run_dir


def refusal(run_dir: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        check_rerun(composed(run_dir, *overrides), run_dir)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_rerun_with_another_loss_and_lr_is_refused_naming_the_keys(tmp_path: Path) -> None:
    run = saved_run(tmp_path / "run", *FAST, "loss=ce")
    message = refusal(run, *FAST, "loss=focal", "model.optimizer.lr=0.01")
    assert message.startswith(f"hydra.run.dir={str(run)!r}: holds a run of another config (")
    assert "loss imblab.losses.CrossEntropy -> imblab.losses.FocalLoss" in message
    assert "model.optimizer.lr 0.002 -> 0.01" in message
    assert "loss.gamma" not in message  # the switched group, not each of its keys
    assert f"rerun it with its own overrides ({' '.join([*FAST, 'loss=ce'])})" in message
    assert "another hydra.run.dir" in message


def test_the_same_config_and_safe_changes_resume(tmp_path: Path) -> None:
    run = saved_run(tmp_path / "run", *FAST)
    check_rerun(composed(run, *FAST), run)
    check_rerun(composed(run, *FAST, "test=false", "figures_every_n_epochs=3", "tags=[x]"), run)
    check_rerun(composed(run, *FAST, f"ckpt_path={run}/checkpoints/last.ckpt"), run)


def test_a_dir_that_holds_no_results_starts_afresh(tmp_path: Path) -> None:
    run = saved_run(tmp_path / "run", *FAST)
    (run / "checkpoints" / "last.ckpt").unlink()
    check_rerun(composed(run, *FAST, "loss=focal"), run)  # nothing to resume or lose


def test_a_cosine_schedule_may_stop_earlier_but_not_go_on_past_its_plan(tmp_path: Path) -> None:
    """The default cosine schedule's T_max is ``${trainer.max_epochs}``, restored on resume."""
    options = [o for o in FAST if not o.startswith("trainer.max_epochs")]
    run = saved_run(tmp_path / "run", *options, "trainer.max_epochs=4")
    check_rerun(composed(run, *options, "trainer.max_epochs=2"), run)
    for longer in ("6", "-1"):
        message = refusal(run, *options, f"trainer.max_epochs={longer}")
        assert message.startswith(f"trainer.max_epochs={longer}: goes on past ")
        assert "model.scheduler.T_max=${trainer.max_epochs}" in message
        assert "trainer.max_epochs<=4" in message and "another hydra.run.dir" in message


def test_a_step_schedule_run_is_extended_on_resume(compose_cfg, tmp_path: Path) -> None:
    """Its plan does not depend on the run's length: 1 epoch, then resumed to 2, the second
    epoch at the stepped learning rate."""
    options = [*FAST, *STEP_SCHEDULE, *QUICK]
    train(compose_cfg(*options))
    (tmp_path / ".hydra").mkdir()
    saved = task_config(composed(tmp_path, *options))
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    longer = [*options, "trainer.max_epochs=2"]
    check_rerun(composed(tmp_path, *longer), tmp_path)
    train(compose_cfg(*longer))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.002 * 0.1)


# --- the lock ----------------------------------------------------------------------------


def test_a_second_holder_is_refused_and_release_removes_only_its_own_lock(
    tmp_path: Path,
) -> None:
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    first.acquire()
    record = json.loads((tmp_path / LOCK_FILE).read_text())
    assert record["host"] == os.uname().nodename and record["pid"] == os.getpid()
    with pytest.raises(ConfigError) as err:
        second.acquire()  # this process is alive: the lock is held
    message = str(err.value)
    assert f"in use by another run (PID {os.getpid()} since " in message
    assert "wait for it to end or use another hydra.run.dir" in message
    second.release()
    assert (tmp_path / LOCK_FILE).is_file()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    first.release()  # idempotent


def ended_process() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_stale_lock_of_this_host_is_taken_over_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stale = {"host": os.uname().nodename, "pid": ended_process(), "started": "yesterday"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(stale))
    lock = RunLock(tmp_path)
    with caplog.at_level(logging.WARNING):
        lock.acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"stale lock {tmp_path / LOCK_FILE} of PID {stale['pid']}" in caplog.text
    lock.release()


def test_a_reused_pid_does_not_hold_the_lock(tmp_path: Path) -> None:
    """The PID is alive but started after the lock was written: another process."""
    held = {"host": os.uname().nodename, "pid": os.getpid(), "pid_start": "1", "started": "x"}
    assert _process_start(os.getpid()) not in (None, "1")
    (tmp_path / LOCK_FILE).write_text(json.dumps(held))
    lock = RunLock(tmp_path)
    lock.acquire()
    lock.release()


def test_a_lock_of_another_host_names_host_pid_and_the_command_to_remove_it(
    tmp_path: Path,
) -> None:
    other = {"host": "gpu-node-7", "pid": 4242, "started": "2026-01-01T00:00:00+00:00"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(other))
    with pytest.raises(ConfigError) as err:
        RunLock(tmp_path).acquire()
    message = str(err.value)
    assert "locked by PID 4242 on host gpu-node-7 since 2026-01-01" in message
    assert f"rm {tmp_path / LOCK_FILE}" in message and "\n" not in message
    (tmp_path / LOCK_FILE).write_text("{")  # unreadable: named, with the same way out
    with pytest.raises(ConfigError, match="names no host and PID"):
        RunLock(tmp_path).acquire()


def cli(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "imblab.train", *overrides, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def test_imblab_train_refuses_another_config_and_a_held_lock_leaving_the_run_as_it_was(
    tmp_path: Path,
) -> None:
    run = saved_run(tmp_path / "run", *FAST)
    before = snapshot(run)
    proc = cli(run, *FAST, "loss=focal", "model.optimizer.lr=0.01")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "holds a run of another config" in errors[0]
    assert "Traceback" not in proc.stderr
    assert snapshot(run) == before and not (run / LOCK_FILE).exists()

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = {
            "host": os.uname().nodename,
            "pid": holder.pid,
            "pid_start": _process_start(holder.pid),
            "started": "now",
            "command": "imblab-train (the first)",
        }
        (run / LOCK_FILE).write_text(json.dumps(lock))
        proc = cli(run, *FAST)
        assert proc.returncode == 2, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, proc.stderr[-2000:]
        assert f"in use by another run (PID {holder.pid} since now: imblab-train" in errors[0]
        assert snapshot(run) == before
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid  # still its
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_released_when_the_run_fails(tmp_path: Path) -> None:
    proc = cli(tmp_path / "run", *FAST, "data.imbalance_ratio=0.5")  # fails inside the run
    assert proc.returncode == 2 and "error: data.imbalance_ratio=0.5" in proc.stderr
    assert (tmp_path / "run" / ".hydra").is_dir()  # it got past the start
    assert not (tmp_path / "run" / LOCK_FILE).exists()
