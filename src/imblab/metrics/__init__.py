"""Streaming per-class metrics: one count state per stage, every metric a function of it."""

from imblab.metrics.counts import Counts, CountState
from imblab.metrics.evaluate import evaluate
from imblab.metrics.functional import summarize

__all__ = ["CountState", "Counts", "evaluate", "summarize"]
