"""Run ``imblab-scrape``'s Hydra ``main`` in-process, as the command line would."""

from __future__ import annotations

import logging
import sys

import pytest
from hydra.core.global_hydra import GlobalHydra

from imblab.scrape.cli import main


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int | str | None:
    """The exit code of ``imblab-scrape ARGV`` (which must exit), with Hydra's global state and
    its logging handlers undone afterwards."""
    monkeypatch.setattr(sys, "argv", ["imblab-scrape", *argv])
    root_logger = logging.getLogger()
    handlers, level = root_logger.handlers[:], root_logger.level
    GlobalHydra.instance().clear()
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:  # undo Hydra's logging setup
        GlobalHydra.instance().clear()
        for handler in set(root_logger.handlers) - set(handlers):
            root_logger.removeHandler(handler)
            handler.close()
        root_logger.setLevel(level)
    return exit_info.value.code
