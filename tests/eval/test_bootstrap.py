"""The streaming Poisson bootstrap: its weights, agreement with a plain numpy/scikit-learn
bootstrap of the same weights, invariance to chunking and order, and interval coverage."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    precision_recall_fscore_support,
)

from imblab.metrics import evaluate
from imblab.metrics.bootstrap import (
    BootstrapCounts,
    percentile_intervals,
    poisson_weights,
    replicate_scores,
)

BETAS = (0.5, 1.0, 2.0)


def test_weights_are_poisson_1_and_independent_across_replicates() -> None:
    n, b = 200_000, 8
    w = poisson_weights(torch.arange(n), seed=5, replicates=b).double().numpy()
    se = 1 / math.sqrt(n * b)  # order of the standard errors below
    assert abs(w.mean() - 1) < 5 * se and abs(w.var() - 1) < 5 * math.sqrt(2) * se * 1.5
    for k in range(4):  # P(K = k) = e^-1 / k!
        p = math.exp(-1) / math.factorial(k)
        assert abs((w == k).mean() - p) < 5 * math.sqrt(p * (1 - p) / (n * b))
    corr = np.corrcoef(w.T)[np.triu_indices(b, 1)]
    assert np.abs(corr).max() < 5 / math.sqrt(n)
    lagged = np.corrcoef(w[:-1, 0], w[1:, 0])[0, 1]  # neighbouring ids
    assert abs(lagged) < 5 / math.sqrt(n)


def test_weights_depend_only_on_seed_id_and_replicate() -> None:
    ids = torch.tensor([0, 7, 2**40 + 3, 12345678901])
    full = poisson_weights(ids, seed=1, replicates=50)
    assert torch.equal(full, poisson_weights(ids, seed=1, replicates=50))
    assert torch.equal(full[[2, 0]], poisson_weights(ids[[2, 0]], seed=1, replicates=50))
    assert torch.equal(full[:, :20], poisson_weights(ids, seed=1, replicates=20))
    assert not torch.equal(full, poisson_weights(ids, seed=2, replicates=50))
    assert full.dtype == torch.int64 and int(full.min()) >= 0


def _data(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Skewed targets (class c-1 absent) and noisy probabilities that favour the target."""
    rng = np.random.default_rng(seed)
    prior = 0.5 ** np.arange(c - 1)
    target = rng.choice(c - 1, size=n, p=prior / prior.sum())
    logits = rng.normal(size=(n, c)) * 1.5
    logits[np.arange(n), target] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs.astype(np.float64), target


def _numpy_bootstrap(
    pred: np.ndarray, target: np.ndarray, weights: np.ndarray, c: int, zero_division: float
) -> dict[str, list[float]]:
    """Replicate b = the data with sample i repeated w[i, b] times, scored by scikit-learn."""
    out: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        out.setdefault(key, []).append(float(value))

    for b in range(weights.shape[1]):
        idx = np.repeat(np.arange(len(target)), weights[:, b])
        yt, yp = target[idx], pred[idx]
        for i, beta in enumerate(BETAS):
            for average in ("macro", "micro", "weighted"):
                p, r, f, _ = precision_recall_fscore_support(
                    yt, yp, beta=beta, average=average, zero_division=zero_division
                )
                if i == 0:
                    add(f"precision_{average}", p)
                    add(f"recall_{average}", r)
                add(f"f{beta:g}_{average}", f)
            p, r, f, _ = precision_recall_fscore_support(
                yt, yp, beta=beta, labels=range(c), average=None, zero_division=zero_division
            )
            for j in range(c):
                if i == 0:
                    add(f"precision/{j}", p[j])
                    add(f"recall/{j}", r[j])
                add(f"f{beta:g}/{j}", f[j])
        add("accuracy", accuracy_score(yt, yp))
        with warnings.catch_warnings():  # "y_pred contains classes not in y_true"
            warnings.simplefilter("ignore")
            add("balanced_accuracy", balanced_accuracy_score(yt, yp))
    return out


@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_streaming_bootstrap_equals_a_plain_numpy_bootstrap(zero_division: float) -> None:
    n, c, b, seed = 300, 4, 25, 3
    probs, target = _data(n, c, seed=0)
    ids = np.arange(1000, 1000 + n)
    scores = evaluate(
        probs, target, bootstrap=b, ids=ids, bootstrap_seed=seed, zero_division=zero_division
    )
    weights = poisson_weights(torch.from_numpy(ids), seed, b).numpy()
    reference = _numpy_bootstrap(probs.argmax(axis=1), target, weights, c, zero_division)
    for key, values in reference.items():
        lo, hi = np.percentile(values, [2.5, 97.5])
        assert scores[f"{key}_lo"] == pytest.approx(lo, abs=1e-12), key
        assert scores[f"{key}_hi"] == pytest.approx(hi, abs=1e-12), key
    interval_keys = {k[: -len("_lo")] for k in scores if k.endswith("_lo")}
    assert interval_keys == set(reference)


def test_bootstrap_is_identical_under_any_chunking_and_order() -> None:
    n, c, b = 257, 4, 30
    probs, target = _data(n, c, seed=1)
    ids = np.arange(n)
    base = evaluate(probs, target, bootstrap=b, ids=ids, chunk_size=n)
    perm = np.random.default_rng(0).permutation(n)
    for chunk in (1, 7, 64):
        shuffled = evaluate(probs[perm], target[perm], bootstrap=b, ids=ids[perm], chunk_size=chunk)
        assert {k: v for k, v in shuffled.items() if k.endswith(("_lo", "_hi"))} == {
            k: v for k, v in base.items() if k.endswith(("_lo", "_hi"))
        }
    # the state: the same matrices whatever the split into batches (and processes: a sum)
    state = BootstrapCounts(c, b, input="probs")
    for part in np.array_split(perm, 5):
        state.update(
            torch.from_numpy(probs[part]), torch.from_numpy(target[part]), torch.from_numpy(part)
        )
    whole = BootstrapCounts(c, b, input="probs")
    whole.update(torch.from_numpy(probs), torch.from_numpy(target), torch.from_numpy(ids))
    assert torch.equal(state.compute(), whole.compute())


def test_ignored_and_out_of_range_targets_get_no_weight() -> None:
    state = BootstrapCounts(3, 10, input="probs", ignore_index=-1)
    probs = torch.eye(3)[[0, 1, 2, 0]].double()
    state.update(probs, torch.tensor([0, 1, -1, 5]), torch.arange(4))
    w = poisson_weights(torch.arange(4), 0, 10)
    m = state.compute()
    assert torch.equal(m[:, 0, 0], w[0]) and torch.equal(m[:, 1, 1], w[1])
    assert int(m.sum()) == int(w[:2].sum())


# -- coverage -------------------------------------------------------------------------------

PRIOR = np.array([0.7, 0.2, 0.1])
# P(pred = p | true = t): rows t
CONFUSION = np.array([[0.90, 0.07, 0.03], [0.15, 0.75, 0.10], [0.10, 0.20, 0.70]])


def _population_scores() -> dict[str, float]:
    """Scores of the infinite population: the same formulas on the expected confusion matrix."""
    expected = torch.from_numpy(PRIOR[:, None] * CONFUSION * 1e12).round().to(torch.int64)
    return {k: float(v[0]) for k, v in replicate_scores(expected[None]).items()}


def _coverage(repetitions: int, n: int, b: int) -> tuple[dict[str, float], dict[str, float]]:
    """Fraction of repetitions whose 95% interval holds the population value, and the ratio of
    the bootstrap's standard-error estimate (interval width / 3.92) to the actual spread."""
    keys = ("f1_macro", "f1/2", "recall/1", "precision/0", "f2_weighted", "accuracy")
    truth = _population_scores()
    hits = dict.fromkeys(keys, 0)
    widths: dict[str, list[float]] = {k: [] for k in keys}
    points: dict[str, list[float]] = {k: [] for k in keys}
    for rep in range(repetitions):
        rng = np.random.default_rng(rep)
        target = rng.choice(3, size=n, p=PRIOR)
        pred = (rng.random(n)[:, None] > CONFUSION[target].cumsum(axis=1)).sum(axis=1)
        state = BootstrapCounts(3, b, seed=rep, input="probs")
        state.update(torch.eye(3)[pred], torch.from_numpy(target), torch.arange(n))
        intervals = percentile_intervals(replicate_scores(state.compute()), 0.95)
        observed = np.zeros((3, 3), dtype=np.int64)
        np.add.at(observed, (target, pred), 1)
        point = replicate_scores(torch.from_numpy(observed)[None])
        for k in keys:
            lo, hi = intervals[f"{k}_lo"], intervals[f"{k}_hi"]
            hits[k] += lo <= truth[k] <= hi
            widths[k].append(hi - lo)
            points[k].append(float(point[k][0]))
    coverage = {k: hits[k] / repetitions for k in keys}
    scale = {k: np.mean(widths[k]) / 3.92 / np.std(points[k]) for k in keys}
    return coverage, scale


def _check_coverage(repetitions: int) -> None:
    coverage, scale = _coverage(repetitions, n=1000, b=200)
    # the count of covering repetitions is Binomial(R, 0.95) if the intervals are right: allow
    # 3.3 standard deviations (a 99.9% band) plus 0.01 for the percentile bootstrap's own
    # O(1/n) coverage error
    band = 3.3 * math.sqrt(0.95 * 0.05 / repetitions) + 0.01
    assert all(abs(v - 0.95) <= band for v in coverage.values()), (coverage, band)
    # and not by being too wide: the interval's implied standard error matches the spread of
    # the estimates across repetitions (its own relative error ~ 1 / sqrt(2 R))
    slack = 3 / math.sqrt(2 * repetitions) + 0.05
    assert all(abs(v - 1) <= slack for v in scale.values()), (scale, slack)


def test_interval_coverage_on_simulated_data() -> None:
    _check_coverage(repetitions=200)


@pytest.mark.slow
def test_interval_coverage_on_simulated_data_long() -> None:
    _check_coverage(repetitions=3000)
