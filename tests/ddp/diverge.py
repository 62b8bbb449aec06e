"""Train a small classifier under Lightning DDP (CPU, gloo) with one NaN input on one rank, and
write the divergence every rank reported.

Usage: python diverge.py DEVICES OUT_PREFIX NAN_RANK NAN_BATCH

Rank r writes ``OUT_PREFIX_r.json``: ``{"epoch", "step"}`` of its :class:`TrainingDiverged`
(null when training ended without one). Rank 0 waits for the processes it launched.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from torch import nn

from imblab.data.tensors import TensorBatches
from imblab.models.classifier import Classifier, TrainingDiverged
from imblab.samplers import SequentialShard

N = 250  # 125 per rank with 2 processes, 84/83/83 with 3


class Data(LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(N, 4, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def train_dataloader(self) -> TensorBatches:
        return TensorBatches(self.x, self.y, 16, SequentialShard(N))

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self.x, self.y, 64, SequentialShard(N))


class NanInput(Callback):
    """Puts a NaN into the first input of batch ``batch`` of rank ``rank`` (epoch 0)."""

    def __init__(self, rank: int, batch: int) -> None:
        self.rank, self.batch = rank, batch

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if (trainer.global_rank, trainer.current_epoch, batch_idx) == (self.rank, 0, self.batch):
            batch[0][0, 0] = math.nan


def main() -> None:
    devices, prefix, nan_rank, nan_batch = sys.argv[1:5]
    model = Classifier(
        backbone=nn.Linear(4, 2),
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        num_classes=2,
        class_names=["a", "b"],
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=int(devices),
        strategy="ddp" if int(devices) > 1 else "auto",
        max_epochs=2,
        callbacks=[NanInput(int(nan_rank), int(nan_batch))],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    record: dict[str, int | None] = {"epoch": None, "step": None}
    try:
        trainer.fit(model, datamodule=Data())
    except TrainingDiverged as err:
        record = {"epoch": err.epoch, "step": err.step}
    Path(f"{prefix}_{trainer.global_rank}.json").write_text(json.dumps(record))
    launcher = trainer.strategy.launcher
    if isinstance(launcher, _SubprocessScriptLauncher):
        for proc in launcher.procs:
            proc.wait()


if __name__ == "__main__":
    main()
    # gloo's threads must not outlive the interpreter (an abort at exit under load otherwise)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
