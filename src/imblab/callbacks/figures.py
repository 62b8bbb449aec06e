"""Figure callbacks: confusion matrix, ROC curves and per-class bars in TensorBoard's images.

Each is a :class:`~imblab.callbacks.base.FigureMetric` (rank 0 writes ``<stage>/<name>``) that
draws with :mod:`imblab.plots`, as the PNG files of ``imblab-eval`` do, titled for the card:
``val · epoch 12 · confusion matrix`` (the 0-based epoch of the validation), ``test · epoch_012
· confusion matrix`` (the checkpoint tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Trainer
from matplotlib.figure import Figure

from imblab.callbacks.base import FigureMetric
from imblab.callbacks.contract import EvaluatedModel
from imblab.metrics.counts import Counts
from imblab.metrics.functional import per_class_prf
from imblab.plots import (
    class_bars_figure,
    class_history_figure,
    confusion_matrix_figure,
    figure_title,
    roc_figure,
)

__all__ = [
    "ClassBarsFigure",
    "ClassHistoryFigure",
    "ConfusionMatrixFigure",
    "RocFigure",
    "card_title",
]


def card_title(stage: str, trainer: Trainer, what: str) -> str:
    """The figure's title: the stage, when (``epoch N`` in validation; the tested
    checkpoint's file name in test, when there is one) and what it shows."""
    if stage == "test":
        ckpt = getattr(trainer, "ckpt_path", None)
        where = Path(ckpt).stem if ckpt else ""
    else:
        where = f"epoch {trainer.current_epoch}"
    return figure_title(stage, where, what)


class TitledFigure(FigureMetric):
    """A figure drawn with its card title (:func:`card_title`); subclasses implement
    :meth:`titled` and name what they show in ``what``."""

    what = "figure"

    def stage_figure(
        self, stage: str, counts: Counts, class_names: list[str], trainer: Trainer
    ) -> Figure:
        return self.titled(counts, class_names, card_title(stage, trainer, self.what))

    def figure(self, counts: Counts, class_names: list[str]) -> Figure:
        return self.titled(counts, class_names, self.what)

    def titled(self, counts: Counts, class_names: list[str], title: str) -> Figure:
        """The figure, titled ``title``."""
        raise NotImplementedError


class ConfusionMatrixFigure(TitledFigure):
    """Confusion matrix: colour = row-normalised (recall), text = counts; above 20 classes the
    worst by F1 (and an ``other`` column)."""

    name = "confusion_matrix"
    what = "confusion matrix"

    def titled(self, counts: Counts, class_names: list[str], title: str) -> Figure:
        return confusion_matrix_figure(counts.confmat.cpu().numpy(), class_names, title)


class RocFigure(TitledFigure):
    """One-vs-rest ROC curves, AUROC in the legend; above 10 classes the worst by AUROC."""

    name = "roc"
    what = "ROC, one vs rest"

    def titled(self, counts: Counts, class_names: list[str], title: str) -> Figure:
        return roc_figure(counts, class_names, title)


class ClassBarsFigure(TitledFigure):
    """Per-class precision, recall and F1 as grouped bars, support under each class name;
    above 20 classes the worst by F1.

    Args:
        zero_division: value of an undefined precision, recall or F (0, 1 or nan).
    """

    name = "per_class"
    what = "per class"

    def __init__(
        self,
        zero_division: float = 0.0,
        stages: Sequence[str] = ("val", "test"),
        every_n_epochs: int = 1,
    ) -> None:
        super().__init__(stages=stages, every_n_epochs=every_n_epochs)
        self.zero_division = zero_division

    def titled(self, counts: Counts, class_names: list[str], title: str) -> Figure:
        return class_bars_figure(counts, class_names, self.zero_division, title)


class ClassHistoryFigure(TitledFigure):
    """Each class's validation F1 over the epochs so far, one colour per class (TensorBoard's
    custom-scalars charts colour by run, not by tag, so their all-class overview cannot). The
    history is kept in the callback's state, so a resumed run goes on drawing it.

    Args:
        zero_division: value of an undefined F1 (0, 1 or nan).
    """

    name = "f1_per_class_history"
    what = "F1 per class over epochs"

    def __init__(
        self,
        zero_division: float = 0.0,
        stages: Sequence[str] = ("val",),
        every_n_epochs: int = 1,
    ) -> None:
        super().__init__(stages=stages, every_n_epochs=every_n_epochs)
        self.zero_division = zero_division
        self.history: dict[int, list[float]] = {}

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        model: EvaluatedModel,
    ) -> None:
        f1 = per_class_prf(counts.confmat.cpu(), 1.0, self.zero_division)[2]
        self.history[int(trainer.current_epoch)] = [float(v) for v in f1]
        super().log_counts(stage, counts, class_names, trainer, model)

    def titled(self, counts: Counts, class_names: list[str], title: str) -> Figure:
        if not self.history:  # drawn outside a run: the counts' one epoch
            f1 = per_class_prf(counts.confmat.cpu(), 1.0, self.zero_division)[2]
            epochs, values = [0], np.asarray([f1.tolist()])
        else:
            epochs = sorted(self.history)
            values = np.asarray([self.history[e] for e in epochs])
        return class_history_figure(epochs, values, class_names, "F1", title)

    def state_dict(self) -> dict[str, Any]:
        return {"history": {str(k): v for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {int(k): list(v) for k, v in state_dict.get("history", {}).items()}
