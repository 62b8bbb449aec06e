"""Resuming: a run interrupted after epoch k (crash, SIGKILL) and rerun in the same run dir ends
with exactly the metrics and weights of the uninterrupted run; SIGINT and SIGTERM leave a
resumable run whose ``status.json`` says ``interrupted`` and the epoch it reached."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from imblab.pipelines.training import train
from imblab.resume import rng_state, set_rng_state
from imblab.runs import read_status

from .conftest import FAST
from .test_train import events

# few batches per epoch, so that six epochs take seconds
SMALL = [*FAST, "+trainer.limit_train_batches=4", "data.batch_size=32"]


class CrashAfterEpoch(Callback):
    """Raises when epoch ``epoch + 1`` starts, after epoch ``epoch``'s checkpoints are written:
    a crash between two epochs."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch == self.epoch + 1:
            raise RuntimeError(f"crash after epoch {self.epoch}")


def metrics_record(run_dir: Path) -> dict[str, Any]:
    """``metrics.json`` with the best checkpoint's path relative to the run dir."""
    record: dict[str, Any] = json.loads((run_dir / "metrics.json").read_text())
    record["best_checkpoint"] = str(Path(record["best_checkpoint"]).relative_to(run_dir))
    return record


def weights(run_dir: Path, name: str = "last.ckpt") -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(
        run_dir / "checkpoints" / name, weights_only=True, map_location="cpu"
    )["state_dict"]
    return state


def assert_same_run(a: Path, b: Path) -> None:
    """The full ``metrics.json`` and the final weights are equal (exactly)."""
    record_a, record_b = metrics_record(a), metrics_record(b)
    differ = {
        k: (v, record_b["metrics"].get(k))
        for k, v in record_a["metrics"].items()
        if record_b["metrics"].get(k) != v
    }
    assert not differ, f"{len(differ)} of {len(record_a['metrics'])} values differ: {differ}"
    assert record_a == record_b
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    """The saved state restores every global generator, and ``torch.load(weights_only=True)``
    (how runs resume) reads it."""
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    path = tmp_path / "state.pt"
    torch.save({"rng": rng_state()}, path)
    expected = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)])
    torch.manual_seed(4)
    np.random.seed(4)
    random.seed(4)
    set_rng_state(torch.load(path, weights_only=True)["rng"])
    got = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)])
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_run_crashed_after_an_epoch_resumes_to_the_uninterrupted_result(
    compose_cfg, tmp_path: Path
) -> None:
    """2 epochs uninterrupted vs. a run that crashes after epoch 0 and is rerun in its dir (the
    fast variant of the SIGKILL test below)."""
    options = [*SMALL, "trainer.max_epochs=2", "seed=5"]
    train(compose_cfg(*options, run_dir=tmp_path / "a"))
    crash = [
        "+callbacks.crash._target_=tests.test_resume.CrashAfterEpoch",
        "+callbacks.crash.epoch=0",
    ]
    with pytest.raises(RuntimeError, match="crash after epoch 0"):
        train(compose_cfg(*options, *crash, run_dir=tmp_path / "b"))
    assert not (tmp_path / "b" / "metrics.json").exists()
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    train(compose_cfg(*options, run_dir=tmp_path / "b"))
    assert_same_run(tmp_path / "a", tmp_path / "b")


def command(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "imblab.train", *overrides, f"hydra.run.dir={run_dir}"]


ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def run(run_dir: Path, *overrides: str) -> None:
    proc = subprocess.run(
        command(run_dir, *overrides), capture_output=True, text=True, timeout=600, env=ENV
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def start_until_epoch(run_dir: Path, epoch: int, *overrides: str) -> subprocess.Popen[bytes]:
    """Start a run and return once its ``last.ckpt`` holds ``epoch`` (polled)."""
    proc = subprocess.Popen(
        command(run_dir, *overrides), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended (code {proc.returncode}) before epoch {epoch}"
        try:
            if torch.load(last, weights_only=True, map_location="cpu")["epoch"] >= epoch:
                return proc
        except (OSError, RuntimeError, EOFError, KeyError):  # not written yet
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no checkpoint of epoch {epoch} within 300 s")


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """6 epochs; SIGKILL right after epoch 2's checkpoint; the rerun ends exactly as the
    uninterrupted run (every value of metrics.json, the weights)."""
    options = [*SMALL, "trainer.max_epochs=6"]
    run(tmp_path / "a", *options)
    proc = start_until_epoch(tmp_path / "b", 2, *options)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert (read_status(tmp_path / "b") or {}).get("status") == "running"
    run(tmp_path / "b", *options)
    assert_same_run(tmp_path / "a", tmp_path / "b")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigint_and_sigterm_leave_an_interrupted_resumable_run(
    tmp_path: Path, signum: signal.Signals
) -> None:
    options = [*SMALL, "trainer.max_epochs=30", "test=false"]
    proc = start_until_epoch(tmp_path, 0, *options)
    proc.send_signal(signum)
    assert proc.wait(timeout=120) != 0
    status = read_status(tmp_path)
    assert status is not None and status["status"] == "interrupted", status
    assert status["signal"] == signum.name and status["finished"] is not None
    reached = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert status["epochs_completed"] == reached + 1 >= 1
    if signum == signal.SIGTERM:  # resumable: the rerun finishes from where it stopped
        run(tmp_path, *SMALL, f"trainer.max_epochs={reached + 2}", "test=false")
        done = read_status(tmp_path)
        assert done is not None and done["status"] == "completed"
        # both monitor values, named: the best epoch's (the checkpoint's) and the last one's
        history = [e.value for e in events(tmp_path).Scalars("val/f1_macro")]
        assert len(history) == reached + 2
        final = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
        assert done["monitor"]["metric"] == "val/f1_macro"
        assert done["monitor"]["best"] == pytest.approx(max(history))
        assert done["monitor"]["last"] == pytest.approx(history[-1]) == final["val/f1_macro"]
        assert (
            torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
            == reached + 1
        )
