"""Checks of ``data.<key>`` config values shared by the datamodules: each returns the value
(converted) or raises the one-line :func:`~imblab.errors.config_error` (key, problem, fix)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from imblab.errors import ConfigError, config_error


def bad(key: str, value: object, what: str, fix: str) -> ConfigError:
    """``data.<key>=<value>: <what>; <fix>``."""
    return config_error(f"data.{key}", value, what, fix)


def real(key: str, value: object) -> float:
    """A finite number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad(key, value, "not a finite number", f"set data.{key} to a number")
    return float(value)


def integer(key: str, value: object, minimum: int) -> int:
    """An int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad(key, value, f"not an integer >= {minimum}", f"set data.{key} to one")
    return value


def boolean(key: str, value: object) -> bool:
    """true or false."""
    if not isinstance(value, bool):
        raise bad(key, value, "not a boolean", "use true or false")
    return value


def int_list(key: str, value: object) -> list[int]:
    """A non-empty list of ints."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise bad(key, value, "not a non-empty list of integers", f"set data.{key} to [..]")
    items = list(value)
    if any(isinstance(v, bool) or not isinstance(v, int) for v in items):
        raise bad(key, items, "not a list of integers", f"write data.{key} as integers")
    return items


def pair(key: str, value: object, low: float, high: float, example: str) -> tuple[float, float]:
    """``[a, b]`` with ``low < a <= b <= high``."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise bad(key, value, "not a pair [min, max]", f"e.g. data.{key}={example}")
    a, b = (real(key, v) for v in value)
    if not low < a <= b <= high:
        raise bad(key, list(value), f"needs {low} < min <= max <= {high}", f"e.g. {example}")
    return a, b


def positive_classes(profile: str, value: object, num_classes: int) -> list[int] | None:
    """``data.positive_classes`` of profile binary: the sorted, distinct indices in
    ``0 .. num_classes - 1`` of the classes that become label 1, leaving at least one out; None
    for the other profiles, which must not set it."""
    if profile != "binary":
        if value is not None:
            raise bad("positive_classes", value, f"unused by profile {profile}", "set null")
        return None
    indices = int_list("positive_classes", value)
    if any(not 0 <= c < num_classes for c in indices) or len(set(indices)) != len(indices):
        raise bad(
            "positive_classes",
            indices,
            f"must be distinct class indices in 0..{num_classes - 1}",
            "e.g. [7] or [3, 5]",
        )
    if len(indices) == num_classes:
        raise bad("positive_classes", indices, "leaves no negative class", "leave some out")
    return sorted(indices)


def class_counts(profile: str, value: object) -> list[int] | None:
    """``data.class_counts`` of profile explicit: one count >= 1 per class (their number is
    checked against the classes later); None for the other profiles, which must not set it."""
    if profile != "explicit":
        if value is not None:
            raise bad("class_counts", value, f"unused by profile {profile}", "set null")
        return None
    counts = int_list("class_counts", value)
    for c, n in enumerate(counts):
        if n < 1:
            raise bad("class_counts", counts, f"class {c} count {n} leaves it no data", "use >= 1")
    return counts
