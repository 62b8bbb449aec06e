"""Evaluation batches carry each sample's index in its split: (x, y, ids)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import torch

from imblab.data.mnist import MNISTDataModule
from imblab.data.tensors import TensorBatches
from imblab.samplers import SequentialShard


def test_tensor_batches_yield_ids_on_request() -> None:
    images, labels = torch.arange(10).view(10, 1) * 10, torch.arange(10) % 3
    plain = list(TensorBatches(images, labels, 4, SequentialShard(10)))
    assert all(len(batch) == 2 for batch in plain)
    for rank in range(3):
        shard = SequentialShard(10, num_replicas=3, rank=rank)
        for x, y, ids in TensorBatches(images, labels, 2, shard, ids=True):
            assert ids.dtype == torch.int64
            assert torch.equal(x[:, 0], ids * 10) and torch.equal(y, ids % 3)


def test_datamodule_eval_ids_pass_through_the_batch_transfer(tmp_path: Path) -> None:
    sample_dm = MNISTDataModule(str(tmp_path), source="sample", batch_size=64)
    sample_dm.prepare_data()
    sample_dm.setup()
    x, y, ids = next(iter(sample_dm.test_dataloader()))
    assert torch.equal(ids, torch.arange(len(ids)))
    train = next(iter(sample_dm.train_dataloader()))
    assert len(train) == 2  # training batches stay (x, y)
    sample_dm.trainer = cast(Any, SimpleNamespace(training=False))
    out, labels, same_ids = sample_dm.on_after_batch_transfer((x, y, ids), 0)
    assert out.dtype == torch.float32 and labels is y and same_ids is ids
