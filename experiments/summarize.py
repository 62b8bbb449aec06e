"""Markdown tables (mean +- std over runs) of the `metrics.json` files under a sweep dir.

    python experiments/summarize.py SWEEP_DIR [TAG ...]           # one table over all runs
    python experiments/summarize.py --by-config SWEEP_DIR [TAG ...]  # one row per configuration

`--by-config` groups the runs by their command-line overrides (`.hydra/overrides.yaml`) without
`seed` and the keys that do not change the experiment (figures, progress bar). The column
`minority_recall` is the mean test recall of the 3 classes with the fewest training images.
A stop-gap for the studies until `imblab-compare` exists.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

DEFAULT_TAGS = [
    "test/f1_macro",
    "minority_recall",
    "test/balanced_accuracy",
    "test/auroc_macro",
]
NOISE = ("seed=", "figures_every_n_epochs=", "callbacks.rich_progress_bar=")


def minority_recall(record: dict, k: int = 3) -> float:
    counts = [int(n) for n in record["data"]["train_counts"].split(",")]
    names = record["data"]["class_names"].split(",")
    rarest = sorted(range(len(counts)), key=lambda c: counts[c])[:k]
    return statistics.fmean(record["metrics"][f"test/recall/{names[c]}"] for c in rarest)


def value(record: dict, tag: str) -> float | None:
    return minority_recall(record) if tag == "minority_recall" else record["metrics"].get(tag)


def cell(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} +- {std:.3f}"


def main() -> None:
    args = sys.argv[1:]
    by_config = "--by-config" in args
    args = [a for a in args if a != "--by-config"]
    sweep, tags = Path(args[0]), args[1:] or DEFAULT_TAGS
    runs = sorted(sweep.glob("**/metrics.json"))
    if not runs:
        sys.exit(f"no metrics.json under {sweep}")
    groups: dict[str, list[dict]] = defaultdict(list)
    for path in runs:
        record = json.loads(path.read_text())
        overrides = yaml.safe_load((path.parent / ".hydra" / "overrides.yaml").read_text())
        key = " ".join(o for o in overrides if not o.startswith(NOISE)) if by_config else "all"
        groups[key].append(record)
    sources = {
        (r["data"]["source_used"], r["data"]["test_source"]) for g in groups.values() for r in g
    }
    print(f"{len(runs)} runs; (train data, test data): {sorted(sources)}\n")
    print("| configuration | runs | " + " | ".join(f"`{t}`" for t in tags) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in tags) + " |")
    for key, records in sorted(groups.items()):
        cells = [cell([v for r in records if (v := value(r, t)) is not None]) for t in tags]
        print(f"| {key} | {len(records)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
