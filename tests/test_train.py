"""End to end: `imblab-train` on the bundled MNIST sample, TensorBoard contents, metrics.json,
resuming, reproducibility, and the command line's handling of bad values."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from google.protobuf.json_format import MessageToDict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from imblab.errors import ConfigError
from imblab.pipelines.training import build_datamodule, build_model, train, trainer_overrides
from imblab.runs import event_dir

from .conftest import FAST


def events(run_dir: Path) -> EventAccumulator:
    found = event_dir(run_dir)
    assert found is not None, f"no TensorBoard events under {run_dir}"
    acc = EventAccumulator(str(found), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    return acc


def session_hparams(acc: EventAccumulator) -> dict[str, object]:
    """The HParams view's parameters of the run (its session start), as Python values."""
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {key: MessageToDict(value) for key, value in start.hparams.items()}


def test_fast_dev_run_on_the_bundled_sample(compose_cfg) -> None:
    metrics = train(compose_cfg(*FAST, "debug=fdr"))
    assert "val/f1_macro" in metrics and "test/f1_macro" in metrics
    assert 0.0 <= metrics["val/f1_macro"] <= 1.0


def test_training_run_logs_everything_to_tensorboard(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(*FAST, "trainer.max_epochs=2", "metrics=[default,mcc]")
    metrics = train(cfg)

    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["monitor"] == {"metric": "val/f1_macro", "mode": "max"}
    assert record["data"]["source_used"] == "sample"
    assert Path(record["best_checkpoint"]).is_file()
    for key in ("val/f1_macro", "val/loss", "test/f1_macro", "test/balanced_accuracy", "val/mcc"):
        assert record["metrics"][key] == pytest.approx(metrics[key])
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()

    acc = events(tmp_path)
    tags = acc.Tags()
    scalars = set(tags["scalars"])
    expected = {
        "train/loss_epoch",
        "train/accuracy",
        "val/loss",
        "val/accuracy",
        "val/f1_macro",
        "val/f2_macro",
        "val/f0.5_macro",
        "val/f1_micro",
        "val/f1_weighted",
        "val/precision_macro",
        "val/recall_macro",
        "val/balanced_accuracy",
        "val/auroc_macro",
        "val/auroc_weighted",
        "val/ap_macro",
        "val/f1/0",
        "val/recall/9",
        "val/auroc/3",
        "val/mcc",
        "test/f1_macro",
    }
    assert expected <= scalars, expected - scalars
    assert len(acc.Scalars("val/f1_macro")) == 2  # one point per epoch
    assert {"val/confusion_matrix", "val/roc", "val/per_class", "test/roc"} <= set(tags["images"])
    assert {"val/pr/0", "val/pr/9"} <= set(tags["tensors"])
    # the HParams view links the experiment's settings to the real metric tags
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins
    assert b"val/f1_macro" in plugins["_hparams_/experiment"]
    params = session_hparams(acc)
    assert params["loss"] == "ce" and params["sampler"] == "none"
    assert params["seed"] == 42 and params["lr"] == pytest.approx(cfg.model.optimizer.lr)
    assert params["setup/data/profile"] == "exponential"
    assert params["setup/data/source"] == "sample"
    assert params["setup/epochs"] == 2 and params["user/metrics"] == "[default,mcc]"
    # TensorBoard shows the first five names (sorted) as columns: the ones that tell runs apart
    assert sorted(params)[:5] == ["dataset", "loss", "lr", "sampler", "seed"]
    hidden = [k for k in params if "_target_" in k or "dir" in k or k.startswith("callbacks")]
    assert not hidden, hidden
    assert "hp_metric" not in scalars
    # one TensorBoard run, named after the run dir (the printed --logdir is <run>/tensorboard)
    assert event_dir(tmp_path) == tmp_path / "tensorboard" / tmp_path.name


def test_interrupted_run_resumes_from_last_checkpoint(compose_cfg, tmp_path: Path) -> None:
    train(compose_cfg(*FAST, "trainer.max_epochs=1", "test=false"))
    first = len(events(tmp_path).Scalars("val/f1_macro"))
    train(compose_cfg(*FAST, "trainer.max_epochs=2", "test=false"))
    points = events(tmp_path).Scalars("val/f1_macro")
    assert first == 1 and len(points) == 2  # epoch 0 was not trained again
    assert next(p.step for p in points) < points[1].step


def test_same_seed_same_cpu_run(compose_cfg, tmp_path: Path) -> None:
    a = train(compose_cfg(*FAST, "seed=7", "logger=none", run_dir=tmp_path / "a"))
    b = train(compose_cfg(*FAST, "seed=7", "logger=none", run_dir=tmp_path / "b"))
    assert a == b


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "imblab.train", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def test_command_line_fast_dev_run(tmp_path: Path) -> None:
    proc = cli(*FAST, "debug=fdr", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert (tmp_path / "run" / ".hydra" / "overrides.yaml").is_file()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.profile=zipf", "data.profile"),
        ("data.imbalance_ratio=0.5", "data.imbalance_ratio"),
        ("monitor.mode=best", "monitor.mode"),
        ("monitor.metric=val/f1_macr", "monitor.metric"),
        ("metrics.scalars.zero_division=0.5", "metrics.scalars.zero_division"),
        ("trainer.max_epochs=abc", "trainer.max_epochs"),
    ],
)
def test_command_line_bad_value_is_one_line_naming_the_key(
    tmp_path: Path, override: str, key: str
) -> None:
    proc = cli(*FAST, override, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {key}="), proc.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()  # failed before training started


def test_command_line_run_dir_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    proc = cli(*FAST, f"hydra.run.dir={tmp_path}/file/run", cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: hydra.run.dir="), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_binary_task_logs_positive_class_scores(compose_cfg, tmp_path: Path) -> None:
    metrics = train(
        compose_cfg(*FAST, "experiment=mnist_binary", "model.counts.binary_threshold=0.3")
    )
    for key in ("val/binary/precision", "val/binary/recall", "val/binary/f1", "test/binary/f2"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["val/binary/threshold"] == pytest.approx(0.3)
    assert "val/f1/rest" in metrics and "val/f1/7" in metrics


def test_command_line_ddp_on_cpu_writes_one_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = cli(*FAST, "trainer=ddp", "trainer.devices=2", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run / "metrics.json").read_text())
    val_counts = [int(n) for n in record["data"]["val_counts"].split(",")]
    for c, n in enumerate(val_counts):  # every validation image counted exactly once
        assert record["metrics"][f"val/support/{c}"] == n
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # one run dir, not one per process


@pytest.mark.parametrize(
    "loss", sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "loss").glob("*.yaml"))
)
def test_every_loss_trains_with_the_training_class_counts(compose_cfg, loss: str) -> None:
    overrides = [*FAST, f"loss={loss}", "debug=fdr"]
    if loss == "ldam":
        overrides.append("loss.drw_epoch=0")  # deferred re-weighting on from the start
    metrics = train(compose_cfg(*overrides))
    assert math.isfinite(metrics["train/loss_epoch"])
    assert 0.0 <= metrics["val/f1_macro"] <= 1.0


def test_deterministic_cpu_run(compose_cfg) -> None:
    metrics = train(compose_cfg(*FAST, "trainer.deterministic=true", "debug=fdr"))
    assert "test/f1_macro" in metrics


def test_compile_failure_falls_back_to_eager_with_a_message(
    compose_cfg, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def cannot_compile(fn: object) -> object:
        def compiled(*args: object) -> None:
            raise RuntimeError("no C++ compiler found\nlong traceback")

        return compiled

    monkeypatch.setattr("torch.compile", cannot_compile)
    with caplog.at_level(logging.WARNING, logger="imblab"):
        metrics = train(compose_cfg(*FAST, "model.compile=true", "debug=fdr"))
    messages = [r.getMessage() for r in caplog.records if "torch.compile" in r.getMessage()]
    assert messages == [
        "model.compile=true: torch.compile could not compile the backbone (RuntimeError: no C++ "
        "compiler found); running it eagerly instead (set model.compile=false to skip the attempt)"
    ]
    assert "test/f1_macro" in metrics


def test_precision_auto_is_32_bit_without_cuda(compose_cfg) -> None:
    cfg = compose_cfg(*FAST)
    assert cfg.trainer.precision == "auto" and cfg.trainer.benchmark is None
    assert trainer_overrides(cfg.trainer) == {"precision": "32-true", "benchmark": False}
    cfg = compose_cfg(*FAST, "trainer.precision=bf16-mixed", "trainer.benchmark=true")
    assert trainer_overrides(cfg.trainer) == {}


def test_channels_last_auto_follows_the_device(compose_cfg) -> None:
    cfg = compose_cfg(*FAST)
    assert cfg.model.channels_last == "auto" and cfg.model.optimizer.fused is True
    model = build_model(cfg, build_datamodule(cfg))
    model.configure_model()  # no trainer: the parameters' device, the CPU
    assert model.channels_last is False
    forced = build_model(compose_cfg(*FAST, "model.channels_last=true"), build_datamodule(cfg))
    forced.configure_model()
    assert forced.channels_last is True
    weight = forced.backbone.features[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ConfigError, match=r"^model\.channels_last='yes': "):
        build_model(compose_cfg(*FAST, "model.channels_last=yes"), build_datamodule(cfg))


def test_last_checkpoint_is_the_last_epoch_not_the_best(compose_cfg, tmp_path: Path) -> None:
    """``last.ckpt`` holds the final epoch even when the monitor's best was earlier (here the
    best is epoch 0: the validation loss mostly falls, and the monitor maximises it)."""
    cfg = compose_cfg(
        *FAST, "trainer.max_epochs=3", "test=false", "monitor.metric=val/loss", "monitor.mode=max"
    )
    train(cfg)
    assert len(events(tmp_path).Scalars("val/loss")) == 3
    folder = tmp_path / "checkpoints"
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 2
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("epoch_")) == [
        "last.ckpt"
    ]
    assert len(list(folder.glob("epoch_*.ckpt"))) == 1
