"""The classification report of one evaluation: ``report.json``, ``report.md``, ``report.csv``.

Input is the flat score dict of :func:`~imblab.metrics.prediction_set.evaluate` (keys such as
``f1_macro``, ``f1/<class>``, ``support/<class>``, ``auroc/<class>``), optionally with bootstrap
intervals ``<key>_lo`` / ``<key>_hi`` and the two-class ``binary/*`` and ``binary_tuned/*``
scores.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

Row = dict[str, object]


def _metric_columns(betas: Sequence[float]) -> list[str]:
    return ["precision", "recall", *(f"f{b:g}" for b in betas)]


def columns(betas: Sequence[float]) -> list[str]:
    """CSV columns: name, kind, support, each metric with ``_lo`` / ``_hi``, auroc, ap, value."""
    out = ["name", "kind", "support"]
    for metric in _metric_columns(betas):
        out += [metric, f"{metric}_lo", f"{metric}_hi"]
    return [*out, "auroc", "ap", "value", "value_lo", "value_hi"]


def _with_interval(row: Row, column: str, scores: dict[str, float], key: str) -> None:
    row[column] = scores.get(key)
    row[f"{column}_lo"] = scores.get(f"{key}_lo")
    row[f"{column}_hi"] = scores.get(f"{key}_hi")


def report_rows(
    scores: dict[str, float], class_names: Sequence[str], betas: Sequence[float]
) -> list[Row]:
    """One row per class (kind ``class``), per average (``average``: macro, micro, weighted),
    per overall scalar (``overall``: accuracy, balanced accuracy, ``value`` column) and, for
    two-class tasks, per decision threshold (``binary``: the default and the tuned one)."""
    rows: list[Row] = []
    for name in class_names:
        row: Row = {"name": name, "kind": "class", "support": scores.get(f"support/{name}")}
        for metric in _metric_columns(betas):
            _with_interval(row, metric, scores, f"{metric}/{name}")
        row["auroc"], row["ap"] = scores.get(f"auroc/{name}"), scores.get(f"ap/{name}")
        rows.append(row)
    total = sum(float(scores.get(f"support/{n}", 0.0)) for n in class_names)
    for average in ("macro", "micro", "weighted"):
        row = {"name": f"{average} avg", "kind": "average", "support": total}
        for metric in _metric_columns(betas):
            _with_interval(row, metric, scores, f"{metric}_{average}")
        row["auroc"] = scores.get(f"auroc_{average}")
        row["ap"] = scores.get(f"ap_{average}")
        rows.append(row)
    for key in ("accuracy", "balanced_accuracy", "mcc", "loss", "logit_adjustment_tau"):
        if key in scores:
            row = {"name": key.replace("_", " "), "kind": "overall", "support": total}
            _with_interval(row, "value", scores, key)
            rows.append(row)
    for prefix in ("binary", "binary_tuned"):
        if f"{prefix}/threshold" not in scores:
            continue
        threshold = scores[f"{prefix}/threshold"]
        label = "tuned" if prefix == "binary_tuned" else "default"
        row = {"name": f"{label} threshold {threshold:.6g}", "kind": "binary", "support": total}
        for metric in _metric_columns(betas):
            row[metric] = scores.get(f"{prefix}/{metric}")
        row["auroc"] = scores.get(f"auroc/{class_names[-1]}")
        row["ap"] = scores.get(f"ap/{class_names[-1]}")
        row["value"] = threshold
        rows.append(row)
    return rows


def _fmt(value: object, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _count(value: object) -> str:
    return "" if value is None else str(int(float(str(value))))


def _cell(row: Row, column: str) -> str:
    text = _fmt(row.get(column))
    lo, hi = row.get(f"{column}_lo"), row.get(f"{column}_hi")
    if text and lo is not None and hi is not None:
        text += f" [{_fmt(lo)}, {_fmt(hi)}]"
    return text


def markdown(rows: list[Row], betas: Sequence[float], title: str, confidence: float | None) -> str:
    """The report as Markdown: the per-class and average table, then the overall scalars and
    the two-class threshold table."""
    metrics = _metric_columns(betas)
    head = ["", "support", *metrics, "AUROC", "AP"]
    lines = [f"# {title}", ""]
    if confidence is not None:
        lines += [
            f"Brackets: {100 * confidence:g}% streaming Poisson-bootstrap percentile intervals.",
            "",
        ]
    lines += ["| " + " | ".join(head) + " |", "| --- " + "| ---: " * (len(head) - 1) + "|"]
    for row in rows:
        if row["kind"] in ("class", "average"):
            cells = [str(row["name"]), _count(row["support"])]
            cells += [_cell(row, m) for m in metrics]
            cells += [_fmt(row["auroc"]), _fmt(row["ap"])]
            lines.append("| " + " | ".join(cells) + " |")
    overall = [r for r in rows if r["kind"] == "overall"]
    if overall:
        lines += ["", "| | value |", "| --- | ---: |"]
        lines += [f"| {r['name']} | {_cell(r, 'value')} |" for r in overall]
    binary = [r for r in rows if r["kind"] == "binary"]
    if binary:
        lines += [
            "",
            "Positive class at a decision threshold (AUROC and AP do not depend on it):",
            "",
            "| threshold | " + " | ".join(metrics) + " | AUROC | AP |",
            "| --- " + "| ---: " * (len(metrics) + 2) + "|",
        ]
        for r in binary:
            cells = [str(r["name"]), *(_fmt(r[m]) for m in metrics), _fmt(r["auroc"])]
            lines.append("| " + " | ".join([*cells, _fmt(r["ap"])]) + " |")
    return "\n".join(lines) + "\n"


def write_reports(
    out_dir: Path,
    scores: dict[str, float],
    class_names: Sequence[str],
    betas: Sequence[float] = (0.5, 1.0, 2.0),
    *,
    title: str = "Classification report",
    confidence: float | None = None,
) -> list[Path]:
    """Write ``report.json`` (``scores`` as they are: flat, unrounded, NaN as null),
    ``report.md`` and ``report.csv``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = report_rows(scores, class_names, betas)
    json_path, md_path, csv_path = (out_dir / f"report.{ext}" for ext in ("json", "md", "csv"))
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in scores.items()}
    json_path.write_text(json.dumps(clean, indent=2) + "\n")
    md_path.write_text(markdown(rows, betas, title, confidence))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns(betas))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return [json_path, md_path, csv_path]
