"""The CUDA path on a real GPU: data resident on the device, sampling and batching without host
syncs, bf16 training end to end, deterministic runs, torch.compile, the training step captured
in CUDA graphs (``model.cuda_graph``). Skipped without CUDA."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.nn import functional as F

from imblab.data.base import ImbalancedDataModule
from imblab.data.tensors import TensorBatches
from imblab.models import classifier
from imblab.models.backbones import SmallCNN
from imblab.models.classifier import Classifier
from imblab.pipelines.training import train, trainer_overrides
from imblab.samplers import ClassAwareSampler, EpochSampler, ShuffleSampler, WeightedClassSampler

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


def trajectory(backbone: torch.nn.Module, cuda_graph: bool) -> tuple[torch.Tensor, Classifier]:
    """Per-step losses of 2 epochs of SGD with momentum under bf16 autocast (weight cache off, as
    Lightning's), 219 samples in batches of 64 (the last one 27) in a fixed order."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(219, 1, 28, 28, generator=g).cuda()
    y = torch.randint(0, 5, (219,), generator=g).cuda()
    net = Classifier(
        copy.deepcopy(backbone), torch.optim.SGD, 5, list("abcde"), cuda_graph=cuda_graph
    )
    net = net.cuda()
    net.configure_model()  # channels_last on CUDA
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(2):
        for idx in torch.arange(len(y), device="cuda").split(64):
            with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                loss = F.cross_entropy(net(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
    return torch.stack(losses).float().cpu(), net


def test_captured_training_step_follows_the_eager_one(caplog) -> None:
    """Same losses, parameters and batch-norm statistics as eager training, within bf16
    tolerance; two graphs (the full batch and the last partial one), no fallback."""
    torch.manual_seed(0)
    backbone = SmallCNN(1, 5, width=16, dropout=0.0)
    with caplog.at_level(logging.WARNING, logger="imblab"):
        graphed, graphed_net = trajectory(backbone, cuda_graph=True)
    assert not [r for r in caplog.records if r.getMessage().startswith("model.cuda_graph")]
    assert len(graphed_net._graphs) == 2
    eager, eager_net = trajectory(backbone, cuda_graph=False)
    torch.testing.assert_close(graphed, eager, rtol=2e-2, atol=1e-3)
    trained = eager_net.backbone.state_dict()["head.1.weight"].cpu()
    assert not torch.allclose(trained, backbone.state_dict()["head.1.weight"])  # it moved
    for (name, a), b in zip(
        graphed_net.backbone.state_dict().items(),
        eager_net.backbone.state_dict().values(),
        strict=True,
    ):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-3, msg=name)


def test_capture_leaves_no_trace_of_its_warm_up() -> None:
    """The warm-up passes of the capture leave the batch-norm statistics and the CUDA random
    state as they were; a replay then updates the statistics and fills every gradient."""
    torch.manual_seed(0)
    backbone = SmallCNN(1, 5, width=8).cuda().train()
    x = torch.randn(16, 1, 28, 28, device="cuda")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    rng = torch.cuda.get_rng_state()
    graphed = classifier.capture_backbone(backbone, x)
    assert torch.equal(torch.cuda.get_rng_state(), rng)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    graphed(x).sum().backward()
    tracked = [k for k in before if k.endswith("num_batches_tracked")]
    assert tracked and all(backbone.state_dict()[k] == before[k] + 1 for k in tracked)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters())


def test_cuda_graph_through_imblab_train(compose_cfg, caplog, monkeypatch) -> None:
    """``imblab-train model.cuda_graph=true`` on the GPU: captured (one graph per batch shape of
    the epoch), no fallback message, finite metrics."""
    seen: dict[str, int] = {}

    class Graphs(Callback):
        def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
            seen["graphs"] = len(cast(Classifier, pl_module)._graphs)
            datamodule = cast(ImbalancedDataModule, trainer.datamodule)
            seen["images"], seen["batch"] = sum(datamodule.train_counts), datamodule.batch_size

    original = Trainer.__init__

    def with_probe(self: Trainer, *args: object, callbacks: list, **kwargs: object) -> None:
        original(self, *args, callbacks=[*callbacks, Graphs()], **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "__init__", with_probe)
    with caplog.at_level(logging.WARNING, logger="imblab"):
        metrics = train(
            compose_cfg(*GPU, "model.cuda_graph=true", "trainer.max_epochs=2", "logger=none")
        )
    assert not [r for r in caplog.records if r.getMessage().startswith("model.cuda_graph")]
    assert seen["graphs"] == 1 + (seen["images"] % seen["batch"] != 0)
    assert 0 <= metrics["test/f1_macro"] <= 1 and math.isfinite(metrics["train/loss_epoch"])
