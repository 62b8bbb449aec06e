"""Shared generators and the scikit-learn oracle for the metric tests."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from hypothesis import strategies as st
from sklearn import metrics as skm

KINDS = ("smooth", "rounded", "constant", "onehot", "one_prediction", "saturated", "mixed")


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_predictions(
    rng: np.random.Generator, n: int, c: int, kind: str, skew: float, absent: int
) -> tuple[np.ndarray, np.ndarray]:
    """float64 probabilities (n, c) and int64 targets (n,) of an imperfect classifier.

    ``skew`` sharpens the class prior, ``absent`` classes never occur as a target; ``kind`` picks
    the score pathology: rounded (ties, exact 0 and 1), constant, one-hot rows, a single
    predicted class, saturated softmax, or a mix.
    """
    prior = rng.dirichlet(np.ones(c)) ** (1.0 + skew)
    prior[rng.choice(c, size=min(absent, c - 1), replace=False)] = 0.0
    y = rng.choice(c, size=n, p=prior / prior.sum())
    logits = rng.normal(size=(n, c)) * rng.uniform(0.1, 6.0)
    logits[np.arange(n), y] += rng.uniform(0.0, 4.0)
    p = softmax(logits)
    if kind == "rounded":
        p = np.round(p, int(rng.integers(0, 3)))
    elif kind == "constant":
        p = np.full((n, c), 1.0 / c)
    elif kind == "onehot":
        p = np.eye(c)[rng.integers(0, c, size=n)]
    elif kind == "one_prediction":
        p[:, rng.integers(0, c)] += 2.0
        p /= p.sum(axis=1, keepdims=True)
    elif kind == "saturated":
        p = softmax(logits * 60.0)
    elif kind == "mixed":
        rows = rng.random(n)
        p = np.where((rows < 0.2)[:, None], np.round(p, 1), p)
        p = np.where((rows > 0.8)[:, None], np.eye(c)[rng.integers(0, c, size=n)], p)
    return p, y.astype(np.int64)


@st.composite
def predictions(
    draw: st.DrawFn, min_classes: int = 2, max_classes: int = 8, max_n: int = 300
) -> tuple[np.ndarray, np.ndarray, int]:
    """(probs float64 (N, C), target int64 (N,), C) with the pathologies of make_predictions."""
    c = draw(st.integers(min_classes, max_classes))
    n = draw(st.integers(1, max_n))
    kind = draw(st.sampled_from(KINDS))
    skew = draw(st.floats(0.0, 4.0))
    absent = draw(st.integers(0, c - 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p, y = make_predictions(rng, n, c, kind, skew, absent)
    return p, y, c


def sklearn_summary(
    probs: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    betas: Sequence[float] = (0.5, 1.0, 2.0),
    zero_division: float = 0.0,
    class_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """The expected ``summarize`` dict, every value from scikit-learn."""
    names = [str(c) for c in range(num_classes)] if class_names is None else list(class_names)
    pred = probs.argmax(axis=1)  # numpy: ties go to the first index too
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, beta in enumerate(betas):
            for average in ("macro", "micro", "weighted"):
                p, r, f, _ = skm.precision_recall_fscore_support(
                    target, pred, beta=beta, average=average, zero_division=zero_division
                )
                if i == 0:
                    out[f"precision_{average}"], out[f"recall_{average}"] = p, r
                out[f"f{beta:g}_{average}"] = f
            p, r, f, s = skm.precision_recall_fscore_support(
                target,
                pred,
                beta=beta,
                labels=range(num_classes),
                average=None,
                zero_division=zero_division,
            )
            for c, name in enumerate(names):
                if i == 0:
                    out[f"precision/{name}"], out[f"recall/{name}"] = p[c], r[c]
                    out[f"support/{name}"] = s[c]
                out[f"f{beta:g}/{name}"] = f[c]
        out["accuracy"] = skm.accuracy_score(target, pred)
        out["balanced_accuracy"] = skm.balanced_accuracy_score(target, pred)
        aurocs, aps, weights = [], [], []
        for c, name in enumerate(names):
            y = target == c
            auc = skm.roc_auc_score(y, probs[:, c]) if 0 < y.sum() < len(y) else math.nan
            ap = skm.average_precision_score(y, probs[:, c]) if y.any() else math.nan
            out[f"auroc/{name}"], out[f"ap/{name}"] = auc, ap
            aurocs.append(auc)
            aps.append(ap)
            weights.append(y.sum())
    for key, values in (("auroc", np.array(aurocs)), ("ap", np.array(aps))):
        ok = ~np.isnan(values)
        w = np.array(weights, dtype=np.float64)[ok]
        out[f"{key}_macro"] = values[ok].mean() if ok.any() else math.nan
        out[f"{key}_weighted"] = (values[ok] * w).sum() / w.sum() if ok.any() else math.nan
        out[f"{key}_num_defined"] = float(ok.sum())
    return {k: float(v) for k, v in out.items()}


def assert_same_values(got: dict[str, float], expected: dict[str, float], tol: float = 1e-12):
    """Same keys, every value a python float equal to the expected one (NaN where NaN)."""
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert type(got[key]) is float, key
        if math.isnan(value):
            assert math.isnan(got[key]), (key, got[key], value)
        else:
            assert math.isclose(got[key], value, rel_tol=tol, abs_tol=tol), (key, got[key], value)
