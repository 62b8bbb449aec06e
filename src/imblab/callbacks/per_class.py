"""imblab's streaming per-class metrics for any LightningModule: :class:`PerClassMetrics`.

The module returns ``{"preds": scores, "target": y}`` (optionally ``"ids"``) from its
``validation_step`` / ``test_step``; the callback keeps the count state and the metric plugins'
states itself (:class:`~imblab.eval_states.EvalStates`, the mechanism
:class:`~imblab.models.classifier.Classifier` uses), stands in for the module as the
:class:`~imblab.callbacks.contract.StatefulModel` its metric callbacks read, and publishes what
they publish in ``imblab-train``: the same tags, figures and PR curves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torchmetrics import Metric

from imblab.callbacks.base import MetricCallback
from imblab.callbacks.contract import EvalInputs
from imblab.callbacks.figures import (
    ClassBarsFigure,
    ClassHistoryFigure,
    ConfusionMatrixFigure,
    RocFigure,
)
from imblab.callbacks.pr_curves import PRCurves
from imblab.callbacks.scalars import BinaryScores, ClassificationScalars
from imblab.callbacks.stateful import StatefulMetric, check_metric_plugins
from imblab.errors import ConfigError
from imblab.eval_states import EvalStates, unpadded_share
from imblab.metrics.bootstrap import BootstrapCounts
from imblab.metrics.counts import CountState

__all__ = ["PerClassMetrics", "default_metrics"]

MetricPlugin = MetricCallback | StatefulMetric
"""A callback :class:`PerClassMetrics` runs: a count-derived metric or a plugin with a state."""


def default_metrics() -> list[MetricPlugin]:
    """imblab-train's default metric callbacks (``conf/metrics/default.yaml`` with the top-level
    defaults ``figures_every_n_epochs: 1``, ``per_class_max_classes: 100``), in its order."""
    return [
        ClassificationScalars(),
        ConfusionMatrixFigure(),
        RocFigure(),
        PRCurves(),
        ClassBarsFigure(),
        BinaryScores(),
        ClassHistoryFigure(),
    ]


class PerClassMetrics(Callback):
    """Gives any LightningModule imblab's streaming metrics: add it to the Trainer's callbacks
    and return ``{"preds": scores (B, C), "target": y (B,)}`` (optionally ``"ids"`` (B,)) from
    ``validation_step`` and ``test_step``.

    It owns one count state per stage and the states of the stateful plugins of ``metrics``
    (:class:`~imblab.eval_states.EvalStates`): on the module's device, reset at the start of
    each validation/test epoch, updated from each batch's returned dict, summed across
    processes, and saved in the callback's checkpoint state where a plugin's state is
    persistent (the count state is not: it is reset every epoch). At the end of each epoch the
    callbacks of ``metrics`` publish ``<stage>/<key>`` scalars on every rank
    (``trainer.callback_metrics``: monitorable by checkpointing and early stopping, float64) and
    to every Lightning logger; figures and PR curves go to the first ``TensorBoardLogger``.

    Under DDP each sample is counted once: the padding that Lightning's ``DistributedSampler``
    adds is left out (:func:`~imblab.eval_states.unpadded_share`); a loader that every process
    iterates whole is a one-line error saying what to set.

    Args:
        num_classes: C.
        class_names: one name per class (tags ``<stage>/<metric>/<name>``); default "0" .. "C-1".
        train_counts: training samples per class (the many/medium/few-shot group scores);
            default unknown (no group scores).
        metrics: the metric callbacks to run (count-derived ones and plugins with a state, as in
            ``imblab-train``'s ``metrics`` group); None: imblab-train's default set
            (:func:`default_metrics`).
        input: ``"logits"`` (softmaxed for probabilities) or ``"probs"``.
        ignore_index: a target value left out of every metric (None: none).
        thresholds: the validation count state's score grid (None: exact, keeps every score).
        test_thresholds: the test count state's (None: exact AUROC and AP on the test set).
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        train_counts: Sequence[int] | None = None,
        metrics: Sequence[MetricPlugin] | None = None,
        input: str = "logits",
        ignore_index: int | None = None,
        thresholds: int | None = 200,
        test_thresholds: int | None = None,
    ) -> None:
        names = [str(c) for c in range(num_classes)] if class_names is None else class_names
        self.class_names = [str(name) for name in names]
        if len(self.class_names) != num_classes or len(set(self.class_names)) != num_classes:
            raise ConfigError(
                f"class_names={self.class_names!r}: not {num_classes} distinct names; give one "
                "name per class"
            )
        self.train_counts = [] if train_counts is None else [int(n) for n in train_counts]
        if self.train_counts and len(self.train_counts) != num_classes:
            raise ConfigError(
                f"train_counts={self.train_counts!r}: {len(self.train_counts)} class counts for "
                f"{num_classes} classes; give one training count per class"
            )
        self.metrics: list[MetricPlugin] = default_metrics() if metrics is None else list(metrics)
        for metric in self.metrics:
            if not isinstance(metric, MetricCallback | StatefulMetric):
                raise TypeError(
                    f"metrics: {type(metric).__name__} is not an imblab metric callback; give "
                    "MetricCallback or StatefulMetric instances (imblab.callbacks), and add other "
                    "callbacks to the Trainer"
                )
        check_metric_plugins(
            self.metrics, EvalInputs(num_classes, input, ignore_index), self.class_names
        )
        self.states = EvalStates(
            num_classes,
            counts={
                "input": input,
                "ignore_index": ignore_index,
                "thresholds": thresholds,
                "test_thresholds": test_thresholds,
            },
        )

    # ---- the model contract its metric callbacks read (StatefulModel) -------------------

    def count_state(self, stage: str) -> CountState:
        """The count state of ``stage`` ("val" or "test")."""
        return self.states.count_state(stage)

    def bootstrap_state(self, stage: str) -> BootstrapCounts | None:
        """None: no bootstrap here (``imblab-eval`` computes intervals for imblab's runs)."""
        return self.states.bootstrap_state(stage)

    def add_eval_state(self, name: str, factory: Callable[[], Metric]) -> None:
        """Register a plugin's state ``name`` (one ``factory()`` per stage)."""
        self.states.add_eval_state(name, factory)

    def eval_state(self, stage: str, name: str) -> Metric:
        """The state ``name`` of ``stage``."""
        return self.states.eval_state(stage, name)

    # ---- Lightning hooks ----------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for metric in self.metrics:
            metric.attach(self)  # the plugin contract (a dry run), then the plugin's state
        self.states.to(pl_module.device)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("val", trainer, pl_module)

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("test", trainer, pl_module)

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._update("val", pl_module, outputs)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._update("test", pl_module, outputs)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end("val", trainer)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end("test", trainer)

    def state_dict(self) -> dict[str, Any]:
        """The plugins' persistent states and the metric callbacks' own (e.g. the F1 history)."""
        return {
            "states": self.states.state_dict(),
            "metrics": {self._key(i): m.state_dict() for i, m in enumerate(self.metrics)},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; plugin states either side lacks are tolerated."""
        self.states.load_state_dict(state_dict.get("states", {}))
        saved = state_dict.get("metrics", {})
        for i, metric in enumerate(self.metrics):
            if self._key(i) in saved:
                metric.load_state_dict(saved[self._key(i)])

    # ---- internals ----------------------------------------------------------------------

    def _key(self, index: int) -> str:
        return f"{index}:{type(self.metrics[index]).__qualname__}"

    def _start(self, stage: str, trainer: Trainer, pl_module: LightningModule) -> None:
        self.states.to(pl_module.device)
        self.states.start_epoch(stage, unpadded_share(trainer, stage))

    def _update(self, stage: str, pl_module: LightningModule, outputs: Any) -> None:
        hook = f"{type(pl_module).__name__}.{'validation' if stage == 'val' else 'test'}_step"
        if not isinstance(outputs, Mapping) or not {"preds", "target"} <= set(outputs):
            shown = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise TypeError(
                f"{hook} returned {shown}: PerClassMetrics reads a dict with 'preds' (B, C) "
                "scores and 'target' (B,) class indices (optionally 'ids' (B,)); return them"
            )
        preds: torch.Tensor = outputs["preds"].detach()
        target: torch.Tensor = outputs["target"].detach()
        ids = outputs.get("ids")
        keep = self.states.take(stage, int(target.shape[0]))
        if keep < target.shape[0]:  # the padding of Lightning's DistributedSampler
            preds, target = preds[:keep], target[:keep]
            ids = None if ids is None else ids[:keep]
        self.states.update(stage, preds, target, None if ids is None else ids.detach())

    def _end(self, stage: str, trainer: Trainer) -> None:
        self.states.end_epoch(stage)  # every rank: the sum is collective
        for metric in self.metrics:
            metric.epoch_end(stage, trainer, self)
