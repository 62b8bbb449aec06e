"""The MNIST-LT remedies study's evaluation and tables (see README.md for the commands).

``python experiments/mnist_lt_remedies/analyze.py eval SWEEP_DIR...`` runs ``imblab-eval`` on the
best checkpoint of every job of a sweep (``<job>/eval``: ``predictions.npz`` on the official
test set) and, for the cross-entropy jobs, post-hoc logit adjustment with tau tuned on
validation (``<job>/eval_la``). ``... table SWEEP_DIR...`` prints the study's tables:

* per remedy, the mean over seeds (and min-max) of test top-1 accuracy, macro-F1 and the
  many/medium/few-shot accuracies (mean recall of the group's classes; the groups from the
  training counts, ``metrics.json``'s ``groups``);
* paired differences against cross-entropy and between neighbours (remedies sorted by mean
  macro-F1), with imblab's ``method=seed+test`` intervals (:mod:`imblab.seed_stats`, as
  ``imblab-compare --baseline`` computes them): the per-seed differences plus the variance of
  their seed mean over test-set resamples, Poisson weights shared by every run
  (:func:`imblab.reports.paired.replicate_metrics`); a ``*`` marks a difference whose p-value,
  Holm-adjusted over the comparisons of its column, is below 0.05.

This script only formats: the scores, the intervals and the adjustment are imblab's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from imblab.reports.paired import bootstrap_weights, replicate_metrics
from imblab.reports.predictions import load_predictions
from imblab.seed_stats import Comparison, adjust_p, paired_t, replicate_variance

GROUPS = ("many", "medium", "few")
N_BOOT = 2000


def jobs(sweeps: list[Path]) -> list[tuple[str, int, Path]]:
    """``(remedy, seed, job dir)`` of every completed job of the sweeps, from its overrides."""
    out = []
    found = [p for sweep in sweeps for p in sweep.iterdir() if (p / "metrics.json").is_file()]
    for job in sorted(found):
        overrides = (job / ".hydra" / "overrides.yaml").read_text().splitlines()
        values = dict(line.lstrip("- ").split("=", 1) for line in overrides if "=" in line)
        remedy = values["experiment"].removeprefix("mnist_lt_")
        out.append((remedy, int(values["seed"]), job))
    return out


def run_eval(sweeps: list[Path]) -> None:
    env = {**os.environ, "IMBLAB_DATA_DIR": os.environ.get("IMBLAB_DATA_DIR", "../shared/data")}
    for remedy, _, job in jobs(sweeps):
        ckpt = json.loads((job / "metrics.json").read_text())["best_checkpoint"]
        targets = [("eval", [])]
        if remedy == "ce":
            targets.append(("eval_la", ["eval.logit_adjustment=auto"]))
        for name, extra in targets:
            out = job / name
            if (out / "predictions.npz").is_file():
                continue
            cmd = [
                sys.executable,
                "-m",
                "imblab.eval",
                f"ckpt_path='{ckpt}'",  # quoted: sweep job dirs hold = and ,
                "eval.bootstrap=0",
                "eval.figures=false",
                *extra,
                f"hydra.run.dir='{out}'",
            ]
            print(" ".join(cmd[2:]), flush=True)
            subprocess.run(cmd, check=True, env=env, capture_output=True)


def table(sweeps: list[Path], rows_out: Path | None) -> None:
    runs: dict[str, dict[int, Path]] = {}
    groups: dict[str, list[int]] = {}
    steps = []  # optimizer steps of each run (the training budget)
    for remedy, seed, job in jobs(sweeps):
        last = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
        steps.append(int(last["global_step"]))
        record = json.loads((job / "metrics.json").read_text())
        names = record["data"]["classes"]
        groups = {g: [names.index(n) for n in record["groups"]["classes"][g]] for g in GROUPS}
        runs.setdefault(remedy, {})[seed] = job / "eval"
        if remedy == "ce" and (job / "eval_la" / "predictions.npz").is_file():
            runs.setdefault("ce_posthoc_la", {})[seed] = job / "eval_la"
    seeds = sorted(set.intersection(*(set(s) for s in runs.values())))
    first = load_predictions(runs["ce"][seeds[0]])
    order = np.argsort(first[2], kind="stable")
    ids, target = first[2][order], first[1][order]
    weights = bootstrap_weights(ids, 0, N_BOOT)
    keys = ["accuracy", "f1_macro", *(f"accuracy_{g}" for g in GROUPS)]
    values: dict[str, dict[str, np.ndarray]] = {}  # remedy -> metric -> (S, 1 + B)
    for remedy, by_seed in runs.items():
        per_seed = []
        for seed in seeds:
            probs, targets, run_ids = load_predictions(by_seed[seed])
            o = np.argsort(run_ids, kind="stable")
            assert np.array_equal(run_ids[o], ids) and np.array_equal(targets[o], target)
            labels = [str(c) for c in range(probs.shape[1])]
            per_seed.append(
                replicate_metrics(probs[o], target, weights, labels, groups=groups, keys=keys)
            )
        values[remedy] = {k: np.stack([s[k] for s in per_seed]) for k in keys}

    def diff(a: str, b: str, key: str) -> Comparison:
        d = values[a][key] - values[b][key]  # (S, 1 + B), paired by seed and test image
        return paired_t(d[:, 0], replicate_variance(d[:, 1:]), confidence=0.95)

    ranked = sorted(values, key=lambda r: float(values[r]["f1_macro"][:, 0].mean()))
    lines = [
        f"seeds {seeds}; optimizer steps per run {min(steps)}-{max(steps)}; "
        f"test: {len(ids)} images; groups (training images): "
        + ", ".join(f"{g} = classes {groups[g]}" for g in GROUPS),
        "",
        "| remedy | " + " | ".join(f"`{k}`" for k in keys) + " |",
        "| --- |" + " --- |" * len(keys),
    ]
    for r in ranked:
        cells = []
        for k in keys:
            v = values[r][k][:, 0]
            cells.append(f"{v.mean():.3f} ({v.min():.3f}-{v.max():.3f})")
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Paired differences, mean over seeds [95% interval, method=seed+test] "
        "(*: Holm-adjusted p < 0.05 over the column's comparisons):",
        "",
    ]
    lines += ["| A - B | " + " | ".join(f"`{k}`" for k in keys) + " |"]
    lines += ["| --- |" + " --- |" * len(keys)]
    pairs = [(r, "ce") for r in ranked if r != "ce"]
    pairs += [(b, a) for a, b in itertools.pairwise(ranked) if "ce" not in (a, b)]
    compared = {k: [diff(a, b, k) for a, b in pairs] for k in keys}
    adjusted = {k: adjust_p([c.p_value for c in compared[k]], "holm") for k in keys}
    for i, (a, b) in enumerate(pairs):
        cells = []
        for k in keys:
            c = compared[k][i]
            star = "*" if adjusted[k][i] < 0.05 else ""
            cells.append(f"{c.diff:+.3f} [{c.lo:+.3f}, {c.hi:+.3f}]{star}")
        lines.append(f"| {a} - {b} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if rows_out is not None:
        rows_out.write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["eval", "table"])
    parser.add_argument("sweeps", type=Path, nargs="+", help="the study's sweep dirs")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()
    if args.command == "eval":
        run_eval(args.sweeps)
    else:
        table(args.sweeps, args.out)


if __name__ == "__main__":
    main()
