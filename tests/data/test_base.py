"""The data contract: the minimal dataset of ImbalancedDataModule's docstring works end to end."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from imblab.data import checks
from imblab.data.base import ImbalancedDataModule, RawData
from imblab.data.imbalance import exponential_counts
from imblab.data.split import val_count
from imblab.data.summary import DataSummary
from imblab.errors import ConfigError


class Noise(ImbalancedDataModule):
    in_channels = 1
    classes = ("a", "b", "c")

    def __init__(self, size: int = 600, **options: Any) -> None:
        super().__init__(**options)
        self.size = checks.integer("size", size, 10)
        self.set_classes(self.classes)

    def load_raw(self, generator: torch.Generator) -> RawData:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (self.size, 1, 8, 8), dtype=torch.uint8, generator=g)
        y = torch.arange(self.size) % 3
        n = self.size * 4 // 5
        return RawData("noise", self.classes, (x[:n], y[:n]), (x[n:], y[n:]))


def test_a_subclass_that_loads_raw_splits_is_a_complete_datamodule() -> None:
    dm = Noise(imbalance_ratio=10, batch_size=32)
    assert (dm.num_classes, dm.class_names, dm.in_channels) == (3, ["a", "b", "c"], 1)
    dm.setup("fit")
    pool = exponential_counts(160, 3, 10.0)
    assert dm.val_counts == [val_count(n, 0.2) for n in pool]
    assert [t + v for t, v in zip(dm.train_counts, dm.val_counts, strict=True)] == pool
    assert dm.test_counts == [40, 40, 40]
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (32, 1, 8, 8) and y.dtype == torch.int64
    out = dm.transform(x, train=True)
    assert out.dtype == torch.float32 and out.shape == x.shape
    ids = torch.cat([ids for _, _, ids in dm.test_dataloader()])
    assert ids.tolist() == list(range(120))
    summary = dm.summary()
    assert isinstance(summary, DataSummary) and summary.source == "noise"
    assert summary.counts["train"] == tuple(dm.train_counts)
    assert summary["train_counts"] == ",".join(map(str, dm.train_counts))


def test_binary_mode_and_option_checks() -> None:
    class Binary(Noise):
        def __init__(self, positive_classes: list[int] | None = None, **options: Any) -> None:
            super().__init__(**options)
            self.positive_classes = checks.positive_classes(self.profile, positive_classes, 3)
            self.set_classes(self.classes)

    dm = Binary(profile="binary", positive_classes=[2], imbalance_ratio=4)
    assert dm.class_names == ["rest", "c"]
    dm.setup()
    assert sum(dm.train_counts) + sum(dm.val_counts) == 320 + 80
    assert Binary(profile="binary", positive_classes=[1, 2]).class_names == ["a", "b+c"]
    with pytest.raises(ConfigError, match=r"^data\.class_counts=\[5, 5\]: has 2 entries for 3"):
        Noise(profile="explicit", class_counts=[5, 5])
    with pytest.raises(ConfigError, match=r"^data\.positive_classes=\[3\]: "):
        Binary(profile="binary", positive_classes=[3])
