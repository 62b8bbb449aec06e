"""Paired comparisons over seeds: the intervals, p-values, multiple-comparison corrections,
verdicts and seed counts of ``imblab-compare --baseline`` (pure NumPy and SciPy).

A configuration A and the baseline B trained with the same seeds ``s = 1..n`` and tested on the
same test images give per-seed differences ``d_s = A_s - B_s``, with mean ``d`` and sample
variance ``s_d^2``. Two intervals of the true difference (:func:`paired_t`):

- ``method=seed``: ``SE^2 = s_d^2 / n`` with ``n - 1`` degrees of freedom, the paired Student-t
  (its p-value is :func:`scipy.stats.ttest_rel`'s). It covers the seed-to-seed variation of the
  difference *on this test set*: the part of the difference that the particular test images
  give every seed alike (a shared test-set effect) is inside ``d`` and not in the interval.
- ``method=seed+test``: ``SE^2 = s_d^2 / n + v_test``, ``v_test`` the variance of the seed-mean
  difference over test-set resamples (:func:`replicate_variance`: Poisson weights shared by
  every run, so the pairing on the test images is kept). It covers the seed-to-seed variation
  and the test set's sampling noise. The critical value is Cochran and Cox's (1950): the
  ``t_{n-1}`` and the normal quantile weighted by the two variance parts,
  ``(s_d^2 / n t_{n-1} + v_test z) / SE^2``, which is the paired t without ``v_test`` and the
  normal interval without seed spread. The Welch-Satterthwaite t (``df = SE^4 / ((s_d^2 / n)^2
  / (n - 1))``) was measured first and rejected: with 3 seeds and a test-set share of the
  variance of 3-30% its false verdicts reach 8% at a nominal 5% (an underestimated ``s_d``
  also raises its df); Cochran-Cox stays within 2.9-5.1% (docs/sweeps.md has the table).

Both assume the per-seed differences are independent and roughly normal (one seed that collapses
breaks that: docs/sweeps.md reports what it does to the error rates) and, for ``seed+test``,
that ``v_test`` is estimated well (a test set of hundreds of images or more, ``--n-boot`` in the
hundreds). The p-value is two-sided; :func:`adjust_p` corrects a family of them (Holm 1979,
Bonferroni); :func:`verdict` reads an adjusted p-value in a tag's direction;
:func:`seeds_needed` is the rough planning figure of how many seeds a clear answer would take.
Every function is vectorised where the simulation tests need it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

__all__ = [
    "CORRECTIONS",
    "METHODS",
    "Comparison",
    "adjust_p",
    "paired_power",
    "paired_t",
    "replicate_variance",
    "seeds_needed",
    "t_interval",
    "verdict",
]

Method = Literal["seed", "seed+test"]
Correction = Literal["holm", "bonferroni", "none"]
METHODS: tuple[Method, ...] = ("seed", "seed+test")
CORRECTIONS: tuple[Correction, ...] = ("holm", "bonferroni", "none")
#: the power :func:`seeds_needed` asks for, and the most seeds it considers
POWER = 0.8
MAX_SEEDS = 100

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class Comparison:
    """One paired comparison (:func:`paired_t`): the mean difference, its interval and two-sided
    p-value, with what they were computed from (``critical``: the interval's critical value)."""

    method: Method
    n: int
    diff: float
    lo: float
    hi: float
    p_value: float
    se: float
    critical: float
    seed_sd: float
    v_test: float


def _seed_weight(seed_part: Floats, v_test: Floats) -> Floats:
    """The seed part's share of ``SE^2`` (1 where ``SE = 0``)."""
    total = seed_part + v_test
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, seed_part / total, 1.0)


def _critical(weight: Floats, n: Floats, tail: ArrayLike) -> Floats:
    """Cochran-Cox: ``weight t_{n-1} + (1 - weight) z`` at upper-tail probability ``tail``."""
    return weight * stats.t.isf(tail, n - 1) + (1 - weight) * stats.norm.isf(tail)


def _p_value(t_abs: Floats, weight: Floats, n: Floats) -> Floats:
    """The two-sided p-value of ``|T| = t_abs``: the level at which the Cochran-Cox critical
    value equals ``t_abs``. Exactly the t and normal p-values at weights 1 and 0; between them
    (which bracket it) found on the log of the level by regula falsi alternating with
    bisection, to about 1e-12."""
    t_abs, weight, n = np.broadcast_arrays(t_abs, weight, n)
    exact_t = 2 * stats.t.sf(t_abs, n - 1)
    exact_z = 2 * stats.norm.sf(t_abs)
    p = np.where(weight == 0, exact_z, exact_t)
    mixed = (weight > 0) & (weight < 1) & np.isfinite(t_abs) & (t_abs > 0) & (exact_t > 0)
    if not mixed.any():
        return p
    t_m, w_m, n_m = t_abs[mixed], weight[mixed], n[mixed]

    def excess(log_level: Floats) -> Floats:  # decreasing in the level
        return _critical(w_m, n_m, np.exp(log_level) / 2) - t_m

    tiny = math.log(1e-300)
    with np.errstate(divide="ignore"):  # a normal p-value that underflows to 0: the floor
        lo = np.maximum(np.log(exact_z[mixed]), tiny)
    hi = np.log(exact_t[mixed])
    f_lo, f_hi = excess(lo), excess(hi)  # f_lo >= 0 >= f_hi: the root lies between
    tol = 1e-12 * np.maximum(t_m, 1)
    for step in range(400):
        if np.all((np.abs(f_hi) <= tol) | (np.abs(f_lo) <= tol) | (hi - lo <= 1e-13)):
            break
        # regula falsi, every other step a bisection: near the t bound excess() is far steeper
        # on the normal side, where a false-position step alone barely moves
        if step % 2:
            c = (lo + hi) / 2
        else:
            c = hi - f_hi * (hi - lo) / np.where(f_hi != f_lo, f_hi - f_lo, -1.0)
            c = np.clip(c, lo, hi)
        fc = excess(c)
        up = fc >= 0
        lo, f_lo = np.where(up, c, lo), np.where(up, fc, f_lo)
        hi, f_hi = np.where(up, hi, c), np.where(up, f_hi, fc)
    p[mixed] = np.exp(np.where(np.abs(f_lo) < np.abs(f_hi), lo, hi))
    return p


def t_interval(
    diff: ArrayLike,
    seed_var: ArrayLike,
    n: ArrayLike,
    v_test: ArrayLike,
    confidence: float,
) -> tuple[Floats, Floats, Floats, Floats]:
    """``(lo, hi, p_value, se)`` of mean differences ``diff`` with per-seed variance
    ``seed_var`` over ``n`` seeds plus a test-set variance ``v_test`` (0 for ``method=seed``),
    element-wise (arrays broadcast): ``SE^2 = seed_var / n + v_test``, ``diff -+ c SE`` with
    ``c`` the Cochran-Cox critical value at ``confidence`` (the paired t's when ``v_test = 0``),
    and the two-sided p-value at which that interval just reaches 0. With ``SE = 0``: the
    interval is ``[diff, diff]``, ``p`` is 0 for ``diff != 0`` and NaN for ``diff = 0`` (as
    ``scipy.stats.ttest_rel``)."""
    d, var, v = (np.asarray(x, dtype=np.float64) for x in (diff, seed_var, v_test))
    k = np.asarray(n, dtype=np.float64)
    seed_part = var / k
    se = np.sqrt(seed_part + v)
    weight = _seed_weight(seed_part, v)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_abs = np.abs(d) / se
    half = np.where(se == 0, 0.0, _critical(weight, k, (1 - confidence) / 2) * se)
    return d - half, d + half, _p_value(t_abs, weight, k), se


def paired_t(
    differences: ArrayLike, v_test: float | None = None, confidence: float = 0.95
) -> Comparison:
    """The paired comparison of per-seed ``differences`` (``A_s - B_s``, at least 2):
    ``method=seed`` without ``v_test``, else ``method=seed+test`` with that test-set variance
    (finite, >= 0). Raises ``ValueError`` for fewer than 2 differences, a NaN among them, a
    negative or NaN ``v_test`` or a ``confidence`` outside (0, 1)."""
    d = np.asarray(differences, dtype=np.float64).reshape(-1)
    if d.size < 2 or not np.isfinite(d).all():
        raise ValueError(f"need at least 2 finite per-seed differences, got {d.tolist()}")
    if v_test is not None and not (math.isfinite(v_test) and v_test >= 0):
        raise ValueError(f"v_test={v_test}: must be a finite variance >= 0")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: must be in (0, 1)")
    var = 0.0 if np.ptp(d) == 0 else float(d.var(ddof=1))  # equal values: no rounding spread
    v = 0.0 if v_test is None else float(v_test)
    lo, hi, p, se = t_interval(d.mean(), var, d.size, v, confidence)
    weight = _seed_weight(np.asarray(var / d.size), np.asarray(v))
    critical = _critical(weight, np.asarray(float(d.size)), (1 - confidence) / 2)
    return Comparison(
        method="seed" if v_test is None else "seed+test",
        n=int(d.size),
        diff=float(d.mean()),
        lo=float(lo),
        hi=float(hi),
        p_value=float(p),
        se=float(se),
        critical=float(critical),
        seed_sd=math.sqrt(var),
        v_test=v,
    )


def replicate_variance(replicate_differences: ArrayLike) -> float:
    """``v_test``: the sample variance (ddof 1), over the bootstrap replicates, of the seed-mean
    difference. ``replicate_differences`` is (n seeds, B replicates): ``A_s - B_s`` under each
    replicate's test-set weights (the same weights for every run). A replicate where any seed's
    difference is NaN (a metric undefined under those weights) is left out; NaN when fewer than
    2 replicates remain."""
    d = np.asarray(replicate_differences, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"expected (seeds, replicates), got shape {d.shape}")
    means = d.mean(axis=0)
    means = means[np.isfinite(means)]
    return float(means.var(ddof=1)) if means.size >= 2 else math.nan


def adjust_p(p_values: ArrayLike, correction: Correction = "holm") -> Floats:
    """The p-values of a family (the last axis) adjusted for multiple comparisons: ``holm``
    (Holm 1979, step-down: the i-th smallest of m becomes ``max_{j <= i} min(1, (m - j + 1)
    p_(j))``), ``bonferroni`` (``min(1, m p)``) or ``none``. NaN p-values are not in the family
    (``m`` counts the others) and stay NaN. Rejecting where the adjusted p-value is at most
    ``alpha`` is Holm's (or Bonferroni's) procedure at level ``alpha``."""
    p = np.asarray(p_values, dtype=np.float64)
    if correction == "none":
        return p.copy()
    finite = ~np.isnan(p)
    m = finite.sum(axis=-1, keepdims=True)
    if correction == "bonferroni":
        return np.where(finite, np.minimum(1.0, p * m), np.nan)
    if correction != "holm":
        raise ValueError(f"correction={correction!r}: use one of {list(CORRECTIONS)}")
    order = np.argsort(np.where(finite, p, np.inf), axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)  # NaNs last
    factor = m - np.arange(p.shape[-1])
    scaled = np.minimum(1.0, ranked * factor)
    stepped = np.maximum.accumulate(np.where(np.isnan(scaled), -np.inf, scaled), axis=-1)
    out = np.empty_like(p)
    np.put_along_axis(out, order, np.where(np.isnan(ranked), np.nan, stepped), axis=-1)
    return out


def verdict(diff: float, p_adjusted: float, alpha: float, higher_is_better: bool | None) -> str:
    """``better`` or ``worse`` (the difference in the tag's direction) when ``p_adjusted <
    alpha``, else ``not separable``; empty when the direction is unknown (None) or the p-value
    is NaN."""
    if higher_is_better is None or math.isnan(p_adjusted) or math.isnan(diff):
        return ""
    if p_adjusted >= alpha or diff == 0:
        return "not separable"
    return "better" if (diff > 0) == higher_is_better else "worse"


def paired_power(n: ArrayLike, diff: float, seed_sd: float, v_test: float, alpha: float) -> Floats:
    """The power of the two-sided paired test at level ``alpha`` with ``n`` seeds (array) when
    the true difference is ``diff``, the per-seed differences spread ``seed_sd`` and the
    test-set variance is ``v_test``: ``P(|T| > c)`` with ``c`` the critical value of
    :func:`t_interval` and ``T`` noncentral t with noncentrality ``|diff| / SE`` and, for the
    shape of its tails, the Welch-Satterthwaite df of the two parts (``n - 1`` without
    ``v_test``: the exact power of the paired t)."""
    k = np.asarray(n, dtype=np.float64)
    seed_part = np.full_like(k, seed_sd**2) / k
    v = np.full_like(k, v_test)
    se = np.sqrt(seed_part + v)
    with np.errstate(divide="ignore", invalid="ignore"):
        welch = np.where(seed_part > 0, se**4 / (seed_part**2 / (k - 1)), np.inf)
        df = np.where(v > 0, welch, k - 1)
        delta = np.where(se > 0, abs(diff) / se, np.inf if diff != 0 else 0.0)
    crit = _critical(_seed_weight(seed_part, v), k, alpha / 2)
    power = stats.nct.sf(crit, df, delta) + stats.nct.cdf(-crit, df, delta)
    return np.where(np.isinf(delta), 1.0, power)


def seeds_needed(
    diff: float, seed_sd: float, v_test: float, confidence: float
) -> tuple[int | None, str]:
    """The smallest number of seeds (2 to :data:`MAX_SEEDS`) at which the paired test at level
    ``1 - confidence`` has :data:`POWER` power for a true difference of ``|diff|``
    (:func:`paired_power`, ``seed_sd`` and ``v_test`` as observed): a rough planning figure, as
    good as the spread estimated from the seeds at hand. ``(None, why)`` when it is above
    :data:`MAX_SEEDS`, or when ``v_test`` alone keeps the power under :data:`POWER` however many
    seeds (then a larger test set, not more seeds, is what would help)."""
    alpha = 1 - confidence
    if not all(math.isfinite(x) for x in (diff, seed_sd, v_test)):
        return None, ""
    if diff == 0:
        return None, "no difference observed: no number of seeds gives it 80% power"
    if v_test > 0:
        limit = abs(diff) / math.sqrt(v_test)
        z = stats.norm.ppf(1 - alpha / 2)
        if stats.norm.sf(z - limit) + stats.norm.cdf(-z - limit) < POWER:
            return None, "test-set noise alone keeps the power under 80%: more seeds cannot help"
    n = np.arange(2, MAX_SEEDS + 1)
    enough = np.flatnonzero(paired_power(n, diff, seed_sd, v_test, alpha) >= POWER)
    if enough.size == 0:
        return None, f"more than {MAX_SEEDS} seeds for 80% power"
    return int(n[enough[0]]), ""
