"""Per-class precision-recall curves in TensorBoard's PR-curve plugin, from raw counts."""

from __future__ import annotations

from typing import Any

import numpy as np
from lightning.pytorch import Trainer

from imblab.callbacks.base import MetricCallback
from imblab.callbacks.contract import EvaluatedModel
from imblab.metrics.counts import Counts
from imblab.metrics.functional import pr_curve_counts
from imblab.tensorboard import rank_zero_writer

__all__ = ["PRCurves"]


class PRCurves(MetricCallback):
    """Per-class precision-recall curves in TensorBoard's PR-curve plugin, from raw counts
    (``<stage>/pr/<class_name>``, :func:`~imblab.metrics.functional.pr_curve_counts`); written
    by rank 0."""

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        model: EvaluatedModel,
    ) -> None:
        writer = rank_zero_writer(trainer)
        if writer is None:
            return
        for name, raw in zip(class_names, pr_curve_counts(counts), strict=True):
            writer.add_pr_curve_raw(
                f"{stage}/pr/{name}", **_pr_raw_arrays(raw), global_step=trainer.global_step
            )


def _pr_raw_arrays(raw: dict[str, Any]) -> dict[str, Any]:
    """Map the counts of :func:`pr_curve_counts` to ``SummaryWriter.add_pr_curve_raw`` arguments."""
    return {
        "true_positive_counts": np.asarray(raw["tp"]),
        "false_positive_counts": np.asarray(raw["fp"]),
        "true_negative_counts": np.asarray(raw["tn"]),
        "false_negative_counts": np.asarray(raw["fn"]),
        "precision": np.asarray(raw["precision"]),
        "recall": np.asarray(raw["recall"]),
        "num_thresholds": len(raw["tp"]),
    }
