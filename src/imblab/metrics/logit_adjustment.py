"""Post-hoc logit adjustment (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021).

A model trained with plain cross-entropy on imbalanced data is evaluated on
``logits - tau * log(prior)``, ``prior`` the training class frequencies ``n_c / sum(n)``: the
prediction ``argmax_c f_c(x) - tau log pi_c`` favours rare classes, and ``tau = 1`` is the
Bayes-optimal rule for the balanced error when the softmax is calibrated.

Official code: google-research/google-research ``logit_adjustment/main.py`` (``mode=posthoc``)
subtracts ``log(base_probs**tau + 1e-12)``, ``base_probs`` the training class frequencies, for
one ``tau`` flag (default 1.0). Differences here: ``tau * log(prior)`` without the ``1e-12``
(which only matters for a class whose ``prior**tau`` is near 1e-12, e.g. one without training
samples; such a class is rejected instead), and ``tau`` may be tuned on validation over
:data:`TAU_GRID` (the official script takes tau as given; the paper studies tau in [0, 2]),
maximising balanced accuracy (the mean per-class recall, the balanced error the adjustment
targets); among equal maxima the smallest tau, the least adjustment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from imblab.errors import ConfigError, config_error
from imblab.metrics.functional import balanced_accuracy

__all__ = ["TAU_GRID", "AdjustedConfusion", "adjust", "adjustment_option", "best_tau", "log_prior"]

TAU_GRID = tuple(0.25 * i for i in range(9))
"""The taus ``eval.logit_adjustment=auto`` tries: 0, 0.25, .., 2 (0 = no adjustment)."""


def adjustment_option(value: object, key: str = "eval.logit_adjustment") -> float | str | None:
    """The option ``key`` (``eval.logit_adjustment``, ``test_logit_adjustment``) checked: None
    (off), ``"auto"`` (tau tuned on validation) or a finite tau >= 0; anything else is a
    :class:`ConfigError` naming ``key``."""
    if value is None or value == "auto":
        return "auto" if value else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        tau = float(value)
        if math.isfinite(tau) and tau >= 0:
            return tau
    raise config_error(
        key,
        value,
        "not null, auto or a number >= 0",
        "use null (off), auto (tau tuned on validation) or a tau such as 1.0",
    )


def log_prior(train_counts: Sequence[int], key: str = "eval.logit_adjustment") -> Tensor:
    """``log(n_c / sum(n))`` (C,) float64 of the training class counts; a class without
    training samples is a :class:`ConfigError` naming the option ``key`` (its log prior is
    -inf)."""
    counts = torch.as_tensor([int(n) for n in train_counts], dtype=torch.float64)
    if counts.numel() == 0:
        raise ConfigError(
            f"{key}: the model has no training class counts (train_counts); "
            f"evaluate a checkpoint of imblab-train, or set {key}=null"
        )
    empty = torch.nonzero(counts <= 0).flatten().tolist()
    if empty:
        raise ConfigError(
            f"{key}: classes {empty} have no training samples (log prior -inf); set {key}=null"
        )
    return torch.log(counts / counts.sum())


def adjust(logits: Tensor, log_prior: Tensor, tau: float) -> Tensor:
    """``logits - tau * log_prior``, in the logits' dtype and on their device."""
    return logits - (tau * log_prior).to(device=logits.device, dtype=logits.dtype)


class AdjustedConfusion(Metric):
    """One confusion matrix per tau of ``taus``: ``confmat[g, t, p]`` counts samples of true
    class ``t`` whose adjusted prediction ``argmax_c (logits - taus[g] * log_prior)`` is ``p``
    (ties: the lowest index). ``update(logits (N, C), target (N,), ids=None)`` (the count
    state's inputs; targets outside ``[0, C)``, e.g. ``ignore_index``, are left out);
    ``compute() -> (G, C, C)`` int64 on the CPU, summed across processes."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    confmat: Tensor
    shifts: Tensor

    def __init__(self, log_prior: Tensor, taus: Sequence[float] = TAU_GRID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.taus = tuple(float(t) for t in taus)
        c = int(log_prior.shape[0])
        self.num_classes = c
        shifts = torch.tensor(self.taus, dtype=torch.float64)[:, None] * log_prior[None, :]
        self.register_buffer("shifts", shifts, persistent=False)  # (G, C)
        g = len(self.taus)
        self.add_state("confmat", torch.zeros(g, c, c, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor, ids: Tensor | None = None) -> None:
        c = self.num_classes
        labels = target.detach().to(torch.int64)
        keep = (labels >= 0) & (labels < c)
        x = logits.detach()
        adjusted = x[None, :, :] - self.shifts.to(x.dtype)[:, None, :]  # (G, N, C)
        pred = adjusted.argmax(dim=2)  # (G, N)
        g = len(self.taus)
        cell = torch.where(keep, labels, 0) * c + pred  # (G, N)
        index = cell + torch.arange(g, device=cell.device)[:, None] * (c * c)
        weight = keep.to(torch.int64).expand(g, -1)
        self.confmat.view(-1).scatter_add_(0, index.reshape(-1), weight.reshape(-1))

    def compute(self) -> Tensor:
        return self.confmat.to("cpu", copy=True)


def best_tau(confmats: Tensor, taus: Sequence[float]) -> tuple[float, float]:
    """``(tau, balanced accuracy)`` of the (G, C, C) confusion matrices of ``taus`` with the
    largest balanced accuracy (the smallest tau among equal maxima); ``(nan, nan)`` without
    samples."""
    scores = [balanced_accuracy(m) for m in confmats]
    defined = [(s, i) for i, s in enumerate(scores) if not math.isnan(s)]
    if not defined:
        return math.nan, math.nan
    best = max(s for s, _ in defined)
    i = min(i for s, i in defined if s == best)
    return float(taus[i]), best
