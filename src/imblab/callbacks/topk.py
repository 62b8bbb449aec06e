"""Top-k accuracy (``<stage>/top<k>_accuracy``): a metric plugin with its own state."""

from __future__ import annotations

from collections.abc import Sequence

from torchmetrics import Metric

from imblab.callbacks.stateful import EvalInputs, StatefulMetric
from imblab.metrics.topk import TopKState, check_ks

__all__ = ["TopKAccuracy"]


class TopKAccuracy(StatefulMetric):
    """The fraction of samples whose target is among the k highest scores, for each k of
    ``ks``; equal to scikit-learn's ``top_k_accuracy_score`` (ties included:
    :mod:`imblab.metrics.topk`). A k >= C is a one-line config error before training.

    Args:
        ks: the k values (each in 1 .. C - 1).
        key: the config key named in that error.
    """

    name = "topk"
    higher_is_better = True

    def __init__(
        self,
        ks: Sequence[int] = (3, 5),
        stages: Sequence[str] = ("val", "test"),
        name: str | None = None,
        key: str = "metrics.topk.ks",
    ) -> None:
        super().__init__(stages=stages, name=name)
        self.key = key
        self.ks = check_ks(list(ks), key=key)

    def check(self, inputs: EvalInputs) -> None:
        check_ks(self.ks, inputs.num_classes, key=self.key)

    def make_state(self, inputs: EvalInputs) -> Metric:
        return TopKState(inputs.num_classes, self.ks, ignore_index=inputs.ignore_index)

    def scalar_names(self, class_names: Sequence[str]) -> list[str]:
        return [f"top{k}_accuracy" for k in self.ks]

    def scalars(self, value: dict[int, float], class_names: list[str]) -> dict[str, float]:
        return {f"top{k}_accuracy": v for k, v in value.items()}
