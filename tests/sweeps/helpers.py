"""Running `imblab-train -m` sweeps from the tests: tiny jobs on the bundled MNIST sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# a sweep job of a few seconds: two training batches, one validation and one test batch
TINY = [
    "data.source=sample",
    "data.mirrors=[http://127.0.0.1:9/]",
    "data.batch_size=16",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "callbacks.rich_progress_bar=null",
]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def sweep_command(sweep_dir: Path, *args: str) -> list[str]:
    """`imblab-train -m` over TINY jobs into ``sweep_dir`` (data cached next to it)."""
    return [
        sys.executable,
        "-m",
        "imblab.train",
        "-m",
        *TINY,
        f"paths.data_dir={sweep_dir.parent / 'data'}",
        f"hydra.sweep.dir={sweep_dir}",
        *args,
    ]


def run_sweep(sweep_dir: Path, *args: str, timeout: int = 400) -> subprocess.CompletedProcess[str]:
    """Run a sweep to its end; fail with the tail of its output if it fails."""
    proc = subprocess.run(
        sweep_command(sweep_dir, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
        cwd=sweep_dir.parent,
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    return proc


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job dirs of a sweep (each has the .hydra dir Hydra writes), by job number."""
    dirs = [p.parent for p in sweep_dir.glob("*/.hydra")]
    return sorted(dirs, key=lambda p: int(p.name.split("_")[0]))


def status(job_dir: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((job_dir / "status.json").read_text())
    return record
