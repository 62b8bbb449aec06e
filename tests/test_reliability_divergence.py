"""A diverging run says so in one line (epoch, the first non-finite step, the learning rate, a
hint), ends ``failed`` with that reason in ``status.json``, and keeps its last good
checkpoint."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from imblab.models.classifier import TrainingDiverged
from imblab.pipelines.training import train
from imblab.runs import read_status
from imblab.sweeps import run_job

from .conftest import FAST, run_script

QUICK = ["+trainer.limit_train_batches=4", "+trainer.limit_val_batches=2", "logger=none"]


class PoisonAt(Callback):
    """Sets the first backbone weight to NaN before batch ``batch`` of epoch ``epoch``, and
    records each step's loss (the test's own account of where the loss went non-finite)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch
        self.losses: list[tuple[int, float]] = []
        self._step = 0

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step = trainer.global_step
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            with torch.no_grad():
                next(pl_module.parameters()).fill_(math.nan)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        self.losses.append((self._step, float(outputs["loss"])))


POISON: list[PoisonAt] = []


def poison(epoch: int, batch: int) -> PoisonAt:
    """The callback, kept where the test can read it after Hydra instantiated it."""
    POISON.append(PoisonAt(epoch, batch))
    return POISON[-1]


def test_divergence_is_reported_at_its_first_step_and_the_last_good_checkpoint_kept(
    compose_cfg, tmp_path: Path
) -> None:
    POISON.clear()
    cfg = compose_cfg(
        *FAST,
        *QUICK,
        "trainer.max_epochs=3",
        "+callbacks.poison._target_=tests.test_reliability_divergence.poison",
        "+callbacks.poison.epoch=1",
        "+callbacks.poison.batch=2",
    )
    with pytest.raises(TrainingDiverged) as err:
        run_job(cfg, train)
    (recorder,) = POISON
    first = next(step for step, loss in recorder.losses if not math.isfinite(loss))
    assert first == 4 + 2  # epoch 1 (4 steps each), its batch 2
    message = str(err.value)
    assert "\n" not in message
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert message.startswith(f"training diverged at epoch 1, step {first}: NaN or infinite")
    assert "(learning rate 0.00" in message and "then, model.optimizer.lr=0.002)" in message
    assert "lower model.optimizer.lr (e.g. to 0.0002)" in message
    assert message.endswith(f"the last good checkpoint is kept: {last}")
    status = read_status(tmp_path)
    assert status is not None and status["status"] == "failed"
    assert status["error"] == f"TrainingDiverged: {message}"
    kept = torch.load(last, weights_only=True)
    assert kept["epoch"] == 0  # the diverged epoch wrote no checkpoint
    assert all(torch.isfinite(t).all() for t in kept["state_dict"].values())


def test_imblab_train_with_a_huge_learning_rate_ends_in_one_line(tmp_path: Path) -> None:
    """The issue's run: model.optimizer.lr=1e6, a few epochs."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    options = [o for o in FAST if not o.startswith("trainer.max_epochs")]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "imblab.train",
            *options,
            *QUICK,
            "trainer.max_epochs=3",
            "model.optimizer.lr=1e6",
            f"hydra.run.dir={run}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: training diverged at epoch ")
    assert "Traceback" not in proc.stderr and "CountState" not in proc.stderr
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("TrainingDiverged: ")


DDP_SCRIPT = Path(__file__).parent / "ddp" / "diverge.py"


@pytest.mark.parametrize(("devices", "nan_rank"), [(1, 0), (2, 1), (3, 2)])
def test_every_ddp_rank_reports_the_first_non_finite_step_of_any_rank(
    tmp_path: Path, devices: int, nan_rank: int
) -> None:
    """A NaN input in batch 2 of one rank only: its loss is NaN at step 2, the other ranks'
    from step 3 (after the all-reduced gradient); every rank reports step 2, epoch 0."""
    run_script(DDP_SCRIPT, str(devices), str(tmp_path / "rank"), str(nan_rank), "2", cwd=tmp_path)
    reports = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in range(devices)]
    assert reports == [{"epoch": 0, "step": 2}] * devices
