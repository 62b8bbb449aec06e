"""Training throughput of `imblab-train`'s small CNN against a bare PyTorch loop, and the cost
of the metric callbacks on a validation epoch.

Both training paths run in this one process on the same device, on the same 60,000
MNIST-shaped images (the bundled 5,000 real digits, tiled), with the same batch size (512),
model config (fresh init, same seed), optimizer (fused AdamW), precision
(``trainer.precision=auto``: bf16 autocast on a GPU with bf16), memory format
(``model.channels_last=auto``: NHWC on a GPU), uint8 data resident on the device, batches drawn by
index on the device and the same on-device normalisation and augmentation
(``MNISTDataModule.transform``). The imblab path is the real one: the composed Hydra config, the
Lightning Trainer, the default callbacks (checkpointing included), the metric callbacks and the
TensorBoard logger. Validation is switched off while training is timed.

    python tests/benchmarks/bench_train.py [--epochs 4] [--device cuda] [--train-images 60000]
        [--override model.cuda_graph=true --override model.channels_last=false ...]
    pytest -m benchmark tests/benchmarks/bench_train.py -s      # CPU smoke run, 5,000 images

It prints images/s and seconds per epoch of both paths and their ratio (targets on an
H100-class GPU: >= 200,000 images/s and >= 0.8x the bare loop), then a validation epoch over
10,000 images with and without the count updates and metric callbacks (target: their cost
<= 5% of the epoch), with the figures timed separately, and last the one-line summary for
docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, open_dict

from imblab.callbacks.base import FigureMetric, ScalarMetric
from imblab.config import instantiate, instantiate_callbacks, validate
from imblab.data import mnist_sources as mnist
from imblab.data.mnist import MNISTDataModule
from imblab.models.classifier import Classifier
from imblab.pipelines.training import (
    build_datamodule,
    build_model,
    build_trainer,
    trainer_overrides,
)

TRAIN_IMAGES, EVAL_IMAGES, BATCH = 60_000, 10_000, 512


def write_data(
    data_dir: Path, train_images: int, eval_images: int = EVAL_IMAGES, noise: bool = False
) -> None:
    """MNIST-shaped IDX files: ``train_images`` training and ``eval_images`` test images, the
    bundled 5,000 real digits in a fixed shuffled order (every class in any few hundred), tiled
    (the last copy cut short); with ``noise``, random pixels and cycling labels instead (no
    sample to parse: for smoke runs)."""
    if noise:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (5000, 1, 28, 28), dtype=torch.uint8, generator=g)
        y = torch.arange(5000) % 10
    else:
        x, y = mnist.load_sample()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        x, y = x[order], y[order]
    # uncompressed (no md5 to match): train images, train labels, test images, test labels
    names = [name.removesuffix(".gz") for name, _ in mnist.RESOURCES]
    data_dir.mkdir(parents=True, exist_ok=True)
    for images, labels, n in ((*names[:2], train_images), (*names[2:], eval_images)):
        reps = -(-n // len(y))
        mnist.write_idx(data_dir / images, np.tile(x[:, 0].numpy(), (reps, 1, 1))[:n])
        mnist.write_idx(data_dir / labels, np.tile(y.numpy().astype(np.uint8), reps)[:n])


def compose_train(out: Path, overrides: Sequence[str]) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides``, data under ``out/data`` and the run dir
    ``out``."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="imblab.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.data_dir={out}/data", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def whole_pool(cfg: DictConfig) -> DictConfig:
    """``cfg`` training on every image of the (long-tailed) pool: no validation split
    (``data.val_source=none`` where the datamodule has ``val_source``, else
    ``data.val_fraction=0``) and no cap on the largest class (``data.n_max=null``); then checked
    and resolved as ``imblab-train`` does first (:func:`imblab.config.validate`)."""
    with open_dict(cfg):
        if "val_source" in cfg.data:
            cfg.data.val_source = "none"
        else:
            cfg.data.val_fraction = 0.0
        if "n_max" in cfg.data:
            cfg.data.n_max = None
    validate(cfg)
    return cfg


def config(
    out: Path, device: str, epochs: int, overrides: Sequence[str] = (), batch: int = BATCH
) -> DictConfig:
    """The benchmark's MNIST config: :func:`write_data`'s files, no validation split."""
    cfg = compose_train(
        out,
        [
            "data.source=full",
            # every class has 6,000 images: rho = 1 keeps them all
            "data.imbalance_ratio=1",
            f"data.batch_size={batch}",
            "callbacks.rich_progress_bar=null",
            "callbacks.early_stopping=null",
            "callbacks.model_checkpoint.monitor=null",
            f"trainer.accelerator={device}",
            f"trainer.max_epochs={epochs}",
            *overrides,
        ],
    )
    return whole_pool(cfg)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochTimer(Callback):
    """Wall time of every training epoch, and of every validation epoch from its start to the
    end of validation (metric callbacks and logging included)."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []

    def _start(self, pl_module: LightningModule) -> None:
        sync(pl_module.device)
        self._t0 = time.perf_counter()

    def _stop(self, pl_module: LightningModule, into: list[float]) -> None:
        sync(pl_module.device)
        into.append(time.perf_counter() - self._t0)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop(pl_module, self.train)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop(pl_module, self.val)


def trainer(cfg: DictConfig, callbacks: list[Callback], **kwargs: object) -> Trainer:
    return build_trainer(
        cfg,
        callbacks=callbacks,
        logger=instantiate(cfg.logger.tensorboard),
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def imblab_train(cfg: DictConfig, epochs: int) -> float:
    """Seconds per training epoch (epochs after the first) of the Lightning path."""
    torch.manual_seed(0)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    timer = EpochTimer()
    callbacks = instantiate_callbacks(cfg.callbacks, "callbacks")
    callbacks += [*instantiate_callbacks(cfg.metrics, "metrics"), timer]
    trainer(cfg, callbacks, limit_val_batches=0).fit(model, datamodule=dm)
    return sum(timer.train[1:]) / (epochs - 1)


def autocast(cfg: DictConfig, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """The autocast Lightning's resolved precision uses (weight cache off, as Lightning's), for
    the bare loop."""
    precision = trainer_overrides(cfg.trainer).get("precision", cfg.trainer.precision)
    if precision in ("bf16-mixed", "16-mixed"):
        dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
        return torch.autocast(device.type, dtype=dtype, cache_enabled=False)
    return contextlib.nullcontext()


def bare_train(cfg: DictConfig, epochs: int, device: torch.device) -> float:
    """Seconds per epoch (after the first) of a plain loop: the same uint8 tensors on the
    device, a device-side permutation per epoch, the same transform, model and optimizer (with
    ``model.cuda_graph``, the same captured backbone)."""
    torch.manual_seed(0)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm).to(device)
    model.configure_model()  # as the Trainer does: channels_last=auto, model.compile
    model.train()
    optimizer = model.optimizer_factory(model.parameters())
    scheduler = model.scheduler_factory(optimizer)
    loss_fn = torch.nn.CrossEntropyLoss()
    images, labels = (t.to(device) for t in dm.split("train"))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.trainer.precision == "16-mixed")
    times = []
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
        for idx in torch.randperm(len(labels), device=device).split(cfg.data.batch_size):
            x = dm.transform(images.index_select(0, idx), train=True)
            y = labels.index_select(0, idx)
            with autocast(cfg, device):
                loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        scheduler.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / (epochs - 1)


class NoCounts(Callback):
    """Switch the model's count updates off for one validation (the epoch without metrics)."""

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state = pl_module.count_state("val")  # type: ignore[operator]
        state.update = lambda preds, target, ids=None: None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        del pl_module.count_state("val").update  # type: ignore[operator]


def validation_epochs(cfg: DictConfig, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds of a validation epoch over the 10,000 test images with the
    count updates and every scalar metric callback, and without them; then the time to draw
    the figures (confusion matrix, ROC, per-class bars) once."""
    dm: MNISTDataModule = build_datamodule(cfg)  # type: ignore[assignment]
    # validate on the test split: the same images either way
    dm.val_dataloader = dm.test_dataloader  # type: ignore[method-assign]
    metrics = instantiate_callbacks(cfg.metrics, "metrics")
    scalars = [m for m in metrics if isinstance(m, ScalarMetric)]
    figures = [m for m in metrics if isinstance(m, FigureMetric)]
    model: Classifier = build_model(cfg, dm)  # type: ignore[assignment]
    best = {"with": float("inf"), "without": float("inf")}
    for _ in range(repeats):
        for name, callbacks in (("with", scalars), ("without", [NoCounts()])):
            timer = EpochTimer()
            # figures are drawn every figures_every_n_epochs; timed on their own below; every
            # batch validated whatever limit_val_batches the (validation-less) config sets
            trainer(cfg, [*callbacks, timer], limit_val_batches=1.0).validate(
                model, datamodule=dm, verbose=False
            )
            best[name] = min(best[name], timer.val[0])
    model.count_state("val").reset()
    device = next(model.parameters()).device
    with torch.inference_mode():
        for x, y, _ in dm.test_dataloader():
            model.count_state("val").update(model(dm.transform(x.to(device), False)), y.to(device))
    result = model.count_state("val").compute()
    start = time.perf_counter()
    for f in figures:
        f.figure(result, model.class_names)
    best["figures"] = time.perf_counter() - start
    return best


def best_of(rounds: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(rounds))


@contextlib.contextmanager
def data_dir(
    train_images: int, eval_images: int = EVAL_IMAGES, noise: bool = False
) -> Iterator[Path]:
    """A temporary output dir whose ``data/mnist`` holds :func:`write_data`'s files."""
    with tempfile.TemporaryDirectory() as tmp:
        write_data(Path(tmp) / "data" / "mnist", train_images, eval_images, noise)
        yield Path(tmp)


def run(
    epochs: int,
    device_name: str,
    rounds: int = 2,
    repeats: int = 5,
    train_images: int = TRAIN_IMAGES,
    overrides: Sequence[str] = (),
    eval_images: int = EVAL_IMAGES,
) -> dict[str, float]:
    device = torch.device(device_name)
    n = train_images
    with data_dir(train_images, eval_images) as tmp:
        cfg = config(tmp, device_name, epochs, overrides)
        # alternate the two paths and keep each one's best round, so a busy moment on the
        # machine does not decide the ratio
        bare, framework = float("inf"), float("inf")
        for _ in range(rounds):
            bare = min(bare, bare_train(cfg, epochs, device))
            framework = min(framework, imblab_train(cfg, epochs))
        val = validation_epochs(cfg, repeats)
    precision = trainer_overrides(cfg.trainer).get("precision", cfg.trainer.precision)
    ratio = bare / framework
    overhead = max(0.0, val["with"] - val["without"]) / val["with"]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device: {device_name} ({gpu}), torch {torch.__version__}, precision {precision}, "
        f"model.channels_last {cfg.model.channels_last}, model.optimizer.fused "
        f"{cfg.model.optimizer.get('fused')}, model.compile {cfg.model.compile}, "
        f"model.cuda_graph {cfg.model.cuda_graph}, overrides "
        f"{list(overrides)}, "
        f"{torch.get_num_threads()} CPU "
        f"threads, batch {cfg.data.batch_size}, {n} training images, {epochs} epochs (first is "
        f"warm-up), best of {rounds} rounds"
    )
    print(
        f"training  bare loop {n / bare:9.0f} images/s ({bare:.3f} s/epoch)   "
        f"imblab-train {n / framework:9.0f} images/s ({framework:.3f} s/epoch)   "
        f"ratio {ratio:.3f}  (targets on a GPU: >= 200000 images/s, ratio >= 0.8)"
    )
    print(
        f"validation epoch ({eval_images} images, best of {repeats}): with count updates and "
        f"scalar metric callbacks {val['with'] * 1e3:.1f} ms, without {val['without'] * 1e3:.1f} "
        f"ms -> metrics {100 * overhead:.2f}% of the epoch (target <= 5%)"
    )
    print(
        "figures (confusion matrix, ROC, per-class bars; drawn every "
        f"figures_every_n_epochs): {val['figures'] * 1e3:.0f} ms"
    )
    print(
        f"docs/performance.md: {gpu}: {n / framework:.0f} images/s training, bare loop "
        f"{n / bare:.0f} images/s (ratio {ratio:.2f}), torch {torch.__version__}"
    )
    return {"ratio": ratio, "overhead": overhead, "images_per_s": n / framework}


@pytest.mark.benchmark
def test_bench_train() -> None:
    """CPU smoke run on 5,000 training images."""
    result = run(epochs=2, device_name="cpu", rounds=1, repeats=1, train_images=5_000)
    assert result["ratio"] > 0 and result["overhead"] >= 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="validation epochs timed")
    parser.add_argument("--train-images", type=int, default=TRAIN_IMAGES)
    parser.add_argument("--eval-images", type=int, default=EVAL_IMAGES)
    parser.add_argument(
        "--override", action="append", default=[], help="extra Hydra override for both paths"
    )
    args = parser.parse_args()
    run(
        args.epochs,
        args.device,
        args.rounds,
        args.repeats,
        args.train_images,
        args.override,
        args.eval_images,
    )


if __name__ == "__main__":
    main()
