"""The long-tail protocol's callbacks: :class:`DRWGuard`, which makes a deferred re-weighting
run re-weight before it stops and select its checkpoint from the re-weighted epochs, and
:class:`TestEveryEpoch`, the papers' test accuracy of every epoch (their reporting, labelled)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from imblab.callbacks.base import publish_scalars

#: the tag of the DRW state, logged every training epoch
DRW_TAG = "train/drw_active"
#: the tag of the test accuracy of every epoch (never ``test/*``: no checkpoint chose it)
EVERY_EPOCH_TAG = "test_every_epoch/accuracy"
LAST_EPOCH_TAG = "test/accuracy_last_epoch"
MAX_OVER_EPOCHS_TAG = "test/accuracy_max_over_epochs"


def drw_min_epochs(drw_epoch: int, callbacks: Iterable[Callback]) -> int:
    """The epochs a run with ``drw_epoch`` (0-based) trains at least: ``drw_epoch + patience``
    of its early stopping (the largest patience of several), so that early stopping cannot end
    it before the re-weighting has had ``patience`` epochs; ``0`` without early stopping."""
    patience = [c.patience for c in callbacks if isinstance(c, EarlyStopping)]
    return drw_epoch + max(patience) if patience else 0


class DRWGuard(Callback):
    """Deferred re-weighting (DRW) as a run named after it promises: logs ``train/drw_active``
    (1 when the loss re-weights) every training epoch, and at the start of epoch ``drw_epoch``
    forgets the best so far of every monitoring :class:`ModelCheckpoint` (deleting its files)
    and :class:`EarlyStopping`, so that the selected checkpoint comes from an epoch
    ``>= drw_epoch`` and early stopping counts its patience from there. The pipeline also sets
    the Trainer's ``min_epochs`` to :func:`drw_min_epochs`, so that early stopping cannot stop
    the run before ``drw_epoch + patience``.

    Args:
        drw_epoch: the (0-based) epoch from which the loss re-weights.
    """

    def __init__(self, drw_epoch: int) -> None:
        self.drw_epoch = drw_epoch

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch != self.drw_epoch:
            return
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, ModelCheckpoint) and callback.monitor is not None:
                forget_best(trainer, callback)
            elif isinstance(callback, EarlyStopping):
                callback.wait_count = 0
                callback.best_score = torch.tensor(
                    math.inf if callback.mode == "min" else -math.inf
                )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        active = getattr(getattr(pl_module, "loss", None), "drw_active", None)
        if active is None:  # a loss that does not say: the schedule
            active = trainer.current_epoch >= self.drw_epoch
        publish_scalars(trainer, {DRW_TAG: float(bool(active))})


def forget_best(trainer: Trainer, checkpoint: ModelCheckpoint) -> None:
    """Reset ``checkpoint``'s top-k record to that of a fresh one, its files deleted (on rank 0,
    by the strategy, as :class:`ModelCheckpoint` removes a checkpoint that left the top k)."""
    for path in list(checkpoint.best_k_models):
        trainer.strategy.remove_checkpoint(path)
    checkpoint.best_k_models = {}
    checkpoint.kth_best_model_path = ""
    checkpoint.kth_value = torch.tensor(math.inf if checkpoint.mode == "min" else -math.inf)
    checkpoint.best_model_score = None
    checkpoint.best_model_path = ""


class TestEveryEpoch(Callback):
    """The long-tail papers' reporting (top-level ``test_every_epoch: true``): after every
    training epoch the model's top-1 accuracy on the test split is logged as
    ``test_every_epoch/accuracy``, and at the end of fitting ``test/accuracy_last_epoch`` (the
    last epoch's) and ``test/accuracy_max_over_epochs`` (the best over epochs: selected on the
    test set, so optimistic; comparable with published numbers, never imblab's default). Only
    the accuracy: no metric callback, no figure sees these passes.

    The accuracy is the argmax of the model's outputs against the targets, counted over the
    whole test split (under DDP each rank counts its shard and the sums are reduced, so every
    rank holds the same value); the model runs in eval mode under the Trainer's precision. The
    history of the run is the callback's state, so a resumed run reports the same maximum.
    """

    def __init__(self) -> None:
        self.history: list[float] = []

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        accuracy = test_accuracy(trainer, pl_module)
        if len(self.history) > trainer.current_epoch:  # a resumed epoch that ran again
            del self.history[trainer.current_epoch :]
        self.history.append(accuracy)
        publish_scalars(trainer, {EVERY_EPOCH_TAG: accuracy})

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.history:
            publish_scalars(
                trainer,
                {LAST_EPOCH_TAG: self.history[-1], MAX_OVER_EPOCHS_TAG: max(self.history)},
            )

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [float(v) for v in state_dict.get("history", [])]


@torch.no_grad()
def test_accuracy(trainer: Trainer, pl_module: LightningModule) -> float:
    """Top-1 accuracy of ``pl_module`` on the datamodule's test split (every rank the same)."""
    datamodule: Any = trainer.datamodule  # type: ignore[attr-defined]
    was_training = pl_module.training
    pl_module.eval()
    correct = torch.zeros((), dtype=torch.int64, device=pl_module.device)
    total = torch.zeros((), dtype=torch.int64, device=pl_module.device)
    try:
        for batch in datamodule.test_dataloader():
            # not the strategy's batch_to_device: it runs the datamodule's transfer hook, which
            # augments while training
            x, y = batch[0].to(pl_module.device), batch[1].to(pl_module.device)
            x = datamodule.transform(x, train=False)
            with trainer.precision_plugin.forward_context():
                out = pl_module(x)
            correct += (out.argmax(dim=1) == y).sum()
            total += len(y)
    finally:
        pl_module.train(was_training)
    counts = trainer.strategy.reduce(torch.stack([correct, total]), reduce_op="sum")
    correct_sum, total_sum = (int(v) for v in counts.tolist())
    return correct_sum / total_sum if total_sum else math.nan
