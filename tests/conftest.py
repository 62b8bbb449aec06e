"""Shared fixtures: composing the shipped Hydra configs the way `imblab-train` does."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, open_dict

# small, fast and offline: the bundled sample, a few epochs of tiny batches
FAST = [
    "data.source=sample",
    "data.mirrors=[http://127.0.0.1:9/]",
    "data.batch_size=64",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "callbacks.rich_progress_bar=null",
]

Compose = Callable[..., DictConfig]


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Compose:
    """Compose ``train.yaml`` (or another primary config) with overrides; the run dir is
    ``run_dir`` or tmp_path, data goes to tmp_path/data."""

    def _compose(
        *overrides: str, config_name: str = "train", run_dir: Path | None = None
    ) -> DictConfig:
        out = run_dir or tmp_path
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="imblab.conf", version_base="1.3"):
            cfg = compose(
                config_name=config_name,
                overrides=[f"hydra.run.dir={out}", f"paths.data_dir={tmp_path}/data", *overrides],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
            del cfg.hydra
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


def run_script(script: Path, *args: str, cwd: Path) -> None:
    """Run a test helper script (e.g. a Lightning DDP launch) in a fresh interpreter; fail with
    the tail of its stderr if it fails."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


class Recorder(Logger):
    """A logger that keeps every key it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: set[str] = set()

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.keys.update(metrics)
