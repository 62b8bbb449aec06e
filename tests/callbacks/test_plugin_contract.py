"""The metric-plugin contract, checked before training: each broken rule is one line naming the
plugin's class and the fix (a ConfigError: exit code 2 in imblab-train), whether the plugin is a
Trainer callback of a ``Classifier`` or one of ``PerClassMetrics``' metrics; a good plugin's dry
run leaves no trace in its counts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import Metric

from imblab.callbacks import PerClassMetrics
from imblab.callbacks.calibration import CalibrationMetrics
from imblab.callbacks.stateful import EvalInputs, StatefulMetric
from imblab.errors import ConfigError
from imblab.models.classifier import Classifier

from ..conftest import FAST

N, C = 14, 3
HERE = f"{__name__}."


class Hits(Metric):
    """Correct predictions and samples, summed."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("hits", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, ids: Any = None) -> None:
        self.hits += (preds.argmax(dim=1) == target).sum()
        self.n += target.shape[0]

    def compute(self) -> torch.Tensor:
        return self.hits / self.n


class HitRate(StatefulMetric):
    """A plugin that keeps the contract."""

    name = "hit_rate"
    higher_is_better = True

    def make_state(self, inputs: EvalInputs) -> Metric:
        return Hits()

    def scalar_names(self, class_names: Any) -> list[str]:
        return ["hit_rate"]

    def scalars(self, value: Any, class_names: list[str]) -> dict[str, float]:
        return {"hit_rate": float(value)}


class Nameless(StatefulMetric):
    higher_is_better = True
    make_state = HitRate.make_state
    scalar_names = HitRate.scalar_names
    scalars = HitRate.scalars


class Undeclared(HitRate):
    name = "undeclared"

    def scalars(self, value: Any, class_names: list[str]) -> dict[str, float]:
        return {"hit_rate": float(value), "miss_rate": 1 - float(value)}


class NeverReturned(HitRate):
    name = "never_returned"

    def scalar_names(self, class_names: Any) -> list[str]:
        return ["hit_rate", "miss_rate"]


class HitsWithoutIds(Hits):
    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        super().update(preds, target)


class NoIds(HitRate):
    name = "no_ids"

    def make_state(self, inputs: EvalInputs) -> Metric:
        return HitsWithoutIds()


class NoSuperInit(HitRate):
    name = "no_super_init"

    def __init__(self, k: int = 1) -> None:
        self.k = k


class NoDirection(HitRate):
    name = "no_direction"
    higher_is_better = None


BROKEN: list[tuple[list[Callback], str]] = [
    (
        [HitRate(), HitRate()],
        rf"^metric plugins {HERE}HitRate and {HERE}HitRate both keep a state named 'hit_rate'; "
        "give one of them another name",
    ),
    (
        [Nameless()],
        rf"^metric plugin {HERE}Nameless: keeps a state but has no name of its own; set name = "
        "'nameless'",
    ),
    (
        [Undeclared()],
        rf"^metric plugin {HERE}Undeclared: scalars\(\) returns keys that scalar_names\(\) does "
        r"not declare: \['miss_rate'\]; add them to scalar_names\(\)",
    ),
    (
        [NeverReturned()],
        rf"^metric plugin {HERE}NeverReturned: scalar_names\(\) declares keys that scalars\(\) "
        r"does not return: \['miss_rate'\]; return them",
    ),
    (
        [NoIds()],
        rf"^metric plugin {HERE}NoIds: its state's HitsWithoutIds.update\(preds, target\) does "
        r"not take \(preds, target, ids\); define update\(self, preds, target, ids=None\)$",
    ),
    (
        [NoSuperInit()],
        rf"^metric plugin {HERE}NoSuperInit: NoSuperInit.__init__ does not call "
        r"super\(\).__init__\(\) \(of StatefulMetric\); call super\(\).__init__\(...\) in "
        "__init__ before anything else",
    ),
    (
        [NoDirection()],
        rf"^metric plugin {HERE}NoDirection: declares no direction for 'hit_rate' \(is a higher "
        r"value better\?\); set higher_is_better in the class",
    ),
]
IDS = ["duplicate", "nameless", "undeclared", "never_returned", "no_ids", "no_super_init", "dir"]


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(N, C, generator=g), torch.arange(N) % C), 4)


def validate(tmp_path: Path, *callbacks: Callback) -> Classifier:
    model = Classifier(
        backbone=nn.Identity(), optimizer=torch.optim.SGD, num_classes=C, class_names="abc"
    )
    trainer = Trainer(
        accelerator="cpu",
        callbacks=list(callbacks),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.validate(model, dataloaders=loader(), verbose=False)
    return model


@pytest.mark.parametrize(("plugins", "message"), BROKEN, ids=IDS)
def test_a_broken_plugin_fails_at_setup_naming_its_class(
    tmp_path: Path, plugins: list[Callback], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        validate(tmp_path, *plugins)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("plugins", "message"), BROKEN, ids=IDS)
def test_a_broken_plugin_fails_when_per_class_metrics_is_built(
    plugins: list[Callback], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        PerClassMetrics(C, metrics=plugins)  # type: ignore[arg-type]


def test_the_dry_run_leaves_no_trace(tmp_path: Path) -> None:
    """The contract's dry run feeds a discarded state: the registered one counts the N
    validation samples only."""
    plugin = HitRate()
    model = validate(tmp_path, plugin)
    state = model.eval_state("val", "hit_rate")
    assert int(state.n) == N
    assert int(state.hits) == int(
        (loader().dataset.tensors[0].argmax(dim=1) == torch.arange(N) % C).sum()
    )


def test_a_duplicate_plugin_name_is_exit_code_2_before_training(tmp_path: Path) -> None:
    """The review's case: a second calibration plugin beside metrics=[default,calibration]."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "imblab.train",
            *FAST,
            "metrics=[default,calibration]",
            "+metrics.second._target_=imblab.callbacks.calibration.CalibrationMetrics",
            f"paths.data_dir={tmp_path}/data",
            f"hydra.run.dir={run}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    cls = f"{CalibrationMetrics.__module__}.CalibrationMetrics"
    assert errors == [
        f"error: metric plugins {cls} and {cls} both keep a state named 'calibration'; give one "
        "of them another name (its name=... option, or name = '...' in its class)"
    ]
    assert not list(run.glob("checkpoints/*.ckpt"))
