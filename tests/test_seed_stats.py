"""imblab.seed_stats against independent references: scipy.stats.ttest_rel and the textbook
paired-t interval, the normal interval, a direct transcription of Holm's (1979) step-down
procedure, G*Power's sample sizes of the paired t, and Monte-Carlo power."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

from imblab.seed_stats import (
    adjust_p,
    paired_power,
    paired_t,
    replicate_variance,
    seeds_needed,
    t_interval,
    verdict,
)

finite = st.floats(-1.0, 1.0, allow_nan=False, width=64)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(finite, min_size=2, max_size=12),
    st.lists(finite, min_size=12, max_size=12),
    st.sampled_from([0.8, 0.9, 0.95, 0.99]),
)
def test_method_seed_is_ttest_rel_and_the_textbook_paired_t_interval(a, noise, confidence):
    a = np.array(a)
    b = a - np.array(noise[: len(a)]) * 0.3 - 0.05
    d = a - b
    if np.ptp(d) < 1e-9:  # no spread: ttest_rel's p is 0 or NaN, covered below
        return
    result = paired_t(d, confidence=confidence)
    assert result.method == "seed" and result.n == len(d)
    assert result.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9, abs=1e-15)
    n = len(d)
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * d.std(ddof=1) / math.sqrt(n)
    assert result.lo == pytest.approx(d.mean() - half, rel=1e-9, abs=1e-12)
    assert result.hi == pytest.approx(d.mean() + half, rel=1e-9, abs=1e-12)
    assert result.diff == pytest.approx(d.mean(), abs=1e-15)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")
def test_no_spread_follows_ttest_rel() -> None:
    same = paired_t([0.25, 0.25, 0.25])  # exact in binary: no rounding spread
    assert same.lo == same.hi == 0.25 and same.p_value == 0.0
    assert stats.ttest_rel([1.25, 2.25, 3.25], [1.0, 2.0, 3.0]).pvalue == 0.0
    zero = paired_t([0.0, 0.0])
    assert math.isnan(zero.p_value) and zero.lo == zero.hi == 0.0


@settings(max_examples=100, deadline=None)
@given(st.floats(-0.1, 0.1), st.floats(1e-6, 1e-2), st.integers(2, 10))
def test_seed_test_without_seed_spread_is_the_normal_interval(diff, v_test, n):
    result = paired_t(np.full(n, diff), v_test)
    z = stats.norm.ppf(0.975)
    assert result.method == "seed+test"
    assert result.lo == pytest.approx(diff - z * math.sqrt(v_test), abs=1e-12)
    assert result.hi == pytest.approx(diff + z * math.sqrt(v_test), abs=1e-12)
    expected = 2 * stats.norm.sf(abs(diff) / math.sqrt(v_test))
    assert result.p_value == pytest.approx(expected, rel=1e-9, abs=1e-300)


@settings(max_examples=100, deadline=None)
@given(st.lists(finite, min_size=2, max_size=10), st.floats(1e-5, 0.05))
@example([1.0, 0.875], 1e-5)  # t = 14.5 with n = 2: the Illinois steps alone stalled at the t bound
def test_seed_test_is_cochran_cox_and_its_p_value_matches_its_interval(d, v_test):
    d = np.array(d) * 0.2
    if np.ptp(d) < 1e-6:
        return
    n, seed_part = len(d), d.var(ddof=1) / len(d)
    result = paired_t(d, v_test, confidence=0.95)
    se = math.sqrt(seed_part + v_test)
    # Cochran & Cox (1950): the critical values weighted by the variance parts
    critical = (seed_part * stats.t.ppf(0.975, n - 1) + v_test * stats.norm.ppf(0.975)) / se**2
    assert result.se == pytest.approx(se, rel=1e-12)
    assert result.lo == pytest.approx(d.mean() - critical * se, rel=1e-9, abs=1e-12)
    assert result.hi == pytest.approx(d.mean() + critical * se, rel=1e-9, abs=1e-12)
    # the interval at level 1 - p just reaches 0; p lies between the z and the t p-values
    if 1e-10 < result.p_value < 1:
        lo, hi, _, _ = t_interval(d.mean(), d.var(ddof=1), n, v_test, 1 - result.p_value)
        assert min(abs(float(lo)), abs(float(hi))) == pytest.approx(0.0, abs=1e-8 * se)
    t = abs(d.mean()) / se
    assert 2 * stats.norm.sf(t) * (1 - 1e-9) <= result.p_value
    assert result.p_value <= 2 * stats.t.sf(t, n - 1) * (1 + 1e-9)
    # without v_test the same differences give the paired t
    assert paired_t(d, 0.0).p_value == pytest.approx(stats.ttest_1samp(d, 0).pvalue, rel=1e-9)


def holm_1979(p: list[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure as published: order the m p-values, reject H_(1), ..., H_(k)
    for the largest k with p_(j) <= alpha / (m - j + 1) for every j <= k (NaN: not tested)."""
    tested = [i for i, x in enumerate(p) if not math.isnan(x)]
    order = sorted(tested, key=lambda i: p[i])
    m = len(order)
    rejected = [False] * len(p)
    for j, i in enumerate(order, start=1):
        if p[i] > alpha / (m - j + 1):
            break
        rejected[i] = True
    return rejected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(0, 1), st.just(math.nan), st.sampled_from([0.01, 0.02])),
        min_size=1,
        max_size=12,
    ),
    st.floats(0.001, 0.3),
)
def test_holm_equals_the_step_down_procedure_of_holm_1979(p, alpha):
    adjusted = adjust_p(p, "holm")
    assert [bool(a <= alpha) for a in adjusted] == holm_1979(p, alpha)
    assert all(math.isnan(a) == math.isnan(x) for a, x in zip(adjusted, p, strict=True))
    finite_p = [(x, a) for x, a in zip(p, adjusted, strict=True) if not math.isnan(x)]
    assert all(x <= a <= 1 for x, a in finite_p)


def test_holm_by_hand_bonferroni_and_none() -> None:
    p = [0.01, 0.04, math.nan, 0.03]
    # sorted 0.01, 0.03, 0.04 of m = 3: 0.03, 0.06, max(0.06, 0.04)
    np.testing.assert_allclose(adjust_p(p, "holm"), [0.03, 0.06, math.nan, 0.06])
    np.testing.assert_allclose(adjust_p(p, "bonferroni"), [0.03, 0.12, math.nan, 0.09])
    np.testing.assert_allclose(adjust_p(p, "none"), p)
    rows = adjust_p([[0.5, 0.001, 0.2, 0.01], [0.04, 0.04, 0.04, 0.04]], "holm")
    np.testing.assert_allclose(rows, [[0.5, 0.004, 0.4, 0.03], [0.16, 0.16, 0.16, 0.16]])
    with pytest.raises(ValueError, match="correction"):
        adjust_p(p, "sidak")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("diff", "p", "higher", "expected"),
    [
        (0.1, 0.01, True, "better"),
        (0.1, 0.01, False, "worse"),
        (-0.1, 0.01, True, "worse"),
        (-0.1, 0.01, False, "better"),
        (0.1, 0.2, True, "not separable"),
        (0.1, 0.01, None, ""),
        (0.1, math.nan, True, ""),
    ],
)
def test_verdict_reads_the_adjusted_p_in_the_tags_direction(diff, p, higher, expected):
    assert verdict(diff, p, 0.05, higher) == expected


@pytest.mark.parametrize(("effect", "expected"), [(1.0, 10), (0.5, 34), (0.8, 15)])
def test_seeds_needed_are_gpowers_paired_t_sample_sizes(effect: float, expected: int) -> None:
    # G*Power 3.1, "Means: difference between two dependent means (matched pairs)", two
    # tails, alpha 0.05, power 0.8: dz = 1 -> 10, dz = 0.5 -> 34, dz = 0.8 -> 15
    assert seeds_needed(effect * 0.02, 0.02, 0.0, 0.95) == (expected, "")


def test_power_is_what_a_simulation_of_the_test_finds() -> None:
    rng = np.random.default_rng(3)
    for n, diff, sd, v in ((4, 0.03, 0.02, 0.0), (6, 0.02, 0.02, 4e-5)):
        d = rng.normal(diff, sd, size=(40_000, n)) + rng.normal(0, math.sqrt(v), (40_000, 1))
        _, _, p, _ = t_interval(d.mean(1), d.var(1, ddof=1), n, v, 0.95)
        simulated = float(np.mean(p < 0.05))
        predicted = float(paired_power(np.array([n]), diff, sd, v, 0.05)[0])
        assert predicted == pytest.approx(simulated, abs=0.015), (n, v)


def test_seeds_needed_says_when_seeds_cannot_help() -> None:
    n, why = seeds_needed(0.004, 0.02, 1e-5, 0.95)  # |diff| / sqrt(v_test) = 1.26
    assert n is None and "test-set noise" in why
    n, why = seeds_needed(0.002, 0.05, 0.0, 0.95)
    assert n is None and "more than 100" in why
    assert seeds_needed(0.0, 0.05, 0.0, 0.95)[0] is None
    assert seeds_needed(0.01, 0.0, 0.0, 0.95) == (2, "")  # no spread at all: two seeds say it


def test_replicate_variance_leaves_out_undefined_replicates() -> None:
    d = np.array([[0.1, 0.3, math.nan, 0.2], [0.3, 0.1, 0.2, 0.0]])
    means = np.array([0.2, 0.2, 0.1])
    assert replicate_variance(d) == pytest.approx(means.var(ddof=1))
    assert math.isnan(replicate_variance(np.array([[0.1, math.nan]])))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        paired_t([0.1])
    with pytest.raises(ValueError, match="v_test"):
        paired_t([0.1, 0.2], -1.0)
    with pytest.raises(ValueError, match="confidence"):
        paired_t([0.1, 0.2], confidence=1.0)


def test_a_difference_far_beyond_the_normal_tail_warns_nothing() -> None:
    """A t of about 50 (seed part and test part mixed): the normal p-value underflows to 0,
    and the p-value is the t bound's floor side without a NumPy warning on the console."""
    d = np.array([0.30, 0.31, 0.29, 0.30, 0.305])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = paired_t(d, 1e-6)
    t = abs(d.mean()) / result.se
    assert stats.norm.sf(t) == 0.0
    assert 0.0 <= result.p_value <= 2 * stats.t.sf(t, len(d) - 1) * (1 + 1e-9)
