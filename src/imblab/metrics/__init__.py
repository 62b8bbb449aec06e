"""Streaming per-class metrics: one count state per stage, every metric a function of it.

The count and bootstrap states (:mod:`~imblab.metrics.counts`, :mod:`~imblab.metrics.bootstrap`)
and the functions from counts to numbers (:mod:`~imblab.metrics.functional`,
:mod:`~imblab.metrics.decision_threshold`, :mod:`~imblab.metrics.prediction_set`): torch and
torchmetrics only, no Lightning and no Hydra. The Lightning callbacks that log them are in
:mod:`imblab.callbacks`.
"""

from imblab.metrics.counts import Counts, CountState
from imblab.metrics.functional import summarize
from imblab.metrics.prediction_set import evaluate

__all__ = ["CountState", "Counts", "evaluate", "summarize"]
