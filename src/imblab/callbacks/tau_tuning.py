"""Tuning the tau of post-hoc logit adjustment on validation (``eval.logit_adjustment=auto``,
``test_logit_adjustment=auto``)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch import Callback, Trainer

from imblab.callbacks.contract import stateful_model
from imblab.metrics.logit_adjustment import TAU_GRID, AdjustedConfusion

__all__ = ["TauTuning"]


class TauTuning(Callback):
    """Registers an :class:`AdjustedConfusion` state on the model (updated with every
    validation batch's logits, summed across processes) and keeps the last validation epoch's
    (G, C, C) confusion matrices, one per tau of :data:`TAU_GRID`, as ``confmats``.

    With ``keep_history`` (training with ``test_logit_adjustment=auto``) it also keeps every
    validation epoch's matrices by the global step they were computed at (``history``, saved in
    checkpoints, so a resumed run has the epochs before the interruption), so that tau can be
    tuned on the validation epoch that selected the best checkpoint (:meth:`at_step`) without
    another pass over the validation split.
    """

    name = "logit_adjustment"

    def __init__(self, log_prior: torch.Tensor, keep_history: bool = False) -> None:
        self.log_prior = log_prior
        self.keep_history = keep_history
        self.confmats: torch.Tensor | None = None
        self.history: dict[int, torch.Tensor] = {}

    def setup(self, trainer: Trainer, pl_module: L.LightningModule, stage: str) -> None:
        stateful_model(pl_module).add_eval_state(
            self.name, lambda: AdjustedConfusion(self.log_prior, TAU_GRID)
        )

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:  # every rank: the sum is collective
            self.confmats = stateful_model(pl_module).eval_state("val", self.name).compute()
            if self.keep_history:
                self.history[int(trainer.global_step)] = self.confmats

    def at_step(self, step: int) -> torch.Tensor:
        """The matrices of the validation epoch run at global step ``step`` (KeyError if none
        was kept: a checkpoint from another run)."""
        return self.history[int(step)]

    def state_dict(self) -> dict[str, Any]:
        return {"history": dict(self.history)} if self.keep_history else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {int(k): v for k, v in state_dict.get("history", {}).items()}
