"""Errors imblab raises for bad input, each with a one-line message naming the key and the fix."""


class ConfigError(ValueError):
    """A configuration value or input file is wrong; raised before training starts.

    The message is one line: ``<config key>=<value>: <what is wrong>; <how to fix it>``.
    """
