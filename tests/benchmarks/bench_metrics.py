"""Throughput of imblab's count state against torchmetrics' per-class metrics, at C = 10, 100
and 1,000 classes and at 1 and 2 CPU threads, plus ``summarize`` and one ``evaluate`` pass at
C = 8,142.

The same (probs, target) batches (batch 1024, float32 softmax probabilities) stream through
``CountState`` (one update per batch, then ``compute`` and ``summarize``, the work of one
validation epoch) and through a torchmetrics ``MetricCollection`` of the per-class
(``average=None``) confusion matrix, precision, recall, F1, F2, ROC, PR curve, AUROC and AP,
the curves binned at the same T (its compute groups share one binned state), update per batch
then ``compute``.  Both run in this process on the CPU with ``torch.set_num_threads(threads)``,
alternating, best of ``--rounds``.

    python tests/benchmarks/bench_metrics.py [--classes 10 100 1000] [--threads 1 2]
    pytest -m benchmark tests/benchmarks/bench_metrics.py -s

Targets: >= 50x torchmetrics in every cell; ``summarize`` <= 1 ms at C = 10 and <= 10 ms at
C = 1,000 on one thread.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAUROC,
    MulticlassAveragePrecision,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassFBetaScore,
    MulticlassPrecision,
    MulticlassPrecisionRecallCurve,
    MulticlassRecall,
    MulticlassROC,
)

from imblab.metrics import CountState, evaluate, summarize

MIN_SPEEDUP = 50.0
SUMMARIZE_TARGET_MS = {10: 1.0, 1000: 10.0}
BATCH = 1024
Batches = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Cell:
    classes: int
    threads: int
    batches: int
    imblab: float  # samples/s
    torchmetrics: float

    @property
    def speedup(self) -> float:
        return self.imblab / self.torchmetrics


def batches(n: int, size: int, c: int, seed: int = 0) -> Batches:
    """Softmax float32 probabilities of noisy logits, with int64 targets (class k ~ 0.8^k at
    C = 10, a gentler long tail for more classes)."""
    g = torch.Generator().manual_seed(seed)
    prior = torch.exp(-torch.arange(c, dtype=torch.float64) * (math.log(1.25) * 10 / c))
    out = []
    for _ in range(n):
        y = torch.multinomial(prior, size, replacement=True, generator=g)
        logits = 3.0 * torch.randn(size, c, generator=g)
        logits[torch.arange(size), y] += 4.0
        out.append((torch.softmax(logits, dim=1), y))
    return out


def time_imblab(data: Batches, c: int, t: int) -> float:
    state = CountState(c, thresholds=t, input="probs")
    state.update(*data[0])  # warm-up
    state.reset()
    start = time.perf_counter()
    for probs, target in data:
        state.update(probs, target)
    summarize(state.compute(), one_vs_rest=True)
    return time.perf_counter() - start


def torchmetrics_collection(c: int, t: int) -> MetricCollection:
    return MetricCollection(
        {
            "confmat": MulticlassConfusionMatrix(c),
            "precision": MulticlassPrecision(c, average=None),
            "recall": MulticlassRecall(c, average=None),
            "f1": MulticlassF1Score(c, average=None),
            "f2": MulticlassFBetaScore(2.0, c, average=None),
            "roc": MulticlassROC(c, thresholds=t),
            "pr": MulticlassPrecisionRecallCurve(c, thresholds=t),
            "auroc": MulticlassAUROC(c, average=None, thresholds=t),
            "ap": MulticlassAveragePrecision(c, average=None, thresholds=t),
        }
    )


def time_torchmetrics(data: Batches, c: int, t: int) -> float:
    collection = torchmetrics_collection(c, t)
    collection.update(*data[0])  # warm-up (and the compute groups)
    collection.reset()
    start = time.perf_counter()
    for probs, target in data:
        collection.update(probs, target)
    collection.compute()
    return time.perf_counter() - start


def best_of(rounds: int, *timers: Callable[[], float]) -> list[float]:
    """Each timer's best time over ``rounds``, the timers alternating: a busy moment on a shared
    machine should not decide a ratio."""
    best = [math.inf] * len(timers)
    for _ in range(rounds):
        for i, timer in enumerate(timers):
            best[i] = min(best[i], timer())
    return best


def with_threads(threads: int, fn: Callable[[], float]) -> Callable[[], float]:
    def timed() -> float:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(previous)

    return timed


def run_cell(c: int, threads: int, n_batches: int, t: int, rounds: int) -> Cell:
    data = batches(n_batches, BATCH, c)
    imblab_s, tm_s = best_of(
        rounds,
        with_threads(threads, lambda: time_imblab(data, c, t)),
        with_threads(threads, lambda: time_torchmetrics(data, c, t)),
    )
    samples = n_batches * BATCH
    return Cell(c, threads, n_batches, samples / imblab_s, samples / tm_s)


def summarize_ms(c: int, t: int, reps: int = 20) -> float:
    """``summarize`` (with the one-vs-rest keys, as the callbacks call it) of a filled state, on
    one thread, best of ``reps``."""
    state = CountState(c, thresholds=t, input="probs")
    for probs, target in batches(4, BATCH, c, seed=2):
        state.update(probs, target)
    counts = state.compute()
    names = [f"class_{i}" for i in range(c)]
    timer = with_threads(1, lambda: _seconds(lambda: summarize(counts, class_names=names)))
    return 1e3 * min(timer() for _ in range(reps))


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def evaluate_figure(c: int, n: int, t: int, threads: int) -> tuple[float, float]:
    """Seconds and samples/s of one ``evaluate(probs, target, thresholds=t)`` pass, (n, c)."""
    probs, target = batches(1, n, c, seed=1)[0]
    seconds = with_threads(
        threads, lambda: _seconds(lambda: evaluate(probs, target, thresholds=t))
    )()
    return seconds, n / seconds


def default_batches(c: int) -> int:
    """Batches per cell: enough for a stable imblab time and an epoch's mix of updates and one
    compute, few enough that torchmetrics' (N, C, T) comparisons finish in seconds."""
    return {10: 50, 100: 10}.get(c, 4)


def report(
    classes: Sequence[int],
    threads: Sequence[int],
    t: int,
    rounds: int,
    eval_classes: int,
    eval_samples: int,
) -> list[Cell]:
    print(
        f"CPU, torch {torch.__version__}, T={t}, batch {BATCH}, best of {rounds} rounds, "
        "imblab and torchmetrics alternating"
    )
    print("| C | threads | batches | imblab samples/s | torchmetrics samples/s | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    cells = []
    for c in classes:
        for n in threads:
            cell = run_cell(c, n, default_batches(c), t, rounds)
            cells.append(cell)
            flag = "" if cell.speedup >= MIN_SPEEDUP else f" (below {MIN_SPEEDUP:g}x)"
            print(
                f"| {c:,} | {n} | {cell.batches} | {cell.imblab:,.0f} | {cell.torchmetrics:,.0f} "
                f"| {cell.speedup:.1f}x{flag} |"
            )
    print("\nsummarize (one_vs_rest, class names), 1 thread, best of 20:")
    for c in classes:
        target = SUMMARIZE_TARGET_MS.get(c)
        goal = f" (target <= {target:g} ms)" if target else ""
        print(f"  C={c:,}: {summarize_ms(c, t):.2f} ms{goal}")
    if eval_samples:
        for n in threads:
            seconds, rate = evaluate_figure(eval_classes, eval_samples, t, n)
            print(
                f"evaluate(probs ({eval_samples:,}, {eval_classes:,}), thresholds={t}), {n} "
                f"thread(s): {seconds:.2f} s, {rate:,.0f} samples/s "
                f"({rate * eval_classes / 1e6:,.1f} M scores/s)"
            )
    return cells


@pytest.mark.benchmark
def test_metrics_throughput() -> None:
    cells = report((10, 100, 1000), (1, 2), 200, 2, 8142, 10_000)  # prints the table
    assert all(cell.imblab > 0 and cell.torchmetrics > 0 for cell in cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--thresholds", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--eval-classes", type=int, default=8142)
    parser.add_argument("--eval-samples", type=int, default=10_000, help="0: skip evaluate")
    args = parser.parse_args()
    report(
        args.classes,
        args.threads,
        args.thresholds,
        args.rounds,
        args.eval_classes,
        args.eval_samples,
    )


if __name__ == "__main__":
    main()
