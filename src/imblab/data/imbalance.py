"""Imbalance profiles: per-class target counts and seeded per-class subsampling.

Rounding rule for every profile: a real-valued target ``t`` becomes ``floor(t)``, but at least 1
when ``t > 0`` (a class the formula keeps is never emptied by rounding). Targets are then capped
at what each class has, so a short class yields what it has and never misaligns images and labels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from imblab.errors import ConfigError

log = logging.getLogger(__name__)

Profile = Literal["exponential", "step", "explicit", "binary"]
PROFILES: tuple[str, ...] = ("exponential", "step", "explicit", "binary")


def floor_at_least_one(target: float) -> int:
    """``floor(target)``, but 1 when ``0 < target < 1``; 0 for ``target <= 0``."""
    return max(1, math.floor(target)) if target > 0 else 0


def round_half_up(x: float) -> int:
    """``floor(x + 0.5)``: 2.5 -> 3 (Python's ``round`` would give 2)."""
    return math.floor(x + 0.5)


def num_minority_classes(minority_fraction: float, num_classes: int) -> int:
    """Number of minority classes of the step profile: ``round_half_up(minority_fraction * C)``."""
    return round_half_up(minority_fraction * num_classes)


def exponential_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """``n_c = n_max * rho^(-c / (C - 1))``, c = 0..C-1: class 0 largest, class C-1 n_max / rho."""
    if num_classes == 1:
        return [n_max]
    return [
        floor_at_least_one(n_max / imbalance_ratio ** (c / (num_classes - 1)))
        for c in range(num_classes)
    ]


def step_counts(
    n_max: int, num_classes: int, imbalance_ratio: float, minority_fraction: float
) -> list[int]:
    """Last ``round_half_up(minority_fraction * C)`` classes get ``n_max / rho``, the rest n_max."""
    n_minor = num_minority_classes(minority_fraction, num_classes)
    minor = floor_at_least_one(n_max / imbalance_ratio)
    return [n_max if c < num_classes - n_minor else minor for c in range(num_classes)]


def allocate(total: int, available: Sequence[int]) -> list[int]:
    """Split ``total`` over classes in proportion to ``available`` (largest remainder, ties to the
    lower class index); the parts sum to ``total`` and none exceeds its class when total <= sum."""
    pool = sum(available)
    if pool == 0:
        return [0] * len(available)
    parts = [total * a // pool for a in available]
    remainders = sorted(range(len(available)), key=lambda c: (-(total * available[c] % pool), c))
    for c in remainders[: total - sum(parts)]:
        parts[c] += 1
    return parts


def binary_counts(
    available: Sequence[int], positive_classes: Sequence[int], imbalance_ratio: float
) -> list[int]:
    """Per original class counts for ``positive_classes`` (label 1, the minority) vs the rest (0).

    With P positives and N negatives available: keep all N negatives and
    ``floor_at_least_one(N / rho)`` positives, so #negatives / #positives = rho (rho >= 1). When
    fewer than ``N / rho`` positives exist, keep all P and ``floor_at_least_one(P * rho)``
    negatives instead, so the ratio still holds. Each side is spread over its classes in
    proportion to their available counts (:func:`allocate`).
    """
    positive = set(positive_classes)
    pos_avail = [a if c in positive else 0 for c, a in enumerate(available)]
    neg_avail = [0 if c in positive else a for c, a in enumerate(available)]
    n_pos_avail, n_neg_avail = sum(pos_avail), sum(neg_avail)
    n_pos = floor_at_least_one(n_neg_avail / imbalance_ratio)
    n_neg = n_neg_avail
    if n_pos > n_pos_avail:
        n_pos = n_pos_avail
        n_neg = min(n_neg_avail, floor_at_least_one(n_pos_avail * imbalance_ratio))
    positives, negatives = allocate(n_pos, pos_avail), allocate(n_neg, neg_avail)
    return [p + n for p, n in zip(positives, negatives, strict=True)]


def scale_counts(class_counts: Sequence[int], n_max: int) -> list[int]:
    """Explicit counts rescaled so the largest becomes ``n_max``: ``n_c = cc_c * n_max / max(cc)``
    (used to give a test set the same shape as an explicit training profile)."""
    top = max(class_counts)
    return [floor_at_least_one(cc * n_max / top) for cc in class_counts]


def imbalance_counts(
    profile: Profile,
    available: Sequence[int],
    *,
    imbalance_ratio: float = 100.0,
    minority_fraction: float = 0.5,
    class_counts: Sequence[int] | None = None,
    positive_classes: Sequence[int] | None = None,
) -> list[int]:
    """Realised per-class counts of ``profile`` on a pool with ``available[c]`` images of class c.

    ``n_max = max(available)``; targets come from the profile's formula and are capped at
    ``available`` (capped classes are logged). ``explicit`` counts larger than a class has raise
    :class:`ConfigError` instead of being capped. ``binary`` returns counts per original class.
    """
    num_classes = len(available)
    n_max = max(available)
    if profile == "exponential":
        targets = exponential_counts(n_max, num_classes, imbalance_ratio)
    elif profile == "step":
        targets = step_counts(n_max, num_classes, imbalance_ratio, minority_fraction)
    elif profile == "binary":
        if positive_classes is None:
            raise ConfigError(
                "data.positive_classes=None: profile binary needs the positive classes; "
                "set data.positive_classes, e.g. [7]"
            )
        return binary_counts(available, positive_classes, imbalance_ratio)
    elif profile == "explicit":
        if class_counts is None:
            raise ConfigError(
                "data.class_counts=None: profile explicit needs one count per class; "
                f"set data.class_counts to {num_classes} integers"
            )
        targets = list(class_counts)
        for c, (want, have) in enumerate(zip(targets, available, strict=True)):
            if want > have:
                raise ConfigError(
                    f"data.class_counts={list(class_counts)}: class {c} asks for {want} images "
                    f"but only {have} are available; set class_counts[{c}] <= {have}"
                )
    else:
        raise ConfigError(f"data.profile={profile}: unknown profile; use one of {list(PROFILES)}")
    realised = [min(t, a) for t, a in zip(targets, available, strict=True)]
    for c, (t, r) in enumerate(zip(targets, realised, strict=True)):
        if r < t:
            log.info("profile %s: class %d capped at %d available (target %d)", profile, c, r, t)
    return realised


def select_per_class(
    labels: torch.Tensor, counts: Sequence[int], generator: torch.Generator
) -> torch.Tensor:
    """Sorted indices of a seeded random subset with ``counts[c]`` items of each class c.

    Raises ValueError when a class has fewer than ``counts[c]`` items (counts must be capped).
    """
    chosen = []
    for c, k in enumerate(counts):
        members = torch.nonzero(labels == c).flatten()
        if k > len(members):
            raise ValueError(f"class {c}: {k} requested, {len(members)} available")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.sort(torch.cat(chosen)).values


def official_order(labels: np.ndarray, num_classes: int, subset_seed: int) -> list[np.ndarray]:
    """The positions of each class's items in ``labels``, shuffled as the official long-tail
    code draws its subset (``kaidic/LDAM-DRW``, ``imbalance_cifar.py``,
    ``IMBALANCECIFAR10.gen_imbalanced_data`` after ``np.random.seed(rand_number)``): one
    ``np.random.RandomState(subset_seed)`` (the same MT19937 stream as the global seed) shuffles
    ``np.where(labels == c)[0]`` for c = 0, 1, ... in turn, every class, even one kept whole.
    The subset of class c is the first ``n_c`` of its order."""
    state = np.random.RandomState(subset_seed)
    out = []
    for c in range(num_classes):
        idx = np.where(np.asarray(labels, dtype=np.int64) == c)[0]
        state.shuffle(idx)
        out.append(idx)
    return out


def relabel_binary(labels: torch.Tensor, positive_classes: Sequence[int]) -> torch.Tensor:
    """1 where the label is in ``positive_classes``, else 0 (int64)."""
    return torch.isin(labels, torch.tensor(list(positive_classes), dtype=labels.dtype)).long()
