"""Offline evaluation: a whole prediction set through the same count state as training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from imblab.metrics.bootstrap import BootstrapCounts, percentile_intervals, replicate_scores
from imblab.metrics.counts import CountState
from imblab.metrics.functional import summarize

__all__ = ["evaluate"]


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
    code path the training callbacks use.  ``thresholds=None`` keeps every score (exact mode,
    computed in the input's dtype, float32 at least); an int ``T`` uses the binned histogram.

    ``bootstrap=B`` (off by default) adds streaming Poisson-bootstrap percentile intervals
    ``<key>_lo`` / ``<key>_hi`` at ``confidence`` for every precision, recall and F-beta
    (:mod:`imblab.metrics.bootstrap`); the weights are drawn from ``(bootstrap_seed, ids)``,
    ``ids`` (N,) defaulting to ``0 .. N - 1``. ``one_vs_rest=True`` adds the per-class
    ``accuracy/<name>`` and ``specificity/<name>`` the training callbacks log. Calibration and
    top-k accuracy: :class:`~imblab.metrics.calibration.CalibrationState` and
    :class:`~imblab.metrics.topk.TopKState` (docs/metrics.md, "In a notebook").
    """
    preds = torch.as_tensor(probs)
    labels = torch.as_tensor(target)
    if preds.ndim != 2:
        raise ValueError(f"evaluate: expected probs (N, C), got shape {tuple(preds.shape)}")
    state = CountState(
        preds.shape[1],
        thresholds=thresholds,
        input=input,
        ignore_index=ignore_index,
        stage="evaluate",
    ).to(preds.device)
    boot = None
    if bootstrap:
        boot = BootstrapCounts(
            preds.shape[1], bootstrap, seed=bootstrap_seed, input=input, ignore_index=ignore_index
        ).to(preds.device)
        sample_ids = torch.arange(len(preds)) if ids is None else torch.as_tensor(ids)
        if sample_ids.shape != labels.shape:
            raise ValueError(f"evaluate: ids {tuple(sample_ids.shape)} != target shape")
        sample_ids = sample_ids.to(preds.device)
    # at least one (possibly empty) chunk, so that compute() follows an update
    for start in range(0, max(len(preds), 1), chunk_size):
        chunk = slice(start, start + chunk_size)
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
    if boot is not None:
        replicates = replicate_scores(
            boot.compute(), betas=betas, zero_division=zero_division, class_names=class_names
        )
        scores.update(percentile_intervals(replicates, confidence))
    return scores
