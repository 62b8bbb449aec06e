"""Validate a fixed-output model under Lightning DDP (CPU, gloo) and write what rank 0 logged.

Usage: python validate.py DEVICES OUT.json N C THRESHOLDS   (THRESHOLDS: an int, or "exact")

The "images" are logit vectors and the backbone is the identity, so every process computes
exactly the same per-sample outputs as a single process would; any difference in the logged
values can only come from how the counts are split and summed across processes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch import nn

from imblab.callbacks.mcc import MatthewsCorrCoef
from imblab.callbacks.scalars import ClassificationScalars
from imblab.data.tensors import TensorBatches
from imblab.models.classifier import Classifier
from imblab.samplers import SequentialShard


def synthetic(n: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Skewed targets and noisy logits that favour the true class (ties and saturation included)."""
    g = torch.Generator().manual_seed(0)
    prior = torch.tensor([0.5**k for k in range(c)])
    target = torch.multinomial(prior / prior.sum(), n, replacement=True, generator=g)
    logits = torch.randn(n, c, generator=g) * 2
    logits[torch.arange(n), target] += 2.5
    logits[::7] = logits[::7].round()
    logits[::11, 0] = 40.0
    return logits, target


class Logits(LightningDataModule):
    def __init__(self, n: int, c: int) -> None:
        super().__init__()
        self.logits, self.target = synthetic(n, c)

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self.logits, self.target, 64, SequentialShard(len(self.target)))


def main() -> None:
    devices, out, n, c, thresholds = sys.argv[1:6]
    num_classes = int(c)
    counts = {"thresholds": None if thresholds == "exact" else int(thresholds), "input": "logits"}
    model = Classifier(
        backbone=nn.Identity(),
        optimizer=torch.optim.SGD,
        num_classes=num_classes,
        class_names=[f"c{i}" for i in range(num_classes)],
        counts=counts,
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=int(devices),
        strategy="ddp" if int(devices) > 1 else "auto",
        callbacks=[ClassificationScalars(), MatthewsCorrCoef()],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.validate(model, datamodule=Logits(int(n), num_classes), verbose=False)
    state = model.count_state("val")
    total = int(state.compute().confmat.sum())
    if trainer.is_global_zero:
        logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
        record = {"world_size": trainer.world_size, "total": total, "logged": logged}
        Path(out).write_text(json.dumps(record))


if __name__ == "__main__":
    main()
    # gloo's threads must not outlive the interpreter (an abort at exit under load otherwise)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
