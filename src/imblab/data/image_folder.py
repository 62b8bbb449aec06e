"""LightningDataModule for a folder of class subfolders (scraped images): validation, a split
that is stable when files are added, imbalance profiles, binary mode, decoding in DataLoader
workers, an optional cache of decoded uint8 tensors and batched augmentation on the device."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from imblab.data import checks
from imblab.data.datamodule import random_hflip
from imblab.data.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    Verdict,
    load_rgb,
    validate_folder,
    write_rejected_csv,
)
from imblab.data.imbalance import (
    PROFILES,
    imbalance_counts,
    num_minority_classes,
    scale_counts,
)
from imblab.data.tensors import ResidentSplits, TensorBatches
from imblab.errors import ConfigError
from imblab.samplers import IndexSampler, SequentialShard, training_sampler

log = logging.getLogger(__name__)

CacheMode = Literal["none", "memory", "disk"]
CACHE_MODES: tuple[str, ...] = ("none", "memory", "disk")
FOLDER_PROFILES: tuple[str, ...] = ("none", *PROFILES)
SPLITS: tuple[str, ...] = ("train", "val", "test")
# torchvision's ImageNet statistics: what its pretrained weights expect
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def unit_hash(seed: int, salt: str, key: str) -> float:
    """A uniform number in [0, 1) determined by (seed, salt, key) alone: the first 8 bytes of
    ``sha256("seed:salt:key")`` / 2^64."""
    digest = hashlib.sha256(f"{seed}:{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(
    keys: Sequence[str], val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """The split of each item of one class, from its own hash ``u = unit_hash(seed, "split",
    key)``: test if ``u < test_fraction``, val if ``u < test_fraction + val_fraction``, else
    train. An item's split depends on nothing but its key, so adding items never moves another.

    Every split with a positive fraction (and train) gets at least one item: when one would be
    empty, the item whose ``u`` lies nearest to that split's interval is moved there from a split
    that keeps at least one (this is the only case where adding items can move an item back).
    Needs ``len(keys) >=`` the number of such splits.
    """
    bounds = {"test": (0.0, test_fraction), "val": (test_fraction, test_fraction + val_fraction)}
    bounds["train"] = (test_fraction + val_fraction, 1.0)
    u = [unit_hash(seed, "split", k) for k in keys]
    out = ["test" if x < test_fraction else "val" if x < bounds["val"][1] else "train" for x in u]
    needed = [s for s in SPLITS if s == "train" or bounds[s][1] > bounds[s][0]]
    for split in needed:
        if split in out:
            continue
        low, high = bounds[split]
        donors = [i for i, s in enumerate(out) if out.count(s) > 1]
        best = min(donors, key=lambda i: (max(low - u[i], u[i] - high, 0.0), keys[i]))
        out[best] = split
    return out


def keep_smallest(keys: Sequence[str], k: int, seed: int) -> set[int]:
    """Positions of the ``k`` keys with the smallest ``unit_hash(seed, "keep", key)``: a seeded
    subsample that keeps its choices as far as possible when keys are added."""
    order = sorted(range(len(keys)), key=lambda i: (unit_hash(seed, "keep", keys[i]), keys[i]))
    return set(order[:k])


def fit_square(image: Image.Image, size: int, grayscale: bool) -> torch.Tensor:
    """uint8 (C, size, size) tensor: the centred square crop of ``image`` resized to ``size``
    (bilinear, antialiased); C = 1 with ``grayscale``, else 3."""
    square = ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR)
    if grayscale:
        return torch.from_numpy(np.array(square.convert("L"))).unsqueeze(0)
    return torch.from_numpy(np.array(square.convert("RGB"))).permute(2, 0, 1).contiguous()


def random_resized_crop(
    x: torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    hflip: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per image of ``x`` (B, C, H, W, float): a random crop covering an area fraction
    ``s ~ U(scale)`` with aspect ratio ``r`` (``log r ~ U(log ratio)``; sides ``sqrt(s r)``,
    ``sqrt(s / r)`` of the image's, capped at 1) at a uniform random position, resized back to
    H x W (bilinear) and, with ``hflip``, mirrored with probability 1/2. One ``affine_grid`` +
    one ``grid_sample`` for the whole batch."""
    b, device = x.shape[0], x.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(b, device=device, generator=generator) * (high - low) + low

    s = uniform(*scale)
    r = uniform(math.log(ratio[0]), math.log(ratio[1])).exp()
    w = (s * r).sqrt().clamp(max=1.0)
    h = (s / r).sqrt().clamp(max=1.0)
    tx = uniform(-1, 1) * (1 - w)
    ty = uniform(-1, 1) * (1 - h)
    sign = torch.ones(b, device=device)
    if hflip:
        sign = torch.where(uniform(0, 1) < 0.5, -sign, sign)
    theta = torch.zeros(b, 2, 3, device=device, dtype=x.dtype)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class ImageFiles(Dataset[Any]):
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

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, int]:
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


def collate(
    batch: list[tuple[torch.Tensor | None, int, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(images, labels, ids)`` of the items that decoded; None when none did."""
    items = [b for b in batch if b[0] is not None]
    if not items:
        return None
    images = torch.stack([b[0] for b in items])  # type: ignore[misc]
    labels = torch.tensor([b[1] for b in items], dtype=torch.int64)
    ids = torch.tensor([b[2] for b in items], dtype=torch.int64)
    return images, labels, ids


def collate_train(
    batch: list[tuple[torch.Tensor | None, int, int]],
) -> tuple[torch.Tensor, torch.Tensor]:
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


class ImageFolderDataModule(pl.LightningDataModule):
    """Images from ``root/<class name>/...`` (any depth below the class folder), e.g. the output
    of ``imblab-scrape``; class names are the sorted folder names (class 0 first).

    :meth:`setup` (deterministic given ``seed`` and the files):

    1. validate every file (:func:`~imblab.data.images.validate_folder`: full decode, verdicts
       cached per file); rejected files and exact duplicates (sha256; the first by sorted path
       is kept) are logged and written to ``<output_dir>/rejected.csv`` (path, verdict, reason);
    2. split each class into train/val/test by a seeded hash of each file's sha256
       (:func:`assign_splits`): stratified, and stable when files are added;
    3. apply the imbalance ``profile`` to the train + val pool of each class (and with
       ``imbalance_test`` to test), keeping the files with the smallest seeded hash;
    4. with ``positive_class``: relabel to 1 (that class) / 0 (the rest);
    5. with ``cache`` (``memory`` or ``disk``): decode every kept file once, in ``num_workers``
       processes, into uint8 (N, C, S, S) tensors (``disk``: one ``.pt`` file per (root, size,
       file list) under ``cache_dir``, reused by later runs); the splits then live on the
       trainer's device (``on_device``) and batches are drawn there as for MNIST. Without a
       cache a DataLoader decodes each batch in ``num_workers`` worker processes every epoch.

    Training batches are ``(x, y)``, evaluation batches ``(x, y, ids)``. :meth:`transform` runs
    on the batch's device: float, random resized crop + flip while training, normalisation.
    """

    def __init__(
        self,
        root: str | None = None,
        image_size: int = 64,
        grayscale: bool = False,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        profile: str = "none",
        imbalance_ratio: float = 10.0,
        minority_fraction: float = 0.5,
        class_counts: list[int] | None = None,
        positive_class: str | None = None,
        imbalance_test: bool = False,
        min_side: int = DEFAULT_MIN_SIDE,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        verdict_cache: bool = True,
        cache: CacheMode = "memory",
        cache_dir: str | None = None,
        num_workers: int = 0,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment_crop_scale: Sequence[float] = (0.35, 1.0),
        augment_crop_ratio: Sequence[float] = (0.75, 4 / 3),
        augment_hflip: bool = True,
        on_device: bool = True,
        output_dir: str | None = None,
        sampler: Callable[..., IndexSampler] | None = None,
    ) -> None:
        super().__init__()
        if sampler is not None and not callable(sampler):
            raise ConfigError(
                f"sampler={sampler!r}: not a sampler factory; use sampler=NAME of conf/sampler "
                "(e.g. sampler=inverse) or sampler=none"
            )
        self.sampler = sampler
        self.root = self._check_root(root)
        self.image_size = (checks.integer("image_size", image_size, 8),) * 2
        self.grayscale = checks.boolean("grayscale", grayscale)
        self.in_channels = 1 if self.grayscale else 3
        for key, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 <= checks.real(key, fraction) < 1:
                raise checks.bad(key, fraction, "must be in [0, 1)", "e.g. 0.15")
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        if self.val_fraction + self.test_fraction >= 1:
            raise checks.bad(
                "test_fraction",
                test_fraction,
                f"leaves no training data with val_fraction={val_fraction}",
                "make val_fraction + test_fraction < 1 (e.g. 0.15 each)",
            )
        if profile not in FOLDER_PROFILES:
            raise checks.bad(
                "profile", profile, "unknown profile", f"use one of {list(FOLDER_PROFILES)}"
            )
        self.profile = profile
        self.imbalance_ratio = checks.real("imbalance_ratio", imbalance_ratio)
        if self.imbalance_ratio < 1:
            raise checks.bad(
                "imbalance_ratio",
                imbalance_ratio,
                "must be >= 1 (largest / smallest class size)",
                "use 1 for no imbalance or a larger value",
            )
        self.minority_fraction = checks.real("minority_fraction", minority_fraction)
        if not 0 < self.minority_fraction < 1:
            raise checks.bad(
                "minority_fraction", minority_fraction, "must be in (0, 1)", "e.g. 0.5"
            )
        if (profile == "explicit") != (class_counts is not None):
            raise checks.bad(
                "class_counts",
                class_counts,
                "is used by profile explicit only, and needed there",
                "give one count per class with data.profile=explicit, else null",
            )
        if class_counts is not None and (
            isinstance(class_counts, str)
            or not isinstance(class_counts, Sequence)
            or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in class_counts
            )
        ):
            raise checks.bad(
                "class_counts", class_counts, "not a list of integers >= 1", "e.g. [500,100,20]"
            )
        self.class_counts = None if class_counts is None else list(class_counts)
        if positive_class is not None and not isinstance(positive_class, str):
            positive_class = str(positive_class)
        if profile == "binary" and positive_class is None:
            raise checks.bad(
                "positive_class",
                None,
                "profile binary needs the positive class",
                "set data.positive_class=<class folder name>",
            )
        self.positive_class = positive_class
        self.imbalance_test = checks.boolean("imbalance_test", imbalance_test)
        self.min_side = checks.integer("min_side", min_side, 1)
        self.max_pixels = checks.integer("max_pixels", max_pixels, 1)
        self.verdict_cache = checks.boolean("verdict_cache", verdict_cache)
        if cache not in CACHE_MODES:
            raise checks.bad(
                "cache", cache, "unknown cache mode", f"use one of {list(CACHE_MODES)}"
            )
        self.cache: CacheMode = cache
        if cache == "disk" and not cache_dir:
            raise checks.bad(
                "cache_dir", cache_dir, "cache=disk needs a directory", "set data.cache_dir"
            )
        self.cache_dir = None if cache_dir is None else os.path.expanduser(str(cache_dir))
        self.num_workers = checks.integer("num_workers", num_workers, 0)
        self.batch_size = checks.integer("batch_size", batch_size, 1)
        self.eval_batch_size = checks.integer("eval_batch_size", eval_batch_size, 1)
        self.seed = checks.integer("seed", seed, 0)
        self.mean = self._check_stats("mean", mean, positive=False)
        self.std = self._check_stats("std", std, positive=True)
        self.augment_crop_scale = checks.pair(
            "augment_crop_scale", augment_crop_scale, 0, 1, "[0.35,1]"
        )
        self.augment_crop_ratio = checks.pair(
            "augment_crop_ratio", augment_crop_ratio, 0, math.inf, "[0.75,1.333]"
        )
        self.augment_hflip = checks.boolean("augment_hflip", augment_hflip)
        self.on_device = checks.boolean("on_device", on_device)
        self.output_dir = None if output_dir is None else str(output_dir)

        self.class_names: list[str] = []
        self.folder_names: list[str] = []
        self.num_classes = 0
        self.train_counts: list[int] = []
        self.val_counts: list[int] = []
        self.test_counts: list[int] = []
        self.accepted: list[Verdict] = []
        self.rejected: list[Verdict] = []
        self.cache_file: Path | None = None
        self._files: dict[str, tuple[list[str], torch.Tensor]] = {}
        self._tensors = ResidentSplits()
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def _check_root(root: object) -> Path:
        fix = "set data.root to a folder with one subfolder of images per class (imblab-scrape)"
        if root is None or not str(root):
            raise checks.bad("root", root, "no image folder given", fix)
        path = Path(os.path.expanduser(str(root)))
        if not path.is_dir():
            raise checks.bad("root", str(root), "no such directory", fix)
        return path

    def _check_stats(self, key: str, value: object, positive: bool) -> list[float]:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise checks.bad(key, value, "not a list of numbers", f"e.g. data.{key}=[0.5,0.5,0.5]")
        values = [checks.real(key, v) for v in value]
        if len(values) == 3 and self.in_channels == 1:
            values = [sum(values) / 3]  # grey: the mean of the RGB statistics
        if len(values) != self.in_channels:
            raise checks.bad(
                key, list(value), f"needs {self.in_channels} values", "one per image channel"
            )
        if positive and min(values) <= 0:
            raise checks.bad(key, list(value), "must be > 0", "e.g. [0.229,0.224,0.225]")
        return values

    # -- building the splits ---------------------------------------------------------------------

    def _classes(self) -> list[str]:
        names = sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if len(names) < 2:
            raise checks.bad(
                "root",
                str(self.root),
                f"has {len(names)} class subfolder(s) {names}, a classifier needs at least 2",
                "put each class's images in ROOT/<class name>/",
            )
        return names

    def setup(self, stage: str | None = None) -> None:
        """Validate, split, subsample, relabel and (with ``cache``) decode once (idempotent)."""
        if self._files:
            return
        self.folder_names = folders = self._classes()
        accepted, rejected = validate_folder(
            self.root,
            min_side=self.min_side,
            max_pixels=self.max_pixels,
            cache=self.verdict_cache,
            workers=self.num_workers,
        )
        index = {name: c for c, name in enumerate(folders)}
        files: list[list[tuple[str, str]]] = [[] for _ in folders]  # per class: (path, sha256)
        for v in accepted:
            files[index[Path(v.path).relative_to(self.root).parts[0]]].append((v.path, v.sha256))
        self.accepted, self.rejected = accepted, list(rejected)
        self._check_positive_class(folders)
        self._check_enough(folders, files)

        per_split: dict[str, list[list[tuple[str, str]]]] = {
            s: [[] for _ in folders] for s in SPLITS
        }
        for c, members in enumerate(files):
            assigned = assign_splits(
                [sha for _, sha in members], self.val_fraction, self.test_fraction, self.seed
            )
            for item, split in zip(members, assigned, strict=True):
                per_split[split][c].append(item)
        pool = [t + v for t, v in zip(per_split["train"], per_split["val"], strict=True)]
        keep = self._subsample(pool)
        for split in ("train", "val"):
            per_split[split] = [
                [item for item in members if item[1] in keep[c]]
                for c, members in enumerate(per_split[split])
            ]
        if self.imbalance_test and self.profile != "none":
            test_keep = self._subsample(per_split["test"], test=True)
            per_split["test"] = [
                [item for item in members if item[1] in test_keep[c]]
                for c, members in enumerate(per_split["test"])
            ]
        self._set_class_names(folders)
        for split in SPLITS:
            paths = [p for c in range(len(folders)) for p, _ in per_split[split][c]]
            labels = torch.tensor(
                [self._label(c) for c in range(len(folders)) for _ in per_split[split][c]],
                dtype=torch.int64,
            )
            self._files[split] = (paths, labels)
        if self.cache != "none":
            self._decode_all()
        self._report_rejected()
        self.train_counts, self.val_counts, self.test_counts = (
            torch.bincount(self._files[s][1], minlength=self.num_classes).tolist() for s in SPLITS
        )
        if min(self.train_counts) == 0:
            empty = self.class_names[self.train_counts.index(0)]
            raise checks.bad(
                "root",
                str(self.root),
                f"class {empty!r} has no training image left",
                "add images to it or lower data.val_fraction / data.test_fraction",
            )
        log.info(
            "image folder %s: classes %s, train %s, val %s, test %s, %d rejected or duplicate",
            self.root,
            self.class_names,
            self.train_counts,
            self.val_counts,
            self.test_counts,
            len(self.rejected),
        )

    def _check_positive_class(self, folders: list[str]) -> None:
        if self.positive_class is not None and self.positive_class not in folders:
            raise checks.bad(
                "positive_class",
                self.positive_class,
                f"no such class folder in {self.root}",
                f"use one of {folders}",
            )

    def _check_enough(self, folders: list[str], files: list[list[tuple[str, str]]]) -> None:
        needed = 1 + (self.val_fraction > 0) + (self.test_fraction > 0)
        for name, members in zip(folders, files, strict=True):
            if len(members) < needed:
                bad = sum(
                    Path(v.path).relative_to(self.root).parts[0] == name for v in self.rejected
                )
                raise checks.bad(
                    "root",
                    str(self.root),
                    f"class {name!r} has {len(members)} usable image(s) ({bad} rejected or "
                    f"duplicate), the train/val/test split needs at least {needed}",
                    f"add images to {self.root / name} or set data.val_fraction=0 / "
                    "data.test_fraction=0",
                )

    def _subsample(self, pool: list[list[tuple[str, str]]], test: bool = False) -> list[set[str]]:
        """The sha256s kept of each class of ``pool`` by the imbalance profile."""
        available = [len(members) for members in pool]
        if self.profile == "none":
            counts = available
        else:
            if self.profile == "step":
                n_minor = num_minority_classes(self.minority_fraction, len(pool))
                if not 1 <= n_minor < len(pool):
                    raise checks.bad(
                        "minority_fraction",
                        self.minority_fraction,
                        f"gives {n_minor} of {len(pool)} minority classes for profile step",
                        f"make minority_fraction * {len(pool)} round to 1..{len(pool) - 1}",
                    )
            class_counts = self.class_counts
            if class_counts is not None and len(class_counts) != len(pool):
                raise checks.bad(
                    "class_counts",
                    class_counts,
                    f"has {len(class_counts)} entries for {len(pool)} classes",
                    f"give one count per class folder {self.folder_names}",
                )
            if test and class_counts is not None:
                targets = scale_counts(class_counts, max(available))
                counts = [min(t, a) for t, a in zip(targets, available, strict=True)]
            else:
                positive = None
                if self.positive_class is not None:
                    positive = [self.folder_names.index(self.positive_class)]
                counts = imbalance_counts(
                    self.profile,  # type: ignore[arg-type]
                    available,
                    imbalance_ratio=self.imbalance_ratio,
                    minority_fraction=self.minority_fraction,
                    class_counts=class_counts,
                    positive_classes=positive,
                )
        kept = []
        for members, k in zip(pool, counts, strict=True):
            shas = [sha for _, sha in members]
            kept.append({shas[i] for i in keep_smallest(shas, k, self.seed)})
        return kept

    def _set_class_names(self, folders: list[str]) -> None:
        if self.positive_class is None:
            self.class_names = list(folders)
        else:
            rest = [f for f in folders if f != self.positive_class]
            self.class_names = [rest[0] if len(rest) == 1 else "rest", self.positive_class]
        self.num_classes = len(self.class_names)

    def _label(self, folder_index: int) -> int:
        if self.positive_class is None:
            return folder_index
        return int(self.folder_names[folder_index] == self.positive_class)

    # -- the decoded-tensor cache ----------------------------------------------------------------

    def _cache_key(self, paths: list[str]) -> str:
        by_path = {v.path: v.sha256 for v in self.accepted}
        content = [
            str(self.root.resolve()),
            self.image_size[0],
            self.grayscale,
            [(Path(p).relative_to(self.root).as_posix(), by_path[p]) for p in paths],
        ]
        return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:24]

    def _decode_all(self) -> None:
        """Decode every file of every split once into uint8 tensors (``cache`` modes); a file
        that fails to decode is dropped from its split and reported as rejected."""
        paths = [p for s in SPLITS for p in self._files[s][0]]
        labels = torch.cat([self._files[s][1] for s in SPLITS])
        decoded: tuple[torch.Tensor, list[int]] | None = None
        if self.cache == "disk":
            assert self.cache_dir is not None
            self.cache_file = Path(self.cache_dir) / f"{self._cache_key(paths)}.pt"
            if self.cache_file.is_file():
                try:
                    stored = torch.load(self.cache_file, map_location="cpu", weights_only=True)
                    decoded = stored["images"], list(stored["failed"])
                    log.info("decoded images read from cache %s", self.cache_file)
                except Exception as err:  # a damaged cache file is rebuilt
                    log.warning("rebuilding cache %s (%s)", self.cache_file, err)
        if decoded is None:
            decoded = self._decode(paths, labels)
            if self.cache_file is not None:
                self._save_cache(self.cache_file, *decoded)
        images, failed = decoded
        ok = torch.ones(len(paths), dtype=torch.bool)
        ok[torch.tensor(failed, dtype=torch.int64)] = False
        by_path = {v.path: v for v in self.accepted}
        for i in failed:
            verdict = replace(
                by_path[paths[i]], ok=False, status="rejected", reason="decode failed when caching"
            )
            self.rejected.append(verdict)
        start = 0
        for split in SPLITS:
            split_paths, split_labels = self._files[split]
            n = len(split_paths)
            keep = ok[start : start + n]
            self._files[split] = (
                [p for p, k in zip(split_paths, keep.tolist(), strict=True) if k],
                split_labels[keep],
            )
            self._tensors[split] = (images[start : start + n][keep], split_labels[keep])
            start += n

    def _decode(self, paths: list[str], labels: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """uint8 (N, C, S, S) of ``paths`` decoded in ``num_workers`` processes, and the
        positions that failed (left zero)."""
        c, (s, _) = self.in_channels, self.image_size
        out = torch.zeros(len(paths), c, s, s, dtype=torch.uint8)
        log.info(
            "decoding %d images into a %.1f MB uint8 cache (%d workers)",
            len(paths),
            out.numel() / 2**20,
            self.num_workers,
        )
        dataset = ImageFiles(paths, labels, s, self.grayscale, self.max_pixels, substitute=False)
        loader = DataLoader(dataset, batch_size=64, num_workers=self.num_workers, collate_fn=list)
        failed: list[int] = []
        for batch in loader:
            for image, _, i in batch:
                if image is None:
                    failed.append(i)
                else:
                    out[i] = image
        return out, failed

    @staticmethod
    def _save_cache(path: Path, images: torch.Tensor, failed: list[int]) -> None:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"images": images, "failed": failed}, tmp)
            os.replace(tmp, path)
            log.info("decoded images cached in %s", path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            log.warning("could not write the image cache %s (%s); continuing without", path, err)

    def _report_rejected(self) -> None:
        for v in self.rejected:
            log.warning("%s %s: %s", v.status, v.path, v.reason)
        if self.output_dir is None or int(os.environ.get("LOCAL_RANK", "0")) != 0:
            return
        out = Path(self.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_rejected_csv(out / "rejected.csv", self.rejected)

    def summary(self) -> dict[str, object]:
        """Flat description of the realised data for the run's hyperparameters."""
        if not self._files:
            raise RuntimeError("ImageFolderDataModule.summary() needs setup() first")
        return {
            "source_used": "image_folder",
            "root": str(self.root),
            "profile": self.profile,
            "imbalance_ratio": self.imbalance_ratio,
            "positive_class": self.positive_class,
            "num_classes": self.num_classes,
            "class_names": ",".join(self.class_names),
            "image_size": self.image_size[0],
            "in_channels": self.in_channels,
            "cache": self.cache,
            "accepted_files": len(self.accepted),
            "rejected_files": sum(v.status == "rejected" for v in self.rejected),
            "duplicate_files": sum(v.status == "duplicate" for v in self.rejected),
            "train_size": sum(self.train_counts),
            "val_size": sum(self.val_counts),
            "test_size": sum(self.test_counts),
            "train_counts": ",".join(map(str, self.train_counts)),
            "val_counts": ",".join(map(str, self.val_counts)),
            "test_counts": ",".join(map(str, self.test_counts)),
            "realised_ratio": max(self.train_counts) / min(self.train_counts),
        }

    # -- loaders and on-device transforms ---------------------------------------------------------

    def device(self) -> torch.device:
        """Where cached batches are drawn: the Trainer's device with ``on_device`` and a cache,
        else the CPU."""
        if self.on_device and self.cache != "none" and self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cpu")

    def files(self, name: str) -> tuple[list[str], torch.Tensor]:
        """Paths and int64 labels of split ``name`` (train, val, test), in split order."""
        if not self._files:
            raise RuntimeError(f"ImageFolderDataModule.files({name!r}) needs setup() first")
        return self._files[name]

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, C, S, S) and int64 labels of split ``name`` on :meth:`device`
        (copied there once); needs a ``cache``."""
        if not self._tensors:
            raise RuntimeError(f"ImageFolderDataModule.split({name!r}) needs setup() and a cache")
        return self._tensors.on(name, self.device())

    def _dataset(self, name: str) -> ImageFiles:
        paths, labels = self.files(name)
        return ImageFiles(
            paths,
            labels,
            self.image_size[0],
            self.grayscale,
            self.max_pixels,
            substitute=name == "train",
        )

    def _loader(self, dataset: ImageFiles, batch_size: int, sampler: Any, train: bool) -> Any:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_train if train else collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> Any:
        """Training batches ``(x, y)`` drawn by the ``sampler`` factory's sampler (called as
        ``sampler(labels=<train labels>, seed=seed, num_classes=..., num_replicas=...,
        rank=...)``), else a seeded :class:`~imblab.samplers.ShuffleSampler`: from the cached
        tensors (:class:`~imblab.data.tensors.TensorBatches`), or from a DataLoader decoding in
        ``num_workers`` workers (the sampler is a DistributedSampler, so Lightning keeps it)."""
        _, labels = self.files("train")
        sampler = training_sampler(self.sampler, labels, self.seed, self.num_classes)
        if self.cache != "none":
            images, labels = self.split("train")
            return TensorBatches(images, labels, self.batch_size, sampler)
        return self._loader(self._dataset("train"), self.batch_size, sampler, train=True)

    def _eval_loader(self, name: str) -> Any:
        if self.cache != "none":
            images, labels = self.split(name)
            shard = SequentialShard(len(labels))
            return TensorBatches(images, labels, self.eval_batch_size, shard, ids=True)
        dataset = self._dataset(name)
        sampler = EvalShard(len(dataset))
        return EvalBatches(self._loader(dataset, self.eval_batch_size, sampler, train=False))

    def val_dataloader(self) -> Any:
        """``(x, y, ids)`` in order; under torch.distributed each item on exactly one rank."""
        return self._eval_loader("val")

    def test_dataloader(self) -> Any:
        """``(x, y, ids)`` in order; under torch.distributed each item on exactly one rank."""
        return self._eval_loader("test")

    def _normalisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._stats:
            shape = (1, self.in_channels, 1, 1)
            mean = torch.tensor(self.mean, device=device).view(shape)
            std = torch.tensor(self.std, device=device).view(shape)
            self._stats[device] = mean, std
        return self._stats[device]

    def transform(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 (B, C, S, S) -> float32 ``(x / 255 - mean) / std`` per channel; with ``train``
        first a random resized crop (``augment_crop_scale``, ``augment_crop_ratio``) and a random
        flip (``augment_hflip``), batched on ``x``'s device."""
        out = x.float().div_(255)
        if train:
            crop = self.augment_crop_scale != (1.0, 1.0) or self.augment_crop_ratio != (1.0, 1.0)
            if crop:
                out = random_resized_crop(
                    out, self.augment_crop_scale, self.augment_crop_ratio, self.augment_hflip
                )
            elif self.augment_hflip:
                out = random_hflip(out)
        mean, std = self._normalisation(out.device)
        return out.sub_(mean).div_(std)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Apply :meth:`transform` to the images of a batch on its device (augmenting only
        while training); labels and ids pass through."""
        training = self.trainer is not None and self.trainer.training
        return (self.transform(batch[0], train=training), *batch[1:])
