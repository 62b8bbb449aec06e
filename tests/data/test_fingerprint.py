"""ImbalancedDataModule.split_fingerprint: equal exactly when a split holds the same images with
the same labels in the same order, for resident splits and for an image folder without a
cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from imblab.data.base import ImbalancedDataModule, RawData
from imblab.data.image_folder import ImageFolderDataModule

from ..image_folder.conftest import write_folder


class Noise(ImbalancedDataModule):
    """The docstring's example dataset, with knobs that change one image, one label or the
    order of the test source."""

    in_channels = 1
    classes = ("a", "b", "c")

    def __init__(self, change: str = "", **options: Any) -> None:
        super().__init__(**options)
        self.change = change
        self.set_classes(self.classes)

    def load_raw(self, generator: torch.Generator) -> RawData:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (600, 1, 8, 8), dtype=torch.uint8, generator=g)
        y = torch.arange(600) % 3
        test_x, test_y = x[480:].clone(), y[480:].clone()
        if self.change == "pixel":
            test_x[7, 0, 3, 3] ^= 1
        elif self.change == "label":
            test_y[7] = (test_y[7] + 1) % 3
        elif self.change == "order":
            test_x[[7, 8]], test_y[[7, 8]] = test_x[[8, 7]], test_y[[8, 7]]
        return RawData("noise", self.classes, (x[:480], y[:480]), (test_x, test_y))


def fingerprint(split: str = "test", **options: Any) -> str:
    dm = Noise(**options)
    dm.setup()
    return dm.split_fingerprint(split)


def test_the_same_images_and_labels_give_the_same_fingerprint() -> None:
    reference = fingerprint()
    assert len(reference) == 64 and int(reference, 16) >= 0  # a sha256 in hex
    assert fingerprint() == reference
    # the training seed does not change the test images here: the same fingerprint
    assert fingerprint(seed=5) == reference
    assert fingerprint("val") != reference  # another split


@pytest.mark.parametrize("change", ["pixel", "label", "order"])
def test_one_pixel_one_label_or_the_order_changes_it(change: str) -> None:
    assert fingerprint(change=change) != fingerprint()


def image_folder(root: Path) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(root=str(root), image_size=16, verdict_cache=False, cache="none")
    dm.setup("fit")
    return dm


def test_an_image_folder_without_a_cache_hashes_its_files(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_folder(root, {"ant": 30, "bee": 20}, size=18)
    reference = image_folder(root).split_fingerprint("test")
    assert image_folder(root).split_fingerprint("test") == reference
    copy = tmp_path / "moved"
    shutil.copytree(root, copy)  # copy2: sizes and modification times kept
    assert image_folder(copy).split_fingerprint("test") == reference  # relative paths
    test_file = image_folder(root).files("test")[0][0]
    stat = os.stat(test_file)
    os.utime(test_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert image_folder(root).split_fingerprint("test") != reference  # the file changed
    cached = ImageFolderDataModule(root=str(root), image_size=16, verdict_cache=False)
    cached.setup("fit")  # a memory cache: the decoded pixels are hashed
    assert cached.split_fingerprint("test") == cached.split_fingerprint("test") != reference
