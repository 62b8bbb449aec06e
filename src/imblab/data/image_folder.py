"""The datamodule for a folder of class subfolders (e.g. scraped images): validated files, a split
that is stable when files are added, imbalance profiles, binary mode by folder name, and images
decoded once into a cache or in DataLoader workers every epoch."""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch.utils.data import DataLoader

from imblab.data import checks
from imblab.data.base import ImbalancedDataModule
from imblab.data.image_cache import cache_key, decode_images
from imblab.data.image_files import EvalBatches, EvalShard, ImageFiles, collate, collate_train
from imblab.data.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    IMAGE_EXTENSIONS,
    Verdict,
    printable,
    validate_folder,
    write_rejected_csv,
)
from imblab.data.imbalance import PROFILES
from imblab.data.split import assign_splits, keep_smallest
from imblab.data.summary import SPLITS
from imblab.data.tensors import Batch
from imblab.data.transforms import random_hflip, random_resized_crop
from imblab.samplers import training_sampler

log = logging.getLogger(__name__)

CacheMode = Literal["none", "memory", "disk"]
CACHE_MODES: tuple[str, ...] = ("none", "memory", "disk")
# torchvision's ImageNet statistics: what its pretrained weights expect
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: per class: (path, sha256) of its files
Files = list[list[tuple[str, str]]]
#: the reason a symlink is refused (``follow_symlinks=False``)
SYMLINK_OUTSIDE = "symlink outside data.root"


def within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or below it (both absolute, symlinks resolved)."""
    return os.path.commonpath([path, folder]) == folder


def list_folder(root: Path, follow_symlinks: bool) -> tuple[list[str], list[Path], list[Verdict]]:
    """The class folder names (sorted), the image files below them (any depth, sorted by their
    path relative to ``root``, hidden files and folders skipped) and the refused symlinks of a
    class-per-folder tree.

    A symlink (class folder, subfolder or file) whose fully resolved target lies inside
    ``root`` (resolved) is followed: its content is part of the folder the user gave. One that
    resolves outside (or dangles to outside) is refused, as ``rejected`` with reason
    :data:`SYMLINK_OUTSIDE`, unless ``follow_symlinks``. A folder reached twice (a symlink
    loop) is walked once."""
    real_root = os.path.realpath(root)
    refused: list[Verdict] = []

    def allowed(path: Path) -> bool:
        if follow_symlinks or not path.is_symlink() or within(os.path.realpath(path), real_root):
            return True
        refused.append(Verdict(str(path), False, "rejected", SYMLINK_OUTSIDE))
        return False

    classes = sorted(
        p.name for p in root.iterdir() if not p.name.startswith(".") and p.is_dir() and allowed(p)
    )
    files: list[Path] = []
    for name in classes:
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".") and allowed(Path(dirpath, d))
            )
            images = (Path(dirpath, f) for f in filenames if not f.startswith("."))
            files += [f for f in images if f.suffix.lower() in IMAGE_EXTENSIONS and allowed(f)]
    files.sort(key=lambda f: f.relative_to(root).as_posix())
    refused.sort(key=lambda v: v.path)
    return classes, files, refused


class ImageFolderDataModule(ImbalancedDataModule):
    """Images from ``root/<class name>/...`` (any depth below the class folder), e.g. the output
    of ``imblab-scrape``; class names are the sorted folder names (class 0 first).

    Its own :meth:`setup` (deterministic given ``subset_seed`` and the files; the legacy
    ``subset_seed=None``: ``seed``):

    1. validate every file (:func:`~imblab.data.images.validate_folder`: full decode, verdicts
       cached per file); rejected files and exact duplicates (sha256; the first by sorted path
       is kept) are logged and written to ``<output_dir>/rejected.csv`` (path, verdict, reason);
    2. split each class into train/val/test by a seeded hash of each file's sha256
       (:func:`~imblab.data.split.assign_splits`): stratified, and stable when files are added;
    3. apply the imbalance ``profile`` (``none``: keep the folder as it is) to the train + val
       pool of each class (and with ``imbalance_test`` to test), keeping the files with the
       smallest seeded hash;
    4. with ``positive_class``: relabel to 1 (that class) / 0 (the rest), with any profile;
    5. with ``cache`` (``memory`` or ``disk``): decode every kept file once, in ``num_workers``
       processes, into uint8 (N, C, S, S) tensors (:mod:`~imblab.data.image_cache`; ``disk``:
       one ``.pt`` file per (root, size, file list) under ``cache_dir``, reused by later runs);
       the splits then live on the trainer's device (``on_device``) and batches are drawn there
       as for MNIST. Without a cache a DataLoader decodes each batch in ``num_workers`` worker
       processes every epoch (:mod:`~imblab.data.image_files`).

    Training batches are ``(x, y)``, evaluation batches ``(x, y, ids)``. Training augments with
    a random resized crop and flip; normalisation uses the given ``mean`` and ``std``.
    """

    profiles: ClassVar[tuple[str, ...]] = ("none", *PROFILES)
    #: its own hash split is the ``split`` source; there is no unused remainder to draw from
    val_sources: ClassVar[tuple[str, ...]] = ("split",)

    option_defaults: ClassVar[Mapping[str, Any]] = {
        "val_fraction": 0.15,
        "profile": "none",
        "imbalance_ratio": 10.0,
        "batch_size": 64,
        "eval_batch_size": 256,
    }

    def __init__(
        self,
        root: str | None = None,
        image_size: int = 64,
        grayscale: bool = False,
        test_fraction: float = 0.15,
        positive_class: str | None = None,
        min_side: int = DEFAULT_MIN_SIDE,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        verdict_cache: bool = True,
        cache: CacheMode = "memory",
        cache_dir: str | None = None,
        num_workers: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment_crop_scale: Sequence[float] = (0.35, 1.0),
        augment_crop_ratio: Sequence[float] = (0.75, 4 / 3),
        augment_hflip: bool = True,
        output_dir: str | None = None,
        follow_symlinks: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.root = self._check_root(root)
        self.image_size = (checks.integer("image_size", image_size, 8),) * 2
        self.grayscale = checks.boolean("grayscale", grayscale)
        self.in_channels = 1 if self.grayscale else 3
        if not 0 <= checks.real("test_fraction", test_fraction) < 1:
            raise checks.bad("test_fraction", test_fraction, "must be in [0, 1)", "e.g. 0.15")
        self.test_fraction = float(test_fraction)
        if self.val_fraction + self.test_fraction >= 1:
            raise checks.bad(
                "test_fraction",
                test_fraction,
                f"leaves no training data with val_fraction={self.val_fraction}",
                "make val_fraction + test_fraction < 1 (e.g. 0.15 each)",
            )
        if positive_class is not None and not isinstance(positive_class, str):
            positive_class = str(positive_class)
        if self.profile == "binary" and positive_class is None:
            raise checks.bad(
                "positive_class",
                None,
                "profile binary needs the positive class",
                "set data.positive_class=<class folder name>",
            )
        self.positive_class = positive_class
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
        self.mean = self._check_stats("mean", mean, positive=False)
        self.std = self._check_stats("std", std, positive=True)
        self.augment_crop_scale = checks.pair(
            "augment_crop_scale", augment_crop_scale, 0, 1, "[0.35,1]"
        )
        self.augment_crop_ratio = checks.pair(
            "augment_crop_ratio", augment_crop_ratio, 0, math.inf, "[0.75,1.333]"
        )
        self.augment_hflip = checks.boolean("augment_hflip", augment_hflip)
        self.output_dir = None if output_dir is None else str(output_dir)
        self.follow_symlinks = checks.boolean("follow_symlinks", follow_symlinks)

        self.folder_names: list[str] = []
        self.accepted: list[Verdict] = []
        self.rejected: list[Verdict] = []
        self.cache_file: Path | None = None
        self._files: dict[str, tuple[list[str], torch.Tensor]] = {}

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

    def _check_classes(self, names: list[str]) -> None:
        if len(names) < 2:
            shown = [printable(n) for n in names]
            raise checks.bad(
                "root",
                str(self.root),
                f"has {len(names)} class subfolder(s) {shown}, a classifier needs at least 2",
                "put each class's images in ROOT/<class name>/",
            )

    def setup(self, stage: str | None = None) -> None:
        """Validate, split, subsample, relabel and (with ``cache``) decode once (idempotent)."""
        if self._files:
            return
        for split, files in self._split(self._validated()).items():
            paths = [path for members in files for path, _ in members]
            labels = [c for c, members in enumerate(files) for _ in members]
            self._files[split] = (paths, self.relabel(torch.tensor(labels, dtype=torch.int64)))
        if self.cache != "none":
            self._decode_all()
        self._report_rejected()
        self.source_used = "image_folder"
        self.set_counts({s: self._files[s][1] for s in SPLITS})
        self.subset_counts = [
            t + v for t, v in zip(self.train_counts, self.val_counts, strict=True)
        ]
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

    def _validated(self) -> Files:
        """The accepted files of each class folder (the rest in :attr:`rejected`, written to
        ``rejected.csv`` before any check of the classes); sets the classes, named by their
        folders (non-UTF-8 bytes escaped, :func:`~imblab.data.images.printable`)."""
        folders, listed, refused = list_folder(self.root, self.follow_symlinks)
        self.folder_names = folders
        self.rejected = list(refused)
        if len(folders) < 2:
            self._write_rejected()
            self._check_classes(folders)
        accepted, rejected = validate_folder(
            self.root,
            min_side=self.min_side,
            max_pixels=self.max_pixels,
            cache=self.verdict_cache,
            workers=self.num_workers,
            files=listed,
        )
        index = {name: c for c, name in enumerate(folders)}
        files: Files = [[] for _ in folders]
        for v in accepted:
            files[index[Path(v.path).relative_to(self.root).parts[0]]].append((v.path, v.sha256))
        self.accepted = accepted
        self.rejected += rejected
        self._write_rejected()
        names = [printable(name) for name in folders]
        self._check_positive_class(names)
        self._check_enough(folders, files)
        if self.positive_class is not None:
            self.positive_classes = [names.index(self.positive_class)]
        self.set_classes(names)
        return files

    def _split(self, files: Files) -> dict[str, Files]:
        """``files`` by split (:func:`~imblab.data.split.assign_splits`), less those the
        imbalance profile drops."""
        per_split: dict[str, Files] = {s: [[] for _ in files] for s in SPLITS}
        for c, members in enumerate(files):
            assigned = assign_splits(
                [sha for _, sha in members], self.val_fraction, self.test_fraction, self.draw_seed
            )
            for item, split in zip(members, assigned, strict=True):
                per_split[split][c].append(item)
        pool = [t + v for t, v in zip(per_split["train"], per_split["val"], strict=True)]
        keep = self._keep(pool)
        for split in ("train", "val"):
            per_split[split] = _only(per_split[split], keep)
        if self.imbalance_test and self.profile != "none":
            per_split["test"] = _only(per_split["test"], self._keep(per_split["test"], test=True))
        return per_split

    def _check_positive_class(self, folders: list[str]) -> None:
        if self.positive_class is not None and self.positive_class not in folders:
            raise checks.bad(
                "positive_class",
                self.positive_class,
                f"no such class folder in {self.root}",
                f"use one of {folders}",
            )

    def _check_enough(self, folders: list[str], files: Files) -> None:
        """Each class keeps an image for each split; else the error names its commonest
        rejection reasons (every file is in ``rejected.csv``, written before)."""
        needed = 1 + (self.val_fraction > 0) + (self.test_fraction > 0)
        for name, members in zip(folders, files, strict=True):
            if len(members) < needed:
                bad = [
                    v for v in self.rejected if Path(v.path).relative_to(self.root).parts[0] == name
                ]
                reasons = Counter(
                    " ".join(printable(v.reason).split()) if v.status == "rejected" else v.status
                    for v in bad
                ).most_common(3)
                why = "; ".join(f"{n} x {reason}" for reason, n in reasons)
                csv_file = "rejected.csv" if self.output_dir is None else self._rejected_csv()
                raise checks.bad(
                    "root",
                    str(self.root),
                    f"class {printable(name)!r} has {len(members)} usable image(s) "
                    f"({len(bad)} rejected or duplicate{': ' + why if why else ''}; every file "
                    f"in {csv_file}), the train/val/test split needs at least {needed}",
                    f"add images to {printable(str(self.root / name))} or set "
                    "data.val_fraction=0 / data.test_fraction=0",
                )

    @property
    def draw_seed(self) -> int:
        """The seed of the hash split and the subsample: ``subset_seed`` (legacy: ``seed``)."""
        return self.seed if self.subset_seed is None else self.subset_seed

    def _keep(self, pool: Files, test: bool = False) -> list[set[str]]:
        """The sha256s the imbalance profile keeps of each class of ``pool``: its
        :meth:`target_counts` with the smallest seeded hash."""
        counts = self.target_counts([len(members) for members in pool], test)
        kept = []
        for members, k in zip(pool, counts, strict=True):
            shas = [sha for _, sha in members]
            kept.append({shas[i] for i in keep_smallest(shas, k, self.draw_seed)})
        return kept

    def _decode_all(self) -> None:
        """Decode every file of every split once into uint8 tensors (``cache`` modes); a file
        that fails to decode is dropped from its split and reported as rejected."""
        paths = [p for s in SPLITS for p in self._files[s][0]]
        labels = torch.cat([self._files[s][1] for s in SPLITS])
        if self.cache == "disk":
            assert self.cache_dir is not None
            by_path = {v.path: v.sha256 for v in self.accepted}
            key = cache_key(
                self.root, self.image_size[0], self.grayscale, [(p, by_path[p]) for p in paths]
            )
            self.cache_file = Path(self.cache_dir) / f"{key}.pt"
        images, failed = decode_images(
            paths,
            labels,
            image_size=self.image_size[0],
            grayscale=self.grayscale,
            max_pixels=self.max_pixels,
            num_workers=self.num_workers,
            cache_file=self.cache_file,
        )
        ok = torch.ones(len(paths), dtype=torch.bool)
        ok[torch.tensor(failed, dtype=torch.int64)] = False
        verdicts = {v.path: v for v in self.accepted}
        for i in failed:
            verdict = replace(
                verdicts[paths[i]], ok=False, status="rejected", reason="decode failed when caching"
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
            self._splits[split] = (images[start : start + n][keep], split_labels[keep])
            start += n

    def _report_rejected(self) -> None:
        for v in self.rejected:
            log.warning("%s %s: %s", v.status, printable(v.path), printable(v.reason))
        self._write_rejected()

    def _rejected_csv(self) -> Path:
        return Path(str(self.output_dir)) / "rejected.csv"

    def _write_rejected(self) -> None:
        """``<output_dir>/rejected.csv`` of :attr:`rejected` (on local rank 0; atomically)."""
        if self.output_dir is None or int(os.environ.get("LOCAL_RANK", "0")) != 0:
            return
        path = self._rejected_csv()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_rejected_csv(path, self.rejected)

    def data_indices(self) -> dict[str, Any]:
        """``data_indices.json``: per split the files (relative to ``root``, ``/``-separated,
        non-UTF-8 bytes escaped), in split order (eval batches' ``ids`` index it)."""
        if not self._files:
            raise RuntimeError("ImageFolderDataModule.data_indices() needs setup() first")
        out: dict[str, Any] = {
            s: [printable(Path(p).relative_to(self.root).as_posix()) for p in self._files[s][0]]
            for s in SPLITS
        }
        out["files"] = {s: [printable(str(self.root))] for s in SPLITS}
        return out

    def summary_details(self) -> dict[str, Any]:
        return {
            "root": printable(str(self.root)),
            "positive_class": self.positive_class,
            "image_size": self.image_size[0],
            "in_channels": self.in_channels,
            "cache": self.cache,
            "accepted_files": len(self.accepted),
            "rejected_files": sum(v.status == "rejected" for v in self.rejected),
            "duplicate_files": sum(v.status == "duplicate" for v in self.rejected),
        }

    # -- loaders and augmentation ----------------------------------------------------------------

    def device(self) -> torch.device:
        """Where cached batches are drawn: the Trainer's device with ``on_device`` and a cache,
        else the CPU."""
        return super().device() if self.cache != "none" else torch.device("cpu")

    def files(self, name: str) -> tuple[list[str], torch.Tensor]:
        """Paths and int64 labels of split ``name`` (train, val, test), in split order."""
        if not self._files:
            raise RuntimeError(f"ImageFolderDataModule.files({name!r}) needs setup() first")
        return self._files[name]

    def _file_loader(self, name: str, batch_size: int, sampler: Any) -> DataLoader[Any]:
        """A DataLoader decoding the files of split ``name`` in ``num_workers`` processes."""
        paths, labels = self.files(name)
        train = name == "train"
        size, grey = self.image_size[0], self.grayscale
        return DataLoader(
            ImageFiles(paths, labels, size, grey, self.max_pixels, substitute=train),
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_train if train else collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> Iterable[Batch]:
        """Training batches ``(x, y)`` (see :class:`~imblab.data.base.ImbalancedDataModule`):
        from the cached tensors, or without a cache from a DataLoader decoding in
        ``num_workers`` workers (the sampler is a DistributedSampler, so Lightning keeps it)."""
        if self.cache != "none":
            return super().train_dataloader()
        _, labels = self.files("train")
        sampler = training_sampler(self.sampler, labels, self.seed, self.num_classes)
        return self._file_loader("train", self.batch_size, sampler)

    def eval_dataloader(self, name: str) -> Iterable[Batch]:
        """``(x, y, ids)`` in order; under torch.distributed each item on exactly one rank;
        without a cache a batch whose every file failed to decode is left out."""
        if self.cache != "none":
            return super().eval_dataloader(name)
        shard = EvalShard(len(self.files(name)[0]))
        return EvalBatches(self._file_loader(name, self.eval_batch_size, shard))

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """A random resized crop (``augment_crop_scale``, ``augment_crop_ratio``; off when both
        are [1, 1]) and a random flip (``augment_hflip``) per image."""
        if self.augment_crop_scale != (1.0, 1.0) or self.augment_crop_ratio != (1.0, 1.0):
            return random_resized_crop(
                x, self.augment_crop_scale, self.augment_crop_ratio, self.augment_hflip
            )
        return random_hflip(x) if self.augment_hflip else x


def _only(files: Files, keep: list[set[str]]) -> Files:
    """``files`` of each class ``c`` whose sha256 is in ``keep[c]``."""
    return [[f for f in members if f[1] in keep[c]] for c, members in enumerate(files)]
