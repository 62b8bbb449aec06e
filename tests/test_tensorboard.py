"""TensorBoard helpers: the HParams view's readable experiment keys, where a run's events go."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from imblab.runs import event_dir
from imblab.tensorboard import experiment_hparams

CFG = OmegaConf.create(
    {
        "seed": 3,
        "tags": ["a", "b"],
        "data": {"_target_": "imblab.data.mnist.MNISTDataModule", "batch_size": 32},
        "model": {
            "_target_": "imblab.models.classifier.Classifier",
            "backbone": {"_target_": "imblab.models.backbones.SmallCNN"},
            "optimizer": {"_target_": "torch.optim.AdamW", "lr": 0.01, "weight_decay": 0.1},
        },
        "loss": {"_target_": "imblab.losses.FocalLoss", "gamma": 2.0, "alpha": None},
        "sampler": {},
        "trainer": {"max_epochs": 7},
        "monitor": {"metric": "val/f1_macro"},
    }
)
DATA = {"source_used": "sample", "profile": "exponential", "imbalance_ratio": 100}


def test_experiment_keys_are_readable_and_the_five_that_differ_sort_first() -> None:
    choices = {"data": "mnist", "model": "cnn", "loss": "focal", "sampler": None}
    overrides = [
        "loss=focal",
        "model.optimizer.lr=0.01",
        "data.augment_hflip=true",
        "paths.data_dir=/x",
        "hydra.run.dir=/y",
        "callbacks.early_stopping=null",
        "+model.foo._target_=x",
    ]
    params = experiment_hparams(CFG, DATA, choices, overrides)
    assert sorted(params)[:5] == ["dataset", "loss", "lr", "sampler", "seed"]
    assert params["dataset"] == "mnist" and params["loss"] == "focal" and params["lr"] == 0.01
    assert params["sampler"] == "none" and params["seed"] == 3
    assert params["setup/loss/gamma"] == 2.0 and params["setup/loss/alpha"] == "none"
    assert params["setup/optimizer"] == "AdamW" and params["setup/backbone"] == "SmallCNN"
    assert params["setup/epochs"] == 7 and params["setup/batch_size"] == 32
    assert params["setup/data/source"] == "sample" and params["setup/tags"] == "a,b"
    assert params["user/data/augment_hflip"] == "true"
    # nothing of hydra, callbacks, paths or targets; no override shown twice
    assert not [k for k in params if "_target_" in k or "dir" in k or "callbacks" in k]
    assert "user/loss" not in params and "user/model/optimizer/lr" not in params


def test_without_hydra_choices_the_class_names_stand_in() -> None:
    params = experiment_hparams(CFG, DATA)
    assert params["loss"] == "FocalLoss" and params["dataset"] == "MNISTDataModule"


def test_event_dir_finds_run_sweep_and_old_layouts(tmp_path: Path) -> None:
    def events(folder: Path) -> Path:
        SummaryWriter(str(folder)).close()
        return folder

    run = tmp_path / "2026-01-01_00-00-00"
    run.mkdir()
    assert event_dir(run) is None
    named = events(run / "tensorboard" / run.name)
    assert event_dir(run) == named
    job = tmp_path / "sweep" / "0_seed=1"
    job.mkdir(parents=True)
    in_sweep_dir = events(tmp_path / "sweep" / "tensorboard" / "0_seed=1")
    assert event_dir(job) == in_sweep_dir
    old = tmp_path / "old"
    assert event_dir(old) is None
    assert event_dir(events(old / "tensorboard").parent) == old / "tensorboard"
