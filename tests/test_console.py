"""The end-of-run summary: what it shows, 80 columns when piped, the worst classes above
``per_class_max_classes``, the TensorBoard command last; and the progress bar's monitor."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import precision_recall_fscore_support

from imblab.console import Checkpoint, ProgressBar, RunSummary, evaluation_summary, print_summary
from imblab.metrics.counts import CountState
from imblab.metrics.functional import summarize

COMMAND = "tensorboard --logdir /runs/2026-01-01_00-00-00/tensorboard"


def rendered(summary: RunSummary) -> str:
    out = io.StringIO()  # not a terminal: rich draws 80 columns wide
    print_summary(summary, file=out)
    return out.getvalue()


def scores_of(y_true: np.ndarray, y_pred: np.ndarray, c: int, names: list[str], stage: str):
    """The summarize() keys of a stage for these predictions."""
    state = CountState(c, thresholds=None)
    state.update(
        torch.nn.functional.one_hot(torch.as_tensor(y_pred), c).float(), torch.as_tensor(y_true)
    )
    return {f"{stage}/{k}": v for k, v in summarize(state.compute(), class_names=names).items()}


def summary_of(
    y_true: np.ndarray, y_pred: np.ndarray, names: list[str], counts: list[int], **kwargs
) -> RunSummary:
    c = len(names)
    return RunSummary(
        run_dir="/runs/2026-01-01_00-00-00",
        class_names=names,
        train_counts=counts,
        scores=scores_of(y_true, y_pred, c, names, "test"),
        stages={"test": "test · best checkpoint"},
        monitor="val/f1_macro",
        checkpoints={
            "best": Checkpoint("/runs/x/checkpoints/epoch_004.ckpt", 4, 0.6234),
            "last": Checkpoint("/runs/x/checkpoints/last.ckpt", 9, 0.5981),
        },
        command=COMMAND,
        **kwargs,
    )


def row(text: str, name: str) -> list[str]:
    (line,) = [x for x in text.splitlines() if x.split() and x.split()[0] == name]
    return line.split()


def test_summary_shows_each_class_against_sklearn_and_ends_with_the_command() -> None:
    rng = np.random.default_rng(0)
    names = ["cat", "dog", "eel"]
    counts = [500, 50, 5]  # many (> 100), medium (20..100), few (< 20): Liu et al. 2019
    y_true = rng.integers(0, 3, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 3, 300))
    text = rendered(summary_of(y_true, y_pred, names, counts))
    lines = text.rstrip("\n").splitlines()
    assert lines[-1] == COMMAND  # the very last line
    assert "run dir: /runs/2026-01-01_00-00-00" in text
    assert (
        "best checkpoint: /runs/x/checkpoints/epoch_004.ckpt (epoch 4, val/f1_macro 0.623)" in text
    )
    assert "last checkpoint: /runs/x/checkpoints/last.ckpt (epoch 9, val/f1_macro 0.598)" in text
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2], zero_division=0)
    for i, (name, group) in enumerate(zip(names, ("many", "medium", "few"), strict=True)):
        assert row(text, name) == [
            name,
            str(counts[i]),
            group,
            f"{p[i]:.3f}",
            f"{r[i]:.3f}",
            f"{f[i]:.3f}",
            str(s[i]),
        ]
    assert row(text, "macro-F1")[-1] == f"{f.mean():.3f}"
    assert row(text, "balanced")[-1] == f"{r.mean():.3f}"  # balanced accuracy = mean recall


@settings(max_examples=15, deadline=None)
@given(
    c=st.integers(2, 30),
    name_len=st.integers(1, 40),
    seed=st.integers(0, 1000),
)
def test_summary_tables_fit_80_columns_when_piped(c: int, name_len: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = [f"{i}" + "x" * name_len for i in range(c)]
    counts = [int(n) for n in rng.integers(1, 100_000, c)]
    y_true = rng.integers(0, c, 200)
    y_pred = rng.integers(0, c, 200)
    text = rendered(summary_of(y_true, y_pred, names, counts))
    table_lines = [
        x for x in text.splitlines() if not x.startswith(("run dir", "best", "last", "tensorboard"))
    ]
    assert max(len(x) for x in table_lines) <= 80


def test_above_max_classes_the_worst_classes_by_f1() -> None:
    c = 150
    names = [f"c{i}" for i in range(c)]
    y_true = np.repeat(np.arange(c), 10)
    y_pred = y_true.copy()
    wrong = {7: 10, 42: 8, 99: 5}  # these classes lose this many of their 10 samples to class 0
    for cls, n in wrong.items():
        y_pred[np.flatnonzero(y_true == cls)[:n]] = 0
    text = rendered(summary_of(y_true, y_pred, names, [100] * c, max_classes=100))
    assert "the 20 worst of 150 classes by F1" in text
    shown = [x.split()[0] for x in text.splitlines() if re.match(r"\s*c\d+ ", x)]
    assert len(shown) == 20
    _, _, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=range(c), zero_division=0)
    worst = set(np.argsort(f, kind="stable")[:20].tolist())
    assert {int(n[1:]) for n in shown} == worst
    assert {7, 42, 99, 0} <= worst


def test_progress_bar_shows_the_monitor() -> None:
    bar = ProgressBar(monitor="val/f1_macro")

    class FakeTrainer:
        def __init__(self) -> None:
            self.callback_metrics = {
                "val/f1_macro": torch.tensor(0.625),
                "val/f1/0": torch.tensor(0.1),
            }
            self.progress_bar_metrics = {"train/loss_step": 0.5}
            self.loggers: list = []

    items = bar.get_metrics(FakeTrainer(), None)  # type: ignore[arg-type]
    assert items["val/f1_macro"] == pytest.approx(0.625)
    assert items["train/loss_step"] == 0.5 and "val/f1/0" not in items


def test_evaluation_summary_names_the_checkpoint_and_its_split(tmp_path) -> None:
    rng = np.random.default_rng(1)
    names = ["a", "b"]
    y_true = rng.integers(0, 2, 50)
    y_pred = rng.integers(0, 2, 50)
    scores = {
        k.removeprefix("val/"): v for k, v in scores_of(y_true, y_pred, 2, names, "val").items()
    }
    summary = evaluation_summary(
        scores, "val", names, [200, 10], "/r/checkpoints/epoch_007.ckpt", tmp_path, tensorboard=True
    )
    text = rendered(summary)
    assert "evaluated checkpoint: /r/checkpoints/epoch_007.ckpt (epoch 7)" in text
    assert "val · epoch_007.ckpt" in text
    _, r, _, _ = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1], zero_division=0)
    assert row(text, "b")[:3] == ["b", "10", "few"] and row(text, "b")[4] == f"{r[1]:.3f}"
    assert (
        text.rstrip("\n").splitlines()[-1]
        == f"tensorboard --logdir {tmp_path.resolve() / 'tensorboard'}"
    )
