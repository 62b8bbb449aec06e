"""The cost of the calibration and top-k plugins: a CPU validation epoch with and without them.

A SmallCNN validates N random 28x28 images of 10 classes (the shape of MNIST) in batches of 256
on the CPU (``gpu_check.py`` calls :func:`measure` on the GPU), through ``trainer.validate`` with
the default scalars callback; then again with ``CalibrationMetrics`` and ``TopKAccuracy``
attached, then without them again (the A/A noise). All are measured in this one run
(alternating, best of ``--repeats``); the extra share of the epoch is (t_on - t_off) / t_on,
t_off the better of the two runs without.

    python tests/benchmarks/bench_plugins.py [--n 10000] [--repeats 3]
    pytest -m benchmark tests/benchmarks/bench_plugins.py -s

Target (issue 15): the plugins' share of a CPU validation epoch stays within 5%.
"""

from __future__ import annotations

import argparse
import time

import pytest
import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer

from imblab.callbacks.calibration import CalibrationMetrics
from imblab.callbacks.scalars import ClassificationScalars
from imblab.callbacks.topk import TopKAccuracy
from imblab.data.tensors import TensorBatches
from imblab.models.backbones import SmallCNN
from imblab.models.classifier import Classifier
from imblab.samplers import SequentialShard

TARGET_SHARE = 0.05


class Images(LightningDataModule):
    def __init__(self, n: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 1, 28, 28, generator=g)
        self.y = torch.randint(0, 10, (n,), generator=g)

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self.x, self.y, 256, SequentialShard(len(self.y)))


def epoch_seconds(data: Images, callbacks: list[Callback], accelerator: str = "cpu") -> float:
    """Seconds of one ``trainer.validate`` epoch on ``accelerator``, after one warm-up epoch
    (the host tensors' batches are moved there by Lightning)."""
    model = Classifier(SmallCNN(1, 10), torch.optim.SGD, 10, [str(c) for c in range(10)])
    model.eval()
    trainer = Trainer(
        accelerator=accelerator,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.validate(model, datamodule=data, verbose=False)  # warm-up
    sync(model.device)
    start = time.perf_counter()
    trainer.validate(model, datamodule=data, verbose=False)
    sync(model.device)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(n: int, repeats: int, accelerator: str = "cpu") -> tuple[float, float, float]:
    """Best-of-``repeats`` epoch seconds: plugins off, on, and off again (the A/A noise)."""
    data = Images(n)
    off, on, again = [], [], []
    for _ in range(repeats):
        off.append(epoch_seconds(data, [ClassificationScalars()], accelerator))
        on.append(
            epoch_seconds(
                data,
                [ClassificationScalars(), CalibrationMetrics(), TopKAccuracy()],
                accelerator,
            )
        )
        again.append(epoch_seconds(data, [ClassificationScalars()], accelerator))
    return min(off), min(on), min(again)


def share(off: float, on: float, again: float) -> float:
    """The plugins' share of the epoch, (t_on - t_off) / t_on, t_off the better run without."""
    return (on - min(off, again)) / on


def report(n: int, repeats: int) -> float:
    off, on, again = measure(n, repeats)
    base = min(off, again)
    extra = share(off, on, again)
    print(
        f"CPU validation epoch, N={n}, {torch.get_num_threads()} threads: "
        f"plugins off {off:.3f} s, on {on:.3f} s, off again {again:.3f} s (A/A noise "
        f"{100 * abs(off - again) / base:.1f}%), plugin share {100 * extra:.1f}% "
        f"(target <= {100 * TARGET_SHARE:.0f}%)"
    )
    return extra


@pytest.mark.benchmark
def test_plugin_share_of_a_cpu_validation_epoch() -> None:
    assert report(10_000, 3) <= TARGET_SHARE


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    report(args.n, args.repeats)
