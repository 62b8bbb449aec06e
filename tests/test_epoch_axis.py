"""Epoch-level values against the epoch: the logger and its callback, runs of two batch sizes
that line up epoch for epoch, a resumed run that goes on as its TensorBoard run began (also one
from a checkpoint written before the epoch axis), and reading both layouts back (best epoch,
imblab-compare's best-epoch columns)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from imblab.compare import build_parser, compare
from imblab.pipelines.training import train
from imblab.runs import best_step, event_dir, load_run, read_status, value, write_status
from imblab.tensorboard import (
    AXIS_KEY,
    EPOCH,
    GLOBAL_STEP,
    EpochAxis,
    TensorBoardLogger,
    epoch_step,
)

from .conftest import FAST


def steps(acc: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


def accumulator(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_the_logger_writes_what_is_logged_at_an_epoch_end_against_the_epoch(
    tmp_path: Path,
) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="tb", version="run")
    # what Lightning's self.log hands the logger: the values, its `epoch`, the global step
    logger.log_metrics({"train/loss_step": 1.0, "epoch": 0}, step=9)  # during the batches
    logger.at_epoch_end = True
    logger.log_metrics({"val/loss": 0.5, "epoch": 0}, step=9)
    logger.log_metrics({"train/loss_epoch": 0.6, "epoch": 0}, step=9)
    logger.log_metrics({"lr-AdamW": 0.1}, step=9)  # an explicit step without `epoch`: kept
    logger.at_epoch_end = False
    logger.log_metrics({"train/loss_step": 0.9, "epoch": 1}, step=19)
    logger.at_epoch_end = True
    logger.log_metrics({"val/loss": 0.4, "epoch": 1}, step=19)
    logger.finalize("success")
    old = TensorBoardLogger(str(tmp_path), name="tb", version="old")
    old.axis, old.at_epoch_end = GLOBAL_STEP, True
    old.log_metrics({"val/loss": 0.5, "epoch": 0}, step=9)
    old.finalize("success")

    acc = accumulator(tmp_path / "tb" / "run")
    assert steps(acc, "train/loss_step") == [9, 19]
    assert steps(acc, "val/loss") == [0, 1] and steps(acc, "train/loss_epoch") == [0]
    assert steps(acc, "lr-AdamW") == [9]
    # Lightning's epoch scalar keeps mapping global steps to epochs
    assert [(e.step, e.value) for e in acc.Scalars("epoch")] == [
        (9, 0.0),
        (9, 0.0),
        (9, 0.0),
        (19, 1.0),
        (19, 1.0),
    ]
    assert steps(accumulator(tmp_path / "tb" / "old"), "val/loss") == [9]


def test_epoch_axis_marks_epoch_ends_and_keeps_the_axis_of_the_checkpoint(tmp_path: Path) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="tb", version="run")
    trainer = SimpleNamespace(loggers=[logger], current_epoch=3, global_step=40)
    callback = EpochAxis()
    module = None
    callback.on_validation_epoch_end(trainer, module)  # type: ignore[arg-type]
    assert logger.at_epoch_end
    callback.on_train_batch_start(trainer, module, None, 0)  # type: ignore[arg-type]
    assert not logger.at_epoch_end
    callback.on_train_epoch_end(trainer, module)  # type: ignore[arg-type]
    assert logger.at_epoch_end
    callback.on_train_epoch_start(trainer, module)  # type: ignore[arg-type]
    assert not logger.at_epoch_end

    checkpoint: dict[str, object] = {}
    callback.on_save_checkpoint(trainer, module, checkpoint)  # type: ignore[arg-type]
    assert checkpoint[AXIS_KEY] == EPOCH and epoch_step(trainer) == 3  # type: ignore[arg-type]
    callback.on_load_checkpoint(trainer, module, {"epoch": 2})  # type: ignore[arg-type]
    assert logger.axis == GLOBAL_STEP and epoch_step(trainer) == 40  # type: ignore[arg-type]
    callback.on_save_checkpoint(trainer, module, checkpoint)  # type: ignore[arg-type]
    assert checkpoint[AXIS_KEY] == GLOBAL_STEP  # resumed again: still as it began
    callback.on_load_checkpoint(trainer, module, {AXIS_KEY: EPOCH})  # type: ignore[arg-type]
    assert logger.axis == EPOCH and epoch_step(trainer) == 3  # type: ignore[arg-type]
    # without imblab's logger (none, or another kind) there is only the epoch axis
    other = SimpleNamespace(loggers=[], current_epoch=5, global_step=70)
    assert epoch_step(other) == 5  # type: ignore[arg-type]


def write_run(
    root: Path, name: str, f1: list[float], steps_of: list[int], layout: str, test_f1: float
) -> Path:
    """A completed run dir with validation scalars at ``steps_of`` (epochs in the current
    layout, global steps in the old one) and its test value."""
    run = root / name
    write_status(run, {"status": "completed"})
    (run / ".hydra").mkdir(parents=True)
    overrides = name.partition("_")[2].split(",")
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if layout == "epoch":
        folder = root / "tensorboard" / name.split(",")[0]
        write_status(
            run,
            {
                "status": "completed",
                "tensorboard": {"logdir": "../tensorboard", "run": folder.name},
            },
        )
    else:
        folder = run / "tensorboard"
    writer = SummaryWriter(str(folder))
    for value_, step in zip(f1, steps_of, strict=True):
        writer.add_scalar("val/f1_macro", value_, global_step=step)
        writer.add_scalar("val/loss", 1.0 - value_, global_step=step)
    writer.add_scalar("test/f1_macro", test_f1, global_step=steps_of[-1])
    writer.close()
    record = {
        "monitor": {"metric": "val/f1_macro", "mode": "max"},
        "metrics": {"val/f1_macro": f1[-1], "test/f1_macro": test_f1},
    }
    (run / "metrics.json").write_text(json.dumps(record))
    return run


def test_runs_of_both_layouts_read_back_alike(tmp_path: Path) -> None:
    """A run written before the epoch axis (global steps 10, 20, 30 in <run>/tensorboard/) and
    one after (epochs 0, 1, 2 in the sweep's tensorboard/, found through status.json) with the
    same values: the same best epoch, best-epoch columns and compare table."""
    f1 = [0.4, 0.7, 0.6]
    old = write_run(
        tmp_path, "0_loss=ce,trainer.max_epochs=3", f1, [10, 20, 30], "global_step", 0.65
    )
    new = write_run(tmp_path, "1_loss=focal,trainer.max_epochs=3", f1, [0, 1, 2], "epoch", 0.65)
    assert event_dir(old) == old / "tensorboard"
    assert event_dir(new) == tmp_path / "tensorboard" / "1_loss=focal"
    runs = [load_run(p, tmp_path) for p in (old, new)]
    assert best_step(runs[0]) == 20 and best_step(runs[1]) == 1
    for run in runs:
        assert value(run, "val/f1_macro", "best") == pytest.approx(0.7)
        assert value(run, "val/loss", "best") == pytest.approx(0.3)
        assert value(run, "val/loss", "last") == pytest.approx(0.4)
    args = [str(tmp_path), "--tags", "val/f1_macro", "val/loss", "test/f1_macro", "--no-figure"]
    assert compare(build_parser().parse_args(args)) == 0
    rows = list(csv.DictReader((tmp_path / "compare.csv").open()))
    assert [r["run"] for r in rows] == [old.name, new.name]
    for row in rows:
        assert float(row["val/loss (best)"]) == pytest.approx(0.3)
        assert float(row["val/f1_macro (best)"]) == pytest.approx(0.7)
        assert float(row["test/f1_macro"]) == pytest.approx(0.65)


# two epochs of a few batches, with one figure and the PR curves
QUICK = [
    *FAST,
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=1",
    "metrics=[scalars,confusion_matrix,pr_curves]",
]


def test_a_run_writes_its_epoch_level_values_against_the_epoch(compose_cfg, tmp_path: Path) -> None:
    """Scalars, figures and PR curves of validation and test, the training epoch means and
    the monitor's best at the epoch (runs of any batch size line up); the training steps at the
    global step; the status record says where the TensorBoard run is."""
    write_status(tmp_path, {"status": "running", "started": "t"})  # as run_job does
    train(compose_cfg(*QUICK))
    found = event_dir(tmp_path)
    assert found == tmp_path / "tensorboard" / tmp_path.name
    assert read_status(tmp_path)["tensorboard"] == {"logdir": "tensorboard", "run": tmp_path.name}  # type: ignore[index]
    acc = accumulator(found)
    for tag in ("val/f1_macro", "val/loss", "val/recall/0", "train/loss_epoch", "train/accuracy"):
        assert steps(acc, tag) == [0, 1], tag
    assert steps(acc, "test/f1_macro") == [2] and steps(acc, "test/loss") == [2]  # after 2 epochs
    assert steps(acc, "best/val/f1_macro") == [2]
    assert [e.step for e in acc.Images("val/confusion_matrix")] == [0, 1]
    assert [e.step for e in acc.Images("test/confusion_matrix")] == [2]
    assert [e.step for e in acc.Tensors("val/pr/0")] == [0, 1]
    assert steps(acc, "train/loss_step") == list(range(6))  # 3 batches an epoch, every step


def drop_axis(checkpoint: Path) -> None:
    """Make ``checkpoint`` one written before the epoch axis."""
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    del state[AXIS_KEY]
    torch.save(state, checkpoint)


@pytest.mark.parametrize("before_the_axis", [False, True])
def test_a_resumed_run_goes_on_as_its_tensorboard_run_began(
    compose_cfg, tmp_path: Path, before_the_axis: bool
) -> None:
    train(compose_cfg(*QUICK, "trainer.max_epochs=1", "test=false"))
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True, map_location="cpu")[AXIS_KEY] == EPOCH
    if before_the_axis:
        drop_axis(last)
    train(compose_cfg(*QUICK, "test=false"))
    found = event_dir(tmp_path)
    assert found is not None
    acc = accumulator(found)
    resumed = acc.Scalars("val/f1_macro")[-1].step
    if before_the_axis:  # the global step, as such a run's TensorBoard run began
        assert resumed == torch.load(last, weights_only=True, map_location="cpu")["global_step"]
        assert resumed == 6  # 2 epochs of 3 batches
        assert steps(acc, "val/loss")[-1] > 1  # Lightning's own step of it, not epoch 1
    else:
        assert steps(acc, "val/f1_macro") == [0, 1] and steps(acc, "val/loss") == [0, 1]
    assert torch.load(last, weights_only=True, map_location="cpu")[AXIS_KEY] == (
        GLOBAL_STEP if before_the_axis else EPOCH
    )
