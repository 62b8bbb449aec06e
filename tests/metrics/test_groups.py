"""Many/medium/few-shot groups against a direct NumPy computation of the definition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imblab.metrics.groups import GROUPS, group_members, group_scores, shot_groups


def reference_group(n: int, many_above: int, few_below: int) -> str:
    if n > many_above:
        return "many"
    if n < few_below:
        return "few"
    return "medium"


def test_liu_et_al_boundaries():
    counts = [0, 19, 20, 21, 100, 101, 5000]
    assert shot_groups(counts) == ["few", "few", "medium", "medium", "medium", "many", "many"]


@settings(max_examples=100, deadline=None)
@given(
    counts=st.lists(st.integers(0, 300), min_size=0, max_size=40),
    many_above=st.integers(0, 200),
    data=st.data(),
)
def test_shot_groups_match_definition(counts, many_above, data):
    few_below = data.draw(st.integers(0, many_above + 1))
    got = shot_groups(counts, many_above=many_above, few_below=few_below)
    assert got == [reference_group(n, many_above, few_below) for n in counts]


@pytest.mark.parametrize(
    ("many_above", "few_below", "match"),
    [(-1, 0, "thresholds must be >= 0"), (10, -2, "thresholds must be >= 0"), (10, 12, "overlap")],
)
def test_bad_thresholds_raise(many_above, few_below, match):
    with pytest.raises(ValueError, match=match):
        shot_groups([5, 50], many_above=many_above, few_below=few_below)


def test_negative_counts_raise():
    with pytest.raises(ValueError, match="counts must be >= 0"):
        shot_groups([3, -1])


@settings(max_examples=100, deadline=None)
@given(
    groups=st.lists(st.sampled_from(GROUPS), min_size=1, max_size=30),
    seed=st.integers(0, 2**32 - 1),
)
def test_group_scores_are_group_means(groups, seed):
    rng = np.random.default_rng(seed)
    recall, f1 = rng.random(len(groups)), rng.random(len(groups))
    recall[rng.random(len(groups)) < 0.2] = np.nan  # undefined: left out of the means
    f1[rng.random(len(groups)) < 0.2] = np.nan
    got = group_scores(recall, f1, groups)
    expected: dict[str, float] = {}
    for g in GROUPS:
        for key, values in (("accuracy", recall), ("f1_macro", f1)):
            defined = [values[i] for i, name in enumerate(groups) if name == g]
            defined = [v for v in defined if not np.isnan(v)]
            if defined:  # nothing to average: no key at all
                expected[f"{key}_{g}"] = sum(defined) / len(defined)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15)
        assert type(got[key]) is float


def test_undefined_values_are_left_out_and_empty_groups_log_nothing():
    nan = float("nan")
    got = group_scores([0.5, nan, 1.0, nan], [0.2, 0.4, nan, nan], ["many", "many", "few", "few"])
    assert got == {"accuracy_many": 0.5, "f1_macro_many": pytest.approx(0.3), "accuracy_few": 1.0}


def test_group_members_lists_every_group():
    got = group_members(["few", "many", "few"], ["a", "b", "c"])
    assert got == {"many": ["b"], "medium": [], "few": ["a", "c"]}
    with pytest.raises(ValueError, match="2 groups for 1 class names"):
        group_members(["few", "many"], ["a"])


def test_group_scores_bad_input_raises():
    with pytest.raises(ValueError, match="differ in length"):
        group_scores([0.1, 0.2], [0.1], ["many", "few"])
    with pytest.raises(ValueError, match="unknown group"):
        group_scores([0.1], [0.1], ["tail"])
