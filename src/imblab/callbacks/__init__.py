"""Lightning callbacks that turn the model's per-stage count state into logged metrics, and
collect predictions for ``imblab-eval``.

What a callback needs from the model is :class:`~imblab.callbacks.contract.EvaluatedModel`;
:class:`PerClassMetrics` provides it (and runs the metric callbacks) for any LightningModule.
The math lives in :mod:`imblab.metrics`, the drawing in :mod:`imblab.plots`.
"""

from imblab.callbacks.base import FigureMetric, MetricCallback, ScalarMetric, publish_scalars
from imblab.callbacks.calibration import CalibrationMetrics
from imblab.callbacks.contract import (
    EvalStepOutput,
    EvaluatedModel,
    StatefulModel,
    evaluated_model,
    stateful_model,
)
from imblab.callbacks.figures import ClassBarsFigure, ConfusionMatrixFigure, RocFigure
from imblab.callbacks.intervals import BootstrapIntervals
from imblab.callbacks.mcc import MatthewsCorrCoef
from imblab.callbacks.per_class import PerClassMetrics
from imblab.callbacks.pr_curves import PRCurves
from imblab.callbacks.predictions import PredictionRecorder, Predictions
from imblab.callbacks.scalars import BinaryScores, ClassificationScalars, binary_scalars
from imblab.callbacks.stateful import EvalInputs, StatefulMetric
from imblab.callbacks.threshold import ThresholdTuning
from imblab.callbacks.topk import TopKAccuracy

__all__ = [
    "BinaryScores",
    "BootstrapIntervals",
    "CalibrationMetrics",
    "ClassBarsFigure",
    "ClassificationScalars",
    "ConfusionMatrixFigure",
    "EvalInputs",
    "EvalStepOutput",
    "EvaluatedModel",
    "FigureMetric",
    "MatthewsCorrCoef",
    "MetricCallback",
    "PRCurves",
    "PerClassMetrics",
    "PredictionRecorder",
    "Predictions",
    "RocFigure",
    "ScalarMetric",
    "StatefulMetric",
    "StatefulModel",
    "ThresholdTuning",
    "TopKAccuracy",
    "binary_scalars",
    "evaluated_model",
    "publish_scalars",
    "stateful_model",
]
