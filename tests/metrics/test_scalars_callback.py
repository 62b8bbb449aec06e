"""The default scalars callback in Lightning on CPU: the many/medium/few-shot group tags against
scikit-learn, and the many-classes rule (per-class values in callback_metrics, not the loggers)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from sklearn import metrics as skm
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from imblab.callbacks.scalars import ClassificationScalars, worst_classes_table
from imblab.errors import ConfigError
from imblab.models.classifier import Classifier

from ..conftest import Recorder

N = 300


def data(c: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (the identity backbone's "images") and targets; the last class never occurs."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c - 1, (N,), generator=g)
    logits = torch.randn(N, c, generator=g) * 2
    logits[torch.arange(N), target] += 1.5
    return logits, target


def validate(
    tmp_path: Path,
    train_counts: list[int],
    callback: ClassificationScalars,
    *loggers: Logger,
    c: int | None = None,
) -> tuple[Trainer, torch.Tensor, torch.Tensor]:
    c = c or len(train_counts)
    model = Classifier(
        backbone=nn.Identity(),
        optimizer=torch.optim.SGD,
        num_classes=c,
        class_names=[f"k{i}" for i in range(c)],
        train_counts=train_counts,
    )
    logits, target = data(c)
    trainer = Trainer(
        accelerator="cpu",
        callbacks=[callback],
        logger=list(loggers) or False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    loader = DataLoader(TensorDataset(logits, target), batch_size=64)
    trainer.validate(model, dataloaders=loader, verbose=False)
    return trainer, logits, target


@pytest.mark.parametrize(
    ("train_counts", "groups"),
    [
        ([150, 101, 100, 20, 19, 0], ["many", "many", "medium", "medium", "few", "few"]),
        ([500, 300, 5, 2], ["many", "many", "few", "few"]),  # no medium class
    ],
)
def test_group_tags_match_sklearn(tmp_path, train_counts, groups):
    trainer, logits, target = validate(tmp_path, train_counts, ClassificationScalars())
    c = len(train_counts)
    y, pred = target.numpy(), logits.argmax(dim=1).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recall = skm.recall_score(y, pred, labels=range(c), average=None, zero_division=0)
        f1 = skm.f1_score(y, pred, labels=range(c), average=None, zero_division=0)
    has_samples = np.bincount(y, minlength=c) > 0
    in_split = has_samples | (np.bincount(pred, minlength=c) > 0)
    logged = trainer.callback_metrics
    for g in ("many", "medium", "few"):
        member = np.array([m == g for m in groups])
        for key, values, defined in (("accuracy", recall, has_samples), ("f1_macro", f1, in_split)):
            tag = f"val/{key}_{g}"
            if not (member & defined).any():
                assert tag not in logged  # never a made-up 0
            else:
                expected = values[member & defined].mean()
                # callback_metrics holds float32 tensors
                assert float(logged[tag]) == pytest.approx(expected, rel=1e-6), tag


def test_without_training_counts_no_group_tags(tmp_path):
    callback = ClassificationScalars()
    assert callback.group_record(["a", "b", "c"], []) is None
    trainer, _, _ = validate(tmp_path, [], callback, c=3)
    assert "val/f1_macro" in trainer.callback_metrics
    assert not any(k.endswith(("_many", "_medium", "_few")) for k in trainer.callback_metrics)


def test_group_record_lists_members():
    record = ClassificationScalars(many_above=10, few_below=3).group_record(
        ["a", "b", "c"], [11, 10, 2]
    )
    assert record == {
        "many_above": 10,
        "few_below": 3,
        "classes": {"many": ["a"], "medium": ["b"], "few": ["c"]},
    }


def test_many_classes_skip_the_loggers_but_not_callback_metrics(tmp_path):
    counts = [300, 200, 50, 40, 10, 5]
    few_classes = Recorder()
    validate(tmp_path / "a", counts, ClassificationScalars(), few_classes)
    assert "val/f1/k0" in few_classes.keys

    many = Recorder()
    tb = TensorBoardLogger(tmp_path / "b", name="", version="")
    callback = ClassificationScalars(per_class_max_classes=5, worst_k=2)
    trainer, _, _ = validate(tmp_path / "b", counts, callback, many, tb)
    assert "val/f1/k0" in trainer.callback_metrics and "val/recall/k5" in trainer.callback_metrics
    assert trainer.callback_metrics["val/f1/k0"].dtype == torch.float64  # as computed
    assert not any(k.count("/") > 1 for k in many.keys)
    assert {"val/f1_macro", "val/accuracy_many", "val/accuracy_few"} <= many.keys
    tb.experiment.flush()
    events = EventAccumulator(str(tmp_path / "b"), size_guidance={"tensors": 0})
    events.Reload()
    (text,) = events.Tensors("val/worst_classes/text_summary")
    table = text.tensor_proto.string_val[0].decode()
    assert "**lowest F1** (5 classes with samples)" in table and "**lowest recall**" in table


def test_worst_classes_table_ranks_present_classes():
    names = ["a", "b", "c", "d"]
    f1 = np.array([0.5, 0.1, 0.0, np.nan])
    recall = np.array([0.2, 0.9, 0.0, 0.3])
    support = np.array([10, 3, 0, 4])  # c has no samples: not ranked
    table = worst_classes_table(names, f1, recall, f1, support, ["many"] * 4, k=2)
    by_f1, by_recall = table.split("\n\n**lowest recall**")
    rows_f1 = [
        line for line in by_f1.splitlines() if line.startswith("| 1") or line.startswith("| 2")
    ]
    rows_recall = [
        line for line in by_recall.splitlines() if line.startswith("| 1") or line.startswith("| 2")
    ]
    # F1: b (0.1), a (0.5); d's NaN last. Recall: a (0.2), d (0.3)
    assert [r.split("|")[2].strip() for r in rows_f1] == ["b", "a"]
    assert [r.split("|")[2].strip() for r in rows_recall] == ["a", "d"]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"many_above": -1}, "metrics.scalars.many_above=-1: "),
        ({"few_below": 2.5}, "metrics.scalars.few_below=2.5: "),
        ({"many_above": 10, "few_below": 20}, "metrics.scalars.few_below=20: "),
        ({"per_class_max_classes": 0}, "metrics.scalars.per_class_max_classes=0: "),
        ({"worst_k": True}, "metrics.scalars.worst_k=True: "),
    ],
)
def test_bad_options_are_one_line_config_errors(kwargs, key):
    with pytest.raises(ConfigError, match=f"^{key}") as err:
        ClassificationScalars(**kwargs)
    assert "\n" not in str(err.value)
