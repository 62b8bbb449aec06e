"""What the study's runs recorded: data, optimizer steps, selected epochs, DRW state.

``python experiments/mnist_lt_remedies/records.py SWEEP_DIR [--out FILE]`` prints (and writes)
a Markdown page copied from every completed run under ``SWEEP_DIR``, nothing computed beyond
counting and min/max:

* the data, from each run's ``metrics.json`` (``data``): the pool ``n_max``, the test source, and
  the training, validation and test counts per class; one line when every run recorded the same
  (an error otherwise: runs of one study on different data are not comparable);
* per configuration: the seeds, the optimizer steps (``global_step`` of ``last.ckpt``), the
  epochs trained (``status.json``), the selected checkpoint's epoch (its ``epoch``) and, for a
  loss with ``drw_epoch``, whether ``train/drw_active`` (TensorBoard) was 1 at that epoch; for
  ``test_logit_adjustment`` runs, the tau each seed's test used (``metrics.json``) and whether
  every ``val/*`` and ``train/*`` value equals that of the ``ce`` run of the same seed (the
  same model, tested adjusted).

The comparisons themselves are ``imblab-compare --baseline``'s (README.md); this script reads
records only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import yaml

from imblab.runs import find_runs, parse_overrides, read_history

DRW_TAG = "train/drw_active"


def _overrides(run: Path) -> dict[str, str]:
    return parse_overrides(yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or [])


def _config(run: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    return config


def _epoch(ckpt: Path) -> tuple[int, int]:
    """``(epoch, global_step)`` a checkpoint recorded."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    return int(state["epoch"]), int(state["global_step"])


def _span(values: list[Any]) -> str:
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}-{high}"


def same(run: dict[str, Any], ce_fit: dict[int, dict[str, float]]) -> str:
    """``yes`` when the run's fit values equal the ``ce`` run's of its seed, else ``no`` (or
    ``no ce run``)."""
    if run["seed"] not in ce_fit:
        return "no ce run"
    return "yes" if run["fit"] == ce_fit[run["seed"]] else "no"


def records(sweep: Path) -> str:
    """The Markdown page of the runs' records."""
    data: dict[str, set[str]] = defaultdict(set)
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in sorted(find_runs(sweep)):
        if not (run / "metrics.json").is_file():
            continue
        record = json.loads((run / "metrics.json").read_text())
        status = json.loads((run / "status.json").read_text())
        overrides = _overrides(run)
        counts = record["data"]["class_counts"]
        data["pool (`data.n_max`)"].add(str(record["data"]["n_max"]))
        data["test source"].add(str(record["data"]["test_source"]))
        for split in ("train", "val", "test"):
            values = counts[split]
            data[f"{split} counts (digits 0-9)"].add(
                f"{', '.join(map(str, values))} ({sum(values)})"
            )
        _, steps = _epoch(run / "checkpoints" / "last.ckpt")
        best_epoch, _ = _epoch(Path(record["best_checkpoint"]))
        config = _config(run)
        drw_epoch = (config.get("loss") or {}).get("drw_epoch")
        drw_active = None
        if drw_epoch is not None:
            drw_active = read_history(run).get(DRW_TAG, {}).get(best_epoch)
        rows[overrides["experiment"].removeprefix("mnist_lt_")].append(
            {
                "seed": int(overrides["seed"]),
                "steps": steps,
                "epochs": int(status["epochs_completed"]),
                "best": best_epoch,
                "drw_epoch": drw_epoch,
                "drw_active": drw_active,
                "tau": record["metrics"].get("test/logit_adjustment_tau"),
                "fit": {
                    k: v for k, v in record["metrics"].items() if k.startswith(("val/", "train/"))
                },
            }
        )
    different = {k: v for k, v in data.items() if len(v) != 1}
    if different:
        raise SystemExit(f"error: the runs recorded different data: {different}")
    lines = [f"Runs under `{sweep}`: {sum(map(len, rows.values()))} completed.", ""]
    lines += [f"- {key}: {next(iter(values))}" for key, values in data.items()]
    lines += [
        "",
        "| configuration | seeds | optimizer steps | epochs trained | selected epoch (0-based) "
        "| DRW from epoch | `train/drw_active` at the selected epoch | test tau "
        "| `val/*`, `train/*` equal to `ce`'s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ce_fit = {r["seed"]: r["fit"] for r in rows.get("ce", [])}
    for name, runs in sorted(rows.items()):
        runs.sort(key=lambda r: r["seed"])
        drw = runs[0]["drw_epoch"]
        active = "" if drw is None else ", ".join(f"{r['drw_active']:g}" for r in runs)
        taus = [r["tau"] for r in runs]
        lines.append(
            f"| {name} | {', '.join(str(r['seed']) for r in runs)} "
            f"| {_span([r['steps'] for r in runs])} | {_span([r['epochs'] for r in runs])} "
            f"| {', '.join(str(r['best']) for r in runs)} | {'' if drw is None else drw} "
            f"| {active} | {'' if taus[0] is None else ', '.join(f'{t:g}' for t in taus)} "
            f"| {'' if taus[0] is None else ', '.join(same(r, ce_fit) for r in runs)} |"
        )
        if drw is not None and any(r["best"] < drw or r["drw_active"] != 1.0 for r in runs):
            lines.append(f"\n**{name}: a selected checkpoint from before the DRW switch.**\n")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--out", type=Path, help="also write the page here")
    args = parser.parse_args(argv)
    page = records(args.sweep_dir)
    print(page, end="")
    if args.out:
        args.out.write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
