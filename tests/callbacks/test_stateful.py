"""Metric plugins with their own streaming state, end to end: calibration and top-k in a
training run, on resume and in `imblab-eval`; a plugin from outside the package; checkpoints
across plugin sets; k >= C failing before training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import top_k_accuracy_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from imblab.callbacks.calibration import CalibrationMetrics
from imblab.callbacks.contract import StatefulModel
from imblab.callbacks.stateful import EvalInputs
from imblab.callbacks.topk import TopKAccuracy
from imblab.models.classifier import Classifier
from imblab.pipelines.training import train

from ..conftest import FAST
from ..metrics.test_plugin_states import numpy_ece

PLUGINS = "metrics=[default,calibration,topk]"
# the schedule planned for both epochs, so the one-epoch run may be resumed to two
TRAIN = [
    *FAST,
    "data.sample_test_per_class=99",
    "data.imbalance_test=true",
    PLUGINS,
    "model.scheduler.T_max=2",
]


def cli(module: str, *args: str, cwd: Path, pythonpath: Path | None = None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run dir trained 1 epoch with both plugins, then resumed to a second epoch."""
    root = tmp_path_factory.mktemp("plugins")
    run = root / "run"
    for epochs in (1, 2):
        proc = cli(
            "imblab.train",
            *TRAIN,
            f"trainer.max_epochs={epochs}",
            f"paths.data_dir={root}/data",
            f"hydra.run.dir={run}",
            cwd=root,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_plugins_log_their_tags_and_survive_resume(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())["metrics"]
    for stage in ("val", "test"):
        for tag in (*CalibrationMetrics().tags(stage, []), *TopKAccuracy().tags(stage, [])):
            assert 0.0 <= metrics[tag] <= 1.0, tag
        assert f"{stage}/accuracy/0" in metrics and f"{stage}/specificity/9" in metrics
    (events_dir,) = {p.parent for p in (trained / "tensorboard").rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(events_dir), size_guidance={"images": 0})
    acc.Reload()
    assert {"val/reliability", "test/reliability"} <= set(acc.Tags()["images"])
    assert len(acc.Scalars("val/ece")) == 2  # epoch 0, then epoch 1 after the resume
    # the plugin states were saved in the checkpoint
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu")
    assert "eval_states.val.calibration.count" in ckpt["state_dict"]
    assert "eval_states.test.topk.hits" in ckpt["state_dict"]


def test_eval_report_holds_the_plugins_equal_to_their_references(trained: Path) -> None:
    out = trained.parent / "eval"
    ckpt = trained / "checkpoints" / "last.ckpt"
    proc = cli(
        "imblab.eval",
        f"ckpt_path={ckpt}",
        "eval.bootstrap=0",
        f"hydra.run.dir={out}",
        cwd=trained.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    with np.load(out / "predictions.npz") as data:
        probs, targets = data["probs"], data["targets"]
    ece, classwise = numpy_ece(probs.astype(np.float64), targets, 15)
    # the plugins' values reach the report through trainer.callback_metrics, as float64
    assert report["ece"] == pytest.approx(ece, abs=1e-12)
    assert report["classwise_ece"] == pytest.approx(classwise, abs=1e-12)
    for k in (3, 5):
        expected = top_k_accuracy_score(targets, probs, k=k, labels=np.arange(10))
        assert report[f"top{k}_accuracy"] == pytest.approx(expected, abs=1e-12)
    pred = probs.argmax(axis=1)
    n = len(targets)
    tp = float(((pred == 0) & (targets == 0)).sum())
    tn = float(((pred != 0) & (targets != 0)).sum())
    assert report["accuracy/0"] == pytest.approx((tp + tn) / n, abs=1e-12)
    assert report["specificity/0"] == pytest.approx(tn / float((targets != 0).sum()), abs=1e-12)


def classifier() -> Classifier:
    return Classifier(
        backbone=nn.Linear(4, 3), optimizer=torch.optim.SGD, num_classes=3, class_names="abc"
    )


def test_checkpoints_load_across_plugin_sets() -> None:
    inputs = EvalInputs(3, "logits", None)
    with_plugin = classifier()
    assert isinstance(with_plugin, StatefulModel)
    with_plugin.add_eval_state("calibration", lambda: CalibrationMetrics(5).make_state(inputs))
    with_plugin.add_eval_state("calibration", lambda: CalibrationMetrics(9).make_state(inputs))
    assert with_plugin.eval_state("val", "calibration").count.shape == (5,)  # idempotent
    state = with_plugin.eval_state("test", "calibration")
    state.update(torch.randn(8, 3), torch.randint(0, 3, (8,)))
    saved = with_plugin.state_dict()
    assert float(saved["eval_states.test.calibration.count"].sum()) == 8
    plain = classifier()
    plain.load_state_dict(saved)  # strict: the plugin states the model lacks are dropped
    assert not any(k.startswith("eval_states.") for k in plain.state_dict())
    other = classifier()  # a plugin the checkpoint lacks, and one with another shape
    other.add_eval_state("calibration", lambda: CalibrationMetrics(7).make_state(inputs))
    other.add_eval_state("topk", lambda: TopKAccuracy([1]).make_state(inputs))
    other.load_state_dict(saved)
    assert other.load_state_dict(plain.state_dict(), strict=False) == ([], [])
    same = classifier()
    same.add_eval_state("calibration", lambda: CalibrationMetrics(5).make_state(inputs))
    same.load_state_dict(saved)
    assert float(same.eval_state("test", "calibration").count.sum()) == 8  # restored


def test_counts_bootstrap_and_plugins_are_one_kind_of_state() -> None:
    """The count state and the bootstrap are evaluation states like a plugin's: registered in
    ``eval_states``, updated with ``(preds, target, ids)``, reset together; the plugin names
    the model uses are refused."""
    model = Classifier(
        backbone=nn.Linear(4, 3),
        optimizer=torch.optim.SGD,
        num_classes=3,
        class_names="abc",
        bootstrap=4,
    )
    model.add_eval_state(
        "topk", lambda: TopKAccuracy([2]).make_state(EvalInputs(3, "logits", None))
    )
    for stage in ("val", "test"):
        assert list(model.eval_states[stage]) == ["counts", "bootstrap", "topk"]
        assert model.count_state(stage) is model.eval_state(stage, "counts")
        assert model.bootstrap_state(stage) is model.eval_state(stage, "bootstrap")
    assert model.count_state("val").binned and not model.count_state("test").binned
    x, y = torch.randn(7, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    model._eval_step("test", (x, y, torch.arange(7)))
    assert int(model.count_state("test").compute().confmat.sum()) == 7
    assert int(model.bootstrap_state("test").compute()[0].sum()) >= 0
    model._eval_epoch_start("test")
    assert int(model.count_state("test").confmat.sum()) == 0
    assert int(model.eval_state("test", "topk").total) == 0
    with pytest.raises(ValueError, match="model's own state"):
        model.add_eval_state(
            "counts", lambda: TopKAccuracy([2]).make_state(EvalInputs(3, "logits", None))
        )
    with pytest.raises(ValueError, match="sample ids"):
        model._eval_step("val", (x, y))


def test_a_plugin_alone_runs_without_count_callbacks(compose_cfg, tmp_path: Path) -> None:
    """With no callback reading the counts, the model still counts its CPU-buffered batches
    inside the evaluation loop (they once failed at teardown, outside inference mode)."""
    cfg = compose_cfg(
        *FAST,
        "metrics=[calibration]",
        "monitor.metric=val/ece",
        "monitor.mode=min",
        "logger=none",
        "model.counts.test_thresholds=200",  # binned: buffered on the CPU
    )
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert {"val/ece", "test/ece"} <= set(metrics)


PLUGIN = """
import torch
from torchmetrics import Metric
from imblab.callbacks.stateful import StatefulMetric


class Hits(Metric):
    def __init__(self):
        super().__init__()
        self.add_state("n", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("hits", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds, target, ids=None):
        self.n += target.shape[0]
        self.hits += (preds.argmax(dim=1) == target).sum()

    def compute(self):
        return self.hits.double() / self.n


class MyMetric(StatefulMetric):
    name = "mine"
    higher_is_better = True

    def make_state(self, inputs):
        return Hits()

    def scalar_names(self, class_names):
        return ["my_accuracy"]

    def scalars(self, value, class_names):
        return {"my_accuracy": float(value)}
"""


def test_a_plugin_from_outside_the_package(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "imblab_test_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(plugins))
    cfg = compose_cfg(*FAST, "+metrics.mine._target_=imblab_test_plugin.MyMetric", "logger=none")
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    for stage in ("val", "test"):
        assert metrics[f"{stage}/my_accuracy"] == pytest.approx(metrics[f"{stage}/accuracy"])


def test_topk_with_k_at_least_the_classes_fails_before_training(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = cli(
        "imblab.train",
        *FAST,
        "metrics=[default,topk]",
        "metrics.topk.ks=[10]",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: metrics.topk.ks=[10]: k=10 >= the 10")
    assert not list(run.glob("checkpoints/*.ckpt"))
