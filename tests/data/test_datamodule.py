"""MNISTDataModule end to end on the bundled sample, config validation, sampler and transforms."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from imblab.data.mnist import MNISTDataModule
from imblab.data.tensors import TensorBatches
from imblab.data.transforms import random_hflip, random_translate
from imblab.errors import ConfigError
from imblab.samplers import SequentialShard, ShuffleSampler

SAMPLE_PER_CLASS = 500
# the validation source these tests of the profiles check: a stratified split of the whole pool
SPLIT: dict[str, Any] = {"val_source": "split", "n_max": None}


def floor_min1(targets: list[float]) -> list[int]:
    return [max(1, math.floor(t)) for t in targets]


def split_counts(pool: list[int], val_fraction: float) -> tuple[list[int], list[int]]:
    val = [min(math.floor(val_fraction * n + 0.5), n - 1) for n in pool]
    return [n - v for n, v in zip(pool, val, strict=True)], val


@pytest.fixture
def sample_dm(tmp_path: Path) -> MNISTDataModule:
    dm = MNISTDataModule(str(tmp_path), source="sample", imbalance_ratio=10, batch_size=64, **SPLIT)
    dm.prepare_data()
    dm.setup()
    return dm


def dataset_of(loader: object) -> TensorBatches:
    assert isinstance(loader, TensorBatches)
    return loader


def image_keys(images: torch.Tensor) -> set[bytes]:
    return {bytes(im.numpy()) for im in images}


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"source": "web"}, "source"),
        ({"profile": "linear"}, "profile"),
        ({"imbalance_ratio": 0.5}, "imbalance_ratio"),
        ({"imbalance_ratio": float("nan")}, "imbalance_ratio"),
        ({"imbalance_ratio": "big"}, "imbalance_ratio"),
        ({"minority_fraction": 0.0}, "minority_fraction"),
        ({"minority_fraction": 1.0}, "minority_fraction"),
        ({"profile": "step", "minority_fraction": 0.01}, "minority_fraction"),
        ({"profile": "step", "minority_fraction": 0.97}, "minority_fraction"),
        ({"profile": "explicit"}, "class_counts"),
        ({"profile": "explicit", "class_counts": [10] * 9}, "class_counts"),
        ({"profile": "explicit", "class_counts": [10] * 9 + [-1]}, "class_counts"),
        ({"profile": "explicit", "class_counts": [10] * 9 + [0]}, "class_counts"),
        ({"profile": "explicit", "class_counts": [10.5] * 10}, "class_counts"),
        ({"class_counts": [10] * 10}, "class_counts"),
        ({"profile": "binary"}, "positive_classes"),
        ({"profile": "binary", "positive_classes": [10]}, "positive_classes"),
        ({"profile": "binary", "positive_classes": [3, 3]}, "positive_classes"),
        ({"profile": "binary", "positive_classes": list(range(10))}, "positive_classes"),
        ({"positive_classes": [7]}, "positive_classes"),
        ({"imbalance_test": "yes"}, "imbalance_test"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"sample_test_per_class": 0}, "sample_test_per_class"),
        ({"batch_size": 0}, "batch_size"),
        ({"eval_batch_size": 2.5}, "eval_batch_size"),
        ({"on_device": "yes"}, "on_device"),
        ({"augment_hflip": 1}, "augment_hflip"),
        ({"seed": True}, "seed"),
        ({"mirrors": "http://x/"}, "mirrors"),
        ({"mirrors": ["ftp://x/"]}, "mirrors"),
        ({"download_timeout": 0}, "download_timeout"),
        ({"augment_translate": -1}, "augment_translate"),
        ({"augment_translate": 14}, "augment_translate"),
    ],
)
def test_constructor_rejects(tmp_path: Path, kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        MNISTDataModule(str(tmp_path), **kwargs)
    message = str(err.value)
    assert message.startswith(f"data.{key}=") and "\n" not in message
    assert message.count(": ") >= 1 and "; " in message


def test_attributes(tmp_path: Path) -> None:
    dm = MNISTDataModule(str(tmp_path))
    assert dm.num_classes == 10 and dm.class_names == [str(c) for c in range(10)]
    assert dm.in_channels == 1 and dm.image_size == (28, 28)
    binary = MNISTDataModule(str(tmp_path), profile="binary", positive_classes=[5, 3])
    assert binary.num_classes == 2 and binary.class_names == ["rest", "3+5"]
    seven = MNISTDataModule(str(tmp_path), profile="binary", positive_classes=[7])
    assert seven.class_names == ["rest", "7"]


def test_end_to_end_on_sample(sample_dm: MNISTDataModule) -> None:
    dm = sample_dm
    assert dm.source_used == "sample" and dm.test_source == "holdout"
    n_max = SAMPLE_PER_CLASS - dm.sample_test_per_class  # test held out before imbalancing
    pool = floor_min1([n_max * 10.0 ** (-c / 9) for c in range(10)])
    assert (dm.train_counts, dm.val_counts) == split_counts(pool, 0.2)
    assert dm.test_counts == [100] * 10

    loaders = {
        "train": dm.train_dataloader(),
        "val": dm.val_dataloader(),
        "test": dm.test_dataloader(),
    }
    keys: dict[str, set[bytes]] = {}
    for name, loader in loaders.items():
        seen = 0
        labels = []
        for x, y, *ids in loader:
            assert len(ids) == (name != "train")  # eval batches carry sample ids
            assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28)
            assert y.dtype == torch.int64 and len(y) == len(x)
            seen += len(x)
            labels.append(y)
        counts = getattr(dm, f"{name}_counts")
        assert seen == sum(counts) == len(dataset_of(loader).labels)
        assert torch.bincount(torch.cat(labels), minlength=10).tolist() == counts
        keys[name] = image_keys(dataset_of(loader).images)
        assert len(keys[name]) == seen
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    summary = dm.summary()
    assert summary["train_counts"] == ",".join(map(str, dm.train_counts))
    assert summary["train_size"] == sum(dm.train_counts) and summary["source_used"] == "sample"
    assert all(isinstance(v, str | int | float) for v in summary.values())


def test_setup_idempotent_and_seeded(tmp_path: Path, sample_dm: MNISTDataModule) -> None:
    first = dataset_of(sample_dm.train_dataloader()).images
    sample_dm.setup("fit")
    sample_dm.setup("test")
    assert dataset_of(sample_dm.train_dataloader()).images is first
    same = MNISTDataModule(str(tmp_path), source="sample", imbalance_ratio=10, **SPLIT)
    same.setup()
    assert torch.equal(dataset_of(same.train_dataloader()).images, first)
    other = MNISTDataModule(
        str(tmp_path), source="sample", imbalance_ratio=10, subset_seed=1, **SPLIT
    )
    other.setup()
    assert other.train_counts == same.train_counts
    assert not torch.equal(dataset_of(other.train_dataloader()).images, first)


def test_hydra_instantiate_with_list_configs(tmp_path: Path) -> None:
    cfg = OmegaConf.create(
        {
            "_target_": "imblab.data.mnist.MNISTDataModule",
            "data_dir": str(tmp_path),
            "source": "sample",
            "profile": "binary",
            "positive_classes": [3, 5],
            "imbalance_ratio": 8,
            "mirrors": ["http://127.0.0.1:9/"],
            **SPLIT,
        }
    )
    dm = instantiate(cfg)
    dm.setup()
    assert (
        dm.class_names == ["rest", "3+5"] and dm.train_counts == split_counts([3200, 400], 0.2)[0]
    )


def test_train_loader_shuffles_with_seed(sample_dm: MNISTDataModule) -> None:
    first = [y for _, y in sample_dm.train_dataloader()]
    again = [y for _, y in sample_dm.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(torch.cat(first), torch.sort(torch.cat(first)).values)


def test_step_profile_on_sample(tmp_path: Path) -> None:
    dm = MNISTDataModule(
        str(tmp_path),
        source="sample",
        profile="step",
        imbalance_ratio=20,
        minority_fraction=0.3,
        **SPLIT,
    )
    dm.setup()
    pool = [400] * 7 + [20] * 3
    assert (dm.train_counts, dm.val_counts) == split_counts(pool, 0.2)


def test_explicit_profile_on_sample(tmp_path: Path) -> None:
    counts = [400, 300, 200, 100, 50, 25, 10, 5, 2, 1]
    dm = MNISTDataModule(
        str(tmp_path),
        source="sample",
        profile="explicit",
        class_counts=counts,
        val_fraction=0.1,
        **SPLIT,
    )
    dm.setup()
    assert (dm.train_counts, dm.val_counts) == split_counts(counts, 0.1)
    too_many = MNISTDataModule(
        str(tmp_path), source="sample", profile="explicit", class_counts=[450] * 10
    )
    with pytest.raises(ConfigError, match=r"class 0 asks for 450 .* only 400 are available"):
        too_many.setup()


def test_binary_profile_on_sample(tmp_path: Path) -> None:
    dm = MNISTDataModule(
        str(tmp_path),
        source="sample",
        profile="binary",
        positive_classes=[7],
        imbalance_ratio=40,
        **SPLIT,
    )
    dm.setup()
    pool = [3600, 90]  # 9 * 400 negatives, 3600 / 40 positives
    assert (dm.train_counts, dm.val_counts) == split_counts(pool, 0.2)
    assert dm.test_counts == [900, 100]  # balanced digits, relabelled
    _, y, _ = next(iter(dm.test_dataloader()))
    assert set(y.tolist()) <= {0, 1}


def test_imbalance_test(tmp_path: Path) -> None:
    dm = MNISTDataModule(str(tmp_path), source="sample", imbalance_ratio=10, imbalance_test=True)
    dm.setup()
    assert dm.test_counts == floor_min1([100 * 10.0 ** (-c / 9) for c in range(10)])


def test_sample_test_per_class_too_large(tmp_path: Path) -> None:
    dm = MNISTDataModule(str(tmp_path), source="sample", sample_test_per_class=500)
    with pytest.raises(ConfigError, match=r"^data\.sample_test_per_class=500: "):
        dm.setup()


@pytest.mark.parametrize(("n", "batch"), [(1, 4), (10, 3), (12, 4), (100, 64)])
def test_tensor_batches_follow_the_sampler_indices(n: int, batch: int) -> None:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    labels = torch.arange(n) % 3
    sampler = ShuffleSampler(n, seed=3, num_replicas=2, rank=1)
    sampler.set_epoch(5)
    loader = TensorBatches(images, labels, batch, sampler)
    batches = list(loader)
    assert len(batches) == len(loader) == math.ceil(len(sampler) / batch)
    assert [len(y) for _, y in batches[:-1]] == [batch] * (len(batches) - 1)
    expected = list(sampler)
    got = torch.cat([x[:, 0, 0, 0] for x, _ in batches]).long().tolist()
    assert got == expected
    assert torch.cat([y for _, y in batches]).tolist() == [i % 3 for i in expected]
    assert loader.sampler is sampler  # Lightning calls loader.sampler.set_epoch


def test_tensor_batches_reject_mismatched_tensors() -> None:
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        TensorBatches(torch.zeros(3, 1, 2, 2), torch.zeros(2), 2, SequentialShard(3))


@pytest.mark.parametrize("n", [1, 7, 10, 11, 100])
@pytest.mark.parametrize("world", [2, 3])
def test_sequential_shard_covers_each_index_once(n: int, world: int) -> None:
    seen = []
    for rank in range(world):
        shard = SequentialShard(n, num_replicas=world, rank=rank)
        indices = list(shard)
        assert len(shard) == len(indices)
        assert indices == sorted(indices) == shard.indices(torch.device("cpu")).tolist()
        seen += indices
    assert sorted(seen) == list(range(n))


def test_random_hflip_mirrors_about_half() -> None:
    x = torch.arange(400 * 6, dtype=torch.float32).view(400, 1, 2, 3)
    out = random_hflip(x, generator=torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert bool((flipped ^ kept).all())
    assert 150 < int(flipped.sum()) < 250


def test_hflip_only_when_enabled_and_training(tmp_path: Path) -> None:
    dm = MNISTDataModule(str(tmp_path), source="sample", augment_translate=0, augment_hflip=True)
    dm.setup()
    x, _ = next(iter(dm.train_dataloader()))
    plain = dm.transform(x, train=False)
    torch.manual_seed(0)
    out = dm.transform(x, train=True)
    for o, p in zip(out, plain, strict=True):
        assert torch.equal(o, p) or torch.equal(o, p.flip(-1))
    assert not torch.equal(out, plain)


def test_transform_normalises(sample_dm: MNISTDataModule) -> None:
    x, _, _ = next(iter(sample_dm.val_dataloader()))
    out = sample_dm.transform(x, train=False)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert sample_dm.mean is not None and sample_dm.std is not None
    expected = (x.double() / 255 - sample_dm.mean) / sample_dm.std
    torch.testing.assert_close(out, expected.float())
    assert torch.equal(out, sample_dm.transform(x, train=False))
    train_x = dataset_of(sample_dm.train_dataloader()).images
    pixels = train_x.double() / 255
    assert sample_dm.mean == pytest.approx(pixels.mean().item())
    assert sample_dm.std == pytest.approx(pixels.std(unbiased=False).item())
    standard = sample_dm.transform(train_x, train=False)
    assert standard.mean().item() == pytest.approx(0, abs=1e-4)
    assert standard.std().item() == pytest.approx(1, abs=1e-3)


def test_transform_translates_when_training(sample_dm: MNISTDataModule) -> None:
    x, _ = next(iter(sample_dm.train_dataloader()))
    torch.manual_seed(0)
    out = sample_dm.transform(x, train=True)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert not torch.equal(out, sample_dm.transform(x, train=False))
    # each image is its eval transform shifted by some (dy, dx) in [-2, 2]^2, background filled
    black = sample_dm.transform(torch.zeros(1, 1, 1, 1, dtype=torch.uint8), train=False).item()
    padded = F.pad(sample_dm.transform(x, train=False), (2, 2, 2, 2), value=black)
    for image, window in zip(out, padded, strict=True):
        assert any(
            torch.equal(image, window[:, dy : dy + 28, dx : dx + 28])
            for dy in range(5)
            for dx in range(5)
        )


def test_random_translate_shifts() -> None:
    x = torch.zeros(300, 2, 9, 9)
    x[:, :, 4, 4] = 1.0
    out = random_translate(x, 3, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out[:, 0], out[:, 1])
    positions = out[:, 0].flatten(1).argmax(1)
    dy, dx = positions // 9 - 4, positions % 9 - 4
    assert out.sum().item() == 600  # a 3-pixel shift keeps the centre pixel in frame
    assert set(dy.tolist()) == set(dx.tolist()) == set(range(-3, 4))


def test_no_translation_when_disabled(tmp_path: Path) -> None:
    dm = MNISTDataModule(str(tmp_path), source="sample", augment_translate=0)
    dm.setup()
    x, _ = next(iter(dm.train_dataloader()))
    assert torch.equal(dm.transform(x, train=True), dm.transform(x, train=False))


def test_on_after_batch_transfer_follows_trainer_state(sample_dm: MNISTDataModule) -> None:
    x, y, _ = next(iter(sample_dm.val_dataloader()))
    sample_dm.trainer = cast(Any, SimpleNamespace(training=False))
    out, labels = sample_dm.on_after_batch_transfer((x, y), 0)
    assert torch.equal(out, sample_dm.transform(x, train=False)) and labels is y
    sample_dm.trainer = cast(Any, SimpleNamespace(training=True))
    torch.manual_seed(0)
    augmented, _ = sample_dm.on_after_batch_transfer((x, y), 0)
    assert not torch.equal(augmented, out)


def test_lightning_fit_uses_datamodule(sample_dm: MNISTDataModule) -> None:
    import lightning.pytorch as pl

    class Probe(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(784, 10)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> torch.Tensor:
            x, y = batch
            assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
            return F.cross_entropy(self.layer(x.flatten(1)), y)

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> None:
            assert batch[0].dtype == torch.float32

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(
        accelerator="cpu",
        fast_dev_run=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Probe(), datamodule=sample_dm)
    assert trainer.state.finished and trainer.global_step == 2
