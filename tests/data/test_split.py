"""Stratified train/val split: per-class proportions, disjointness, >= 1 in train, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from imblab.data.split import stratified_split
from imblab.errors import ConfigError


def shuffled_labels(per_class: list[int], seed: int) -> torch.Tensor:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


@settings(max_examples=60, deadline=None)
@given(
    per_class=st.lists(st.integers(1, 150), min_size=1, max_size=10),
    val_fraction=st.floats(0.0, 0.99, exclude_max=True),
    seed=st.integers(0, 2**31),
)
def test_split_properties(per_class: list[int], val_fraction: float, seed: int) -> None:
    labels = shuffled_labels(per_class, seed)
    train, val = stratified_split(
        labels, len(per_class), val_fraction, torch.Generator().manual_seed(seed), {}
    )
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))
    for c, n in enumerate(per_class):
        n_val = int((labels[val] == c).sum())
        n_train = int((labels[train] == c).sum())
        assert n_train >= 1 and n_train + n_val == n
        # round half up of val_fraction * n, unless that would empty the training part
        assert n_val == min(math.floor(val_fraction * n + 0.5), n - 1)
        assert abs(n_val - val_fraction * n) <= 0.5 or n_val == n - 1
    again = stratified_split(
        labels, len(per_class), val_fraction, torch.Generator().manual_seed(seed), {}
    )
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])


def test_split_seed_changes_val() -> None:
    labels = shuffled_labels([100] * 10, 0)
    _, a = stratified_split(labels, 10, 0.2, torch.Generator().manual_seed(0), {})
    _, b = stratified_split(labels, 10, 0.2, torch.Generator().manual_seed(1), {})
    assert len(a) == len(b) == 200 and not torch.equal(a, b)


def test_split_val_follows_training_distribution() -> None:
    labels = shuffled_labels([1000, 100, 10, 1], 0)
    train, val = stratified_split(labels, 4, 0.2, torch.Generator().manual_seed(0), {})
    assert torch.bincount(labels[val], minlength=4).tolist() == [200, 20, 2, 0]
    assert torch.bincount(labels[train], minlength=4).tolist() == [800, 80, 8, 1]


def test_split_empty_class_is_config_error_naming_the_source_keys() -> None:
    labels = shuffled_labels([10, 0, 10], 0)
    source = {"data.data_dir": "/d"}
    with pytest.raises(ConfigError, match=r"^data\.data_dir='/d': class 1 has no image .*data_dir"):
        stratified_split(labels, 3, 0.2, torch.Generator().manual_seed(0), source)
