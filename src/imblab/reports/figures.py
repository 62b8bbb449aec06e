"""The report's figures as PNG files: confusion matrix, ROC and PR curves, per-class bars."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from imblab.metrics.callbacks import ClassBarsFigure, ConfusionMatrixFigure, RocFigure
from imblab.metrics.counts import Counts
from imblab.metrics.functional import _divide, average_precision, curve_counts


def pr_figure(counts: Counts, class_names: list[str]) -> Figure:
    """One-vs-rest precision-recall curve of every class, AP in the legend: ``precision =
    TP / (TP + FP)``, ``recall = TP / P`` at every threshold (points with no prediction left
    out)."""
    tp, fp, _ = curve_counts(counts)
    areas = average_precision(counts).tolist()
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    for c, (name, area) in enumerate(zip(class_names, areas, strict=True)):
        tp_c, fp_c = tp[c].double(), fp[c].double()
        predicted = (tp_c + fp_c) > 0
        positives = tp_c.max()
        precision = _divide(tp_c, tp_c + fp_c, 0.0)[predicted]
        recall = _divide(tp_c, positives.expand_as(tp_c), 0.0)[predicted]
        ax.plot(recall.numpy(), precision.numpy(), label=f"{name} (AP {area:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize="small", loc="lower left")
    fig.tight_layout()
    return fig


def write_figures(out_dir: Path, counts: Counts, class_names: list[str]) -> list[Path]:
    """``confusion_matrix.png``, ``roc.png``, ``pr.png`` and ``per_class.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "confusion_matrix": ConfusionMatrixFigure().figure(counts, class_names),
        "roc": RocFigure().figure(counts, class_names),
        "pr": pr_figure(counts, class_names),
        "per_class": ClassBarsFigure().figure(counts, class_names),
    }
    paths = []
    for name, fig in figures.items():
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths
