"""Backbones: feature extractors + linear head, built from the datamodule's shape."""

from __future__ import annotations

import torch
from torch import nn

from imblab.models.heads import classifier_head


class GlobalAvgPool(nn.Module):
    """(B, C, H, W) -> (B, C): the mean over H and W. Unlike ``AdaptiveAvgPool2d(1)`` its
    backward is deterministic on CUDA (``trainer.deterministic=true``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class SmallCNN(nn.Module):
    """Four 3x3 conv layers (BN + ReLU), two max-pools, global average pooling, linear head.

    Global average pooling makes it independent of the input size; for 28x28 MNIST it has
    about 70k parameters (``width=32``). ``head``: ``linear`` or ``cosine``
    (:func:`~imblab.models.heads.classifier_head`), after the dropout.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 32,
        dropout: float = 0.25,
        head: str = "linear",
    ) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        w = width
        self.features = nn.Sequential(
            *block(in_channels, w),
            *block(w, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            *block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            GlobalAvgPool(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), classifier_head(head, 2 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def init_head_bias(backbone: nn.Module, value: float) -> bool:
    """Set every bias entry of ``backbone``'s last ``nn.Linear`` (its classifier head) to
    ``value`` (e.g. the sigmoid class-balanced focal loss's ``-log(C - 1)``); False when the
    last linear layer has no bias or there is none (a cosine head), True otherwise."""
    linears = [m for m in backbone.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].bias is None:
        return False
    with torch.no_grad():
        linears[-1].bias.fill_(value)
    return True
