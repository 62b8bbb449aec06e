"""What imblab's callbacks need from the model they observe: :class:`EvaluatedModel`, and the
:class:`EvalStepOutput` its ``validation_step`` / ``test_step`` return.

Both are structural types: a model fulfils them without importing this module (models and
callbacks do not import one another; :class:`imblab.models.classifier.Classifier` is the
reference implementation, and :class:`imblab.callbacks.PerClassMetrics` implements them for any
LightningModule). A callback turns the ``pl_module`` Lightning hands it into the contract with
:func:`evaluated_model`, which names what a module lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypedDict, cast, runtime_checkable

from torch import Tensor
from torchmetrics import Metric

from imblab.metrics.bootstrap import BootstrapCounts
from imblab.metrics.counts import CountState

__all__ = [
    "EvalInputs",
    "EvalStepOutput",
    "EvaluatedModel",
    "StatefulModel",
    "eval_inputs",
    "eval_step_output",
    "evaluated_model",
    "stateful_model",
]


@runtime_checkable
class EvaluatedModel(Protocol):
    """A LightningModule whose validation and test outputs feed one count state per stage.

    For each stage (``"val"``, ``"test"``) the module owns a
    :class:`~imblab.metrics.counts.CountState` that it resets at the start of the stage's epoch
    and updates once per batch in ``validation_step`` / ``test_step``. At the end of the epoch
    every metric callback reads ``count_state(stage).compute()``: the counts summed across
    processes, computed once and cached, so attaching more callbacks adds no updates and no
    synchronisation. ``bootstrap_state(stage)``, when not None, is updated beside it from the
    same batches (which then carry sample ids).

    ``validation_step`` / ``test_step`` return an :class:`EvalStepOutput` (read by
    :class:`~imblab.callbacks.predictions.PredictionRecorder`, ignored otherwise).
    """

    class_names: list[str]
    """One display name per class, in class-index order (tags ``<stage>/<metric>/<name>``)."""

    train_counts: list[int]
    """Training samples per class, in class-index order (empty when unknown)."""

    def count_state(self, stage: str) -> CountState:
        """The count state of ``stage``."""
        ...

    def bootstrap_state(self, stage: str) -> BootstrapCounts | None:
        """The Poisson-bootstrap confusion matrices of ``stage``, None when the model keeps none."""
        ...


@runtime_checkable
class StatefulModel(EvaluatedModel, Protocol):
    """An :class:`EvaluatedModel` that also keeps metric plugins' own streaming states
    (:class:`~imblab.callbacks.stateful.StatefulMetric`).

    ``add_eval_state(name, factory)`` registers one ``factory()`` torchmetrics ``Metric`` per
    stage (idempotent per name), owned by the module (so it moves with it, is saved in its
    checkpoints and is summed across processes by torchmetrics); the module resets it at the
    start of each validation/test epoch and calls ``state.update(preds, target, ids)`` once per
    batch with the count state's inputs (``ids`` None when the batches carry none). Loading a
    checkpoint tolerates plugin states that either side lacks.
    """

    def add_eval_state(self, name: str, factory: Callable[[], Metric]) -> None:
        """Register the plugin state ``name``: one ``factory()`` per stage."""
        ...

    def eval_state(self, stage: str, name: str) -> Metric:
        """The plugin state ``name`` of ``stage``."""
        ...


class EvalStepOutput(TypedDict):
    """One evaluation batch as ``validation_step`` / ``test_step`` return it.

    ``preds`` (B, C): the scores exactly as the stage's count state takes them (logits or
    probabilities, per ``count_state(stage).input``); ``target`` (B,): the class indices;
    ``ids`` (B,): each sample's index in its split, None when the batch carries none.
    """

    preds: Tensor
    target: Tensor
    ids: Tensor | None


_MEMBERS = ("class_names", "train_counts", "count_state", "bootstrap_state")


@dataclass(frozen=True)
class EvalInputs:
    """What a plugin's state is updated with, as the stage's count state takes it: ``C``
    classes, ``input`` ("logits": softmax them for probabilities; or "probs") and the
    ``ignore_index`` target left out (None: none)."""

    num_classes: int
    input: str
    ignore_index: int | None


def eval_inputs(model: EvaluatedModel) -> EvalInputs:
    """The :class:`EvalInputs` of ``model``'s count states."""
    counts = model.count_state("val")
    return EvalInputs(len(model.class_names), counts.input, counts.ignore_index)


def evaluated_model(module: object) -> EvaluatedModel:
    """``module`` as an :class:`EvaluatedModel`.

    Raises:
        TypeError: ``module`` lacks a member of the contract (the message names them).
    """
    if isinstance(module, EvaluatedModel):
        return module
    missing = ", ".join(name for name in _MEMBERS if not hasattr(module, name))
    raise TypeError(
        f"{type(module).__name__} does not implement imblab.callbacks.contract.EvaluatedModel "
        f"(missing: {missing}): imblab's metric callbacks read the per-stage count states, "
        "class names and training class counts from the model; for a LightningModule of your "
        "own, pass them to imblab.callbacks.PerClassMetrics(num_classes, metrics=[...]) "
        "instead of adding them to the Trainer"
    )


def stateful_model(module: object) -> StatefulModel:
    """``module`` as a :class:`StatefulModel`.

    Raises:
        TypeError: ``module`` lacks a member of the contract (the message names them).
    """
    if isinstance(module, StatefulModel):
        return module
    evaluated_model(module)
    missing = ", ".join(n for n in ("add_eval_state", "eval_state") if not hasattr(module, n))
    raise TypeError(
        f"{type(module).__name__} does not implement imblab.callbacks.contract.StatefulModel "
        f"(missing: {missing}): a metric plugin with its own state registers it on the model; "
        "see imblab.models.classifier.Classifier"
    )


def eval_step_output(outputs: object, hook: str) -> EvalStepOutput:
    """``outputs``, what ``hook`` (e.g. ``"validation_step"``) returned, as an
    :class:`EvalStepOutput`.

    Raises:
        TypeError: ``outputs`` is not a mapping with the keys ``preds``, ``target`` and ``ids``.
    """
    if not isinstance(outputs, Mapping) or not EvalStepOutput.__required_keys__ <= set(outputs):
        shown = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
        raise TypeError(
            f"{hook} returned {shown}: imblab's prediction recorder reads a dict with the keys "
            "preds, target and ids (imblab.callbacks.contract.EvalStepOutput)"
        )
    return cast(EvalStepOutput, outputs)
