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
import logging
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
from imblab.errors import config_error

log = logging.getLogger(__name__)
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
    """The run's ``status.json`` record, or None if it has none (or an unreadable one, or one
    that is no JSON object)."""
    try:
        record = json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


#: fields the training pipeline adds to the record of the run while it runs
#: (:func:`update_status`): the monitor's ``best`` and ``last`` values, the epochs reached,
#: where its TensorBoard run is (``tensorboard: {logdir, run}``, :func:`event_dir`)
RUN_FIELDS = ("monitor", "epochs_completed", "tensorboard")


def write_status(run_dir: Path, record: dict[str, Any]) -> None:
    """Write ``status.json`` atomically (a reader never sees half a record). The
    :data:`RUN_FIELDS` that the file holds for the same run (the same ``started``) and that
    ``record`` lacks are kept, so the job's final record keeps what training added."""
    previous = read_status(run_dir) or {}
    if record.get("started") is not None and previous.get("started") == record.get("started"):
        kept = {k: previous[k] for k in RUN_FIELDS if k in previous and k not in record}
        record = {**record, **kept}
    write_json(run_dir / STATUS_FILE, record)


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as JSON to ``path`` atomically: into a temporary file beside it, then
    renamed over it, so a reader (or a crash, or a full disk) never leaves half a record; the
    temporary file is removed when the write fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


LOCK_FILE = ".imblab.lock"  # in a run dir while a run uses it: {host, pid, pid_start, ...}


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux: its start time in clock ticks since boot, from
    ``/proc/<pid>/stat``), so a PID reused by a later process is told apart; None where
    unknown. ``"zombie"`` for a process that has ended but not been reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return "zombie" if fields[0] == "Z" else fields[19]


def _alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` of this host still runs (and is the one that started at
    ``start``, where both are known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    now = _process_start(pid)
    return now != "zombie" and (start is None or now is None or now == start)


class RunLock:
    """The lock of a run dir (:data:`LOCK_FILE`): held by one process, which writes its host,
    PID, start time and command into it. :meth:`acquire` creates it atomically (a complete
    file or none); a lock left by a process of this host that has ended (killed, crashed) is
    stale and taken over with a warning; a live one, or one of another host (which cannot be
    checked), is a :class:`~imblab.errors.ConfigError` naming its holder and how to remove
    it. :meth:`release` removes it only while this process holds it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self.held = False

    def record(self) -> dict[str, Any]:
        pid = os.getpid()
        return {
            "host": os.uname().nodename,
            "pid": pid,
            "pid_start": _process_start(pid),
            "started": utc_now(),
            "command": " ".join(sys.argv),
        }

    def acquire(self) -> None:
        """Take the lock, or raise the one-line ConfigError naming who holds it."""
        tmp = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.record(), indent=1) + "\n")
        try:
            for _ in range(3):  # a stale lock removed, then created again by another process
                try:
                    os.link(tmp, self.path)  # fails if it exists: never half a lock
                    self.held = True
                    return
                except FileExistsError:
                    pass
                holder, _ = _read_json(self.path)
                holder = holder if isinstance(holder, dict) else {}
                host, pid = holder.get("host"), holder.get("pid")
                remove = f"rm {self.path}"
                if not isinstance(host, str) or not isinstance(pid, int):
                    raise config_error(
                        "hydra.run.dir",
                        str(self.path.parent),
                        f"holds a lock {self.path} that names no host and PID",
                        f"use another hydra.run.dir, or if no run uses the dir: {remove}",
                    )
                if host != os.uname().nodename:
                    raise config_error(
                        "hydra.run.dir",
                        str(self.path.parent),
                        f"locked by PID {pid} on host {host} since {holder.get('started')} "
                        "(a run on another machine cannot be checked from here)",
                        f"use another hydra.run.dir, or if that run has ended: {remove}",
                    )
                if _alive(pid, holder.get("pid_start")):
                    raise config_error(
                        "hydra.run.dir",
                        str(self.path.parent),
                        f"in use by another run (PID {pid} since {holder.get('started')}: "
                        f"{holder.get('command')})",
                        "wait for it to end or use another hydra.run.dir (if that PID is no "
                        f"imblab run: {remove})",
                    )
                log.warning(
                    "taking over the stale lock %s of PID %d (started %s), which has ended",
                    self.path,
                    pid,
                    holder.get("started"),
                )
                self.path.unlink(missing_ok=True)
            raise config_error(
                "hydra.run.dir",
                str(self.path.parent),
                "its lock keeps changing hands",
                "use another hydra.run.dir",
            )
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if this process holds it (idempotent)."""
        if not self.held:
            return
        holder, _ = _read_json(self.path)
        if isinstance(holder, dict) and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False


@dataclass
class Run:
    """One run of a sweep: where it is, how it was configured, how it ended, what it logged.
    ``final`` holds metrics.json's final scalars, ``history`` the TensorBoard scalars (tag ->
    step -> value), ``data`` metrics.json's record of the realised data
    (:meth:`DataSummary.from_record` reads it); ``overrides_known`` is false for a corrupt
    run whose overrides could not be read (it belongs to no configuration)."""

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
    overrides_known: bool = True

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


def read_choices(run_dir: Path) -> dict[str, str]:
    """The run's config-group choices, ``hydra.runtime.choices`` of ``.hydra/hydra.yaml``
    (``{"loss": "ce", "sampler": "none", "hydra/launcher": "basic", ...}``; a group chosen as
    null is ``"null"``); empty when the file is missing or unreadable."""
    try:
        record = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
        choices = record["hydra"]["runtime"]["choices"]
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
        return {}
    if not isinstance(choices, dict):
        return {}
    return {str(k): "null" if v is None else str(v) for k, v in choices.items()}


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
    """The folder of a run's TensorBoard events: where its ``status.json`` says
    (``tensorboard: {logdir, run}``, ``logdir`` relative to the run dir: a sweep job's
    ``<sweep>/tensorboard/0_loss=ce,seed=1/``); for runs written before that record, the run
    dir's name under ``<run>/tensorboard/`` or a sweep job's ``<sweep>/tensorboard/``, or
    ``<run>/tensorboard/`` itself; None when there is none."""
    record = (read_status(run_dir) or {}).get("tensorboard")
    candidates = []
    if isinstance(record, dict) and isinstance(record.get("run"), str) and record["run"]:
        logdir = run_dir / str(record.get("logdir") or EVENTS)
        candidates.append(Path(os.path.normpath(logdir / record["run"])))
    name = run_dir.resolve().name
    candidates += [run_dir / EVENTS / name, run_dir.parent / EVENTS / name, run_dir / EVENTS]
    for candidate in candidates:
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


def _read_json(path: Path) -> tuple[Any, str | None]:
    """The JSON value of ``path`` (None when there is no file) and, when it cannot be read, why
    (one line)."""
    if not path.is_file():
        return None, None
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as err:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
        return None, " ".join(f"{type(err).__name__}: {err}".split())[:200]


def _read_overrides(run_dir: Path, status: dict[str, Any]) -> tuple[list[str] | None, str | None]:
    """The run's overrides: ``.hydra/overrides.yaml``, else the ones its ``status.json``
    records; None and the problem (``<file>: <reason>``) when neither holds a list."""
    path = run_dir / ".hydra" / "overrides.yaml"
    name = ".hydra/overrides.yaml"
    if not path.is_file():
        recorded = status.get("overrides")
        if isinstance(recorded, list):
            return [str(o) for o in recorded], None
        return None, f"{name}: missing, and {STATUS_FILE} records no overrides"
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:
        return None, f"{name}: {' '.join(f'{type(err).__name__}: {err}'.split())[:200]}"
    if loaded is None:  # a run without overrides
        return [], None
    if not isinstance(loaded, list):
        return None, f"{name}: holds a {type(loaded).__name__}, not a list of overrides"
    return [str(o) for o in loaded], None


def load_run(run_dir: Path, sweep_dir: Path, events: bool = True) -> Run:
    """A :class:`Run` from the files in ``run_dir``. A file that cannot be read or does not
    hold what imblab writes (a truncated ``metrics.json``, a corrupt ``status.json``, no
    overrides in ``.hydra/`` nor in ``status.json``) makes the run ``corrupt`` with the error
    ``<file>: <reason>``: it is listed, not compared, and a run whose overrides are unknown
    forms no configuration (``overrides_known`` false)."""
    name = str(run_dir.relative_to(sweep_dir)) if run_dir != sweep_dir else run_dir.name
    problems = []
    status, why = _read_json(run_dir / STATUS_FILE)
    if why is not None or (status is not None and not isinstance(status, dict)):
        problems.append(f"{STATUS_FILE}: {why or 'not a JSON object'}")
        status = None
    status = status or {}
    overrides, why = _read_overrides(run_dir, status)
    if why is not None:
        problems.append(why)
    run = Run(run_dir, name, parse_overrides(overrides or []), "")
    run.overrides_known = overrides is not None
    record, why = _read_json(run_dir / "metrics.json")
    if why is not None or (record is not None and not isinstance(record, dict)):
        problems.append(f"metrics.json: {why or 'not a JSON object'}")
        record = None
    record = record or {}
    try:
        run.final = {
            str(k): math.nan if v is None else float(v)
            for k, v in (record.get("metrics") or {}).items()
        }
    except (AttributeError, TypeError, ValueError):
        problems.append("metrics.json: 'metrics' is not a mapping of tags to numbers")
    data = record.get("data") or {}
    if isinstance(data, dict):
        run.data = data
    else:
        problems.append("metrics.json: 'data' is not a mapping")
    monitor = record.get("monitor") or status.get("objective") or {}
    if isinstance(monitor, dict):
        metric = monitor.get("metric", run.monitor)
        run.monitor = "" if metric is None else str(metric)  # "": a run without a monitor
        run.mode = str(monitor.get("mode", run.mode))
    run.status = str(status.get("status") or ("completed" if record else "unknown"))
    if run.status == "running":
        run.status = "interrupted"  # nothing runs while its sweep is compared
    run.error = status.get("error")
    if problems:
        run.status, run.error = "corrupt", "; ".join(problems)
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
    """The step of the epoch where the run's monitor was best (the first of ties): the
    epoch, or the global step for runs written before epoch-level values were written against
    the epoch; either way the step of every other validation tag of that epoch."""
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
    tags have one value, the test of the best checkpoint. A run without a monitor
    (``data.val_source=none``) keeps its last epoch as checkpoint: its best is its last."""
    stage, _, metric = tag.partition("/")
    if metric == MINORITY:
        classes = minority_classes(run, minority_k)
        parts = [value(run, f"{stage}/recall/{c}", epoch) for c in classes]
        return statistics.fmean(parts) if parts else math.nan
    if epoch == "last" or stage == "test" or not run.monitor:
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
    """Override keys whose values are not the same in every run whose overrides are known
    (Hydra's own keys left out)."""
    runs = [r for r in runs if r.overrides_known]
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
    sorted by their values (numbers by value, then text); a run whose overrides are unknown
    belongs to none."""
    keys = [k for k in swept_keys(runs) if k not in seed_keys]
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in (r for r in runs if r.overrides_known):
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
