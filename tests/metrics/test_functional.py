"""The metric functions against scikit-learn (and the textbook F1 cases)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm
from torch.utils.tensorboard.summary import pr_curve_raw

from imblab.errors import ConfigError
from imblab.metrics import Counts, CountState
from imblab.metrics.functional import (
    accuracy,
    auroc,
    auroc_tie_bound,
    average_precision,
    averaged_prf,
    balanced_accuracy,
    binary_scores,
    curve_counts,
    matthews_corrcoef,
    per_class_prf,
    pr_curve_counts,
    roc_curves,
    summarize,
    worst_classes,
)

from .conftest import make_predictions, predictions

ZERO_DIVISIONS = (0.0, 1.0, math.nan)


def confmat_of(target: np.ndarray, pred: np.ndarray, c: int) -> torch.Tensor:
    confmat = np.zeros((c, c), dtype=np.int64)
    np.add.at(confmat, (target, pred), 1)
    return torch.from_numpy(confmat)


def same(got: float | torch.Tensor, expected, tol: float = 1e-12) -> bool:
    got_a = np.asarray(got, dtype=np.float64)
    return bool(
        np.allclose(
            got_a, np.asarray(expected, dtype=np.float64), rtol=tol, atol=tol, equal_nan=True
        )
    )


def counts_of(probs: np.ndarray, target: np.ndarray, thresholds: int | None) -> Counts:
    state = CountState(probs.shape[1], thresholds=thresholds, input="probs")
    state.update(torch.from_numpy(probs), torch.from_numpy(target))
    return state.compute()


@st.composite
def label_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    """Targets and predictions over C classes, some classes absent from either or both."""
    c = draw(st.integers(1, 7))
    n = draw(st.integers(1, 120))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    in_target = rng.choice(c, size=draw(st.integers(1, c)), replace=False)
    in_pred = rng.choice(c, size=draw(st.integers(1, c)), replace=False)
    target = rng.choice(in_target, size=n)
    pred = np.where(rng.random(n) < draw(st.floats(0, 1)), target, rng.choice(in_pred, size=n))
    return target, pred, c


# ---- precision / recall / F ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("tp", "fp", "fn", "f1"),
    [(20, 0, 0, 1.0), (25, 75, 0, 0.4), (25, 0, 75, 0.4), (0, 15, 10, 0.0)],
)
def test_textbook_f1(tp, fp, fn, f1):
    confmat = torch.tensor([[50, fp], [fn, tp]])  # class 1 is the positive class
    for zero_division in ZERO_DIVISIONS:
        assert per_class_prf(confmat, 1.0, zero_division)[2][1].item() == f1


@pytest.mark.parametrize("zero_division", ZERO_DIVISIONS)
def test_f1_without_tp_fp_fn_is_zero_division(zero_division):
    confmat = torch.tensor([[50, 0], [0, 0]])
    precision, recall, f1, support = per_class_prf(confmat, 1.0, zero_division)
    for value in (precision[1], recall[1], f1[1]):
        assert same(value, zero_division)
    assert support.tolist() == [50, 0]


@settings(max_examples=80, deadline=None)
@given(data=label_pairs(), beta=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.7]))
def test_prf_matches_sklearn(data, beta):
    target, pred, c = data
    confmat = confmat_of(target, pred, c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for zero_division in ZERO_DIVISIONS:
            got = per_class_prf(confmat, beta, zero_division)
            expected = skm.precision_recall_fscore_support(
                target,
                pred,
                beta=beta,
                labels=range(c),
                average=None,
                zero_division=zero_division,
            )
            assert all(same(g, e) for g, e in zip(got, expected, strict=True))
            assert got[3].dtype == torch.int64
            for average in ("macro", "micro", "weighted"):
                got_avg = averaged_prf(confmat, beta, zero_division, average)
                exp_avg = skm.precision_recall_fscore_support(
                    target, pred, beta=beta, average=average, zero_division=zero_division
                )[:3]
                assert all(type(g) is float for g in got_avg)
                assert same(got_avg, exp_avg), (average, zero_division, got_avg, exp_avg)


@settings(max_examples=80, deadline=None)
@given(data=label_pairs())
def test_accuracy_balanced_accuracy_and_mcc_match_sklearn(data):
    target, pred, c = data
    confmat = confmat_of(target, pred, c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert same(accuracy(confmat), skm.accuracy_score(target, pred))
        assert same(balanced_accuracy(confmat), skm.balanced_accuracy_score(target, pred))
        assert same(matthews_corrcoef(confmat), skm.matthews_corrcoef(target, pred))


def test_balanced_accuracy_leaves_out_classes_absent_from_targets():
    target = np.array([0, 0, 0, 1, 1, 3])
    pred = np.array([0, 2, 2, 1, 3, 3])  # class 2 only predicted, 4 nowhere
    confmat = confmat_of(target, pred, 5)
    assert balanced_accuracy(confmat) == pytest.approx((1 / 3 + 1 / 2 + 1) / 3, abs=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert same(balanced_accuracy(confmat), skm.balanced_accuracy_score(target, pred))


def test_bad_arguments_raise():
    confmat = torch.eye(3, dtype=torch.int64)
    with pytest.raises(ConfigError, match=r"^zero_division=0.5: "):
        per_class_prf(confmat, 1.0, 0.5)
    with pytest.raises(ConfigError, match=r"^beta=-1: "):
        per_class_prf(confmat, -1, 0.0)
    with pytest.raises(ConfigError, match=r"^average='binary': "):
        averaged_prf(confmat, 1.0, 0.0, "binary")  # type: ignore[arg-type]


# ---- curves, exact mode -------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(data=predictions(max_n=200))
def test_exact_curves_match_sklearn(data):
    p, y, c = data
    counts = counts_of(p, y, thresholds=None)
    got_auroc, got_ap = auroc(counts), average_precision(counts)
    tps, fps, thresholds = curve_counts(counts)
    curves = roc_curves(counts)
    assert torch.equal(auroc_tie_bound(counts).isnan(), got_auroc.isnan())
    for k in range(c):
        yk = y == k
        assert same(thresholds[k], np.unique(p[:, k])[::-1])
        at_or_above = p[:, k, None] >= thresholds[k].numpy()  # (N, distinct scores)
        assert torch.equal(tps[k], torch.from_numpy((at_or_above & yk[:, None]).sum(axis=0)))
        assert torch.equal(tps[k] + fps[k], torch.from_numpy(at_or_above.sum(axis=0)))
        fpr, tpr, thr = curves[k]
        assert thr[0] == math.inf and same(thr[1:], thresholds[k])
        if 0 < yk.sum() < len(yk):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exp_fpr, exp_tpr, exp_thr = skm.roc_curve(yk, p[:, k], drop_intermediate=False)
            assert same(fpr, exp_fpr) and same(tpr, exp_tpr) and same(thr, exp_thr)
            assert same(got_auroc[k], skm.roc_auc_score(yk, p[:, k]))
        else:
            assert math.isnan(got_auroc[k])
        if yk.any():
            assert same(got_ap[k], skm.average_precision_score(yk, p[:, k]))
        else:
            assert math.isnan(got_ap[k])


# ---- curves, binned mode ------------------------------------------------------------------


def quantized(p: np.ndarray, grid: torch.Tensor) -> np.ndarray:
    """Each score replaced by the grid threshold of its bin: t_k for t_k <= s < t_{k+1}."""
    g32 = grid.float()
    return g32[torch.bucketize(torch.from_numpy(p).float(), g32, right=True) - 1].double().numpy()


@settings(max_examples=60, deadline=None)
@given(data=predictions(max_n=200), t=st.sampled_from([2, 5, 30, 200]))
def test_binned_curves_are_the_exact_curves_of_quantized_scores(data, t):
    p, y, _ = data
    p = p.astype(np.float32)
    binned = counts_of(p, y, thresholds=t)
    exact = counts_of(p, y, thresholds=None)
    assert binned.thresholds is not None
    q = quantized(p, binned.thresholds)
    on_grid = counts_of(q, y, thresholds=None)
    torch.testing.assert_close(
        auroc(binned), auroc(on_grid), rtol=1e-12, atol=1e-12, equal_nan=True
    )
    torch.testing.assert_close(
        average_precision(binned),
        average_precision(on_grid),
        rtol=1e-12,
        atol=1e-12,
        equal_nan=True,
    )
    error = (auroc(binned) - auroc(exact)).abs()
    bound = auroc_tie_bound(binned)
    assert torch.equal(error.isnan(), bound.isnan())
    assert (error[~error.isnan()] <= bound[~bound.isnan()] + 1e-12).all()


def test_tie_bound_by_hand():
    # class 1: positives at 0.6, 0.6, 0.95; negatives at 0.6, 0.1 -> one bin holds 2 pos x 1 neg
    p1 = np.array([0.6, 0.6, 0.95, 0.6, 0.1])
    p = np.stack([1 - p1, p1], axis=1)
    y = np.array([1, 1, 1, 0, 0])
    bound = auroc_tie_bound(counts_of(p, y, thresholds=200))
    assert bound[1].item() == pytest.approx(0.5 * 2 * 1 / (3 * 2), abs=1e-15)
    assert auroc_tie_bound(counts_of(p, y, thresholds=None))[1].item() == 0.0


def test_binned_roc_starts_at_origin_and_ends_at_one():
    p = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.3, 0.7]])
    y = np.array([1, 0, 0, 1])
    curves = roc_curves(counts_of(p, y, thresholds=20))
    fpr, tpr, thr = curves[1]
    assert fpr.shape == tpr.shape == thr.shape == (21,)
    assert thr[0] == math.inf and (thr[1:-1] > thr[2:]).all() and thr[-1] == 0
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert fpr[1] == 0.5 and tpr[1] == 0.5  # the saturated scores, not lost above the grid
    assert same(auroc(counts_of(p, y, thresholds=20))[1], skm.roc_auc_score(y == 1, p[:, 1]))


def test_undefined_curves_are_nan():
    p = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0]])
    y = np.array([0, 0])
    for thresholds in (None, 10):
        counts = counts_of(p, y, thresholds)
        assert auroc(counts).isnan().all()
        ap = average_precision(counts)
        assert ap[0] == 1.0 and ap[1:].isnan().all()
        fpr, tpr, _ = roc_curves(counts)[0]
        assert fpr.isnan().all() and not tpr.isnan().any()


def test_pr_curve_counts_are_raw_counts_at_the_grid():
    p, y = make_predictions(np.random.default_rng(5), 300, 3, "rounded", skew=0.0, absent=0)
    p = p.astype(np.float32)
    counts = counts_of(p, y, thresholds=40)
    raw = pr_curve_counts(counts)
    assert len(raw) == 3
    assert counts.thresholds is not None
    s = torch.from_numpy(p)
    for k, r in enumerate(raw):
        positive = s[:, k, None] >= counts.thresholds.float()
        yk = torch.from_numpy(y == k)[:, None]
        assert torch.equal(r["tp"], (positive & yk).sum(0).double())
        assert torch.equal(r["fp"], (positive & ~yk).sum(0).double())
        assert torch.equal(r["fn"], (~positive & yk).sum(0).double())
        assert torch.equal(r["tn"], (~positive & ~yk).sum(0).double())
        assert torch.equal(r["precision"], r["tp"] / (r["tp"] + r["fp"]).clamp(min=1))
        assert torch.equal(r["recall"], r["tp"] / max(int(yk.sum()), 1))
        assert torch.equal(r["thresholds"], counts.thresholds)
    # exact mode: binned onto the default grid first
    exact_raw = pr_curve_counts(counts_of(p, y, thresholds=None))
    default_raw = pr_curve_counts(counts_of(p, y, thresholds=200))
    for got, expected in zip(exact_raw, default_raw, strict=True):
        assert all(torch.equal(got[key], expected[key]) for key in expected)


def test_pr_curve_counts_fit_tensorboard():
    p, y = make_predictions(np.random.default_rng(6), 50, 2, "smooth", skew=0.0, absent=0)
    raw = pr_curve_counts(counts_of(p, y, thresholds=30))[1]
    keys = ("tp", "fp", "tn", "fn", "precision", "recall")
    pb = pr_curve_raw("pr", *(raw[key].numpy() for key in keys), num_thresholds=30)
    assert pb.value[0].tag == "pr"


# ---- binary scores ------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.7])
@pytest.mark.parametrize("zero_division", ZERO_DIVISIONS)
def test_binary_scores_match_sklearn_in_both_modes(threshold, zero_division):
    rng = np.random.default_rng(8)
    y = (rng.random(400) < 0.15).astype(np.int64)
    s = np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1).astype(np.float32)
    s[:5] = np.float32(threshold)  # exactly at the threshold: predicted positive
    p = np.stack([1 - s, s], axis=1)
    pred = (torch.from_numpy(s) >= torch.tensor(threshold, dtype=torch.float32)).numpy()
    state = CountState(2, input="probs", binary_threshold=threshold)
    state.update(torch.from_numpy(p), torch.from_numpy(y))
    for beta in (0.5, 1.0, 2.0):
        expected = skm.precision_recall_fscore_support(
            y, pred, beta=beta, average="binary", zero_division=zero_division
        )[:3]
        for counts in (state.compute(), counts_of(p, y, thresholds=None)):
            got = binary_scores(counts, threshold, beta, zero_division)
            assert list(got) == ["precision", "recall", f"f{beta:g}"]
            assert same(list(got.values()), expected)


def test_binary_scores_undefined_and_off_grid():
    p = np.array([[0.9, 0.1], [0.8, 0.2]])
    y = np.array([0, 0])
    for zero_division in ZERO_DIVISIONS:
        got = binary_scores(counts_of(p, y, thresholds=None), 0.5, 1.0, zero_division)
        assert all(same(v, zero_division) for v in got.values())
    with pytest.raises(ValueError, match=r"threshold=0.42: not on the grid"):
        binary_scores(counts_of(p, y, thresholds=200), 0.42, 1.0, 0.0)


# ---- summarize ----------------------------------------------------------------------------


def test_summarize_keys_and_types():
    p, y = make_predictions(np.random.default_rng(9), 100, 3, "smooth", skew=0.0, absent=0)
    out = summarize(counts_of(p, y, 200), class_names=["cat", "dog", "eel"])
    averages = [
        f"{m}_{a}"
        for m in ("precision", "recall", "f0.5", "f1", "f2")
        for a in ("macro", "micro", "weighted")
    ]
    curves = [f"{m}_{a}" for m in ("auroc", "ap") for a in ("macro", "weighted", "num_defined")]
    per_class = [
        f"{m}/{n}"
        for m in ("precision", "recall", "f0.5", "f1", "f2", "support", "auroc", "ap")
        for n in ("cat", "dog", "eel")
    ]
    expected = {*averages, *curves, *per_class, "accuracy", "balanced_accuracy"}
    assert set(out) == expected
    assert all(type(v) is float for v in out.values())
    with pytest.raises(ConfigError, match=r"^class_names="):
        summarize(counts_of(p, y, 200), class_names=["cat"])
    with pytest.raises(ConfigError, match=r"^betas="):
        summarize(counts_of(p, y, 200), betas=())


@settings(max_examples=40, deadline=None)
@given(data=predictions(max_n=150), zero_division=st.sampled_from(ZERO_DIVISIONS))
def test_summarize_matches_sklearn(data, zero_division):
    """Every value of summarize (exact mode, one-vs-rest keys) against scikit-learn or, for the
    one-vs-rest accuracy and specificity, a direct NumPy count."""
    p, y, c = data
    names = [f"k{i}" for i in range(c)]
    got = summarize(
        counts_of(p, y, None), zero_division=zero_division, class_names=names, one_vs_rest=True
    )
    pred = p.argmax(axis=1)
    expected: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for beta in (0.5, 1.0, 2.0):
            for average in ("macro", "micro", "weighted"):
                prec, rec, f, _ = skm.precision_recall_fscore_support(
                    y, pred, beta=beta, average=average, zero_division=zero_division
                )
                expected.update({f"precision_{average}": prec, f"recall_{average}": rec})
                expected[f"f{beta:g}_{average}"] = f
            prec, rec, f, support = skm.precision_recall_fscore_support(
                y, pred, beta=beta, labels=range(c), average=None, zero_division=zero_division
            )
            for k, name in enumerate(names):
                expected[f"f{beta:g}/{name}"] = f[k]
                if beta == 0.5:
                    expected[f"precision/{name}"] = prec[k]
                    expected[f"recall/{name}"] = rec[k]
                    expected[f"support/{name}"] = support[k]
        expected["accuracy"] = skm.accuracy_score(y, pred)
        expected["balanced_accuracy"] = skm.balanced_accuracy_score(y, pred)
        positives = np.bincount(y, minlength=c)
        areas = {"auroc": np.full(c, np.nan), "ap": np.full(c, np.nan)}
        for k, name in enumerate(names):
            yk = y == k
            if 0 < yk.sum() < len(y):
                areas["auroc"][k] = skm.roc_auc_score(yk, p[:, k])
            if yk.any():
                areas["ap"][k] = skm.average_precision_score(yk, p[:, k])
            tp = np.sum(yk & (pred == k))
            fp, fn = np.sum(~yk & (pred == k)), np.sum(yk & (pred != k))
            tn = len(y) - tp - fp - fn
            expected[f"accuracy/{name}"] = (tp + tn) / len(y)
            expected[f"specificity/{name}"] = tn / (tn + fp) if tn + fp else math.nan
        for key, values in areas.items():
            defined = ~np.isnan(values)
            expected[f"{key}_num_defined"] = float(defined.sum())
            expected[f"{key}_macro"] = values[defined].mean() if defined.any() else math.nan
            w = positives[defined]
            expected[f"{key}_weighted"] = (
                (values[defined] * w).sum() / w.sum() if w.sum() else expected[f"{key}_macro"]
            )
            for k, name in enumerate(names):
                expected[f"{key}/{name}"] = values[k]
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert same(got[key], value, tol=1e-10), (key, got[key], value)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, math.nan]), min_size=1, max_size=12),
    st.integers(0, 14),
    st.data(),
)
def test_worst_classes_is_a_sort_with_nan_first_and_ties_by_index(
    scores: list[float], k: int, data: st.DataObject
) -> None:
    """The one ranking the worst-classes figures, table and PR curves share."""
    among = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
    key = {i: (-math.inf if math.isnan(v) else v, i) for i, v in enumerate(scores)}
    expected = sorted((i for i in range(len(scores)) if among[i]), key=key.__getitem__)[:k]
    assert worst_classes(scores, k, among=np.array(among)).tolist() == expected
    assert worst_classes(scores, k).tolist() == sorted(key, key=key.__getitem__)[:k]
    last = {i: (math.inf if math.isnan(v) else v, i) for i, v in enumerate(scores)}
    assert (
        worst_classes(scores, k, nan_first=False).tolist() == sorted(last, key=last.__getitem__)[:k]
    )
