"""Bootstrap percentile intervals of every precision, recall and F-beta."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch import Trainer

from imblab.callbacks.base import MetricCallback, builtin_directions
from imblab.callbacks.contract import EvaluatedModel
from imblab.metrics.bootstrap import percentile_intervals, replicate_scores
from imblab.metrics.counts import Counts

__all__ = ["BootstrapIntervals"]


class BootstrapIntervals(MetricCallback):
    """Publishes ``<stage>/<key>_lo`` and ``<stage>/<key>_hi``, the ``confidence`` percentile
    interval of every per-class and averaged precision, recall and F-beta (and accuracy,
    balanced accuracy), from the model's streaming Poisson bootstrap
    (``model.bootstrap=B``: ``model.bootstrap_state(stage)``, summed over processes;
    :func:`~imblab.metrics.bootstrap.replicate_scores`,
    :func:`~imblab.metrics.bootstrap.percentile_intervals`). Does nothing when the model keeps
    no bootstrap.

    Args:
        confidence: the interval's nominal coverage.
        betas: the F-beta scores (as the scalars callback).
        zero_division: value of an undefined precision, recall or F (0, 1 or nan).
    """

    def __init__(
        self,
        confidence: float = 0.95,
        betas: Sequence[float] = (0.5, 1.0, 2.0),
        zero_division: float = 0.0,
        stages: Sequence[str] = ("val", "test"),
    ) -> None:
        super().__init__(stages=stages)
        if not 0 < confidence < 1:
            raise ValueError(f"confidence={confidence!r}: not in (0, 1); use e.g. 0.95")
        self.confidence = float(confidence)
        self.betas = tuple(float(b) for b in betas)
        self.zero_division = float(zero_division)

    def intervals(
        self, model: EvaluatedModel, stage: str, class_names: list[str]
    ) -> dict[str, float]:
        """``{<key>_lo, <key>_hi: float}`` of the stage's bootstrap (empty without one)."""
        state = model.bootstrap_state(stage)
        if state is None:
            return {}
        replicates = replicate_scores(
            state.compute(),
            betas=self.betas,
            zero_division=self.zero_division,
            class_names=class_names,
        )
        return percentile_intervals(replicates, self.confidence)

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        model: EvaluatedModel,
    ) -> None:
        values = self.intervals(model, stage, class_names)
        self.publish(trainer, {f"{stage}/{k}": v for k, v in values.items()}, class_names)

    def tags(
        self, stage: str, class_names: Sequence[str], train_counts: Sequence[int] = ()
    ) -> list[str]:
        """The interval tags logged when the model keeps a bootstrap (``model.bootstrap=B``)."""
        if stage not in self.stages:
            return []
        c = len(class_names)
        replicates = replicate_scores(
            torch.zeros(2, c, c, dtype=torch.int64),
            betas=self.betas,
            zero_division=self.zero_division,
            class_names=list(class_names),
        )
        return [f"{stage}/{k}" for k in percentile_intervals(replicates, self.confidence)]

    def directions(self, stage: str, class_names: Sequence[str]) -> dict[str, bool]:
        """Each bound goes the way of its key (:mod:`imblab.metrics.directions`)."""
        return builtin_directions(self.tags(stage, class_names))
