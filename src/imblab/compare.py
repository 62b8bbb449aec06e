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
are marked and left out of the means. The printed table fits 120 columns (the last-epoch
columns and what does not fit are left out and named; ``--wide`` prints all), and the printed
and Markdown tables round each mean +- std to what its spread over seeds supports
(:func:`seed_decimals`); the CSV keeps the raw values.

The runs are read by :mod:`imblab.runs` (which also writes a sweep's ``summary.md``); this
module is the command line, its printing and the figure.

``imblab-compare SWEEP_DIR --baseline KEY=VALUE ...`` compares every configuration with a
baseline configuration, paired by seed: per tag a difference, an interval that holds with 3
seeds, a p-value adjusted over the configurations (``--correction``), a verdict and the seeds a
clear answer would need, printed and written as ``<name>_baseline.csv``, ``.md`` and ``.png``
(:mod:`imblab.baseline`, :mod:`imblab.seed_stats`).

``imblab-compare --paired RUN_A RUN_B`` compares two runs evaluated on the same split (their
``imblab-eval`` dirs or ``predictions.npz``): A minus B in macro-F1 and per-class F1 with a
paired bootstrap interval over the test images only (:func:`imblab.reports.paired.paired_compare`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from imblab.errors import ConfigError
from imblab.runs import (
    Run,
    Table,
    columns,
    failures,
    find_runs,
    group_runs,
    grouped_table,
    load_run,
    markdown,
    mean_std,
    run_table,
    short_name,
    value,
    write_csv,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# the default columns: the monitor and the long-tail papers' test metrics (#14)
COMPARE_TAGS = (
    "val/f1_macro",
    "test/f1_macro",
    "test/balanced_accuracy",
    "test/accuracy_many",
    "test/accuracy_medium",
    "test/accuracy_few",
)
FIGURE_TAGS = ("val/f1_macro", "test/f1_macro", "test/balanced_accuracy")
WIDTH = 120  # the printed table fits this many columns unless --wide


def seed_decimals(std: float) -> int:
    """The decimals a mean over seeds supports: its standard deviation to two significant
    digits, between 2 and 4 decimals; 3 without a spread (one run, or a std under 0.00005,
    which is rounding noise, not a spread)."""
    if not math.isfinite(std) or std < 5e-5:
        return 3
    rounded = float(f"{std:.2g}")  # 0.0999999 (a float32 0.1) -> 0.1
    return min(4, max(2, 1 - math.floor(math.log10(rounded))))


def mean_std_text(mean: float, std: float, n: int) -> str:
    """``mean ± std`` rounded to :func:`seed_decimals` (``mean`` alone for one run; empty when
    there is no value)."""
    if math.isnan(mean):
        return ""
    if n < 2:
        return f"{mean:.3f}"
    d = seed_decimals(std)
    return f"{mean:.{d}f} ± {std:.{d}f}" if std >= 5e-5 else f"{mean:.{d}f} ± 0"


def readable(table: Table, grouped: bool, n_cols: int) -> list[list[str]]:
    """The table's rows with the metric cells (the last ``n_cols``) rounded for people: 3
    decimals per run, :func:`mean_std_text` per configuration (from the raw CSV values)."""
    rows = []
    for row, raw in zip(table.rows, table.csv_rows, strict=True):
        head = row[: len(row) - n_cols]
        if grouped:
            done = int(raw[len(head) - 2])
            pairs = raw[len(raw) - 2 * n_cols :]
            means, stds = pairs[::2], pairs[1::2]
            cells = [mean_std_text(m, s, done) for m, s in zip(means, stds, strict=True)]
        else:
            values = raw[len(raw) - n_cols :]
            cells = ["" if v == "" or math.isnan(v) else f"{v:.3f}" for v in values]
        rows.append([*head, *cells])
    return rows


def fit_columns(
    header: list[str], rows: list[list[str]], first_metric: int, width: int
) -> tuple[list[int], list[str]]:
    """The columns to print within ``width`` characters (two spaces between columns, headers
    split at their first ``/`` over two lines): every non-metric column (``failed`` only when
    a run failed), the metric columns without the last-epoch ones, as many as fit in order.
    Returns the kept column indices and the names of those left out."""

    def column_width(i: int) -> int:
        parts = header[i].split("/", 1)
        return max([len(p) for p in parts] + [len(r[i]) for r in rows])

    keep = [
        i
        for i in range(first_metric)
        if header[i] != "failed" or any(row[i] != "0" for row in rows)  # no failures: no column
    ]
    left_out = []
    used = sum(column_width(i) + 2 for i in keep)
    for i in range(first_metric, len(header)):
        if header[i].endswith("(last)"):
            left_out.append(header[i])
            continue
        if used + column_width(i) > width:
            left_out.append(header[i])
            continue
        keep.append(i)
        used += column_width(i) + 2
    return keep, left_out


def text_table(header: list[str], rows: list[list[str]], keep: list[int]) -> str:
    """An aligned plain-text table of the ``keep`` columns; metric headers over two lines
    (``val`` / ``f1_macro (best)``), numbers right-aligned."""
    tops, bottoms = [], []
    for i in keep:
        top, sep, bottom = header[i].partition("/")
        tops.append(top if sep else "")
        bottoms.append(bottom if sep else top)
    cells = [[row[i] for i in keep] for row in rows]
    widths = [
        max([len(tops[j]), len(bottoms[j])] + [len(r[j]) for r in cells]) for j in range(len(keep))
    ]

    def line(values: list[str], right: bool) -> str:
        parts = [
            v.rjust(w) if right and any(ch.isdigit() for ch in v) else v.ljust(w)
            for v, w in zip(values, widths, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [line(tops, False)] if any(tops) else []
    lines.append(line(bottoms, False))
    lines.append("  ".join("-" * w for w in widths))
    lines += [line(r, True) for r in cells]
    return "\n".join(lines) + "\n"


BAR_IN = 0.2  # inches per bar: room for its value, written upright at 9 pt
GAP_IN = 0.3  # inches between bar groups
FONT = 10  # points: configuration labels and legend


def comparison_figure(
    runs: Sequence[Run], tags: Sequence[str], minority_k: int, seed_keys: Sequence[str]
) -> Figure:
    """One bar group per configuration, one bar per tag: the mean over its completed runs (a
    validation tag at the best epoch; a test tag its one value), the sample standard deviation
    over seeds as the error bar, the value written on the bar. A 0 is drawn as a 0 (a flat bar
    labelled ``0.000``), a negative value (an MCC) below the zero line, a missing value is
    marked ``n/a``.

    Sized to its text: a bar group is as wide as its bars or its configuration label, whichever
    is wider; the legend (under the axes) has as many columns as fit the width; the y range
    holds the written values; and :func:`~imblab.canvas.fit_text` grows the figure where text
    would still leave it. Every text stays on the canvas, whatever the tag names (tested with 8
    tags and 12 configurations)."""
    import matplotlib.figure  # start-up cost: only a figure needs matplotlib
    from matplotlib import colormaps
    from matplotlib.font_manager import FontProperties

    from imblab.canvas import fit_text, renderer_of

    keys, groups = group_runs(runs, seed_keys)
    labels = ["\n".join(f"{k}={v}" for k, v in zip(keys, c, strict=True)) for c in groups]
    labels = [label or "all runs" for label in labels]
    names = [tag if tag.startswith("test/") else f"{tag} (best epoch)" for tag in tags]
    stats = {
        tag: [
            (
                *mean_std([value(r, tag, "best", minority_k) for r in members if r.ok]),
                sum(r.ok for r in members),
            )
            for members in groups.values()
        ]
        for tag in tags
    }
    n_groups, n_tags = len(labels), len(tags)

    fig = matplotlib.figure.Figure(dpi=100, layout="constrained")
    renderer = renderer_of(fig)
    font = FontProperties(size=FONT)

    def inches(text: str) -> float:
        """The width of ``text``'s longest line at :data:`FONT` points."""
        lines = text.split("\n")
        widths = [renderer.get_text_width_height_descent(t, font, ismath=False)[0] for t in lines]
        return max(widths) / fig.dpi

    group_in = max(n_tags * BAR_IN + GAP_IN, max(inches(label) for label in labels) + 0.2)
    width = max(6.0, 1.2 + n_groups * group_in)
    entry_in = 0.7 + max(inches(name) for name in names)  # handle, gap and text of an entry
    ncols = max(1, min(n_tags, int((width - 0.2) // entry_in)))
    legend_rows = -(-n_tags // ncols)
    label_lines = max(label.count("\n") + 1 for label in labels)
    fig.set_size_inches(width, 4.4 + 0.17 * (label_lines + legend_rows))
    ax = fig.add_subplot()
    slot = 1.0 / (n_tags + GAP_IN / BAR_IN)  # a bar's share of a group (1.0 on the x axis)
    colours = colormaps["tab10" if n_tags <= 10 else "tab20"]
    values, low = [], 0.0  # low: the lowest bar or error bar (a negative MCC)
    for j, (tag, name) in enumerate(zip(tags, names, strict=True)):
        x = [i + (j - (n_tags - 1) / 2) * slot for i in range(n_groups)]
        means = [m for m, _, _ in stats[tag]]
        errors = [s if n > 1 and math.isfinite(s) else 0.0 for _, s, n in stats[tag]]
        heights = [0.0 if math.isnan(m) else m for m in means]
        low = min([low, *(h - e for h, e in zip(heights, errors, strict=True))])
        ax.bar(x, heights, slot * 0.9, yerr=errors, capsize=2, color=colours(j), label=name)
        for xi, mean, err in zip(x, means, errors, strict=True):
            missing = math.isnan(mean)
            values.append(
                ax.text(
                    xi,
                    (0.0 if missing else mean + err) + 0.01,
                    "n/a" if missing else f"{mean:.3f}",
                    ha="center",
                    va="bottom",
                    rotation=90,
                    fontsize=9,
                    color="tab:red" if missing else "black",
                )
            )
    ax.set_xticks(range(n_groups), labels, fontsize=FONT)
    ax.set_xlim(-0.5, n_groups - 0.5)
    bottom = math.floor(low * 5) / 5  # 0, or the 0.2 step below a negative value
    ax.set_yticks([round(bottom + 0.2 * i, 1) for i in range(round((1.0 - bottom) / 0.2) + 1)])
    ax.set_ylim(bottom, 1.05)
    ax.set_ylabel("score (mean ± std over seeds)")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    n_runs = sum(len(m) for m in groups.values())
    ax.set_title(f"{n_runs} runs, {n_groups} configurations", fontsize=12)
    fig.legend(loc="outside lower center", ncols=ncols, fontsize=FONT, frameon=False)
    for _ in range(2):  # the y range holds the values written above the bars
        fig.draw_without_rendering()
        to_data = ax.transData.inverted()
        top = max(to_data.transform((0, t.get_window_extent().y1))[1] for t in values)
        if top <= ax.get_ylim()[1]:
            break
        ax.set_ylim(bottom, top + 0.02)
    return fit_text(fig)


def figure(
    runs: Sequence[Run], tags: Sequence[str], minority_k: int, seed_keys: Sequence[str], path: Path
) -> None:
    """Write :func:`comparison_figure` as a PNG at ``path`` (100 dpi)."""
    fig = comparison_figure(runs, tags, minority_k, seed_keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``imblab-compare`` (options are added here)."""
    parser = argparse.ArgumentParser(
        prog="imblab-compare",
        description="Compare the runs of a sweep: a Markdown and CSV table and a PNG figure; or, "
        "with --paired, two runs' test predictions by a paired bootstrap.",
    )
    parser.add_argument("sweep_dir", type=Path, nargs="?", help="a sweep dir (or any dir of runs)")
    parser.add_argument(
        "--tags",
        nargs="+",
        help="metric tags (columns; default: the long-tail columns, with --baseline their test "
        "tags); also e.g. val/minority_recall, test/mcc",
    )
    parser.add_argument(
        "--wide",
        action="store_true",
        help=f"print every column (default: what fits {WIDTH} columns; the files hold all)",
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
    baseline = parser.add_argument_group(
        "baseline comparison",
        "each configuration minus the baseline, paired by seed: interval, adjusted p-value, "
        "verdict and seeds needed per tag",
    )
    baseline.add_argument(
        "--baseline",
        nargs="+",
        metavar="KEY=VALUE",
        help="the baseline configuration: overrides or config-group choices of its runs "
        "(e.g. loss=ce sampler=none, or experiment=mnist_lt_ce)",
    )
    baseline.add_argument(
        "--correction",
        choices=["holm", "bonferroni", "none"],  # imblab.seed_stats.CORRECTIONS
        default="holm",
        help="adjustment of each tag's p-values over the configurations compared (default holm)",
    )
    baseline.add_argument(
        "--predictions",
        nargs="+",
        metavar="GLOB",
        help="imblab-eval dirs of the runs' checkpoints for the test-set noise (default: each "
        "run's own predictions.npz)",
    )
    paired = parser.add_argument_group(
        "paired comparison", "run A minus run B in macro-F1 and per-class F1 on the same samples"
    )
    paired.add_argument(
        "--paired",
        nargs=2,
        type=Path,
        metavar=("RUN_A", "RUN_B"),
        help="two imblab-eval or training run dirs (or their predictions.npz) on the same "
        "split; no SWEEP_DIR",
    )
    intervals = parser.add_argument_group("intervals (--baseline and --paired)")
    intervals.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates")
    intervals.add_argument("--seed", type=int, default=0, help="seed of the bootstrap weights")
    intervals.add_argument("--confidence", type=float, default=0.95, help="interval coverage")
    return parser


def default_tags(args: argparse.Namespace) -> list[str]:
    """``--tags``, else :data:`COMPARE_TAGS` (with ``--baseline`` its test tags: a validation
    tag of the monitor would be compared on the epochs it selected)."""
    if args.tags:
        return list(args.tags)
    if args.baseline:
        return [t for t in COMPARE_TAGS if t.startswith("test/")]
    return list(COMPARE_TAGS)


def compare_baseline(args: argparse.Namespace, sweep_dir: Path) -> int:
    """Print the comparison with the baseline; write ``<name>_baseline.csv``, ``.md`` and
    ``.png`` (without ``--no-figure``)."""
    import imblab.baseline as baseline  # start-up cost: scipy (torch for the replicates)

    try:
        options = baseline.Options(
            baseline=baseline.parse_baseline(args.baseline),
            tags=default_tags(args),
            seed_keys=list(args.seed_keys),
            confidence=args.confidence,
            n_boot=args.n_boot,
            seed=args.seed,
            correction=args.correction,
            minority_k=args.minority_k,
        )
        baseline.check_options(options)
        runs = [load_run(p, sweep_dir) for p in find_runs(sweep_dir)]
        options.predictions = baseline.resolve_predictions(args.predictions or [], runs)
        result = baseline.compare_to_baseline(runs, options)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    trained = [r for r in runs if not baseline.is_evaluation(r.path)]
    keys = [*result.keys, *result.seed_keys]
    print(baseline.printed_text(result) + baseline.printed_failures(trained, keys))
    out: Path = args.out or sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{args.name}_baseline.{suffix}" for suffix in ("csv", "md")]
    baseline.write_csv(written[0], result)
    written[1].write_text(baseline.markdown_text(result, failures(trained)))
    if not args.no_figure:
        written.append(out / f"{args.name}_baseline.png")
        baseline.write_figure(written[-1], result)
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


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
        if args.sweep_dir is not None or args.baseline:
            print(
                "error: give SWEEP_DIR [--baseline ...] or --paired RUN_A RUN_B, not both",
                file=sys.stderr,
            )
            return 2
        return compare_paired(args)
    if args.sweep_dir is None:
        print("error: give SWEEP_DIR (or --paired RUN_A RUN_B)", file=sys.stderr)
        return 2
    if args.baseline and args.group_seeds:
        print("error: give --baseline or --group-seeds, not both", file=sys.stderr)
        return 2
    sweep_dir: Path = args.sweep_dir
    if not sweep_dir.is_dir():
        print(f"error: {sweep_dir}: no such directory", file=sys.stderr)
        return 2
    paths = find_runs(sweep_dir)
    if not paths:
        print(f"error: {sweep_dir}: no runs (no status.json or metrics.json)", file=sys.stderr)
        return 2
    if args.baseline:
        return compare_baseline(args, sweep_dir)
    args.tags = default_tags(args)
    runs = [load_run(p, sweep_dir) for p in paths]
    if args.group_seeds:
        table = grouped_table(runs, args.tags, args.minority_k, args.seed_keys)
    else:
        table = run_table(runs, args.tags, args.minority_k)
    n_cols = len(columns(args.tags))
    rows = readable(table, args.group_seeds, n_cols)
    text = markdown(table.header, rows) + failures(runs)
    first_metric = len(table.header) - n_cols
    keep, left_out = list(range(len(table.header))), list[str]()
    if not args.wide:
        keep, left_out = fit_columns(table.header, rows, first_metric, WIDTH)
    if not args.group_seeds:  # job numbers; the dir names are in the CSV
        rows = [[short_name(r[0]), *r[1:]] for r in rows]
    print(text_table(table.header, rows, keep) + failures(runs))
    if left_out:
        print(f"not shown ({len(left_out)}; --wide shows them): " + ", ".join(left_out))
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
