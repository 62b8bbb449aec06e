"""Seeded stratified train/val split; val follows the (imbalanced) training distribution."""

from __future__ import annotations

import torch

from imblab.data.imbalance import round_half_up
from imblab.errors import ConfigError


def val_count(n: int, val_fraction: float) -> int:
    """Validation size of a class with n items: ``min(round_half_up(val_fraction * n), n - 1)``,
    so at least one item stays in training (0 for an empty class)."""
    return max(0, min(round_half_up(val_fraction * n), n - 1))


def stratified_split(
    labels: torch.Tensor, num_classes: int, val_fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (train, val) positions into ``labels``; class c sends ``val_count(n_c)`` to val.

    Raises ConfigError when a class has no item, i.e. would have 0 training samples.
    """
    train, val = [], []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if len(members) == 0:
            raise ConfigError(
                f"data.val_fraction={val_fraction}: class {c} is left with 0 training samples "
                "(none in the imbalanced pool); use a smaller data.imbalance_ratio or more data "
                "(data.source=full)"
            )
        members = members[torch.randperm(len(members), generator=generator)]
        k = val_count(len(members), val_fraction)
        val.append(members[:k])
        train.append(members[k:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(val)).values
