"""Two-class threshold tuning: the F-beta-optimal threshold against scikit-learn, and the
callback in Lightning (tuned on validation, kept in the checkpoint, applied on test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer
from sklearn.metrics import f1_score, fbeta_score, precision_recall_curve
from torch import nn

from imblab.callbacks.scalars import BinaryScores
from imblab.callbacks.threshold import ThresholdTuning
from imblab.data.tensors import TensorBatches
from imblab.errors import ConfigError
from imblab.metrics.counts import CountState
from imblab.metrics.decision_threshold import best_threshold
from imblab.models.classifier import Classifier
from imblab.samplers import SequentialShard


def miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An imbalanced binary task (10% positives) whose positive-class probabilities are too
    low: positives score ~ Beta(3, 5) (mean 0.375), negatives ~ Beta(1, 8); at 0.5 most
    positives are missed, so the F1-optimal threshold lies well below 0.5."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(np.int64)
    s = np.where(y == 1, rng.beta(3, 5, n), rng.beta(1, 8, n))
    return np.stack([1 - s, s], axis=1), y


def counts_of(probs: np.ndarray, y: np.ndarray, thresholds: int | None):
    state = CountState(probs.shape[1], thresholds=thresholds, input="probs")
    state.update(torch.from_numpy(probs), torch.from_numpy(y))
    return state.compute()


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_exact_best_threshold_is_sklearns_best_on_the_pr_curve(beta: float) -> None:
    probs, y = miscalibrated(4000, seed=0)
    threshold, best = best_threshold(counts_of(probs, y, None), beta=beta)
    precision, recall, candidates = precision_recall_curve(y, probs[:, 1])
    b2 = beta * beta
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.nan_to_num((1 + b2) * precision * recall / (b2 * precision + recall))[:-1]
    assert best == pytest.approx(f.max(), abs=1e-12)
    assert threshold == pytest.approx(candidates[np.argmax(f)], abs=1e-12)
    assert best == pytest.approx(fbeta_score(y, probs[:, 1] >= threshold, beta=beta), abs=1e-12)


def test_binned_best_threshold_is_the_best_grid_point() -> None:
    probs, y = miscalibrated(4000, seed=1)
    counts = counts_of(probs, y, 200)
    threshold, best = best_threshold(counts)
    assert counts.thresholds is not None and threshold in counts.thresholds.tolist()
    s = torch.from_numpy(probs[:, 1]).float()
    grid = counts.thresholds.float()
    f = [f1_score(y, (s >= t).numpy(), zero_division=0) for t in grid]
    assert best == pytest.approx(max(f), abs=1e-12)
    assert f1_score(y, (s >= threshold).numpy()) == pytest.approx(best, abs=1e-12)


class Scores(LightningDataModule):
    """Validation and test sets of the miscalibrated task as (logits, target, ids) batches."""

    def __init__(self) -> None:
        super().__init__()
        self.val = miscalibrated(3000, seed=2)
        self.test = miscalibrated(3000, seed=3)

    def _loader(self, data: tuple[np.ndarray, np.ndarray]) -> TensorBatches:
        logits = torch.from_numpy(np.log(data[0])).float()
        target = torch.from_numpy(data[1])
        return TensorBatches(logits, target, 500, SequentialShard(len(target)), ids=True)

    def val_dataloader(self) -> TensorBatches:
        return self._loader(self.val)

    def test_dataloader(self) -> TensorBatches:
        return self._loader(self.test)


def _trainer(tuner: ThresholdTuning, root: Path) -> Trainer:
    return Trainer(
        accelerator="cpu",
        callbacks=[BinaryScores(), tuner],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )


def test_tuned_threshold_is_saved_and_raises_test_f1(tmp_path: Path) -> None:
    model = Classifier(
        backbone=nn.Identity(),
        optimizer=torch.optim.SGD,
        num_classes=2,
        class_names=["neg", "pos"],
        counts={"thresholds": 200},
    )
    data = Scores()
    tuner = ThresholdTuning(beta=1.0)
    trainer = _trainer(tuner, tmp_path)
    trainer.validate(model, datamodule=data, verbose=False)
    tuned = tuner.threshold
    assert tuned is not None and tuned < 0.4
    ckpt = tmp_path / "tuned.ckpt"
    trainer.save_checkpoint(ckpt)

    fresh = ThresholdTuning(beta=1.0)  # a new process: the threshold comes from the checkpoint
    tester = _trainer(fresh, tmp_path)
    tester.test(model, datamodule=data, ckpt_path=str(ckpt), verbose=False, weights_only=True)
    assert fresh.threshold == tuned
    logged = {k: float(v) for k, v in tester.callback_metrics.items()}
    # float32 tensors in callback_metrics: compare to 1e-6
    s, y = torch.from_numpy(data.test[0][:, 1]).float().numpy(), data.test[1]
    expected_tuned = f1_score(y, s >= np.float32(tuned))
    expected_default = f1_score(y, s >= np.float32(0.5))
    assert logged["test/binary_tuned/f1"] == pytest.approx(expected_tuned, abs=1e-6)
    assert logged["test/binary/f1"] == pytest.approx(expected_default, abs=1e-6)
    assert logged["test/binary_tuned/threshold"] == pytest.approx(tuned, abs=1e-6)
    # the optimum on validation carries over to this test set: much better than 0.5
    assert expected_tuned > expected_default + 0.2
    # and it is close to the best any threshold could do on the test set itself
    precision, recall, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore"):
        oracle = np.nanmax(2 * precision * recall / (precision + recall))
    assert expected_tuned > oracle - 0.05


def test_more_than_two_classes_is_left_alone(tmp_path: Path) -> None:
    tuner = ThresholdTuning()
    counts = counts_of(np.full((4, 3), 1 / 3), np.array([0, 1, 2, 0]), None)
    tuner.log_counts("val", counts, ["a", "b", "c"], None, None)  # type: ignore[arg-type]
    assert tuner.threshold is None
    with pytest.raises(ValueError, match="two classes"):
        best_threshold(counts)


def test_negative_beta_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^metrics\.threshold\.beta=-1: F-beta needs beta >= 0"):
        ThresholdTuning(beta=-1)
