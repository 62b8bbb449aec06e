"""Paired bootstrap comparison of two runs' predictions on the same samples."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imblab.errors import ConfigError, config_error
from imblab.metrics.bootstrap import poisson_weights, replicate_scores
from imblab.reports.predictions import load_predictions


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
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2:
        raise config_error("n_boot", n_boot, "not an int >= 2", "use e.g. 1000")
    if not 0 < confidence < 1:
        raise config_error("confidence", confidence, "not in (0, 1)", "use e.g. 0.95")
    probs_a, targets_a, ids_a = load_predictions(run_a)
    probs_b, targets_b, ids_b = load_predictions(run_b)
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
    return "\n".join(lines) + "\n"
