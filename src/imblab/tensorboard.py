"""TensorBoard helpers: the run's SummaryWriter, the HParams view and the custom-scalars layout.

The HParams view of a run is written in two parts, as :meth:`SummaryWriter.add_hparams` would
write them into the run's own event file: :func:`log_hparams` at the start (the experiment: its
parameters and the metric tags it shows, and the session start) and :func:`log_final_hparams`
at the end of a successful run (the monitor's best value as :func:`best_tag`, and the session
end, status ``SUCCESS``). The metric values are the run's own scalars, not a placeholder.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams


def tensorboard_writer(trainer: Trainer) -> SummaryWriter | None:
    """The SummaryWriter of the trainer's first TensorBoard logger, if any."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def rank_zero_writer(trainer: Trainer) -> SummaryWriter | None:
    """The TensorBoard writer on rank 0 (figures and curves are written once), else None."""
    return tensorboard_writer(trainer) if trainer.is_global_zero else None


def best_tag(monitor: str) -> str:
    """The scalar tag of the monitor's best value over epochs (``best/val/f1_macro``)."""
    return f"best/{monitor}"


def log_hparams(writer: SummaryWriter, params: Mapping[str, Any], tags: Sequence[str]) -> None:
    """Start the run's HParams session: the flat scalar ``params`` and the metric ``tags`` the
    view shows (the run's real scalar tags; no ``hp_metric``). The session end is written by
    :func:`log_final_hparams`; the caller flushes the writer."""
    metrics = {tag: math.nan for tag in dict.fromkeys(tags)}  # names only: hparams() needs a dict
    experiment, start, _ = hparams(dict(params), metrics)
    file_writer = writer._get_file_writer()  # what SummaryWriter.add_hparams writes through
    file_writer.add_summary(experiment)
    file_writer.add_summary(start)


def log_final_hparams(writer: SummaryWriter, monitor: str, best: float | None, step: int) -> None:
    """At the end of a successful run: the monitor's best value over epochs as the scalar
    :func:`best_tag` (next to the last-epoch scalars the HParams view reads its other metrics
    from) and the session's end (status ``SUCCESS``) for the HParams view."""
    if best is not None and math.isfinite(best):
        writer.add_scalar(best_tag(monitor), best, global_step=step)
    *_, end = hparams({}, {})  # the session-end summary: status SUCCESS
    writer._get_file_writer().add_summary(end)  # what SummaryWriter.add_hparams writes through
    writer.flush()


def class_layout(class_names: Sequence[str], stages: Sequence[str] = ("val",)) -> dict[str, Any]:
    """Custom-scalars layout that follows each class across runs: per stage, a category of
    per-class F1 charts and one of per-class recall (one chart per class, every selected run in
    it), and an overview category with all classes' F1 and recall curves."""
    layout: dict[str, Any] = {}
    for stage in stages:
        for metric, title in (("f1", "F1"), ("recall", "recall")):
            layout[f"{stage} {title} per class"] = {
                f"{stage}/{metric}/{name}": ["Multiline", [f"^{stage}/{metric}/{re.escape(name)}$"]]
                for name in class_names
            }
        layout[f"{stage} all classes"] = {
            f"{stage} F1, every class": ["Multiline", [f"^{stage}/f1/"]],
            f"{stage} recall, every class": ["Multiline", [f"^{stage}/recall/"]],
        }
    return layout
