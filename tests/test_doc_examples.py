"""The examples in the docs run: every ``python`` block of README.md and docs/*.md, a page's
blocks in order in one namespace in a fresh folder, except an excerpt marked with the line
``<!-- fragment: not run -->`` right before its fence (docs/development.md, Habits). The plugin
of docs/metrics.md also works from outside the package, as the page shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from .conftest import FAST

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FRAGMENT = "<!-- fragment: not run -->"


def python_blocks(page: Path) -> list[tuple[int, str, bool]]:
    """``(line, code, runs)`` of every ``python`` fenced block of ``page``; ``runs`` is False
    for a block marked as a fragment."""
    lines = page.read_text().splitlines()
    blocks: list[tuple[int, str, bool]] = []
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if not fence.startswith("```"):
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
        if fence == "```python":
            previous = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
            blocks.append((i + 1, "\n".join(lines[i + 1 : end]) + "\n", previous != FRAGMENT))
        i = end + 1
    return blocks


def test_fragment_markers_stand_before_python_blocks() -> None:
    """A marker that precedes anything but a python fence would skip nothing: a mistake."""
    for page in PAGES:
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() == FRAGMENT:
                following = next((x.strip() for x in lines[i + 1 :] if x.strip()), "")
                assert following == "```python", f"{page.name}:{i + 1}"


RUNNABLE = [page for page in PAGES if any(runs for _, _, runs in python_blocks(page))]


@pytest.mark.parametrize("page", RUNNABLE, ids=[p.name for p in RUNNABLE])
def test_the_python_blocks_of_a_page_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"doc_{page.stem}"}
    for line, code, runs in python_blocks(page):
        if runs:
            exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)


def test_the_own_module_example_is_run() -> None:
    """The pages with examples that matter are among those run (a renamed fence would
    silently drop them)."""
    names = {page.name for page in RUNNABLE}
    assert {"metrics.md", "data.md"} <= names
    code = "".join(c for _, c, runs in python_blocks(ROOT / "docs" / "metrics.md") if runs)
    assert "PerClassMetrics(" in code and "class Brier(StatefulMetric)" in code


def test_the_docs_plugin_works_from_outside_the_package(tmp_path: Path) -> None:
    """docs/metrics.md's Brier plugin, saved as mymodule.py on PYTHONPATH, attached with
    ``+metrics.brier._target_=mymodule.Brier`` and monitored: the mode resolves to min and is
    recorded so in .hydra/config.yaml, metrics.json and status.json; metrics.json holds the
    directions and ``test/brier`` equal to NumPy on the run's predictions.npz (float64), and
    the learning rate as set."""
    (code,) = [c for _, c, _ in python_blocks(ROOT / "docs" / "metrics.md") if "class Brier(" in c]
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "mymodule.py").write_text(code)
    run = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "imblab.train",
            *FAST,
            "+metrics.brier._target_=mymodule.Brier",
            "monitor.metric=val/brier",
            "model.optimizer.lr=0.003",
            f"paths.data_dir={tmp_path}/data",
            f"hydra.run.dir={run}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    record = json.loads((run / "metrics.json").read_text())
    status = json.loads((run / "status.json").read_text())
    assert config["monitor"] == {"metric": "val/brier", "mode": "min"}
    assert record["monitor"] == {"metric": "val/brier", "mode": "min"}
    assert status["monitor"]["mode"] == "min" and status["objective"]["mode"] == "min"
    directions = record["directions"]
    assert directions["val/brier"] is False and directions["test/brier/3"] is False
    assert directions["test/f1_macro"] is True and directions["val/recall/0"] is True
    assert directions["test/loss"] is False and directions["train/loss_epoch"] is False
    assert "test/support/0" not in directions and "test/auroc_num_defined" not in directions
    assert set(directions) <= set(record["metrics"])
    metrics = record["metrics"]
    with np.load(run / "predictions.npz") as data:
        probs, targets = data["probs"].astype(np.float64), data["targets"]
    terms = ((probs - np.eye(probs.shape[1])[targets]) ** 2).mean(axis=0)
    assert metrics["test/brier"] == pytest.approx(terms.sum(), abs=1e-12)
    assert metrics["test/brier/3"] == pytest.approx(terms[3], abs=1e-12)
    (lr,) = [v for k, v in metrics.items() if k.startswith("lr-")]
    assert lr == 0.003  # the learning rate as set, not its float32 rounding
