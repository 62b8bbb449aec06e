"""Validate a LightningModule of one's own with PerClassMetrics under Lightning DDP (CPU, gloo)
and write what rank 0 published and what its CSVLogger received.

Usage: python own_module.py DEVICES OUT_DIR N C

The module returns its inputs, logit vectors, as ``preds`` (as docs/metrics.md's example
returns its network's outputs); the loader is a plain DataLoader, so under DDP Lightning injects
its padding DistributedSampler. Any difference from a single process can only come from how the
samples are split, padded and summed across processes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from validate import synthetic

from imblab.callbacks import PerClassMetrics
from imblab.callbacks.calibration import CalibrationMetrics
from imblab.callbacks.scalars import ClassificationScalars
from imblab.models.classifier import Classifier


class Logits(LightningModule):
    """Returns its input logits: a module of one's own, nothing of imblab's inherited."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # DDP wraps modules with parameters

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"preds": x * self.scale, "target": y}


def run(devices: int, out: str, n: int, num_classes: int) -> None:
    """Validate ``n`` synthetic samples of ``num_classes`` on ``devices`` processes; rank 0
    writes ``out/record.json`` (its CSVLogger: ``out/csv/metrics.csv``)."""
    logits, target = synthetic(n, num_classes)
    names = [f"c{i}" for i in range(num_classes)]
    metrics = PerClassMetrics(
        num_classes,
        class_names=names,
        metrics=[ClassificationScalars(), CalibrationMetrics()],
        thresholds=None,
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        callbacks=[metrics],
        logger=CSVLogger(out, name="csv", version=""),
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    loader = DataLoader(TensorDataset(logits, target), batch_size=64)
    trainer.validate(Logits(), dataloaders=loader, verbose=False)
    total = int(metrics.count_state("val").compute().confmat.sum())
    calibration_total = int(metrics.eval_state("val", "calibration").compute().total)
    published = {k: float(v) for k, v in trainer.callback_metrics.items()}
    dtypes = sorted({str(v.dtype) for v in trainer.callback_metrics.values()})
    # imblab's Classifier on the same plain loader (PerClassMetrics reads its step outputs too):
    # the same mechanism leaves the padding out of its counts and its loss
    classifier = Classifier(
        backbone=nn.Identity(),
        optimizer=torch.optim.SGD,
        num_classes=num_classes,
        class_names=names,
    )
    trainer.validate(classifier, dataloaders=loader, verbose=False)
    classifier_confmat = classifier.count_state("val").compute().confmat
    if trainer.is_global_zero:
        record = {
            "world_size": trainer.world_size,
            "total": total,
            "calibration_total": calibration_total,
            "classifier_confmat": classifier_confmat.tolist(),
            "classifier_loss": float(trainer.callback_metrics["val/loss"]),
            "dtypes": dtypes,
            "published": published,
        }
        (Path(out) / "record.json").write_text(json.dumps(record))


def main() -> None:
    devices, out, n, c = sys.argv[1:5]
    run(int(devices), out, int(n), int(c))


if __name__ == "__main__":
    main()
    # gloo's threads must not outlive the interpreter (an abort at exit under load otherwise)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
