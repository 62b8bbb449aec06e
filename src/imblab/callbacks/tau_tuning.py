"""Tuning the tau of post-hoc logit adjustment on validation (``eval.logit_adjustment=auto``)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch import Callback, Trainer

from imblab.callbacks.contract import stateful_model
from imblab.metrics.logit_adjustment import TAU_GRID, AdjustedConfusion

__all__ = ["TauTuning"]


class TauTuning(Callback):
    """``eval.logit_adjustment=auto``: registers an :class:`AdjustedConfusion` state on the
    model (updated with every validation batch's logits, summed across processes) and keeps the
    validation epoch's (G, C, C) confusion matrices, one per tau of :data:`TAU_GRID`."""

    name = "logit_adjustment"

    def __init__(self, log_prior: torch.Tensor) -> None:
        self.log_prior = log_prior
        self.confmats: torch.Tensor | None = None

    def setup(self, trainer: Trainer, pl_module: L.LightningModule, stage: str) -> None:
        stateful_model(pl_module).add_eval_state(
            self.name, lambda: AdjustedConfusion(self.log_prior, TAU_GRID)
        )

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:  # every rank: the sum is collective
            self.confmats = stateful_model(pl_module).eval_state("val", self.name).compute()
