"""The MNIST-LT remedies study's evaluation and tables (see README.md for the commands).

``python experiments/mnist_lt_remedies/analyze.py eval SWEEP_DIR...`` runs ``imblab-eval`` on the
best checkpoint of every job of a sweep (``<job>/eval``: ``predictions.npz`` on the official
test set) and, for the cross-entropy jobs, post-hoc logit adjustment with tau tuned on
validation (``<job>/eval_la``). ``... table SWEEP_DIR...`` prints the study's tables:

* per remedy, the mean over seeds (and min-max) of test top-1 accuracy, macro-F1 and the
  many/medium/few-shot accuracies (mean recall of the group's classes; the groups from the
  training counts, ``metrics.json``'s ``groups``);
* paired differences against cross-entropy and between neighbours (remedies sorted by mean
  macro-F1), with 95% intervals from a two-level bootstrap: each replicate resamples the seeds
  (with replacement) and weighs the test samples by Poisson(1) weights shared by every run
  (:func:`imblab.metrics.bootstrap.poisson_weights`), so the interval holds both the
  seed-to-seed spread and the test set's sampling noise, and the pairing on the same test
  images.
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

from imblab.metrics.bootstrap import poisson_weights
from imblab.reports.predictions import load_predictions

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


def confmats(pred: np.ndarray, target: np.ndarray, weights: np.ndarray, c: int) -> np.ndarray:
    """(1 + B, C, C): the observed confusion matrix, then one per replicate's weights (N, B)."""
    cell = target * c + pred
    observed = np.bincount(cell, minlength=c * c).reshape(1, c, c).astype(np.float64)
    b = weights.shape[1]
    index = (cell[:, None] + np.arange(b)[None, :] * c * c).reshape(-1)
    boot = np.bincount(index, weights=weights.reshape(-1), minlength=b * c * c)
    return np.concatenate([observed, boot.reshape(b, c, c)])


def scores(m: np.ndarray, groups: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Top-1 accuracy, macro-F1 and group accuracies of confusion matrices (..., C, C)."""
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    true, pred = m.sum(-1), m.sum(-2)
    recall = tp / np.maximum(true, 1e-12)
    precision = np.where(pred > 0, tp / np.maximum(pred, 1e-12), 0.0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    out = {"accuracy": tp.sum(-1) / m.sum((-2, -1)), "f1_macro": f1.mean(-1)}
    for g, members in groups.items():
        out[f"accuracy_{g}"] = recall[..., members].mean(-1)
    return out


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
    c = first[0].shape[1]
    weights = poisson_weights(torch.from_numpy(ids), 0, N_BOOT).numpy().astype(np.float64)
    values: dict[str, dict[str, np.ndarray]] = {}  # remedy -> metric -> (S, 1 + B)
    for remedy, by_seed in runs.items():
        per_seed = []
        for seed in seeds:
            probs, targets, run_ids = load_predictions(by_seed[seed])
            o = np.argsort(run_ids, kind="stable")
            assert np.array_equal(run_ids[o], ids) and np.array_equal(targets[o], target)
            per_seed.append(scores(confmats(probs[o].argmax(1), target, weights, c), groups))
        values[remedy] = {k: np.stack([s[k] for s in per_seed]) for k in per_seed[0]}
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(seeds), size=(N_BOOT, len(seeds)))  # seeds resampled

    def diff(a: str, b: str, key: str) -> tuple[float, float, float]:
        d = values[a][key] - values[b][key]  # (S, 1 + B), paired by seed and test image
        point = float(d[:, 0].mean())
        boot = d[draws, np.arange(1, N_BOOT + 1)[:, None]].mean(axis=1)
        lo, hi = np.quantile(boot, [0.025, 0.975])
        return point, float(lo), float(hi)

    keys = ["accuracy", "f1_macro", *(f"accuracy_{g}" for g in GROUPS)]
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
    lines += ["", "Paired differences, mean over seeds [95% interval] (* : excludes 0):", ""]
    lines += ["| A - B | " + " | ".join(f"`{k}`" for k in keys) + " |"]
    lines += ["| --- |" + " --- |" * len(keys)]
    pairs = [(r, "ce") for r in ranked if r != "ce"]
    pairs += [(b, a) for a, b in itertools.pairwise(ranked) if "ce" not in (a, b)]
    for a, b in pairs:
        cells = []
        for k in keys:
            point, lo, hi = diff(a, b, k)
            star = "*" if lo > 0 or hi < 0 else ""
            cells.append(f"{point:+.3f} [{lo:+.3f}, {hi:+.3f}]{star}")
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
