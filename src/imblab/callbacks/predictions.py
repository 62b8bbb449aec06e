"""Every evaluated sample's class probabilities, target and id, collected from the step outputs.

As Lightning's ``BasePredictionWriter`` does for ``predict_step``, :class:`PredictionRecorder`
takes what the model's ``validation_step`` / ``test_step`` return
(:class:`~imblab.callbacks.contract.EvalStepOutput`) in the batch-end hooks and gathers it
across processes at the end of the epoch. A model keeps no predictions itself: nothing is
collected unless the recorder is attached.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from imblab.callbacks.contract import eval_step_output, evaluated_model

__all__ = ["PredictionRecorder", "Predictions"]


class Predictions(NamedTuple):
    """One split's predictions, ordered by id, each sample once."""

    probs: np.ndarray
    """(N, C) float32 class probabilities."""
    targets: np.ndarray
    """(N,) int64 targets."""
    ids: np.ndarray
    """(N,) int64 indices of the samples in their split, ascending."""


class PredictionRecorder(Callback):
    """Collects the ``stage`` epoch's predictions: ``predictions`` once the epoch has ended.

    Per batch (``on_{validation,test}_batch_end``): the step output's ``preds`` as
    probabilities (``softmax`` over classes when the stage's count state takes logits, else as
    they are, in float32), ``target`` and ``ids``, kept on the batch's device. At the end of the
    epoch every process's batches are concatenated and gathered with
    ``torch.distributed.all_gather_object`` (every rank takes part); rank 0 keeps them sorted
    by id in :attr:`predictions`, other ranks keep None. The validation sanity check is skipped.

    Args:
        stage: the stage to record, ``"val"`` or ``"test"``.

    Raises:
        ValueError: a batch carries no sample ids.
        RuntimeError: a sample id was evaluated twice (the loaders overlap across processes).
    """

    def __init__(self, stage: str) -> None:
        if stage not in ("val", "test"):
            raise ValueError(f"stage={stage!r}: use 'val' or 'test'")
        self.stage = stage
        self.predictions: Predictions | None = None
        self._batches: list[tuple[Tensor, Tensor, Tensor]] = []

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("val", trainer)

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start("test", trainer)

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect("val", trainer, pl_module, outputs)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect("test", trainer, pl_module, outputs)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._gather("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._gather("test", trainer, pl_module)

    def _records(self, stage: str, trainer: Trainer) -> bool:
        return stage == self.stage and not trainer.sanity_checking

    def _start(self, stage: str, trainer: Trainer) -> None:
        if self._records(stage, trainer):
            self._batches = []
            self.predictions = None

    def _collect(
        self, stage: str, trainer: Trainer, pl_module: LightningModule, outputs: Any
    ) -> None:
        if not self._records(stage, trainer):
            return
        hook = "validation_step" if stage == "val" else "test_step"
        output = eval_step_output(outputs, f"{type(pl_module).__name__}.{hook}")
        ids = output["ids"]
        if ids is None:
            raise ValueError(
                f"{stage} batches are (x, y) without sample ids, which the predictions need; "
                "use a datamodule whose eval loaders yield (x, y, ids) (as data=mnist and "
                "data=image_folder do), or set test_predictions=false (imblab-train)"
            )
        probs = output["preds"].detach().float()
        if evaluated_model(pl_module).count_state(stage).input == "logits":
            probs = torch.softmax(probs, dim=1)
        self._batches.append((probs, output["target"].detach(), ids.detach()))

    def _gather(self, stage: str, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._records(stage, trainer):
            return
        batches, self._batches = self._batches, []
        local: tuple[np.ndarray, ...]
        if batches:
            local = tuple(torch.cat(column).cpu().numpy() for column in zip(*batches, strict=True))
        else:
            c = evaluated_model(pl_module).count_state(stage).num_classes
            local = (np.zeros((0, c), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64))
        parts = [local]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, local)
            parts = gathered
        if not trainer.is_global_zero:
            return
        probs, targets, ids = (np.concatenate([p[i] for p in parts]) for i in range(3))
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        if len(np.unique(ids)) != len(ids):
            raise RuntimeError(f"{stage}: a sample was evaluated twice (duplicate ids)")
        self.predictions = Predictions(probs[order], targets[order], ids)
