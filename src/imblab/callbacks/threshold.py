"""Tune a two-class decision threshold on validation, apply it on test."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Trainer

from imblab.callbacks.base import (
    MetricCallback,
    builtin_directions,
    empty_counts,
    publish_scalars,
)
from imblab.callbacks.contract import EvaluatedModel
from imblab.callbacks.scalars import binary_scalars
from imblab.errors import config_error
from imblab.metrics.counts import Counts
from imblab.metrics.decision_threshold import best_threshold

__all__ = ["ThresholdTuning"]


class ThresholdTuning(MetricCallback):
    """Two-class tasks: after every validation epoch, the threshold on the positive-class
    probability that maximises F-``beta`` on the validation counts
    (:func:`~imblab.metrics.decision_threshold.best_threshold`); at test, precision, recall and
    F-beta at that threshold.

    Published as ``<stage>/binary_tuned/{threshold,precision,recall,f<beta>}`` (validation:
    in-sample, the tuned optimum; test: out of sample), beside ``binary/*`` at the default
    threshold (:class:`~imblab.callbacks.scalars.BinaryScores`).  The threshold is part of the
    callback's state, so it is saved in every checkpoint and restored with it (the test of the
    best checkpoint uses the threshold tuned on that checkpoint's epoch).  Does nothing for more
    than two classes.

    Args:
        beta: the F-beta to maximise.
        betas: the F-beta scores to report at the tuned threshold.
        zero_division: value of an undefined precision, recall or F (0, 1 or nan).
    """

    def __init__(
        self,
        beta: float = 1.0,
        betas: Sequence[float] = (0.5, 1.0, 2.0),
        zero_division: float = 0.0,
        stages: Sequence[str] = ("val", "test"),
    ) -> None:
        super().__init__(stages=stages)
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not beta >= 0:
            raise config_error(
                "metrics.threshold.beta", beta, "F-beta needs beta >= 0", "use e.g. 1"
            )
        self.beta = float(beta)
        self.betas = tuple(float(b) for b in betas)
        self.zero_division = float(zero_division)
        self.threshold: float | None = None

    def tuned_scores(self, counts: Counts) -> dict[str, float]:
        """``binary_tuned/*`` of ``counts`` at the current threshold (none before tuning)."""
        if self.threshold is None or math.isnan(self.threshold):
            return {}
        return binary_scalars(
            counts, self.threshold, self.betas, self.zero_division, prefix="binary_tuned"
        )

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        model: EvaluatedModel,
    ) -> None:
        if counts.num_classes != 2:
            return
        if stage == "val":
            self.threshold, _ = best_threshold(counts, self.beta, self.zero_division)
        values = self.tuned_scores(counts)
        publish_scalars(trainer, {f"{stage}/{k}": v for k, v in values.items()})

    def tags(
        self, stage: str, class_names: Sequence[str], train_counts: Sequence[int] = ()
    ) -> list[str]:
        if stage not in self.stages or len(class_names) != 2:
            return []
        keys = binary_scalars(
            empty_counts(2), 0.5, self.betas, self.zero_division, prefix="binary_tuned"
        )
        return [f"{stage}/{k}" for k in keys]

    def directions(self, stage: str, class_names: Sequence[str]) -> dict[str, bool]:
        """From imblab's table (:mod:`imblab.metrics.directions`; the threshold has none)."""
        return builtin_directions(self.tags(stage, class_names))

    def state_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "beta": self.beta}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.threshold = state_dict.get("threshold")
