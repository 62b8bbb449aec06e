"""Training and evaluation throughput of `imblab-train`'s small CNN against a bare PyTorch loop.

Both paths run in this one process on the same device, with the same model config (fresh init,
same seed), optimizer, batch size, in-memory uint8 data and on-device preprocessing
(``MNISTDataModule.transform``). The imblab path is the real one: the composed Hydra config, the
Lightning Trainer, the default callbacks (checkpointing included) and the TensorBoard logger.

    python tests/benchmarks/bench_train.py [--epochs 4] [--device cpu]
    pytest -m benchmark tests/benchmarks/bench_train.py -s

It prints images/s for both and the ratio imblab / bare (target: >= 0.9 on CPU), then the cost of
the metric count state and scalar logging relative to a validation epoch's forward passes
(target: <= 5%), with the figures timed separately.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, open_dict

from imblab.config import instantiate_callbacks
from imblab.metrics.functional import summarize
from imblab.training import build_datamodule, build_model

# a balanced pool of the bundled sample: every batch is a full one, nothing about the
# imbalance matters for speed
DATA = [
    "data.source=sample",
    "data.profile=explicit",
    f"data.class_counts=[{','.join(['400'] * 10)}]",
    "data.mirrors=[http://127.0.0.1:9/]",
    "callbacks.rich_progress_bar=null",
    # validation is off while training is timed: nothing to monitor (checkpoints still saved)
    "callbacks.early_stopping=null",
    "callbacks.model_checkpoint.monitor=null",
]


def config(out: Path, device: str, epochs: int) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="imblab.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *DATA,
                f"trainer.accelerator={device}",
                f"trainer.max_epochs={epochs}",
                f"paths.data_dir={out}/data",
            ],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


class EpochTimer(Callback):
    """Wall time of each training epoch (validation is switched off while measuring)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sync(pl_module)
        self.seconds.append(time.perf_counter() - self._start)

    @staticmethod
    def _sync(pl_module: LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()


def imblab_train(cfg: DictConfig, epochs: int) -> tuple[float, int]:
    """Seconds per epoch (epochs after the first) and images per epoch of the Lightning path."""
    torch.manual_seed(0)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    timer = EpochTimer()
    callbacks = [*instantiate_callbacks(cfg.callbacks, "callbacks"), timer]
    callbacks += instantiate_callbacks(cfg.metrics, "metrics")
    logger = hydra.utils.instantiate(cfg.logger.tensorboard)
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=logger,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    return sum(timer.seconds[1:]) / (epochs - 1), len(dm.train_dataloader().dataset)


def bare_train(cfg: DictConfig, epochs: int, device: torch.device) -> float:
    """Seconds per epoch (after the first) of a plain loop over the same loader and model."""
    torch.manual_seed(0)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    net = model.backbone.to(device).train()
    optimizer = model.optimizer_factory(net.parameters())
    scheduler = model.scheduler_factory(optimizer)
    loss_fn = torch.nn.CrossEntropyLoss()
    loader = dm.train_dataloader()
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(net(dm.transform(x, train=True)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / (epochs - 1)


def eval_costs(cfg: DictConfig, device: torch.device, repeats: int = 3) -> dict[str, float]:
    """Seconds of one pass over the test split: forward only, count updates, scalars, figures."""
    dm = build_datamodule(cfg)
    dm.setup("test")
    model = build_model(cfg, dm).to(device).eval()
    counts = model.counts["test"]
    batches = [(x.to(device), y.to(device)) for x, y in dm.test_dataloader()]
    figures = [c for c in instantiate_callbacks(cfg.metrics, "metrics") if hasattr(c, "figure")]

    def timed(fn, repeats: int = repeats) -> float:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return best

    with torch.inference_mode():
        logits = [model(dm.transform(x, train=False)) for x, _ in batches]
        forward = timed(lambda: [model(dm.transform(x, train=False)) for x, _ in batches])

        def update() -> None:
            counts.reset()
            for out, (_, y) in zip(logits, batches, strict=True):
                counts.update(out, y)

        updates = timed(update)
        update()
        result = counts.compute()
        names = model.class_names
        scalars = timed(
            lambda: {f"test/{k}": v for k, v in summarize(result, class_names=names).items()}
        )
        figure_s = (
            timed(lambda: [f.figure(result, names) for f in figures], repeats=1) if figures else 0.0
        )
    return {
        "forward": forward,
        "updates": updates,
        "scalars": scalars,
        "figures": figure_s,
        "n": sum(len(y) for _, y in batches),
    }


def run(epochs: int, device_name: str, rounds: int = 2) -> dict[str, float]:
    device = torch.device(device_name)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), device_name, epochs)
        # alternate the two paths and keep each one's best round, so a busy moment on the
        # machine does not decide the ratio
        bare, framework = float("inf"), float("inf")
        for _ in range(rounds):
            bare = min(bare, bare_train(cfg, epochs, device))
            seconds, n = imblab_train(cfg, epochs)
            framework = min(framework, seconds)
        costs = eval_costs(cfg, device)
    ratio = bare / framework
    overhead = (costs["updates"] + costs["scalars"]) / costs["forward"]
    model_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(
        f"device: {device_name} ({model_name}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, batch {cfg.data.batch_size}, {n} training images, "
        f"{epochs} epochs (first is warm-up), best of {rounds} rounds"
    )
    print(
        f"training  bare loop {n / bare:10.0f} images/s   "
        f"imblab-train {n / framework:10.0f} images/s   ratio {ratio:.3f}  (target >= 0.9)"
    )
    print(
        f"eval ({costs['n']:.0f} images): forward {costs['forward'] * 1e3:.1f} ms "
        f"({costs['n'] / costs['forward']:.0f} images/s), count updates "
        f"{costs['updates'] * 1e3:.2f} ms, compute + all scalars {costs['scalars'] * 1e3:.2f} ms "
        f"-> overhead {100 * overhead:.2f}% of the forward passes (target <= 5%)"
    )
    print(
        f"figures (confusion matrix, ROC, per-class bars; every figures_every_n_epochs): "
        f"{costs['figures'] * 1e3:.0f} ms"
    )
    return {"ratio": ratio, "overhead": overhead}


@pytest.mark.benchmark
def test_bench_train() -> None:
    result = run(epochs=4, device_name="cpu")
    assert result["ratio"] > 0 and result["overhead"] >= 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    run(args.epochs, args.device, args.rounds)


if __name__ == "__main__":
    main()
