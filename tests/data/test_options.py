"""The shared datamodule options: forwarded to the base class with ``**options``, each dataset's
own defaults of them (``option_defaults``) kept, the shipped ``conf/data/*.yaml`` instantiating,
unknown keys a one-line error, and the error for a class without images naming the dataset's
own keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate

from imblab.config import instantiate as imblab_instantiate
from imblab.data import mnist_sources
from imblab.data.base import ImbalancedDataModule, RawData
from imblab.data.cifar_lt import CIFARLTDataModule
from imblab.data.image_folder import ImageFolderDataModule
from imblab.data.mnist import MNISTDataModule
from imblab.data.split import require_every_class, stratified_split
from imblab.errors import ConfigError

# the defaults each constructor had before the shared options were forwarded (git show of the
# constructors' signatures at the commit before), written out here, not read from the code
SHARED_BEFORE: dict[str, dict[str, Any]] = {
    "mnist": {
        "profile": "exponential",
        "imbalance_ratio": 100.0,
        "minority_fraction": 0.5,
        "class_counts": None,
        "imbalance_test": False,
        "val_fraction": 0.2,
        "batch_size": 256,
        "eval_batch_size": 1024,
        "seed": 0,
        "on_device": True,
        "sampler": None,
    },
    "image_folder": {
        "profile": "none",
        "imbalance_ratio": 10.0,
        "minority_fraction": 0.5,
        "class_counts": None,
        "imbalance_test": False,
        "val_fraction": 0.15,
        "batch_size": 64,
        "eval_batch_size": 256,
        "seed": 0,
        "on_device": True,
        "sampler": None,
    },
}
SHARED_BEFORE["cifar_lt"] = SHARED_BEFORE["mnist"]  # it forwarded them already
# the options #24 added, with each dataset's defaults (docs/data.md)
PROTOCOL: dict[str, dict[str, Any]] = {
    "mnist": {"subset_seed": 0, "val_source": "remainder", "val_per_class": 100, "n_max": 400},
    "image_folder": {"subset_seed": 0, "val_source": "split", "val_per_class": 50, "n_max": None},
    "cifar_lt": {"subset_seed": 0, "val_source": "remainder", "val_per_class": 50, "n_max": None},
}
OWN_BEFORE: dict[str, dict[str, Any]] = {
    "mnist": {
        "source": "auto",
        "positive_classes": None,
        "sample_test_per_class": 100,
        "download_timeout": 5.0,
        "augment_translate": 2,
        "augment_hflip": False,
    },
    "image_folder": {
        "image_size": (64, 64),
        "grayscale": False,
        "test_fraction": 0.15,
        "positive_class": None,
        "min_side": 16,
        "max_pixels": 89478485,
        "verdict_cache": True,
        "cache": "memory",
        "cache_dir": None,
        "num_workers": 0,
        "augment_crop_scale": (0.35, 1.0),
        "augment_crop_ratio": (0.75, 4 / 3),
        "augment_hflip": True,
        "output_dir": None,
        "follow_symlinks": False,
    },
    "cifar_lt": {
        "dataset": "cifar10",
        "verify_checksums": True,
        "file_md5": None,
        "download_timeout": 30.0,
        "augment_pad": 4,
        "augment_hflip": True,
    },
}


@pytest.fixture
def two_classes(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
    return root


def build(dataset: str, path: Path, **options: Any) -> ImbalancedDataModule:
    if dataset == "mnist":
        return MNISTDataModule(str(path), **options)
    if dataset == "image_folder":
        return ImageFolderDataModule(str(path), **options)
    return CIFARLTDataModule(str(path), **options)


@pytest.mark.parametrize("dataset", ["mnist", "image_folder", "cifar_lt"])
def test_constructors_keep_their_defaults(dataset: str, two_classes: Path) -> None:
    dm = build(dataset, two_classes)
    expected = {**SHARED_BEFORE[dataset], **OWN_BEFORE[dataset], **PROTOCOL[dataset]}
    for key, value in expected.items():
        assert getattr(dm, key) == value, key


def test_image_folder_defaults_yield_to_given_options(two_classes: Path) -> None:
    dm = ImageFolderDataModule(str(two_classes), val_fraction=0.3, profile="exponential")
    assert (dm.val_fraction, dm.profile, dm.imbalance_ratio, dm.batch_size) == (
        0.3,
        "exponential",
        10.0,
        64,
    )


@pytest.mark.parametrize("dataset", ["mnist", "image_folder", "cifar_lt"])
def test_the_shipped_configs_instantiate(compose_cfg: Any, dataset: str, two_classes: Path) -> None:
    cfg = compose_cfg(
        f"data={dataset}", *([f"data.root={two_classes}"] * (dataset == "image_folder"))
    )
    dm = instantiate(cfg.data)
    assert type(dm).__name__ == cfg.data._target_.rsplit(".", 1)[1]
    for key in [*SHARED_BEFORE[dataset], *PROTOCOL[dataset]]:
        if key in cfg.data:
            assert getattr(dm, key) == cfg.data[key], key


@pytest.mark.parametrize(
    ("dataset", "key", "message"),
    [
        (
            "mnist",
            "val_fracton",
            r"^data\.val_fracton=0\.1: not an option of MNISTDataModule; "
            r"did you mean data\.val_fraction\?$",
        ),
        (
            "image_folder",
            "positive_classes",
            r"^data\.positive_classes=0\.1: not an option of "
            r"ImageFolderDataModule; did you mean data\.positive_class\?$",
        ),
        (
            "cifar_lt",
            "zzz",
            r"^data\.zzz=0\.1: not an option of CIFARLTDataModule; use one of "
            r"\[.*'augment_pad'.*'val_fraction'.*\]$",
        ),
    ],
)
def test_an_unknown_key_is_a_one_line_error(
    compose_cfg: Any, dataset: str, key: str, message: str, two_classes: Path
) -> None:
    root = [f"data.root={two_classes}"] * (dataset == "image_folder")
    cfg = compose_cfg(f"data={dataset}", *root, f"+data.{key}=0.1")
    with pytest.raises(ConfigError, match=message):
        imblab_instantiate(cfg.data)


class Sparse(ImbalancedDataModule):
    """Three classes whose training source lacks class 1."""

    in_channels = 1
    source_keys = ("archive",)

    def __init__(self, archive: str = "noise.bin", **options: Any) -> None:
        super().__init__(**options)
        self.archive = archive
        self.set_classes(("a", "b", "c"))

    def load_raw(self, generator: torch.Generator) -> RawData:
        x = torch.zeros((60, 1, 4, 4), dtype=torch.uint8)
        y = torch.tensor([0, 2] * 30)
        return RawData("noise", ("a", "b", "c"), (x, y), (x[:6], torch.arange(6) % 3))


def test_a_class_without_images_names_the_datasets_own_keys() -> None:
    with pytest.raises(ConfigError) as err:
        Sparse(imbalance_ratio=2).setup()
    assert str(err.value) == (
        "data.archive='noise.bin': class 1 has no image in the training source, so none to "
        "train on; point data.archive to a source with images of every class"
    )


def test_mnist_names_its_source_keys() -> None:
    dm = MNISTDataModule("/data/mnist")
    labels = torch.tensor([c for c in range(mnist_sources.NUM_CLASSES) if c != 4] * 3)
    with pytest.raises(ConfigError) as err:
        stratified_split(labels, 10, 0.2, torch.Generator(), dm.source_options())
    assert str(err.value) == (
        "data.source='auto': class 4 has no image in the training source, so none to train "
        "on; point data.source / data.data_dir to a source with images of every class"
    )


def test_require_every_class_without_source_keys_and_with_several_empty_classes() -> None:
    require_every_class([3, 1], {})
    with pytest.raises(ConfigError, match=r"^data: classes \[0, 2\] have no image in the "):
        require_every_class([0, 1, 0], {})
