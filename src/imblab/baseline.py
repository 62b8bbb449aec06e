"""``imblab-compare SWEEP_DIR --baseline KEY=VALUE ...``: every configuration of a sweep against
one baseline configuration, paired by seed, with intervals, corrected p-values and verdicts.

A configuration is a combination of the swept keys without the seed keys
(:func:`~imblab.runs.group_runs`); the baseline is the one configuration whose runs all match
every ``KEY=VALUE``, as a command-line override or as a config-group choice
(``hydra.runtime.choices`` of ``.hydra/hydra.yaml``: ``loss=ce`` matches a run of
``experiment=mnist_lt_ce``). Each other configuration is compared with it on each tag over the
seeds both completed with a value (``n_seeds``): the per-seed differences go to
:mod:`imblab.seed_stats` (``method=seed``, or ``method=seed+test`` with the test-set variance
from every run's ``predictions.npz`` under Poisson weights shared by every run, when all the
runs compared hold predictions of the same test images: equal ``split_fingerprint`` and ids).
The p-values of one tag are adjusted over the configurations compared on it; the verdict reads
the adjusted p-value in the tag's direction (``directions`` of ``metrics.json``; without that
record lower is better for tags ending in ``loss``, ``ece`` or ``brier`` and higher for the
rest; a tag the record does not list gets no verdict). A validation tag is compared at each
run's best epoch (seed noise only; the monitor's note says it selected that epoch).

Reading runs and computing rows needs neither torch nor Lightning, except for the test-set
replicates (:mod:`imblab.reports.paired`, imported when predictions are read).
"""

from __future__ import annotations

import csv
import glob
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from imblab.errors import ConfigError
from imblab.runs import (
    MINORITY,
    Run,
    group_runs,
    markdown,
    minority_classes,
    read_choices,
    short_name,
    value,
)
from imblab.seed_stats import (
    CORRECTIONS,
    Correction,
    adjust_p,
    paired_t,
    replicate_variance,
    seeds_needed,
    verdict,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: the CSV and Markdown columns after the swept keys
COLUMNS = (
    "tag",
    "n_seeds",
    "baseline_mean",
    "mean",
    "diff",
    "lo",
    "hi",
    "p_value",
    "p_adjusted",
    "method",
    "verdict",
    "seeds_needed",
    "note",
)
#: lower is better for these tag endings when metrics.json records no directions
LOWER_IS_BETTER = ("loss", "ece", "classwise_ece", "brier")
#: a predictions.npz value agrees with the run's recorded value within this (float32 values)
AGREE = 1e-5
WIDTH = 120  # the printed table's columns
#: the forest plot's colour of each verdict ("": none)
VERDICT_COLOURS = {
    "better": "#1a9850",
    "worse": "#d73027",
    "not separable": "#525252",
    "": "#a6a6a6",
}


@dataclass
class Options:
    """What ``imblab-compare --baseline`` was asked (its command-line options)."""

    baseline: dict[str, str]
    tags: list[str]
    seed_keys: list[str]
    confidence: float = 0.95
    n_boot: int = 1000
    seed: int = 0
    correction: Correction = "holm"
    minority_k: int = 3
    predictions: dict[Path, Path] = field(default_factory=dict)  # run dir -> predictions


@dataclass
class Row:
    """One configuration against the baseline on one tag (the CSV row after the swept keys)."""

    config: tuple[str, ...]
    tag: str
    n_seeds: int
    baseline_mean: float = math.nan
    mean: float = math.nan
    diff: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    p_value: float = math.nan
    p_adjusted: float = math.nan
    method: str = ""
    verdict: str = ""
    seeds_needed: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def note(self) -> str:
        return "; ".join(self.notes)

    def cells(self) -> list[Any]:
        """The raw CSV cells of :data:`COLUMNS` (NaN and None as empty)."""
        values = [self.tag, self.n_seeds, self.baseline_mean, self.mean, self.diff, self.lo]
        values += [self.hi, self.p_value, self.p_adjusted, self.method, self.verdict]
        values += [self.seeds_needed, self.note]
        return ["" if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values]


@dataclass
class Result:
    """The comparison of a sweep against its baseline."""

    keys: list[str]
    baseline: tuple[str, ...]
    baseline_runs: int
    seed_keys: list[str]
    options: Options
    rows: list[Row]
    directions: dict[str, bool | None]


# -- reading the command line and the runs ----------------------------------------------------


def parse_baseline(items: Sequence[str]) -> dict[str, str]:
    """``["loss=ce", "sampler=none"]`` -> ``{"loss": "ce", "sampler": "none"}``; an item
    without ``=`` is a :class:`ConfigError`."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, wanted = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"--baseline {item}: not KEY=VALUE; give e.g. --baseline loss=ce sampler=none"
            )
        out[key.lstrip("+~")] = wanted
    return out


def is_evaluation(run_dir: Path) -> bool:
    """An ``imblab-eval`` output dir (``report.json``, no ``status.json`` nor ``metrics.json``),
    which holds ``.hydra/`` like a run but is not a training run."""
    return (run_dir / "report.json").is_file() and not any(
        (run_dir / name).is_file() for name in ("status.json", "metrics.json")
    )


def _same(text: str, wanted: str) -> bool:
    """Equal as text, or as numbers (``1e-3`` is ``0.001``)."""
    if text == wanted:
        return True
    try:
        return float(text) == float(wanted)
    except ValueError:
        return False


def run_matches(run: Run, wanted: Mapping[str, str], choices: Mapping[str, str]) -> bool | None:
    """Whether ``run`` has every ``KEY=VALUE`` of ``wanted`` as an override or a config-group
    choice; None when it records none of the keys (a run whose config could not be read)."""
    found = [run.overrides.get(k, choices.get(k)) for k in wanted]
    if all(v is None for v in found):
        return None
    return all(v is not None and _same(v, w) for v, w in zip(found, wanted.values(), strict=True))


def label(keys: Sequence[str], config: Sequence[str]) -> str:
    """``loss=focal sampler=none`` (``all runs`` without swept keys)."""
    return " ".join(f"{k}={v}" for k, v in zip(keys, config, strict=True)) or "all runs"


def find_baseline(
    keys: Sequence[str], groups: Mapping[tuple[str, ...], Sequence[Run]], wanted: dict[str, str]
) -> tuple[str, ...]:
    """The one configuration whose runs match ``wanted`` (:func:`run_matches`); otherwise a
    one-line :class:`ConfigError` that lists the configurations."""
    matched = []
    for config, members in groups.items():
        verdicts = [
            run_matches(r, wanted, {} if set(wanted) <= set(r.overrides) else read_choices(r.path))
            for r in members
        ]
        if any(v for v in verdicts) and not any(v is False for v in verdicts):
            matched.append(config)
    if len(matched) == 1:
        return matched[0]
    given = " ".join(f"{k}={v}" for k, v in wanted.items())
    listed = "; ".join(label(keys, c) for c in groups)
    if not matched:
        raise ConfigError(
            f"--baseline {given}: no configuration matches (by override or config-group "
            f"choice); the configurations: {listed}"
        )
    found = "; ".join(label(keys, c) for c in matched)
    raise ConfigError(
        f"--baseline {given}: {len(matched)} configurations match ({found}); add KEY=VALUE to "
        f"pick one"
    )


def seed_of(run: Run, seed_keys: Sequence[str]) -> str:
    """The run's seed as text: the value of its seed key (``1``), or ``k=v,...`` for several."""
    values = [run.overrides.get(k, "") for k in seed_keys]
    if len(values) == 1:
        return values[0]
    return ",".join(f"{k}={v}" for k, v in zip(seed_keys, values, strict=True))


def by_seed(members: Sequence[Run], seed_keys: Sequence[str], name: str) -> dict[str, Run]:
    """The completed runs of a configuration by seed; two completed runs of one seed are a
    :class:`ConfigError` (the pairing would be ambiguous)."""
    out: dict[str, Run] = {}
    for run in members:
        if not run.ok:
            continue
        seed = seed_of(run, seed_keys)
        if seed in out:
            raise ConfigError(
                f"--baseline: configuration {name} has two completed runs of seed "
                f"{seed or '(none)'} ({out[seed].name}, {run.name}); compare one sweep dir, or "
                "name every key that tells them apart with --seed-keys"
            )
        out[seed] = run
    return out


def metrics_record(run: Run) -> dict[str, Any]:
    """The run's ``metrics.json`` (empty when it has none or it cannot be read)."""
    try:
        record = json.loads((run.path / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def direction(tag: str, records: Sequence[Mapping[str, Any]]) -> bool | None:
    """True when higher is better for ``tag``: from the ``directions`` record of the runs'
    ``metrics.json`` (None for a tag it does not list); without that record False for a tag
    ending in :data:`LOWER_IS_BETTER`, else True. ``<stage>/minority_recall`` (derived here) is
    a recall: True."""
    if tag.endswith("/" + MINORITY):
        return True
    listed = [r["directions"] for r in records if isinstance(r.get("directions"), dict)]
    if listed:
        found = {bool(d[tag]) for d in listed if tag in d}
        return found.pop() if len(found) == 1 else None
    return not tag.endswith(LOWER_IS_BETTER)


def resolve_predictions(patterns: Sequence[str], runs: Sequence[Run]) -> dict[Path, Path]:
    """``--predictions GLOB ...``: each matched ``imblab-eval`` dir (or ``predictions.npz``) for
    the run whose dir holds it, else the run of the checkpoint its ``.hydra/config.yaml``
    names; a pattern that matches nothing, or a match that belongs to no run (or a second match
    for one run), is a :class:`ConfigError`."""
    dirs = {r.path.resolve(): r for r in runs if not is_evaluation(r.path)}
    out: dict[Path, Path] = {}
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise ConfigError(f"--predictions {pattern}: matches nothing; give imblab-eval dirs")
        for match in map(Path, matches):
            where = match.parent if match.is_file() else match
            run = next((dirs[p] for p in where.resolve().parents if p in dirs), None)
            run = run or _run_of_checkpoint(where, dirs)
            if run is None:
                raise ConfigError(
                    f"--predictions {match}: inside no run of the sweep, and its "
                    ".hydra/config.yaml names no checkpoint of one; give imblab-eval dirs of "
                    "the sweep's checkpoints"
                )
            if run.path in out:
                raise ConfigError(
                    f"--predictions: {out[run.path]} and {match} are both for {run.name}; give "
                    "one evaluation per run"
                )
            out[run.path] = match
    return out


def _run_of_checkpoint(eval_dir: Path, dirs: Mapping[Path, Run]) -> Run | None:
    """The run whose checkpoint the eval dir's ``.hydra/config.yaml`` names (``ckpt_path``,
    relative to the working directory it ran in, which is taken to be this one)."""
    try:
        config = yaml.safe_load((eval_dir / ".hydra" / "config.yaml").read_text())
        ckpt = Path(str(config["ckpt_path"]).strip("'\""))
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
        return None
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return dirs.get(run_dir.resolve())


# -- the test-set replicates --------------------------------------------------------------------


class Replicates:
    """Each run's test scores under ``n_boot`` Poisson-weighted resamples of the test images
    (weights from ``seed``, shared by every run on the same ids), from its predictions: the
    run dir's ``predictions.npz`` or the one ``--predictions`` gives. Computed once per run, for
    every tag of ``options.tags`` at once."""

    def __init__(self, options: Options, records: Mapping[Path, Mapping[str, Any]]) -> None:
        self.options = options
        self.records = records
        self._loaded: dict[Path, tuple[np.ndarray, np.ndarray, np.ndarray, str | None] | str]
        self._loaded = {}
        self._scores: dict[Path, dict[str, np.ndarray]] = {}
        self._weights: dict[bytes, np.ndarray] = {}

    def predictions(self, run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray, str | None] | str:
        """``(probs, targets, ids, fingerprint)`` sorted by id, or why there are none."""
        if run.path not in self._loaded:
            from imblab.reports.predictions import load_fingerprint, load_predictions

            source = self.options.predictions.get(run.path, run.path / "predictions.npz")
            if not source.exists():
                self._loaded[run.path] = "no predictions.npz"
            else:
                try:
                    probs, targets, ids = load_predictions(source)
                except ConfigError:
                    self._loaded[run.path] = f"an unreadable {source}"
                else:
                    order = np.argsort(ids, kind="stable")
                    fingerprint = load_fingerprint(source)
                    self._loaded[run.path] = (probs[order], targets[order], ids[order], fingerprint)
        return self._loaded[run.path]

    def why_not(self, runs: Sequence[Run]) -> str | None:
        """Why these runs' test-set noise cannot be estimated together, or None when it can
        (every one has predictions of the same test images)."""
        loaded = [self.predictions(r) for r in runs]
        problems = [p for p in loaded if isinstance(p, str)]
        if problems:
            return f"{problems[0]} for {len(problems)} of {len(runs)} runs"
        arrays = [p for p in loaded if not isinstance(p, str)]
        fingerprints = {p[3] for p in arrays}
        if None in fingerprints:
            return "a predictions.npz records no test-split fingerprint"
        if len(fingerprints) > 1:
            return "the runs' test splits differ (their fingerprints)"
        if any(not np.array_equal(p[2], arrays[0][2]) for p in arrays[1:]):
            return "the runs' predictions cover different test samples (ids)"
        return None

    def scores(self, run: Run, tag: str) -> np.ndarray | None:
        """``(1 + n_boot,)``: the run's ``tag`` (a ``test/`` tag) observed, then under each
        replicate; None when it is not a confusion-matrix score of the predictions."""
        if run.path not in self._scores:
            self._scores[run.path] = self._compute(run)
        return self._scores[run.path].get(tag)

    def _compute(self, run: Run) -> dict[str, np.ndarray]:
        """Every test tag of the options that the run's predictions give."""
        from imblab.reports.paired import bootstrap_weights, replicate_metrics

        loaded = self.predictions(run)
        if isinstance(loaded, str):
            return {}
        probs, targets, ids, _ = loaded
        wanted = {}
        for tag in self.options.tags:
            stage, _, metric = tag.partition("/")
            if stage != "test":
                continue
            if metric == MINORITY:
                classes = minority_classes(run, self.options.minority_k)
                wanted[tag] = [f"recall/{c}" for c in classes]
            else:
                wanted[tag] = [metric]
        keys = {k for parts in wanted.values() for k in parts}
        if not keys:
            return {}
        cache = ids.tobytes()
        if cache not in self._weights:
            self._weights[cache] = bootstrap_weights(ids, self.options.seed, self.options.n_boot)
        names = _class_names(run, probs.shape[1])
        values = replicate_metrics(
            probs,
            targets,
            self._weights[cache],
            names,
            groups=_groups(self.records.get(run.path, {}), names),
            betas=_betas(sorted(keys)),
            keys=keys,
        )
        return {
            tag: np.mean([values[k] for k in parts], axis=0)
            for tag, parts in wanted.items()
            if parts and all(k in values for k in parts)
        }


def _class_names(run: Run, num_classes: int) -> list[str]:
    """The run's class names (``metrics.json``'s data record), else ``0 .. C - 1``."""
    names = run.data.get("classes")
    if not isinstance(names, list):
        text = str(run.data.get("class_names") or "")
        names = text.split(",") if text else []
    return (
        [str(n) for n in names] if len(names) == num_classes else list(map(str, range(num_classes)))
    )


def _groups(record: Mapping[str, Any], names: Sequence[str]) -> dict[str, list[int]]:
    """The many/medium/few-shot groups of ``metrics.json`` as class indices."""
    classes = (record.get("groups") or {}).get("classes") or {}
    index = {n: i for i, n in enumerate(names)}
    return {
        str(g): [index[n] for n in members if n in index]
        for g, members in classes.items()
        if isinstance(members, list)
    }


def _betas(keys: Sequence[str]) -> list[float]:
    """The F-beta betas the keys name (``f2_macro``, ``f0.5/<class>``)."""
    found = (re.match(r"f(\d+(?:\.\d+)?)[_/]", k) for k in keys)
    return sorted({float(m.group(1)) for m in found if m})


# -- the comparison -----------------------------------------------------------------------------


def compare_to_baseline(runs: Sequence[Run], options: Options) -> Result:
    """Every configuration of ``runs`` against the baseline (module docstring)."""
    runs = [r for r in runs if not is_evaluation(r.path)]
    keys, groups = group_runs(runs, options.seed_keys)
    if len(groups) < 2:
        raise ConfigError(
            f"--baseline: the runs form {len(groups)} configuration(s) (swept keys without "
            f"{options.seed_keys}): nothing to compare; give a sweep over a configuration key"
        )
    base = find_baseline(keys, groups, options.baseline)
    records = {r.path: metrics_record(r) for r in runs if r.ok}
    replicates = Replicates(options, records)
    base_runs = by_seed(groups[base], options.seed_keys, label(keys, base))
    directions = {t: direction(t, list(records.values())) for t in options.tags}
    rows = []
    for tag in options.tags:
        family = []
        for config, members in groups.items():
            if config == base:
                continue
            runs_by_seed = by_seed(members, options.seed_keys, label(keys, config))
            row = compare_tag(tag, config, base_runs, runs_by_seed, options, replicates)
            family.append(row)
        adjusted = adjust_p([r.p_value for r in family], options.correction)
        alpha = 1 - options.confidence
        for row, p in zip(family, adjusted.tolist(), strict=True):
            row.p_adjusted = p
            if row.n_seeds >= 2:
                row.verdict = verdict(row.diff, p, alpha, directions[tag])
                if directions[tag] is None:
                    row.notes.append("direction unknown (not in metrics.json's directions)")
        rows += family
    return Result(keys, base, len(base_runs), options.seed_keys, options, rows, directions)


def compare_tag(
    tag: str,
    config: tuple[str, ...],
    base: Mapping[str, Run],
    runs: Mapping[str, Run],
    options: Options,
    replicates: Replicates,
) -> Row:
    """One configuration against the baseline on ``tag``, over the seeds both have a value of
    (the adjusted p-value and the verdict come later, per tag)."""

    def extract(run: Run) -> float:
        return value(run, tag, "best", options.minority_k)

    base_values = {s: extract(r) for s, r in base.items()}
    values = {s: extract(r) for s, r in runs.items()}
    seeds = [s for s in base_values if s in values]
    seeds = [s for s in seeds if math.isfinite(base_values[s]) and math.isfinite(values[s])]
    row = Row(config, tag, len(seeds))
    only_base = sorted(set(base) - set(seeds))
    only_here = sorted(set(runs) - set(seeds))
    if only_base or only_here:
        parts = [f"seed {', '.join(only_base)} of the baseline"] if only_base else []
        parts += [f"seed {', '.join(only_here)} of this configuration"] if only_here else []
        row.notes.append(f"{' and '.join(parts)} unpaired")
    if not seeds:
        row.notes.append("no seed in common with the baseline: no comparison")
        return row
    a = np.array([values[s] for s in seeds])
    b = np.array([base_values[s] for s in seeds])
    row.baseline_mean, row.mean, row.diff = float(b.mean()), float(a.mean()), float((a - b).mean())
    if len(seeds) < 2:
        row.notes.append("1 seed in common with the baseline: no interval or verdict (needs 2)")
        return row
    v_test, why = _test_variance(
        tag, [runs[s] for s in seeds], [base[s] for s in seeds], replicates
    )
    if why:
        row.notes.append(why)
    comparison = paired_t(a - b, v_test, options.confidence)
    row.method = comparison.method
    row.lo, row.hi, row.p_value = comparison.lo, comparison.hi, comparison.p_value
    if math.isnan(comparison.p_value):
        row.notes.append("the per-seed differences are all 0: no p-value")
    needed, why = seeds_needed(row.diff, comparison.seed_sd, comparison.v_test, options.confidence)
    row.seeds_needed = needed
    if why:
        row.notes.append(why)
    return row


def _test_variance(
    tag: str, runs: Sequence[Run], base: Sequence[Run], replicates: Replicates
) -> tuple[float | None, str]:
    """``v_test`` of the seed-mean difference of ``runs`` minus ``base`` (paired by position)
    on ``tag``, or None with the reason its test-set noise is left out."""
    stage = tag.partition("/")[0]
    if stage != "test":
        return None, (
            f"{stage} split: seed noise only"
            + ("; selected on this tag (its best epoch)" if tag == runs[0].monitor else "")
        )
    left_out = "test-set noise not included: "
    problem = replicates.why_not([*runs, *base])
    if problem:
        return None, left_out + problem
    differences = []
    for run, other in zip(runs, base, strict=True):
        mine, theirs = replicates.scores(run, tag), replicates.scores(other, tag)
        if mine is None or theirs is None:
            return None, left_out + f"{tag} is not a confusion-matrix score of the predictions"
        for r, scores in ((run, mine), (other, theirs)):
            recorded = value(r, tag, "best", replicates.options.minority_k)
            if not abs(scores[0] - recorded) <= AGREE:
                return None, left_out + f"predictions.npz of {r.name} does not give its {tag}"
        differences.append(mine[1:] - theirs[1:])
    v_test = replicate_variance(np.stack(differences))
    if math.isnan(v_test):
        return None, left_out + "undefined in the bootstrap replicates"
    return v_test, ""


# -- output -------------------------------------------------------------------------------------


def header_lines(result: Result) -> list[str]:
    """What was compared and how, for the top of the printed and Markdown output."""
    options = result.options
    pct = f"{100 * options.confidence:g}%"
    alpha = f"{1 - options.confidence:.3g}"
    correction = {"holm": "Holm", "bonferroni": "Bonferroni", "none": "no"}[options.correction]
    return [
        f"Baseline: {label(result.keys, result.baseline)} ({result.baseline_runs} completed "
        f"runs); paired by {', '.join(result.seed_keys)}.",
        f"Intervals: {pct} per comparison, not adjusted; verdicts: {correction}-adjusted "
        f"p < {alpha} over the configurations of each tag.",
    ]


def write_csv(path: Path, result: Result) -> None:
    """``<name>_baseline.csv``: the swept keys, then :data:`COLUMNS`; raw values."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*result.keys, *COLUMNS])
        writer.writerows([*row.config, *row.cells()] for row in result.rows)


def _num(x: float, digits: int = 3, sign: bool = False) -> str:
    if math.isnan(x):
        return ""
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _p(p: float) -> str:
    if math.isnan(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _digits(rows: Sequence[Row]) -> int:
    """Decimals for a tag's numbers: 3, or up to 5 where its intervals are narrower than 0.01."""
    widths = [r.hi - r.lo for r in rows if math.isfinite(r.hi - r.lo) and r.hi > r.lo]
    if not widths:
        return 3
    return min(5, max(3, 1 - math.floor(math.log10(min(widths)))))


def _interval(row: Row, digits: int) -> str:
    if math.isnan(row.lo):
        return ""
    return f"[{row.lo:+.{digits}f}, {row.hi:+.{digits}f}]"


def markdown_text(result: Result, failures: str) -> str:
    """``<name>_baseline.md``: the header lines, one table with every column, the failures."""
    digits = {t: _digits([r for r in result.rows if r.tag == t]) for t in result.options.tags}
    table = []
    for row in result.rows:
        d = digits[row.tag]
        table.append(
            [
                *row.config,
                row.tag,
                str(row.n_seeds),
                _num(row.baseline_mean, d),
                _num(row.mean, d),
                _num(row.diff, d, sign=True),
                _num(row.lo, d, sign=True),
                _num(row.hi, d, sign=True),
                _p(row.p_value),
                _p(row.p_adjusted),
                row.method,
                row.verdict,
                "" if row.seeds_needed is None else str(row.seeds_needed),
                row.note,
            ]
        )
    return (
        "\n".join(header_lines(result))
        + "\n\n"
        + markdown([*result.keys, *COLUMNS], table)
        + failures
    )


def _direction_text(higher: bool | None) -> str:
    return {True: "higher is better", False: "lower is better", None: "direction unknown"}[higher]


def printed_text(result: Result, width: int = WIDTH) -> str:
    """The table for the terminal: one block per tag (the swept keys, seeds, baseline and
    configuration means, difference, interval, p and adjusted p, verdict, seeds needed, method),
    notes numbered under each block; every line within ``width`` columns (the widest swept values
    shortened with ``~`` where they would not fit)."""
    lines = [_wrap(line, width) for line in header_lines(result)]
    pct = f"{100 * result.options.confidence:g}%"
    keys = result.keys or ["configuration"]
    for tag in result.options.tags:
        rows = [r for r in result.rows if r.tag == tag]
        d = _digits(rows)
        notes: dict[str, int] = {}
        body = []
        for row in rows:
            ref = ""
            if row.note:
                ref = f"[{notes.setdefault(row.note, len(notes) + 1)}]"
            body.append(
                [
                    *(row.config or ("all runs",)),
                    str(row.n_seeds),
                    _num(row.baseline_mean, d),
                    _num(row.mean, d),
                    _num(row.diff, d, sign=True),
                    _interval(row, d),
                    _p(row.p_value),
                    _p(row.p_adjusted),
                    row.verdict or "-",
                    "" if row.seeds_needed is None else str(row.seeds_needed),
                    row.method,
                    ref,
                ]
            )
        head = [*keys, "n", "baseline", "mean", "diff", f"{pct} interval", "p", "p adj"]
        head += ["verdict", "seeds", "method", "note"]
        lines += ["", f"{tag} ({_direction_text(result.directions[tag])})"]
        lines += _aligned(head, body, len(keys), width)
        lines += [_wrap(f"[{i}] {note}", width) for note, i in notes.items()]
    return "\n".join(lines) + "\n"


def printed_failures(runs: Sequence[Run], keys: Sequence[str], width: int = WIDTH) -> str:
    """The runs that did not complete, for the terminal: job number, swept values and error,
    wrapped to ``width`` (the Markdown file has their full dir names)."""
    bad = [r for r in runs if not r.ok]
    if not bad:
        return ""
    lines = ["", f"{len(bad)} of {len(runs)} runs did not complete:"]
    for run in bad:
        values = " ".join(f"{k}={run.overrides[k]}" for k in keys if k in run.overrides)
        error = f": {run.error}" if run.error else ""
        lines.append(_wrap(f"- {short_name(run.name)} ({values}): {run.status}{error}", width))
    return "\n".join(lines) + "\n"


def _aligned(head: list[str], body: list[list[str]], n_text: int, width: int) -> list[str]:
    """Columns two spaces apart, numbers right-aligned; the widest of the first ``n_text``
    (text) columns shortened (``~`` at the cut) until every line fits ``width``."""
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    while (over := sum(widths) + 2 * (len(widths) - 1) - width) > 0:
        widest = max(range(n_text), key=lambda i: widths[i])
        floor = max(len(head[widest]), 6)
        if widths[widest] <= floor:
            break
        widths[widest] = max(floor, widths[widest] - over)
    cut = [[_shorten(c, widths[i]) if i < n_text else c for i, c in enumerate(r)] for r in body]

    def line(cells: list[str], header: bool) -> str:
        out = []
        for i, (c, w) in enumerate(zip(cells, widths, strict=True)):
            numeric = not header and i >= n_text and bool(re.match(r"^[+\-<\[]?\d", c))
            out.append(c.rjust(w) if numeric else c.ljust(w))
        return "  ".join(out).rstrip()

    return [line(head, True), "  ".join("-" * w for w in widths)] + [line(r, False) for r in cut]


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _wrap(text: str, width: int) -> str:
    """``text`` broken at spaces into lines of at most ``width`` (continuations indented)."""
    words, lines, current = text.split(" "), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = "    " + word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\n".join(lines)


def forest_figure(result: Result) -> Figure:
    """The forest plot: one panel per tag, one row per configuration with its difference from
    the baseline and its interval (per comparison), a line at 0, coloured by verdict (grey
    without one); the legend says what the interval and the verdict are."""
    import matplotlib.figure  # start-up cost: only a figure needs matplotlib
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from imblab.canvas import fit_text

    options = result.options
    tags = options.tags
    configs = list(dict.fromkeys(r.config for r in result.rows))
    labels = [label(result.keys, c) for c in configs]
    ncols = min(3, len(tags))
    nrows = -(-len(tags) // ncols)
    panel_h = 0.9 + 0.42 * len(configs)
    fig = matplotlib.figure.Figure(
        figsize=(1.2 + 0.075 * max(map(len, labels)) + 3.6 * ncols, 1.2 + nrows * panel_h),
        dpi=100,
        layout="constrained",
    )
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    y = np.arange(len(configs))[::-1]
    for index, tag in enumerate(tags):
        ax = axes[index // ncols][index % ncols]
        rows = {r.config: r for r in result.rows if r.tag == tag}
        ax.axvline(0, color="black", linewidth=0.9)
        for yi, config in zip(y, configs, strict=True):
            row = rows.get(config)
            if row is None or math.isnan(row.diff):
                ax.text(0, yi, " n/a", va="center", fontsize=9, color="#a6a6a6")
                continue
            colour = VERDICT_COLOURS.get(row.verdict, VERDICT_COLOURS[""])
            if not math.isnan(row.lo):
                ax.plot([row.lo, row.hi], [yi, yi], color=colour, linewidth=2.2)
            hollow = row.verdict == ""
            ax.plot(
                row.diff,
                yi,
                "o",
                color=colour,
                markerfacecolor="white" if hollow else colour,
                markersize=6,
            )
        ax.set_title(f"{tag}\n({_direction_text(result.directions[tag])})", fontsize=10)
        ax.set_yticks(y, labels, fontsize=10)
        ax.set_ylim(-0.6, len(configs) - 0.4)
        ax.tick_params(axis="x", labelsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel(
            f"difference from the baseline ({options.confidence:.0%} interval)", fontsize=9
        )
    for index in range(len(tags), nrows * ncols):
        axes[index // ncols][index % ncols].set_visible(False)
    handles = [
        Line2D([], [], color=VERDICT_COLOURS[v], marker="o", linewidth=2.2, label=v)
        for v in ("better", "worse", "not separable")
    ]
    handles.append(
        Line2D(
            [],
            [],
            color=VERDICT_COLOURS[""],
            marker="o",
            markerfacecolor="white",
            linewidth=2.2,
            label="no verdict",
        )
    )
    correction = {"holm": "Holm", "bonferroni": "Bonferroni", "none": "unadjusted"}
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=4,
        fontsize=10,
        frameon=False,
        title=(
            f"interval: {options.confidence:.0%} per comparison, not adjusted; verdict: "
            f"{correction[options.correction]}-adjusted p < {1 - options.confidence:.3g}"
        ),
        title_fontsize=10,
    )
    fig.suptitle(f"against the baseline {label(result.keys, result.baseline)}", fontsize=12)
    return fit_text(fig)


def write_figure(path: Path, result: Result) -> None:
    """:func:`forest_figure` as a PNG at 100 dpi."""
    fig = forest_figure(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def check_options(options: Options) -> None:
    """The numeric options, each a one-line :class:`ConfigError` when out of range."""
    if not 0 < options.confidence < 1:
        raise ConfigError(f"--confidence {options.confidence}: not in (0, 1); use e.g. 0.95")
    if options.n_boot < 2:
        raise ConfigError(f"--n-boot {options.n_boot}: fewer than 2 replicates; use e.g. 1000")
    if options.correction not in CORRECTIONS:
        raise ConfigError(f"--correction {options.correction}: use one of {list(CORRECTIONS)}")
    if options.seed < 0:
        raise ConfigError(f"--seed {options.seed}: negative; use e.g. 0")
