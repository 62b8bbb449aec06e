"""ImageFolderDataModule: split stability and stratification, imbalance profiles, binary mode,
bad files, caches, every sampler, the batch convention and the on-device transforms."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from imblab.config import instantiate
from imblab.data.image_folder import ImageFolderDataModule
from imblab.data.imbalance import exponential_counts
from imblab.data.split import assign_splits, unit_hash
from imblab.data.transforms import random_resized_crop
from imblab.errors import ConfigError

from ..scrape.badfiles import write_image_tree
from .conftest import write_folder

SAMPLERS = sorted(p.stem for p in (Path(__file__).parents[2] / "conf" / "sampler").glob("*.yaml"))


def module(root: Path, **kwargs: object) -> ImageFolderDataModule:
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("verdict_cache", False)
    dm = ImageFolderDataModule(root=str(root), **kwargs)  # type: ignore[arg-type]
    dm.setup("fit")
    return dm


def membership(dm: ImageFolderDataModule) -> dict[str, str]:
    """relative path -> split"""
    return {
        Path(p).relative_to(dm.root).as_posix(): split
        for split in ("train", "val", "test")
        for p in dm.files(split)[0]
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    write_folder(root, {"ant": 60, "bee": 30, "cow": 12}, size=20)
    return root


# -- split ----------------------------------------------------------------------------------------


def test_split_is_stable_when_files_are_added(tmp_path: Path) -> None:
    write_folder(tmp_path, {"a": 40, "b": 15}, size=18)
    before = membership(module(tmp_path, cache="none"))
    write_folder(tmp_path, {"a": 25, "b": 10}, size=18, start=1000)  # new files in both classes
    after = membership(module(tmp_path, cache="none"))
    assert set(before) < set(after)
    moved = {f: (s, after[f]) for f, s in before.items() if after[f] != s}
    assert not moved, moved
    # and reproducible: the same subset_seed gives the same split, another one another split;
    # the training seed draws no data
    assert membership(module(tmp_path, cache="none", seed=1)) == after
    assert membership(module(tmp_path, cache="none", subset_seed=1)) != after


def test_split_is_stratified_and_fractions_hold(tmp_path: Path) -> None:
    counts = {"a": 300, "b": 100}
    write_folder(tmp_path, counts, size=16)
    dm = module(tmp_path, cache="none", val_fraction=0.2, test_fraction=0.1)
    for c, n in enumerate(counts.values()):
        val, test = dm.val_counts[c], dm.test_counts[c]
        assert dm.train_counts[c] + val + test == n
        # each class is split on its own with the same fractions: within 4 binomial sigmas
        for got, f in ((val, 0.2), (test, 0.1)):
            assert abs(got - f * n) <= 4 * math.sqrt(n * f * (1 - f)), (c, got, f * n)


def test_assign_splits_follows_the_hash_and_fills_every_split() -> None:
    keys = [f"k{i}" for i in range(500)]
    out = assign_splits(keys, 0.2, 0.1, seed=3)
    for k, split in zip(keys, out, strict=True):
        u = unit_hash(3, "split", k)
        assert split == ("test" if u < 0.1 else "val" if u < 0.3 else "train")
    # a class of three items still gets one item in each split
    for seed in range(20):
        assert sorted(assign_splits(["x", "y", "z"], 0.15, 0.15, seed)) == ["test", "train", "val"]
    assert assign_splits(["x", "y"], 0.5, 0.0, 0).count("train") == 1


# -- imbalance and binary mode --------------------------------------------------------------------


def test_exponential_profile_subsamples_the_pool(folder: Path) -> None:
    plain = module(folder, cache="none")
    dm = module(folder, cache="none", profile="exponential", imbalance_ratio=5)
    pool = [t + v for t, v in zip(plain.train_counts, plain.val_counts, strict=True)]
    want = exponential_counts(max(pool), 3, 5.0)
    got = [t + v for t, v in zip(dm.train_counts, dm.val_counts, strict=True)]
    assert got == [min(w, a) for w, a in zip(want, pool, strict=True)]
    assert dm.test_counts == plain.test_counts  # test keeps the folder's distribution
    # kept files keep their split
    kept = membership(dm)
    assert all(membership(plain)[f] == s for f, s in kept.items())
    imbalanced_test = module(
        folder, cache="none", profile="exponential", imbalance_ratio=5, imbalance_test=True
    )
    assert imbalanced_test.test_counts[2] < plain.test_counts[2]


def test_explicit_and_step_profiles(folder: Path) -> None:
    dm = module(folder, cache="none", profile="explicit", class_counts=[20, 10, 5])
    assert [t + v for t, v in zip(dm.train_counts, dm.val_counts, strict=True)] == [20, 10, 5]
    plain = module(folder, cache="none")
    available = [t + v for t, v in zip(plain.train_counts, plain.val_counts, strict=True)]
    step = module(folder, cache="none", profile="step", imbalance_ratio=6, minority_fraction=0.34)
    pool = [t + v for t, v in zip(step.train_counts, step.val_counts, strict=True)]
    # the last round(0.34 * 3) = 1 class gets n_max / 6, the others keep all they have
    assert pool == [available[0], available[1], available[0] // 6]


def test_binary_mode_with_a_named_positive_class(folder: Path) -> None:
    plain = module(folder, cache="none")
    dm = module(folder, cache="none", positive_class="cow")
    assert dm.num_classes == 2 and dm.class_names == ["rest", "cow"]
    assert dm.train_counts == [plain.train_counts[0] + plain.train_counts[1], plain.train_counts[2]]
    ratio = module(folder, cache="none", profile="binary", positive_class="bee", imbalance_ratio=8)
    pos = ratio.train_counts[1] + ratio.val_counts[1]
    neg = ratio.train_counts[0] + ratio.val_counts[0]
    assert pos == math.floor(neg / 8)


def test_binary_mode_of_two_folders_keeps_both_names(tmp_path: Path) -> None:
    write_folder(tmp_path, {"healthy": 20, "sick": 6}, size=16)
    dm = module(tmp_path, cache="none", positive_class="sick")
    assert dm.class_names == ["healthy", "sick"]
    labels = dm.files("train")[1]
    paths = dm.files("train")[0]
    assert all(
        (Path(p).parent.name == "sick") == bool(y)
        for p, y in zip(paths, labels.tolist(), strict=True)
    )


# -- bad files ------------------------------------------------------------------------------------


def test_bad_files_are_reported_in_rejected_csv_and_never_loaded(tmp_path: Path) -> None:
    root, out = tmp_path / "imgs", tmp_path / "run"
    expected = write_image_tree(root, classes=("cat", "dog"), good_per_class=(8, 8), size=24)
    dm = module(root, cache="memory", output_dir=str(out))
    with open(out / "rejected.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    reported = {Path(r["path"]).relative_to(root).as_posix(): r for r in rows}
    bad = {rel: case for rel, case in expected.items() if case.status != "ok"}
    assert set(reported) == set(bad)
    for rel, case in bad.items():
        assert reported[rel]["verdict"] == case.status
        assert case.reason in reported[rel]["reason"]
    used = set(membership(dm))
    assert used == {rel for rel, case in expected.items() if case.status == "ok"}
    assert dm.summary()["duplicate_files"] == 1
    # every accepted file, converted or not, decodes into the cache
    images, _ = dm.split("train")
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 16, 16)


def test_a_file_broken_after_validation_does_not_crash_an_epoch(tmp_path: Path) -> None:
    write_folder(tmp_path, {"a": 24, "b": 24}, size=16)
    dm = module(tmp_path, cache="none", val_fraction=0.25, test_fraction=0.25)
    train_paths, val_paths = dm.files("train")[0], dm.files("val")[0]
    for path in (train_paths[0], val_paths[0], val_paths[1]):
        Path(path).write_bytes(b"<html>gone</html>")
    seen = sum(len(y) for _, y in dm.train_dataloader())
    assert seen == len(train_paths)  # the broken training file was replaced, not dropped
    ids = torch.cat([ids for _, _, ids in dm.val_dataloader()])
    assert sorted(ids.tolist()) == list(range(2, len(val_paths)))  # broken ones left out
    # with a cache, a file broken between validation and caching is rejected, not fatal
    cached = module(tmp_path, cache="memory", output_dir=str(tmp_path / "run"))
    assert len(membership(cached)) == len(membership(dm)) - 3
    rows = (tmp_path / "run" / "rejected.csv").read_text()
    assert rows.count("not an image: HTML") == 3


# -- config errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"root": None}, "data.root"),
        ({"root": "/nonexistent/images"}, "data.root"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "data.test_fraction"),
        ({"profile": "zipf"}, "data.profile"),
        ({"profile": "binary"}, "data.positive_class"),
        ({"cache": "ram"}, "data.cache"),
        ({"image_size": 4}, "data.image_size"),
        ({"std": [0.2, 0.0, 0.2]}, "data.std"),
        ({"mean": [0.5, 0.5]}, "data.mean"),
        ({"augment_crop_scale": [0.5, 1.5]}, "data.augment_crop_scale"),
        ({"class_counts": [1, 2, 3]}, "data.class_counts"),
        ({"profile": "explicit", "class_counts": [5, 0, 2]}, "data.class_counts"),
        ({"val_fraction": 1.5}, "data.val_fraction"),
        ({"test_fraction": -0.1}, "data.test_fraction"),
        ({"num_workers": -1}, "data.num_workers"),
    ],
)
def test_bad_config_values_fail_with_one_line(folder: Path, kwargs: dict, key: str) -> None:
    kwargs = {"root": str(folder), **kwargs}
    with pytest.raises(ConfigError) as err:
        module(**kwargs)  # type: ignore[arg-type]
    message = str(err.value)
    assert message.startswith(key + "=") and "\n" not in message and "; " in message


def test_bad_folders_fail_with_one_line(tmp_path: Path, folder: Path) -> None:
    one = tmp_path / "one"
    write_folder(one, {"only": 5})
    small = tmp_path / "small"
    write_folder(small, {"a": 10, "b": 2})
    cases = [
        (lambda: module(tmp_path / "one"), "1 class subfolder"),
        (lambda: module(small), "class 'b' has 2 usable image(s)"),
        (lambda: module(folder, positive_class="dog"), "data.positive_class='dog'"),
        (
            lambda: module(folder, profile="explicit", class_counts=[5, 5]),
            "has 2 entries for 3 classes",
        ),
    ]
    for build, needle in cases:
        with pytest.raises(ConfigError, match=None) as err:
            build()
        assert needle in str(err.value) and "\n" not in str(err.value)
    assert module(small, val_fraction=0.0, test_fraction=0.0).train_counts == [10, 2]


# -- loaders, samplers and caches -----------------------------------------------------------------


def sampler_factory(name: str) -> object | None:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="imblab.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"sampler={name}"])
    GlobalHydra.instance().clear()
    return instantiate(cfg.sampler) if cfg.sampler else None


@pytest.mark.parametrize("cache", ["memory", "none"])
@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_draws_the_same_indices_with_and_without_cache(
    folder: Path, name: str, cache: str
) -> None:
    dm = module(folder, cache=cache, sampler=sampler_factory(name), batch_size=16)
    loader = dm.train_dataloader()
    sampler = loader.sampler
    sampler.set_epoch(1)
    expected = sampler.indices(torch.device("cpu"))
    labels = dm.files("train")[1]
    batches = list(loader)
    assert all(len(b) == 2 for b in batches)
    y = torch.cat([b[1] for b in batches])
    assert torch.equal(y, labels[expected])
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.uint8 and x.shape == (len(expected), 3, 16, 16)


def test_cached_and_uncached_batches_are_identical(folder: Path, tmp_path: Path) -> None:
    plain = module(folder, cache="none")
    disk = module(folder, cache="disk", cache_dir=str(tmp_path / "cache"))
    assert disk.cache_file is not None and disk.cache_file.is_file()
    again = module(folder, cache="disk", cache_dir=str(tmp_path / "cache"))  # read back
    for dm in (disk, again):
        for (x1, y1, i1), (x2, y2, i2) in zip(
            plain.val_dataloader(), dm.val_dataloader(), strict=True
        ):
            assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(i1, i2)
    assert i1.dtype == torch.int64


def test_workers_decode_the_same_batches(folder: Path) -> None:
    one = module(folder, cache="none")
    two = module(folder, cache="none", num_workers=2)
    a = [b[0] for b in one.test_dataloader()]
    b = [b[0] for b in two.test_dataloader()]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_eval_shards_cover_each_item_once(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dm = module(folder, cache="none", eval_batch_size=4)
    n = len(dm.files("val")[0])
    seen = []
    for rank in range(3):
        monkeypatch.setattr("imblab.samplers._world", lambda r, k, rank=rank: (3, rank))
        seen += torch.cat([ids for _, _, ids in dm.val_dataloader()]).tolist()
    assert sorted(seen) == list(range(n))


# -- transforms -----------------------------------------------------------------------------------


def test_transform_normalises_and_augments(folder: Path) -> None:
    dm = module(folder)
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    out = dm.transform(x, train=False)
    mean = torch.tensor(dm.mean).view(1, 3, 1, 1)
    std = torch.tensor(dm.std).view(1, 3, 1, 1)
    assert torch.allclose(out, (x.float() / 255 - mean) / std, atol=1e-6)
    assert dm.transform(x, train=True).shape == x.shape


def test_random_resized_crop_identity_flip_and_crop() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    same = random_resized_crop(x, (1.0, 1.0), (1.0, 1.0), hflip=False)
    assert torch.allclose(same, x, atol=1e-5)
    g = torch.Generator().manual_seed(0)
    flipped = random_resized_crop(x.repeat(16, 1, 1, 1), (1.0, 1.0), (1.0, 1.0), True, g)
    kinds = {
        "same" if torch.allclose(f, s, atol=1e-5) else "flip"
        for f, s in zip(flipped, x.repeat(16, 1, 1, 1), strict=True)
    }
    assert kinds == {"same", "flip"}
    assert all(
        torch.allclose(f, s, atol=1e-5) or torch.allclose(f, s.flip(-1), atol=1e-5)
        for f, s in zip(flipped, x.repeat(16, 1, 1, 1), strict=True)
    )
    # a crop of a quarter of the area magnifies: values stay within the image's range
    big = torch.rand(4, 3, 32, 32)
    crop = random_resized_crop(big, (0.25, 0.25), (1.0, 1.0), False, g)
    assert crop.min() >= big.min() - 1e-6 and crop.max() <= big.max() + 1e-6


def test_grayscale_gives_one_channel(folder: Path) -> None:
    dm = module(folder, grayscale=True)
    assert dm.in_channels == 1 and len(dm.mean) == 1
    images, _ = dm.split("val")
    assert images.shape[1] == 1


def test_verdict_cache_skips_decoding_on_the_second_setup(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module(folder, verdict_cache=True, cache="none")
    calls = []
    import imblab.data.images as images

    original = images.validate_image
    monkeypatch.setattr(
        images, "validate_image", lambda *a, **k: calls.append(a) or original(*a, **k)
    )
    module(folder, verdict_cache=True, cache="none")
    assert calls == []
    assert os.path.isfile(folder / ".imblab_verdicts.json")
