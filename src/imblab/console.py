"""What a run prints for a person: the progress bar with the monitor, and the end-of-run summary.

The summary (:func:`print_summary`) is the last thing ``imblab-train`` and ``imblab-eval`` print
on rank 0: the run dir, the checkpoints, one row per class of each evaluated stage (training
count, many/medium/few group, precision, recall, F1, support), the averaged metrics and, as the
very last line, the ``tensorboard --logdir`` command. Scores are fractions with 3 decimals;
undefined ones print as ``-``. Piped to a file, rich draws it 80 columns wide.

Class names of any length and script: the tables show a name longer than :data:`CLASS_WIDTH`
terminal cells shortened in the middle (:func:`shorten`, head ``…`` tail), the files
(``metrics.json``, reports) keep it whole. A log record marked :data:`FIT_TERMINAL` (the
training's ``final:`` line) is cut to the terminal's width on the console
(:func:`fit_console_logs`), while the log file keeps the whole record.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from rich.cells import cell_len
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from imblab.data.summary import DataSummary
from imblab.metrics.groups import shot_groups
from imblab.tensorboard import logdir_command

__all__ = [
    "CLASS_WIDTH",
    "FIT_TERMINAL",
    "Checkpoint",
    "ProgressBar",
    "RunSummary",
    "TerminalFormatter",
    "evaluation_summary",
    "fit_console_logs",
    "print_summary",
    "shorten",
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
CLASS_WIDTH = 24  # terminal cells of the class column; a longer name is shortened
#: ``extra=`` of a log record that the console shows cut to the terminal's width
FIT_TERMINAL = {"fit_terminal": True}


def shorten(name: str, width: int) -> str:
    """``name`` as it fits ``width`` terminal cells (wide CJK and emoji characters count two):
    unchanged when it fits, else its head, ``…`` and its tail (the tail often tells similar
    names apart), whitespace collapsed."""
    name = " ".join(name.split())
    if cell_len(name) <= width:
        return name
    room = max(width - 1, 2)
    tail_room = room // 3
    head, tail = "", ""
    for char in reversed(name):
        if cell_len(tail) + cell_len(char) > tail_room:
            break
        tail = char + tail
    for char in name:
        if cell_len(head) + cell_len(char) > room - cell_len(tail):
            break
        head += char
    return f"{head.rstrip()}…{tail.lstrip()}"


def terminal_width(stream: Any) -> int:
    """The width of the terminal ``stream`` writes to; ``COLUMNS`` or 80 when it is not a
    terminal (as rich does for a pipe)."""
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        pass
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 80


class TerminalFormatter(logging.Formatter):
    """Formats as ``inner`` does; a record logged with ``extra=FIT_TERMINAL`` that is wider
    than the terminal of ``stream`` is cut at the last ``", "`` that fits (else at the width)
    and ends in ``…``. Other records are left whole (paths and commands stay copyable)."""

    def __init__(self, inner: logging.Formatter | None, stream: Any) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.stream = stream

    def format(self, record: logging.LogRecord) -> str:
        line = self.inner.format(record)
        width = terminal_width(self.stream)
        if not getattr(record, "fit_terminal", False) or "\n" in line or len(line) <= width:
            return line
        cut = line[: width - 2]
        comma = cut.rfind(", ")
        if comma > width // 2:
            cut = cut[: comma + 1]
        return f"{cut} …"


def fit_console_logs(logger: logging.Logger | None = None) -> None:
    """Give the console handlers of ``logger`` (the root logger: Hydra's ``console`` handler
    on stdout or stderr) a :class:`TerminalFormatter`; file handlers are left as they are, so
    the log file keeps whole records. Idempotent."""
    for handler in (logger or logging.getLogger()).handlers:
        stream = getattr(handler, "stream", None)
        console = type(handler) is logging.StreamHandler and stream in (sys.stdout, sys.stderr)
        if console and not isinstance(handler.formatter, TerminalFormatter):
            handler.setFormatter(TerminalFormatter(handler.formatter, stream))


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
    ``train_counts`` (in the order of ``class_names``) give the training count of each class,
    ``group_counts`` (the long-tailed subset's; empty: ``train_counts``) its shot group
    (:func:`~imblab.metrics.groups.shot_groups` with ``many_above`` and ``few_below``)."""

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
    group_counts: Sequence[int] = ()


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
    sizes = list(summary.group_counts or counts)
    groups = (
        shot_groups(sizes, summary.many_above, summary.few_below)
        if len(sizes) == len(names)
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
    table.add_column("class", max_width=CLASS_WIDTH, overflow="ellipsis", no_wrap=True)
    table.add_column("train n", justify="right")
    table.add_column("group")
    for label in ("precision", "recall", "F1", "support"):
        table.add_column(label, justify="right")
    for i in order:
        name = names[i]
        train = str(counts[i]) if i < len(counts) else "-"
        table.add_row(
            shorten(name, CLASS_WIDTH),
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
    monitor: str | None,
    data: DataSummary,
    run_dir: Path,
    max_classes: int = 100,
    command: str | None = None,
) -> RunSummary:
    """The summary of a finished ``imblab-train`` run: the best checkpoint (by the monitor) and
    ``last.ckpt`` of the trainer's checkpoint callbacks, test (of the best checkpoint) and
    validation (of the last epoch) per class; ``monitor`` None: a run without one (its
    checkpoint is the last epoch's)."""
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
            value = scores.get(monitor) if monitor else None
            checkpoints["last"] = Checkpoint(path, last_epoch, value)
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
        monitor=monitor or "",
        checkpoints=checkpoints,
        command=command,
        max_classes=max_classes,
        many_above=shots[0],
        few_below=shots[1],
        group_counts=data.group_counts,
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
    group_counts: Sequence[int] = (),
) -> RunSummary:
    """The summary of an ``imblab-eval`` run: the checkpoint evaluated and the per-class rows
    of ``split`` (``scores``: the report's unprefixed keys, ``f1/<class>``, ``f1_macro``...;
    ``group_counts``: the class sizes of the shot groups, empty: ``train_counts``)."""
    return RunSummary(
        run_dir=str(eval_dir.resolve()),
        class_names=class_names,
        train_counts=train_counts,
        scores={f"{split}/{k}": v for k, v in scores.items()},
        stages={split: f"{split} · {Path(ckpt_path).name}"},
        checkpoints={"evaluated": Checkpoint(str(ckpt_path), checkpoint_epoch(ckpt_path))},
        command=logdir_command(eval_dir) if tensorboard else None,
        max_classes=max_classes,
        group_counts=group_counts,
    )
