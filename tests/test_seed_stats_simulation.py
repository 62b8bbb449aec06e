"""The error rates of imblab-compare --baseline's verdicts, measured by simulation.

Each simulated comparison has n per-seed differences ``d_s = delta + e + u_s``: ``e`` the
test-set effect shared by every seed (the test images favour one configuration alike for all
seeds; variance ``tau^2``), ``u_s`` the seed-to-seed noise (variance ``sigma^2``), and a
test-variance estimate drawn from its sampling distribution, ``v_test = tau^2 chi2_nu / nu`` with
``nu = 999`` (the variance of 1,000 bootstrap replicates). Scenarios by the test set's share of
the variance of the seed mean, ``tau^2 / (tau^2 + sigma^2 / n)``: 0.1 (seed-dominated) and 0.9
(test-dominated). Fixed seeds, vectorised NumPy, 20,000 comparisons per cell (Monte-Carlo SE
about 0.15 points at 5%). Under A/A (no true difference) a "false verdict" is an adjusted
p < 0.05 (one comparison: the p-value itself); with a known difference, coverage is the share of
95% intervals that hold it.

``python tests/test_seed_stats_simulation.py`` prints the table of docs/sweeps.md, with the old
two-level percentile bootstrap of the MNIST-LT study (resampled seeds plus test-set noise) and
the Welch-Satterthwaite t (the df first specified for ``seed+test``) beside ``method=seed`` and
``method=seed+test``; :func:`test_the_docs_print_the_measured_rates` checks its cheap columns
against the docs.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from imblab.seed_stats import adjust_p, t_interval

SIMS = 20_000
NU = 999
SHARES = {"seed-dominated": 0.1, "test-dominated": 0.9}
SEEDS = (3, 5, 10)
COLLAPSE = 0.1  # heavy-tailed: each run collapses with this probability ...
DROP = 5.0  # ... losing this many seed standard deviations of its score
DOCS = Path(__file__).resolve().parents[1] / "docs" / "sweeps.md"


def draw(
    rng: np.random.Generator,
    sims: int,
    n: int,
    share: float,
    delta: float = 0.0,
    heavy: bool = False,
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(d (sims, n), v_test (sims,), tau^2)`` with ``Var(mean d) = 1`` (module docstring); with
    ``heavy`` each of the two runs of a seed collapses with probability :data:`COLLAPSE`."""
    tau2 = share
    sigma = math.sqrt((1 - share) * n)
    d = delta + rng.normal(0, math.sqrt(tau2), (sims, 1)) + rng.normal(0, sigma, (sims, n))
    if heavy:
        drop = DROP * sigma / math.sqrt(2)  # per run: its score's seed sd is sigma / sqrt(2)
        d -= drop * (rng.random((sims, n)) < COLLAPSE)  # the configuration's run collapses
        d += drop * (rng.random((sims, n)) < COLLAPSE)  # the baseline's run collapses
    v_test = tau2 * rng.chisquare(NU, sims) / NU
    return d, v_test, tau2


def intervals(d: np.ndarray, v_test: np.ndarray | float) -> tuple[np.ndarray, ...]:
    """``(lo, hi, p)`` of imblab's interval (``v_test = 0``: method=seed)."""
    lo, hi, p, _ = t_interval(d.mean(1), d.var(1, ddof=1), d.shape[1], v_test, 0.95)
    return lo, hi, p


def welch_p(d: np.ndarray, v_test: np.ndarray) -> np.ndarray:
    """The seed+test p-value with Welch-Satterthwaite df, as first specified (rejected)."""
    n = d.shape[1]
    seed_part = d.var(1, ddof=1) / n
    se2 = seed_part + v_test
    df = se2**2 / (seed_part**2 / (n - 1))
    return 2 * stats.t.sf(np.abs(d.mean(1)) / np.sqrt(se2), df)


def bootstrap_rate(d: np.ndarray, tau2: float, rng: np.random.Generator, b: int = 1000) -> float:
    """The false-verdict rate of the old two-level percentile bootstrap: each replicate resamples
    the seeds with replacement and adds the test set's noise (normal, variance ``tau^2``); the
    95% percentile interval excludes 0."""
    sims, n = d.shape
    rejected = 0
    for start in range(0, sims, 500):
        part = d[start : start + 500]
        draws = rng.integers(0, n, size=(len(part), b, n))
        boot = np.take_along_axis(part[:, None, :], draws, axis=2).mean(2)
        boot += rng.normal(0, math.sqrt(tau2), boot.shape)
        lo, hi = np.quantile(boot, [0.025, 0.975], axis=1)
        rejected += int(np.sum((lo > 0) | (hi < 0)))
    return rejected / sims


@functools.cache
def aa_rates(n: int, scenario: str, heavy: bool = False) -> dict[str, float]:
    """False-verdict rates under A/A of method=seed, the Welch t and method=seed+test."""
    rng = np.random.default_rng([n, list(SHARES).index(scenario), int(heavy)])
    d, v_test, _ = draw(rng, SIMS, n, SHARES[scenario], heavy=heavy)
    return {
        "seed": float(np.mean(intervals(d, 0.0)[2] < 0.05)),
        "welch": float(np.mean(welch_p(d, v_test) < 0.05)),
        "seed+test": float(np.mean(intervals(d, v_test)[2] < 0.05)),
    }


@pytest.mark.parametrize("scenario", list(SHARES))
@pytest.mark.parametrize("n", SEEDS)
def test_seed_test_false_verdicts_are_near_nominal_under_aa(n: int, scenario: str) -> None:
    rate = aa_rates(n, scenario)["seed+test"]
    assert 0.03 <= rate <= 0.06, rate


def coverage(n: int, scenario: str) -> float:
    """The share of seed+test 95% intervals that hold a known difference (2 standard errors)."""
    rng = np.random.default_rng([n, list(SHARES).index(scenario), 7])
    delta = 2.0
    d, v_test, _ = draw(rng, SIMS, n, SHARES[scenario], delta=delta)
    lo, hi, _ = intervals(d, v_test)
    return float(np.mean((lo <= delta) & (delta <= hi)))


@pytest.mark.parametrize("scenario", list(SHARES))
@pytest.mark.parametrize("n", SEEDS)
def test_seed_test_covers_a_known_difference(n: int, scenario: str) -> None:
    assert coverage(n, scenario) >= 0.94


def family_wise(n: int, scenario: str) -> tuple[float, float]:
    """Nine configurations against one baseline under A/A: every difference shares the
    baseline's test effect and seed noise (so they are correlated); a family errs when any of
    its nine gets a verdict. Returns the rate with Holm and without a correction."""
    sims, k, share = 10_000, 9, SHARES[scenario]
    rng = np.random.default_rng([n, list(SHARES).index(scenario), 9])
    half_tau, half_sigma = math.sqrt(share / 2), math.sqrt((1 - share) * n / 2)
    base = rng.normal(0, half_tau, (sims, 1, 1)) + rng.normal(0, half_sigma, (sims, 1, n))
    configs = rng.normal(0, half_tau, (sims, k, 1)) + rng.normal(0, half_sigma, (sims, k, n))
    d = (configs - base).reshape(sims * k, n)
    v_test = share * rng.chisquare(NU, sims * k) / NU
    p = intervals(d, v_test)[2].reshape(sims, k)
    holm = float(np.mean((adjust_p(p, "holm") < 0.05).any(axis=1)))
    return holm, float(np.mean((p < 0.05).any(axis=1)))


@pytest.mark.parametrize("scenario", list(SHARES))
@pytest.mark.parametrize("n", SEEDS)
def test_holm_keeps_the_family_wise_rate_of_nine_configurations(n: int, scenario: str) -> None:
    holm, uncorrected = family_wise(n, scenario)
    assert holm <= 0.06, holm
    assert uncorrected > 0.15  # nine uncorrected tests err far more often


def share_sweep(n: int) -> list[float]:
    """seed+test's A/A rate at test shares 0, 0.1, ..., 1 (Welch's in ``welch_sweep``)."""
    rates = []
    for i, share in enumerate(np.linspace(0, 1, 11)):
        d, v_test, _ = draw(np.random.default_rng([n, i, 11]), SIMS, n, float(share))
        rates.append(float(np.mean(intervals(d, v_test)[2] < 0.05)))
    return rates


def welch_sweep(n: int) -> list[float]:
    rates = []
    for i, share in enumerate(np.linspace(0, 1, 11)):
        d, v_test, _ = draw(np.random.default_rng([n, i, 11]), SIMS, n, float(share))
        with np.errstate(divide="ignore", invalid="ignore"):
            rates.append(float(np.mean(welch_p(d, v_test) < 0.05)))
    return rates


def docs_table() -> dict[tuple[int, str], list[str]]:
    """The rows of docs/sweeps.md's table of measured rates: (n, scenario) -> its cells."""
    text = DOCS.read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].isdigit():
            rows[(int(cells[0]), cells[1])] = cells[2:]
    return rows


def percent(cell: str) -> float:
    match = re.fullmatch(r"([\d.]+)%", cell)
    assert match, cell
    return float(match.group(1)) / 100


def test_the_docs_print_the_measured_rates() -> None:
    """docs/sweeps.md's table (bootstrap, method=seed, Welch t, method=seed+test) shows what this
    simulation measures, the heavy-tailed scenario (reported, not bounded) included."""
    table = docs_table()
    expected = [(n, s, False) for n in SEEDS for s in SHARES]
    expected += [(n, "heavy-tailed", True) for n in SEEDS]
    assert set(table) == {(n, s) for n, s, _ in expected}
    for n, scenario, heavy in expected:
        rates = aa_rates(n, "seed-dominated" if heavy else scenario, heavy)
        _, seed, welch, seed_test = (percent(c) for c in table[(n, scenario)])
        for shown, measured in ((seed, "seed"), (welch, "welch"), (seed_test, "seed+test")):
            assert shown == pytest.approx(rates[measured], abs=0.0006), (n, scenario, measured)


def print_table() -> None:
    """The Markdown table of docs/sweeps.md (the bootstrap column takes a minute)."""
    print("| seeds | noise | old bootstrap | `method=seed` | Welch t | `method=seed+test` |")
    print("| --- | --- | --- | --- | --- | --- |")
    for scenario, heavy in (*((s, False) for s in SHARES), ("heavy-tailed", True)):
        for n in SEEDS:
            shares = "seed-dominated" if heavy else scenario
            rates = aa_rates(n, shares, heavy)
            rng = np.random.default_rng([n, list(SHARES).index(shares), int(heavy)])
            d, _, tau2 = draw(rng, SIMS, n, SHARES[shares], heavy=heavy)
            boot = bootstrap_rate(d, tau2, np.random.default_rng(n))
            cells = [boot, rates["seed"], rates["welch"], rates["seed+test"]]
            print(f"| {n} | {scenario} | " + " | ".join(f"{100 * c:.1f}%" for c in cells) + " |")
    print()
    for n in SEEDS:
        ours, welch = share_sweep(n), welch_sweep(n)
        covered = [coverage(n, s) for s in SHARES]
        holm, none = zip(*(family_wise(n, s) for s in SHARES), strict=True)
        print(
            f"{n} seeds, test shares 0-1: seed+test {100 * min(ours):.1f}-{100 * max(ours):.1f}%, "
            f"Welch t {100 * min(welch):.1f}-{100 * max(welch):.1f}%; coverage "
            f"{100 * min(covered):.1f}-{100 * max(covered):.1f}%; 9 configurations: Holm "
            f"{100 * max(holm):.1f}% at most, uncorrected "
            f"{100 * min(none):.0f}-{100 * max(none):.0f}%"
        )


if __name__ == "__main__":
    print_table()
