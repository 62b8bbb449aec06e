"""Train on the bundled MNIST sample under Lightning DDP (CPU, gloo) with a rebalancing sampler;
record the training indices each rank was given per epoch and have rank 0 check the shares.

Usage: python sampler_shares.py DEVICES OUT_DIR SAMPLER   (SAMPLER: inverse or class_aware)

Each rank writes ``rank{r}.json`` ({epoch: indices}); rank 0 then checks that the ranks' shares
are rank ``r`` = ``draw[r::world]`` of the one global draw (so disjoint in draw positions and
equal in length), that Lightning kept the sampler (no DistributedSampler swapped in) and that
the epochs differ, and writes ``result.json``.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from imblab.data.mnist import MNISTDataModule
from imblab.samplers import ClassAwareSampler, RebalancingSampler, WeightedClassSampler

NUM_SAMPLES, BATCH, EPOCHS, SEED = 250, 32, 2, 7  # 250: not a multiple of the world size


def recording(cls: type[RebalancingSampler]) -> type[RebalancingSampler]:
    class Recording(cls):  # type: ignore[valid-type,misc]
        seen: ClassVar[dict[int, list[int]]] = {}

        def indices(self, device: Any = "cpu") -> torch.Tensor:
            indices = super().indices(device)
            Recording.seen[self.epoch] = indices.tolist()
            return indices

    return Recording


class Tiny(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(28 * 28, 10)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x.flatten(1)), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Check(Callback):
    def __init__(self, out: Path, sampler_cls: type[RebalancingSampler]) -> None:
        self.out = out
        self.sampler_cls = sampler_cls

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        sampler = trainer.train_dataloader.sampler  # type: ignore[union-attr]
        rank, world = trainer.global_rank, trainer.world_size
        record = {
            "sampler": type(sampler).__name__,
            "num_replicas": sampler.num_replicas,
            "rank": sampler.rank,
            "seen": sampler.seen,
        }
        (self.out / f"rank{rank}.json").write_text(json.dumps(record))
        trainer.strategy.barrier()
        if rank != 0:
            return
        dm = trainer.datamodule  # type: ignore[attr-defined]
        ranks = [json.loads((self.out / f"rank{r}.json").read_text()) for r in range(world)]
        errors = []
        for r, rec in enumerate(ranks):
            if rec["sampler"] != "Recording" or (rec["num_replicas"], rec["rank"]) != (world, r):
                errors.append(f"rank {r}: {rec['sampler']} {rec['num_replicas']} {rec['rank']}")
        shares_by_epoch = {}
        for epoch in range(EPOCHS):
            shares = [rec["seen"][str(epoch)] for rec in ranks]
            shares_by_epoch[epoch] = shares
            if len({len(s) for s in shares}) != 1:
                errors.append(f"epoch {epoch}: share lengths {[len(s) for s in shares]}")
            # the one global draw, rebuilt in a single process; rank r must hold draw[r::world]
            ref = self.sampler_cls(
                dm.train_dataloader().labels,
                seed=SEED,
                num_samples=NUM_SAMPLES,
                num_classes=dm.num_classes,
                num_replicas=world,
                rank=0,
            )
            ref.set_epoch(epoch)
            draw = ref.global_draw().tolist()
            for r, share in enumerate(shares):
                if share != draw[r::world]:
                    errors.append(f"epoch {epoch} rank {r}: not draw[{r}::{world}]")
            interleaved = [share[i] for i in range(len(shares[0])) for share in shares]
            if interleaved != draw:
                errors.append(f"epoch {epoch}: the interleaved shares are not the global draw")
        if shares_by_epoch[0] == shares_by_epoch[1]:
            errors.append("epochs 0 and 1 drew the same indices")
        result = {"world_size": world, "errors": errors, "share_len": len(shares_by_epoch[0][0])}
        (self.out / "result.json").write_text(json.dumps(result))


def main() -> None:
    devices, out, name = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    base = WeightedClassSampler if name == "inverse" else ClassAwareSampler
    cls = recording(base)
    options = {"scheme": "inverse"} if name == "inverse" else {}
    dm = MNISTDataModule(
        data_dir=str(out / "data"),
        source="sample",
        batch_size=BATCH,
        seed=SEED,
        augment_translate=0,
        sampler=functools.partial(cls, num_samples=NUM_SAMPLES, **options),
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=EPOCHS,
        limit_val_batches=0,
        callbacks=[Check(out, base)],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), datamodule=dm)


if __name__ == "__main__":
    main()
    # gloo's threads must not outlive the interpreter (an abort at exit under load otherwise)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
