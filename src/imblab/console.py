"""What a run prints for a person: the progress bar with the monitor, and the end-of-run summary.

The summary (:func:`print_summary`) is the last thing ``imblab-train`` and ``imblab-eval`` print
on rank 0: the run dir, the checkpoints, one row per class of each evaluated stage (training
count, many/medium/few group, precision, recall, F1, support), the averaged metrics and, as the
very last line, the ``tensorboard --logdir`` command. Scores are fractions with 3 decimals;
undefined ones print as ``-``. Piped to a file, rich draws it 80 columns wide.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from imblab.data.summary import DataSummary
from imblab.metrics.groups import shot_groups
from imblab.tensorboard import logdir_command

__all__ = [
    "Checkpoint",
    "ProgressBar",
    "RunSummary",
    "evaluation_summary",
    "print_summary",
    "summary_renderable",
    "training_summary",
]

# the averaged metrics the summary shows, in this order, with their labels
AVERAGES = (
    ("f1_macro", "macro-F1"),
    ("balanced_accuracy", "balanced accuracy"),
    ("auroc_macro", "AUROC (macro)"),
    ("accuracy", "accuracy"),
    ("accuracy_many", "accuracy, many-shot"),
    ("accuracy_medium", "accuracy, medium-shot"),
    ("accuracy_few", "accuracy, few-shot"),
)
WORST = 20  # classes shown per stage above per_class_max_classes

# Known upstream noise, filtered where it is raised and nowhere else: Lightning's
# utilities/_pytree.py still uses torch's deprecated LeafSpec (a FutureWarning per use site).
warnings.filterwarnings(
    "ignore",
    message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    category=FutureWarning,
    module=r"lightning\.pytorch\.utilities\._pytree",
)


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, showing the monitored metric (``monitor``, e.g.
    ``val/f1_macro``: published by the metric callbacks, not through ``self.log``) next to the
    training and validation loss."""

    def __init__(self, monitor: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.monitor = monitor

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the logger's version: the run dir's name, not a number
        value = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        if value is not None and value.numel() == 1:
            items[str(self.monitor)] = float(value)
        return items


@dataclass
class Checkpoint:
    """A checkpoint the summary names: its path, epoch (0-based) and the monitor's value."""

    path: str
    epoch: int | None = None
    value: float | None = None


@dataclass
class RunSummary:
    """What the end-of-run summary shows.

    ``scores`` maps ``<stage>/<metric>`` (and ``<stage>/<metric>/<class>``, the keys of
    :func:`~imblab.metrics.functional.summarize`) to values; ``stages`` are the stages shown,
    each with the title of its row block (e.g. ``{"test": "test, best checkpoint"}``).
    ``train_counts`` (in the order of ``class_names``) give the training count and the shot
    group of each class (:func:`~imblab.metrics.groups.shot_groups` with ``many_above`` and
    ``few_below``)."""

    run_dir: str
    class_names: Sequence[str]
    train_counts: Sequence[int]
    scores: Mapping[str, float]
    stages: Mapping[str, str]
    monitor: str = ""
    checkpoints: Mapping[str, Checkpoint] = field(default_factory=dict)
    command: str | None = None
    max_classes: int = 100
    many_above: int = 100
    few_below: int = 20


def _fraction(value: float | None) -> str:
    """A score as a fraction with 3 decimals; ``-`` when undefined."""
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _count(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else str(int(value))


def _class_table(summary: RunSummary, stage: str, title: str) -> Table:
    """One row per class of ``stage`` (the :data:`WORST` classes by F1 above
    ``max_classes``)."""
    names = list(summary.class_names)
    counts = list(summary.train_counts)
    groups = (
        shot_groups(counts, summary.many_above, summary.few_below)
        if len(counts) == len(names)
        else [""] * len(names)
    )
    scores = summary.scores

    def get(metric: str, name: str) -> float | None:
        return scores.get(f"{stage}/{metric}/{name}")

    order = list(range(len(names)))
    if len(names) > summary.max_classes:
        order.sort(key=lambda i: _sort_key(get("f1", names[i])))
        order = order[:WORST]
        title += f" · the {len(order)} worst of {len(names)} classes by F1"
    table = Table(title=title, title_justify="left", title_style="bold", box=None, padding=(0, 1))
    table.add_column("class", max_width=18, overflow="ellipsis", no_wrap=True)
    table.add_column("train n", justify="right")
    table.add_column("group")
    for label in ("precision", "recall", "F1", "support"):
        table.add_column(label, justify="right")
    for i in order:
        name = names[i]
        train = str(counts[i]) if i < len(counts) else "-"
        table.add_row(
            name,
            train,
            groups[i],
            _fraction(get("precision", name)),
            _fraction(get("recall", name)),
            _fraction(get("f1", name)),
            _count(get("support", name)),
        )
    return table


def _sort_key(value: float | None) -> float:
    """Worst first: undefined F1 before every defined one."""
    return -math.inf if value is None or not math.isfinite(value) else value


def _average_table(summary: RunSummary) -> Table:
    """The averaged metrics, one column per stage."""
    table = Table(box=None, padding=(0, 1), title_justify="left")
    table.add_column("averaged")
    stages = list(summary.stages)
    for stage in stages:
        table.add_column(stage, justify="right")
    for key, label in AVERAGES:
        values = [summary.scores.get(f"{stage}/{key}") for stage in stages]
        if all(v is None for v in values):
            continue
        table.add_row(label, *(_fraction(v) for v in values))
    return table


def _checkpoint_lines(summary: RunSummary) -> list[str]:
    lines = []
    for label, ckpt in summary.checkpoints.items():
        parts = [f"{label} checkpoint: {ckpt.path}"]
        details = []
        if ckpt.epoch is not None:
            details.append(f"epoch {ckpt.epoch}")
        if ckpt.value is not None and summary.monitor:
            details.append(f"{summary.monitor} {_fraction(ckpt.value)}")
        if details:
            parts.append(f"({', '.join(details)})")
        lines.append(" ".join(parts))
    return lines


def summary_renderable(summary: RunSummary) -> Group:
    """The per-class tables of each stage and the averaged metrics, as one rich renderable."""
    parts: list[Any] = []
    for stage, title in summary.stages.items():
        parts += [_class_table(summary, stage, title), Text("")]
    parts.append(_average_table(summary))
    return Group(*parts)


def print_summary(summary: RunSummary, file: IO[str] | None = None) -> None:
    """Print the summary with rich: the run dir and checkpoints, the tables (80 columns wide
    when ``file`` is not a terminal), then the TensorBoard command as the last line. Paths and
    the command are never wrapped, so they can be copied."""
    console = Console(file=file, highlight=False)
    console.print()
    console.rule("summary", style="bold")
    for line in [f"run dir: {summary.run_dir}", *_checkpoint_lines(summary)]:
        console.print(line, soft_wrap=True, markup=False)
    console.print()
    console.print(summary_renderable(summary))
    if summary.command:
        console.print()
        console.print(summary.command, soft_wrap=True, markup=False)


def checkpoint_epoch(path: str) -> int | None:
    """The epoch in a checkpoint file name written as ``epoch_NNN.ckpt``, else None."""
    match = re.search(r"epoch_(\d+)", Path(path).name)
    return int(match.group(1)) if match else None


def training_summary(
    trainer: Trainer,
    scores: Mapping[str, float],
    monitor: str,
    data: DataSummary,
    run_dir: Path,
    max_classes: int = 100,
    command: str | None = None,
) -> RunSummary:
    """The summary of a finished ``imblab-train`` run: the best checkpoint (by the monitor) and
    ``last.ckpt`` of the trainer's checkpoint callbacks, test (of the best checkpoint) and
    validation (of the last epoch) per class."""
    checkpoints: dict[str, Checkpoint] = {}
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint) or not callback.best_model_path:
            continue
        path = callback.best_model_path
        if callback.monitor and "best" not in checkpoints:
            score = callback.best_model_score
            value = None if score is None else float(score)
            checkpoints["best"] = Checkpoint(path, checkpoint_epoch(path), value)
        elif not callback.monitor and "last" not in checkpoints:
            last_epoch = max(trainer.current_epoch - 1, 0)
            checkpoints["last"] = Checkpoint(path, last_epoch, scores.get(monitor))
    # the shot-group thresholds of the scalar callback that logs the group scores, if any
    shots = next(
        (
            (int(c.many_above), int(c.few_below))
            for c in trainer.callbacks  # type: ignore[attr-defined]
            if hasattr(c, "many_above") and hasattr(c, "few_below")
        ),
        (100, 20),
    )
    stages = {}
    if any(k.startswith("test/") for k in scores):
        stages["test"] = "test · best checkpoint" if "best" in checkpoints else "test"
    if any(k.startswith("val/") for k in scores):
        stages["val"] = "val · last epoch"
    return RunSummary(
        run_dir=str(run_dir.resolve()),
        class_names=data.class_names,
        train_counts=data.counts.get("train", ()),
        scores=scores,
        stages=stages,
        monitor=monitor,
        checkpoints=checkpoints,
        command=command,
        max_classes=max_classes,
        many_above=shots[0],
        few_below=shots[1],
    )


def evaluation_summary(
    scores: Mapping[str, float],
    split: str,
    class_names: Sequence[str],
    train_counts: Sequence[int],
    ckpt_path: str,
    eval_dir: Path,
    max_classes: int = 100,
    tensorboard: bool = False,
) -> RunSummary:
    """The summary of an ``imblab-eval`` run: the checkpoint evaluated and the per-class rows
    of ``split`` (``scores``: the report's unprefixed keys, ``f1/<class>``, ``f1_macro``...)."""
    return RunSummary(
        run_dir=str(eval_dir.resolve()),
        class_names=class_names,
        train_counts=train_counts,
        scores={f"{split}/{k}": v for k, v in scores.items()},
        stages={split: f"{split} · {Path(ckpt_path).name}"},
        checkpoints={"evaluated": Checkpoint(str(ckpt_path), checkpoint_epoch(ckpt_path))},
        command=logdir_command(eval_dir) if tensorboard else None,
        max_classes=max_classes,
    )
