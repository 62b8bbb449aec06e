"""Top-k accuracy as a streaming state, equal to scikit-learn's ``top_k_accuracy_score``.

A sample is a top-k hit iff the rank of its target's score is < k, where the rank counts the
classes with a higher score plus the classes with an equal score and a *higher* index: ties are
broken as scikit-learn breaks them (a stable ascending sort, reversed), so the result equals
``top_k_accuracy_score(target, scores, k=k)`` also with tied scores. The ranking uses the
scores as given (logits or probabilities: the same order, except where float32 softmax
saturates two classes to an equal probability).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from imblab.errors import ConfigError

__all__ = ["TopKState", "check_ks"]


def check_ks(ks: Sequence[int], num_classes: int | None = None, key: str = "ks") -> tuple[int, ...]:
    """``ks`` as a tuple of ints in 1 .. C - 1; a bad value is a one-line :class:`ConfigError`."""
    values = tuple(ks)
    if not values or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in values):
        raise ConfigError(
            f"{key}={list(values)}: not a non-empty list of ints >= 1; use e.g. [3, 5]"
        )
    if num_classes is not None and max(values) >= num_classes:
        raise ConfigError(
            f"{key}={list(values)}: k={max(values)} >= the {num_classes} classes, so every "
            f"sample is a top-k hit; use values below {num_classes}"
        )
    return values


class TopKState(Metric):
    """Streaming top-k hits for each k of ``ks``, summed across processes.

    ``compute()`` returns ``{k: accuracy}`` (NaN without samples).
    """

    full_state_update = False
    hits: Tensor
    total: Tensor
    _ks: Tensor

    def __init__(
        self,
        num_classes: int,
        ks: Sequence[int] = (3, 5),
        *,
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ks = check_ks(ks, num_classes)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("hits", torch.zeros(len(self.ks), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.register_buffer("_ks", torch.tensor(self.ks, dtype=torch.int64), persistent=False)

    def update(self, preds: Tensor, target: Tensor, ids: Tensor | None = None) -> None:
        """Add one batch: ``preds`` (B, C) scores, ``target`` (B,)."""
        s = preds.detach()
        y = target.detach().long()
        keep = None if self.ignore_index is None else y != self.ignore_index
        if keep is not None:
            y = y.where(keep, 0)
        own = s.gather(1, y[:, None])
        classes = torch.arange(s.shape[1], device=s.device)
        rank = (s > own).sum(dim=1) + ((s == own) & (classes > y[:, None])).sum(dim=1)
        hit = rank[:, None] < self._ks
        if keep is not None:
            hit &= keep[:, None]
            self.total += keep.sum()
        else:
            self.total += y.shape[0]
        self.hits += hit.sum(dim=0)

    def compute(self) -> dict[int, float]:
        total = int(self.total)
        hits = self.hits.tolist()
        return {
            k: (h / total if total else float("nan")) for k, h in zip(self.ks, hits, strict=True)
        }
