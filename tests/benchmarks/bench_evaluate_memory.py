"""Peak memory of ``evaluate`` in exact mode (``thresholds=None``) against the size of its input.

Each measurement runs in a fresh Python process (Linux): it builds ``N x C`` float32 softmax
scores and int64 targets, records its resident set size, resets the peak (``/proc/self/clear_refs``)
and calls ``evaluate``; the peak (``VmHWM``) minus the size before is what ``evaluate`` added on
top of its input.

    python tests/benchmarks/bench_evaluate_memory.py [--samples 10000000] [--classes 10]
    pytest -m benchmark tests/benchmarks/bench_evaluate_memory.py -s

Target (issue #16, item 16): the added peak within a small multiple (<= 3x) of the scores' size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

import pytest

MAX_RATIO = 3.0

_CHILD = textwrap.dedent(
    """
    import gc, json, sys, time
    import torch
    from imblab.metrics import evaluate

    def status(key):
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(key + ":"))
        return int(line.split()[1]) * 1024

    n, c = int(sys.argv[1]), int(sys.argv[2])
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, c, (n,), generator=g)
    probs = torch.randn(n, c, generator=g).mul_(3.0)
    probs[torch.arange(n), target] += 2.0
    probs = torch.softmax(probs, dim=1)
    evaluate(probs[:1000], target[:1000])  # warm-up: lazy imports, allocator pools
    gc.collect()
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak RSS, to the current RSS
    start = time.perf_counter()
    scores = evaluate(probs, target)
    seconds = time.perf_counter() - start
    after = status("VmHWM")
    print(json.dumps({"input": probs.numel() * 4, "before": before, "after": after,
                      "seconds": seconds, "auroc_macro": scores["auroc_macro"]}))
    """
)


def measure(samples: int, classes: int) -> dict[str, float]:
    """Run one measurement in a fresh process; bytes and seconds."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(samples), str(classes)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def report(samples: int, classes: int) -> float:
    """Print one measurement; return the added peak as a multiple of the input."""
    m = measure(samples, classes)
    added = m["after"] - m["before"]
    ratio = added / m["input"]
    mib = 2**20
    print(
        f"evaluate(exact) {samples:,} x {classes}: input {m['input'] / mib:,.0f} MiB, "
        f"peak RSS {m['after'] / mib:,.0f} MiB (+{added / mib:,.0f} MiB = {ratio:.2f}x input), "
        f"{m['seconds']:.1f} s"
    )
    return ratio


@pytest.mark.benchmark
def test_exact_evaluate_peak_memory_is_a_small_multiple_of_the_input() -> None:
    assert report(2_000_000, 10) <= MAX_RATIO


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    report(args.samples, args.classes)
