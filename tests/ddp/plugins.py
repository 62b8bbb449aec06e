"""Validate a fixed-output model with the calibration and top-k plugins under Lightning DDP (CPU,
gloo) and write what rank 0 logged.

Usage: python plugins.py DEVICES OUT.json N C

The model and data are those of validate.py (the backbone is the identity), so any difference
from a single process can only come from how the plugin states are split and summed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from torch import nn
from validate import Logits

from imblab.callbacks.calibration import CalibrationMetrics
from imblab.callbacks.scalars import ClassificationScalars
from imblab.callbacks.topk import TopKAccuracy
from imblab.models.classifier import Classifier


def main() -> None:
    devices, out, n, c = sys.argv[1:5]
    num_classes = int(c)
    model = Classifier(
        backbone=nn.Identity(),
        optimizer=torch.optim.SGD,
        num_classes=num_classes,
        class_names=[f"c{i}" for i in range(num_classes)],
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=int(devices),
        strategy="ddp" if int(devices) > 1 else "auto",
        callbacks=[
            ClassificationScalars(),
            CalibrationMetrics(n_bins=15),
            TopKAccuracy(ks=[1, 2, 3]),
        ],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.validate(model, datamodule=Logits(int(n), num_classes), verbose=False)
    calibration = model.eval_state("val", "calibration").compute()
    if trainer.is_global_zero:
        logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
        record = {
            "world_size": trainer.world_size,
            "total": calibration.total,
            "bins": calibration.count.tolist(),
            "logged": logged,
        }
        Path(out).write_text(json.dumps(record))


if __name__ == "__main__":
    main()
    # gloo's threads must not outlive the interpreter (an abort at exit under load otherwise)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
