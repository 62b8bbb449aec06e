"""Matthews correlation coefficient: the worked example of a metric plugin (docs/metrics.md)."""

from __future__ import annotations

from imblab.callbacks.base import ScalarMetric
from imblab.metrics.counts import Counts
from imblab.metrics.functional import matthews_corrcoef

__all__ = ["MatthewsCorrCoef"]


class MatthewsCorrCoef(ScalarMetric):
    """MCC of the argmax confusion matrix, logged as ``<stage>/mcc``.

    With C the confusion matrix, t_k = row sums, p_k = column sums, c = trace, s = total:
    MCC = (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)), 0 when a denominator term is 0
    (Gorodkin's R_K; equals the binary MCC for two classes).
    """

    higher_is_better = True

    def scalars(self, counts: Counts, class_names: list[str]) -> dict[str, float]:
        return {"mcc": matthews_corrcoef(counts.confmat)}
