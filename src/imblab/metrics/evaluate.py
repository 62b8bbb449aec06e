"""Offline evaluation: a whole prediction set through the same count state as training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

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
) -> dict[str, float]:
    """:func:`~imblab.metrics.functional.summarize` of ``probs`` (N, C) against ``target`` (N,).

    The data are streamed through :class:`CountState` in chunks of ``chunk_size`` samples, the
    code path the training callbacks use.  ``thresholds=None`` keeps every score (exact mode,
    computed in the input's dtype, float32 at least); an int ``T`` uses the binned histogram.
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
    # at least one (possibly empty) chunk, so that compute() follows an update
    for start in range(0, max(len(preds), 1), chunk_size):
        state.update(preds[start : start + chunk_size], labels[start : start + chunk_size])
    return summarize(
        state.compute(), betas=betas, zero_division=zero_division, class_names=class_names
    )
