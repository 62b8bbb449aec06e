"""Print a Markdown table (mean +- std over runs) of the metrics.json files under a sweep dir.

    python experiments/summarize.py SWEEP_DIR [TAG ...]

A stop-gap for the studies until `imblab-compare` exists: it reads only `metrics.json`.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

DEFAULT_TAGS = [
    "test/accuracy",
    "test/balanced_accuracy",
    "test/f1_macro",
    "test/auroc_macro",
    "test/ap_macro",
]


def main() -> None:
    sweep, tags = Path(sys.argv[1]), sys.argv[2:] or DEFAULT_TAGS
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    if not records:
        sys.exit(f"no metrics.json under {sweep}")
    sources = {(r["data"]["source_used"], r["data"]["test_source"]) for r in records}
    print(f"{len(records)} runs; train data, test data: {sorted(sources)}\n")
    print("| metric | mean | std | runs |")
    print("| --- | --- | --- | --- |")
    for tag in tags:
        values = [r["metrics"][tag] for r in records if r["metrics"].get(tag) is not None]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| `{tag}` | {statistics.fmean(values):.4f} | {std:.4f} | {len(values)} |")


if __name__ == "__main__":
    main()
