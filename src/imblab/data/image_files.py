"""Image files decoded in DataLoader workers: the dataset, its collate functions and the
evaluation sampler and batches (the image folder's loaders without a decode cache)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from imblab.data.images import load_rgb
from imblab.samplers import SequentialShard

log = logging.getLogger(__name__)

Item = tuple[torch.Tensor | None, int, int]


def fit_square(image: Image.Image, size: int, grayscale: bool) -> torch.Tensor:
    """uint8 (C, size, size) tensor: the centred square crop of ``image`` resized to ``size``
    (bilinear, antialiased); C = 1 with ``grayscale``, else 3."""
    square = ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR)
    if grayscale:
        return torch.from_numpy(np.array(square.convert("L"))).unsqueeze(0)
    return torch.from_numpy(np.array(square.convert("RGB"))).permute(2, 0, 1).contiguous()


class ImageFiles(Dataset[Item]):
    """Decodes image files in DataLoader workers: item ``i`` is ``(uint8 (C, S, S) tensor,
    label, i)`` (:func:`fit_square` of :func:`~imblab.data.images.load_rgb`).

    A file that fails to decode (changed or gone since validation) is logged and never raises:
    with ``substitute`` (training) the next file of the same label that decodes takes its place;
    without (evaluation) the item's image is ``None`` and :func:`collate` drops it.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: torch.Tensor,
        image_size: int,
        grayscale: bool,
        max_pixels: int,
        substitute: bool,
    ) -> None:
        self.paths = list(paths)
        self.labels = labels.tolist()
        self.image_size = image_size
        self.grayscale = grayscale
        self.max_pixels = max_pixels
        self.substitute = substitute

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, i: int) -> torch.Tensor | None:
        try:
            image = load_rgb(self.paths[i], max_pixels=self.max_pixels)
            return fit_square(image, self.image_size, self.grayscale)
        except Exception as err:  # any decoding error of a file that changed since validation
            log.warning("skipped %s: cannot decode it now (%s)", self.paths[i], err)
            return None

    def __getitem__(self, i: int) -> Item:
        image = self.decode(i)
        if image is None and self.substitute:
            n = len(self.paths)
            for j in ((i + k) % n for k in range(1, n)):
                if self.labels[j] == self.labels[i]:
                    image = self.decode(j)
                    if image is not None:
                        break
            if image is None:
                raise RuntimeError(f"no file of class {self.labels[i]} can be decoded any more")
        return image, self.labels[i], i


def collate(batch: list[Item]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(images, labels, ids)`` of the items that decoded; None when none did."""
    items = [b for b in batch if b[0] is not None]
    if not items:
        return None
    images = torch.stack([b[0] for b in items])  # type: ignore[misc]
    labels = torch.tensor([b[1] for b in items], dtype=torch.int64)
    ids = torch.tensor([b[2] for b in items], dtype=torch.int64)
    return images, labels, ids


def collate_train(batch: list[Item]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)``: training items always decode (:class:`ImageFiles` substitutes)."""
    out = collate(batch)
    assert out is not None
    return out[0], out[1]


class EvalShard(DistributedSampler[int]):
    """:class:`~imblab.samplers.SequentialShard` as a DistributedSampler, so Lightning keeps it
    in a DataLoader under DDP: rank ``r`` gets ``r, r + world, ...``, no padding."""

    def __init__(self, size: int) -> None:
        self.shard = SequentialShard(size)
        super().__init__(
            range(size),  # type: ignore[arg-type]
            num_replicas=self.shard.num_replicas,
            rank=self.shard.rank,
            shuffle=False,
        )

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard)

    def __len__(self) -> int:
        return len(self.shard)


class EvalBatches:
    """Evaluation batches ``(x, y, ids)`` of a DataLoader over :class:`ImageFiles`, skipping a
    batch whose every file failed to decode (there is nothing to count in it)."""

    batch_sampler = None

    def __init__(self, loader: DataLoader[Any]) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return (batch for batch in self.loader if batch is not None)
