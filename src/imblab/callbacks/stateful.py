"""The base class of metric plugins that keep their own streaming state: :class:`StatefulMetric`.

A plugin declares a factory of a torchmetrics ``Metric`` (:meth:`StatefulMetric.make_state`)
and the scalars it logs (:meth:`StatefulMetric.scalar_names`, :meth:`StatefulMetric.scalars`);
the framework does the rest:

* at ``setup`` (before a checkpoint is restored, before the first epoch) the callback registers
  the state on the model (:meth:`~imblab.callbacks.contract.StatefulModel.add_eval_state`): one
  instance per stage, owned by the model, so it moves to the model's device, is saved in its
  checkpoints and summed across processes by torchmetrics' sync (exact under DDP: the eval
  sampler is unpadded);
* the model resets it at the start of every validation/test epoch and updates it once per batch
  with the count state's inputs ``(preds, target, ids)``, on the device;
* at the end of the epoch every rank calls ``compute()`` (the cross-process sum) and the
  callback publishes :meth:`~StatefulMetric.scalars` as ``<stage>/<name>`` on every rank and,
  on rank 0, writes :meth:`~StatefulMetric.figures` to TensorBoard every
  ``figures_every_n_epochs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from matplotlib.figure import Figure
from torchmetrics import Metric

from imblab.callbacks.base import publish_scalars
from imblab.callbacks.contract import StatefulModel, stateful_model
from imblab.tensorboard import rank_zero_writer

__all__ = ["EvalInputs", "StatefulMetric"]


@dataclass(frozen=True)
class EvalInputs:
    """What a plugin's state is updated with, as the stage's count state takes it: ``C``
    classes, ``input`` ("logits": softmax them for probabilities; or "probs") and the
    ``ignore_index`` target left out (None: none)."""

    num_classes: int
    input: str
    ignore_index: int | None


class StatefulMetric(Callback):
    """Base class of a metric plugin with its own streaming state (see the module docstring).

    Subclasses set ``name`` (the state's name in the model: a Python identifier; two instances
    of one plugin need different names) and implement :meth:`make_state`, :meth:`scalar_names` and
    :meth:`scalars` (and :meth:`figures` for figures).

    Args:
        stages: the stages to report ("val", "test").
        figures_every_n_epochs: write validation figures every N epochs (test: always).
        name: overrides the class's ``name``.
    """

    name = "state"

    def __init__(
        self,
        stages: Sequence[str] = ("val", "test"),
        figures_every_n_epochs: int = 1,
        name: str | None = None,
    ) -> None:
        if figures_every_n_epochs < 1:
            raise ValueError(f"figures_every_n_epochs={figures_every_n_epochs}: must be >= 1")
        self.stages = tuple(stages)
        self.figures_every_n_epochs = figures_every_n_epochs
        if name is not None:
            self.name = name

    # ---- what a plugin implements -------------------------------------------------------

    def make_state(self, inputs: EvalInputs) -> Metric:
        """A fresh state; its ``update(preds, target, ids)`` takes the count state's inputs."""
        raise NotImplementedError

    def scalar_names(self, class_names: Sequence[str]) -> list[str]:
        """The keys :meth:`scalars` returns for these classes (without the stage)."""
        raise NotImplementedError

    def scalars(self, value: Any, class_names: list[str]) -> dict[str, float]:
        """Named scalars of the computed state ``value`` (logged as ``<stage>/<name>``)."""
        raise NotImplementedError

    def figures(self, value: Any, class_names: list[str], title: str) -> dict[str, Figure]:
        """Named figures of ``value`` (written as ``<stage>/<name>``); none by default."""
        return {}

    def check(self, inputs: EvalInputs) -> None:
        """Check the plugin's options against the data before training (raise ConfigError)."""

    def tags(
        self, stage: str, class_names: Sequence[str], train_counts: Sequence[int] = ()
    ) -> list[str]:
        """The scalar tags this plugin logs for ``stage`` with these classes (checked against
        ``monitor.metric`` before training; ``train_counts`` unused here)."""
        if stage not in self.stages:
            return []
        return [f"{stage}/{k}" for k in self.scalar_names(class_names)]

    # ---- the framework ------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        model = stateful_model(pl_module)
        counts = model.count_state("val")
        inputs = EvalInputs(len(model.class_names), counts.input, counts.ignore_index)
        self.check(inputs)
        model.add_eval_state(self.name, lambda: self.make_state(inputs))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            figures = (trainer.current_epoch + 1) % self.figures_every_n_epochs == 0
            self._report("val", trainer, pl_module, figures)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report("test", trainer, pl_module, True)

    def _report(
        self, stage: str, trainer: Trainer, pl_module: LightningModule, figures: bool
    ) -> None:
        if stage not in self.stages:
            return
        model: StatefulModel = stateful_model(pl_module)
        value = model.eval_state(stage, self.name).compute()  # every rank: the sum is collective
        values = self.scalars(value, model.class_names)
        publish_scalars(trainer, {f"{stage}/{k}": float(v) for k, v in values.items()})
        writer = rank_zero_writer(trainer)
        if figures and writer is not None:
            title = f"{stage}, epoch {trainer.current_epoch}"
            for key, fig in self.figures(value, model.class_names, title).items():
                writer.add_figure(
                    f"{stage}/{key}", fig, global_step=trainer.global_step, close=False
                )
