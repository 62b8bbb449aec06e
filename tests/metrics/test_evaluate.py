"""evaluate() end to end against scikit-learn, and binned against exact mode."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from sklearn.metrics import roc_auc_score

from imblab.metrics import CountState, evaluate
from imblab.metrics.functional import auroc, auroc_tie_bound

from .conftest import assert_same_values, predictions, sklearn_summary, softmax

ZERO_DIVISIONS = (0.0, 1.0, math.nan)


def as_probabilities(p: np.ndarray) -> np.ndarray:
    """Rows rescaled to sum to 1 (all-zero rows made uniform), keeping the generators' ties,
    exact zeros and one-hot rows: rounded scores are not probabilities, which evaluate rejects."""
    total = p.sum(axis=1, keepdims=True)
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / p.shape[1])


@pytest.fixture(scope="module")
def imbalanced() -> tuple[np.ndarray, np.ndarray]:
    """6 classes with priors from 50% to 0 (class 5 is never a target), a fifth of the rows
    rounded to one decimal and rescaled to sum to 1 (ties, exact 0)."""
    rng = np.random.default_rng(7)
    y = rng.choice(6, size=700, p=[0.5, 0.25, 0.15, 0.07, 0.03, 0.0])
    logits = 2.0 * rng.normal(size=(700, 6))
    logits[np.arange(700), y] += 3.0
    p = softmax(logits)
    p[::5] = as_probabilities(np.round(p[::5], 1))
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
    p = as_probabilities(p)
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


def test_repeated_class_names_are_an_error(imbalanced):
    """#16 item 7: a repeated name would overwrite one class's per-class values."""
    p, y = imbalanced
    with pytest.raises(ValueError, match=r"^evaluate: class_names repeat \['a'\]: .*distinct"):
        evaluate(p, y, class_names=["a", "b", "a", "c", "d", "e"])
    with pytest.raises(ValueError, match=r"class_names repeat \['1'\]"):  # the same key f1/1
        evaluate(p, y, class_names=[0, 1, "1", 3, 4, 5])


@pytest.mark.parametrize("chunk_size", [0, -1, 2.5, True])
def test_chunk_size_below_one_is_a_one_line_error(imbalanced, chunk_size):
    """#16 item 9: 0 raised a bare range() error, negative values gave all-NaN metrics."""
    p, y = imbalanced
    with pytest.raises(ValueError) as err:
        evaluate(p, y, chunk_size=chunk_size)
    message = str(err.value)
    assert message.startswith(f"evaluate: chunk_size={chunk_size!r}: not a positive int")
    assert "\n" not in message


def _not_probabilities(rng: np.random.Generator, dtype: type) -> dict[str, np.ndarray]:
    logits = rng.normal(size=(200, 5)) * 3
    probs = softmax(logits).astype(dtype)
    above_one = probs.copy()
    above_one[17, 2] = 1.5
    off_sum = probs.copy()
    off_sum[33] *= 1.01  # a row summing to 1.01
    return {"logits": logits.astype(dtype), "above_one": above_one, "off_sum": off_sum}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scores_that_are_not_probabilities_are_an_error_naming_input_logits(dtype):
    """#16 item 8: logits passed as probabilities made binned AUROC collapse to 0.5."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=200)
    problems = {"logits": "negative values", "above_one": "above 1", "off_sum": "row 33 sums"}
    for kind, scores in _not_probabilities(rng, dtype).items():
        for thresholds in (None, 200):
            with pytest.raises(ValueError, match=r"not probabilities; pass input='logits'") as err:
                evaluate(scores, y, thresholds=thresholds, chunk_size=64)
            assert problems[kind] in str(err.value)
    logits = _not_probabilities(rng, dtype)["logits"]
    probs = torch.softmax(torch.from_numpy(logits), dim=1)
    assert_same_values(evaluate(logits, y, input="logits"), evaluate(probs, y), tol=0.0)


def test_negative_probabilities_name_input_logits():
    p = np.array([[0.5, 0.5], [1.2, -0.2]])
    with pytest.raises(ValueError, match=r"negative values .*pass input='logits'"):
        evaluate(p, np.array([0, 1]))


def test_row_sum_tolerance_depends_on_the_dtype():
    """float32 rows may be off 1 by 1e-3, float64 rows by 1e-5 (float32 probabilities stored as
    float64 pass)."""
    y = np.array([0, 1])
    row = np.array([[0.6, 0.4], [0.3, 0.7]])
    for off, ok32, ok64 in ((5e-4, True, False), (5e-6, True, True), (2e-3, False, False)):
        p = row * (1 + off)
        for dtype, ok in ((np.float32, ok32), (np.float64, ok64)):
            if ok:
                evaluate(p.astype(dtype), y)
            else:
                with pytest.raises(ValueError, match=r"row 0 sums to .*, not 1 within"):
                    evaluate(p.astype(dtype), y)
    float32_softmax = torch.softmax(torch.randn(10_000, 100) * 5, dim=1)
    evaluate(float32_softmax.double(), torch.randint(0, 100, (10_000,)))


_PEAK_MEMORY = """
import gc, json
import torch
from imblab.metrics import evaluate

def status(key):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key + ":")).split()[1]) * 1024

n, c = 500_000, 10
g = torch.Generator().manual_seed(0)
target = torch.randint(0, c, (n,), generator=g)
probs = torch.softmax(torch.randn(n, c, generator=g) * 3, dim=1)
evaluate(probs[:1000], target[:1000])
gc.collect()
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
evaluate(probs, target)
print(json.dumps({"added": status("VmHWM") - before, "input": probs.numel() * 4}))
"""


def test_exact_mode_peak_memory_is_a_small_multiple_of_the_input():
    """#16 item 16: exact mode peaked at ~20x its input (every score copied three times, all
    columns sorted at once with int64 indices and counts); now one column is sorted at a time.
    Peak RSS of a fresh process, 500k x 10 float32 scores (19 MiB), on Linux."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    assert measured["added"] <= 3 * measured["input"], measured
