"""Lightning callbacks that turn the shared per-stage count state into logged metrics.

Every callback reads ``pl_module.counts[stage]`` (a :class:`~imblab.metrics.counts.CountState`,
updated once per batch by the model) at the end of each validation and test epoch. The state's
``compute()`` sums the counts across processes once and caches the result, so attaching more
callbacks adds no count updates and no extra synchronisation. Scalars are published on every
rank (identical values, so the monitor works everywhere) with :func:`publish_scalars`; figures
are written by rank 0 only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from imblab.metrics.counts import Counts, CountState
from imblab.metrics.functional import (
    auroc,
    binary_scores,
    per_class_prf,
    pr_curve_counts,
    roc_curves,
    summarize,
)


def class_names_of(pl_module: LightningModule, num_classes: int) -> list[str]:
    """The module's ``class_names`` attribute, or "0", "1", ... when it has none."""
    names = getattr(pl_module, "class_names", None)
    return [str(n) for n in names] if names else [str(c) for c in range(num_classes)]


def count_state(pl_module: LightningModule, stage: str) -> CountState:
    """``pl_module.counts[stage]``, the stage's shared count state."""
    counts = getattr(pl_module, "counts", None)
    if not isinstance(counts, nn.ModuleDict) or stage not in counts:
        raise AttributeError(
            f"{type(pl_module).__name__} has no counts['{stage}']: imblab's metric callbacks read "
            "an nn.ModuleDict of CountState per stage (see imblab.models.classifier.Classifier)"
        )
    return cast(CountState, counts[stage])


def tensorboard_writer(trainer: Trainer) -> SummaryWriter | None:
    """The SummaryWriter of the trainer's first TensorBoard logger, if any."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def rank_zero_writer(trainer: Trainer) -> SummaryWriter | None:
    """The TensorBoard writer on rank 0 (figures and curves are written once), else None."""
    return tensorboard_writer(trainer) if trainer.is_global_zero else None


def publish_scalars(trainer: Trainer, values: dict[str, float]) -> None:
    """Do for epoch-level ``values`` what ``LightningModule.log`` does, at a fraction of its
    cost: put them into ``trainer.callback_metrics`` (read by checkpointing, early stopping and
    ``metrics.json``) on every rank, and hand them to every logger on rank 0 at
    ``trainer.global_step``. Only for values that are already identical on every process.

    ``self.log`` costs ~0.6 ms per key in Lightning 2.6 (a torchmetrics object and a deep copy
    per key): ~60 ms for the ~100 scalars of :func:`summarize`, four times a whole GPU
    validation epoch over 10,000 MNIST images.
    """
    trainer.callback_metrics.update({k: torch.tensor(v) for k, v in values.items()})
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)


class MetricCallback(Callback):
    """Base class: hands each stage's summed counts to :meth:`log_counts` at epoch end.

    Args:
        stages: the stages to report ("val", "test").
        every_n_epochs: report validation every N epochs (test is always reported).
    """

    def __init__(self, stages: Sequence[str] = ("val", "test"), every_n_epochs: int = 1) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs}: must be >= 1")
        self.stages = tuple(stages)
        self.every_n_epochs = every_n_epochs

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._report("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report("test", trainer, pl_module)

    def _report(self, stage: str, trainer: Trainer, pl_module: LightningModule) -> None:
        if stage not in self.stages:
            return
        counts = count_state(pl_module, stage).compute()
        names = class_names_of(pl_module, counts.num_classes)
        self.log_counts(stage, counts, names, trainer, pl_module)

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        pl_module: LightningModule,
    ) -> None:
        """Log what this callback derives from ``counts``."""
        raise NotImplementedError


class ScalarMetric(MetricCallback):
    """Base class for scalar metrics: :meth:`scalars` values are logged as ``<stage>/<name>``.

    The values are identical on every process (they come from summed counts), so they are logged
    without further reduction and can be monitored by checkpointing and early stopping.
    """

    def scalars(self, counts: Counts, class_names: list[str]) -> dict[str, float]:
        """Named values derived from the counts."""
        raise NotImplementedError

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        pl_module: LightningModule,
    ) -> None:
        values = self.scalars(counts, class_names)
        publish_scalars(trainer, {f"{stage}/{k}": float(v) for k, v in values.items()})


class ClassificationScalars(ScalarMetric):
    """Precision, recall and F-beta (per class, macro, micro, weighted), accuracy, balanced
    accuracy, AUROC and AP (per class, macro, weighted): the keys of :func:`summarize`.

    Args:
        betas: the F-beta scores to log (``f0.5_*``, ``f1_*``, ``f2_*``).
        zero_division: value of an undefined precision, recall or F (0, 1 or nan).
        per_class: also log ``<stage>/<metric>/<class_name>`` for every class.
    """

    def __init__(
        self,
        betas: Sequence[float] = (0.5, 1.0, 2.0),
        zero_division: float = 0.0,
        per_class: bool = True,
        stages: Sequence[str] = ("val", "test"),
    ) -> None:
        super().__init__(stages=stages)
        self.betas = tuple(float(b) for b in betas)
        self.zero_division = float(zero_division)
        self.per_class = per_class

    def scalars(self, counts: Counts, class_names: list[str]) -> dict[str, float]:
        values = summarize(
            counts, betas=self.betas, zero_division=self.zero_division, class_names=class_names
        )
        if not self.per_class:
            values = {k: v for k, v in values.items() if "/" not in k}
        return values


class BinaryScores(ScalarMetric):
    """Two-class tasks: precision, recall and F-beta of the positive class (index 1) when its
    probability is >= the count state's ``binary_threshold``; logged as ``binary/<name>``.
    Does nothing for more than two classes (so it can stay in the default metric set).
    """

    def __init__(
        self,
        betas: Sequence[float] = (0.5, 1.0, 2.0),
        zero_division: float = 0.0,
        stages: Sequence[str] = ("val", "test"),
    ) -> None:
        super().__init__(stages=stages)
        self.betas = tuple(float(b) for b in betas)
        self.zero_division = float(zero_division)
        self.threshold = 0.5

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        pl_module: LightningModule,
    ) -> None:
        if counts.num_classes != 2:
            return
        self.threshold = float(count_state(pl_module, stage).binary_threshold)
        super().log_counts(stage, counts, class_names, trainer, pl_module)

    def scalars(self, counts: Counts, class_names: list[str]) -> dict[str, float]:
        return binary_scalars(counts, self.threshold, self.betas, self.zero_division)


def binary_scalars(
    counts: Counts,
    threshold: float,
    betas: Sequence[float],
    zero_division: float,
    prefix: str = "binary",
) -> dict[str, float]:
    """``<prefix>/threshold`` and, for each beta, ``<prefix>/{precision,recall,f<beta>}`` of the
    positive class at ``threshold`` (:func:`~imblab.metrics.functional.binary_scores`)."""
    values: dict[str, float] = {f"{prefix}/threshold": threshold}
    for beta in betas:
        scores = binary_scores(counts, threshold, beta, zero_division)
        values.update({f"{prefix}/{k}": v for k, v in scores.items()})
    return values


class FigureMetric(MetricCallback):
    """Base class for figures: rank 0 writes :meth:`figure` to TensorBoard as ``<stage>/<name>``."""

    name = "figure"

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        pl_module: LightningModule,
    ) -> None:
        writer = rank_zero_writer(trainer)
        if writer is None:
            return
        fig = self.figure(counts, class_names)
        writer.add_figure(f"{stage}/{self.name}", fig, global_step=trainer.global_step, close=False)

    def figure(self, counts: Counts, class_names: list[str]) -> Figure:
        """The figure to log."""
        raise NotImplementedError


class ConfusionMatrixFigure(FigureMetric):
    """Confusion matrix: colour = row-normalised (recall), text = counts (up to 20 classes)."""

    name = "confusion_matrix"

    def figure(self, counts: Counts, class_names: list[str]) -> Figure:
        return confusion_matrix_figure(counts.confmat.cpu().numpy(), class_names)


class RocFigure(FigureMetric):
    """One-vs-rest ROC curves of all classes, AUROC in the legend."""

    name = "roc"

    def figure(self, counts: Counts, class_names: list[str]) -> Figure:
        curves = roc_curves(counts)
        areas = auroc(counts).tolist()
        fig = Figure(figsize=(6, 5))
        ax = fig.add_subplot()
        for name, (fpr, tpr, _), area in zip(class_names, curves, areas, strict=True):
            ax.plot(fpr.cpu().numpy(), tpr.cpu().numpy(), label=f"{name} (AUC {area:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize="small", loc="lower right")
        fig.tight_layout()
        return fig


class ClassBarsFigure(FigureMetric):
    """Per-class precision, recall and F1 as grouped bars, support under each class name."""

    name = "per_class"

    def __init__(
        self,
        zero_division: float = 0.0,
        stages: Sequence[str] = ("val", "test"),
        every_n_epochs: int = 1,
    ) -> None:
        super().__init__(stages=stages, every_n_epochs=every_n_epochs)
        self.zero_division = zero_division

    def figure(self, counts: Counts, class_names: list[str]) -> Figure:
        precision, recall, f1, support = per_class_prf(counts.confmat, 1.0, self.zero_division)
        x = np.arange(counts.num_classes)
        fig = Figure(figsize=(max(6.0, 0.9 * counts.num_classes), 4))
        ax = fig.add_subplot()
        for i, (label, values) in enumerate(
            (("precision", precision), ("recall", recall), ("F1", f1))
        ):
            ax.bar(x + (i - 1) * 0.27, values.cpu().numpy(), width=0.27, label=label)
        labels = [f"{n}\nn={int(s)}" for n, s in zip(class_names, support, strict=True)]
        ax.set_xticks(x, labels, fontsize="small")
        ax.set(ylim=(0, 1.0), ylabel="score")
        ax.legend(fontsize="small", ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
        fig.tight_layout()
        return fig


class PRCurves(MetricCallback):
    """Per-class precision-recall curves in TensorBoard's PR-curve plugin, from raw counts
    (``<stage>/pr/<class_name>``); written by rank 0."""

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        pl_module: LightningModule,
    ) -> None:
        writer = rank_zero_writer(trainer)
        if writer is None:
            return
        for name, raw in zip(class_names, pr_curve_counts(counts), strict=True):
            writer.add_pr_curve_raw(
                f"{stage}/pr/{name}", **_pr_raw_arrays(raw), global_step=trainer.global_step
            )


def _pr_raw_arrays(raw: dict[str, Any]) -> dict[str, Any]:
    """Map the counts of :func:`pr_curve_counts` to ``SummaryWriter.add_pr_curve_raw`` arguments."""
    return {
        "true_positive_counts": np.asarray(raw["tp"]),
        "false_positive_counts": np.asarray(raw["fp"]),
        "true_negative_counts": np.asarray(raw["tn"]),
        "false_negative_counts": np.asarray(raw["fn"]),
        "precision": np.asarray(raw["precision"]),
        "recall": np.asarray(raw["recall"]),
        "num_thresholds": len(raw["tp"]),
    }


def confusion_matrix_figure(confmat: np.ndarray, class_names: list[str]) -> Figure:
    """Heat map of the row-normalised confusion matrix with the raw counts written in."""
    rows = confmat.sum(axis=1, keepdims=True)
    normalised = np.divide(confmat, rows, out=np.zeros(confmat.shape), where=rows > 0)
    c = len(class_names)
    size = max(4.0, 0.5 * c + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    im = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ticks = np.arange(c)
    ax.set_xticks(ticks, class_names, rotation=45 if c > 10 else 0)
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted", ylabel="true")
    if c <= 20:
        for i in range(c):
            for j in range(c):
                colour = "white" if normalised[i, j] > 0.5 else "black"
                ax.text(
                    j,
                    i,
                    str(int(confmat[i, j])),
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize="x-small",
                )
    fig.tight_layout()
    return fig
