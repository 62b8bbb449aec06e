"""Batches of in-memory tensors, drawn by index on the tensors' own device."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from imblab.samplers import IndexSampler

Batch = tuple[torch.Tensor, ...]
Split = tuple[torch.Tensor, torch.Tensor]


class ResidentSplits(dict[str, Split]):
    """Each split's ``(images, labels)`` in host memory, by name; :meth:`on` gives them on a
    device, copied there once."""

    def __init__(self, splits: dict[str, Split] | None = None) -> None:
        super().__init__(splits or {})
        self._copies: dict[tuple[str, torch.device], Split] = {}

    def on(self, name: str, device: torch.device) -> Split:
        """Split ``name`` on ``device`` (the host tensors themselves on the CPU)."""
        if device.type == "cpu":
            return self[name]
        key = (name, device)
        if key not in self._copies:
            images, labels = self[name]
            self._copies[key] = images.to(device), labels.to(device)
        return self._copies[key]


class TensorBatches:
    """An iterable of ``(images[i], labels[i])`` batches of in-memory tensors; with ``ids``,
    ``(images[i], labels[i], i)``: ``i`` (int64) the samples' indices in the tensors.

    Each epoch it asks ``sampler.indices(device)`` for this process's index tensor, made on the
    tensors' device, and yields one batch per ``batch_size`` consecutive indices, each fetched
    with one ``index_select`` per tensor: with the tensors on a GPU, drawing, indexing and
    batching stay on the GPU (no host round trip, no sync). The last batch may be smaller.

    Lightning takes it as a plain iterable (it injects no sampler) and calls
    ``sampler.set_epoch(epoch)`` every epoch, as it does for a DataLoader's sampler.
    """

    #: Lightning reads ``batch_sampler`` as on a DataLoader; batching is this class's own.
    batch_sampler = None

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        sampler: IndexSampler,
        ids: bool = False,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if images.device != labels.device:
            raise ValueError(f"images on {images.device} but labels on {labels.device}")
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size} < 1")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.sampler = sampler
        self.ids = ids

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        indices = self.sampler.indices(self.device)
        for batch in indices.split(self.batch_size):
            x, y = self.images.index_select(0, batch), self.labels.index_select(0, batch)
            yield (x, y, batch.to(torch.int64)) if self.ids else (x, y)
