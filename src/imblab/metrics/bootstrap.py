"""Streaming Poisson bootstrap of the confusion matrix: percentile intervals for every per-class
and averaged precision, recall and F-beta, in constant memory and identical under DDP.

Each sample ``i`` gets ``B`` weights ``w[i, b] ~ Poisson(1)``, a pure function of
``(seed, id_i, b)`` through a counter-based hash (no RNG state: every process, batching and
device draws the same weights for the same sample).  The state keeps ``B`` weighted confusion
matrices ``M_b[t, p] = sum_i w[i, b] [y_i = t] [pred_i = p]`` (B, C, C) in int64, summed across
processes; replicate ``b``'s scores are the usual functions of ``M_b``.  The Poisson bootstrap
approximates the multinomial one (weights Multinomial(N, 1/N)) for large N and needs no N in
advance, which is what makes it streamable.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from imblab.errors import config_error
from imblab.metrics.functional import _check_zero_division, _prf

__all__ = [
    "BootstrapCounts",
    "percentile_intervals",
    "poisson_weights",
    "replicate_scores",
]

_M32 = 0xFFFFFFFF


def _poisson_cuts() -> list[int]:
    """``floor(2^32 P(K <= k))`` for Poisson(1) ``K``, k = 0, 1, ... while below 2^32: a 32-bit
    uniform ``u`` maps to ``K = #{k : u >= cut_k}`` (inverse CDF; P(K > 12) < 2^-32)."""
    cuts: list[int] = []
    cdf, term, k = 0.0, math.exp(-1.0), 0
    while True:
        cdf += term
        cut = math.floor(cdf * 2**32)
        if cut >= 2**32:
            return cuts
        cuts.append(cut)
        k += 1
        term /= k


_CUTS = _poisson_cuts()
_Int = TypeVar("_Int", int, Tensor)


@functools.lru_cache(maxsize=8)
def _cuts_on(device: torch.device) -> Tensor:
    """The inverse-CDF cut points on ``device``, copied there once."""
    return torch.tensor(_CUTS, dtype=torch.int64, device=device)


def _mul32(x: _Int, c: int) -> _Int:
    """``x * c mod 2^32`` for ``x`` in [0, 2^32), in int64 without overflow (``c`` split into
    16-bit halves, so every product stays below 2^48)."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def _mix32(x: _Int) -> _Int:
    """The ``lowbias32`` integer hash (C. Wellons) of 32-bit values (Python ints, or int64
    tensors)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def poisson_weights(ids: Tensor, seed: int, replicates: int) -> Tensor:
    """(N, B) int64 Poisson(1) weights of the samples ``ids`` (N,) (non-negative int64).

    ``w[i, b] = F^-1(u)`` with ``u = h(h(h(h(seed) ^ id_lo) ^ id_hi) ^ r_b)`` a 32-bit hash and
    ``r_b = h(b * 0x9E3779B9 mod 2^32)``: deterministic in ``(seed, id, b)``, the same on every
    device.
    """
    ids = ids.to(torch.int64)
    seed_hash = _mix32(seed & _M32)
    h = _mix32(seed_hash ^ (ids & _M32))
    h = _mix32(h ^ ((ids >> 32) & _M32))
    b = torch.arange(replicates, dtype=torch.int64, device=ids.device)
    r = _mix32(_mul32(b, 0x9E3779B9) ^ 0x85EBCA6B)
    u = _mix32(_mix32(h[:, None] ^ r[None, :]) ^ seed_hash)
    return torch.bucketize(u, _cuts_on(ids.device), right=True)


class BootstrapCounts(Metric):
    """``B`` Poisson-weighted confusion matrices (B, C, C), int64, summed across processes.

    ``update(preds (N, C), target (N,), ids (N,))`` with ``ids`` each sample's global index
    (the same under any number of processes); ``compute() -> Tensor`` (B, C, C) on the CPU.
    The prediction is ``argmax_c`` of the scores (softmax first for logits), as in
    :class:`~imblab.metrics.counts.CountState`; samples whose target is ``ignore_index`` or
    outside ``[0, C)`` get weight 0 (the count state reports bad targets).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    confmat: Tensor

    def __init__(
        self,
        num_classes: int,
        replicates: int = 200,
        *,
        seed: int = 0,
        input: Literal["logits", "probs"] = "logits",
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 2:
            raise config_error(
                "bootstrap", replicates, "not an int >= 2", "use e.g. 200 replicates, or 0 for off"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise config_error("bootstrap_seed", seed, "not an int >= 0", "use e.g. 0")
        self.num_classes = num_classes
        self.replicates = replicates
        self.seed = seed
        self.input = input
        self.ignore_index = ignore_index
        c = num_classes
        self.add_state(
            "confmat", torch.zeros(replicates, c, c, dtype=torch.int64), dist_reduce_fx="sum"
        )

    def update(self, preds: Tensor, target: Tensor, ids: Tensor) -> None:
        """Add one batch: ``preds`` (N, C) logits or probabilities, ``target`` and ``ids`` (N,)."""
        if ids.shape != target.shape or preds.shape[:1] != target.shape:
            raise ValueError(
                f"BootstrapCounts: expected preds (N, C), target (N,) and ids (N,), got "
                f"{tuple(preds.shape)}, {tuple(target.shape)} and {tuple(ids.shape)}"
            )
        c, b = self.num_classes, self.replicates
        x = preds.detach().float()
        pred = (torch.softmax(x, dim=1) if self.input == "logits" else x).max(dim=1).indices
        labels = target.detach().to(torch.int64)
        keep = (labels >= 0) & (labels < c)
        if self.ignore_index is not None:
            keep &= labels != self.ignore_index
        cell = torch.where(keep, labels, 0) * c + pred  # (N,)
        weights = poisson_weights(ids.detach(), self.seed, b) * keep[:, None]  # (N, B)
        index = cell[:, None] + torch.arange(b, device=cell.device)[None, :] * (c * c)
        self.confmat.view(-1).scatter_add_(0, index.reshape(-1), weights.reshape(-1))

    def compute(self) -> Tensor:
        """The (B, C, C) weighted confusion matrices, a CPU copy."""
        return self.confmat.to("cpu", copy=True)


def _masked_mean(values: Tensor, mask: Tensor, weights: Tensor | None = None) -> Tensor:
    """Row-wise mean (B,) of ``values`` (B, C) over ``mask & ~isnan``, weighted when the row's
    weights sum to > 0 (else unweighted); NaN for a row with nothing to average: scikit-learn's
    ``_nanaverage`` per replicate."""
    mask = mask & ~torch.isnan(values)
    v = torch.where(mask, values, 0.0)
    n = mask.sum(dim=1).to(torch.float64)
    mean = torch.where(n > 0, v.sum(dim=1) / n.clamp(min=1), math.nan)
    if weights is None:
        return mean
    w = torch.where(mask, weights.to(torch.float64), 0.0)
    total = w.sum(dim=1)
    return torch.where(total > 0, (v * w).sum(dim=1) / total.clamp(min=1e-300), mean)


def replicate_scores(
    confmats: Tensor,
    *,
    betas: Sequence[float] = (0.5, 1.0, 2.0),
    zero_division: float = 0.0,
    class_names: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """Scores of every replicate, ``{key: (B,) float64}``, vectorised over the B axis.

    Keys as :func:`~imblab.metrics.functional.summarize`: ``precision_<avg>``,
    ``recall_<avg>``, ``f<beta>_<avg>`` (avg: macro, micro, weighted; classes absent from
    targets and predictions left out), ``accuracy``, ``balanced_accuracy``, and per class
    ``precision/<name>``, ``recall/<name>``, ``f<beta>/<name>``.
    """
    zero_division = _check_zero_division(zero_division)
    m = confmats.to(torch.int64)
    c = m.shape[-1]
    names = [str(i) for i in range(c)] if class_names is None else list(class_names)
    tp = m.diagonal(dim1=-2, dim2=-1)
    pred, true = m.sum(dim=-2), m.sum(dim=-1)
    present = (pred + true) > 0
    out: dict[str, Tensor] = {}
    per_class: dict[str, Tensor] = {}
    for i, beta in enumerate(betas):
        precision, recall, f = _prf(tp, pred, true, float(beta), zero_division)
        micro = _prf(
            tp.sum(-1, keepdim=True),
            pred.sum(-1, keepdim=True),
            true.sum(-1, keepdim=True),
            float(beta),
            zero_division,
        )
        averages = {
            "macro": [_masked_mean(v, present) for v in (precision, recall, f)],
            "micro": [v[:, 0] for v in micro],
            "weighted": [_masked_mean(v, present, true) for v in (precision, recall, f)],
        }
        for average, (p_avg, r_avg, f_avg) in averages.items():
            if i == 0:
                out[f"precision_{average}"] = p_avg
                out[f"recall_{average}"] = r_avg
            out[f"f{beta:g}_{average}"] = f_avg
        if i == 0:
            per_class.update(precision=precision, recall=recall)
        per_class[f"f{beta:g}"] = f
    total = m.sum(dim=(-2, -1)).to(torch.float64)
    out["accuracy"] = torch.where(total > 0, tp.sum(-1) / total.clamp(min=1), math.nan)
    has_true = true > 0
    out["balanced_accuracy"] = _masked_mean(tp / true.clamp(min=1).to(torch.float64), has_true)
    for key, values in per_class.items():
        for j, name in enumerate(names):
            out[f"{key}/{name}"] = values[:, j]
    return out


def percentile_intervals(
    replicates: dict[str, Tensor], confidence: float = 0.95
) -> dict[str, float]:
    """Percentile intervals: ``<key>_lo`` and ``<key>_hi`` are the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles (linear interpolation, NaN replicates left out; NaN if
    all are) of each key's replicate values."""
    if not 0 < confidence < 1:
        raise config_error("confidence", confidence, "not in (0, 1)", "use e.g. 0.95")
    if not replicates:
        return {}
    keys = list(replicates)
    values = torch.stack([replicates[k] for k in keys]).to(torch.float64).numpy()
    alpha = 1 - confidence
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows -> NaN
        lo, hi = np.nanquantile(values, [alpha / 2, 1 - alpha / 2], axis=1)
    out: dict[str, float] = {}
    for key, low, high in zip(keys, lo.tolist(), hi.tolist(), strict=True):
        out[f"{key}_lo"] = float(low)
        out[f"{key}_hi"] = float(high)
    return out
