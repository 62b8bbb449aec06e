"""``test_accuracy`` of ``TestEveryEpoch`` under Lightning DDP (CPU, gloo): every rank writes the
test accuracy it computed.

Usage: python every_epoch.py DEVICES OUT_DIR N C

The "images" are logit vectors and the backbone is the identity (tests/ddp/validate.py's
synthetic data), so the accuracy depends only on how the test split is shared and summed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from torch import nn
from validate import synthetic

from imblab.callbacks.long_tail import test_accuracy
from imblab.data.tensors import TensorBatches
from imblab.models.classifier import Classifier
from imblab.samplers import SequentialShard


class Logits(LightningDataModule):
    def __init__(self, n: int, c: int) -> None:
        super().__init__()
        self.logits, self.target = synthetic(n, c)

    def transform(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        return x

    def loader(self) -> TensorBatches:
        n = len(self.target)
        return TensorBatches(self.logits, self.target, 64, SequentialShard(n), ids=True)

    def val_dataloader(self) -> TensorBatches:
        return self.loader()

    def test_dataloader(self) -> TensorBatches:
        return self.loader()


class Record(Callback):
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.accuracy = test_accuracy(trainer, pl_module)


def main() -> None:
    devices, out, n, c = sys.argv[1:5]
    model = Classifier(
        backbone=nn.Identity(),
        optimizer=torch.optim.SGD,
        num_classes=int(c),
        class_names=[f"c{i}" for i in range(int(c))],
    )
    record = Record()
    trainer = Trainer(
        accelerator="cpu",
        devices=int(devices),
        strategy="ddp" if int(devices) > 1 else "auto",
        callbacks=[record],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.validate(model, datamodule=Logits(int(n), int(c)), verbose=False)
    rank = trainer.global_rank
    path = Path(out) / f"rank{rank}_of_{trainer.world_size}.json"
    path.write_text(json.dumps({"accuracy": record.accuracy}))


if __name__ == "__main__":
    main()
    # gloo's threads must not outlive the interpreter (an abort at exit under load otherwise)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
