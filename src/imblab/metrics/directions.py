"""Which way is better for every scalar imblab's own metrics log: the static table behind
``monitor.mode: auto`` and the ``directions`` record of ``metrics.json``.

A direction is ``True`` (higher is better: F1, recall, AUROC, accuracy, ...), ``False`` (lower
is better: a loss, an ECE) or ``None`` (the scalar has none: a support, a number of defined
classes, a threshold). Keys are written without the stage (``f1_macro`` for ``val/f1_macro``);
a per-class key ``<metric>/<class name>`` takes its metric's direction, and a bootstrap bound
``<key>_lo`` / ``<key>_hi`` its key's. Metric plugins declare their own directions
(``higher_is_better`` of :class:`imblab.callbacks.stateful.StatefulMetric`); this table is only
imblab's.
"""

from __future__ import annotations

import re

__all__ = ["AVERAGED_KEYS", "BUILTIN_DIRECTIONS", "UNKNOWN", "builtin_direction", "tag_key"]

_BETA = r"f\d+(?:\.\d+)?"
_PER_CLASS = rf"(?:{_BETA}|precision|recall|auroc|ap|accuracy|specificity)"

#: (pattern of a key without the stage, direction); the first full match wins
BUILTIN_DIRECTIONS: tuple[tuple[str, bool | None], ...] = (
    # the model's own: the evaluation loss and the training means (imblab.models.classifier)
    (r"loss|loss_step|loss_epoch", False),
    # the classification report (imblab.metrics.functional.summarize)
    (r"accuracy|balanced_accuracy", True),
    (rf"(?:precision|recall|{_BETA})_(?:macro|micro|weighted)", True),
    (r"(?:auroc|ap)_(?:macro|weighted)", True),
    (r"(?:auroc|ap)_num_defined", None),
    (rf"{_PER_CLASS}/.+", True),
    (r"support/.+", None),
    # the many/medium/few-shot groups (imblab.metrics.groups)
    (r"(?:accuracy|f1_macro)_(?:many|medium|few)", True),
    # two-class scores at the default and at the tuned threshold
    (rf"binary(?:_tuned)?/(?:precision|recall|{_BETA})", True),
    (r"binary(?:_tuned)?/threshold", None),
    # the shipped plugins: MCC, calibration, top-k
    (r"mcc", True),
    (r"ece|classwise_ece", False),
    (r"top\d+_accuracy", True),
    # imblab-eval's report
    (r"logit_adjustment_tau", None),
)

#: the keys of imblab's averaged (not per-class) scalars with the default betas, for hints
AVERAGED_KEYS: tuple[str, ...] = (
    "loss",
    "accuracy",
    "balanced_accuracy",
    *(
        f"{metric}_{average}"
        for metric in ("precision", "recall", "f0.5", "f1", "f2")
        for average in ("macro", "micro", "weighted")
    ),
    *(f"{metric}_{average}" for metric in ("auroc", "ap") for average in ("macro", "weighted")),
    *(
        f"{metric}_{group}"
        for metric in ("accuracy", "f1_macro")
        for group in ("many", "medium", "few")
    ),
    "mcc",
    "ece",
    "classwise_ece",
)

_COMPILED = tuple((re.compile(pattern), better) for pattern, better in BUILTIN_DIRECTIONS)


class _Unknown:
    """The direction of a key the table does not know (not one of imblab's own)."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


def tag_key(tag: str) -> str:
    """``tag`` without its stage: ``val/f1/cat`` -> ``f1/cat``."""
    return tag.partition("/")[2]


def builtin_direction(key: str) -> bool | _Unknown | None:
    """The direction of one of imblab's own keys (without the stage): True (higher is better),
    False (lower is better), None (no direction), or :data:`UNKNOWN` for a key of no
    built-in metric."""
    for pattern, better in _COMPILED:
        if pattern.fullmatch(key):
            return better
    base, dot, bound = key.rpartition("_")
    if dot and bound in ("lo", "hi"):  # a bootstrap interval bound goes the way of its key
        inner = builtin_direction(base)
        return inner if isinstance(inner, bool) else UNKNOWN
    return UNKNOWN
