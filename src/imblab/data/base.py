"""The data contract: :class:`ImbalancedDataModule`, the LightningDataModule every imblab dataset
is, and :class:`RawData`, what a dataset loads before it is made imbalanced and split."""

from __future__ import annotations

import difflib
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import lightning.pytorch as pl
import torch

from imblab.data import checks
from imblab.data.imbalance import (
    PROFILES,
    Profile,
    imbalance_counts,
    num_minority_classes,
    official_order,
    relabel_binary,
    scale_counts,
    select_per_class,
)
from imblab.data.split import (
    VAL_SOURCES,
    remainder_split,
    require_every_class,
    stratified_split,
)
from imblab.data.summary import SPLITS, DataSummary
from imblab.data.tensors import Batch, ResidentSplits, Split, TensorBatches
from imblab.data.transforms import pixel_mean_std
from imblab.errors import ConfigError
from imblab.samplers import IndexSampler, SequentialShard, training_sampler

log = logging.getLogger(__name__)

#: a normalisation statistic: one value for every channel, or one per channel
Stat = float | list[float]


@dataclass(frozen=True)
class RawData:
    """A dataset as :meth:`ImbalancedDataModule.load_raw` returns it, before imbalance and split.

    Attributes:
        source: where the images came from, for the summary (``full``, ``sample``, ...).
        class_names: the name of label ``c`` at position ``c``.
        train: the training source: uint8 images (N, C, H, W) and int64 labels (N,).
        test: the test source, the same way.
        files: ``{"train": [...], "test": [...]}``, the files (or named source) whose images,
            concatenated in that order, are what :attr:`train_index` and :attr:`test_index`
            index: written beside the indices in ``data_indices.json``.
        train_index, test_index: the position of each item of ``train`` / ``test`` in that
            order (None: ``0 .. N - 1``, the source as given; MNIST's held-out test set is a
            part of its training files).
    """

    source: str
    class_names: Sequence[str]
    train: Split
    test: Split
    files: Mapping[str, Sequence[str]] = field(default_factory=dict)
    train_index: torch.Tensor | None = None
    test_index: torch.Tensor | None = None


class ImbalancedDataModule(pl.LightningDataModule):
    """An image classification dataset made imbalanced on purpose: the contract every imblab
    dataset fulfils, the options they share, and all but the loading of the images.

    What training reads, after :meth:`setup`: :attr:`num_classes`, :attr:`class_names` (label
    ``c`` is ``class_names[c]``, after binary relabelling), :attr:`in_channels`, the images per
    class :attr:`train_counts`, :attr:`val_counts`, :attr:`test_counts` and of the long-tailed
    subset :attr:`subset_counts` (the shot groups' class sizes), :meth:`summary`, the realised
    data as a :class:`~imblab.data.summary.DataSummary`, and :meth:`data_indices`, which
    images each split used (``data_indices.json``).

    The Lightning hooks, in the order Lightning calls them:

    - ``prepare_data()``: once per node, on one process: download or check files (nothing here;
      a subclass that downloads overrides it). It must not set state the other processes need.
    - :meth:`setup`: on every process, before fit, validate or test; builds the splits once.
      :meth:`load_raw` gives the training and test sources; the long-tailed subset is the
      official rule of ``kaidic/LDAM-DRW`` (:func:`~imblab.data.imbalance.official_order`: one
      ``np.random.RandomState(subset_seed)`` shuffles each class in class order, the first
      :meth:`target_counts` of each are kept); validation comes from ``val_source``
      (``remainder``: ``val_per_class`` images of each class from those the subset leaves
      unused, :func:`~imblab.data.split.remainder_split`; ``split``: a stratified
      ``val_fraction`` of the subset; ``none``: no validation); a torch generator seeded with
      ``subset_seed`` makes every other data draw (:meth:`load_raw`'s, the ``split``, and with
      ``imbalance_test`` the test subset); binary mode relabels (:meth:`relabel`);
      :meth:`pixel_stats` gives the normalisation statistics. ``seed`` seeds only the
      training sampler (and, through the run's seed, initialisation and augmentation).
      ``subset_seed=None`` is the rule of runs written before ``subset_seed`` existed: one
      torch generator seeded with ``seed`` draws everything, the subset by ``torch.randperm``,
      with ``val_source=split`` only.
    - :meth:`train_dataloader`: batches ``(x, y)`` of uint8 images drawn by index from the
      training split resident on :meth:`device`, in the order of the ``sampler`` factory's
      sampler (else a seeded shuffle); under torch.distributed each rank draws its share.
    - :meth:`val_dataloader`, :meth:`test_dataloader`: batches ``(x, y, ids)`` in order; under
      torch.distributed each item on exactly one rank (no padding).
    - :meth:`on_after_batch_transfer`: on the batch's device, :meth:`transform` turns the uint8
      images into normalised float32, augmented by :meth:`augment` while training.

    A subclass implements:

    - ``__init__(self, <own options>, **options)``: its own options (checked with
      :mod:`imblab.data.checks`), the shared ones forwarded as ``super().__init__(**options)``;
      where its defaults of shared options differ from the base's, :attr:`option_defaults`
      (the base class merges them); ``in_channels``; where it has a binary mode,
      :attr:`positive_classes`; and, when its classes are known before loading,
      :meth:`set_classes` (so that bad options fail in the constructor).
    - :meth:`load_raw` (required): the class names and the uint8 images and int64 labels of
      its training and test sources.
    - where needed: :meth:`augment` (training augmentation of a float batch on the device),
      :meth:`pixel_stats` (the normalisation statistics), :meth:`describe` (the log line of
      :meth:`setup`), :meth:`summary_details` (dataset facts for the summary), ``prepare_data``.

    A dataset with its own split rule overrides :meth:`setup`, and the loaders where its
    images are not in memory; it reuses :meth:`set_classes`, :meth:`target_counts`,
    :meth:`relabel` and :meth:`set_counts` (the image folder splits by a hash of each file).

    Example, three classes of random 8 x 8 images (plus a YAML with its ``_target_``)::

        class Noise(ImbalancedDataModule):
            in_channels = 1
            classes = ("a", "b", "c")

            def __init__(self, size: int = 600, **options: Any) -> None:
                super().__init__(**options)
                self.size = checks.integer("size", size, 10)
                self.set_classes(self.classes)

            def load_raw(self, generator: torch.Generator) -> RawData:
                g = torch.Generator().manual_seed(0)
                x = torch.randint(0, 256, (self.size, 1, 8, 8), dtype=torch.uint8, generator=g)
                y = torch.arange(self.size) % 3
                n = self.size * 4 // 5
                return RawData("noise", self.classes, (x[:n], y[:n]), (x[n:], y[n:]))

    Args:
        profile: the imbalance profile of the training pool (one of :attr:`profiles`).
        imbalance_ratio: largest / smallest class count (exponential, step); negatives /
            positives (binary).
        minority_fraction: step: the fraction of classes that are minority classes.
        class_counts: explicit: the training-pool count of each class.
        imbalance_test: apply the profile to the test split too.
        val_fraction: ``split``: the fraction of each class of the subset that goes to
            validation.
        val_source: where validation comes from: ``remainder``, ``split`` or ``none`` (one of
            :attr:`val_sources`).
        val_per_class: ``remainder``: the validation images of each class.
        n_max: the images of the largest class of the training pool (each class capped at it
            before the profile; ``explicit`` counts are absolute and ignore it); None: all.
        subset_seed: seeds every data draw of :meth:`setup`; None: the legacy rule (above).
        batch_size, eval_batch_size: training and validation/test batch per process.
        seed: seeds the training sampler (the legacy rule: every draw).
        on_device: keep the uint8 splits on the Trainer's device and draw batches there.
        sampler: a factory of the training sampler (``sampler=NAME``); None: a seeded shuffle.
    """

    #: the ``profile`` values this dataset accepts
    profiles: ClassVar[tuple[str, ...]] = PROFILES
    #: the ``val_source`` values this dataset accepts
    val_sources: ClassVar[tuple[str, ...]] = VAL_SOURCES
    #: this dataset's defaults of shared options, where they differ from the base class's:
    #: the options given are merged over them before they are checked
    option_defaults: ClassVar[Mapping[str, Any]] = {}
    #: the dataset's own keys that choose its training source (e.g. ``data_dir``), named by
    #: the error for a class without images
    source_keys: ClassVar[tuple[str, ...]] = ()
    #: channels of the images (1 grey, 3 colour)
    in_channels: int

    def __init__(self, **options: Any) -> None:
        """The shared options (Args above), :attr:`option_defaults` under ``options``; a key
        that is neither a shared option nor one of the subclass's own is a ConfigError that
        names the nearest key or lists the dataset's keys."""
        super().__init__()
        self._reject_unknown(options)
        self._set_options(**{**self.option_defaults, **options})

        #: the raw classes that become label 1 in binary mode (set by a subclass with one)
        self.positive_classes: list[int] | None = None
        self.class_names: list[str] = []
        self.source_used: str | None = None
        self.train_counts: list[int] = []
        self.val_counts: list[int] = []
        self.test_counts: list[int] = []
        #: the images per class of the long-tailed subset (what the profile kept, before
        #: validation is taken): the class sizes of the shot groups
        self.subset_counts: list[int] = []
        #: per split, the position of each item (in split order) in its source's order
        self.indices: dict[str, torch.Tensor] = {}
        self.source_files: dict[str, list[str]] = {}
        #: normalisation statistics of ``x / 255``: from :meth:`pixel_stats`, or given
        self.mean: Stat | None = None
        self.std: Stat | None = None
        self._splits = ResidentSplits()
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _reject_unknown(self, options: Mapping[str, Any]) -> None:
        shared = set(inspect.signature(self._set_options).parameters)
        unknown = sorted(set(options) - shared)
        if not unknown:
            return
        own = {
            name
            for name, p in inspect.signature(type(self).__init__).parameters.items()
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }
        known = sorted(shared | own)
        near = difflib.get_close_matches(unknown[0], known, n=1)
        fix = f"did you mean data.{near[0]}?" if near else f"use one of {known}"
        raise checks.bad(
            unknown[0],
            options[unknown[0]],
            f"not an option of {type(self).__name__}"
            + (f" (nor are {unknown[1:]})" if len(unknown) > 1 else ""),
            fix,
        )

    def _set_options(
        self,
        *,
        profile: str = "exponential",
        imbalance_ratio: float = 100.0,
        minority_fraction: float = 0.5,
        class_counts: list[int] | None = None,
        imbalance_test: bool = False,
        val_fraction: float = 0.2,
        val_source: str = "split",
        val_per_class: int = 50,
        n_max: int | None = None,
        subset_seed: int | None = 0,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        seed: int = 0,
        on_device: bool = True,
        sampler: Callable[..., IndexSampler] | None = None,
    ) -> None:
        """Check the shared options (Args of the class; these are their base defaults) and
        set them as attributes."""
        if sampler is not None and not callable(sampler):
            raise ConfigError(
                f"sampler={sampler!r}: not a sampler factory; use sampler=NAME of conf/sampler "
                "(e.g. sampler=inverse) or sampler=none"
            )
        if profile not in self.profiles:
            raise checks.bad(
                "profile", profile, "unknown profile", f"use one of {list(self.profiles)}"
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
        self.class_counts = checks.class_counts(profile, class_counts)
        self.imbalance_test = checks.boolean("imbalance_test", imbalance_test)
        self.val_fraction = checks.real("val_fraction", val_fraction)
        if not 0 <= self.val_fraction < 1:
            raise checks.bad("val_fraction", val_fraction, "must be in [0, 1)", "e.g. 0.2")
        if val_source not in self.val_sources:
            raise checks.bad(
                "val_source",
                val_source,
                f"not a validation source of {type(self).__name__}",
                f"use one of {list(self.val_sources)}",
            )
        self.val_source = val_source
        self.val_per_class = checks.integer("val_per_class", val_per_class, 1)
        self.n_max = None if n_max is None else checks.integer("n_max", n_max, 1)
        self.subset_seed = (
            None if subset_seed is None else checks.integer("subset_seed", subset_seed, 0)
        )
        if self.subset_seed is None and val_source != "split":
            raise checks.bad(
                "subset_seed",
                None,
                f"the legacy draw (runs before subset_seed) knows val_source=split only, not "
                f"{val_source}",
                "set data.val_source=split or data.subset_seed to an integer (default 0)",
            )
        self.batch_size = checks.integer("batch_size", batch_size, 1)
        self.eval_batch_size = checks.integer("eval_batch_size", eval_batch_size, 1)
        self.seed = checks.integer("seed", seed, 0)
        self.on_device = checks.boolean("on_device", on_device)
        self.sampler = sampler

    @property
    def num_classes(self) -> int:
        """The number of labels the model predicts (2 in binary mode); 0 before the classes
        are known."""
        return len(self.class_names)

    # -- the hooks of a dataset ------------------------------------------------------------------

    def load_raw(self, generator: torch.Generator) -> RawData:
        """The dataset's training and test sources as uint8 images (N, C, H, W) and int64
        labels, with its class names (required unless :meth:`setup` is overridden).

        ``generator`` is :meth:`setup`'s, seeded with ``seed``: draw from it only to make a
        split the source lacks (MNIST holds a test set out of its training source when the test
        files are missing); its later draws depend on these."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_raw()")

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """A training batch ``x`` (float32 (B, C, H, W) in [0, 1], on its device) augmented
        with random transforms (:mod:`imblab.data.transforms`); by default unchanged."""
        return x

    def pixel_stats(self, images: torch.Tensor) -> tuple[Stat, Stat]:
        """Mean and std of ``x / 255`` that :meth:`transform` normalises with, from the uint8
        training images; by default one value each over all pixels and channels."""
        return pixel_mean_std(images)

    def describe(self) -> str:
        """What :meth:`setup` loaded, for its log line (by default the class name)."""
        return type(self).__name__

    def summary_details(self) -> dict[str, Any]:
        """Dataset-specific facts of the realised data (JSON-ready scalars) for
        :attr:`DataSummary.details <imblab.data.summary.DataSummary.details>`."""
        return {}

    # -- building the splits ---------------------------------------------------------------------

    def set_classes(self, names: Sequence[str]) -> None:
        """Check the options that depend on the classes against the dataset's classes
        ``names`` (raw label ``c`` is ``names[c]``) and set :attr:`class_names`: ``names``, or
        with :attr:`positive_classes` ``[negatives, positives]``, the negatives named ``rest``
        unless they are one class, the positives joined by ``+``."""
        n, n_minor = len(names), num_minority_classes(self.minority_fraction, len(names))
        if self.profile == "step" and not 1 <= n_minor < n:
            raise checks.bad(
                "minority_fraction",
                self.minority_fraction,
                f"gives {n_minor} of {n} minority classes for profile step",
                f"choose it so minority_fraction * {n} rounds to 1..{n - 1}",
            )
        if self.class_counts is not None and len(self.class_counts) != n:
            raise checks.bad(
                "class_counts",
                self.class_counts,
                f"has {len(self.class_counts)} entries for {n} classes",
                f"give one count per class of {list(names)}",
            )
        if self.positive_classes is None:
            self.class_names = list(names)
            return
        rest = [name for c, name in enumerate(names) if c not in self.positive_classes]
        positive = "+".join(names[c] for c in self.positive_classes)
        self.class_names = [rest[0] if len(rest) == 1 else "rest", positive]

    def target_counts(self, available: Sequence[int], test: bool = False) -> list[int]:
        """How many items of each raw class the profile keeps of a pool with ``available``
        per class, each class first capped at ``n_max`` (not for the test pool, not for
        ``explicit`` counts); for the test pool (``test``) explicit counts are rescaled to its
        largest class."""
        if self.n_max is not None and not test and self.profile != "explicit":
            available = [min(a, self.n_max) for a in available]
        if self.profile == "none":
            return list(available)
        if test and self.class_counts is not None:
            targets = scale_counts(self.class_counts, max(available))
            return [min(t, a) for t, a in zip(targets, available, strict=True)]
        return imbalance_counts(
            cast(Profile, self.profile),
            available,
            imbalance_ratio=self.imbalance_ratio,
            minority_fraction=self.minority_fraction,
            class_counts=self.class_counts,
            positive_classes=self.positive_classes,
        )

    def source_options(self) -> dict[str, object]:
        """The dataset's :attr:`source_keys` as ``{"data.<key>": value}``, for errors about its
        training source."""
        values = {key: getattr(self, key) for key in self.source_keys}
        return {
            f"data.{key}": str(v) if isinstance(v, os.PathLike) else v for key, v in values.items()
        }

    def relabel(self, labels: torch.Tensor) -> torch.Tensor:
        """Raw labels as the model sees them: 1 for :attr:`positive_classes`, else 0, in
        binary mode; unchanged otherwise."""
        if self.positive_classes is None:
            return labels
        return relabel_binary(labels, self.positive_classes)

    def set_counts(self, labels: dict[str, torch.Tensor]) -> None:
        """The images per class of each split, from its (relabelled) labels."""
        self.train_counts, self.val_counts, self.test_counts = (
            torch.bincount(labels[s], minlength=self.num_classes).tolist() for s in SPLITS
        )

    def setup(self, stage: str | None = None) -> None:
        """Build train/val/test once (idempotent); deterministic given ``subset_seed`` (the
        legacy rule: ``seed``)."""
        if self._splits:
            return
        seed = self.seed if self.subset_seed is None else self.subset_seed
        generator = torch.Generator().manual_seed(seed)
        raw = self.load_raw(generator)
        self.set_classes(raw.class_names)
        self.source_used = raw.source
        (x, y), (test_x, test_y) = raw.train, raw.test
        n = len(raw.class_names)
        available = torch.bincount(y, minlength=n).tolist()
        require_every_class(available, self.source_options())
        counts = self.target_counts(available)
        order: list[torch.Tensor] = []
        if self.subset_seed is None:  # the legacy draw
            subset = select_per_class(y, counts, generator)
        else:
            order = [torch.from_numpy(o) for o in official_order(y.numpy(), n, self.subset_seed)]
            subset = torch.sort(torch.cat([o[:k] for o, k in zip(order, counts, strict=True)]))[0]
        if self.val_source == "remainder":
            parts = [
                remainder_split(o, k, self.val_per_class, str(raw.class_names[c]))
                for c, (o, k) in enumerate(zip(order, counts, strict=True))
            ]
            train = torch.sort(torch.cat([t for t, _ in parts]))[0]
            val = torch.sort(torch.cat([v for _, v in parts]))[0]
        elif self.val_source == "split":
            at_train, at_val = stratified_split(
                self.relabel(y[subset]),
                self.num_classes,
                self.val_fraction,
                generator,
                self.source_options(),
            )
            train, val = subset[at_train], subset[at_val]
        else:
            train, val = subset, subset[:0]
        test_at = torch.arange(len(test_y))
        if self.imbalance_test:
            available = torch.bincount(test_y, minlength=n).tolist()
            test_at = select_per_class(test_y, self.target_counts(available, test=True), generator)
        self.subset_counts = torch.bincount(
            self.relabel(y[subset]), minlength=self.num_classes
        ).tolist()
        self.mean, self.std = self.pixel_stats(x[train])
        self._splits = ResidentSplits(
            {
                "train": (x[train], self.relabel(y[train])),
                "val": (x[val], self.relabel(y[val])),
                "test": (test_x[test_at], self.relabel(test_y[test_at])),
            }
        )
        train_index = raw.train_index if raw.train_index is not None else torch.arange(len(y))
        test_index = raw.test_index if raw.test_index is not None else torch.arange(len(test_y))
        self.indices = {
            "train": train_index[train],
            "val": train_index[val],
            "test": test_index[test_at],
        }
        files = {split: list(names) for split, names in raw.files.items()}
        self.source_files = {s: files.get("test" if s == "test" else "train", []) for s in SPLITS}
        self.set_counts({name: labels for name, (_, labels) in self._splits.items()})
        log.info(
            "%s: subset %s; train %s, val %s (%s), test %s",
            self.describe(),
            self.subset_counts,
            self.train_counts,
            self.val_counts,
            self.val_source,
            self.test_counts,
        )

    def data_indices(self) -> dict[str, Any]:
        """``data_indices.json``: per split the position of each item, in split order (eval
        batches' ``ids`` index it), in its source's order, and ``files``, the source files
        whose concatenation that order is (validation indexes the training source)."""
        if not self.indices:
            raise RuntimeError(f"{type(self).__name__}.data_indices() needs setup() first")
        out: dict[str, Any] = {s: self.indices[s].tolist() for s in SPLITS}
        out["files"] = {s: self.source_files.get(s, []) for s in SPLITS}
        return out

    def summary(self) -> DataSummary:
        """The realised data: source, classes, per-class counts of each split and of the
        long-tailed subset, profile, :meth:`protocol` and :meth:`summary_details`."""
        if not self.train_counts:
            raise RuntimeError(f"{type(self).__name__}.summary() needs setup() first")
        return DataSummary(
            source=str(self.source_used),
            class_names=tuple(self.class_names),
            counts={
                "train": tuple(self.train_counts),
                "val": tuple(self.val_counts),
                "test": tuple(self.test_counts),
            },
            profile=self.profile,
            imbalance_ratio=self.imbalance_ratio,
            details={**self.protocol(), **self.summary_details()},
            subset_counts=tuple(self.subset_counts),
        )

    def protocol(self) -> dict[str, Any]:
        """The options that chose the images, recorded in ``metrics.json``: ``subset_seed``,
        ``n_max``, ``val_source`` and ``val_per_class``."""
        return {
            "subset_seed": self.subset_seed,
            "n_max": self.n_max,
            "val_source": self.val_source,
            "val_per_class": self.val_per_class,
        }

    # -- loaders and on-device transforms ---------------------------------------------------------

    def device(self) -> torch.device:
        """Where the batches are drawn: the Trainer's device with ``on_device``, else the CPU."""
        if self.on_device and self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cpu")

    def split(self, name: str) -> Split:
        """uint8 images (N, C, H, W) and int64 labels of split ``name`` (train, val, test) on
        :meth:`device` (copied there once)."""
        if not self._splits:
            raise RuntimeError(f"{type(self).__name__}.split({name!r}) needs setup() first")
        return self._splits.on(name, self.device())

    def train_dataloader(self) -> Iterable[Batch]:
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

    def eval_dataloader(self, name: str) -> Iterable[Batch]:
        """Batches ``(x, y, ids)`` of split ``name`` in order; under torch.distributed each item
        on exactly one rank (no padding)."""
        images, labels = self.split(name)
        shard = SequentialShard(len(labels))
        return TensorBatches(images, labels, self.eval_batch_size, shard, ids=True)

    def val_dataloader(self) -> Iterable[Batch]:
        """:meth:`eval_dataloader` of the validation split."""
        return self.eval_dataloader("val")

    def test_dataloader(self) -> Iterable[Batch]:
        """:meth:`eval_dataloader` of the test split."""
        return self.eval_dataloader("test")

    def _normalisation(
        self, device: torch.device
    ) -> tuple[float, float] | tuple[torch.Tensor, torch.Tensor]:
        """``mean`` and ``std`` as numbers, or per channel as (1, C, 1, 1) tensors on
        ``device``."""
        if self.mean is None or self.std is None:
            raise RuntimeError(
                f"{type(self).__name__}.transform() needs setup() first (pixel stats)"
            )
        if isinstance(self.mean, float) and isinstance(self.std, float):
            return self.mean, self.std
        if device not in self._stats:
            shape = (1, -1, 1, 1)
            mean = torch.tensor(self.mean, device=device).view(shape)
            std = torch.tensor(self.std, device=device).view(shape)
            self._stats[device] = mean, std
        return self._stats[device]

    def transform(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 ``(x / 255 - mean) / std``; with ``train`` the batch is
        first augmented (:meth:`augment`), on ``x``'s device."""
        out = x.float().div_(255)
        if train:
            out = self.augment(out)
        mean, std = self._normalisation(out.device)
        return out.sub_(mean).div_(std)

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor, ...], dataloader_idx: int
    ) -> tuple[torch.Tensor, ...]:
        """Apply :meth:`transform` to ``x`` of ``(x, y[, ids])`` on the batch's device,
        augmenting only while training; the rest passes through."""
        x, *rest = batch
        training = self.trainer is not None and self.trainer.training
        return (self.transform(x, train=training), *rest)

    def split_fingerprint(self, name: str) -> str:
        """The sha256 (hex) of split ``name``'s content, in split order: its int64 labels and
        its images, the resident uint8 tensors (dtype, shape, bytes), or for a split kept as
        files (the image folder without a cache: ``files(name)`` and ``root``) each file's path
        relative to ``root``, size and modification time. Two runs with the same fingerprint
        evaluated the same images with the same labels under the same ids; ids and targets alone
        cannot tell (a held-out test set drawn with the seed has the same ids and targets). It
        is what ``metrics.json`` records as ``test_fingerprint``. Needs :meth:`setup`."""
        import hashlib  # only here: one self-contained method

        digest = hashlib.sha256(name.encode())
        if name in self._splits:
            tensors = list(self._splits[name])
        else:
            paths, labels = self.files(name)  # type: ignore[attr-defined]
            root = str(self.root)  # type: ignore[attr-defined]
            for path in paths:
                stat = os.stat(path)
                line = f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
                digest.update(line.encode("utf-8", "surrogateescape"))
            tensors = [labels]
        for tensor in tensors:
            array = tensor.detach().cpu().contiguous().numpy()
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()
