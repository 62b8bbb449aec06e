"""The base class of metric plugins that keep their own streaming state: :class:`StatefulMetric`.

A plugin declares a factory of a torchmetrics ``Metric`` (:meth:`StatefulMetric.make_state`),
the scalars it logs (:meth:`StatefulMetric.scalar_names`, :meth:`StatefulMetric.scalars`) and
which way is better for each (``higher_is_better``); the framework does the rest:

* at ``setup`` (before a checkpoint is restored, before the first epoch) it checks the plugin
  contract with a dry run (:meth:`StatefulMetric.check_contract`: a fresh state fed one
  synthetic sample per class, computed without cross-process sync, then discarded), so a
  broken plugin fails with one line naming its class and the fix, and registers the state on
  the model (:meth:`~imblab.callbacks.contract.StatefulModel.add_eval_state`): one instance per
  stage, owned by the model, so it moves to the model's device, is saved in its checkpoints
  and summed across processes by torchmetrics' sync;
* the model resets it at the start of every validation/test epoch and updates it once per batch
  with the count state's inputs ``(preds, target, ids)``, on the device;
* at the end of the epoch every rank calls ``compute()`` (the cross-process sum) and the
  callback publishes :meth:`~StatefulMetric.scalars` as ``<stage>/<name>`` on every rank and,
  on rank 0, writes :meth:`~StatefulMetric.figures` to TensorBoard every
  ``figures_every_n_epochs``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from matplotlib.figure import Figure
from torchmetrics import Metric

from imblab.callbacks.base import (
    Direction,
    MetricCallback,
    check_declared_directions,
    check_initialised,
    declared_direction,
    plugin_error,
    publish_scalars,
)
from imblab.callbacks.contract import EvalInputs, StatefulModel, eval_inputs, stateful_model
from imblab.errors import ConfigError
from imblab.eval_states import BOOTSTRAP, COUNTS
from imblab.metrics.directions import tag_key
from imblab.tensorboard import epoch_step, rank_zero_writer

__all__ = [
    "EvalInputs",
    "StatefulMetric",
    "check_metric_plugins",
    "check_state_names",
    "synthetic_batch",
]


def synthetic_batch(inputs: EvalInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sample per class, as the count state takes them: ``preds`` (C, C) logits (or their
    softmax for ``input="probs"``) that favour the sample's class, ``target`` 0 .. C-1, ``ids``
    0 .. C-1."""
    c = inputs.num_classes
    logits = torch.eye(c, dtype=torch.float32) * 2.0
    preds = logits if inputs.input == "logits" else torch.softmax(logits, dim=1)
    return preds, torch.arange(c), torch.arange(c)


def check_state_names(plugins: Iterable[object]) -> None:
    """No two :class:`StatefulMetric` of ``plugins`` keep a state of the same name (they would
    share one state, and one would log the other's values)."""
    owners: dict[str, StatefulMetric] = {}
    for plugin in plugins:
        if not isinstance(plugin, StatefulMetric):
            continue
        name = getattr(plugin, "name", "")
        if not name:  # no name at all: the plugin's own contract error (check_contract)
            continue
        other = owners.setdefault(name, plugin)
        if other is not plugin:
            cls, first = type(plugin), type(other)
            raise ConfigError(
                f"metric plugins {first.__module__}.{first.__qualname__} and "
                f"{cls.__module__}.{cls.__qualname__} both keep a state named {name!r}; give "
                "one of them another name (its name=... option, or name = '...' in its class)"
            )


def check_metric_plugins(
    callbacks: Iterable[object], inputs: EvalInputs, class_names: Sequence[str]
) -> None:
    """The plugin contract of every metric callback in ``callbacks`` (a run's ``metrics``),
    before training: each one's :meth:`~StatefulMetric.check_contract` (or
    :meth:`~imblab.callbacks.base.MetricCallback.check_contract`), then
    :func:`check_state_names`. Raises the first broken rule as a one-line ConfigError."""
    callbacks = list(callbacks)
    for callback in callbacks:
        if isinstance(callback, StatefulMetric | MetricCallback):
            callback.check_contract(inputs, class_names)
    check_state_names(callbacks)


class StatefulMetric(Callback):
    """Base class of a metric plugin with its own streaming state (see the module docstring).

    Subclasses set ``name`` (the state's name in the model: a Python identifier, unique among a
    run's plugins), ``higher_is_better`` (True: higher is better, for every key; or a dict per
    key, None for a key without direction) and implement :meth:`make_state`,
    :meth:`scalar_names` and :meth:`scalars` (and :meth:`figures` for figures).

    Args:
        stages: the stages to report ("val", "test").
        figures_every_n_epochs: write validation figures every N epochs (test: always).
        name: overrides the class's ``name``.
    """

    name = ""
    """The state's name in the model (a Python identifier); each plugin class sets its own."""
    higher_is_better: Direction = None
    """Which way is better for the keys of :meth:`scalar_names`
    (:data:`~imblab.callbacks.base.Direction`)."""
    per_class_max_classes: int | None = None
    """Above this many classes, per-class tags skip the loggers (None: the run's setting)."""

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
        self._base_initialised = True
        self._checked: tuple[Any, ...] | None = None

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

    def directions(self, stage: str, class_names: Sequence[str]) -> dict[str, bool]:
        """``{tag: True}`` for each tag of :meth:`tags` where higher is better, ``False`` where
        lower is; a tag declared without direction is left out (from ``higher_is_better``)."""
        out: dict[str, bool] = {}
        for tag in self.tags(stage, class_names):
            better = declared_direction(self.higher_is_better, tag_key(tag))
            if isinstance(better, bool):
                out[tag] = better
        return out

    # ---- the framework ------------------------------------------------------------------

    def check_contract(self, inputs: EvalInputs, class_names: Sequence[str]) -> None:
        """The plugin contract, before training; each broken rule is a one-line ConfigError
        naming the class and the fix: ``super().__init__()`` called, a ``name`` of its own
        (not the model's ``counts`` / ``bootstrap``), :meth:`check` of the options, and a dry
        run on a fresh :meth:`make_state` (a torchmetrics ``Metric`` whose ``update`` takes
        ``(preds, target, ids)``) fed :func:`synthetic_batch` and computed without
        cross-process sync, then discarded: :meth:`scalars` returns exactly the keys of
        :meth:`scalar_names`, each with a declared direction. Done once per ``inputs`` and
        classes."""
        check_initialised(self, StatefulMetric)
        key = (inputs, tuple(class_names))
        if self._checked == key:
            return
        name = self.name
        if not name:
            raise plugin_error(
                self,
                "keeps a state but has no name of its own",
                f"set name = {type(self).__name__.lower()!r} (a Python identifier) in the class",
            )
        if not isinstance(name, str) or not name.isidentifier() or name in (COUNTS, BOOTSTRAP):
            raise plugin_error(
                self,
                f"name={name!r} is not a Python identifier or is one of the model's own "
                f"states ({COUNTS}, {BOOTSTRAP})",
                "give it another name",
            )
        self.check(inputs)
        names = list(class_names)
        self._dry_run(inputs, names)
        if type(self).directions is StatefulMetric.directions:
            check_declared_directions(self, [f"val/{k}" for k in self.scalar_names(names)])
        self._checked = key

    def _dry_run(self, inputs: EvalInputs, names: list[str]) -> None:
        state = self.make_state(inputs)
        if not isinstance(state, Metric):
            raise plugin_error(
                self,
                f"make_state() returns a {type(state).__name__}, not a torchmetrics Metric",
                "return a torchmetrics Metric whose states are added with add_state(..., "
                "dist_reduce_fx='sum')",
            )
        preds, target, ids = synthetic_batch(inputs)
        try:
            inspect.signature(state.update).bind(preds, target, ids)
        except TypeError:
            params = ", ".join(inspect.signature(state.update).parameters)
            shown = f"{type(state).__name__}.update({params})"
            raise plugin_error(
                self,
                f"its state's {shown} does not take (preds, target, ids)",
                "define update(self, preds, target, ids=None)",
            ) from None
        state.sync_on_compute = False  # the dry run never syncs across processes
        state._to_sync = False
        state.update(preds, target, ids)
        returned = set(self.scalars(state.compute(), names))
        declared = list(self.scalar_names(names))
        extra = sorted(returned - set(declared))
        if extra:
            raise plugin_error(
                self,
                f"scalars() returns keys that scalar_names() does not declare: {extra}",
                "add them to scalar_names() (or stop returning them)",
            )
        missing = [k for k in declared if k not in returned]
        if missing:
            raise plugin_error(
                self,
                f"scalar_names() declares keys that scalars() does not return: {missing}",
                "return them from scalars() (NaN for an undefined value) or remove them from "
                "scalar_names()",
            )

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        model = stateful_model(pl_module)
        self.check_contract(eval_inputs(model), model.class_names)
        check_state_names(trainer.callbacks)  # type: ignore[attr-defined]  # set by Lightning
        self.attach(model)

    def attach(self, model: StatefulModel) -> None:
        """Check the contract for ``model``'s classes and register the state on it."""
        inputs = eval_inputs(model)
        self.check_contract(inputs, model.class_names)
        model.add_eval_state(self.name, lambda: self.make_state(inputs))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epoch_end("val", trainer, stateful_model(pl_module))

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epoch_end("test", trainer, stateful_model(pl_module))

    def epoch_end(self, stage: str, trainer: Trainer, model: StatefulModel) -> None:
        """The end of a ``stage`` epoch of ``model``: compute the state (every rank: the sum is
        collective), publish the scalars, and on rank 0 write the figures (validation: every
        ``figures_every_n_epochs``; nothing in the sanity check)."""
        if stage not in self.stages or (stage == "val" and trainer.sanity_checking):
            return
        value = model.eval_state(stage, self.name).compute()
        names = model.class_names
        values = self.scalars(value, names)
        extra = sorted(set(values) - set(self.scalar_names(names)))
        if extra:
            raise plugin_error(
                self,
                f"scalars() returns keys that scalar_names() does not declare: {extra}",
                "add them to scalar_names() (or stop returning them)",
            )
        publish_scalars(
            trainer,
            {f"{stage}/{k}": float(v) for k, v in values.items()},
            names,
            self.per_class_max_classes,
        )
        figures = stage == "test" or (trainer.current_epoch + 1) % self.figures_every_n_epochs == 0
        writer = rank_zero_writer(trainer)
        if figures and writer is not None:
            title = f"{stage}, epoch {trainer.current_epoch}"
            for key, fig in self.figures(value, names, title).items():
                writer.add_figure(
                    f"{stage}/{key}", fig, global_step=epoch_step(trainer), close=False
                )
