"""Checkpoints are files imblab may not have written: by default they load with
``torch.load(weights_only=True)``, so one crafted to run a command is refused, by imblab-eval
and by a resumed imblab-train, and runs nothing (``eval.weights_only=false`` is the documented
exception for a checkpoint you trust)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from imblab.errors import ConfigError
from imblab.pipelines.evaluation import evaluate_checkpoint
from imblab.pipelines.training import train

from .conftest import FAST


class RunsCommand:
    """Pickles as ``os.system(command)``: what a crafted checkpoint runs when unpickled."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A Lightning-looking checkpoint whose unpickling touches ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "epoch": 0, "payload": RunsCommand(f"touch {marker}")}, path)
    return path


def test_imblab_eval_refuses_a_crafted_checkpoint_by_default(compose_cfg, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    ckpt = crafted_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", marker)
    cfg = compose_cfg(f"ckpt_path={ckpt}", config_name="eval", run_dir=tmp_path / "eval")
    assert cfg.eval.weights_only is True
    with pytest.raises(ConfigError) as err:
        evaluate_checkpoint(cfg)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"ckpt_path={ckpt}: not a readable")
    assert "eval.weights_only=false for a trusted file" in message
    assert not marker.exists()
    # the documented exception unpickles it: the payload is live
    cfg = compose_cfg(
        f"ckpt_path={ckpt}", "eval.weights_only=false", config_name="eval", run_dir=tmp_path / "e2"
    )
    with pytest.raises(ConfigError):  # its state_dict fits no model
        evaluate_checkpoint(cfg)
    assert marker.exists()


def test_a_resumed_run_refuses_a_crafted_last_checkpoint(compose_cfg, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    crafted_checkpoint(tmp_path / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(ConfigError) as err:
        train(compose_cfg(*FAST, "logger=none", "test=false"))
    message = str(err.value)
    assert "\n" not in message and message.startswith("ckpt_path=")
    assert (
        f"refused by torch.load(weights_only=True): it names {os.system.__module__}.system;"
        in message
    )
    assert "delete it to start the run afresh" in message
    assert not marker.exists()
