"""Learning-rate schedules that torch lacks as one configurable class: the long-tail papers'
linear warm-up followed by step decays."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR

from imblab.errors import config_error

log = logging.getLogger(__name__)


class WarmupSteps:
    """The factor of epoch ``e`` (0-based): ``(e + 1) / warmup_epochs`` while
    ``e < warmup_epochs``, else the ``factors[k]`` of the last milestone ``milestones[k] <= e``
    (1 before the first). A picklable callable, so the scheduler's state saves with it."""

    def __init__(
        self, warmup_epochs: int, milestones: Sequence[int], factors: Sequence[float]
    ) -> None:
        self.warmup_epochs = warmup_epochs
        self.milestones = list(milestones)
        self.factors = list(factors)

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return (epoch + 1) / self.warmup_epochs
        factor = 1.0
        for milestone, f in zip(self.milestones, self.factors, strict=True):
            if epoch >= milestone:
                factor = f
        return factor


def warmup_multistep(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_epochs: int = 5,
    milestones: Sequence[int] = (160, 180),
    factors: Sequence[float] = (0.01, 0.0001),
    max_epochs: int | None = None,
) -> LambdaLR:
    """The CIFAR-LT recipe of Cao et al. 2019 (``adjust_learning_rate`` of ``kaidic/LDAM-DRW``
    ``cifar_train.py``): ``lr * (e + 1) / 5`` for epochs e = 0..4, ``lr`` until epoch 160,
    ``lr * 0.01`` from 160, ``lr * 0.0001`` from 180; stepped once per epoch. A warm-up or
    milestone at or past ``max_epochs`` is never (fully) reached: a warning, not an error (a
    1-epoch check of a 200-epoch preset)."""
    if len(milestones) != len(factors) or list(milestones) != sorted(milestones):
        raise config_error(
            "model.scheduler.milestones",
            list(milestones),
            f"must be increasing, one per factor ({list(factors)})",
            "e.g. milestones=[160,180] factors=[0.01,0.0001]",
        )
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
        raise config_error(
            "model.scheduler.warmup_epochs", warmup_epochs, "not an integer >= 0", "e.g. 5"
        )
    if max_epochs is not None and max_epochs > 0:
        late = [m for m in milestones if m >= max_epochs]
        if warmup_epochs > max_epochs:
            late.insert(0, warmup_epochs)
        if late:
            log.warning(
                "model.scheduler: warm-up/milestone epochs %s are past the last epoch "
                "(trainer.max_epochs=%d) and are never reached",
                late,
                max_epochs,
            )
    return LambdaLR(optimizer, WarmupSteps(warmup_epochs, milestones, factors))
