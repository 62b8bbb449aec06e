"""Many/medium/few-shot groups of classes (Liu et al. 2019, "Large-Scale Long-Tailed Recognition
in an Open World", the split long-tail papers report).

A class belongs to a group by its number of training images ``n``: ``many`` if
``n > many_above``, ``few`` if ``n < few_below``, ``medium`` otherwise (defaults 100 and 20:
medium is 20 to 100 inclusive). A group's scores are unweighted means over its classes:

- ``accuracy_<g>``: the mean recall of the group's classes (the group's top-1 accuracy on a
  balanced test set; on an imbalanced split, the group's balanced accuracy);
- ``f1_macro_<g>``: the mean F1 of the group's classes.

A NaN value is undefined and left out of its mean (the callers pass NaN for the recall of a
class without samples in the split, as ``balanced_accuracy`` leaves it out); a key with nothing
to average, an empty group's above all, is absent: never a made-up 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["GROUPS", "group_members", "group_scores", "shot_groups"]

GROUPS = ("many", "medium", "few")


def shot_groups(
    train_counts: Sequence[int], many_above: int = 100, few_below: int = 20
) -> list[str]:
    """The group of each class from its training count: ``"many"`` if ``n > many_above``,
    ``"few"`` if ``n < few_below``, else ``"medium"``.

    Raises ``ValueError`` for negative thresholds or counts, or ``few_below > many_above + 1``
    (the groups would overlap).
    """
    if many_above < 0 or few_below < 0:
        raise ValueError(
            f"thresholds must be >= 0, got many_above={many_above}, few_below={few_below}"
        )
    if few_below > many_above + 1:
        raise ValueError(
            f"few_below={few_below} > many_above + 1 = {many_above + 1}: the groups would overlap"
        )
    n = np.asarray(train_counts, dtype=np.int64).reshape(-1)
    if (n < 0).any():
        raise ValueError(f"training counts must be >= 0, got {n.tolist()}")
    out = np.where(n > many_above, "many", np.where(n < few_below, "few", "medium"))
    return [str(g) for g in out]


def group_scores(
    recall: Sequence[float] | np.ndarray,
    f1: Sequence[float] | np.ndarray,
    groups: Sequence[str],
) -> dict[str, float]:
    """``{"accuracy_<g>": mean recall, "f1_macro_<g>": mean F1}`` over the classes of each
    group ``g`` (in :data:`GROUPS` order), NaN values left out; a key with no defined value (an
    empty group) is absent.

    ``recall``, ``f1`` and ``groups`` are per class, of one length; an unknown group name raises
    ``ValueError``.
    """
    r = np.asarray(recall, dtype=np.float64).reshape(-1)
    f = np.asarray(f1, dtype=np.float64).reshape(-1)
    g = np.asarray(groups, dtype=object).reshape(-1)
    if not len(r) == len(f) == len(g):
        raise ValueError(f"recall, f1 and groups differ in length: {len(r)}, {len(f)}, {len(g)}")
    unknown = set(g.tolist()) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown group names {sorted(unknown)}; expected {GROUPS}")
    out: dict[str, float] = {}
    for name in GROUPS:
        member = g == name
        for key, values in (("accuracy", r[member]), ("f1_macro", f[member])):
            defined = values[~np.isnan(values)]
            if defined.size:
                out[f"{key}_{name}"] = float(defined.mean())
    return out


def group_members(groups: Sequence[str], class_names: Sequence[str]) -> dict[str, list[str]]:
    """``{group: [class names]}`` for every group of :data:`GROUPS` (empty ones too), classes in
    index order."""
    if len(groups) != len(class_names):
        raise ValueError(f"{len(groups)} groups for {len(class_names)} class names")
    return {g: [n for n, m in zip(class_names, groups, strict=True) if m == g] for g in GROUPS}
