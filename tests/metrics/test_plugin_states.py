"""The pure states of the calibration and top-k plugins, and the count-derived one-vs-rest
accuracy and specificity, against direct NumPy implementations, torchmetrics and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import multilabel_confusion_matrix, top_k_accuracy_score
from torchmetrics.classification import MulticlassCalibrationError

from imblab.errors import ConfigError
from imblab.metrics import evaluate
from imblab.metrics.calibration import CalibrationState
from imblab.metrics.topk import TopKState
from imblab.plots import reliability_figure


def numpy_ece(probs: np.ndarray, target: np.ndarray, m: int) -> tuple[float, float]:
    """ECE (Guo et al. 2017) and class-wise ECE (Kull et al. 2019) with bins ((i-1)/M, i/M]."""
    n, c = probs.shape

    def ece_of(conf: np.ndarray, hit: np.ndarray) -> float:
        total = 0.0
        for i in range(1, m + 1):
            lo, hi = (i - 1) / m, i / m
            in_bin = (conf > lo) & (conf <= hi) if i > 1 else (conf <= hi)
            if in_bin.any():
                total += in_bin.sum() / n * abs(hit[in_bin].mean() - conf[in_bin].mean())
        return total

    top = ece_of(probs.max(axis=1), (probs.argmax(axis=1) == target).astype(float))
    classwise = np.mean([ece_of(probs[:, k], (target == k).astype(float)) for k in range(c)])
    return top, float(classwise)


def random_probs(seed: int, n: int, c: int, scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, c, n)
    logits = scale * rng.normal(size=(n, c))
    logits[np.arange(n), target] += rng.normal(1.0, 1.0, n)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32), target


def calibration_of(probs: np.ndarray, target: np.ndarray, m: int, chunk: int = 97):
    state = CalibrationState(probs.shape[1], m, input="probs")
    for start in range(0, len(target), chunk):
        state.update(
            torch.from_numpy(probs[start : start + chunk]),
            torch.from_numpy(target[start : start + chunk]),
        )
    return state.compute()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 400),
    c=st.integers(2, 12),
    m=st.sampled_from([1, 2, 10, 15, 20]),
)
def test_calibration_equals_the_numpy_definitions(seed: int, n: int, c: int, m: int) -> None:
    probs, target = random_probs(seed, n, c)
    got = calibration_of(probs, target, m)
    ece, classwise = numpy_ece(probs.astype(np.float64), target, m)
    assert got.ece() == pytest.approx(ece, abs=1e-12)
    assert got.classwise_ece() == pytest.approx(classwise, abs=1e-12)
    assert got.total == n


def test_ece_equals_torchmetrics_and_the_diagram_is_drawn() -> None:
    worst = 0.0
    for seed in range(20):
        probs, target = random_probs(seed, 2000, 10, scale=1.0 + seed / 5)
        got = calibration_of(probs, target, 15).ece()
        reference = MulticlassCalibrationError(10, n_bins=15, norm="l1")(
            torch.from_numpy(probs), torch.from_numpy(target)
        )
        worst = max(worst, abs(got - float(reference)))
    print(f"max |ECE - torchmetrics| over 20 cases: {worst:.3g}")
    assert worst < 1e-6  # torchmetrics sums in float32
    fig = reliability_figure(calibration_of(probs, target, 15), title="val, epoch 3")
    fig.savefig("/tmp/reliability.png", dpi=70)  # ~350 px wide, for a look


def test_logits_input_is_the_softmax_and_ignore_index_drops_samples() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 5, generator=g) * 3
    target = torch.randint(0, 5, (300,), generator=g)
    from_logits = CalibrationState(5, input="logits")
    from_logits.update(logits, target)
    from_probs = CalibrationState(5, input="probs")
    from_probs.update(torch.softmax(logits, dim=1), target)
    assert from_logits.compute().ece() == from_probs.compute().ece()
    masked = target.clone()
    masked[::3] = -100
    state = CalibrationState(5, input="logits", ignore_index=-100)
    state.update(logits, masked)
    keep = masked != -100
    probs = torch.softmax(logits[keep], dim=1).numpy()
    ece, classwise = numpy_ece(probs.astype(np.float64), target[keep].numpy(), 15)
    assert state.compute().ece() == pytest.approx(ece, abs=1e-12)
    assert state.compute().classwise_ece() == pytest.approx(classwise, abs=1e-12)
    with pytest.raises(ConfigError, match=r"^n_bins=0"):
        CalibrationState(5, 0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 300),
    c=st.integers(3, 12),
    rounding=st.sampled_from([None, 0, 1]),
)
def test_topk_equals_sklearn_ties_included(seed: int, n: int, c: int, rounding: int | None) -> None:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, c, n)
    scores = rng.normal(size=(n, c))
    if rounding is not None:  # many ties
        scores = np.round(scores, rounding)
    ks = sorted({1, 2, c - 1})
    state = TopKState(c, ks)
    for start in range(0, n, 64):
        state.update(
            torch.from_numpy(scores[start : start + 64]),
            torch.from_numpy(target[start : start + 64]),
        )
    got = state.compute()
    for k in ks:
        expected = top_k_accuracy_score(target, scores, k=k, labels=np.arange(c))
        assert got[k] == pytest.approx(expected, abs=1e-12), k


def test_topk_ks_must_be_below_the_number_of_classes() -> None:
    with pytest.raises(ConfigError, match=r"^ks=\[3, 10\]: k=10 >= the 10 classes"):
        TopKState(10, (3, 10))
    with pytest.raises(ConfigError, match=r"^ks=\[0\]"):
        TopKState(10, (0,))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 300), c=st.integers(2, 9))
def test_one_vs_rest_accuracy_and_specificity_equal_sklearn(seed: int, n: int, c: int) -> None:
    probs, target = random_probs(seed, n, c, scale=3.0)
    names = [f"k{i}" for i in range(c)]
    got = evaluate(probs, target, class_names=names, one_vs_rest=True)
    mcm = multilabel_confusion_matrix(target, probs.argmax(axis=1), labels=np.arange(c))
    tn, fp, _fn, tp = (mcm[:, i, j].astype(float) for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
    for i, name in enumerate(names):
        assert got[f"accuracy/{name}"] == pytest.approx((tp[i] + tn[i]) / n, abs=1e-12)
        if tn[i] + fp[i]:
            assert got[f"specificity/{name}"] == pytest.approx(tn[i] / (tn[i] + fp[i]), abs=1e-12)
        else:
            assert np.isnan(got[f"specificity/{name}"])
    assert "accuracy/k0" not in evaluate(probs, target, class_names=names)
