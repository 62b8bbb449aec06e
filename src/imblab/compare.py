"""``imblab-compare SWEEP_DIR``: a table (Markdown and CSV) and a figure (PNG) of a sweep's runs.

A run is any directory under SWEEP_DIR with a ``status.json``, ``metrics.json`` or
``.hydra/overrides.yaml``. Its values come from ``metrics.json`` (the final scalars) and its
TensorBoard events (every epoch). For a validation or training tag there are two columns: the
value at the **best** epoch (the epoch where the run's monitor was best, i.e. its checkpoint)
and at the **last** epoch; a test tag has one (the test of the best checkpoint). The derived tag
``<stage>/minority_recall`` is the mean recall of the ``--minority-k`` classes with the fewest
training images. The swept keys (overrides whose values differ between runs) are columns;
``--group-seeds`` makes one row per configuration (the swept keys without ``seed``) with
mean +- std (sample standard deviation) over its completed runs. Failed and interrupted runs
are marked and left out of the means.

The runs are read by :mod:`imblab.runs` (which also writes a sweep's ``summary.md``); this
module is the command line, its printing and the figure.

``imblab-compare --paired RUN_A RUN_B`` compares two runs evaluated on the same split (their
``imblab-eval`` dirs or ``predictions.npz``): A minus B in macro-F1 and per-class F1 with a
paired bootstrap interval (:func:`imblab.reports.paired.paired_compare`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from imblab.errors import ConfigError
from imblab.runs import (
    DEFAULT_TAGS,
    Run,
    failures,
    find_runs,
    group_runs,
    grouped_table,
    load_run,
    markdown,
    mean_std,
    run_table,
    value,
    write_csv,
)

FIGURE_TAGS = ("val/f1_macro", "val/minority_recall")


def figure(
    runs: Sequence[Run], tags: Sequence[str], minority_k: int, seed_keys: Sequence[str], path: Path
) -> None:
    """One bar panel per tag: each configuration's mean (best epoch; test: the one value) over
    its completed runs, with the sample standard deviation over seeds as the error bar."""
    import matplotlib  # start-up cost: only a figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys, groups = group_runs(runs, seed_keys)
    labels = [", ".join(f"{k}={v}" for k, v in zip(keys, c, strict=True)) or "all" for c in groups]
    fig, axes = plt.subplots(
        1, len(tags), figsize=(4 + 3 * len(tags), 1.2 + 0.45 * len(groups)), squeeze=False
    )
    for ax, tag in zip(axes[0], tags, strict=True):
        stats = [
            mean_std([value(r, tag, "best", minority_k) for r in members if r.ok])
            for members in groups.values()
        ]
        means = [0.0 if math.isnan(m) else m for m, _ in stats]
        errors = [0.0 if math.isnan(s) else s for _, s in stats]
        ax.barh(range(len(labels)), means, xerr=errors, capsize=3, color="tab:blue")
        ax.set_yticks(range(len(labels)), labels if ax is axes[0][0] else [""] * len(labels))
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(tag if tag.startswith("test/") else f"{tag} (best epoch)")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``imblab-compare`` (options are added here)."""
    parser = argparse.ArgumentParser(
        prog="imblab-compare",
        description="Compare the runs of a sweep: a Markdown and CSV table and a PNG figure; or, "
        "with --paired, two runs' test predictions by a paired bootstrap.",
    )
    parser.add_argument("sweep_dir", type=Path, nargs="?", help="a sweep dir (or any dir of runs)")
    parser.add_argument(
        "--tags", nargs="+", default=list(DEFAULT_TAGS), help="metric tags (columns)"
    )
    parser.add_argument(
        "--group-seeds",
        action="store_true",
        help="one row per configuration with mean +- std over its seeds",
    )
    parser.add_argument(
        "--seed-keys", nargs="+", default=["seed"], help="override keys that are seeds"
    )
    parser.add_argument(
        "--minority-k",
        type=int,
        default=3,
        help="<stage>/minority_recall averages this many rarest classes",
    )
    parser.add_argument(
        "--figure-tags", nargs="+", default=list(FIGURE_TAGS), help="tags in the figure"
    )
    parser.add_argument("--no-figure", action="store_true", help="write no PNG")
    parser.add_argument("--out", type=Path, help="output dir (default: SWEEP_DIR)")
    parser.add_argument("--name", default="compare", help="file name stem of the outputs")
    paired = parser.add_argument_group(
        "paired comparison", "run A minus run B in macro-F1 and per-class F1 on the same samples"
    )
    paired.add_argument(
        "--paired",
        nargs=2,
        type=Path,
        metavar=("RUN_A", "RUN_B"),
        help="two imblab-eval dirs (or their predictions.npz) on the same split; no SWEEP_DIR",
    )
    paired.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates")
    paired.add_argument("--seed", type=int, default=0, help="seed of the bootstrap weights")
    paired.add_argument("--confidence", type=float, default=0.95, help="interval coverage")
    return parser


def compare_paired(args: argparse.Namespace) -> int:
    """Print the paired comparison; with ``--out`` also write ``<name>.md`` and ``<name>.json``."""
    from imblab.reports.paired import format_paired, paired_compare  # start-up cost: torch

    run_a, run_b = args.paired
    try:
        result = paired_compare(
            run_a, run_b, n_boot=args.n_boot, seed=args.seed, confidence=args.confidence
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = f"A: {run_a}\nB: {run_b}\n\n" + format_paired(result)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.md").write_text(text)
        (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


def compare(args: argparse.Namespace) -> int:
    """Print the table, write ``<name>.md``, ``<name>.csv`` and ``<name>.png``."""
    if args.paired is not None:
        if args.sweep_dir is not None:
            print("error: give SWEEP_DIR or --paired RUN_A RUN_B, not both", file=sys.stderr)
            return 2
        return compare_paired(args)
    if args.sweep_dir is None:
        print("error: give SWEEP_DIR (or --paired RUN_A RUN_B)", file=sys.stderr)
        return 2
    sweep_dir: Path = args.sweep_dir
    if not sweep_dir.is_dir():
        print(f"error: {sweep_dir}: no such directory", file=sys.stderr)
        return 2
    paths = find_runs(sweep_dir)
    if not paths:
        print(f"error: {sweep_dir}: no runs (no status.json or metrics.json)", file=sys.stderr)
        return 2
    runs = [load_run(p, sweep_dir) for p in paths]
    if args.group_seeds:
        table = grouped_table(runs, args.tags, args.minority_k, args.seed_keys)
    else:
        table = run_table(runs, args.tags, args.minority_k)
    text = markdown(table.header, table.rows) + failures(runs)
    print(text)
    out: Path = args.out or sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.md").write_text(text)
    write_csv(out / f"{args.name}.csv", table)
    written = [out / f"{args.name}.md", out / f"{args.name}.csv"]
    if not args.no_figure:
        png = out / f"{args.name}.png"
        figure(runs, args.figure_tags, args.minority_k, args.seed_keys, png)
        written.append(png)
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``imblab-compare``."""
    sys.exit(compare(build_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
