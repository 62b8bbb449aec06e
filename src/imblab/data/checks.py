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
