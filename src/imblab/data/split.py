"""Train/val/test splits: the validation sources of in-memory labels (the balanced ``remainder``
of the long-tailed subset, the seeded stratified ``split``), and the hash split of keyed items
(files) that keeps each item's split when items are added."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import torch

from imblab.data.imbalance import round_half_up
from imblab.data.summary import SPLITS
from imblab.errors import ConfigError, config_error

#: where validation comes from (``data.val_source``)
VAL_SOURCES: tuple[str, ...] = ("remainder", "split", "none")


def val_count(n: int, val_fraction: float) -> int:
    """Validation size of a class with n items: ``min(round_half_up(val_fraction * n), n - 1)``,
    so at least one item stays in training (0 for an empty class)."""
    return max(0, min(round_half_up(val_fraction * n), n - 1))


def require_every_class(counts: Sequence[int], source: Mapping[str, object]) -> None:
    """Raise the one-line ConfigError when a class has 0 items (``counts`` per class) in the
    training source: ``source`` maps the dataset's own keys that choose that source (e.g.
    ``{"data.data_dir": ...}``; the caller's, so the fix names them) to their values."""
    empty = [c for c, n in enumerate(counts) if n == 0]
    if not empty:
        return
    keys = " / ".join(source) or "the dataset's source"
    what = f"class {empty[0]} has no image in the training source, so none to train on"
    if len(empty) > 1:
        what = f"classes {empty} have no image in the training source, so none to train on"
    fix = f"point {keys} to a source with images of every class"
    if not source:
        raise ConfigError(f"data: {what}; add images of every class to the training source")
    key, value = next(iter(source.items()))
    raise config_error(key, value, what, fix)


def stratified_split(
    labels: torch.Tensor,
    num_classes: int,
    val_fraction: float,
    generator: torch.Generator,
    source: Mapping[str, object],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (train, val) positions into ``labels``; class c sends ``val_count(n_c)`` to val.

    Raises the ConfigError of :func:`require_every_class` (naming the keys of ``source``) when
    a class has no item, i.e. would have 0 training samples.
    """
    members_of = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
    require_every_class([len(m) for m in members_of], source)
    train, val = [], []
    for members in members_of:
        members = members[torch.randperm(len(members), generator=generator)]
        k = val_count(len(members), val_fraction)
        val.append(members[:k])
        train.append(members[k:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(val)).values


def remainder_split(
    order: torch.Tensor, kept: int, k: int, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) of one class whose items, shuffled, are ``order`` (N of them), of which the
    long-tailed subset keeps the first ``kept``: with ``u = N - kept`` left unused, validation
    is ``order[kept : kept + k]`` when ``u >= k``, else ``order[kept - (k - u) :]`` and
    training ``order[: kept - (k - u)]`` (the class gives ``k - u`` of its own). No random draw.

    Raises the one-line ConfigError (naming class ``name``) when that leaves no training item.
    """
    n = len(order)
    short = max(0, k - (n - kept))
    if kept - short < 1:
        raise config_error(
            "data.val_per_class",
            k,
            f"class {name!r} has {n} images in the training source ({kept} in the subset), "
            f"{k} for validation leave none to train on",
            f"use data.val_per_class <= {n - 1}, or data.val_source=split",
        )
    return order[: kept - short], order[kept - short : kept - short + k]


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
