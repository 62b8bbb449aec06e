"""Exact one-vs-rest AUROC and average precision of a whole score matrix, in little memory.

For class ``c`` the scores ``s = p[:, c]`` are sorted once (descending, stable) and walked in
chunks of the sorted order; only the counts at the end of each tie group (the distinct
thresholds, as scikit-learn's ``_binary_clf_curve``) enter the areas:

* ``AUROC = sum_i (FP_i - FP_{i-1}) (TP_i + TP_{i-1}) / (2 P N)`` (trapezoids from ``(0, 0)``,
  summed in int64, so exact up to the final division), ``roc_auc_score``;
* ``AP = sum_i (TP_i - TP_{i-1}) / P * TP_i / (TP_i + FP_i)``, ``average_precision_score``.

Memory: besides the input, one column's sort (its values and int64 order, ~14 bytes a sample)
and a chunk's counts; for logits, the softmax (one copy of the input). The count state's exact
mode instead keeps a copy of every score and sorts all columns at once (~20x the input).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from imblab.metrics.counts import Counts
from imblab.metrics.functional import _nanaverage

__all__ = ["average_precision_bin_bound", "curve_scores", "one_vs_rest_areas"]

CHUNK = 1 << 16
"""Sorted positions walked at a time."""


def one_vs_rest_areas(scores: Tensor, positive: Tensor, chunk: int = CHUNK) -> tuple[float, float]:
    """``(AUROC, AP)`` of ``scores`` (N,) against the boolean labels ``positive`` (N,), exactly
    as scikit-learn's ``roc_auc_score`` and ``average_precision_score``; AUROC is NaN without
    positives or negatives, AP without positives."""
    n = scores.numel()
    p = int(positive.sum())
    if n == 0 or p == 0:
        return math.nan, math.nan
    s, order = torch.sort(scores, descending=True, stable=True)
    y = positive[order]
    del order
    area2 = 0  # twice the area under the (TP, FP) curve, in counts
    ap = 0.0
    last_tp = last_fp = 0  # counts at the previous tie-group end
    seen_tp = 0  # positives before the chunk
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        tp = torch.cumsum(y[a:b], 0, dtype=torch.int64).add_(seen_tp)
        seen_tp = int(tp[-1])
        is_end = torch.empty(b - a, dtype=torch.bool, device=s.device)
        is_end[:-1] = s[a + 1 : b] != s[a : b - 1]
        is_end[-1] = bool(s[b] != s[b - 1]) if b < n else True
        (ends,) = torch.nonzero(is_end, as_tuple=True)
        if ends.numel() == 0:
            continue
        tp_e = tp[ends]
        fp_e = ends.add_(a + 1).sub_(tp_e)
        prev_tp = torch.cat([tp_e.new_full((1,), last_tp), tp_e[:-1]])
        prev_fp = torch.cat([fp_e.new_full((1,), last_fp), fp_e[:-1]])
        area2 += int(((fp_e - prev_fp) * (tp_e + prev_tp)).sum())
        gained = (tp_e - prev_tp).to(torch.float64)
        ap += float((gained * tp_e / (tp_e + fp_e)).sum())
        last_tp, last_fp = int(tp_e[-1]), int(fp_e[-1])
    negatives = n - p
    auroc = area2 / (2 * p * negatives) if negatives else math.nan
    return auroc, ap / p


def _softmax(logits: Tensor, dtype: torch.dtype, chunk: int) -> Tensor:
    """Row softmax in ``dtype``, computed ``chunk`` rows at a time into one new tensor."""
    out = torch.empty(logits.shape, dtype=dtype, device=logits.device)
    for a in range(0, logits.shape[0], chunk):
        out[a : a + chunk] = torch.softmax(logits[a : a + chunk].to(dtype), dim=1)
    return out


def curve_scores(
    preds: Tensor,
    target: Tensor,
    *,
    input: Literal["logits", "probs"] = "probs",
    ignore_index: int | None = None,
    class_names: Sequence[str] | None = None,
    chunk_size: int = CHUNK,
) -> dict[str, float]:
    """The curve keys of :func:`~imblab.metrics.functional.summarize`, exact: per class
    ``auroc/<name>`` and ``ap/<name>``, and ``auroc_macro``, ``auroc_weighted``,
    ``auroc_num_defined`` (and ``ap_*``), from ``preds`` (N, C) and ``target`` (N,).

    Scores are compared in the input's dtype (float32 at least; logits are softmaxed in it),
    as the count state does; samples whose target is ``ignore_index`` are left out. The input
    is assumed checked (finite, targets in range), e.g. by a count state update.
    """
    c = preds.shape[1]
    names = [str(i) for i in range(c)] if class_names is None else [str(n) for n in class_names]
    dtype = torch.float64 if preds.dtype == torch.float64 else torch.float32
    labels = target.to(torch.int64)
    keep = None if ignore_index is None else labels != ignore_index
    if keep is not None:
        labels = labels[keep]
    probs = _softmax(preds, dtype, chunk_size) if input == "logits" else preds
    values: dict[str, list[float]] = {"auroc": [], "ap": []}
    positives = []
    for k in range(c):
        column = probs[:, k] if keep is None else probs[:, k][keep]
        positive = labels == k
        auroc, ap = one_vs_rest_areas(column.to(dtype), positive, chunk_size)
        values["auroc"].append(auroc)
        values["ap"].append(ap)
        positives.append(int(positive.sum()))
    weights = torch.tensor(positives, dtype=torch.int64)
    out: dict[str, float] = {}
    for key, per_class in values.items():
        v = torch.tensor(per_class, dtype=torch.float64)
        out[f"{key}_macro"] = _nanaverage(v)
        out[f"{key}_weighted"] = _nanaverage(v, weights)
        out[f"{key}_num_defined"] = float((~torch.isnan(v)).sum())
        out.update({f"{key}/{name}": value for name, value in zip(names, per_class, strict=True)})
    return out


def average_precision_bin_bound(counts: Counts) -> Tensor:
    """A bound (C,) on ``|AP_binned - AP_exact|`` from binned counts (NaN without positives;
    zero in exact mode), as :func:`~imblab.metrics.functional.auroc_tie_bound` is for AUROC.

    Take bin ``k`` with ``p`` positives and ``n`` negatives below ``T`` positives and ``F``
    negatives of higher bins. Binned, its positives all get the precision at the bin's end,
    ``B = p (T + p) / (T + F + p + n)`` in total. Exact, the ``i``-th of them gets
    ``(T + a) / (T + F + a + b)`` with ``a >= i`` positives and ``b <= n`` negatives of the bin
    up to its tie group's end, which lies between ``(T + i) / (T + F + i + n)`` and
    ``(T + p) / (T + F + p)``; summed over ``i``: between ``S_min = p - (F + n)
    (psi(T + F + n + p + 1) - psi(T + F + n + 1))`` (``psi`` the digamma function) and ``S_max =
    p (T + p) / (T + F + p)``. So ``|AP_binned - AP_exact| <= sum_k max(S_max - B, B - S_min)
    / P``.
    """
    if counts.hist is None:
        positives = counts.confmat.sum(dim=1).to(torch.float64)
        return torch.where(positives > 0, 0.0, math.nan)
    hist = counts.hist.flip(1).to(torch.float64)  # bins in descending order of score
    neg, pos = hist[..., 0], hist[..., 1]
    t = torch.cumsum(pos, dim=1) - pos  # positives above each bin
    f = torch.cumsum(neg, dim=1) - neg
    above = t + f
    binned = pos * (t + pos) / (above + pos + neg).clamp(min=1)
    s_max = pos * (t + pos) / (above + pos).clamp(min=1)
    a = above + neg
    s_min = pos - (f + neg) * (torch.digamma(a + pos + 1) - torch.digamma(a + 1))
    gap = torch.maximum(s_max - binned, binned - s_min).clamp(min=0)
    total = pos.sum(dim=1)
    return torch.where(total > 0, gap.sum(dim=1) / total.clamp(min=1), math.nan)
