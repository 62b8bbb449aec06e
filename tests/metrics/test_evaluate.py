"""evaluate() end to end against scikit-learn, and binned against exact mode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from sklearn.metrics import roc_auc_score

from imblab.metrics import CountState, evaluate
from imblab.metrics.functional import auroc, auroc_tie_bound

from .conftest import assert_same_values, predictions, sklearn_summary, softmax

ZERO_DIVISIONS = (0.0, 1.0, math.nan)


@pytest.fixture(scope="module")
def imbalanced() -> tuple[np.ndarray, np.ndarray]:
    """6 classes with priors from 50% to 0 (class 5 is never a target), a fifth of the rows
    rounded to one decimal (ties, exact 0 and 1)."""
    rng = np.random.default_rng(7)
    y = rng.choice(6, size=700, p=[0.5, 0.25, 0.15, 0.07, 0.03, 0.0])
    logits = 2.0 * rng.normal(size=(700, 6))
    logits[np.arange(700), y] += 3.0
    p = softmax(logits)
    p[::5] = np.round(p[::5], 1)
    return p, y


@pytest.mark.parametrize("zero_division", ZERO_DIVISIONS)
def test_evaluate_matches_sklearn(imbalanced, zero_division):
    p, y = imbalanced
    names = ["a", "b", "c", "d", "e", "f"]
    got = evaluate(p, y, zero_division=zero_division, class_names=names)
    assert_same_values(
        got, sklearn_summary(p, y, 6, zero_division=zero_division, class_names=names)
    )


def test_evaluate_torch_float32_input(imbalanced):
    p, y = imbalanced
    p32 = p.astype(np.float32)
    got = evaluate(torch.from_numpy(p32), torch.from_numpy(y), betas=(1.0, 3.0))
    assert_same_values(got, sklearn_summary(p32, y, 6, betas=(1.0, 3.0)))


@settings(max_examples=60, deadline=None)
@given(data=predictions())
def test_evaluate_property_matches_sklearn(data):
    p, y, c = data
    for zero_division in ZERO_DIVISIONS:
        got = evaluate(p, y, zero_division=zero_division, chunk_size=97)
        assert_same_values(got, sklearn_summary(p, y, c, zero_division=zero_division))


def test_chunk_size_does_not_matter(imbalanced):
    p, y = imbalanced
    for thresholds in (None, 50):
        one = evaluate(p, y, thresholds=thresholds, chunk_size=len(y))
        assert_same_values(evaluate(p, y, thresholds=thresholds, chunk_size=13), one)


def test_logits_input_is_softmax_then_probs():
    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.normal(size=(500, 4)) * 5).float()
    y = torch.from_numpy(rng.integers(0, 4, size=500))
    probs = torch.softmax(logits, dim=1)
    for thresholds in (None, 200):
        got = evaluate(logits, y, input="logits", thresholds=thresholds)
        assert_same_values(got, evaluate(probs, y, thresholds=thresholds), tol=0.0)


def test_ignore_index_drops_samples(imbalanced):
    p, y = imbalanced
    masked = y.copy()
    masked[::5] = -100
    keep = masked != -100
    expected = sklearn_summary(p[keep], y[keep], 6)
    assert_same_values(evaluate(p, masked, ignore_index=-100, chunk_size=64), expected)


def test_binned_confusion_metrics_equal_exact(imbalanced):
    p, y = imbalanced
    exact, binned = evaluate(p, y), evaluate(p, y, thresholds=200)
    for key, value in exact.items():
        if not key.startswith(("auroc", "ap")):
            assert binned[key] == value or (math.isnan(value) and math.isnan(binned[key])), key


def realistic(
    n: int, c: int, overconfidence: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax (float32) of an imperfect, overconfident classifier's logits: class ``k`` has
    prior ~ 0.7^k, the true class gets a noisy margin (about 75% accuracy), and the logits are
    scaled by ``overconfidence`` so that some probabilities are exactly 1 in float32."""
    g = torch.Generator().manual_seed(seed)
    prior = 0.7 ** torch.arange(c, dtype=torch.float64)
    y = torch.multinomial(prior / prior.sum(), n, replacement=True, generator=g)
    logits = 2.0 * torch.randn(n, c, generator=g, dtype=torch.float64)
    logits[torch.arange(n), y] += 5.0 + 2.0 * torch.randn(n, generator=g, dtype=torch.float64)
    return torch.softmax(overconfidence * logits.float(), dim=1), y


@pytest.mark.parametrize("overconfidence", [1.0, 2.0, 2.5])
def test_binned_auroc_close_to_exact_on_realistic_predictions(overconfidence):
    probs, y = realistic(20_000, 10, overconfidence, seed=11)
    assert overconfidence == 1.0 or (probs == 1.0).any()
    exact, binned = CountState(10, thresholds=None, input="probs"), CountState(10, input="probs")
    for start in range(0, len(y), 4096):
        exact.update(probs[start : start + 4096], y[start : start + 4096])
        binned.update(probs[start : start + 4096], y[start : start + 4096])
    a_exact, a_binned = auroc(exact.compute()), auroc(binned.compute())
    assert (a_binned - a_exact).abs().max() <= 1e-3
    assert ((a_binned - a_exact).abs() <= auroc_tie_bound(binned.compute()) + 1e-12).all()
    for c in (0, 9):  # sklearn on the same float32 scores
        expected = roc_auc_score((y == c).numpy(), probs[:, c].numpy())
        assert math.isclose(float(a_exact[c]), expected, rel_tol=1e-12)


def test_empty_input_gives_nan():
    got = evaluate(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    assert math.isnan(got["accuracy"]) and math.isnan(got["auroc_macro"])
    assert got["support/0"] == 0.0
