"""Train ``data=image_folder`` under Lightning DDP (CPU, gloo) and record, per rank, the
training sampler Lightning used and the validation ids each rank evaluated.

Usage: python ddp_train.py DEVICES ROOT OUT_DIR [OVERRIDE ...]

Each rank writes ``rank{r}.json``: the sampler's class, (num_replicas, rank), the ids of every
validation batch of the last epoch, the number of items in the validation count state (summed
over ranks) and the split's size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_module
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import open_dict

from imblab.pipelines.training import build_datamodule, build_model, build_trainer


class Record(Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.ids: list[int] = []

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.ids = []

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        self.ids += batch[2].tolist()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        sampler = trainer.train_dataloader.sampler  # type: ignore[union-attr]
        dm = trainer.datamodule  # type: ignore[attr-defined]
        record = {
            "world_size": trainer.world_size,
            "sampler": type(sampler).__name__,
            "replicas": [sampler.num_replicas, sampler.rank],
            "train_len": len(sampler),
            "val_ids": self.ids,
            "val_size": len(dm.files("val")[0]),
            # the validation counts, summed over all ranks
            "counted": int(pl_module.count_state("val").compute().confmat.sum()),
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def main() -> None:
    devices, root, out, *overrides = sys.argv[1:]
    with initialize_config_module(config_module="imblab.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "data=image_folder",
                f"data.root={root}",
                f"paths.data_dir={out}/data",
                "data.image_size=16",
                "data.batch_size=8",
                "data.eval_batch_size=4",
                "trainer=ddp" if int(devices) > 1 else "trainer=default",
                "trainer.accelerator=cpu",
                f"trainer.devices={devices}",
                "trainer.max_epochs=1",
                "test=false",
                "logger=none",
                "callbacks=none",
                "metrics=[scalars]",
                "model.backbone.width=4",
                *overrides,
            ],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = out
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    trainer = build_trainer(
        cfg,
        callbacks=[Record(Path(out))],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=datamodule)


if __name__ == "__main__":
    main()
    # gloo's threads must not outlive the interpreter (an abort at exit under load otherwise)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
