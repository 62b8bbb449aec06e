"""Figures of one stage's counts: confusion matrix, ROC and PR curves, per-class bars; and the
reliability diagram of its calibration state.

Pure drawing: each function takes counts (or arrays) and returns a matplotlib :class:`Figure`
(no pyplot state, nothing written). The TensorBoard figure callbacks
(:mod:`imblab.callbacks.figures`) and the PNG files of ``imblab-eval``
(:mod:`imblab.reports.figures`) both draw with these.

Class names of any script and length: a name longer than :data:`MAX_LABEL` terminal cells is
shortened in the middle (:func:`imblab.console.shorten`); characters matplotlib's default font
lacks (CJK, emoji, ...) are drawn with an installed font that has them (matplotlib's per-glyph
fallback over ``font.family``; found by the fonts' character maps). Characters no installed
font has show as boxes, with one warning per process instead of matplotlib's one per glyph
and figure.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec

import matplotlib as mpl
import numpy as np
import torch
from matplotlib import font_manager, ft2font
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.cells import cell_len

from imblab.canvas import fit_text
from imblab.console import shorten
from imblab.metrics.calibration import Calibration
from imblab.metrics.counts import Counts
from imblab.metrics.functional import (
    _divide,
    auroc,
    average_precision,
    curve_counts,
    per_class_prf,
    roc_curves,
    worst_classes,
)

__all__ = [
    "CARD_STYLE",
    "MAX_BARS",
    "MAX_CLASSES",
    "MAX_CURVES",
    "MAX_LABEL",
    "class_bars_figure",
    "class_history_figure",
    "confusion_matrix_figure",
    "figure_title",
    "font_fallbacks",
    "pr_figure",
    "reliability_figure",
    "roc_figure",
    "shown_classes",
]

MAX_CLASSES = 12  # a confusion matrix shows at most this many classes (the worst by F1)
MAX_BARS = 16  # a per-class bar chart shows at most this many classes (the worst by F1)
MAX_CURVES = 10  # a ROC or PR figure draws at most this many curves (the worst by area)
MAX_LABEL = 24  # terminal cells of a class name in a figure; a longer one is shortened
# Fonts for TensorBoard's image card: a figure ~500 px wide shown ~350 px wide stays legible.
CARD_STYLE: dict[str, Any] = {
    "font.size": 13,
    "axes.titlesize": 14,
    "axes.labelsize": 14,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 11,
    "figure.titlesize": 15,
    "figure.dpi": 100,
}

P = ParamSpec("P")
log = logging.getLogger(__name__)
LAST_RESORT = "Last Resort"  # the family of the font matplotlib draws missing glyphs with
_warned_missing: list[str] = []  # the characters of the one missing-glyph warning, once given


@functools.cache
def _charmap(path: str) -> frozenset[int]:
    """The code points the font file at ``path`` has glyphs for (none if it cannot be read)."""
    try:
        return frozenset(ft2font.FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


@functools.cache
def font_fallbacks(base: str, chars: frozenset[str]) -> tuple[tuple[str, ...], frozenset[str]]:
    """For the ``chars`` the font file ``base`` lacks: the families of installed scalable
    fonts that have them (greedily, the fewest that cover the most), and the characters none
    has. Control and format characters are not looked for, and matplotlib's "Last Resort"
    font (a box for every character) does not count."""
    wanted = {
        c for c in chars if unicodedata.category(c)[0] not in "CZ" and ord(c) not in _charmap(base)
    }
    families: list[str] = []
    entries = [
        e
        for e in font_manager.fontManager.ttflist
        if e.size == "scalable" and not e.name.startswith(LAST_RESORT)
    ]
    entries.sort(key=lambda e: (e.style != "normal", e.name))
    while wanted:
        best, covered = "", set[str]()
        for entry in entries:
            if entry.name in families:
                continue
            has = {c for c in wanted if ord(c) in _charmap(entry.fname)}
            if len(has) > len(covered):
                best, covered = entry.name, has
        if not covered:
            break
        families.append(best)
        wanted -= covered
    return tuple(families), frozenset(wanted)


def _labels(class_names: Sequence[str]) -> list[str]:
    """The class names as a figure shows them (:data:`MAX_LABEL`), with ``font.family``
    extended (inside the figure's rc context) by installed fonts that draw their characters;
    characters no font has: one warning per process, and matplotlib's own per-glyph warnings
    silenced from then on."""
    names = [shorten(str(n), MAX_LABEL) for n in class_names]
    base = font_manager.findfont(font_manager.FontProperties())
    families, missing = font_fallbacks(base, frozenset("".join(names)))
    if families:
        mpl.rcParams["font.family"] = [*mpl.rcParams["font.family"], *families]
    if missing and not _warned_missing:
        _warned_missing.extend(sorted(missing))
        log.warning(
            "class names have characters no installed font draws (%s): figures show them as "
            "boxes; install a font that has them (e.g. Noto Sans CJK, Noto Emoji) for the "
            "figures to use it",
            " ".join(_warned_missing[:8]),
        )
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
    return names


@contextmanager
def _card_style() -> Iterator[None]:
    with mpl.rc_context(CARD_STYLE):  # type: ignore[arg-type]  # keys are rcParams names
        yield


def _card(draw: Callable[P, Figure]) -> Callable[P, Figure]:
    """Draw with :data:`CARD_STYLE` (text properties are fixed when the text is created), on a
    canvas that holds every text (:func:`~imblab.canvas.fit_text`)."""

    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with _card_style():
            return fit_text(draw(*args, **kwargs))  # no text cut at the card's edges

    wrapper.__name__, wrapper.__doc__ = draw.__name__, draw.__doc__
    return wrapper


def figure_title(stage: str, where: str, what: str) -> str:
    """``<stage> · <where> · <what>`` (``val · epoch 12 · confusion matrix``), empty parts
    left out."""
    return " · ".join(part for part in (stage, where, what) if part)


def shown_classes(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` classes a figure shows when it cannot show all: the lowest ``scores``
    (:func:`~imblab.metrics.functional.worst_classes`), in class order."""
    return np.sort(worst_classes(scores, k))


def _title(fig: Figure, title: str, note: str = "") -> None:
    if title or note:
        fig.suptitle("\n".join(t for t in (title, note) if t))


@_card
def confusion_matrix_figure(confmat: np.ndarray, class_names: list[str], title: str = "") -> Figure:
    """Heat map of the row-normalised confusion matrix (colour: the fraction of the true class,
    i.e. recall on the diagonal) with the raw counts written in. Above :data:`MAX_CLASSES`
    classes: the rows of the worst classes by F1, their columns and one ``other`` column (the
    predictions of every other class), so each row still sums to the class's support."""
    c = len(class_names)
    labels = names = _labels(class_names)
    note = ""
    matrix = confmat.astype(np.float64)
    if c > MAX_CLASSES:
        f1 = per_class_prf(torch.as_tensor(confmat), 1.0, 0.0)[2].numpy()
        keep = shown_classes(f1, MAX_CLASSES)
        rest = np.setdiff1d(np.arange(c), keep)
        matrix = np.concatenate(
            [matrix[np.ix_(keep, keep)], matrix[np.ix_(keep, rest)].sum(axis=1, keepdims=True)],
            axis=1,
        )
        names = [labels[i] for i in keep]
        note = f"the {len(keep)} worst of {c} classes by F1"
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    n_rows, n_cols = matrix.shape
    columns = names + (["other"] if n_cols > n_rows else [])
    longest = max(cell_len(n) for n in columns)
    # the matrix keeps its room: the figure grows by the longest name (~0.1 in per cell)
    size = max(4.6, 0.3 * n_cols + 2.0) + 0.1 * max(longest - 6, 0)
    fig = Figure(figsize=(size, size * 0.95), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="fraction of true class")
    upright = n_cols > 10 or longest * n_cols > 40  # side by side they would overlap
    ax.set_xticks(np.arange(n_cols), columns, rotation=90 if upright else 0)
    ax.set_yticks(np.arange(n_rows), names)
    ax.set(xlabel="predicted class", ylabel="true class")
    fontsize = 12 if n_cols <= 6 else 11 if n_cols <= 10 else 9
    for i in range(n_rows):
        for j in range(n_cols):
            colour = "white" if normalised[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha="center",
                va="center",
                color=colour,
                fontsize=fontsize,
            )
    _title(fig, title, note)
    return fig


def _curve_subset(areas: list[float], class_names: list[str]) -> tuple[list[int], str]:
    """The classes whose curves are drawn: all up to :data:`MAX_CURVES`, else the worst by
    area, with the note saying so."""
    c = len(class_names)
    if c <= MAX_CURVES:
        return list(range(c)), ""
    keep = shown_classes(np.asarray(areas, dtype=np.float64), MAX_CURVES).tolist()
    return keep, f"the {len(keep)} worst of {c} classes"


def _legend(fig: Figure, labels: Sequence[str], what: str) -> None:
    """The curves' legend under the axes (``<class> <area>``), never over the curves: up to 3
    columns, as many as the longest label lets fit the figure's width."""
    longest = max((len(label) for label in labels), default=1)
    fig.legend(
        loc="outside lower center",
        ncols=max(1, min(len(labels), 3, 48 // (longest + 4))),
        fontsize=11,
        title=f"class and {what}",
        title_fontsize=11,
        handlelength=1.2,
        columnspacing=1.0,
        frameon=False,
    )


@_card
def roc_figure(counts: Counts, class_names: list[str], title: str = "") -> Figure:
    """One-vs-rest ROC curve of every class (:func:`~imblab.metrics.functional.roc_curves`),
    AUROC in the legend; above :data:`MAX_CURVES` classes the worst by AUROC."""
    curves = roc_curves(counts)
    areas = auroc(counts).tolist()
    names = _labels(class_names)
    keep, note = _curve_subset(areas, class_names)
    fig = Figure(figsize=(5.0, 6.0), layout="constrained")
    ax = fig.add_subplot()
    colours = mpl.colormaps["tab10" if len(keep) <= 10 else "tab20"]
    for k, i in enumerate(keep):
        fpr, tpr, _ = curves[i]
        ax.plot(
            fpr.cpu().numpy(),
            tpr.cpu().numpy(),
            color=colours(k % colours.N),
            linewidth=1.8,
            label=f"{names[i]} {areas[i]:.3f}",
        )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    _legend(fig, ax.get_legend_handles_labels()[1], "AUROC")
    _title(fig, title, note)
    return fig


@_card
def pr_figure(counts: Counts, class_names: list[str], title: str = "") -> Figure:
    """One-vs-rest precision-recall curve of every class, AP in the legend: ``precision =
    TP / (TP + FP)``, ``recall = TP / P`` at every threshold (points with no prediction left
    out); above :data:`MAX_CURVES` classes the worst by AP."""
    tp, fp, _ = curve_counts(counts)
    areas = average_precision(counts).tolist()
    names = _labels(class_names)
    keep, note = _curve_subset(areas, class_names)
    fig = Figure(figsize=(5.0, 6.0), layout="constrained")
    ax = fig.add_subplot()
    colours = mpl.colormaps["tab10" if len(keep) <= 10 else "tab20"]
    for k, c in enumerate(keep):
        tp_c, fp_c = tp[c].double(), fp[c].double()
        predicted = (tp_c + fp_c) > 0
        positives = tp_c.max()
        precision = _divide(tp_c, tp_c + fp_c, 0.0)[predicted]
        recall = _divide(tp_c, positives.expand_as(tp_c), 0.0)[predicted]
        ax.plot(
            recall.numpy(),
            precision.numpy(),
            color=colours(k % colours.N),
            linewidth=1.8,
            label=f"{names[c]} {areas[c]:.3f}",
        )
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    _legend(fig, ax.get_legend_handles_labels()[1], "AP")
    _title(fig, title, note)
    return fig


@_card
def class_bars_figure(
    counts: Counts, class_names: list[str], zero_division: float = 0.0, title: str = ""
) -> Figure:
    """Per-class precision, recall and F1 as grouped bars, the support under each class name
    (``zero_division``: the value of an undefined score); above :data:`MAX_BARS` classes
    the worst by F1."""
    precision, recall, f1, support = per_class_prf(counts.confmat, 1.0, zero_division)
    names = _labels(class_names)
    c = counts.num_classes
    keep = np.arange(c)
    note = ""
    if c > MAX_BARS:
        keep = shown_classes(f1.cpu().numpy(), MAX_BARS)
        note = f"the {len(keep)} worst of {c} classes by F1"
    x = np.arange(len(keep))
    series = (("precision", precision), ("recall", recall), ("F1", f1))
    colours = ("tab:blue", "tab:orange", "tab:green")
    long = len(keep) > 10 or max(len(names[k]) for k in keep) > 4
    if long:  # one row per class, in class order: the names stay horizontal and legible
        longest = max(cell_len(names[k]) for k in keep)
        width = 5.2 + 0.1 * max(longest - 12, 0)  # the bars keep their room beside long names
        fig = Figure(figsize=(width, 0.42 * len(keep) + 1.8), layout="constrained")
        ax = fig.add_subplot()
        for i, (label, values) in enumerate(series):
            shown = values.cpu().numpy()[keep]
            ax.barh(x + (i - 1) * 0.27, shown, height=0.27, label=label, color=colours[i])
        labels = [f"{names[k]} ({int(support[k])})" for k in keep]
        ax.set_yticks(x, labels)
        ax.invert_yaxis()
        ax.set(xlim=(0, 1.0), xlabel="score", ylabel="class (support)")
        ax.xaxis.grid(True, linewidth=0.5, alpha=0.5)
    else:
        fig = Figure(figsize=(5.2, 4.4), layout="constrained")
        ax = fig.add_subplot()
        for i, (label, values) in enumerate(series):
            shown = values.cpu().numpy()[keep]
            ax.bar(x + (i - 1) * 0.27, shown, width=0.27, label=label, color=colours[i])
        ax.set_xticks(x, [f"{names[k]}\n{int(support[k])}" for k in keep])
        ax.set(ylim=(0, 1.0), ylabel="score", xlabel="class, support")
        ax.yaxis.grid(True, linewidth=0.5, alpha=0.5)
    ax.set_axisbelow(True)
    ax.legend(ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=11, frameon=False)
    _title(fig, title, note)
    return fig


@_card
def class_history_figure(
    epochs: list[int], values: np.ndarray, class_names: list[str], metric: str, title: str = ""
) -> Figure:
    """Each class's ``metric`` (``values``: epochs x classes) over the epochs, one colour per
    class; above :data:`MAX_CURVES` classes the worst by the last epoch's value."""
    c = len(class_names)
    names = _labels(class_names)
    keep = list(range(c))
    note = ""
    if c > MAX_CURVES:
        keep = shown_classes(values[-1], MAX_CURVES).tolist()
        note = f"the {len(keep)} worst of {c} classes at the last epoch"
    fig = Figure(figsize=(5.0, 5.6), layout="constrained")
    ax = fig.add_subplot()
    colours = mpl.colormaps["tab10"]
    for k, i in enumerate(keep):
        ax.plot(
            epochs,
            values[:, i],
            color=colours(k % colours.N),
            marker="o",
            markersize=3,
            linewidth=1.8,
            label=f"{names[i]} {values[-1, i]:.2f}",
        )
    ax.set(xlabel="epoch", ylabel=metric, ylim=(0, 1.02))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    _legend(fig, ax.get_legend_handles_labels()[1], f"{metric} (last epoch)")
    _title(fig, title, note)
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
    return fit_text(fig)
