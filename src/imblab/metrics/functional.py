"""Metrics as pure functions of the count state: :class:`~imblab.metrics.counts.Counts` (or its
confusion matrix) in, numbers out.  All arithmetic is float64; every function matches
scikit-learn, including its ``zero_division`` rules.

Notation: for class ``c``, ``TP, FP, FN`` come from the confusion matrix (rows = true class,
columns = argmax prediction); the curve metrics (AUROC, AP) are one-vs-rest on the score
``s = p[:, c]``: positives are the samples with ``target == c`` (``P`` of them), negatives the
rest (``N``); at a threshold ``t`` a sample is predicted positive iff ``s >= t``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from imblab.errors import ConfigError
from imblab.metrics.counts import Counts, CountState

__all__ = [
    "accuracy",
    "auroc",
    "auroc_tie_bound",
    "average_precision",
    "averaged_prf",
    "balanced_accuracy",
    "binary_scores",
    "curve_counts",
    "matthews_corrcoef",
    "one_vs_rest_accuracy_specificity",
    "per_class_prf",
    "pr_curve_counts",
    "roc_curves",
    "summarize",
    "worst_classes",
]

Average = Literal["macro", "micro", "weighted"]

PR_CURVE_THRESHOLDS = 200
"""Grid size exact-mode scores are binned onto for :func:`pr_curve_counts`."""


def _check_zero_division(zero_division: float) -> float:
    if not (math.isnan(zero_division) or zero_division in (0.0, 1.0)):
        raise ConfigError(
            f"zero_division={zero_division!r}: not a value scikit-learn accepts; use 0, 1 or nan"
        )
    return float(zero_division)


def _divide(num: Tensor, den: Tensor, zero_division: float) -> Tensor:
    """``num / den`` in float64, ``zero_division`` where ``den == 0``."""
    num, den = num.to(torch.float64), den.to(torch.float64)
    zero = den == 0
    return torch.where(zero, zero_division, num / torch.where(zero, 1.0, den))


def _np(t: Tensor) -> np.ndarray:
    """A CPU NumPy view (or copy) of ``t``."""
    return t.detach().cpu().numpy()


def _divide_np(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    """``num / den`` in float64, ``zero_division`` where ``den == 0``."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    zero = den == 0
    return np.where(zero, zero_division, num / np.where(zero, 1.0, den))


def _prf_np(
    tp: np.ndarray, pred: np.ndarray, true: np.ndarray, beta: float, zero_division: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision ``TP/(TP+FP)``, recall ``TP/(TP+FN)`` and
    ``F_beta = (1+b^2) TP / ((1+b^2) TP + b^2 FN + FP)`` from ``TP``, ``TP+FP`` and ``TP+FN``
    (arrays of any one shape, float64 out).

    As scikit-learn: each is ``zero_division`` where its denominator is 0 (for F: no TP, FP or
    FN); ``beta = 0`` gives precision and ``beta = inf`` recall.
    """
    if not beta >= 0:
        raise ConfigError(f"beta={beta!r}: F-beta needs beta >= 0; use e.g. 0.5, 1 or 2")
    zero_division = _check_zero_division(zero_division)
    precision = _divide_np(tp, pred, zero_division)
    recall = _divide_np(tp, true, zero_division)
    if math.isinf(beta):
        return precision, recall, recall
    if beta == 0:
        return precision, recall, precision
    b2 = beta * beta
    num = (1 + b2) * np.asarray(tp, dtype=np.float64)
    den = b2 * np.asarray(true, dtype=np.float64) + pred
    return precision, recall, _divide_np(num, den, zero_division)


def _prf(
    tp: Tensor, pred: Tensor, true: Tensor, beta: float, zero_division: float
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_prf_np` of tensors (float64 CPU tensors out)."""
    p, r, f = _prf_np(_np(tp), _np(pred), _np(true), beta, zero_division)
    return torch.as_tensor(p), torch.as_tensor(r), torch.as_tensor(f)


def _class_counts(confmat: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``TP``, ``TP+FP`` (predicted) and ``TP+FN`` (true) per class, int64 (C,) arrays (float64
    for a weighted confusion matrix)."""
    m = _np(confmat)
    acc = np.float64 if m.dtype.kind == "f" else np.int64
    return m.diagonal().astype(acc), m.sum(axis=0, dtype=acc), m.sum(axis=1, dtype=acc)


def _nanmean_rows(values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Row-wise mean of the non-NaN values of ``values`` (..., C) (weighted by ``weights`` (C,)
    if given; unweighted where their weights sum to 0), NaN for a row with none: scikit-learn's
    ``_nanaverage`` per row."""
    defined = ~np.isnan(values)
    v = np.where(defined, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = v.sum(axis=-1) / defined.sum(axis=-1)  # 0 / 0: no defined value
        if weights is None:
            return mean
        w = np.where(defined, np.asarray(weights, dtype=np.float64), 0.0)
        total = w.sum(axis=-1)
        return np.where(total > 0, (v * w).sum(axis=-1) / total, mean)


def _nanaverage(values: Tensor, weights: Tensor | None = None) -> float:
    """Mean of the non-NaN values (weighted if given; unweighted if their weights sum to 0),
    NaN if there are none: scikit-learn's ``_nanaverage``."""
    return float(_nanmean_rows(_np(values), None if weights is None else _np(weights)))


def per_class_prf(
    confmat: Tensor, beta: float, zero_division: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-class precision, recall, F-beta (C,) float64 and support (C,) int64, as scikit-learn's
    ``precision_recall_fscore_support(average=None, labels=range(C))``."""
    tp, pred, true = _class_counts(confmat)
    precision, recall, f = _prf_np(tp, pred, true, beta, zero_division)
    return (
        torch.from_numpy(precision),
        torch.from_numpy(recall),
        torch.from_numpy(f),
        torch.from_numpy(true),
    )


def _averages(
    tp: np.ndarray,
    pred: np.ndarray,
    true: np.ndarray,
    betas: Sequence[float],
    zero_division: float,
) -> dict[str, np.ndarray]:
    """``{average: [precision, recall, F_beta for each beta]}`` (float64 (2 + B,) arrays) for
    ``average`` in macro, micro, weighted, over the classes present in targets or predictions
    (see :func:`averaged_prf`)."""
    present = (pred + true) > 0
    tp, pred, true = tp[present], pred[present], true[present]
    rows, micro = [], []
    sums = tp.sum(), pred.sum(), true.sum()
    for i, beta in enumerate(betas):
        precision, recall, f = _prf_np(tp, pred, true, beta, zero_division)
        p_micro, r_micro, f_micro = _prf_np(*sums, beta, zero_division)
        if i == 0:
            rows += [precision, recall]
            micro += [p_micro, r_micro]
        rows.append(f)
        micro.append(f_micro)
    stacked = np.stack(rows)  # (2 + B, present classes)
    return {
        "macro": _nanmean_rows(stacked),
        "micro": np.asarray(micro, dtype=np.float64),
        "weighted": _nanmean_rows(stacked, true),
    }


def averaged_prf(
    confmat: Tensor, beta: float, zero_division: float, average: Average
) -> tuple[float, float, float]:
    """Averaged precision, recall and F-beta, as scikit-learn's
    ``precision_recall_fscore_support(average=average, labels=None)``.

    Classes absent from both targets and predictions are left out.  ``micro`` divides the summed
    counts; ``macro`` is the mean over classes, ``weighted`` the mean weighted by support; NaN
    values (``zero_division=nan``) are left out of both.
    """
    if average not in ("macro", "micro", "weighted"):
        raise ConfigError(f"average={average!r}: unknown; use 'macro', 'micro' or 'weighted'")
    precision, recall, f = _averages(*_class_counts(confmat), (beta,), zero_division)[average]
    return float(precision), float(recall), float(f)


def _accuracy(tp: np.ndarray, true: np.ndarray) -> float:
    total = true.sum()
    return float(tp.sum()) / float(total) if total else math.nan


def _balanced_accuracy(tp: np.ndarray, true: np.ndarray) -> float:
    present = true > 0
    return float(_nanmean_rows(_divide_np(tp[present], true[present], math.nan)))


def accuracy(confmat: Tensor) -> float:
    """``trace(M) / sum(M)``: the fraction of samples whose argmax is the target (NaN if none)."""
    tp, _, true = _class_counts(confmat)
    return _accuracy(tp, true)


def balanced_accuracy(confmat: Tensor) -> float:
    """Mean recall over the classes present in the targets (scikit-learn's
    ``balanced_accuracy_score``; NaN if there are no samples)."""
    tp, _, true = _class_counts(confmat)
    return _balanced_accuracy(tp, true)


def matthews_corrcoef(confmat: Tensor) -> float:
    """Multiclass MCC (scikit-learn's ``matthews_corrcoef``; 0 when undefined):
    ``(c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t))`` with ``c`` correct, ``s`` samples,
    ``t``/``p`` the true/predicted counts per class."""
    m = confmat.to(torch.float64)
    t, p = m.sum(dim=1), m.sum(dim=0)
    s, correct = float(m.sum()), float(m.trace())
    cov_tp = correct * s - float(t @ p)
    cov_pp = s * s - float(p @ p)
    cov_tt = s * s - float(t @ t)
    return cov_tp / math.sqrt(cov_pp * cov_tt) if cov_pp * cov_tt != 0 else 0.0


def _exact_points(scores: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-class one-vs-rest counts at every sample, scores sorted descending (one sort of all
    columns), each tie group collapsed onto its last position: ``tp, fp`` (C, N) int64, the
    sorted scores (C, N) and the mask (C, N) of positions that end a tie group (the distinct
    thresholds, as scikit-learn's ``_binary_clf_curve``)."""
    c = scores.shape[1]
    s, order = torch.sort(scores.T, dim=1, descending=True, stable=True)
    y = (target[order] == torch.arange(c, device=scores.device)[:, None]).to(torch.int64)
    n = s.shape[1]
    is_end = torch.ones_like(s, dtype=torch.bool)
    is_end[:, :-1] = s[:, 1:] != s[:, :-1]
    # index of the end of each position's tie group: reverse cumulative min of end positions
    positions = torch.arange(n, device=s.device).expand(c, n)
    ends = torch.where(is_end, positions, n).flip(1).cummin(dim=1).values.flip(1)
    tp = y.cumsum(dim=1).gather(1, ends)
    fp = ends + 1 - tp
    return tp, fp, s, is_end


def _descending_points(counts: Counts) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest ``tp, fp`` (C, K) int64 arrays at thresholds in descending order, the last
    column being the lowest threshold, which every sample passes (so it holds ``P`` and ``N``).
    Repeated points (empty bins, tie groups) add nothing to the areas below."""
    if counts.hist is not None:
        # one pass over (2, C, T): reversed bins, label-major, so tp and fp come out contiguous
        cum = np.cumsum(_np(counts.hist)[:, ::-1].transpose(2, 0, 1), axis=2, dtype=np.int64)
        return cum[1], cum[0]
    assert counts.scores is not None and counts.target is not None
    if counts.scores.shape[0] == 0:
        zeros = np.zeros((counts.num_classes, 1), dtype=np.int64)
        return zeros, zeros
    tp, fp, _, _ = _exact_points(counts.scores, counts.target)
    return _np(tp), _np(fp)


def curve_counts(
    counts: Counts,
) -> tuple[Tensor | list[Tensor], Tensor | list[Tensor], Tensor | list[Tensor]]:
    """One-vs-rest ``(tp, fp, thresholds)`` for every class.

    Binned: ``tp, fp`` (C, T) at the ascending grid ``thresholds`` (T,):
    ``tp[c, k] = sum_{j >= k} hist[c, j, 1]``, ``fp[c, k] = sum_{j >= k} hist[c, j, 0]``.
    Exact: lists of per-class tensors at every distinct score, in descending order (as
    scikit-learn's ``_binary_clf_curve``).
    """
    if counts.hist is not None:
        assert counts.thresholds is not None
        tp = counts.hist[..., 1].flip(-1).cumsum(-1).flip(-1)
        fp = counts.hist[..., 0].flip(-1).cumsum(-1).flip(-1)
        return tp, fp, counts.thresholds
    assert counts.scores is not None and counts.target is not None
    tp, fp, s, is_end = _exact_points(counts.scores, counts.target)
    return (
        [tp[c][is_end[c]] for c in range(counts.num_classes)],
        [fp[c][is_end[c]] for c in range(counts.num_classes)],
        [s[c][is_end[c]] for c in range(counts.num_classes)],
    )


def roc_curves(counts: Counts) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per class ``(fpr, tpr, thresholds)`` with thresholds descending from ``+inf``, where
    ``(0, 0)`` is prepended (so scores at or above the top threshold lose no area):
    ``fpr = FP / N``, ``tpr = TP / P``, NaN-filled when ``N`` resp. ``P`` is 0."""
    if counts.hist is not None:
        assert counts.thresholds is not None
        tp_np, fp_np = _descending_points(counts)
        tp, fp = torch.from_numpy(tp_np), torch.from_numpy(fp_np)
        points = [(tp[c], fp[c], counts.thresholds.flip(0)) for c in range(counts.num_classes)]
    else:
        assert counts.scores is not None and counts.target is not None
        tp, fp, s, is_end = _exact_points(counts.scores, counts.target)
        points = [(tp[c][e], fp[c][e], s[c][e]) for c, e in enumerate(is_end)]
    curves = []
    for tp_c, fp_c, thr_c in points:
        tp_c = torch.nn.functional.pad(tp_c, (1, 0))
        fp_c = torch.nn.functional.pad(fp_c, (1, 0))
        inf = torch.full((1,), math.inf, dtype=thr_c.dtype, device=thr_c.device)
        fpr = _divide(fp_c, fp_c[-1].expand_as(fp_c), math.nan)
        tpr = _divide(tp_c, tp_c[-1].expand_as(tp_c), math.nan)
        curves.append((fpr, tpr, torch.cat([inf, thr_c])))
    return curves


def auroc(counts: Counts) -> Tensor:
    """One-vs-rest AUROC (C,): the trapezoidal area under the ROC curve from ``(0, 0)``,
    ``sum_i (FP_i - FP_{i-1}) (TP_i + TP_{i-1}) / (2 P N)``; NaN for a class without positives
    or negatives.  Exact mode equals ``roc_auc_score(target == c, scores[:, c])``; binned mode
    is that of the scores rounded down to the grid (see :func:`auroc_tie_bound`)."""
    return torch.from_numpy(_curve_areas(*_descending_points(counts))[0])


def _curve_areas(tp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`auroc` and :func:`average_precision` of the descending points, together (the
    arrays are read a few times instead of once per metric).  With ``dTP_i = TP_i - TP_{i-1}``
    (``TP_{-1} = 0``, likewise FP): twice the ROC area is ``sum dFP_i (2 TP_i - dTP_i)``, in
    int64 (exact while ``2 P N < 2^63``); AP is ``sum dTP_i TP_i / (TP_i + FP_i) / P``."""
    d_tp, d_fp = tp.copy(), fp.copy()
    d_tp[:, 1:] -= tp[:, :-1]
    d_fp[:, 1:] -= fp[:, :-1]
    area2 = 2 * np.einsum("ck,ck->c", d_fp, tp) - np.einsum("ck,ck->c", d_fp, d_tp)
    predicted = tp + fp
    # 0/0 only where nothing is gained (dTP = 0): that point adds 0
    precision = np.divide(tp, predicted, out=np.zeros(tp.shape), where=predicted > 0)
    positives, negatives = tp[:, -1].astype(np.float64), fp[:, -1].astype(np.float64)
    return (
        _divide_np(area2, 2 * positives * negatives, math.nan),
        _divide_np(np.einsum("ck,ck->c", d_tp, precision), positives, math.nan),
    )


def average_precision(counts: Counts) -> Tensor:
    """One-vs-rest average precision (C,): ``AP = sum_n (R_n - R_{n-1}) P_n`` over thresholds
    in descending order, ``P_n = TP_n / (TP_n + FP_n)``, ``R_n = TP_n / P``; NaN for a class
    without positives.  Exact mode equals ``average_precision_score(target == c, scores[:, c])``.
    """
    return torch.from_numpy(_curve_areas(*_descending_points(counts))[1])


def auroc_tie_bound(counts: Counts) -> Tensor:
    """The bound ``|AUROC_binned - AUROC_exact| <= 0.5 * sum_k P_k N_k / (P N)`` (C,), with
    ``P_k, N_k`` the positives and negatives in bin ``k``.

    Binning keeps the order of every positive/negative pair in different bins (the bins are
    intervals of the score) and scores a pair in the same bin as a tie (1/2), where the exact
    AUROC scores it 0, 1/2 or 1: at most 1/2 off for each of those ``sum_k P_k N_k`` pairs.
    Zero in exact mode; NaN where AUROC is undefined.
    """
    if counts.hist is None:
        positives = counts.confmat.sum(dim=1)
        negatives = counts.confmat.sum() - positives
        return _divide(torch.zeros_like(positives), positives * negatives, math.nan)
    neg, pos = counts.hist[..., 0], counts.hist[..., 1]
    pairs = (pos.to(torch.float64) * neg).sum(dim=1)
    return _divide(0.5 * pairs, pos.sum(dim=1).to(torch.float64) * neg.sum(dim=1), math.nan)


def pr_curve_counts(counts: Counts) -> list[dict[str, Tensor]]:
    """Raw one-vs-rest PR-curve data, one dict per class, each value a (T,) float64 CPU tensor at
    the ascending grid ``thresholds``: ``tp, fp, tn, fn``, ``precision = TP / max(TP + FP, 1)``
    and ``recall = TP / max(P, 1)`` (TensorBoard's convention: 0 when undefined), the arrays
    ``tensorboard.plugins.pr_curve.summary.raw_data_pb`` takes (it labels them with a uniform
    grid; the curve itself is right).

    Exact-mode scores are binned onto the default grid of ``PR_CURVE_THRESHOLDS`` first.
    """
    if counts.hist is None:
        assert counts.scores is not None and counts.target is not None
        # summed counts already: no cross-process sync (rank 0 alone draws the curves)
        state = CountState(
            counts.num_classes,
            thresholds=PR_CURVE_THRESHOLDS,
            input="probs",
            sync_on_compute=False,
        )
        state.update(counts.scores.cpu(), counts.target.cpu())
        counts = state.compute()
    tp, fp, thresholds = curve_counts(counts)
    assert isinstance(tp, Tensor) and isinstance(fp, Tensor) and isinstance(thresholds, Tensor)
    tp, fp = tp.to("cpu", torch.float64), fp.to("cpu", torch.float64)
    pos, neg = tp[:, :1], fp[:, :1]  # threshold t_0 = 0: every sample
    columns = {
        "tp": tp,
        "fp": fp,
        "tn": neg - fp,
        "fn": pos - tp,
        "precision": tp / (tp + fp).clamp(min=1),
        "recall": tp / pos.clamp(min=1),
    }
    thresholds = thresholds.cpu()
    return [
        {**{key: value[c] for key, value in columns.items()}, "thresholds": thresholds}
        for c in range(counts.num_classes)
    ]


def binary_scores(
    counts: Counts, threshold: float, beta: float, zero_division: float, positive: int = 1
) -> dict[str, float]:
    """Precision, recall and F-beta of class ``positive`` against the rest when a sample is
    predicted positive iff ``s = p[:, positive] >= threshold`` (compared in the score's dtype).

    Keys ``precision``, ``recall``, ``f<beta>`` (``%g``).  Binned mode needs ``threshold`` to be
    a grid point (``CountState`` puts its ``binary_threshold`` on the grid).
    """
    c = counts.num_classes
    if not 0 <= positive < c:
        raise ValueError(f"positive={positive}: not a class index; use 0 <= positive < {c}")
    if counts.hist is not None:
        assert counts.thresholds is not None
        tp_all, fp_all, _ = curve_counts(counts)
        assert isinstance(tp_all, Tensor) and isinstance(fp_all, Tensor)
        (at,) = torch.nonzero(counts.thresholds == threshold, as_tuple=True)
        if at.numel() == 0:
            nearest = float(counts.thresholds[(counts.thresholds - threshold).abs().argmin()])
            raise ValueError(
                f"threshold={threshold!r}: not on the grid (nearest {nearest!r}); pass "
                "CountState(binary_threshold=...) or use exact mode (thresholds=None)"
            )
        tp, fp = tp_all[positive, at[0]], fp_all[positive, at[0]]
        pos = tp_all[positive, 0]
    else:
        assert counts.scores is not None and counts.target is not None
        s = counts.scores[:, positive]
        predicted = s >= torch.tensor(threshold, dtype=s.dtype)
        y = counts.target == positive
        tp, fp, pos = (predicted & y).sum(), (predicted & ~y).sum(), y.sum()
    precision, recall, f = _prf(tp, tp + fp, pos, beta, zero_division)
    return {"precision": float(precision), "recall": float(recall), f"f{beta:g}": float(f)}


def one_vs_rest_accuracy_specificity(confmat: Tensor) -> tuple[Tensor, Tensor]:
    """Per class ``c`` of the (C, C) confusion matrix, one-vs-rest: accuracy (TP + TN) / N and
    specificity TN / (TN + FP) (float64; NaN without samples / without negatives). The
    accuracy of class ``c`` is not the sample-weighted ``accuracy`` (trace / N)."""
    accuracy, specificity = _one_vs_rest(*_class_counts(confmat))
    return torch.from_numpy(accuracy), torch.from_numpy(specificity)


def _one_vs_rest(
    tp: np.ndarray, pred: np.ndarray, true: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n = true.sum()
    fp, fn = pred - tp, true - tp
    tn = n - tp - fp - fn
    return _divide_np(tp + tn, np.full_like(tp, n), math.nan), _divide_np(tn, tn + fp, math.nan)


def summarize(
    counts: Counts,
    *,
    betas: Sequence[float] = (0.5, 1.0, 2.0),
    zero_division: float = 0.0,
    class_names: Sequence[str] | None = None,
    one_vs_rest: bool = False,
) -> dict[str, float]:
    """Every imblab metric as one flat ``{name: float}`` dict (NaN where undefined).

    Averages: ``precision_<avg>``, ``recall_<avg>``, ``f<beta>_<avg>`` for ``avg`` in macro,
    micro, weighted (:func:`averaged_prf`); ``accuracy``, ``balanced_accuracy``;
    ``auroc_macro``/``ap_macro`` (mean over classes where defined), ``auroc_weighted``/
    ``ap_weighted`` (weighted by positives ``P``, over classes where defined) and
    ``auroc_num_defined``/``ap_num_defined``.  Per class ``<metric>/<name>`` for precision,
    recall, f<beta>, support, auroc, ap.  ``beta`` is formatted with ``%g`` (f0.5, f1, f2).
    ``one_vs_rest=True`` adds per class ``accuracy/<name>`` and ``specificity/<name>``
    (:func:`one_vs_rest_accuracy_specificity`; the callbacks and ``evaluate`` turn it on).
    """
    if not betas:
        raise ConfigError("betas=(): no F-beta to compute; give at least one beta, e.g. (1.0,)")
    c = counts.num_classes
    names = [str(i) for i in range(c)] if class_names is None else list(class_names)
    if len(names) != c:
        raise ConfigError(
            f"class_names={names!r}: {len(names)} names for {c} classes; give one per class"
        )
    zero_division = _check_zero_division(zero_division)
    tp, pred, true = _class_counts(counts.confmat)
    out: dict[str, float] = {}
    averages = _averages(tp, pred, true, betas, zero_division)
    for i, beta in enumerate(betas):
        for average, values in averages.items():
            if i == 0:
                out[f"precision_{average}"] = float(values[0])
                out[f"recall_{average}"] = float(values[1])
            out[f"f{beta:g}_{average}"] = float(values[2 + i])
    out["accuracy"] = _accuracy(tp, true)
    out["balanced_accuracy"] = _balanced_accuracy(tp, true)

    areas = _curve_areas(*_descending_points(counts))
    curves = {"auroc": areas[0], "ap": areas[1]}
    for key, values in curves.items():
        out[f"{key}_macro"] = float(_nanmean_rows(values))
        out[f"{key}_weighted"] = float(_nanmean_rows(values, true))
        out[f"{key}_num_defined"] = float((~np.isnan(values)).sum())

    per_class: dict[str, np.ndarray] = {}
    for i, beta in enumerate(betas):
        precision_c, recall_c, f_c = _prf_np(tp, pred, true, beta, zero_division)
        if i == 0:
            per_class.update(precision=precision_c, recall=recall_c, support=true)
        per_class[f"f{beta:g}"] = f_c
    if one_vs_rest:
        per_class["accuracy"], per_class["specificity"] = _one_vs_rest(tp, pred, true)
    per_class.update(curves)
    values = np.stack([np.asarray(v, dtype=np.float64) for v in per_class.values()])
    keys = _per_class_keys(tuple(per_class), tuple(names))
    out.update(zip(keys, values.ravel().tolist(), strict=True))
    return out


@functools.lru_cache(maxsize=16)
def _per_class_keys(metrics: tuple[str, ...], names: tuple[str, ...]) -> tuple[str, ...]:
    """``<metric>/<name>`` for every metric, then class: built once per run (C = 1,000 makes
    ~11,000 of them an epoch)."""
    return tuple(f"{key}/{name}" for key in metrics for name in names)


def worst_classes(
    scores: ArrayLike, k: int, among: ArrayLike | None = None, *, nan_first: bool = True
) -> np.ndarray:
    """Indices of the ``k`` classes with the lowest ``scores`` (C,), worst first; an undefined
    (NaN) score counts as the lowest (``nan_first=False``: the highest); ties go to the lower
    class index. ``among``: a boolean mask (C,) or indices of the classes that may be chosen
    (default: all)."""
    values = np.asarray(scores, dtype=np.float64)
    candidates = np.arange(values.size) if among is None else np.asarray(among)
    if candidates.dtype == bool:
        candidates = np.flatnonzero(candidates)
    undefined = -np.inf if nan_first else np.inf
    order = np.argsort(np.nan_to_num(values[candidates], nan=undefined), kind="stable")
    return candidates[order[:k]]
