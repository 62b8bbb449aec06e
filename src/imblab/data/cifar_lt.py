"""CIFAR-10-LT / CIFAR-100-LT (Cao et al. 2019): the datamodule over the official python
archives, downloaded when missing (:mod:`imblab.data.cifar_sources`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from imblab.data import checks, cifar_sources
from imblab.data.base import ImbalancedDataModule, RawData, Stat
from imblab.data.transforms import pixel_mean_std, random_hflip, random_translate


class CIFARLTDataModule(ImbalancedDataModule):
    """Long-tailed CIFAR-10/100 as in Cao et al. 2019 (official code ``kaidic/LDAM-DRW``,
    ``imbalance_cifar.py``).

    The long-tailed subset keeps ``n_c = int(n_max * (1/rho)^(c / (C - 1)))`` images of class c
    (profile ``exponential``, ``rho = imbalance_ratio``, ``n_max`` the archive's images per
    class: 5,000 / 500), the official images: ``np.random.RandomState(subset_seed)`` shuffles
    each class in class order and the first ``n_c`` are kept, as ``gen_imbalanced_data`` after
    ``np.random.seed(rand_number)`` (``--rand_number`` default 0 = ``subset_seed`` default 0);
    ``step`` (with ``minority_fraction`` 0.5) and ``none`` are the official ``step`` and
    balanced branches. Validation (``val_source``, default ``remainder``): ``val_per_class``
    images of each class from those the subset leaves unused (the head class, kept whole, gives
    ``val_per_class`` of its own), never from the test batch; ``split``: a stratified
    ``val_fraction`` of the subset; ``none``: none, as the papers. Test is the archive's
    balanced test batch. Training augments on the device with the papers' 4-pixel zero padding
    + random 32 x 32 crop (a random shift in [-4, 4]^2 filled with 0: the same images) and a
    horizontal flip; normalisation uses the per-channel mean and std of the training split.

    Differences to the official code: a class whose target rounds to 0 keeps 1 image (only on
    archives with fewer than ``rho`` images per class; on the real archives the counts are the
    official ones); the official normalisation constants are CIFAR-10's (0.4914, 0.4822,
    0.4465) / (0.2023, 0.1994, 0.2010), here the statistics of the training split.

    ``prepare_data`` downloads the archive into ``data_dir`` from ``mirrors`` (``{url, md5}``,
    tried in order, the md5 checked by torchvision) when a file is missing, and records the
    extracted files' md5s. With ``verify_checksums`` the extracted files are checked before they
    are read: against ``file_md5`` when given, else against the md5s recorded at download (a
    mismatch with either is an error: a corrupt or changed file), else, for files put there by
    hand, against the official archive's, where a mismatch is a warning and the files are read
    as given (your own data in CIFAR's format: pin its md5s with ``file_md5``).
    """

    profiles = ("exponential", "step", "explicit", "none")
    in_channels = 3
    image_size = (32, 32)
    source_keys = ("data_dir",)
    option_defaults: ClassVar[Mapping[str, Any]] = {"val_source": "remainder"}

    def __init__(
        self,
        data_dir: str,
        name: str = "cifar10",
        mirrors: Sequence[Mapping[str, str]] | None = None,
        verify_checksums: bool = True,
        file_md5: Mapping[str, str] | None = None,
        download_timeout: float = 30.0,
        augment_pad: int = 4,
        augment_hflip: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if name not in cifar_sources.ARCHIVES:
            raise checks.bad("name", name, "unknown CIFAR", "use cifar10 or cifar100")
        if not isinstance(data_dir, str | os.PathLike) or not str(data_dir):
            raise checks.bad("data_dir", data_dir, "not a directory path", "set data.data_dir")
        self.archive = cifar_sources.ARCHIVES[name]
        self.dataset = name
        self.data_dir = Path(os.path.expanduser(str(data_dir)))
        if mirrors is None:
            mirrors = [{"url": self.archive.url, "md5": self.archive.md5}]
        if (
            isinstance(mirrors, str | Mapping)
            or not mirrors
            or not all(
                isinstance(m, Mapping) and str(m.get("url", "")).startswith(("http://", "https://"))
                for m in mirrors
            )
        ):
            raise checks.bad(
                "mirrors", mirrors, "not a list of {url, md5}", "e.g. [{url: http://h/a.tar.gz}]"
            )
        self.mirrors = [dict(m) for m in mirrors]
        self.verify_checksums = checks.boolean("verify_checksums", verify_checksums)
        if file_md5 is not None and not isinstance(file_md5, Mapping):
            raise checks.bad("file_md5", file_md5, "not a mapping", "{data_batch_1: <md5>, ...}")
        self.file_md5 = None if file_md5 is None else {str(k): str(v) for k, v in file_md5.items()}
        self.download_timeout = checks.real("download_timeout", download_timeout)
        if self.download_timeout <= 0:
            raise checks.bad("download_timeout", download_timeout, "must be > 0 s", "e.g. 30")
        self.augment_pad = checks.integer("augment_pad", augment_pad, 0)
        self.augment_hflip = checks.boolean("augment_hflip", augment_hflip)
        self._prepared = False

    def prepare_data(self) -> None:
        """Download and extract the archive when a file of its folder is missing."""
        if self._prepared:
            return
        if cifar_sources.missing(self.data_dir, self.archive):
            cifar_sources.download(self.data_dir, self.archive, self.mirrors, self.download_timeout)
        self._prepared = True

    def load_raw(self, generator: torch.Generator) -> RawData:
        """The archive's training batches (concatenated in order) and its test batch, checked
        first with ``verify_checksums``."""
        if absent := cifar_sources.missing(self.data_dir, self.archive):
            folder = self.data_dir / self.archive.folder
            raise checks.bad(
                "data_dir",
                str(self.data_dir),
                f"{folder} lacks {', '.join(absent)}",
                "call prepare_data() (imblab-train does) or put the extracted archive there",
            )
        if self.verify_checksums:
            md5s, origin = cifar_sources.expected_md5s(self.data_dir, self.archive, self.file_md5)
            cifar_sources.verify(self.data_dir, self.archive, md5s, origin)
        names = cifar_sources.class_names(self.data_dir, self.archive)
        train = cifar_sources.load_split(self.data_dir, self.archive, self.archive.train)
        test = cifar_sources.load_split(self.data_dir, self.archive, self.archive.test)
        files = {"train": list(self.archive.train), "test": list(self.archive.test)}
        return RawData(self.dataset, names, train, test, files)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Zero padding by ``augment_pad`` + a random crop back to 32 x 32, then a random
        horizontal flip with ``augment_hflip``."""
        if self.augment_pad:
            x = random_translate(x, self.augment_pad)
        return random_hflip(x) if self.augment_hflip else x

    def pixel_stats(self, images: torch.Tensor) -> tuple[Stat, Stat]:
        """Per-channel mean and std of ``images / 255`` (exact, from uint8 histograms)."""
        stats = [pixel_mean_std(images[:, c]) for c in range(images.shape[1])]
        return [m for m, _ in stats], [s for _, s in stats]

    def describe(self) -> str:
        return f"{self.dataset}-LT rho={self.imbalance_ratio:g} from {self.data_dir}"

    def summary_details(self) -> dict[str, Any]:
        return {"archive": self.archive.filename, "pixel_mean": self.mean, "pixel_std": self.std}
