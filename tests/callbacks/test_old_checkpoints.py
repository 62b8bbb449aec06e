"""Checkpoints written before the evaluation states moved into ``imblab.eval_states`` still load,
resume and evaluate.

The fixture ``data/run_3c6844d`` (105 KB) is a run of commit 3c6844d: ``git archive 3c6844d``
into a folder, then with ``PYTHONPATH=<folder>/src`` and the project's venv ``python -m
imblab.train`` with the overrides in its ``.hydra/overrides.yaml`` (the MNIST sample, one epoch,
``metrics=[default,calibration,topk]``, ``model.backbone.width=8``): its ``state_dict`` holds the
plugin states as ``eval_states.<stage>.<name>.*``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from imblab.callbacks.calibration import CalibrationMetrics
from imblab.callbacks.stateful import EvalInputs
from imblab.callbacks.topk import TopKAccuracy
from imblab.models.classifier import Classifier
from imblab.pipelines.evaluation import evaluate_checkpoint
from imblab.pipelines.training import train

FIXTURE = Path(__file__).parent / "data" / "run_3c6844d"


def old_checkpoint() -> dict:
    return torch.load(FIXTURE / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture
def run_copy(tmp_path: Path) -> Path:
    run = tmp_path / "old_run"
    shutil.copytree(FIXTURE, run)
    return run


def test_the_plugin_states_load_into_todays_classifier() -> None:
    saved = old_checkpoint()["state_dict"]
    plugin_keys = {k for k in saved if k.startswith("eval_states.")}
    assert "eval_states.val.calibration.count" in plugin_keys  # the layout of the old code
    model = Classifier(
        backbone=nn.Identity(), optimizer=torch.optim.SGD, num_classes=10, class_names="0123456789"
    )
    inputs = EvalInputs(10, "logits", None)
    model.add_eval_state("calibration", lambda: CalibrationMetrics().make_state(inputs))
    model.add_eval_state("topk", lambda: TopKAccuracy().make_state(inputs))
    states = {k: v for k, v in saved.items() if k.startswith("eval_states.")}
    assert model.load_state_dict(states, strict=False).unexpected_keys == []
    now = model.state_dict()
    assert {k for k in now if k.startswith("eval_states.")} == plugin_keys
    for key in plugin_keys:
        assert torch.equal(now[key], saved[key]), key


def test_an_old_run_resumes(compose_cfg, run_copy: Path, tmp_path: Path) -> None:
    overrides = [str(o) for o in OmegaConf.load(FIXTURE / ".hydra" / "overrides.yaml")]
    overrides = [o for o in overrides if not o.startswith(("trainer.max_epochs", "paths."))]
    cfg = compose_cfg(
        *overrides,
        "trainer.max_epochs=2",
        "logger=none",
        f"ckpt_path={run_copy / 'checkpoints' / 'last.ckpt'}",
        run_dir=tmp_path / "resumed",
    )
    metrics = train(cfg)
    assert {"val/ece", "test/ece", "val/top3_accuracy"} <= set(metrics)
    record = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert record["monitor"] == {"metric": "val/f1_macro", "mode": "max"}
    history = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert history["epoch"] == 1  # the old run's epoch 0, then one more


def test_an_old_checkpoint_evaluates(compose_cfg, run_copy: Path, tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()  # the run dir Hydra would create
    cfg = compose_cfg(
        f"ckpt_path={run_copy / 'checkpoints' / 'last.ckpt'}",
        "eval.bootstrap=0",
        "eval.figures=false",
        config_name="eval",
        run_dir=tmp_path / "eval",
    )
    scores = evaluate_checkpoint(cfg)
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    for key in ("f1_macro", "ece", "classwise_ece", "top3_accuracy", "top5_accuracy"):
        assert key in report and report[key] == scores[key]
