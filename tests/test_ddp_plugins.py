"""The calibration and top-k plugins under Lightning DDP (CPU, gloo, 2 and 3 processes, N
divisible by neither): every logged value equals the single-process run."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import run_script

SCRIPT = Path(__file__).parent / "ddp" / "plugins.py"
N, C = 1001, 5


def run(devices: int, tmp_path: Path) -> dict:
    out = tmp_path / f"plugins_{devices}.json"
    run_script(SCRIPT, str(devices), str(out), str(N), str(C), cwd=tmp_path)
    return json.loads(out.read_text())


def test_ddp_plugin_values_equal_single_process(tmp_path: Path) -> None:
    single = run(1, tmp_path)
    assert single["total"] == N
    expected = {"val/ece", "val/classwise_ece", "val/top1_accuracy", "val/top3_accuracy"}
    assert expected <= single["logged"].keys()
    for world in (2, 3):
        multi = run(world, tmp_path)
        assert multi["world_size"] == world
        assert multi["total"] == N and multi["bins"] == single["bins"]
        assert multi["logged"].keys() == single["logged"].keys()
        for key, value in single["logged"].items():
            got = multi["logged"][key]
            # top-k and bin counts are integer sums (exact); the ECEs sum float64 confidences,
            # in another order per process
            tol = 1e-12 if "ece" in key else (1e-6 if key == "val/loss" else 0.0)
            assert abs(got - value) <= tol, (world, key, value, got)
