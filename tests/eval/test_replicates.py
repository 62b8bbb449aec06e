"""The test-set replicates of imblab-compare --baseline: each run's scores under Poisson-weighted
resamples of the test images (against scikit-learn with the same sample weights), and the
variance of the seed-mean difference they give (against the closed form for accuracy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from imblab.reports.paired import bootstrap_weights, replicate_metrics
from imblab.seed_stats import replicate_variance

C = 4
NAMES = ["a", "b", "c", "d"]


def predictions(rng: np.random.Generator, targets: np.ndarray, skill: float) -> np.ndarray:
    """Probabilities whose argmax is the target with probability about ``skill``."""
    logits = rng.normal(size=(len(targets), C))
    logits[np.arange(len(targets)), targets] += skill
    probs = np.exp(logits)
    return probs / probs.sum(1, keepdims=True)


def test_replicate_scores_are_scikit_learns_with_the_weights_as_sample_weights() -> None:
    rng = np.random.default_rng(0)
    targets = rng.choice(C, size=300, p=[0.5, 0.3, 0.15, 0.05])
    probs = predictions(rng, targets, 1.5)
    ids = np.arange(300) * 3 + 7
    weights = bootstrap_weights(ids, seed=5, n_boot=20)
    groups = {"many": [0, 1], "few": [2, 3]}
    keys = {"accuracy", "balanced_accuracy", "f1_macro", "recall/c", "accuracy_few", "f2_macro"}
    out = replicate_metrics(probs, targets, weights, NAMES, groups=groups, betas=[2.0], keys=keys)
    assert set(out) == keys and all(v.shape == (21,) for v in out.values())
    pred = probs.argmax(1)
    for b in range(21):
        w = np.ones(300) if b == 0 else weights[:, b - 1].astype(float)
        assert out["accuracy"][b] == pytest.approx(np.average(pred == targets, weights=w))
        assert out["balanced_accuracy"][b] == pytest.approx(
            balanced_accuracy_score(targets, pred, sample_weight=w)
        )
        assert out["f1_macro"][b] == pytest.approx(
            f1_score(targets, pred, average="macro", sample_weight=w, zero_division=0)
        )
        recall = recall_score(
            targets, pred, labels=range(C), average=None, sample_weight=w, zero_division=0
        )
        assert out["recall/c"][b] == pytest.approx(recall[2])
        present = [c for c in (2, 3) if w[targets == c].sum() > 0]  # classes with samples
        few = np.mean(recall[present]) if present else math.nan
        assert out["accuracy_few"][b] == pytest.approx(few, nan_ok=True)


def test_the_bootstrap_variance_of_a_seed_mean_accuracy_difference_is_the_closed_form() -> None:
    """Two configurations x 3 seeds on N test images: under Poisson(1) weights shared by every
    run, the replicate of the seed-mean accuracy difference is ``sum w_i d_i / sum w_i`` with
    ``d_i`` the image's seed-mean difference in correctness, whose variance is
    ``sum (d_i - mean d)^2 / N^2`` to first order (the delta method; Var w = 1)."""
    rng = np.random.default_rng(1)
    n_images, n_boot = 2000, 3000
    targets = rng.integers(0, C, size=n_images)
    ids = rng.permutation(10 * n_images)[:n_images]
    weights = bootstrap_weights(ids, seed=0, n_boot=n_boot)
    runs = {
        (config, seed): predictions(rng, targets, skill)
        for config, skill in (("A", 1.6), ("B", 1.2))
        for seed in range(3)
    }
    replicates = {
        key: replicate_metrics(p, targets, weights, NAMES, keys={"accuracy"})["accuracy"]
        for key, p in runs.items()
    }
    differences = np.stack([replicates["A", s][1:] - replicates["B", s][1:] for s in range(3)])
    v_test = replicate_variance(differences)
    correct = {key: (p.argmax(1) == targets).astype(float) for key, p in runs.items()}
    d = np.mean([correct["A", s] - correct["B", s] for s in range(3)], axis=0)
    closed_form = np.sum((d - d.mean()) ** 2) / n_images**2
    # Monte-Carlo error of a variance from 3,000 replicates: about sqrt(2 / 3000) = 2.6%
    assert v_test == pytest.approx(closed_form, rel=0.1)
    # the observed entry is the unweighted accuracy difference
    observed = np.mean([replicates["A", s][0] - replicates["B", s][0] for s in range(3)])
    assert observed == pytest.approx(d.mean())


def test_replicates_are_computed_in_chunks_without_changing_them(monkeypatch) -> None:
    import imblab.reports.paired as paired

    rng = np.random.default_rng(2)
    targets = rng.integers(0, C, size=200)
    probs = predictions(rng, targets, 1.0)
    weights = bootstrap_weights(np.arange(200), seed=1, n_boot=30)
    whole = replicate_metrics(probs, targets, weights, NAMES, keys={"f1_macro", "accuracy"})
    monkeypatch.setattr(paired, "_CHUNK", 200 * 7)  # 7 replicates at a time
    chunked = replicate_metrics(probs, targets, weights, NAMES, keys={"f1_macro", "accuracy"})
    for key in whole:
        np.testing.assert_array_equal(whole[key], chunked[key])
