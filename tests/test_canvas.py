"""No figure imblab writes cuts its own text: every drawn text artist's window extent (from the
renderer) lies inside the figure's bbox, for the compare bar chart with long tag names and many
configurations, and for every figure of the TensorBoard callbacks and of `imblab-eval` (whose
PNG files draw the same functions, imblab.reports.figures)."""

from __future__ import annotations

import random
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text

from imblab.canvas import drawn_texts, fit_text, texts_outside
from imblab.compare import FIGURE_TAGS, comparison_figure
from imblab.metrics.calibration import CalibrationState
from imblab.metrics.counts import CountState
from imblab.plots import (
    class_bars_figure,
    class_history_figure,
    confusion_matrix_figure,
    pr_figure,
    reliability_figure,
    roc_figure,
)
from imblab.runs import Run

LONG_TAGS = [f"test/a_rather_long_metric_name_{i}_of_the_per_class_family" for i in range(8)]
LONG_TITLE = "val · epoch 12 · a title long enough to be wider than any card imblab draws"


def sweep_runs(
    n_configs: int, tags: list[str], keys: tuple[str, ...], seeds: int = 2, low: float = 0.0
) -> list[Run]:
    """Completed runs, ``seeds`` per configuration, with a value in [low, 1) of every tag."""
    rnd = random.Random(0)
    runs = []
    for c in range(n_configs):
        for seed in range(seeds):
            overrides = {key: f"{1e-3 * (c + 1):g}" for key in keys} | {"seed": str(seed)}
            run = Run(Path(f"/sweep/{c}_{seed}"), f"{c * seeds + seed}_x", overrides, "completed")
            run.history["val/f1_macro"] = {0: 0.2, 1: rnd.random()}
            for tag in tags:
                if tag.startswith("test/"):
                    run.final[tag] = rnd.uniform(low, 1.0)
                else:
                    run.history[tag] = {0: rnd.uniform(low, 1.0), 1: rnd.uniform(low, 1.0)}
            runs.append(run)
    return runs


def test_texts_outside_finds_a_cut_text_and_fit_text_grows_the_figure_to_hold_it() -> None:
    fig = Figure(figsize=(3, 2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title("a title far wider than this small figure of three inches")
    before = texts_outside(fig)
    assert len(before) == 1 and "a title far wider" in before[0]
    fit_text(fig)
    assert texts_outside(fig) == []
    assert fig.get_size_inches()[0] > 3 and fig.get_size_inches()[1] == pytest.approx(2)


def test_drawn_texts_leave_out_what_is_not_drawn() -> None:
    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot()
    ax.set_xlim(0, 1)
    hidden = ax.text(5.0, 0.5, "off the axes but invisible", visible=False)
    drawn = [text for text, _ in drawn_texts(fig)]
    assert hidden not in drawn and all(isinstance(t, Text) and t.get_text() for t in drawn)
    assert {"0.0", "1.0"} <= {t.get_text() for t in drawn}


@pytest.mark.parametrize(
    ("n_configs", "tags", "keys", "low"),
    [
        (12, LONG_TAGS, ("loss", "model.optimizer.lr"), 0.0),  # the largest the docs promise
        (1, LONG_TAGS[:1], ("model.optimizer.lr",), 0.0),  # one bar: the legend sets the width
        (2, list(FIGURE_TAGS), ("loss",), 0.0),  # the default tags
        (12, ["val/f1_macro"], ("a_long_swept_key_name.with_a_path",), 0.0),
        (3, ["test/mcc", "test/f1_macro"], ("loss",), -0.9),  # negative MCCs
    ],
)
def test_compare_figure_keeps_every_text_on_its_canvas(
    n_configs: int, tags: list[str], keys: tuple[str, ...], low: float
) -> None:
    runs = sweep_runs(n_configs, tags, keys, low=low)
    fig = comparison_figure(runs, tags, 3, ["seed"])
    assert texts_outside(fig) == []
    texts = {t.get_text() for t, _ in drawn_texts(fig)}
    names = [t if t.startswith("test/") else f"{t} (best epoch)" for t in tags]
    assert set(names) <= texts  # every legend entry is drawn, whole
    # the configuration labels do not run into one another
    ax = fig.axes[0]
    boxes = sorted(
        (t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()), key=lambda b: b.x0
    )
    assert len(boxes) == n_configs
    assert all(a.x1 <= b.x0 for a, b in pairwise(boxes))
    # the values written above the bars, and every bar, stay inside the axes
    box = ax.get_window_extent()
    values = [t for t in ax.texts if t.get_text()]
    assert len(values) == n_configs * len(tags)
    assert all(box.y0 - 0.5 <= t.get_window_extent().y0 <= box.y1 + 0.5 for t in values)
    assert all(t.get_window_extent().y1 <= box.y1 + 0.5 for t in values)
    bars = [p.get_window_extent() for p in ax.patches]
    assert all(b.y0 >= box.y0 - 0.5 and b.y1 <= box.y1 + 0.5 for b in bars)


def counts_and_calibration(c: int) -> tuple[object, object]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(c).repeat_interleave(15)
    logits = torch.randn(len(y), c, generator=g)
    logits[torch.arange(len(y)), y] += 2.0
    state = CountState(c, thresholds=32)
    state.update(logits, y)
    calibration = CalibrationState(c, n_bins=10)
    calibration.update(logits, y)
    return state.compute(), calibration.compute()


NAMES = {
    "short": ["a", "b", "c", "d"],
    "long": [f"a long class name, number {i}, of a scraped dataset" for i in range(6)],
    "many": [f"class_{i:03d}_of_many" for i in range(40)],
}


@pytest.mark.parametrize("kind", sorted(NAMES))
def test_every_figure_of_the_callbacks_and_reports_keeps_its_text(kind: str) -> None:
    names = NAMES[kind]
    counts, calibration = counts_and_calibration(len(names))
    history = np.linspace(0.2, 0.9, 3 * len(names)).reshape(3, len(names))
    figures = {
        "confusion": confusion_matrix_figure(counts.confmat.numpy(), names, LONG_TITLE),
        "roc": roc_figure(counts, names, LONG_TITLE),
        "pr": pr_figure(counts, names, LONG_TITLE),
        "bars": class_bars_figure(counts, names, title=LONG_TITLE),
        "history": class_history_figure([0, 1, 2], history, names, "F1", LONG_TITLE),
        "reliability": reliability_figure(calibration, LONG_TITLE),
    }
    for name, fig in figures.items():
        assert texts_outside(fig) == [], name
