"""Calibration as a streaming state: the top-label and class-wise expected calibration errors.

:class:`CalibrationState` keeps, for ``M`` equal-width confidence bins ``((m - 1)/M, m/M]``
(a confidence of exactly 0 goes into the first bin), float64 sums that are summed across
processes:

* top label (Guo et al. 2017): per bin the number of samples, the sum of their confidences
  ``max_c p_c`` and the number predicted correctly (prediction ``argmax_c p_c``, ties to the
  lowest index as in the count state);
* one-vs-rest per class (Kull et al. 2019): per class and bin the number of samples whose
  probability ``p_c`` falls into the bin, the sum of those probabilities and the number whose
  target is ``c``.

ECE = sum_m |correct_m - conf_m| / N; class-wise ECE = mean over classes of
sum_m |positives_cm - probs_cm| / N. Memory is O(C M), independent of N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from imblab.errors import ConfigError

__all__ = ["Calibration", "CalibrationState", "calibration_bins"]


def calibration_bins(scores: Tensor, n_bins: int) -> Tensor:
    """The bin ``m - 1`` in 0 .. M - 1 of each score in ``((m - 1)/M, m/M]`` (0 -> bin 0)."""
    return (torch.ceil(scores.to(torch.float64) * n_bins) - 1).clamp_(0, n_bins - 1).long()


@dataclass
class Calibration:
    """The summed calibration statistics of a stage (float64, on the CPU; not frozen:
    torchmetrics' ``compute`` wrapper rebuilds dataclasses).

    ``count``, ``confidence``, ``correct``: (M,) top-label sums per bin; ``class_count``,
    ``class_prob``, ``class_positive``: (C, M) one-vs-rest sums per class and bin.
    """

    count: Tensor
    confidence: Tensor
    correct: Tensor
    class_count: Tensor
    class_prob: Tensor
    class_positive: Tensor

    @property
    def n_bins(self) -> int:
        return int(self.count.shape[0])

    @property
    def total(self) -> float:
        return float(self.count.sum())

    def ece(self) -> float:
        """Top-label expected calibration error (NaN without samples)."""
        n = self.total
        return float((self.correct - self.confidence).abs().sum() / n) if n else float("nan")

    def classwise_ece(self) -> float:
        """Mean over classes of the one-vs-rest ECE (NaN without samples)."""
        n = self.total
        if not n:
            return float("nan")
        per_class = (self.class_positive - self.class_prob).abs().sum(dim=1) / n
        return float(per_class.mean())

    def bin_accuracy(self) -> Tensor:
        """(M,) accuracy of each bin (NaN for an empty bin)."""
        return self.correct / self.count.where(self.count > 0, torch.nan)

    def bin_confidence(self) -> Tensor:
        """(M,) mean confidence of each bin (NaN for an empty bin)."""
        return self.confidence / self.count.where(self.count > 0, torch.nan)


class CalibrationState(Metric):
    """Streaming calibration statistics of (N, C) scores; see the module docstring.

    Args:
        num_classes: C.
        n_bins: M, the equal-width confidence bins.
        input: ``"logits"`` (softmax applied) or ``"probs"``.
        ignore_index: a target value left out (as the count state's).

    ``update`` is a few ``index_add_`` on fixed-size tensors: no host sync on CUDA.
    """

    full_state_update = False
    count: Tensor
    confidence: Tensor
    correct: Tensor
    class_count: Tensor
    class_prob: Tensor
    class_positive: Tensor

    def __init__(
        self,
        num_classes: int,
        n_bins: int = 15,
        *,
        input: Literal["logits", "probs"] = "logits",
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
            raise ConfigError(f"n_bins={n_bins!r}: not a positive int; use e.g. 15")
        if input not in ("logits", "probs"):
            raise ConfigError(f"input={input!r}: unknown score kind; use 'logits' or 'probs'")
        self.num_classes = num_classes
        self.n_bins = n_bins
        self.input = input
        self.ignore_index = ignore_index
        m, c = n_bins, num_classes
        for name in ("count", "confidence", "correct"):
            self.add_state(name, torch.zeros(m, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("class_count", "class_prob", "class_positive"):
            self.add_state(name, torch.zeros(c * m, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, ids: Tensor | None = None) -> None:
        """Add one batch: ``preds`` (B, C) logits or probabilities, ``target`` (B,)."""
        x = preds.detach()
        p = torch.softmax(x.float(), dim=1) if self.input == "logits" else x
        p = p.to(torch.float64)
        y = target.detach().long()
        # weights instead of a boolean mask: no data-dependent shapes, so no host sync
        if self.ignore_index is None:
            w = torch.ones_like(y, dtype=torch.float64)
        else:
            w = (y != self.ignore_index).to(torch.float64)
            y = y.where(y != self.ignore_index, 0)
        m, c = self.n_bins, self.num_classes
        confidence, predicted = p.max(dim=1)
        bins = calibration_bins(confidence, m)
        self.count.index_add_(0, bins, w)
        self.confidence.index_add_(0, bins, confidence * w)
        self.correct.index_add_(0, bins, (predicted == y).to(torch.float64) * w)
        flat = (calibration_bins(p, m) + torch.arange(c, device=p.device) * m).flatten()
        wc = w[:, None].expand(-1, c)
        positive = torch.nn.functional.one_hot(y, c).to(torch.float64)
        self.class_count.index_add_(0, flat, wc.flatten())
        self.class_prob.index_add_(0, flat, (p * wc).flatten())
        self.class_positive.index_add_(0, flat, (positive * wc).flatten())

    def compute(self) -> Calibration:
        m, c = self.n_bins, self.num_classes
        return Calibration(
            self.count.cpu(),
            self.confidence.cpu(),
            self.correct.cpu(),
            self.class_count.cpu().view(c, m),
            self.class_prob.cpu().view(c, m),
            self.class_positive.cpu().view(c, m),
        )
