"""Figures of one stage's counts: confusion matrix, ROC and PR curves, per-class bars; and the
reliability diagram of its calibration state.

Pure drawing: each function takes counts (or arrays) and returns a matplotlib :class:`Figure`
(no pyplot state, nothing written). The TensorBoard figure callbacks
(:mod:`imblab.callbacks.figures`) and the PNG files of ``imblab-eval``
(:mod:`imblab.reports.figures`) both draw with these.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from imblab.metrics.calibration import Calibration
from imblab.metrics.counts import Counts
from imblab.metrics.functional import (
    _divide,
    auroc,
    average_precision,
    curve_counts,
    per_class_prf,
    roc_curves,
)

__all__ = [
    "class_bars_figure",
    "confusion_matrix_figure",
    "pr_figure",
    "reliability_figure",
    "roc_figure",
]


def confusion_matrix_figure(confmat: np.ndarray, class_names: list[str]) -> Figure:
    """Heat map of the row-normalised confusion matrix (colour: the fraction of the true class,
    i.e. recall on the diagonal) with the raw counts written in (up to 20 classes)."""
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


def roc_figure(counts: Counts, class_names: list[str]) -> Figure:
    """One-vs-rest ROC curve of every class (:func:`~imblab.metrics.functional.roc_curves`),
    AUROC in the legend."""
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


def class_bars_figure(counts: Counts, class_names: list[str], zero_division: float = 0.0) -> Figure:
    """Per-class precision, recall and F1 as grouped bars, the support under each class name
    (``zero_division``: the value of an undefined score)."""
    precision, recall, f1, support = per_class_prf(counts.confmat, 1.0, zero_division)
    x = np.arange(counts.num_classes)
    fig = Figure(figsize=(max(6.0, 0.9 * counts.num_classes), 4))
    ax = fig.add_subplot()
    for i, (label, values) in enumerate((("precision", precision), ("recall", recall), ("F1", f1))):
        ax.bar(x + (i - 1) * 0.27, values.cpu().numpy(), width=0.27, label=label)
    labels = [f"{n}\nn={int(s)}" for n, s in zip(class_names, support, strict=True)]
    ax.set_xticks(x, labels, fontsize="small")
    ax.set(ylim=(0, 1.0), ylabel="score")
    ax.legend(fontsize="small", ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    return fig


def reliability_figure(calibration: Calibration, title: str = "") -> Figure:
    """Reliability diagram: above, the accuracy of each confidence bin (bars) against the
    diagonal, the gap to the bin's mean confidence shaded; below, the fraction of samples per
    bin. Large fonts: readable at ~350 px wide."""
    m = calibration.n_bins
    edges = np.linspace(0.0, 1.0, m + 1)
    left, width = edges[:-1], 1.0 / m
    accuracy = np.nan_to_num(calibration.bin_accuracy().numpy())
    confidence = calibration.bin_confidence().numpy()
    filled = ~np.isnan(confidence)
    total = max(calibration.total, 1.0)
    fig = Figure(figsize=(5, 6.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1.2))
    top.bar(
        left, accuracy, width, align="edge", color="tab:blue", edgecolor="black", label="accuracy"
    )
    gap_lo = np.minimum(accuracy, np.nan_to_num(confidence))[filled]
    gap_hi = np.maximum(accuracy, np.nan_to_num(confidence))[filled]
    top.bar(
        left[filled],
        gap_hi - gap_lo,
        width,
        bottom=gap_lo,
        align="edge",
        color="tab:red",
        alpha=0.35,
        edgecolor="tab:red",
        hatch="//",
        label="gap",
    )
    top.plot([0, 1], [0, 1], "k--", linewidth=1.5, label="perfect")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy", fontsize=15)
    top.tick_params(labelsize=13)
    top.legend(fontsize=12, loc="upper left")
    top.text(
        0.97,
        0.04,
        f"ECE {calibration.ece():.3f}",
        ha="right",
        va="bottom",
        fontsize=15,
        transform=top.transAxes,
        bbox={"facecolor": "white", "alpha": 0.8},
    )
    bottom.bar(
        left,
        calibration.count.numpy() / total,
        width,
        align="edge",
        color="gray",
        edgecolor="black",
    )
    bottom.set_xlabel("confidence", fontsize=15)
    bottom.set_ylabel("samples", fontsize=15)
    bottom.tick_params(labelsize=13)
    fig.suptitle(f"Reliability{', ' + title if title else ''}", fontsize=16)
    return fig
