"""What ``imblab-eval``'s report needs from the end of an evaluation epoch."""

from __future__ import annotations

import torch
from lightning.pytorch import Trainer

from imblab.callbacks.base import MetricCallback
from imblab.callbacks.contract import EvaluatedModel
from imblab.metrics.counts import Counts

__all__ = ["SplitCounts"]


class SplitCounts(MetricCallback):
    """Keeps what the report needs from the end of the ``stage`` epoch: the summed counts, the
    class names, the default two-class threshold and the bootstrap confusion matrices (None
    without a bootstrap). Every rank takes part in the sums; rank 0 reports."""

    def __init__(self, stage: str) -> None:
        super().__init__(stages=(stage,))
        self.stage = stage
        self.counts: Counts | None = None
        self.class_names: list[str] = []
        self.binary_threshold = 0.5
        self.ignore_index: int | None = None
        self.confmats: torch.Tensor | None = None

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        model: EvaluatedModel,
    ) -> None:
        self.counts = counts
        self.class_names = class_names
        self.binary_threshold = float(model.count_state(stage).binary_threshold)
        self.ignore_index = model.count_state(stage).ignore_index
        boot = model.bootstrap_state(stage)
        self.confmats = None if boot is None else boot.compute()
