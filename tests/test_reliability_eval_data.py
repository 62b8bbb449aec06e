"""``imblab-eval`` of a checkpoint on another data group: the run's data overrides are left out,
and a checkpoint whose model does not fit the data (channels, classes) is one line naming both,
before anything is downloaded; overrides that do not compose and weights that do not fit the
model are one line too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imblab.errors import ConfigError
from imblab.pipelines.evaluation import evaluate_checkpoint, training_config

from .conftest import FAST
from .image_folder.conftest import write_folder

QUICK = ["+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2", "logger=none"]
UNREACHABLE = "data.mirrors=[{url:'http://127.0.0.1:9/cifar-10-python.tar.gz'}]"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The last checkpoint of a one-epoch MNIST run (bundled sample) written by imblab-train."""
    root = tmp_path_factory.mktemp("mnist_run")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "imblab.train",
            *FAST,
            *QUICK,
            "test=false",
            f"paths.data_dir={root}/data",
            f"hydra.run.dir={root}/run",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run" / "checkpoints" / "last.ckpt"


def eval_error(compose_cfg, checkpoint: Path, tmp_path: Path, *overrides: str) -> str:
    cfg = compose_cfg(f"ckpt_path={checkpoint}", *overrides, config_name="eval")
    with pytest.raises(ConfigError) as err:
        evaluate_checkpoint(cfg)
    message = str(err.value)
    assert "\n" not in message and message.startswith("ckpt_path=") and str(checkpoint) in message
    return message


def test_another_data_group_leaves_the_runs_data_overrides_out(
    compose_cfg, checkpoint: Path, tmp_path: Path
) -> None:
    same = training_config(compose_cfg(f"ckpt_path={checkpoint}", "data=mnist"), checkpoint)
    assert same.data.source == "sample"  # the run's data.source=sample kept
    cfg = compose_cfg(f"ckpt_path={checkpoint}", "data=cifar_lt", config_name="eval")
    other = training_config(cfg, checkpoint)
    assert other.data._target_ == "imblab.data.cifar_lt.CIFARLTDataModule"
    assert other.data.batch_size != 64  # the run's data.batch_size=64 left out too
    assert other.trainer.max_epochs == 1  # its other overrides kept


def test_an_mnist_checkpoint_on_cifar_is_one_line_before_any_download(
    compose_cfg, checkpoint: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "cifar"
    empty.mkdir()
    message = eval_error(
        compose_cfg, checkpoint, tmp_path, "data=cifar_lt", f"data.data_dir={empty}", UNREACHABLE
    )
    assert "its model takes 1-channel images and predicts 10 classes" in message
    assert "backbone.features.0.weight [32, 1, 3, 3]" in message
    assert "the data (CIFARLTDataModule) has 3-channel images" in message
    assert not any(empty.iterdir())  # nothing downloaded (the mirror would have failed)


def test_a_checkpoint_of_other_classes_is_one_line_naming_both(
    compose_cfg, checkpoint: Path, tmp_path: Path
) -> None:
    write_folder(tmp_path / "images", {"a": 12, "b": 12, "c": 12}, size=16)
    message = eval_error(
        compose_cfg,
        checkpoint,
        tmp_path,
        "data=image_folder",
        f"data.root={tmp_path / 'images'}",
        "data.grayscale=true",
        "data.image_size=16",
    )
    assert "predicts 10 classes" in message and "has 1-channel images and 3 classes" in message


def test_overrides_that_do_not_compose_with_the_run_are_one_line(
    compose_cfg, checkpoint: Path, tmp_path: Path
) -> None:
    """loss.label_smoothing is a key of the default loss (what the eval command line composes
    on), not of the run's focal loss."""
    run = tmp_path / "focal_run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*FAST, "loss=focal"]))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").symlink_to(checkpoint)
    ckpt = run / "checkpoints" / "last.ckpt"
    message = eval_error(compose_cfg, ckpt, tmp_path, "loss.label_smoothing=0.1")
    assert "do not compose (Could not override 'loss.label_smoothing'.)" in message
    assert "data=<group>" in message


def test_weights_that_do_not_fit_the_model_are_one_line(
    compose_cfg, checkpoint: Path, tmp_path: Path
) -> None:
    message = eval_error(compose_cfg, checkpoint, tmp_path, "model.backbone.width=16")
    assert "its weights do not fit the run's model (backbone.features.0.weight is " in message
    assert "[32, 1, 3, 3] in the checkpoint, [16, 1, 3, 3] in the model" in message
