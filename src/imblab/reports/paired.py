"""Paired bootstrap comparisons of runs' predictions on the same test images: two runs
(``imblab-compare --paired``), and the per-replicate scores of every run that
``imblab-compare --baseline`` takes the test-set variance of its intervals from."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imblab.errors import ConfigError, config_error
from imblab.metrics.bootstrap import poisson_weights, replicate_scores
from imblab.reports.predictions import load_fingerprint, load_predictions

#: replicate scores are computed this many weighted samples (or confusion-matrix cells) at a time
_CHUNK = 4_000_000


def _confmats(pred: np.ndarray, target: np.ndarray, weights: np.ndarray, c: int) -> np.ndarray:
    """The observed (1, C, C) and the weighted (B, C, C) confusion matrices."""
    cell = target * c + pred
    observed = np.bincount(cell, minlength=c * c).reshape(1, c, c)
    b = weights.shape[1]
    index = (cell[:, None] + np.arange(b)[None, :] * c * c).reshape(-1)
    boot = np.bincount(index, weights=weights.reshape(-1), minlength=b * c * c)
    return np.concatenate([observed, boot.astype(np.int64).reshape(b, c, c)])


def paired_compare(
    run_a: Path, run_b: Path, *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """Run A minus run B in macro-F1 and in each class's F1 on the same samples, with a paired
    bootstrap percentile interval.

    ``run_a``, ``run_b``: ``predictions.npz`` files or the imblab-eval dirs holding them, with
    the same ids and targets.  Replicate ``b`` weighs sample ``i`` by ``w[i, b] ~ Poisson(1)``
    from ``(seed, id_i, b)`` (:func:`~imblab.metrics.bootstrap.poisson_weights`), the *same*
    weights for both runs, so the interval of ``F1_A - F1_B`` accounts for their correlation.
    Returns ``{"n", "num_classes", "n_boot", "confidence", "seed", "metrics": {key: {"a", "b",
    "diff", "lo", "hi", "p_value"}}}`` with keys ``f1_macro`` and ``f1/<class index>``;
    ``p_value`` is the two-sided bootstrap p-value ``min(1, 2 min(P*(d <= 0), P*(d >= 0)))``.

    Both runs are fixed: the interval covers the test set's sampling noise only, not the
    variation between training seeds (``imblab-compare SWEEP_DIR --baseline`` covers both).
    The runs must have been evaluated on the same test images: when both ``predictions.npz``
    record a split fingerprint (:func:`~imblab.reports.predictions.load_fingerprint`) they must
    be equal, else ids and targets are all that is checked (``"fingerprint": None`` in the
    result).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2:
        raise config_error("n_boot", n_boot, "not an int >= 2", "use e.g. 1000")
    if not 0 < confidence < 1:
        raise config_error("confidence", confidence, "not in (0, 1)", "use e.g. 0.95")
    probs_a, targets_a, ids_a = load_predictions(run_a)
    probs_b, targets_b, ids_b = load_predictions(run_b)
    fingerprint_a, fingerprint_b = load_fingerprint(run_a), load_fingerprint(run_b)
    if fingerprint_a is not None and fingerprint_b is not None and fingerprint_a != fingerprint_b:
        raise ConfigError(
            f"paired: {run_a} and {run_b} were evaluated on different images (their split "
            f"fingerprints differ: {fingerprint_a[:12]}... vs {fingerprint_b[:12]}...), although "
            "ids may match; compare runs evaluated on the same split of the same data"
        )
    order_a, order_b = np.argsort(ids_a, kind="stable"), np.argsort(ids_b, kind="stable")
    ids = ids_a[order_a]
    if not np.array_equal(ids, ids_b[order_b]):
        raise ConfigError(
            f"paired: {run_a} and {run_b} hold different samples (ids differ); compare runs "
            "evaluated on the same split of the same data"
        )
    targets = targets_a[order_a]
    if not np.array_equal(targets, targets_b[order_b]):
        raise ConfigError(
            f"paired: {run_a} and {run_b} have different targets for the same ids; compare runs "
            "evaluated on the same data"
        )
    if probs_a.shape[1] != probs_b.shape[1]:
        raise ConfigError(
            f"paired: {probs_a.shape[1]} vs {probs_b.shape[1]} classes; compare runs of one task"
        )
    c = probs_a.shape[1]
    weights = poisson_weights(torch.from_numpy(ids), seed, n_boot).numpy()
    names = [str(i) for i in range(c)]
    scores = {}
    for run, probs, order in (("a", probs_a, order_a), ("b", probs_b, order_b)):
        pred = probs[order].argmax(axis=1)
        confmats = torch.from_numpy(_confmats(pred, targets, weights, c))
        replicates = replicate_scores(confmats, betas=(1.0,), class_names=names)
        scores[run] = {k: v.numpy() for k, v in replicates.items() if k.startswith("f1")}
    alpha = 1 - confidence
    metrics: dict[str, dict[str, float]] = {}
    for key in ["f1_macro", *(f"f1/{n}" for n in names)]:
        a, b = scores["a"][key], scores["b"][key]
        diff = a[1:] - b[1:]
        defined = diff[~np.isnan(diff)]
        if defined.size:
            lo, hi = np.quantile(defined, [alpha / 2, 1 - alpha / 2])
            p = min(1.0, 2 * min(np.mean(defined <= 0), np.mean(defined >= 0)))
        else:
            lo = hi = p = math.nan
        metrics[key] = {
            "a": float(a[0]),
            "b": float(b[0]),
            "diff": float(a[0] - b[0]),
            "lo": float(lo),
            "hi": float(hi),
            "p_value": float(p),
        }
    return {
        "n": len(ids),
        "num_classes": c,
        "n_boot": n_boot,
        "confidence": confidence,
        "seed": seed,
        "fingerprint": fingerprint_a if fingerprint_a == fingerprint_b else None,
        "metrics": metrics,
    }


def format_paired(result: dict[str, Any]) -> str:
    """Markdown table of :func:`paired_compare`'s result, one row per metric."""
    pct = f"{100 * result['confidence']:g}%"
    lines = [
        f"Paired bootstrap: {result['n']} samples, {result['n_boot']} replicates, "
        f"seed {result['seed']}",
        "",
        f"| metric | A | B | A - B | {pct} interval | p |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for key, m in result["metrics"].items():
        lines.append(
            f"| {key} | {m['a']:.4f} | {m['b']:.4f} | {m['diff']:+.4f} | "
            f"[{m['lo']:+.4f}, {m['hi']:+.4f}] | {m['p_value']:.3f} |"
        )
    lines += [
        "",
        "Test-set noise only: both runs are fixed, the intervals are over resamples of the test "
        "images and leave out the variation between training seeds (for that: imblab-compare "
        "SWEEP_DIR --baseline KEY=VALUE).",
    ]
    if result.get("fingerprint") is None:
        lines.append(
            "The split fingerprint is not recorded in both predictions.npz: only ids and targets "
            "were checked to be the same."
        )
    return "\n".join(lines) + "\n"


def bootstrap_weights(ids: np.ndarray, seed: int, n_boot: int) -> np.ndarray:
    """(N, B) int64 Poisson(1) weights of the samples ``ids``, a function of ``(seed, id, b)``
    (:func:`~imblab.metrics.bootstrap.poisson_weights`): the same for every run on the same ids."""
    return poisson_weights(torch.from_numpy(np.asarray(ids, dtype=np.int64)), seed, n_boot).numpy()


def replicate_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    class_names: Sequence[str],
    *,
    groups: Mapping[str, Sequence[int]] | None = None,
    betas: Sequence[float] = (1.0,),
    keys: Collection[str] | None = None,
) -> dict[str, np.ndarray]:
    """One run's confusion-matrix scores, observed and under each bootstrap replicate:
    ``{key: (1 + B,) float64}``, entry 0 with every sample once, entry ``1 + b`` with sample
    ``i`` counted ``weights[i, b]`` times (``weights`` (N, B), rows in the order of ``probs``).

    The prediction is the argmax of ``probs`` (N, C). Keys as
    :func:`~imblab.metrics.bootstrap.replicate_scores` (``accuracy``, ``balanced_accuracy``,
    ``f<beta>_<macro|micro|weighted>``, ``precision_*``, ``recall_*`` and per class
    ``f<beta>/<name>``, ``precision/<name>``, ``recall/<name>``, zero_division 0), and for each
    group ``g`` of ``groups`` (class indices) ``accuracy_<g>``, the mean recall of its classes
    with samples, and ``f1_macro_<g>``, the mean F1 of its classes that are in targets or
    predictions (as training's group scores; NaN when none is). ``keys``: only these."""
    c = probs.shape[1]
    pred = probs.argmax(axis=1)
    betas = tuple(dict.fromkeys([1.0, *betas]))
    b = weights.shape[1]
    step = max(1, min(b, _CHUNK // max(len(targets), c * c)))
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, b, step):
        chunk = weights[:, start : start + step]
        m = _confmats(pred, targets, chunk, c)
        if start:
            m = m[1:]  # the observed matrix once, from the first chunk
        parts.append(_scores(m, class_names, groups or {}, betas, keys))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _scores(
    m: np.ndarray,
    class_names: Sequence[str],
    groups: Mapping[str, Sequence[int]],
    betas: Sequence[float],
    keys: Collection[str] | None,
) -> dict[str, np.ndarray]:
    """:func:`replicate_metrics`'s keys of confusion matrices ``m`` (K, C, C)."""
    confmats = torch.from_numpy(m)
    scores = replicate_scores(confmats, betas=betas, class_names=list(class_names))
    out = {k: v.numpy() for k, v in scores.items() if keys is None or k in keys}
    tp = np.diagonal(m, axis1=-2, axis2=-1).astype(np.float64)
    true, predicted = m.sum(axis=-1), m.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(true > 0, tp / true, np.nan)
    f1 = torch.stack([scores[f"f1/{name}"] for name in class_names], dim=-1).numpy()
    f1 = np.where(true + predicted > 0, f1, np.nan)
    for group, members in groups.items():
        for key, values in ((f"accuracy_{group}", recall), (f"f1_macro_{group}", f1)):
            if keys is not None and key not in keys:
                continue
            part = values[:, list(members)]
            defined = (~np.isnan(part)).sum(axis=1)
            total = np.nansum(part, axis=1)
            out[key] = np.where(defined > 0, total / np.maximum(defined, 1), np.nan)
    return out
