"""Figures made for TensorBoard's card: titles naming stage, epoch and content, labelled axes,
class names, and the worst classes (by scikit-learn's F1) when there are many."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix, f1_score
from torch.utils.tensorboard.summary import pr_curve_raw

from imblab.callbacks.figures import ClassBarsFigure, ConfusionMatrixFigure, RocFigure, card_title
from imblab.callbacks.pr_curves import pr_curve_summary
from imblab.metrics.counts import CountState
from imblab.metrics.functional import pr_curve_counts
from imblab.plots import (
    MAX_BARS,
    MAX_CLASSES,
    MAX_CURVES,
    class_bars_figure,
    confusion_matrix_figure,
    pr_figure,
    roc_figure,
)


def predictions(c: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Labels, argmax predictions and logits whose accuracy falls from class 0 to class c-1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(c).repeat_interleave(n)
    logits = torch.randn(len(y), c, generator=g)
    logits[torch.arange(len(y)), y] += torch.linspace(3.0, 0.1, c)[y]
    return y.numpy(), logits.argmax(1).numpy(), logits


def counts_of(logits: torch.Tensor, y: np.ndarray, c: int):
    state = CountState(c, thresholds=None)
    state.update(logits, torch.as_tensor(y))
    return state.compute()


def title(fig: Figure) -> str:
    return fig._suptitle.get_text() if fig._suptitle is not None else ""  # type: ignore[attr-defined]


def test_titles_and_axes_of_every_figure() -> None:
    y, _, logits = predictions(4, 30)
    counts = counts_of(logits, y, 4)
    names = ["ant", "bee", "cat", "dog"]
    cases = [
        (
            confusion_matrix_figure(
                counts.confmat.numpy(), names, "val · epoch 3 · confusion matrix"
            ),
            ("predicted class", "true class"),
        ),
        (
            roc_figure(counts, names, "val · epoch 3 · ROC"),
            ("false positive rate", "true positive rate"),
        ),
        (pr_figure(counts, names, "test · epoch_003 · PR"), ("recall", "precision")),
        (
            class_bars_figure(counts, names, title="val · epoch 3 · per class"),
            ("class, support", "score"),
        ),
    ]
    for fig, (xlabel, ylabel) in cases:
        ax = fig.axes[0]
        assert ax.get_xlabel() == xlabel and ax.get_ylabel() == ylabel
        assert title(fig).startswith(("val · epoch 3 · ", "test · epoch_003 · "))
    cm_ticks = [t.get_text() for t in cases[0][0].axes[0].get_yticklabels()]
    assert cm_ticks == names


def test_confusion_matrix_of_many_classes_keeps_the_worst_by_f1_and_their_support() -> None:
    c = 40
    y, pred, logits = predictions(c, 25)
    counts = counts_of(logits, y, c)
    names = [f"k{i}" for i in range(c)]
    fig = confusion_matrix_figure(counts.confmat.numpy(), names, "val · epoch 1 · confusion matrix")
    f1 = f1_score(y, pred, labels=range(c), average=None, zero_division=0)
    worst = sorted(np.argsort(f1, kind="stable")[:MAX_CLASSES].tolist())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [names[i] for i in worst]
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "other"
    assert f"the {MAX_CLASSES} worst of {c} classes by F1" in title(fig)
    # the written counts of each row (its classes + other) sum to the class's support
    reference = confusion_matrix(y, pred, labels=range(c))
    n_cols = MAX_CLASSES + 1
    cells = [int(t.get_text()) for t in ax.texts]
    for r, cls in enumerate(worst):
        assert sum(cells[r * n_cols : (r + 1) * n_cols]) == reference[cls].sum()
        assert cells[r * n_cols + r] == reference[cls, cls]


def test_curves_and_bars_of_many_classes_are_limited() -> None:
    c = 30
    y, _, logits = predictions(c, 20)
    counts = counts_of(logits, y, c)
    names = [f"k{i}" for i in range(c)]
    assert len(roc_figure(counts, names).axes[0].lines) == MAX_CURVES + 1  # + the diagonal
    assert len(pr_figure(counts, names).axes[0].lines) == MAX_CURVES
    bars = class_bars_figure(counts, names).axes[0]
    assert len(bars.get_yticklabels()) == MAX_BARS  # horizontal: one row per class


@pytest.mark.parametrize(
    ("stage", "epoch", "ckpt", "expected"),
    [
        ("val", 12, None, "val · epoch 12 · confusion matrix"),
        ("test", 30, "/r/checkpoints/epoch_012.ckpt", "test · epoch_012 · confusion matrix"),
        ("test", 30, None, "test · confusion matrix"),
    ],
)
def test_card_title_names_stage_epoch_and_content(stage, epoch, ckpt, expected) -> None:
    trainer = SimpleNamespace(current_epoch=epoch, ckpt_path=ckpt)
    assert card_title(stage, trainer, ConfusionMatrixFigure.what) == expected  # type: ignore[arg-type]


def test_callback_figures_are_titled() -> None:
    y, _, logits = predictions(3, 10)
    counts = counts_of(logits, y, 3)
    for callback in (ConfusionMatrixFigure(), RocFigure(), ClassBarsFigure()):
        assert title(callback.figure(counts, ["a", "b", "c"])) == callback.what


def test_pr_curve_summary_is_torchs_with_labelled_axes() -> None:
    y, _, logits = predictions(3, 20)
    counts = counts_of(logits, y, 3)
    for name, raw in zip("abc", pr_curve_counts(counts), strict=True):
        ours = pr_curve_summary(f"val/pr/{name}", raw).value[0]
        arrays = [np.asarray(raw[k]) for k in ("tp", "fp", "tn", "fn", "precision", "recall")]
        reference = pr_curve_raw(f"val/pr/{name}", *arrays, num_thresholds=len(raw["tp"])).value[0]
        assert ours.tensor == reference.tensor and ours.tag == reference.tag
        assert ours.metadata.plugin_data == reference.metadata.plugin_data
        assert ours.metadata.display_name == f"val/pr/{name} · precision (y) against recall (x)"
        positives = int((y == "abc".index(name)).sum())
        assert f"({positives} positives)" in ours.metadata.summary_description
