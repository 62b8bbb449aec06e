"""In-memory tensor datasets fetched a whole batch per index op, and an unpadded DDP sampler."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset, DistributedSampler

Batch = tuple[torch.Tensor, torch.Tensor]


class BatchTensorDataset(Dataset[Batch]):
    """``(images, labels)`` held as tensors; ``__getitems__`` returns a whole batch at once.

    torch's map-style fetcher calls ``__getitems__(indices)`` with the batch's indices, so a
    batch costs one index op instead of N ``__getitem__`` calls and a collate; pair it with
    :func:`collate_batch`.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Batch:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], self.labels[idx]


def collate_batch(batch: Batch) -> Batch:
    """Identity collate: ``__getitems__`` already returned the stacked ``(x, y)`` batch."""
    return batch


class UnpaddedDistributedSampler(DistributedSampler[int]):
    """Rank r gets ``indices[r::num_replicas]`` in order: no shuffling and, unlike
    DistributedSampler, no padding, so evaluation over all ranks sees each item exactly once.

    Lightning leaves a DataLoader whose sampler is already a DistributedSampler alone
    (``_requires_distributed_sampler``), so this survives its sampler injection.
    """

    def __init__(
        self, dataset: BatchTensorDataset, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        n = len(dataset)
        self.total_size = n
        self.num_samples = len(range(self.rank, n, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples
