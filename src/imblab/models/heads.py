"""Classifier heads a backbone ends with: ``linear`` or ``cosine`` (``model.head``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imblab.errors import config_error

HEADS: tuple[str, ...] = ("linear", "cosine")


class NormedLinear(nn.Module):
    """Cosine head: ``out = normalize(x) @ normalize(W, dim=0)``, the cosine similarity of the
    features with each class's weight column, in [-1, 1] (no bias). As ``NormedLinear`` of
    ``kaidic/LDAM-DRW`` (``models/resnet_cifar.py``), initialised the same way (uniform in
    [-1, 1], columns renormalised)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0))


def classifier_head(kind: str, in_features: int, num_classes: int) -> nn.Module:
    """``nn.Linear(in_features, num_classes)`` for ``linear``, :class:`NormedLinear` for
    ``cosine`` (the head Cao et al. use with the LDAM loss, whose scale ``s`` multiplies it)."""
    if kind not in HEADS:
        raise config_error("model.head", kind, "unknown head", f"use one of {', '.join(HEADS)}")
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    return NormedLinear(in_features, num_classes)
