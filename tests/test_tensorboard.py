"""TensorBoard helpers: the HParams view's readable experiment keys, where a run's events go
and the name a sweep job's run has there."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict
from torch.utils.tensorboard import SummaryWriter

from imblab.runs import event_dir, read_status, update_status, write_status
from imblab.tensorboard import (
    TensorBoardLogger,
    experiment_hparams,
    record_run,
    sweep_run_name,
)

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


def test_a_sweep_job_is_named_by_its_number_and_swept_values_only() -> None:
    overrides = ["data.source=sample", "seed=1", "trainer.max_epochs=4", "+loss=ce"]
    assert sweep_run_name(0, overrides, "loss,seed") == "0_loss=ce,seed=1"  # swept order
    assert sweep_run_name(7, overrides, "") == "7"  # nothing swept: the number tells it apart
    assert sweep_run_name(2, ["data.dir=/a/b"], "data.dir") == "2_data.dir=_a_b"  # one folder
    long = [f"tags=[{'x' * 300}]", "seed=1"]
    other = [f"tags=[{'x' * 299}y]", "seed=1"]
    a, b = sweep_run_name(3, long, "tags,seed"), sweep_run_name(3, other, "tags,seed")
    assert len(a) == 200 and a.startswith("3_tags=[xxx") and a != b  # cut, with a hash


def test_the_logger_of_a_sweep_job_writes_to_its_swept_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped logger config, resolved in a multirun job: the sweep's tensorboard/ folder,
    the run named by the job number and the swept keys (from the sweep's environment)."""
    monkeypatch.setenv("IMBLAB_SWEPT_KEYS", "loss,seed")
    overrides = ["loss=ce", "seed=1", "data.source=sample", "trainer.max_epochs=4"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="imblab.conf", version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.mode = "MULTIRUN"
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
        job = tmp_path / "sweep" / "0_loss=ce,seed=1,data.source=sample,trainer.max_epochs=4"
        with open_dict(cfg):
            cfg.paths.output_dir = str(job)
        resolved = OmegaConf.to_container(cfg.logger.tensorboard, resolve=True)
    finally:
        GlobalHydra.instance().clear()
    assert isinstance(resolved, dict)
    assert resolved["_target_"] == "imblab.tensorboard.TensorBoardLogger"
    assert resolved["version"] == "0_loss=ce,seed=1"
    assert Path(resolved["save_dir"]) / resolved["name"] == tmp_path / "sweep" / "tensorboard"


def test_event_dir_follows_the_status_record(tmp_path: Path) -> None:
    job = tmp_path / "sweep" / "0_loss=ce,seed=1,trainer.max_epochs=4"
    write_status(job, {"status": "completed"})
    named = tmp_path / "sweep" / "tensorboard" / "0_loss=ce,seed=1"
    SummaryWriter(str(named)).close()
    assert event_dir(job) is None  # not under the job dir's name
    update_status(job, tensorboard={"logdir": "../tensorboard", "run": "0_loss=ce,seed=1"})
    assert event_dir(job) == named
    # a record that points nowhere falls back to the layouts before it
    update_status(job, tensorboard={"logdir": "../tensorboard", "run": "gone"})
    assert event_dir(job) is None


def test_record_run_writes_where_the_tensorboard_run_is(tmp_path: Path) -> None:
    job = tmp_path / "sweep" / "3_seed=2,lr=0.1"
    write_status(job, {"status": "running", "started": "t0"})
    logger = TensorBoardLogger(str(tmp_path / "sweep"), name="tensorboard", version="3_seed=2")
    trainer = SimpleNamespace(loggers=[logger], is_global_zero=True)
    record_run(trainer, job)  # type: ignore[arg-type]
    assert read_status(job)["tensorboard"] == {"logdir": "../tensorboard", "run": "3_seed=2"}  # type: ignore[index]
    # the job's final record keeps it (a field the pipeline adds while the run runs)
    write_status(job, {"status": "completed", "started": "t0"})
    assert read_status(job)["tensorboard"]["run"] == "3_seed=2"  # type: ignore[index]
