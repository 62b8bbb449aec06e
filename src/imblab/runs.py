"""What a run dir holds, read back: its status record and its results, and a sweep's summary.

A run dir (one ``imblab-train`` run or one sweep job) holds ``status.json`` (how the run ended:
:func:`write_status` / :func:`read_status`), ``metrics.json`` (the final scalars, the monitor
and the realised data), ``tensorboard/`` (every scalar of every epoch) and
``.hydra/overrides.yaml``. :func:`load_run` reads them into a :class:`Run`; the tables
(:func:`run_table`, :func:`grouped_table`) give each run's value of a tag at its **best** epoch
(where its monitor was best, i.e. its checkpoint) and **last** epoch, or the one value of a
test tag; :func:`write_summary` writes a sweep's ``summary.md`` and ``summary.csv``. Reading
runs needs neither torch nor Lightning.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from imblab.data.summary import DataSummary

STATUS_FILE = "status.json"
EVENTS = "tensorboard"  # the folder of TensorBoard runs under a run dir (or a sweep dir)
MARKERS = (STATUS_FILE, "metrics.json", ".hydra/overrides.yaml")
DEFAULT_TAGS = (
    "val/f1_macro",
    "val/minority_recall",
    "val/balanced_accuracy",
    "val/auroc_macro",
    "test/f1_macro",
    "test/minority_recall",
)
MINORITY = "minority_recall"


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``status.json`` record, or None if it has none (or an unreadable one)."""
    try:
        record: dict[str, Any] = json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record


#: fields the training pipeline adds to the record of the run while it runs
#: (:func:`update_status`): the monitor's ``best`` and ``last`` values, the epochs reached
RUN_FIELDS = ("monitor", "epochs_completed")


def write_status(run_dir: Path, record: dict[str, Any]) -> None:
    """Write ``status.json`` atomically (a reader never sees half a record). The
    :data:`RUN_FIELDS` that the file holds for the same run (the same ``started``) and that
    ``record`` lacks are kept, so the job's final record keeps what training added."""
    previous = read_status(run_dir) or {}
    if record.get("started") is not None and previous.get("started") == record.get("started"):
        kept = {k: previous[k] for k in RUN_FIELDS if k in previous and k not in record}
        record = {**record, **kept}
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{STATUS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(run_dir / STATUS_FILE)


def update_status(run_dir: Path, **fields: Any) -> None:
    """Set ``fields`` in the run's ``status.json`` record (created if it has none)."""
    write_status(run_dir, {**(read_status(run_dir) or {}), **fields})


def utc_now() -> str:
    """The time now in UTC, as the status record writes it (ISO 8601, seconds)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def error_line(err: BaseException) -> str:
    """``Type: message`` on one line (whitespace collapsed, at most 500 characters)."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text[:500]


@dataclass
class Run:
    """One run of a sweep: where it is, how it was configured, how it ended, what it logged.
    ``final`` holds metrics.json's final scalars, ``history`` the TensorBoard scalars (tag ->
    step -> value), ``data`` metrics.json's record of the realised data
    (:meth:`DataSummary.from_record` reads it)."""

    path: Path
    name: str
    overrides: dict[str, str]
    status: str
    error: str | None = None
    monitor: str = "val/f1_macro"
    mode: str = "max"
    final: dict[str, float] = field(default_factory=dict)
    history: dict[str, dict[int, float]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "completed"


def parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """``key=value`` command-line overrides as a dict (``+``/``++``/``~`` prefixes dropped)."""
    out: dict[str, str] = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        out[key.lstrip("+~")] = value
    return out


def job_number(name: str) -> tuple[int, str]:
    """Sort key: the job number a sweep job's directory starts with, then the name."""
    match = re.match(r"(\d+)_", Path(name).name)
    return (int(match.group(1)) if match else sys.maxsize, name)


def short_name(name: str) -> str:
    """A sweep job's number for the Markdown table (its swept values are columns beside it);
    any other run keeps its name."""
    path = Path(name)
    match = re.match(r"(\d+)_", path.name)
    leaf = match.group(1) if match else path.name
    return leaf if str(path.parent) == "." else f"{path.parent}/{leaf}"


def find_runs(sweep_dir: Path) -> list[Path]:
    """Every run directory under ``sweep_dir`` (itself included), sorted by job number."""
    dirs = {p.parent for marker in MARKERS[:2] for p in sweep_dir.rglob(marker)}
    dirs |= {p.parent.parent for p in sweep_dir.rglob(MARKERS[2])}
    return sorted(dirs, key=lambda p: job_number(str(p.relative_to(sweep_dir))))


def event_dir(run_dir: Path) -> Path | None:
    """The folder of a run's TensorBoard events: ``<run>/tensorboard/<run name>/``, a sweep
    job's ``<sweep>/tensorboard/<job dir name>/``, or (runs written before that layout)
    ``<run>/tensorboard/``; None when there is none."""
    name = run_dir.resolve().name
    for candidate in (run_dir / EVENTS / name, run_dir.parent / EVENTS / name, run_dir / EVENTS):
        if candidate.is_dir() and any(candidate.glob("events.out.tfevents.*")):
            return candidate
    return None


def read_history(run_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar of the run's TensorBoard events (:func:`event_dir`): tag -> step -> value
    (the last written wins for a step)."""
    events = event_dir(run_dir)
    if events is None:
        return {}
    keep_one = {"images": 1, "tensors": 1, "histograms": 1, "audio": 1, "compressedHistograms": 1}
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0, **keep_one})
    acc.Reload()
    return {
        tag: {e.step: float(e.value) for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]
    }


def load_run(run_dir: Path, sweep_dir: Path, events: bool = True) -> Run:
    """A :class:`Run` from the files in ``run_dir``."""
    name = str(run_dir.relative_to(sweep_dir)) if run_dir != sweep_dir else run_dir.name
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    status = read_status(run_dir) or {}
    run = Run(run_dir, name, parse_overrides(overrides or status.get("overrides") or []), "")
    metrics_file = run_dir / "metrics.json"
    record = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    run.final = {
        k: math.nan if v is None else float(v) for k, v in record.get("metrics", {}).items()
    }
    run.data = record.get("data", {})
    monitor = record.get("monitor") or status.get("objective") or {}
    run.monitor, run.mode = monitor.get("metric", run.monitor), monitor.get("mode", run.mode)
    run.status = status.get("status") or ("completed" if record else "unknown")
    if run.status == "running":
        run.status = "interrupted"  # nothing runs while its sweep is compared
    run.error = status.get("error")
    if events:
        run.history = read_history(run_dir)
    return run


def minority_classes(run: Run, k: int) -> list[str]:
    """Names of the ``k`` classes with the fewest training images (at most C - 1), from the
    run's data record; none when it records no (or inconsistent) training counts."""
    try:
        return DataSummary.from_record(run.data).minority_classes(k)
    except ValueError:  # class names and counts that do not match
        return []


def best_step(run: Run) -> int | None:
    """The step of the epoch where the run's monitor was best (the first of ties)."""
    points = run.history.get(run.monitor)
    if not points:
        return None
    finite = {s: v for s, v in points.items() if math.isfinite(v)}
    if not finite:
        return None
    pick = max if run.mode == "max" else min
    return pick(sorted(finite), key=lambda s: finite[s])


def value(run: Run, tag: str, epoch: str, minority_k: int = 3) -> float:
    """``tag`` of ``run`` at the ``best`` or ``last`` epoch (NaN when it was not logged). Test
    tags have one value, the test of the best checkpoint."""
    stage, _, metric = tag.partition("/")
    if metric == MINORITY:
        classes = minority_classes(run, minority_k)
        parts = [value(run, f"{stage}/recall/{c}", epoch) for c in classes]
        return statistics.fmean(parts) if parts else math.nan
    if epoch == "last" or stage == "test":
        if tag in run.final:
            return run.final[tag]
        points = run.history.get(tag, {})
        return points[max(points)] if points else math.nan
    step = best_step(run)
    points = run.history.get(tag, {})
    return points.get(step, math.nan) if step is not None else math.nan


def columns(tags: Sequence[str]) -> list[tuple[str, str, str]]:
    """(column name, tag, epoch) for each tag: best and last for epoch-wise tags, one for test."""
    out = []
    for tag in tags:
        if tag.startswith("test/"):
            out.append((tag, tag, "last"))
        else:
            out += [(f"{tag} (best)", tag, "best"), (f"{tag} (last)", tag, "last")]
    return out


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose values are not the same in every run (Hydra's own keys left out)."""
    keys = dict.fromkeys(k for r in runs for k in r.overrides if not k.startswith("hydra"))
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def fmt(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.4f}"


def cell(text: str) -> str:
    """A Markdown table cell: pipes escaped, one line."""
    return " ".join(text.replace("|", "\\|").split())


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("| " + " | ".join("---" for _ in header) + " |")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


@dataclass
class Table:
    """A comparison table: Markdown cells for people, raw values for the CSV."""

    header: list[str]
    rows: list[list[str]]
    csv_header: list[str]
    csv_rows: list[list[Any]]


def run_table(runs: Sequence[Run], tags: Sequence[str], minority_k: int) -> Table:
    """One row per run: its name (the job number in Markdown, the dir name in the CSV), swept
    values, status (with the error of a failed run) and the metric columns."""
    keys, cols = swept_keys(runs), columns(tags)
    header = ["run", *keys, "status", *(c[0] for c in cols)]
    rows, csv_rows = [], []
    for run in runs:
        values = [value(run, t, e, minority_k) for _, t, e in cols] if run.ok else []
        status = run.status if run.ok or not run.error else f"{run.status}: {run.error}"
        settings = [run.overrides.get(k, "") for k in keys]
        shown = [fmt(v) for v in values] if run.ok else [""] * len(cols)
        rows.append([short_name(run.name), *settings, status, *shown])
        raw: list[Any] = values if run.ok else [""] * len(cols)
        csv_rows.append([run.name, *settings, run.status, run.error or "", *raw])
    csv_header = ["run", *keys, "status", "error", *(c[0] for c in cols)]
    return Table(header, rows, csv_header, csv_rows)


def configuration(run: Run, keys: Sequence[str]) -> tuple[str, ...]:
    return tuple(run.overrides.get(k, "") for k in keys)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of the finite ``values``."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def group_runs(
    runs: Sequence[Run], seed_keys: Sequence[str]
) -> tuple[list[str], dict[tuple[str, ...], list[Run]]]:
    """The swept keys without the seed keys, and the runs of each configuration, configurations
    sorted by their values (numbers by value, then text)."""
    keys = [k for k in swept_keys(runs) if k not in seed_keys]
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(configuration(run, keys), []).append(run)
    return keys, dict(sorted(groups.items(), key=lambda item: natural_key(item[0])))


def natural_key(values: Sequence[str]) -> tuple[tuple[int, float, str], ...]:
    """Sort key of a configuration: a number sorts by its value, before any text."""
    key = []
    for text in values:
        try:
            key.append((0, float(text), ""))
        except ValueError:
            key.append((1, 0.0, text))
    return tuple(key)


def grouped_table(
    runs: Sequence[Run], tags: Sequence[str], minority_k: int, seed_keys: Sequence[str]
) -> Table:
    """One row per configuration: its swept values, completed and failed runs, and mean +- std
    over the completed runs of every metric column."""
    keys, groups = group_runs(runs, seed_keys)
    cols = columns(tags)
    header = [*keys, "runs", "failed", *(c[0] for c in cols)]
    csv_header = [*keys, "runs", "failed"]
    for name, _, _ in cols:
        csv_header += [f"{name} mean", f"{name} std"]
    rows, csv_rows = [], []
    for config, members in groups.items():
        done = [r for r in members if r.ok]
        stats = [mean_std([value(r, t, e, minority_k) for r in done]) for _, t, e in cols]
        cells = ["" if math.isnan(m) else f"{m:.4f} ± {s:.4f}" for m, s in stats]
        rows.append([*config, str(len(done)), str(len(members) - len(done)), *cells])
        csv_rows.append(
            [*config, len(done), len(members) - len(done), *(x for ms in stats for x in ms)]
        )
    return Table(header, rows, csv_header, csv_rows)


def write_csv(path: Path, table: Table) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(table.csv_header)
        writer.writerows(table.csv_rows)


def failures(runs: Sequence[Run]) -> str:
    """Markdown list of the runs that did not complete, with their errors."""
    bad = [r for r in runs if not r.ok]
    if not bad:
        return ""
    items = [f"- `{r.name}`: {r.status}" + (f": {r.error}" if r.error else "") for r in bad]
    return f"\n{len(bad)} of {len(runs)} runs did not complete:\n\n" + "\n".join(items) + "\n"


def write_summary(sweep_dir: Path) -> Path | None:
    """``summary.md`` and ``summary.csv`` in the sweep dir: one row per job with the default
    tags, then the jobs that did not complete. Written when a sweep ends."""
    runs = [load_run(p, sweep_dir) for p in find_runs(sweep_dir)]
    if not runs:
        return None
    table = run_table(runs, DEFAULT_TAGS, 3)
    path = sweep_dir / "summary.md"
    path.write_text(markdown(table.header, table.rows) + failures(runs))
    write_csv(sweep_dir / "summary.csv", table)
    return path
