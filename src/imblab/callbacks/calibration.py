"""Calibration (``<stage>/ece``, ``<stage>/classwise_ece``, the ``<stage>/reliability``
diagram): the worked example of a metric plugin with its own state (docs/metrics.md)."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from torchmetrics import Metric

from imblab.callbacks.stateful import EvalInputs, StatefulMetric
from imblab.metrics.calibration import Calibration, CalibrationState
from imblab.plots import reliability_figure

__all__ = ["CalibrationMetrics"]


class CalibrationMetrics(StatefulMetric):
    """Top-label ECE (Guo et al. 2017) and class-wise ECE (Kull et al. 2019) over ``n_bins``
    equal-width confidence bins, and the reliability diagram (:mod:`imblab.metrics.calibration`).

    Args:
        n_bins: M, the confidence bins ((m - 1)/M, m/M].
        figures_every_n_epochs: write the validation diagram every N epochs.
    """

    name = "calibration"
    higher_is_better = False

    def __init__(
        self,
        n_bins: int = 15,
        figures_every_n_epochs: int = 1,
        stages: Sequence[str] = ("val", "test"),
        name: str | None = None,
    ) -> None:
        super().__init__(stages=stages, figures_every_n_epochs=figures_every_n_epochs, name=name)
        CalibrationState(1, n_bins)  # a bad n_bins fails when the callback is built
        self.n_bins = n_bins

    def make_state(self, inputs: EvalInputs) -> Metric:
        return CalibrationState(
            inputs.num_classes,
            self.n_bins,
            input="logits" if inputs.input == "logits" else "probs",
            ignore_index=inputs.ignore_index,
        )

    def scalar_names(self, class_names: Sequence[str]) -> list[str]:
        return ["ece", "classwise_ece"]

    def scalars(self, value: Calibration, class_names: list[str]) -> dict[str, float]:
        return {"ece": value.ece(), "classwise_ece": value.classwise_ece()}

    def figures(self, value: Calibration, class_names: list[str], title: str) -> dict[str, Figure]:
        return {"reliability": reliability_figure(value, title=title)}
