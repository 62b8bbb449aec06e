"""How far the per-epoch (binned, 200 thresholds) average precision is from the exact one.

Simulated classifiers, 10 classes, float32 softmax scores, against scikit-learn's
``average_precision_score`` on the same scores, with the bound
:func:`~imblab.metrics.exact_curves.average_precision_bin_bound`:

* weak: class ``k`` with prior ~ 0.7^k, the true class's logit raised by a noisy margin of mean
  ``m`` (accuracy ~ 45-90%), logits scaled by an overconfidence factor (scores pile up near 0
  and 1);
* MNIST-LT-like: a balanced test set (1,000 per class, as MNIST's official one) scored by a
  classifier trained on a rho=100 long tail: log-prior bias on the logits, a large margin
  (~97% accuracy) and overconfidence 3 or 6 (wrong-class scores down to 1e-9 and below, many
  exact 1.0).

    python tests/benchmarks/bench_binned_ap.py [--seeds 5]
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from imblab.metrics import CountState
from imblab.metrics.exact_curves import average_precision_bin_bound
from imblab.metrics.functional import average_precision

C = 10


def weak(n: int, margin: float, overconfidence: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    prior = 0.7 ** torch.arange(C, dtype=torch.float64)
    y = torch.multinomial(prior / prior.sum(), n, replacement=True, generator=g)
    logits = 2.0 * torch.randn(n, C, generator=g, dtype=torch.float64)
    logits[torch.arange(n), y] += margin + 2.0 * torch.randn(n, generator=g, dtype=torch.float64)
    return torch.softmax(overconfidence * logits.float(), dim=1).numpy(), y.numpy()


def mnist_lt_like(overconfidence: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    counts = 5000 * 0.01 ** (torch.arange(C, dtype=torch.float64) / (C - 1))  # rho = 100
    y = torch.arange(C).repeat_interleave(1000)
    logits = 1.5 * torch.randn(len(y), C, generator=g, dtype=torch.float64)
    logits += torch.log(counts / counts.sum())
    logits[torch.arange(len(y)), y] += 6.0 + 1.5 * torch.randn(len(y), generator=g)
    return torch.softmax(overconfidence * logits.float(), dim=1).numpy(), y.numpy()


def gaps(probs: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(max per-class |binned - exact| AP, |binned - exact| macro AP, max per-class bound)."""
    state = CountState(C, input="probs")  # the training's default: 200 thresholds
    state.update(torch.from_numpy(probs), torch.from_numpy(y))
    counts = state.compute()
    binned = average_precision(counts).numpy()
    exact = np.array([average_precision_score(y == c, probs[:, c]) for c in range(C)])
    bound = average_precision_bin_bound(counts).numpy()
    assert (np.abs(binned - exact) <= bound + 1e-9).all()
    return float(np.abs(binned - exact).max()), abs(binned.mean() - exact.mean()), bound.max()


def run(seeds: int) -> dict[str, tuple[float, float, float]]:
    out = {}
    for margin in (1.0, 2.0, 4.0):
        for over in (1.0, 2.0, 3.0):
            results = [gaps(*weak(10_000, margin, over, s)) for s in range(seeds)]
            out[f"weak m={margin:g} x{over:g}"] = _worst(results)
    for over in (3.0, 6.0):
        results = [gaps(*mnist_lt_like(over, s)) for s in range(seeds)]
        out[f"MNIST-LT-like x{over:g}"] = _worst(results)
    return out


def _worst(results: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    return max(r[0] for r in results), max(r[1] for r in results), max(r[2] for r in results)


def report(seeds: int) -> None:
    print(f"{'scores':<22} {'max |dAP| class':>16} {'|dAP| macro':>12} {'max bound':>10}")
    for name, (per_class, macro, bound) in run(seeds).items():
        print(f"{name:<22} {per_class:16.4f} {macro:12.4f} {bound:10.4f}")


@pytest.mark.benchmark
def test_binned_ap_gap_is_within_the_bound() -> None:
    report(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    report(parser.parse_args().seeds)
