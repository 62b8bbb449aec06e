"""The configs ship inside the package: an installed wheel finds them as pkg://imblab.conf from
any directory, exactly as the editable install does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_every_config_and_composes_from_elsewhere(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("imblab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"imblab/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")
    }
    assert shipped and shipped <= names, shipped - names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "imblab.train",
            "experiment=mnist_binary",
            "--cfg",
            "job",
            "--resolve",
        ],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "positive_classes:\n  - 7" in proc.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import imblab; print(imblab.__file__)"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        check=True,
    )
    assert where.stdout.startswith(str(site))


def test_console_script_is_installed() -> None:
    exe = shutil.which("imblab-train") or str(Path(sys.executable).parent / "imblab-train")
    proc = subprocess.run(
        [exe, "--cfg", "job", "seed=3"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "seed: 3" in proc.stdout and "monitor:" in proc.stdout
