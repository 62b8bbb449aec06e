"""Scalar metric callbacks: the classification report's scalars and the two-class scores."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch import Trainer

from imblab.callbacks.base import MetricCallback, ScalarMetric, publish_scalars
from imblab.callbacks.contract import EvaluatedModel
from imblab.metrics.counts import Counts
from imblab.metrics.functional import binary_scores, summarize

__all__ = ["BinaryScores", "ClassificationScalars", "binary_scalars"]


class ClassificationScalars(ScalarMetric):
    """Precision, recall and F-beta (per class, macro, micro, weighted), accuracy, balanced
    accuracy, AUROC and AP (per class, macro, weighted), and per class the one-vs-rest accuracy
    and specificity: the keys of :func:`~imblab.metrics.functional.summarize` (``one_vs_rest``).

    Args:
        betas: the F-beta scores to log (``f0.5_*``, ``f1_*``, ``f2_*``).
        zero_division: value of an undefined precision, recall or F (0, 1 or nan).
        per_class: also log ``<stage>/<metric>/<class_name>`` for every class.
    """

    def __init__(
        self,
        betas: Sequence[float] = (0.5, 1.0, 2.0),
        zero_division: float = 0.0,
        per_class: bool = True,
        stages: Sequence[str] = ("val", "test"),
    ) -> None:
        super().__init__(stages=stages)
        self.betas = tuple(float(b) for b in betas)
        self.zero_division = float(zero_division)
        self.per_class = per_class

    def scalars(self, counts: Counts, class_names: list[str]) -> dict[str, float]:
        values = summarize(
            counts,
            betas=self.betas,
            zero_division=self.zero_division,
            class_names=class_names,
            one_vs_rest=True,
        )
        if not self.per_class:
            values = {k: v for k, v in values.items() if "/" not in k}
        return values


def binary_scalars(
    counts: Counts,
    threshold: float,
    betas: Sequence[float],
    zero_division: float,
    prefix: str = "binary",
) -> dict[str, float]:
    """``<prefix>/threshold`` and, for each beta, ``<prefix>/{precision,recall,f<beta>}`` of the
    positive class (index 1) predicted iff its probability is ``>= threshold``
    (:func:`~imblab.metrics.functional.binary_scores`)."""
    values: dict[str, float] = {f"{prefix}/threshold": threshold}
    for beta in betas:
        scores = binary_scores(counts, threshold, beta, zero_division)
        values.update({f"{prefix}/{k}": v for k, v in scores.items()})
    return values


class BinaryScores(MetricCallback):
    """Two-class tasks: precision, recall and F-beta of the positive class (index 1) when its
    probability is >= the count state's ``binary_threshold``; logged as
    ``<stage>/binary/<name>`` (:func:`binary_scalars`). Does nothing for more than two classes
    (so it can stay in the default metric set).

    Args:
        betas: the F-beta scores to log.
        zero_division: value of an undefined precision, recall or F (0, 1 or nan).
    """

    def __init__(
        self,
        betas: Sequence[float] = (0.5, 1.0, 2.0),
        zero_division: float = 0.0,
        stages: Sequence[str] = ("val", "test"),
    ) -> None:
        super().__init__(stages=stages)
        self.betas = tuple(float(b) for b in betas)
        self.zero_division = float(zero_division)

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
        threshold = float(model.count_state(stage).binary_threshold)
        values = binary_scalars(counts, threshold, self.betas, self.zero_division)
        publish_scalars(trainer, {f"{stage}/{k}": v for k, v in values.items()})
