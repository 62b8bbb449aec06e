"""Decision-threshold tuning for two-class tasks: the threshold that maximises F-beta.

A sample is predicted positive iff its positive-class score ``s = p[:, positive] >= t``.  At
each candidate ``t`` (binned counts: the grid points; exact mode: every distinct score) the
one-vs-rest counts give ``F_beta(t) = (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from imblab.metrics.counts import Counts
from imblab.metrics.functional import _prf, curve_counts

__all__ = ["best_threshold"]


def _candidates(counts: Counts, positive: int) -> tuple[Tensor, Tensor, Tensor, int]:
    """Ascending thresholds ``t`` (K,) with the positive class's ``TP(t)``, ``FP(t)`` and ``P``."""
    tp, fp, thresholds = curve_counts(counts)
    if isinstance(tp, Tensor) and isinstance(fp, Tensor) and isinstance(thresholds, Tensor):
        return thresholds, tp[positive], fp[positive], int(tp[positive, 0])
    assert isinstance(tp, list) and isinstance(fp, list) and isinstance(thresholds, list)
    # exact mode: descending distinct scores; the last point counts every sample
    t, tp_c, fp_c = thresholds[positive].flip(0), tp[positive].flip(0), fp[positive].flip(0)
    total = int(tp_c[0]) if tp_c.numel() else 0
    return t, tp_c, fp_c, total


def best_threshold(
    counts: Counts, beta: float = 1.0, zero_division: float = 0.0, positive: int = 1
) -> tuple[float, float]:
    """``(t*, F_beta(t*))``: the candidate threshold with the largest F-beta of class
    ``positive`` (``zero_division`` where F is undefined).

    Among equal maxima it takes the first run of consecutive best candidates in ascending
    order and its middle point (binned counts: empty bins make neighbouring grid points
    equivalent on the tuning data; the middle one is the farthest from both ends of the run).
    ``(nan, nan)`` for an empty count state.
    """
    if counts.num_classes != 2:
        raise ValueError(f"threshold tuning needs two classes, got {counts.num_classes}")
    t, tp, fp, pos = _candidates(counts, positive)
    if t.numel() == 0:
        return math.nan, math.nan
    true = torch.full_like(tp, pos)
    _, _, f = _prf(tp, tp + fp, true, beta, zero_division)
    best = f.max()
    is_best = f == best
    first = int(torch.nonzero(is_best)[0, 0])
    last = first
    while last + 1 < len(f) and bool(is_best[last + 1]):
        last += 1
    k = (first + last) // 2
    return float(t[k]), float(best)
