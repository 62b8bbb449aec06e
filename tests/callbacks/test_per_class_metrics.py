"""``PerClassMetrics``: its signature, its default metric set equal to
``conf/metrics/default.yaml``, what it needs from the module's step output, plugin states in its
checkpoint state, float64 scalars, ``per_class_max_classes`` for plugins' per-class keys, and
the share of a padding DistributedSampler it counts."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from torchmetrics import Metric

from imblab.callbacks import PerClassMetrics
from imblab.callbacks.base import apply_class_limit
from imblab.callbacks.calibration import CalibrationMetrics
from imblab.callbacks.figures import ClassHistoryFigure
from imblab.callbacks.per_class import default_metrics
from imblab.callbacks.scalars import ClassificationScalars
from imblab.callbacks.stateful import EvalInputs, StatefulMetric
from imblab.config import instantiate_callbacks
from imblab.errors import ConfigError
from imblab.eval_states import unpadded_share
from imblab.models.classifier import Classifier

from ..conftest import Recorder

C = 4


class Logits(LightningModule):
    """A module of one's own: its inputs are logits, returned as ``preds``."""

    def __init__(self, output: str = "dict") -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.output = output

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return (batch[0] * self.scale).sum() * 0.0

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        return {"preds": x * self.scale, "target": y} if self.output == "dict" else x

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def data(n: int = 50, c: int = C) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    target = torch.arange(n) % c
    logits = torch.randn(n, c, generator=g) + 2.0 * nn.functional.one_hot(target, c)
    return DataLoader(TensorDataset(logits, target), batch_size=8)


def trainer(tmp_path: Path, *callbacks: Callback, **kwargs: Any) -> Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "default_root_dir": tmp_path,
        "num_sanity_val_steps": 0,
    }
    return Trainer(callbacks=list(callbacks), **{**options, **kwargs})


def test_the_signature_is_the_documented_one() -> None:
    assert str(inspect.signature(PerClassMetrics)) == (
        "(num_classes: 'int', class_names: 'Sequence[str] | None' = None, "
        "train_counts: 'Sequence[int] | None' = None, "
        "metrics: 'Sequence[MetricPlugin] | None' = None, input: 'str' = 'logits', "
        "ignore_index: 'int | None' = None, thresholds: 'int | None' = 200, "
        "test_thresholds: 'int | None' = None) -> 'None'"
    )


def test_the_default_metrics_are_conf_metrics_default(compose_cfg) -> None:
    """``metrics=None`` is imblab-train's default metric set: the same classes, in the same
    order, with the same options as ``conf/metrics/default.yaml`` composed with the top-level
    defaults."""
    configured = instantiate_callbacks(compose_cfg().metrics, "metrics")
    defaults = default_metrics()
    assert [type(c) for c in defaults] == [type(c) for c in configured]
    for ours, theirs in zip(defaults, configured, strict=True):
        assert vars(ours) == vars(theirs), type(ours).__name__


def test_imblab_trains_tags_figures_and_pr_curves_reach_tensorboard(tmp_path: Path) -> None:
    """With Lightning's own TensorBoardLogger, the default set writes what imblab-train's
    TensorBoard shows: the scalars (per class too), the figures and the PR curves."""
    logger = TensorBoardLogger(tmp_path, name="", version="")
    names = ["a", "b", "c", "d"]
    metrics = PerClassMetrics(C, class_names=names, train_counts=[400, 50, 9, 3])
    trainer(tmp_path, metrics, logger=logger).validate(Logits(), data(), verbose=False)
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"val/f1_macro", "val/recall/d", "val/accuracy_few", "val/auroc_macro"} <= set(
        tags["scalars"]
    )
    figures = {"val/confusion_matrix", "val/roc", "val/per_class", "val/f1_per_class_history"}
    assert figures <= set(tags["images"])
    assert {f"val/pr/{name}" for name in names} <= set(tags["tensors"])


def test_the_step_output_must_be_the_dict(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"^Logits.validation_step returned Tensor: .*'preds'"):
        trainer(tmp_path, PerClassMetrics(C)).validate(Logits("tensor"), data(), verbose=False)


def test_class_names_and_train_counts_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"^class_names=\['a', 'a'\]: not 2 distinct names"):
        PerClassMetrics(2, class_names=["a", "a"])
    with pytest.raises(ConfigError, match=r"^train_counts=\[3\]: 1 class counts for 2 classes"):
        PerClassMetrics(2, train_counts=[3])
    with pytest.raises(TypeError, match="ModelCheckpoint is not an imblab metric callback"):
        PerClassMetrics(2, metrics=[ModelCheckpoint()])  # type: ignore[list-item]


def test_plugin_states_and_callback_states_are_checkpointed(tmp_path: Path) -> None:
    """Fit two epochs with calibration and the F1 history; the callback's checkpoint state
    holds the plugin's (persistent) state, not the count state, and loads into a fresh
    callback."""
    metrics = PerClassMetrics(C, metrics=[CalibrationMetrics(), ClassHistoryFigure()])
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit = trainer(tmp_path, metrics, checkpoint, max_epochs=2, enable_checkpointing=True)
    fit.fit(Logits(), data(), data())
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]
    state = saved["PerClassMetrics"]
    assert "val.calibration.count" in state["states"]
    assert not any(".counts." in key for key in state["states"])
    assert float(state["states"]["val.calibration.count"].sum()) == 50
    assert sorted(state["metrics"]["1:ClassHistoryFigure"]["history"]) == ["0", "1"]
    fresh = PerClassMetrics(C, metrics=[CalibrationMetrics(), ClassHistoryFigure()])
    fresh.add_eval_state("calibration", lambda: CalibrationMetrics().make_state(inputs()))
    fresh.load_state_dict(state)
    assert float(fresh.eval_state("val", "calibration").count.sum()) == 50
    assert sorted(cast(ClassHistoryFigure, fresh.metrics[1]).history) == [0, 1]


def inputs() -> EvalInputs:
    return EvalInputs(C, "logits", None)


def test_scalars_are_float64_and_the_loss_stays_float32(tmp_path: Path) -> None:
    model = Classifier(
        backbone=nn.Identity(), optimizer=torch.optim.SGD, num_classes=C, class_names="abcd"
    )
    run = trainer(tmp_path, ClassificationScalars(), CalibrationMetrics())
    run.validate(model, data(), verbose=False)
    published = run.callback_metrics
    assert published["val/f1_macro"].dtype == torch.float64
    assert published["val/recall/a"].dtype == torch.float64
    assert published["val/ece"].dtype == torch.float64
    assert published["val/loss"].dtype == torch.float32


class PerClassBrier(StatefulMetric):
    """Per-class Brier terms: a plugin with a per-class key ``brier/<class>``."""

    name = "brier"
    higher_is_better = False

    def make_state(self, inputs: EvalInputs) -> Metric:
        return CalibrationMetrics().make_state(inputs)

    def scalar_names(self, class_names: Any) -> list[str]:
        return ["brier", *(f"brier/{c}" for c in class_names)]

    def scalars(self, value: Any, class_names: list[str]) -> dict[str, float]:
        return {"brier": 0.0, **{f"brier/{c}": 0.0 for c in class_names}}


@pytest.mark.parametrize("limit", [3, 10])
def test_per_class_max_classes_limits_plugins_per_class_keys(tmp_path: Path, limit: int) -> None:
    """Above ``per_class_max_classes`` a plugin's ``<metric>/<class>`` keys reach
    ``callback_metrics`` but no logger, as the built-in per-class scalars do."""
    plugin = PerClassBrier()
    apply_class_limit([plugin], limit)  # what imblab-train does with the top-level key
    recorder = Recorder()
    model = Classifier(
        backbone=nn.Identity(), optimizer=torch.optim.SGD, num_classes=C, class_names="abcd"
    )
    run = trainer(tmp_path, plugin, logger=recorder)
    run.validate(model, data(), verbose=False)
    assert {"val/brier", "val/brier/a", "val/brier/d"} <= set(run.callback_metrics)
    assert "val/brier" in recorder.keys
    assert ("val/brier/a" in recorder.keys) == (limit >= C)


def fake_trainer(loader: Any, world: int = 2) -> Any:
    return SimpleNamespace(world_size=world, val_dataloaders=loader, test_dataloaders=None)


@pytest.mark.parametrize("n", [10, 11, 13])
def test_the_padding_of_a_distributed_sampler_is_left_out(n: int) -> None:
    """Every rank's share of Lightning's padding DistributedSampler, together, is each sample
    once: the first ``share`` items of each rank's order cover 0 .. n-1 exactly."""
    world = 3
    dataset = TensorDataset(torch.arange(n))
    seen: list[int] = []
    for rank in range(world):
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True)
        share = unpadded_share(fake_trainer(DataLoader(dataset, sampler=sampler), world), "val")
        assert share is not None
        seen += list(sampler)[:share]
    assert sorted(seen) == list(range(n))


def test_loaders_that_cannot_be_counted_exactly_are_one_line_errors() -> None:
    dataset = TensorDataset(torch.arange(11))
    whole = DataLoader(dataset)  # every process would evaluate all of it
    with pytest.raises(ConfigError, match=r"^val loader: every process evaluates the whole"):
        unpadded_share(fake_trainer(whole), "val")
    drop = DistributedSampler(dataset, num_replicas=2, rank=0, drop_last=True)
    with pytest.raises(ConfigError, match=r"^val loader: DistributedSampler\(drop_last=True\)"):
        unpadded_share(fake_trainer(DataLoader(dataset, sampler=drop)), "val")
    assert unpadded_share(fake_trainer(whole, world=1), "val") is None  # one process: all
    own = DataLoader(dataset, sampler=np.arange(0, 11, 2).tolist())  # a sampler of one's own
    assert unpadded_share(fake_trainer(own), "val") is None
