"""Exact one-vs-rest AUROC and AP (imblab.metrics.exact_curves) against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from imblab.metrics import CountState
from imblab.metrics.exact_curves import (
    average_precision_bin_bound,
    curve_scores,
    one_vs_rest_areas,
)
from imblab.metrics.functional import average_precision

from .conftest import predictions, sklearn_summary


@settings(max_examples=80, deadline=None)
@given(data=predictions(max_n=400), chunk=st.integers(1, 64))
def test_areas_equal_sklearn_for_any_chunking(data, chunk):
    """Ties (rounded, constant, one-hot, saturated scores) across chunk boundaries included."""
    p, y, c = data
    for k in range(c):
        positive = y == k
        auroc, ap = one_vs_rest_areas(torch.from_numpy(p[:, k]), torch.from_numpy(positive), chunk)
        if 0 < positive.sum() < len(y):
            assert auroc == pytest.approx(roc_auc_score(positive, p[:, k]), abs=1e-12)
        else:
            assert math.isnan(auroc)
        if positive.any():
            assert ap == pytest.approx(average_precision_score(positive, p[:, k]), abs=1e-12)
        else:
            assert math.isnan(ap)


@settings(max_examples=40, deadline=None)
@given(data=predictions())
def test_curve_scores_are_summarize_curve_keys_from_sklearn(data):
    p, y, c = data
    names = [f"k{i}" for i in range(c)]
    expected = sklearn_summary(p, y, c, class_names=names)
    got = curve_scores(torch.from_numpy(p), torch.from_numpy(y), class_names=names, chunk_size=5)
    assert set(got) == {k for k in expected if k.startswith(("auroc", "ap"))}
    for key, value in got.items():
        assert type(value) is float
        assert (math.isnan(value) and math.isnan(expected[key])) or value == pytest.approx(
            expected[key], abs=1e-12
        ), key


def test_logits_are_softmaxed_in_their_dtype_and_ignore_index_dropped():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(300, 4)) * 4).astype(np.float32)
    y = rng.integers(0, 4, size=300)
    y[::7] = -1
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    got = curve_scores(
        torch.from_numpy(logits), torch.from_numpy(y), input="logits", ignore_index=-1
    )
    keep = y != -1
    for k in range(4):
        positive = y[keep] == k
        assert got[f"auroc/{k}"] == pytest.approx(
            roc_auc_score(positive, probs[keep, k]), abs=1e-12
        )
        assert got[f"ap/{k}"] == pytest.approx(
            average_precision_score(positive, probs[keep, k]), abs=1e-12
        )


@settings(max_examples=60, deadline=None)
@given(data=predictions(max_n=400), thresholds=st.sampled_from([2, 5, 20, 200]))
def test_binned_average_precision_is_within_its_bound(data, thresholds):
    p, y, c = data
    state = CountState(c, thresholds=thresholds, input="probs")
    state.update(torch.from_numpy(p), torch.from_numpy(y))
    counts = state.compute()
    binned, bound = average_precision(counts), average_precision_bin_bound(counts)
    for k in range(c):
        positive = y == k
        if not positive.any():
            assert math.isnan(binned[k]) and math.isnan(bound[k])
            continue
        exact = average_precision_score(positive, p[:, k])
        assert abs(float(binned[k]) - exact) <= float(bound[k]) + 1e-9
