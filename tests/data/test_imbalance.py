"""Imbalance profiles: counts by formula (computed independently), capping, binary, selection."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from imblab.data.imbalance import (
    allocate,
    binary_counts,
    exponential_counts,
    imbalance_counts,
    relabel_binary,
    scale_counts,
    select_per_class,
    step_counts,
)
from imblab.errors import ConfigError

BALANCED = [500] * 10


def floor_min1(values: np.ndarray) -> list[int]:
    return [max(1, int(v)) for v in np.floor(values)]


@pytest.mark.parametrize(("n_max", "rho"), [(5000, 100.0), (400, 10.0), (6742, 50.0), (30, 7.5)])
def test_exponential_matches_formula(n_max: int, rho: float) -> None:
    expected = floor_min1(n_max * np.power(rho, -np.arange(10) / 9))
    assert exponential_counts(n_max, 10, rho) == expected
    assert expected[0] == n_max
    assert expected[-1] == math.floor(n_max / rho)


def test_exponential_known_values() -> None:
    # 5000 * 100 ** (-c / 9), floored, written out by hand
    assert exponential_counts(5000, 10, 100.0) == [
        5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50
    ]  # fmt: skip


def test_floor_but_at_least_one() -> None:
    counts = exponential_counts(50, 10, 1000.0)
    assert counts[-1] == 1 and min(counts) == 1  # 50 / 1000 = 0.05 -> 1
    assert step_counts(50, 10, 1000.0, 0.5)[-1] == 1


@given(
    n_max=st.integers(1, 10_000),
    rho=st.floats(1.0, 1000.0),
    classes=st.integers(2, 12),
)
def test_exponential_monotone_and_bounded(n_max: int, rho: float, classes: int) -> None:
    counts = exponential_counts(n_max, classes, rho)
    assert counts[0] == n_max
    assert all(a >= b for a, b in itertools.pairwise(counts))
    assert all(c >= 1 for c in counts)


@pytest.mark.parametrize(
    ("fraction", "n_minor"), [(0.5, 5), (0.25, 3), (0.1, 1), (0.9, 9), (0.34, 3), (0.35, 4)]
)
def test_step_matches_formula(fraction: float, n_minor: int) -> None:
    counts = step_counts(1000, 10, 20.0, fraction)
    assert counts == [1000] * (10 - n_minor) + [50] * n_minor


def test_profiles_capped_at_available() -> None:
    available = [100, 10, 100, 100, 100, 100, 100, 100, 100, 3]
    counts = imbalance_counts("exponential", available, imbalance_ratio=10.0)
    target = floor_min1(100 * np.power(10.0, -np.arange(10) / 9))
    assert counts == [min(t, a) for t, a in zip(target, available, strict=True)]
    assert counts[1] == 10 and counts[9] == 3
    step = imbalance_counts(
        "step", [80, 200, 5, *[200] * 7], imbalance_ratio=4, minority_fraction=0.5
    )
    assert step == [80, 200, 5, 200, 200, 50, 50, 50, 50, 50]  # n_max = 200


def test_explicit_as_given_and_too_large() -> None:
    wanted = [500, 400, 300, 200, 100, 50, 20, 10, 5, 1]
    assert imbalance_counts("explicit", BALANCED, class_counts=wanted) == wanted
    available = [500, 500, 500, 120, *[500] * 6]
    with pytest.raises(ConfigError) as err:
        imbalance_counts("explicit", available, class_counts=[200] * 10)
    message = str(err.value)
    assert message.startswith("data.class_counts=") and "\n" not in message
    assert "class 3" in message and "120" in message and "class_counts[3] <= 120" in message


@pytest.mark.parametrize(
    ("positive", "rho", "n_pos", "n_neg"),
    [
        ([7], 9.0, 500, 4500),  # 4500 / 9 = 500 positives: all of class 7
        ([7], 100.0, 45, 4500),
        ([3, 5], 4.0, 1000, 4000),
        ([3, 5], 1.0, 1000, 1000),  # too few positives: negatives cut to rho * 1000
        ([0, 1, 2, 3, 4, 5, 6, 7, 8], 10.0, 50, 500),
    ],
)
def test_binary_ratio(positive: list[int], rho: float, n_pos: int, n_neg: int) -> None:
    counts = binary_counts(BALANCED, positive, rho)
    assert sum(counts[c] for c in positive) == n_pos
    assert sum(counts[c] for c in range(10) if c not in positive) == n_neg
    assert all(0 <= n <= a for n, a in zip(counts, BALANCED, strict=True))
    assert imbalance_counts("binary", BALANCED, imbalance_ratio=rho, positive_classes=positive) == (
        counts
    )


def test_binary_spreads_positives_evenly() -> None:
    counts = binary_counts(BALANCED, [3, 5], 40.0)  # 4000 / 40 = 100 positives
    assert counts[3] == counts[5] == 50


def test_relabel_binary() -> None:
    labels = torch.tensor([0, 3, 5, 7, 3, 9])
    assert relabel_binary(labels, [3, 5]).tolist() == [0, 1, 1, 0, 1, 0]
    assert relabel_binary(labels, [3, 5]).dtype == torch.int64


@given(
    total=st.integers(0, 5000), available=st.lists(st.integers(0, 1000), min_size=1, max_size=12)
)
def test_allocate_sums_and_fits(total: int, available: list[int]) -> None:
    total = min(total, sum(available))
    parts = allocate(total, available)
    assert sum(parts) == total
    assert all(0 <= p <= a for p, a in zip(parts, available, strict=True))


def test_scale_counts_keeps_shape() -> None:
    assert scale_counts([5000, 2500, 500, 5], 1000) == [1000, 500, 100, 1]


def labelled(per_class: list[int]) -> torch.Tensor:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]


@settings(max_examples=30, deadline=None)
@given(available=st.lists(st.integers(0, 60), min_size=2, max_size=10), seed=st.integers(0, 99))
def test_select_per_class(available: list[int], seed: int) -> None:
    labels = labelled(available)
    counts = [a // 2 for a in available]
    idx = select_per_class(labels, counts, torch.Generator().manual_seed(seed))
    assert torch.bincount(labels[idx], minlength=len(available)).tolist() == counts
    assert len(set(idx.tolist())) == len(idx)
    again = select_per_class(labels, counts, torch.Generator().manual_seed(seed))
    assert torch.equal(idx, again)


def test_select_per_class_seed_changes_choice() -> None:
    labels = labelled([100] * 10)
    a = select_per_class(labels, [10] * 10, torch.Generator().manual_seed(0))
    b = select_per_class(labels, [10] * 10, torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)
