"""Scalar metric callbacks: the classification report's scalars, the many/medium/few-shot
group scores, and the two-class scores."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Trainer

from imblab.callbacks.base import (
    MetricCallback,
    ScalarMetric,
    builtin_directions,
    empty_counts,
    publish_scalars,
)
from imblab.callbacks.contract import EvaluatedModel
from imblab.errors import config_error
from imblab.metrics.counts import Counts
from imblab.metrics.functional import binary_scores, per_class_prf, summarize, worst_classes
from imblab.metrics.groups import GROUPS, group_members, group_scores, shot_groups
from imblab.tensorboard import epoch_step, rank_zero_writer

__all__ = ["BinaryScores", "ClassificationScalars", "binary_scalars", "worst_classes_table"]

_KEY = "metrics.scalars"


class ClassificationScalars(ScalarMetric):
    """Precision, recall and F-beta (per class, macro, micro, weighted), accuracy, balanced
    accuracy, AUROC and AP (per class, macro, weighted), and per class the one-vs-rest accuracy
    and specificity: the keys of :func:`~imblab.metrics.functional.summarize` (``one_vs_rest``);
    plus, when the class sizes are known (:func:`group_sizes`: the long-tailed subset's, else
    the model's training counts), the many/medium/few-shot group scores
    ``accuracy_<group>`` and ``f1_macro_<group>`` (:mod:`~imblab.metrics.groups`; the
    recall of a class without samples in the split and the F1 of a class neither in its targets
    nor predicted are undefined and left out; a group with nothing defined logs nothing).

    With more than ``per_class_max_classes`` classes the per-class values still reach
    ``trainer.callback_metrics`` (so ``metrics.json``) but not the loggers: TensorBoard gets the
    averages, the group scores and, on rank 0, the text table ``<stage>/worst_classes`` of the
    ``worst_k`` classes with the lowest F1 and with the lowest recall.

    Args:
        betas: the F-beta scores to log (``f0.5_*``, ``f1_*``, ``f2_*``).
        zero_division: value of an undefined precision, recall or F (0, 1 or nan).
        per_class: also log ``<stage>/<metric>/<class_name>`` for every class.
        many_above: a class with more training samples is ``many``-shot.
        few_below: a class with fewer training samples is ``few``-shot (else ``medium``).
        per_class_max_classes: above this many classes, per-class values skip the loggers.
        worst_k: classes in each worst-classes table.
    """

    per_class_max_classes: int

    def __init__(
        self,
        betas: Sequence[float] = (0.5, 1.0, 2.0),
        zero_division: float = 0.0,
        per_class: bool = True,
        stages: Sequence[str] = ("val", "test"),
        many_above: int = 100,
        few_below: int = 20,
        per_class_max_classes: int = 100,
        worst_k: int = 10,
    ) -> None:
        super().__init__(stages=stages)
        for key, value in (("many_above", many_above), ("few_below", few_below)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise config_error(f"{_KEY}.{key}", value, "not an int >= 0", "use e.g. 100 / 20")
        if few_below > many_above + 1:
            raise config_error(
                f"{_KEY}.few_below",
                few_below,
                f"above many_above + 1 = {many_above + 1}: the groups would overlap",
                "use few_below <= many_above (the standard split: many_above=100, few_below=20)",
            )
        for key, value in (("per_class_max_classes", per_class_max_classes), ("worst_k", worst_k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise config_error(f"{_KEY}.{key}", value, "not an int >= 1", "use e.g. 100 / 10")
        self.betas = tuple(float(b) for b in betas)
        self.zero_division = float(zero_division)
        self.per_class = per_class
        self.many_above = many_above
        self.few_below = few_below
        self.per_class_max_classes = per_class_max_classes
        self.worst_k = worst_k

    def scalars(self, counts: Counts, class_names: list[str]) -> dict[str, float]:
        values = summarize(
            counts,
            betas=self.betas,
            zero_division=self.zero_division,
            class_names=class_names,
            one_vs_rest=True,
        )
        if not self.per_class:
            values = {k: v for k, v in values.items() if "/" not in k}
        return values

    def tags(
        self, stage: str, class_names: Sequence[str], train_counts: Sequence[int] = ()
    ) -> list[str]:
        """The summary tags, and ``<stage>/accuracy_<group>`` / ``f1_macro_<group>`` of every
        group the training counts fill."""
        tags = super().tags(stage, class_names, train_counts)
        if tags:
            for group in dict.fromkeys(self.groups(train_counts)):
                tags += [f"{stage}/accuracy_{group}", f"{stage}/f1_macro_{group}"]
        return tags

    def directions(self, stage: str, class_names: Sequence[str]) -> dict[str, bool]:
        """The direction of every tag it may publish (the group scores of all three groups
        included), from imblab's table (:mod:`imblab.metrics.directions`)."""
        tags = self.tags(stage, class_names)
        if tags:
            tags += [f"{stage}/{m}_{g}" for m in ("accuracy", "f1_macro") for g in GROUPS]
        return builtin_directions(tags)

    def groups(self, train_counts: Sequence[int]) -> list[str]:
        """The shot group of every class (empty when the training counts are unknown)."""
        if not train_counts:
            return []
        return shot_groups(train_counts, self.many_above, self.few_below)

    def group_record(
        self, class_names: Sequence[str], train_counts: Sequence[int]
    ) -> dict[str, Any] | None:
        """What ``metrics.json`` records of the groups: the thresholds and each group's class
        names (None when the training counts are unknown)."""
        groups = self.groups(train_counts)
        if not groups:
            return None
        return {
            "many_above": self.many_above,
            "few_below": self.few_below,
            "classes": group_members(groups, list(class_names)),
        }

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        model: EvaluatedModel,
    ) -> None:
        values = {f"{stage}/{k}": float(v) for k, v in self.scalars(counts, class_names).items()}
        precision, recall, f1, support = per_class_prf(counts.confmat, 1.0, self.zero_division)
        groups = self.groups(group_sizes(trainer, model))
        if groups:
            present = support > 0
            in_split = present | (counts.confmat.sum(dim=0) > 0)
            scores = group_scores(
                torch.where(present, recall, math.nan).numpy(),
                torch.where(in_split, f1, math.nan).numpy(),
                groups,
            )
            values.update({f"{stage}/{k}": v for k, v in scores.items()})
        # many classes: every value for callback_metrics (metrics.json), no per-class logger tag
        self.publish(trainer, values, class_names)
        if counts.num_classes <= self.per_class_max_classes:
            return
        writer = rank_zero_writer(trainer)
        if writer is not None:
            table = worst_classes_table(
                class_names,
                precision.numpy(),
                recall.numpy(),
                f1.numpy(),
                support.numpy(),
                groups,
                self.worst_k,
            )
            writer.add_text(f"{stage}/worst_classes", table, global_step=epoch_step(trainer))


def group_sizes(trainer: Trainer, model: EvaluatedModel) -> Sequence[int]:
    """The class sizes the shot groups are read from: the datamodule's long-tailed subset
    (``subset_counts``, before validation was taken from it) when it has one, else the model's
    training counts."""
    sizes = getattr(getattr(trainer, "datamodule", None), "subset_counts", None)
    return list(sizes) if sizes else model.train_counts


def worst_classes_table(
    class_names: Sequence[str],
    precision: np.ndarray,
    recall: np.ndarray,
    f1: np.ndarray,
    support: np.ndarray,
    groups: Sequence[str],
    k: int,
) -> str:
    """Markdown: the ``k`` classes with the lowest F1, then the ``k`` with the lowest recall,
    among the classes with samples in the split
    (:func:`~imblab.metrics.functional.worst_classes`; ties: lower class index first; an
    undefined score, e.g. F1 with ``zero_division=nan``, after the defined ones)."""
    present = np.flatnonzero(support > 0)
    header = "| rank | class | group | F1 | recall | precision | support |\n" + "|---" * 7 + "|"
    parts = []
    for title, key in (("lowest F1", f1), ("lowest recall", recall)):
        order = worst_classes(key, k, among=present, nan_first=False)
        rows = [
            f"| {rank} | {class_names[i]} | {groups[i] if groups else '-'} | {f1[i]:.4f} "
            f"| {recall[i]:.4f} | {precision[i]:.4f} | {int(support[i])} |"
            for rank, i in enumerate(order, start=1)
        ]
        parts.append(
            "\n".join([f"**{title}** ({len(present)} classes with samples)", "", header, *rows])
        )
    return "\n\n".join(parts)


def binary_scalars(
    counts: Counts,
    threshold: float,
    betas: Sequence[float],
    zero_division: float,
    prefix: str = "binary",
) -> dict[str, float]:
    """``<prefix>/threshold`` and, for each beta, ``<prefix>/{precision,recall,f<beta>}`` of the
    positive class (index 1) predicted iff its probability is ``>= threshold``
    (:func:`~imblab.metrics.functional.binary_scores`)."""
    values: dict[str, float] = {f"{prefix}/threshold": threshold}
    for beta in betas:
        scores = binary_scores(counts, threshold, beta, zero_division)
        values.update({f"{prefix}/{k}": v for k, v in scores.items()})
    return values


class BinaryScores(MetricCallback):
    """Two-class tasks: precision, recall and F-beta of the positive class (index 1) when its
    probability is >= the count state's ``binary_threshold``; logged as
    ``<stage>/binary/<name>`` (:func:`binary_scalars`). Does nothing for more than two classes
    (so it can stay in the default metric set).

    Args:
        betas: the F-beta scores to log.
        zero_division: value of an undefined precision, recall or F (0, 1 or nan).
    """

    def __init__(
        self,
        betas: Sequence[float] = (0.5, 1.0, 2.0),
        zero_division: float = 0.0,
        stages: Sequence[str] = ("val", "test"),
    ) -> None:
        super().__init__(stages=stages)
        self.betas = tuple(float(b) for b in betas)
        self.zero_division = float(zero_division)

    def log_counts(
        self,
        stage: str,
        counts: Counts,
        class_names: list[str],
        trainer: Trainer,
        model: EvaluatedModel,
    ) -> None:
        if counts.num_classes != 2:
            return
        threshold = float(model.count_state(stage).binary_threshold)
        values = binary_scalars(counts, threshold, self.betas, self.zero_division)
        publish_scalars(trainer, {f"{stage}/{k}": v for k, v in values.items()})

    def tags(
        self, stage: str, class_names: Sequence[str], train_counts: Sequence[int] = ()
    ) -> list[str]:
        if stage not in self.stages or len(class_names) != 2:
            return []
        keys = binary_scalars(empty_counts(2), 0.5, self.betas, self.zero_division)
        return [f"{stage}/{k}" for k in keys]

    def directions(self, stage: str, class_names: Sequence[str]) -> dict[str, bool]:
        """From imblab's table (:mod:`imblab.metrics.directions`; the threshold has none)."""
        return builtin_directions(self.tags(stage, class_names))
