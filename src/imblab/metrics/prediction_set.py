"""Offline evaluation: a whole prediction set through the same count state as training.

Input checks beyond the count state's (which rejects NaN/Inf, negative probabilities and targets
out of range): ``class_names`` must be unique (per-class keys would overwrite each other),
``chunk_size`` a positive int, and with ``input="probs"`` every row a probability vector: no
value below 0 or above ``1 + tol``, and every row summing to 1 within ``tol`` of the dtype
(:data:`ROW_SUM_TOLERANCE`), so that logits passed as probabilities fail instead of
collapsing the curve metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from imblab.metrics.bootstrap import BootstrapCounts, percentile_intervals, replicate_scores
from imblab.metrics.counts import CountState
from imblab.metrics.exact_curves import curve_scores
from imblab.metrics.functional import summarize

__all__ = ["ROW_SUM_TOLERANCE", "evaluate"]

ROW_SUM_TOLERANCE = {
    torch.float16: 1e-2,
    torch.bfloat16: 1e-2,
    torch.float32: 1e-3,
    torch.float64: 1e-5,
}
"""``|sum_c p[i, c] - 1|`` allowed per dtype with ``input="probs"``.  Softmax rows are exact to
a few ulp whatever C (each term's error is relative to it), so this only catches scores that
are not probabilities; float64's 1e-5 still passes float32 probabilities stored as float64."""

_LOGITS_FIX = "not probabilities; pass input='logits' for raw scores (softmax is applied)"


def _check_options(chunk_size: int, class_names: Sequence[str] | None) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"evaluate: chunk_size={chunk_size!r}: not a positive int; use e.g. 65536")
    if class_names is not None:
        names = [str(name) for name in class_names]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"evaluate: class_names repeat {repeated}: one class's per-class values would "
                "overwrite another's; give every class a distinct name"
            )


def _check_probabilities(chunk: Tensor, start: int) -> None:
    """Raise unless every row of ``chunk`` (rows ``start ..``) is a probability vector; NaN/Inf
    are left to the count state, which names them."""
    if chunk.numel() == 0:
        return
    tol = ROW_SUM_TOLERANCE.get(chunk.dtype, 1e-3)
    lo, hi = (float(v) for v in torch.aminmax(chunk))
    if lo < 0:
        raise ValueError(f"evaluate: probs contain negative values (min {lo:.6g}): {_LOGITS_FIX}")
    if math.isfinite(hi) and hi > 1 + tol:
        raise ValueError(f"evaluate: probs contain values above 1 (max {hi:.6g}): {_LOGITS_FIX}")
    off = (chunk.sum(dim=1, dtype=torch.float64) - 1).abs().nan_to_num_(0.0, 0.0, 0.0)
    worst = int(off.argmax())
    if float(off[worst]) > tol:
        total = float(chunk[worst].sum(dtype=torch.float64))
        raise ValueError(
            f"evaluate: probs row {start + worst} sums to {total:.6g}, not 1 within {tol:g} "
            f"({str(chunk.dtype).removeprefix('torch.')}): {_LOGITS_FIX}"
        )


def evaluate(
    probs: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    *,
    betas: Sequence[float] = (0.5, 1, 2),
    zero_division: float = 0.0,
    thresholds: int | None = None,
    class_names: Sequence[str] | None = None,
    input: Literal["logits", "probs"] = "probs",
    ignore_index: int | None = None,
    chunk_size: int = 2**16,
    bootstrap: int = 0,
    ids: Tensor | np.ndarray | None = None,
    bootstrap_seed: int = 0,
    confidence: float = 0.95,
    one_vs_rest: bool = False,
) -> dict[str, float]:
    """:func:`~imblab.metrics.functional.summarize` of ``probs`` (N, C) against ``target`` (N,).

    The data are streamed through :class:`CountState` in chunks of ``chunk_size`` samples, the
    code path the training callbacks use.  ``thresholds=None`` (exact mode) computes AUROC and AP
    from every score, equal to scikit-learn, in the input's dtype (float32 at least), sorting one
    class's scores at a time (:mod:`~imblab.metrics.exact_curves`): besides the input, peak
    memory is about one class column's sort (plus one copy of the input for logits); an int
    ``T`` uses the binned histogram of the count state.

    Raises ``ValueError`` for repeated ``class_names``, a ``chunk_size`` below 1, and with
    ``input="probs"`` for scores that are not probabilities (see the module docstring).

    ``bootstrap=B`` (off by default) adds streaming Poisson-bootstrap percentile intervals
    ``<key>_lo`` / ``<key>_hi`` at ``confidence`` for every precision, recall and F-beta
    (:mod:`imblab.metrics.bootstrap`); the weights are drawn from ``(bootstrap_seed, ids)``,
    ``ids`` (N,) defaulting to ``0 .. N - 1``. ``one_vs_rest=True`` adds the per-class
    ``accuracy/<name>`` and ``specificity/<name>`` the training callbacks log. Calibration and
    top-k accuracy: :class:`~imblab.metrics.calibration.CalibrationState` and
    :class:`~imblab.metrics.topk.TopKState` (docs/metrics.md, "In a notebook").
    """
    _check_options(chunk_size, class_names)
    preds = torch.as_tensor(probs)
    labels = torch.as_tensor(target)
    if preds.ndim != 2:
        raise ValueError(f"evaluate: expected probs (N, C), got shape {tuple(preds.shape)}")
    exact = thresholds is None
    state = CountState(
        preds.shape[1],
        # exact mode: the smallest grid for the confusion matrix and the input checks; the
        # curves come from curve_scores (the count state's exact mode copies every score)
        thresholds=2 if exact else thresholds,
        input=input,
        ignore_index=ignore_index,
        stage="evaluate",
        sync_on_compute=False,  # this process's predictions, also inside a DDP job
    ).to(preds.device)
    boot = None
    if bootstrap:
        boot = BootstrapCounts(
            preds.shape[1],
            bootstrap,
            seed=bootstrap_seed,
            input=input,
            ignore_index=ignore_index,
            sync_on_compute=False,
        ).to(preds.device)
        sample_ids = torch.arange(len(preds)) if ids is None else torch.as_tensor(ids)
        if sample_ids.shape != labels.shape:
            raise ValueError(f"evaluate: ids {tuple(sample_ids.shape)} != target shape")
        sample_ids = sample_ids.to(preds.device)
    # at least one (possibly empty) chunk, so that compute() follows an update
    for start in range(0, max(len(preds), 1), chunk_size):
        chunk = slice(start, start + chunk_size)
        if input == "probs":
            _check_probabilities(preds[chunk], start)
        state.update(preds[chunk], labels[chunk])
        if boot is not None:
            boot.update(preds[chunk], labels[chunk], sample_ids[chunk])
    scores = summarize(
        state.compute(),
        betas=betas,
        zero_division=zero_division,
        class_names=class_names,
        one_vs_rest=one_vs_rest,
    )
    if exact:
        scores.update(
            curve_scores(
                preds,
                labels,
                input=input,
                ignore_index=ignore_index,
                class_names=class_names,
            )
        )
    if boot is not None:
        replicates = replicate_scores(
            boot.compute(), betas=betas, zero_division=zero_division, class_names=class_names
        )
        scores.update(percentile_intervals(replicates, confidence))
    return scores
