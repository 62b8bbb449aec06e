"""The CIFAR-LT presets ``experiment=cifar{10,100}_lt_<remedy>``: each composes to the papers'
recipe, builds on a generated archive with ``trainer.max_epochs=1`` (warm-up, milestones and
DRW past the end only warn) and takes a training step; every one trains an epoch (slow)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from imblab.data.cifar_lt import CIFARLTDataModule
from imblab.pipelines.training import build_datamodule, build_model, train
from tests.data.cifar_archive import write_extracted

CONF = Path(__file__).resolve().parents[1] / "conf" / "experiment"
REMEDIES = ("ce", "focal", "cb_focal", "weighted_ce", "ce_drw", "ldam_drw", "balanced_softmax")
PRESETS = [f"cifar{n}_lt_{r}" for n in (10, 100) for r in REMEDIES]
LOSSES = {
    "ce": "CrossEntropy",
    "focal": "FocalLoss",
    "cb_focal": "ClassBalancedFocal",
    "weighted_ce": "WeightedCrossEntropy",
    "ce_drw": "WeightedCrossEntropy",
    "ldam_drw": "LDAM",
    "balanced_softmax": "BalancedSoftmax",
}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Extracted CIFAR-10 and CIFAR-100 archives (30 training images a class) in one dir."""
    root = tmp_path_factory.mktemp("cifar")
    write_extracted(root, "cifar10")
    write_extracted(root, "cifar100", train_per_class=30, test_per_class=2)
    return root


def overrides(preset: str, data_dir: Path) -> list[str]:
    return [
        f"experiment={preset}",
        f"data.data_dir={data_dir}",
        "data.verify_checksums=false",  # generated files: not the official md5s
        "data.val_per_class=5",  # 30 training images a class
        "data.eval_batch_size=256",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "callbacks.rich_progress_bar=null",
        "logger=none",
    ]


def test_the_presets_are_every_remedy_for_both_datasets() -> None:
    shipped = {p.stem for p in CONF.glob("cifar*_lt_*.yaml")}
    assert shipped == set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_to_the_papers_recipe(compose_cfg, preset: str) -> None:
    cfg = compose_cfg(f"experiment={preset}")
    remedy = preset.split("_lt_")[1]
    assert cfg.data.name == preset.split("_")[0]
    assert cfg.data.profile == "exponential" and cfg.data.imbalance_ratio == 100
    assert cfg.data.batch_size == 128 and cfg.trainer.max_epochs == 200
    assert cfg.data.augment_pad == 4 and cfg.data.augment_hflip
    opt, sched = cfg.model.optimizer, cfg.model.scheduler
    assert opt._target_ == "torch.optim.SGD"
    assert (opt.lr, opt.momentum, opt.weight_decay) == (0.1, 0.9, 2e-4)
    assert sched.warmup_epochs == 5
    assert list(sched.milestones) == [160, 180] and list(sched.factors) == [0.01, 0.0001]
    assert cfg.model.backbone._target_ == "imblab.models.resnet_cifar.ResNetCIFAR"
    assert cfg.model.backbone.blocks == 5
    head = "cosine" if remedy == "ldam_drw" else "linear"
    assert cfg.model.head == cfg.model.backbone.head == head
    assert cfg.loss._target_ == f"imblab.losses.{LOSSES[remedy]}"
    assert cfg.loss.get("drw_epoch") == (160 if remedy in ("ce_drw", "ldam_drw") else None)
    if remedy == "cb_focal":  # BagofTricks-LT's configs: 0.9999 on CIFAR-10, 0.9 on CIFAR-100
        assert cfg.loss.form == "sigmoid" and cfg.loss.gamma == 1.0
        assert cfg.loss.beta == (0.9999 if cfg.data.name == "cifar10" else 0.9)
    assert (cfg.data.subset_seed, cfg.data.val_source) == (0, "remainder")
    assert cfg.data.val_per_class == (50 if cfg.data.name == "cifar10" else 20)
    assert cfg.callbacks.early_stopping is None
    assert not cfg.sampler


@pytest.mark.parametrize("path", sorted(CONF.glob("cifar1*_lt*.yaml")), ids=lambda p: p.stem)
def test_every_value_of_a_preset_names_its_source(path: Path) -> None:
    """Each value a preset sets (a leaf ``key: value``; not the defaults list, not the tags)
    sits under a comment: its source (the official code and commit, a config, or "imblab's")."""
    commented = False
    for line in path.read_text().splitlines()[2:]:
        text = line.strip()
        if text.startswith("#"):
            commented = True
        elif text.startswith(("- ", "tags:")) or text.endswith(":"):  # a list item, a section
            commented = False
        else:
            assert commented, f"{path.name}: {text!r} has no comment naming its source"


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_builds_with_one_epoch_and_takes_a_step(
    compose_cfg, archives: Path, preset: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose_cfg(*overrides(preset, archives), "data.batch_size=16")
    with caplog.at_level(logging.WARNING):
        dm = build_datamodule(cfg)
        model = build_model(cfg, dm)
        optimizers = model.configure_optimizers()
    assert isinstance(dm, CIFARLTDataModule)
    assert "past the last epoch" in caplog.text  # the warm-up and milestones: a warning only
    if preset.endswith("_drw"):
        assert "loss.drw_epoch=160 is past the last epoch" in caplog.text
    num_classes = 10 if preset.startswith("cifar10_") else 100
    assert dm.num_classes == num_classes and len(dm.train_counts) == num_classes
    if preset.endswith("cb_focal"):  # the sigmoid form's bias initialisation
        bias = model.backbone.head.bias.detach()
        torch.testing.assert_close(bias, torch.full_like(bias, -math.log(num_classes - 1)))
    x, y = next(iter(dm.train_dataloader()))
    x = dm.transform(x, train=True)
    optimizer = optimizers["optimizer"]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 5)  # warm-up epoch 0
    model.loss.set_epoch(0)
    loss = model.loss(model(x), y)
    loss.backward()
    optimizer.step()
    assert math.isfinite(loss.item())


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains_one_epoch(compose_cfg, archives: Path, preset: str) -> None:
    metrics = train(compose_cfg(*overrides(preset, archives)))
    assert "test/balanced_accuracy" in metrics
