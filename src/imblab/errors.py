"""Errors imblab raises for bad input, each with a one-line message naming the key and the fix."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value or input file is wrong; raised before training starts.

    The message is one line: ``<config key>=<value>: <what is wrong>; <how to fix it>``.
    """


def config_error(key: str, value: object, what: str, fix: str) -> ConfigError:
    """The one-line ``<key>=<value>: <what>; <fix>`` error, ``value`` shown as its repr with
    whitespace collapsed (so a list or tensor keeps the message on one line)."""
    shown = " ".join(repr(value).split())
    return ConfigError(f"{key}={shown}: {what}; {fix}")
