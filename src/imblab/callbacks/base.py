"""The base classes of imblab's metric callbacks and the cheap way they publish scalars.

Every metric callback reads the stage's count state of an
:class:`~imblab.callbacks.contract.EvaluatedModel` at the end of each validation and test
epoch. The state's ``compute()`` sums the counts across processes once and caches the result,
so attaching more callbacks adds no count updates and no extra synchronisation. Scalars are
published on every rank (identical values, so the monitor works everywhere) with
:func:`publish_scalars`; figures are written by rank 0 only. Both are written against the epoch
(:func:`~imblab.tensorboard.epoch_step`), so runs of any batch size line up.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from matplotlib.figure import Figure

from imblab.callbacks.contract import EvalInputs, EvaluatedModel, eval_inputs, evaluated_model
from imblab.errors import ConfigError
from imblab.metrics.counts import Counts, score_grid
from imblab.metrics.directions import UNKNOWN, builtin_direction, tag_key
from imblab.tensorboard import epoch_step, rank_zero_writer

__all__ = [
    "PER_CLASS_MAX_CLASSES",
    "Direction",
    "FigureMetric",
    "MetricCallback",
    "ScalarMetric",
    "apply_class_limit",
    "builtin_directions",
    "check_declared_directions",
    "check_initialised",
    "declared_direction",
    "empty_counts",
    "per_class_tag",
    "plugin_error",
    "publish_scalars",
]

PER_CLASS_MAX_CLASSES = 100
"""The default of ``per_class_max_classes`` (the top-level key of ``conf/train.yaml``)."""

Direction = bool | Mapping[str, bool | None] | None
"""What a metric declares in ``higher_is_better``: one direction for all its keys (True: higher
is better), a direction per key (a per-class key ``<metric>/<class>`` may be declared by its
``<metric>``; None: the key has no direction, e.g. a count), or None: nothing declared."""


def empty_counts(num_classes: int) -> Counts:
    """The counts of a stage that saw no sample (binned, two bins): what a callback's
    :meth:`MetricCallback.tags` can run its math on to learn the keys it logs."""
    return Counts(
        torch.zeros(num_classes, num_classes, dtype=torch.int64),
        thresholds=score_grid(2),
        hist=torch.zeros(num_classes, 2, 2, dtype=torch.int64),
    )


def per_class_tag(tag: str, class_names: Collection[str]) -> bool:
    """Whether ``tag`` is a per-class tag: ``<stage>/<metric>/<class name>`` (or its bootstrap
    bound ``..._lo`` / ``..._hi``) for one of ``class_names`` (a set, for many tags)."""
    parts = tag.split("/", 2)
    if len(parts) < 3:
        return False
    last = parts[2]
    return last in class_names or (last[-3:] in ("_lo", "_hi") and last[:-3] in class_names)


def publish_scalars(
    trainer: Trainer,
    values: Mapping[str, float],
    class_names: Sequence[str] = (),
    max_classes: int | None = None,
) -> None:
    """Do for epoch-level ``values`` what ``LightningModule.log`` does, at a fraction of its
    cost: put them into ``trainer.callback_metrics`` (read by checkpointing, early stopping and
    ``metrics.json``) on every rank, as float64 tensors (the value exactly as computed), and hand
    them to every logger on rank 0 at the epoch's step (:func:`~imblab.tensorboard.epoch_step`)
    as Python floats (TensorBoard stores float32 by its format). Only for values that are
    already identical on every process.

    With more than ``max_classes`` (None: :data:`PER_CLASS_MAX_CLASSES`) ``class_names``, the
    per-class tags (:func:`per_class_tag`) go into ``trainer.callback_metrics`` only, not to the
    loggers (``per_class_max_classes``).

    ``self.log`` costs ~0.6 ms per key in Lightning 2.6 (a torchmetrics object and a deep copy
    per key): ~60 ms for the ~100 scalars of :func:`~imblab.metrics.functional.summarize`, four
    times a whole GPU validation epoch over 10,000 MNIST images.
    """
    values = {k: float(v) for k, v in values.items()}
    trainer.callback_metrics.update(
        {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}
    )
    limit = PER_CLASS_MAX_CLASSES if max_classes is None else max_classes
    if len(class_names) > limit:
        names = set(class_names)
        values = {k: v for k, v in values.items() if not per_class_tag(k, names)}
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(values, step=epoch_step(trainer))


def plugin_error(plugin: object, what: str, fix: str) -> ConfigError:
    """The one-line error of a metric callback that breaks the plugin contract, naming its
    class: ``metric plugin <module>.<class>: <what>; <fix>``."""
    cls = type(plugin)
    return ConfigError(f"metric plugin {cls.__module__}.{cls.__qualname__}: {what}; {fix}")


def check_initialised(plugin: object, base: type) -> None:
    """Raise the plugin error when ``plugin``'s ``__init__`` skipped ``base.__init__``."""
    if not getattr(plugin, "_base_initialised", False):
        raise plugin_error(
            plugin,
            f"{type(plugin).__name__}.__init__ does not call super().__init__() (of "
            f"{base.__name__})",
            "call super().__init__(...) in __init__ before anything else (it sets the stages "
            "and the epochs to report)",
        )


def declared_direction(declared: Direction, key: str) -> bool | object | None:
    """The direction ``declared`` (a ``higher_is_better``) gives ``key`` (without the stage):
    True, False, None (declared without direction), or
    :data:`~imblab.metrics.directions.UNKNOWN` when it says nothing about ``key``."""
    if declared is None:
        return UNKNOWN
    if isinstance(declared, bool):
        return declared
    if key in declared:
        return declared[key]
    metric = key.split("/", 1)[0]
    return declared[metric] if "/" in key and metric in declared else UNKNOWN


def builtin_directions(tags: Iterable[str]) -> dict[str, bool]:
    """The direction of each of ``tags`` that imblab's static table gives one
    (:func:`~imblab.metrics.directions.builtin_direction`)."""
    out: dict[str, bool] = {}
    for tag in tags:
        better = builtin_direction(tag_key(tag))
        if isinstance(better, bool):
            out[tag] = better
    return out


def check_declared_directions(plugin: Any, tags: Iterable[str]) -> None:
    """Every one of ``tags`` must have a declared direction in ``plugin.higher_is_better``."""
    for tag in tags:
        key = tag_key(tag)
        if declared_direction(plugin.higher_is_better, key) is UNKNOWN:
            raise plugin_error(
                plugin,
                f"declares no direction for {key!r} (is a higher value better?)",
                "set higher_is_better in the class: True (higher is better) or False for all "
                "its keys, or a dict per key (None: a key without direction)",
            )


def apply_class_limit(callbacks: Iterable[object], limit: int) -> None:
    """Give every metric callback that has not set its own ``per_class_max_classes`` the
    run's (the top-level ``per_class_max_classes``)."""
    for callback in callbacks:
        if hasattr(callback, "per_class_max_classes") and callback.per_class_max_classes is None:
            callback.per_class_max_classes = limit


class MetricCallback(Callback):
    """Base class: hands each stage's summed counts to :meth:`log_counts` at epoch end.

    Subclasses implement :meth:`log_counts`, a function of the counts (and, where needed, of
    the model's contract); they keep no per-batch state. A subclass that publishes scalars
    declares their :meth:`tags` and which way is better (``higher_is_better``, or its own
    :meth:`directions`). The same callback works on a module that implements
    :class:`~imblab.callbacks.contract.EvaluatedModel` (as ``Classifier``) or inside
    :class:`~imblab.callbacks.PerClassMetrics` for any module: :meth:`attach` and
    :meth:`epoch_end` take the evaluated model explicitly.

    Args:
        stages: the stages to report ("val", "test").
        every_n_epochs: report validation every N epochs (test is always reported).
    """

    higher_is_better: Direction = None
    """Which way is better for the published keys (:data:`Direction`)."""
    per_class_max_classes: int | None = None
    """Above this many classes, per-class tags skip the loggers (None: the run's setting)."""

    def __init__(self, stages: Sequence[str] = ("val", "test"), every_n_epochs: int = 1) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs}: must be >= 1")
        self.stages = tuple(stages)
        self.every_n_epochs = every_n_epochs
        self._base_initialised = True
        self._checked: tuple[Any, ...] | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.attach(evaluated_model(pl_module))

    def attach(self, model: EvaluatedModel) -> None:
        """Before any epoch: check the plugin contract for ``model``'s classes."""
        self.check_contract(eval_inputs(model), model.class_names)

    def check_contract(self, inputs: EvalInputs, class_names: Sequence[str]) -> None:
        """The plugin contract, before training (raise the one-line :func:`plugin_error`): the
        base class initialised, a direction for every tag. Done once per ``inputs`` and
        classes."""
        check_initialised(self, MetricCallback)
        key = (inputs, tuple(class_names))
        if self._checked == key:
            return
        if type(self).directions is MetricCallback.directions:
            check_declared_directions(
                self, [t for stage in self.stages for t in self.tags(stage, class_names)]
            )
        self._checked = key

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epoch_end("val", trainer, evaluated_model(pl_module))

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epoch_end("test", trainer, evaluated_model(pl_module))

    def epoch_end(self, stage: str, trainer: Trainer, model: EvaluatedModel) -> None:
        """The end of a ``stage`` epoch of ``model``: :meth:`log_counts` of its summed counts
        (validation: not in the sanity check, every ``every_n_epochs``)."""
        if stage not in self.stages:
            return
        if stage == "val" and (
            trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs
        ):
            return
        counts = model.count_state(stage).compute()
        self.log_counts(stage, counts, model.class_names, trainer, model)

    def publish(
        self, trainer: Trainer, values: Mapping[str, float], class_names: Sequence[str]
    ) -> None:
        """:func:`publish_scalars` with this callback's ``per_class_max_classes``."""
        publish_scalars(trainer, values, class_names, self.per_class_max_classes)

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        model: EvaluatedModel,
    ) -> None:
        """Log what this callback derives from ``counts`` (``model``: the module evaluated)."""
        raise NotImplementedError

    def tags(
        self, stage: str, class_names: Sequence[str], train_counts: Sequence[int] = ()
    ) -> list[str]:
        """The scalar tags this callback publishes for ``stage`` with these classes and training
        class counts (checked against ``monitor.metric`` before training); none by default
        (figures only)."""
        return []

    def directions(self, stage: str, class_names: Sequence[str]) -> dict[str, bool]:
        """``{tag: True}`` for each tag of :meth:`tags` where higher is better, ``False`` where
        lower is; a tag without direction is left out (from ``higher_is_better``)."""
        out: dict[str, bool] = {}
        for tag in self.tags(stage, class_names):
            better = declared_direction(self.higher_is_better, tag_key(tag))
            if isinstance(better, bool):
                out[tag] = better
        return out


class ScalarMetric(MetricCallback):
    """Base class for scalar metrics: :meth:`scalars` values are logged as ``<stage>/<name>``.

    The values are identical on every process (they come from summed counts), so they are logged
    without further reduction and can be monitored by checkpointing and early stopping. The keys
    are declared by running :meth:`scalars` on empty counts (:meth:`tags`); keys it returns on
    real counts beyond those are an error, never logged silently.
    """

    def scalars(self, counts: Counts, class_names: list[str]) -> dict[str, float]:
        """Named values derived from the counts."""
        raise NotImplementedError

    def tags(
        self, stage: str, class_names: Sequence[str], train_counts: Sequence[int] = ()
    ) -> list[str]:
        """``<stage>/<key>`` for every key :meth:`scalars` returns (run on empty counts)."""
        if stage not in self.stages:
            return []
        names = list(class_names)
        return [f"{stage}/{k}" for k in self.scalars(empty_counts(len(names)), names)]

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        model: EvaluatedModel,
    ) -> None:
        values = {f"{stage}/{k}": float(v) for k, v in self.scalars(counts, class_names).items()}
        cache: dict[tuple[str, ...], set[str]] = self.__dict__.setdefault("_tag_cache", {})
        key = (stage, *class_names)
        if key not in cache:
            cache[key] = set(self.tags(stage, class_names))
        declared = cache[key]
        extra = sorted(set(values) - declared)
        if extra:
            raise plugin_error(
                self,
                f"scalars() returns {extra} that it does not return on empty counts (where its "
                "tags are declared)",
                "return the same keys whatever the counts (NaN for an undefined value)",
            )
        self.publish(trainer, values, class_names)


class FigureMetric(MetricCallback):
    """Base class for figures: rank 0 writes :meth:`figure` to TensorBoard as ``<stage>/<name>``,
    at the epoch's step (:func:`~imblab.tensorboard.epoch_step`)."""

    name = "figure"

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        model: EvaluatedModel,
    ) -> None:
        writer = rank_zero_writer(trainer)
        if writer is None:
            return
        fig = self.stage_figure(stage, counts, class_names, trainer)
        writer.add_figure(f"{stage}/{self.name}", fig, global_step=epoch_step(trainer), close=False)

    def stage_figure(
        self, stage: str, counts: Counts, class_names: list[str], trainer: Trainer
    ) -> Figure:
        """The figure logged for ``stage`` (override to use the stage or the trainer, e.g. for a
        title); :meth:`figure` by default."""
        return self.figure(counts, class_names)

    def figure(self, counts: Counts, class_names: list[str]) -> Figure:
        """The figure to log."""
        raise NotImplementedError
