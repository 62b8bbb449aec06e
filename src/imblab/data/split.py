"""Train/val/test splits: the seeded stratified train/val split of in-memory labels, and the hash
split of keyed items (files) that keeps each item's split when items are added."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from imblab.data.imbalance import round_half_up
from imblab.data.summary import SPLITS
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


def unit_hash(seed: int, salt: str, key: str) -> float:
    """A uniform number in [0, 1) determined by (seed, salt, key) alone: the first 8 bytes of
    ``sha256("seed:salt:key")`` / 2^64."""
    digest = hashlib.sha256(f"{seed}:{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(
    keys: Sequence[str], val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """The split of each item of one class, from its own hash ``u = unit_hash(seed, "split",
    key)``: test if ``u < test_fraction``, val if ``u < test_fraction + val_fraction``, else
    train. An item's split depends on nothing but its key, so adding items never moves another.

    Every split with a positive fraction (and train) gets at least one item: when one would be
    empty, the item whose ``u`` lies nearest to that split's interval is moved there from a split
    that keeps at least one (this is the only case where adding items can move an item back).
    Needs ``len(keys) >=`` the number of such splits.
    """
    bounds = {"test": (0.0, test_fraction), "val": (test_fraction, test_fraction + val_fraction)}
    bounds["train"] = (test_fraction + val_fraction, 1.0)
    u = [unit_hash(seed, "split", k) for k in keys]
    out = ["test" if x < test_fraction else "val" if x < bounds["val"][1] else "train" for x in u]
    needed = [s for s in SPLITS if s == "train" or bounds[s][1] > bounds[s][0]]
    for split in needed:
        if split in out:
            continue
        low, high = bounds[split]
        donors = [i for i, s in enumerate(out) if out.count(s) > 1]
        best = min(donors, key=lambda i: (max(low - u[i], u[i] - high, 0.0), keys[i]))
        out[best] = split
    return out


def keep_smallest(keys: Sequence[str], k: int, seed: int) -> set[int]:
    """Positions of the ``k`` keys with the smallest ``unit_hash(seed, "keep", key)``: a seeded
    subsample that keeps its choices as far as possible when keys are added."""
    order = sorted(range(len(keys)), key=lambda i: (unit_hash(seed, "keep", keys[i]), keys[i]))
    return set(order[:k])
