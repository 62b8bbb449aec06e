"""First vs second training epoch on an image folder, with the decoded-image cache on and off.

A folder of ``--images`` JPEGs (``--side`` x ``--side`` pixels, two classes) is generated, and
validated once beforehand (the verdict cache is then warm, so every timed setup skips
validation). Then, in this one process, ``imblab-train``'s real path (composed Hydra config with
``data=image_folder``, the datamodule, the default small CNN at ``--width`` (8: a model this
cheap leaves the data pipeline as what is timed, as a GPU would), the Lightning Trainer;
validation, logging and callbacks off) trains ``--epochs`` epochs with

- ``data.cache=memory``: ``setup`` decodes every file once (``--workers`` processes) into uint8
  tensors; every epoch then draws batches from them. Its *first epoch* is counted as setup +
  epoch 1, since the decoding it skips later happens there;
- ``data.cache=none``: each epoch decodes its batches in ``--workers`` DataLoader workers;
- ``data.cache=disk``: as ``memory``, and the decoded tensors are written to a file (the cache
  directory is emptied first);
- ``disk (warm)``: the same with that file already written, i.e. the setup of a later run.

Each mode runs ``--rounds`` times, alternating; the best (smallest) setup and epoch times are
kept, as single runs on a shared machine are noisy. It prints the seconds of setup and of each
epoch, the ratio first / second epoch of each mode (the cache's speed-up of every epoch after
the first) and, after training, one pass over the training batches with the on-device transform
but no model (what the data pipeline alone costs per epoch).

    python tests/benchmarks/bench_image_cache.py [--images 1000] [--side 512] [--size 64]
        [--epochs 3] [--workers 2] [--width 8] [--rounds 2]
    pytest -m benchmark tests/benchmarks/bench_image_cache.py -s      # small smoke run
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, open_dict
from PIL import Image

from imblab.data.images import validate_folder
from imblab.pipelines.training import build_datamodule, build_model, build_trainer


def write_folder(root: Path, images: int, side: int) -> None:
    """``images`` JPEGs (quality 90) in ``root/a`` (3/4) and ``root/b`` (1/4): a smooth colour
    gradient plus noise, unique per file, about the size of a scraped thumbnail."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 180, side, dtype=np.float32)
    base = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], ramp[None, ::-1]), -1)
    for i in range(images):
        name = "a" if i % 4 else "b"
        (root / name).mkdir(parents=True, exist_ok=True)
        pixels = base + rng.integers(0, 60, (side, side, 3))
        buf = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        (root / name / f"{i:06d}.jpg").write_bytes(buf.getvalue())


class EpochTimer(Callback):
    """Wall-clock seconds of each training epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def config(root: Path, out: Path, overrides: Sequence[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="imblab.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "data=image_folder",
                f"data.root={root}",
                f"paths.data_dir={out}/data",
                "trainer.accelerator=cpu",
                "++trainer.limit_val_batches=0",
                "++trainer.enable_checkpointing=false",
                "test=false",
                "logger=none",
                "callbacks=none",
                "metrics=none",
                *overrides,
            ],
        )
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def loader_epoch(datamodule: Any) -> float:
    """Seconds of one pass over the training batches with the training transform, no model."""
    start = time.perf_counter()
    for x, _ in datamodule.train_dataloader():
        datamodule.transform(x, train=True)
    return time.perf_counter() - start


def timed_run(root: Path, out: Path, overrides: Sequence[str]) -> tuple[float, list[float], float]:
    """(setup seconds, seconds of each training epoch, seconds of a batches-only pass) of one
    training run."""
    cfg = config(root, out, overrides)
    torch.manual_seed(0)
    start = time.perf_counter()
    datamodule = build_datamodule(cfg)
    setup = time.perf_counter() - start
    model = build_model(cfg, datamodule)
    timer = EpochTimer()
    trainer = build_trainer(
        cfg,
        callbacks=[timer],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    return setup, timer.seconds, loader_epoch(datamodule)


MODES = ("memory", "none", "disk", "disk (warm)")


def run(
    images: int, side: int, size: int, epochs: int, workers: int, width: int, rounds: int
) -> dict[str, float]:
    """Print and return the first / second epoch ratio of each mode (best of ``rounds``)."""
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "images", Path(tmp) / "out"
        t = time.perf_counter()
        write_folder(root, images, side)
        print(f"wrote {images} JPEGs of {side}x{side} in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        validate_folder(root, workers=workers)
        print(f"validated them (full decode, {workers} workers) in {time.perf_counter() - t:.1f} s")
        common = [
            f"data.image_size={size}",
            f"data.num_workers={workers}",
            f"trainer.max_epochs={epochs}",
            f"model.backbone.width={width}",
        ]
        print(
            f"training image_size={size}, batch 64, small CNN of width {width}, "
            f"{torch.get_num_threads()} torch threads, best of {rounds} rounds"
        )
        best: dict[str, tuple[float, list[float], float]] = {}
        for _ in range(rounds):
            for mode in MODES:
                if mode == "disk":  # a cold disk cache: decode and write
                    shutil.rmtree(out / "data" / "image_cache", ignore_errors=True)
                setup, seconds, loader = timed_run(
                    root, out, [*common, f"data.cache={mode.split()[0]}"]
                )
                if mode in best:
                    old = best[mode]
                    seconds = [min(a, b) for a, b in zip(old[1], seconds, strict=True)]
                    setup, loader = min(old[0], setup), min(old[2], loader)
                best[mode] = setup, seconds, loader
        ratios: dict[str, float] = {}
        for mode, (setup, seconds, loader) in best.items():
            cached = mode != "none"
            first = setup + seconds[0] if cached else seconds[0]
            ratios[mode] = first / seconds[1]
            print(
                f"cache={mode:12s} setup {setup:6.2f} s, epochs "
                + ", ".join(f"{s:.2f}" for s in seconds)
                + f" s; first epoch{' (setup + epoch 1)' if cached else ''} "
                f"{first:.2f} s / second {seconds[1]:.2f} s = {ratios[mode]:.1f}x; "
                f"batches only (no model) {loader:.2f} s/epoch"
            )
        return ratios


@pytest.mark.benchmark
def test_bench_image_cache() -> None:
    """Small smoke run: 300 images."""
    ratios = run(images=300, side=128, size=32, epochs=2, workers=0, width=8, rounds=1)
    assert all(r > 0 for r in ratios.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--side", type=int, default=512, help="pixels of each JPEG's side")
    parser.add_argument("--size", type=int, default=64, help="data.image_size")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="data.num_workers")
    parser.add_argument(
        "--width", type=int, default=8, help="model.backbone.width: small, so the data is timed"
    )
    parser.add_argument("--rounds", type=int, default=2, help="best of this many runs per mode")
    args = parser.parse_args()
    run(args.images, args.side, args.size, args.epochs, args.workers, args.width, args.rounds)


if __name__ == "__main__":
    main()
