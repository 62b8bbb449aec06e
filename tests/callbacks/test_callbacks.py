"""The model contract of imblab's callbacks and the prediction recorder, in Lightning on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from imblab.callbacks.contract import EvaluatedModel, evaluated_model
from imblab.callbacks.predictions import PredictionRecorder
from imblab.callbacks.scalars import ClassificationScalars
from imblab.errors import ConfigError
from imblab.models.classifier import Classifier

N, C = 37, 3


def classifier(**kwargs: Any) -> Classifier:
    """The identity backbone: the "images" are the logits themselves."""
    return Classifier(
        backbone=nn.Identity(),
        optimizer=torch.optim.SGD,
        num_classes=C,
        class_names=["a", "b", "c"],
        counts={"thresholds": None},
        **kwargs,
    )


def loader(ids: bool) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(N, C, generator=g) * 3
    target = torch.randint(0, C, (N,), generator=g)
    # a shuffled order: the recorder sorts by id
    order = torch.randperm(N, generator=g)
    tensors = (logits[order], target[order], order) if ids else (logits, target)
    return DataLoader(TensorDataset(*tensors), batch_size=8)


def trainer(tmp_path: Path, *callbacks: Callback) -> Trainer:
    return Trainer(
        accelerator="cpu",
        callbacks=list(callbacks),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


def test_classifier_implements_the_contract() -> None:
    model = classifier(train_counts=[5, 3, 1])
    assert isinstance(model, EvaluatedModel)
    assert evaluated_model(model) is model
    assert model.train_counts == [5, 3, 1]
    assert classifier().train_counts == []
    assert model.bootstrap_state("val") is None
    assert classifier(bootstrap=4).bootstrap_state("test") is not None


def test_train_counts_need_one_count_per_class() -> None:
    with pytest.raises(ConfigError, match=r"^train_counts=\[5, 3\]: 2 class counts for 3"):
        classifier(train_counts=[5, 3])


class Bare(LightningModule):
    def validation_step(self, batch: object, batch_idx: int) -> None:
        return None


def test_a_module_without_the_contract_is_a_clear_type_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"Bare does not implement .*EvaluatedModel \(missing: "):
        evaluated_model(Bare())
    with pytest.raises(TypeError, match="class_names, train_counts, count_state, bootstrap_state"):
        trainer(tmp_path, ClassificationScalars()).validate(
            Bare(), dataloaders=loader(ids=False), verbose=False
        )


def test_recorder_keeps_softmax_probabilities_sorted_by_id(tmp_path: Path) -> None:
    model = classifier()
    recorder = PredictionRecorder("val")
    trainer(tmp_path, recorder).validate(model, dataloaders=loader(ids=True), verbose=False)
    assert recorder.predictions is not None
    probs, targets, ids = recorder.predictions
    logits, target, order = loader(ids=True).dataset.tensors  # type: ignore[attr-defined]
    expected = torch.softmax(logits, dim=1)[torch.argsort(order)]
    np.testing.assert_array_equal(ids, np.arange(N))
    np.testing.assert_allclose(probs, expected.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(targets, target[torch.argsort(order)].numpy())
    # the test stage is another recorder's business
    kept = recorder.predictions
    trainer(tmp_path, recorder).test(model, dataloaders=loader(ids=True), verbose=False)
    assert recorder.predictions is kept


def test_recorder_needs_ids_and_the_model_keeps_no_predictions(tmp_path: Path) -> None:
    model = classifier()
    trainer(tmp_path).validate(model, dataloaders=loader(ids=False), verbose=False)
    assert not hasattr(model, "predictions")
    with pytest.raises(ValueError, match="without sample ids, which the predictions need"):
        trainer(tmp_path, PredictionRecorder("test")).test(
            model, dataloaders=loader(ids=False), verbose=False
        )
