"""imblab's metrics in a LightningModule of one's own (``imblab.callbacks.PerClassMetrics``):
``val/f1_macro`` and every per-class recall equal scikit-learn on the same predictions, in one
process and in 2-process DDP (gloo, N = 1001: Lightning's DistributedSampler pads one sample,
which is left out), published as float64, and a CSVLogger receives them as they are;
``Classifier`` on the same plain loader counts (and averages its loss over) each sample once."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score, recall_score

from .conftest import run_script

DDP_DIR = Path(__file__).parent / "ddp"
N, C = 1001, 5


def own_module():  # the DDP helper script, imported from its folder
    sys.path.insert(0, str(DDP_DIR))
    try:
        import own_module as module
    finally:
        sys.path.remove(str(DDP_DIR))
    return module


def csv_values(out: Path) -> dict[str, float]:
    """Every value the CSVLogger wrote (one row per callback's publication)."""
    values: dict[str, float] = {}
    for row in csv.DictReader((out / "csv" / "metrics.csv").open()):
        values.update({k: float(v) for k, v in row.items() if v and k != "step"})
    return values


def test_own_module_equals_sklearn_in_one_and_two_processes(tmp_path: Path) -> None:
    module = own_module()
    logits, target = module.synthetic(N, C)
    y, pred = target.numpy(), logits.argmax(dim=1).numpy()
    f1 = f1_score(y, pred, average="macro")
    recall = recall_score(y, pred, average=None, labels=list(range(C)), zero_division=0)
    # the mean cross-entropy in float64 (scikit-learn's log_loss clips the saturated rows)
    loss = float(torch.nn.functional.cross_entropy(logits.double(), target))

    single = tmp_path / "single"
    module.run(1, str(single), N, C)
    multi = tmp_path / "ddp"
    run_script(DDP_DIR / "own_module.py", "2", str(multi), str(N), str(C), cwd=tmp_path)
    for out, world in ((single, 1), (multi, 2)):
        record = json.loads((out / "record.json").read_text())
        assert record["world_size"] == world
        assert record["total"] == N and record["calibration_total"] == N  # each sample once
        assert record["dtypes"] == ["torch.float64"]
        published = record["published"]
        assert published["val/f1_macro"] == pytest.approx(f1, abs=1e-12)
        for c in range(C):
            assert published[f"val/recall/c{c}"] == pytest.approx(recall[c], abs=1e-12)
        logged = csv_values(out)  # the logger got the very values (CSV keeps the float's repr)
        assert all(logged[tag] == published[tag] for tag in published)
        # Classifier, the same mechanism: its counts and its loss leave the padding out too
        assert record["classifier_confmat"] == confusion_matrix(y, pred, labels=range(C)).tolist()
        assert record["classifier_loss"] == pytest.approx(loss, rel=1e-6)
