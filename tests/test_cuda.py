"""The CUDA path on a real GPU: data resident on the device, sampling and batching without host
syncs, bf16 training end to end, deterministic runs, torch.compile. Skipped without CUDA."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from imblab.data.tensors import TensorBatches
from imblab.samplers import ClassAwareSampler, EpochSampler, ShuffleSampler, WeightedClassSampler
from imblab.training import train, trainer_overrides

from .conftest import FAST

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

GPU = [*(o for o in FAST if not o.startswith("trainer.accelerator")), "trainer=gpu"]
COUNTS = [3000, 1000, 300, 100, 30]


@contextmanager
def no_sync() -> Iterator[None]:
    """Any host<->device synchronisation inside the block raises."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def labels() -> torch.Tensor:
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]


def samplers(y: torch.Tensor, rank: int = 0, world: int = 1) -> dict[str, EpochSampler]:
    kw = {"seed": 3, "num_replicas": world, "rank": rank}
    return {
        "shuffle": ShuffleSampler(len(y), **kw),
        "inverse": WeightedClassSampler(y, scheme="inverse", **kw),
        "sqrt": WeightedClassSampler(y, scheme="sqrt", **kw),
        "class_aware": ClassAwareSampler(y, **kw),
    }


def test_batches_are_drawn_on_the_gpu_without_a_host_sync() -> None:
    y = labels()
    images = torch.arange(len(y), device="cuda").to(torch.uint8).view(-1, 1, 1, 1)
    y_cuda = y.cuda()
    for name, sampler in samplers(y).items():
        loader = TensorBatches(images, y_cuda, 512, sampler)
        next(iter(loader))  # the first epoch copies the sampler's lookup tables to the GPU once
        sampler.set_epoch(2)
        with no_sync():  # set_sync_debug_mode("error"): a sync would raise
            batches = list(loader)
        assert all(x.is_cuda and target.is_cuda for x, target in batches), name
        assert sum(len(t) for _, t in batches) == len(sampler)


def test_gpu_draws_follow_the_sampler_contract() -> None:
    y = labels()
    for name, sampler in samplers(y).items():
        sampler.set_epoch(1)
        draw = sampler.global_draw("cuda")
        assert draw.is_cuda and draw.dtype == torch.int64 and len(draw) == sampler.total_size
        again = samplers(y)[name]
        again.set_epoch(1)
        assert torch.equal(again.global_draw("cuda"), draw), f"{name}: not seeded"
        shares = [samplers(y, r, 3)[name] for r in range(3)]
        for s in shares:
            s.set_epoch(1)
        parts = [s.indices("cuda") for s in shares]
        world_draw = shares[0].global_draw("cuda")
        assert torch.equal(torch.stack(parts, 1).flatten(), world_draw), name
        if name == "shuffle":
            assert torch.equal(torch.sort(draw).values.cpu(), torch.arange(len(y)))
            continue
        # class frequencies of a long draw: inverse and class-aware equal, sqrt ~ sqrt(n_c)
        long = type(sampler)(y, num_samples=200_000, seed=5, **sampler_options(sampler))
        freq = torch.bincount(y[long.global_draw("cuda").cpu()], minlength=len(COUNTS)) / 2e5
        n = torch.tensor(COUNTS, dtype=torch.float64)
        target = n.sqrt() / n.sqrt().sum() if name == "sqrt" else torch.full((5,), 0.2)
        torch.testing.assert_close(freq.double(), target.double(), atol=0.01, rtol=0)


def sampler_options(sampler: EpochSampler) -> dict[str, object]:
    return {"scheme": sampler.scheme} if isinstance(sampler, WeightedClassSampler) else {}


class Probe(Callback):
    """Record where the training batches, the data and the count state live."""

    def __init__(self) -> None:
        self.seen: dict[str, object] = {}

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int
    ) -> None:
        x, y = batch  # type: ignore[misc]  # after on_after_batch_transfer: normalised floats
        self.seen["batch"] = (x.device.type, x.dtype, y.device.type)
        loader = trainer.train_dataloader
        self.seen["resident"] = (loader.images.device.type, loader.images.dtype)  # type: ignore[union-attr]
        self.seen["precision"] = trainer.precision
        self.seen["channels_last"] = pl_module.channels_last  # type: ignore[attr-defined]

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.seen["counts"] = pl_module.count_state("val").confmat.device.type  # type: ignore[operator]


@pytest.mark.parametrize("sampler", ["none", "inverse"])
def test_gpu_training_end_to_end(compose_cfg, tmp_path: Path, sampler: str, monkeypatch) -> None:
    probe = Probe()
    original = Trainer.__init__

    def with_probe(self: Trainer, *args: object, callbacks: list, **kwargs: object) -> None:
        original(self, *args, callbacks=[*callbacks, probe], **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "__init__", with_probe)
    metrics = train(compose_cfg(*GPU, f"sampler={sampler}", "trainer.max_epochs=2"))
    assert probe.seen["batch"] == ("cuda", torch.float32, "cuda")
    assert probe.seen["resident"] == ("cuda", torch.uint8) and probe.seen["counts"] == "cuda"
    expected = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    assert probe.seen["precision"] == expected and probe.seen["channels_last"] is True
    assert 0 <= metrics["test/f1_macro"] <= 1 and math.isfinite(metrics["train/loss_epoch"])
    assert (tmp_path / "metrics.json").is_file()


def test_precision_auto_resolves_for_the_gpu(compose_cfg) -> None:
    cfg = compose_cfg(*GPU)
    assert trainer_overrides(cfg.trainer) == {
        "precision": "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed",
        "benchmark": True,
    }
    cfg = compose_cfg(*GPU, "trainer.deterministic=true")
    assert trainer_overrides(cfg.trainer)["benchmark"] is False


def test_deterministic_gpu_runs_are_identical(compose_cfg, tmp_path: Path) -> None:
    options = [*GPU, "trainer.deterministic=true", "trainer.max_epochs=2", "logger=none"]
    a = train(compose_cfg(*options, run_dir=tmp_path / "a"))
    b = train(compose_cfg(*options, run_dir=tmp_path / "b"))
    assert a == b


def test_compile_and_channels_last_on_the_gpu(compose_cfg, caplog) -> None:
    """Compiled, or (where inductor cannot build its kernels) one clear fallback message."""
    with caplog.at_level(logging.WARNING, logger="imblab"):
        metrics = train(
            compose_cfg(*GPU, "model.compile=true", "model.channels_last=true", "logger=none")
        )
    fallbacks = [r.getMessage() for r in caplog.records if "torch.compile" in r.getMessage()]
    assert len(fallbacks) <= 1, fallbacks
    assert all(m.startswith("model.compile=true: torch.compile could not") for m in fallbacks)
    assert 0 <= metrics["test/f1_macro"] <= 1 and math.isfinite(metrics["train/loss_epoch"])
