"""Class names in any script and of any length: figures draw them with an installed font that
has their glyphs (one warning per process when none has), long names are shortened with an
ellipsis in figures and printed tables (files keep them whole), and no console line of the
summary or the ``final:`` record is wider than the terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen
from matplotlib import font_manager
from rich.cells import cell_len

from imblab import plots
from imblab.console import (
    CLASS_WIDTH,
    FIT_TERMINAL,
    RunSummary,
    TerminalFormatter,
    fit_console_logs,
    print_summary,
    shorten,
)
from imblab.metrics.counts import Counts, CountState
from imblab.reports.figures import write_figures

from .conftest import FAST
from .image_folder.conftest import write_folder

LONG = "long_name_" + "x" * 106 + "_end"  # 120 characters
NAMES = ["猫", "犬 ねこ", "🐱 cat", LONG, "plain", "Ünïcødé", "кошка", "القط"]


def counts_of(c: int, n: int = 30) -> Counts:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(c).repeat_interleave(n)
    logits = torch.randn(len(y), c, generator=g)
    logits[torch.arange(len(y)), y] += 2.0
    state = CountState(c, thresholds=None)
    state.update(logits, y)
    return state.compute()


@pytest.mark.parametrize(
    ("name", "width", "expected"),
    [
        ("cat", 24, "cat"),
        ("a  b\nc", 24, "a b c"),
        ("abcdefghijklmnopqrstuvwxyz", 10, "abcdef…xyz"),
        ("猫猫猫猫猫猫猫猫猫猫", 10, "猫猫猫…猫"),  # wide characters count two cells
    ],
)
def test_shorten_keeps_head_and_tail_within_the_width(name: str, width: int, expected: str):
    assert shorten(name, width) == expected
    assert cell_len(shorten(name, width)) <= width


def test_summary_shortens_long_names_and_fits_80_columns() -> None:
    scores = {}
    for name in NAMES:
        for metric, v in (("precision", 0.5), ("recall", 0.25), ("f1", 1 / 3), ("support", 30)):
            scores[f"test/{metric}/{name}"] = v
    scores["test/f1_macro"] = 1 / 3
    summary = RunSummary("/tmp/run", NAMES, [100] * 8, scores, {"test": "test"})
    out = io.StringIO()
    print_summary(summary, file=out)
    lines = out.getvalue().splitlines()
    assert max(cell_len(line) for line in lines) <= 80, out.getvalue()
    row = next(line for line in lines if "…" in line)
    assert shorten(LONG, CLASS_WIDTH) in row and row.split()[0].startswith("long_name_")
    assert row.split()[0].endswith("_end")
    assert any(line.split()[:2] == ["🐱", "cat"] for line in lines)


def test_the_console_cuts_a_marked_record_to_the_terminal_and_the_file_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # stdout is no terminal here: COLUMNS is its width
    logger = logging.getLogger("imblab.test_fit_terminal")
    monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(logger, "level", logging.INFO)
    logfile = tmp_path / "train.log"
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    stream_handler = logging.StreamHandler(sys.stdout)  # as Hydra's console handler
    file_handler = logging.FileHandler(logfile)
    for handler in (stream_handler, file_handler):
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    try:
        fit_console_logs(logger)
        fit_console_logs(logger)  # idempotent
        assert isinstance(stream_handler.formatter, TerminalFormatter)
        assert stream_handler.formatter.inner is fmt and file_handler.formatter is fmt
        final = ", ".join(f"val/metric_{i}={i / 100:.4f}" for i in range(40))
        logger.info("final: %s", final, extra=FIT_TERMINAL)
        logger.info("run dir: /a/very/long/path/" + "p" * 80)
    finally:
        for handler in (stream_handler, file_handler):
            logger.removeHandler(handler)
            handler.close()
    shown = capsys.readouterr().out.splitlines()
    assert len(shown[0]) <= 100 and shown[0].endswith(", …") and "final: val/metric_0=" in shown[0]
    assert shown[1].endswith("p" * 80)  # unmarked records stay whole (paths stay copyable)
    assert final in logfile.read_text()


def test_figures_shorten_long_names_and_keep_their_layout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counts = counts_of(len(NAMES))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figures = {
            "matrix": plots.confusion_matrix_figure(counts.confmat.numpy(), NAMES),
            "bars": plots.class_bars_figure(counts, NAMES),
            "roc": plots.roc_figure(counts, NAMES),
            "history": plots.class_history_figure([0, 1], np.full((2, 8), 0.5), NAMES, "F1"),
        }
        for name, fig in figures.items():
            fig.savefig(tmp_path / f"{name}.png")
    layout = [w for w in caught if "constrained_layout not applied" in str(w.message)]
    assert not layout, layout[0].message
    matrix = figures["matrix"].axes[0]
    ticks = [t.get_text() for t in matrix.get_yticklabels()]
    assert shorten(LONG, plots.MAX_LABEL) in ticks and LONG not in ticks
    legend = [t.get_text() for t in figures["roc"].legends[0].get_texts()]
    assert any(t.startswith(shorten(LONG, plots.MAX_LABEL) + " ") for t in legend)
    # the legend fits the figure's width
    renderer = figures["roc"].canvas.get_renderer()  # type: ignore[attr-defined]
    box = figures["roc"].legends[0].get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= figures["roc"].bbox.width


@pytest.fixture
def only_dejavu(monkeypatch: pytest.MonkeyPatch) -> None:
    """No font with CJK glyphs installed (whatever this machine has), warning state fresh."""
    kept = [e for e in font_manager.fontManager.ttflist if e.name.startswith("DejaVu")]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", kept)
    monkeypatch.setattr(plots, "_warned_missing", [])
    plots.font_fallbacks.cache_clear()
    yield
    plots.font_fallbacks.cache_clear()


def test_glyphs_no_font_has_give_one_warning_per_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, only_dejavu: None
) -> None:
    counts = counts_of(len(NAMES))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        for i in range(2):  # e.g. two epochs' figures: eight figures in all
            write_figures(tmp_path / str(i), counts, NAMES, "val", f"epoch {i}")
    glyphs = [w for w in caught if "missing from font" in str(w.message)]
    assert not glyphs, glyphs[0].message
    ours = [r for r in caplog.records if "no installed font draws" in r.getMessage()]
    assert len(ours) == 1
    assert all(c in ours[0].getMessage() for c in "猫犬ねこ")


def glyph_font(path: Path, family: str, chars: str) -> Path:
    """A TrueType font ``family`` whose only glyphs are a triangle for each of ``chars``."""
    names = [".notdef"] + [f"uni{ord(c):04X}" for c in chars]
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder(names)
    builder.setupCharacterMap({ord(c): f"uni{ord(c):04X}" for c in chars})
    glyphs = {}
    for name in names:
        pen = TTGlyphPen(None)
        if name != ".notdef":
            pen.moveTo((100, 0))
            pen.lineTo((500, 700))
            pen.lineTo((900, 0))
            pen.closePath()
        glyphs[name] = pen.glyph()
    builder.setupGlyf(glyphs)
    builder.setupHorizontalMetrics({name: (1000, 0) for name in names})
    builder.setupHorizontalHeader(ascent=800, descent=-200)
    builder.setupNameTable({"familyName": family, "styleName": "Regular"})
    builder.setupOS2(sTypoAscender=800, usWinAscent=800, usWinDescent=200)
    builder.setupPost()
    builder.save(str(path))
    return path


def test_an_installed_font_with_the_glyphs_draws_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, only_dejavu: None
) -> None:
    font = glyph_font(tmp_path / "cjk.ttf", "Imblab Test CJK", "猫犬ねこ")
    font_manager.fontManager.addfont(str(font))  # into the patched list: undone after the test
    names = ["猫", "犬 ねこ", "dog"]
    counts = counts_of(3)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        fig = plots.confusion_matrix_figure(counts.confmat.numpy(), names)
        fig.savefig(tmp_path / "matrix.png")
    assert not [w for w in caught if "missing from font" in str(w.message)]
    assert not [r for r in caplog.records if "no installed font" in r.getMessage()]
    label = fig.axes[0].get_yticklabels()[0]
    assert label.get_text() == "猫" and "Imblab Test CJK" in label.get_fontfamily()


@pytest.mark.slow
def test_imblab_train_with_names_in_any_script(tmp_path: Path) -> None:
    """A run on folders named in CJK, emoji and 120 characters: the console's final line fits
    80 columns, at most one font warning, the log file and metrics.json keep everything."""
    names = ["猫", "🐱 cat", LONG]
    write_folder(tmp_path / "images", dict.fromkeys(names, 12), size=16)
    run = tmp_path / "run"
    overrides = [o for o in FAST if not o.startswith("data.")]
    env = {**os.environ, "COLUMNS": "80", "PYTHONWARNINGS": "default"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "imblab.train",
            *overrides,
            "data=image_folder",
            f"data.root={tmp_path / 'images'}",
            "data.image_size=16",
            f"hydra.run.dir={run}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    final = [line for line in console.splitlines() if "final: " in line]
    assert len(final) == 1 and cell_len(final[0]) <= 80, final
    assert console.count("missing from font") == 0
    assert console.count("no installed font draws") <= 1
    assert "constrained_layout not applied" not in console
    logged = (run / "train.log").read_text()
    record = json.loads((run / "metrics.json").read_text())
    assert f"test/f1/{LONG}" in record["metrics"]
    whole = next(line for line in logged.splitlines() if "final: " in line)
    assert len(whole) > 80 and not whole.endswith("…") and "val/f1_macro=" in whole
    assert final[0].endswith(" …")  # cut to the terminal
