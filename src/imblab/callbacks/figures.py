"""Figure callbacks: confusion matrix, ROC curves and per-class bars in TensorBoard's images.

Each is a :class:`~imblab.callbacks.base.FigureMetric` (rank 0 writes ``<stage>/<name>``) that
draws with :mod:`imblab.plots`, as the PNG files of ``imblab-eval`` do.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from imblab.callbacks.base import FigureMetric
from imblab.metrics.counts import Counts
from imblab.plots import class_bars_figure, confusion_matrix_figure, roc_figure

__all__ = ["ClassBarsFigure", "ConfusionMatrixFigure", "RocFigure"]


class ConfusionMatrixFigure(FigureMetric):
    """Confusion matrix: colour = row-normalised (recall), text = counts (up to 20 classes)."""

    name = "confusion_matrix"

    def figure(self, counts: Counts, class_names: list[str]) -> Figure:
        return confusion_matrix_figure(counts.confmat.cpu().numpy(), class_names)


class RocFigure(FigureMetric):
    """One-vs-rest ROC curves of all classes, AUROC in the legend."""

    name = "roc"

    def figure(self, counts: Counts, class_names: list[str]) -> Figure:
        return roc_figure(counts, class_names)


class ClassBarsFigure(FigureMetric):
    """Per-class precision, recall and F1 as grouped bars, support under each class name.

    Args:
        zero_division: value of an undefined precision, recall or F (0, 1 or nan).
    """

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
        return class_bars_figure(counts, class_names, self.zero_division)
