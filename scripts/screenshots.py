r"""Screenshot TensorBoard's dashboards of a run or a sweep with headless Chromium (for the docs).

    python scripts/screenshots.py RUN_DIR [--out docs/images]
    python scripts/screenshots.py SWEEP_DIR --prefix sweep --compare \
        --dashboards hparams custom_scalars scalars

Starts ``tensorboard`` on 127.0.0.1 over the ``tensorboard/`` folder of RUN_DIR (the logdir
``imblab-train`` prints; a sweep dir holds every job's), waits until its runs are loaded, then
saves one PNG per dashboard (``--dashboards``; default all: scalars, images, PR curves, HParams
and custom scalars) as ``<prefix>_<dashboard>.png``. ``--compare`` also writes
``imblab-compare SWEEP_DIR --group-seeds``'s figure as ``<prefix>_compare.png``. Needs Chromium
(Debian: ``apt-get install chromium``). Not part of the test suite: it takes a browser and half a
minute.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# dashboard name -> URL fragment (TensorBoard keeps a dashboard's settings in the fragment):
# few epochs, so no smoothing and no outlier clipping
PLAIN = "_smoothingWeight=0&_ignoreYOutliers=false"
DASHBOARDS = {
    # ^val/(f1_macro|balanced_accuracy|loss)$|^train/loss_epoch$
    "scalars": f"scalars&{PLAIN}&tagFilter="
    "%5Eval%2F(f1_macro%7Cbalanced_accuracy%7Closs)%24%7C%5Etrain%2Floss_epoch%24",
    "images": "images&tagFilter=val%2F",
    "pr_curves": "pr_curves&tagFilter=val%2Fpr%2F%5B0-3%5D",
    "hparams": "hparams",
    "custom_scalars": f"custom_scalars&{PLAIN}",
}


def browser() -> str:
    """The Chromium executable."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("error: no chromium on PATH; install it (Debian: apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def logdir_of(path: Path) -> Path:
    """The folder TensorBoard should read: ``<run>/tensorboard`` when there is one."""
    return path / "tensorboard" if (path / "tensorboard").is_dir() else path


def wait_for_runs(
    base: str, proc: subprocess.Popen[bytes], expected: int, timeout: float = 120
) -> list[str]:
    """The runs TensorBoard serves, once it serves the scalars of ``expected`` runs (every run
    of a sweep: TensorBoard loads them one after another)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"error: tensorboard exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/data/plugin/scalars/tags", timeout=5) as r:
                tags = json.loads(r.read())
            if len(tags) >= expected and all(tags.values()):
                return sorted(tags)
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"error: tensorboard loaded no run in {timeout:.0f} s")


def screenshot(chromium: str, url: str, path: Path, width: int, height: int) -> None:
    """One PNG of ``url`` after the page had ``budget`` ms of virtual time to draw."""
    command = [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={width},{height}",
        "--virtual-time-budget=20000",
        f"--screenshot={path}",
        url,
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def compare_figure(sweep_dir: Path, path: Path) -> None:
    """``imblab-compare SWEEP_DIR --group-seeds``'s PNG, written to ``path``."""
    command = [sys.executable, "-m", "imblab.compare", str(sweep_dir), "--group-seeds"]
    command += ["--out", str(path.parent), "--name", path.stem]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    for suffix in (".md", ".csv"):  # the tables: not for the docs
        path.with_suffix(suffix).unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run dir (or its tensorboard/, or a sweep)")
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="PNG folder")
    parser.add_argument("--prefix", default="tensorboard", help="file names: <prefix>_<what>.png")
    parser.add_argument(
        "--dashboards", nargs="+", choices=sorted(DASHBOARDS), default=list(DASHBOARDS)
    )
    parser.add_argument("--compare", action="store_true", help="also imblab-compare's figure")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    chromium = browser()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logdir = logdir_of(args.run_dir)
    runs = {p.parent for p in logdir.rglob("events.out.tfevents.*")}
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        served = wait_for_runs(base, proc, len(runs))
        print(f"TensorBoard at {base}: runs {', '.join(served)}")
        args.out.mkdir(parents=True, exist_ok=True)
        for name in args.dashboards:
            path = args.out / f"{args.prefix}_{name}.png"
            screenshot(chromium, f"{base}/#{DASHBOARDS[name]}", path, args.width, args.height)
            print(f"wrote {path}")
        if args.compare:
            path = args.out / f"{args.prefix}_compare.png"
            compare_figure(args.run_dir, path)
            print(f"wrote {path}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
