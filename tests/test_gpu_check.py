"""``tests/benchmarks/gpu_check.py --smoke`` (every part on the CPU, so the GPU check cannot rot
while no GPU is at hand), and ``model.cuda_graph`` where there is no GPU: its config checks, its
fallback to eager training with one message, and which batches it captures (with a stand-in for
the capture; the capture itself is tested on a GPU in tests/test_cuda.py)."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from imblab.config import validate
from imblab.errors import ConfigError
from imblab.models import classifier
from imblab.models.backbones import SmallCNN
from imblab.models.classifier import Classifier
from imblab.pipelines.training import train
from tests.benchmarks import gpu_check

from .conftest import FAST

MESSAGE = (
    "model.cuda_graph=true: the model trains on cpu, and CUDA graphs need a CUDA GPU; training "
    "eagerly instead (set model.cuda_graph=false to skip the attempt)"
)


def table(text: str) -> list[list[str]]:
    """The cells of every row of the Markdown table in ``text`` (header and rule left out)."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def test_smoke_run_prints_and_writes_one_table_with_a_target_per_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], compose_cfg
) -> None:
    assert gpu_check.main(["--smoke", "--out", str(tmp_path)]) == 0  # no part failed
    written = (tmp_path / "gpu_check.md").read_text()
    assert capsys.readouterr().out.strip() == written.strip()
    for key in ("GPU", "torch", "CUDA (torch build)", "driver"):
        assert re.search(rf"^- {re.escape(key)}: \S", written, re.MULTILINE), key
    rows = table(written)
    assert all(len(row) == 4 and row[2] for row in rows)  # every row has its target
    what = [row[0] for row in rows]
    for part in ("training: imblab-train, eager", "metric share", "kernels per count update"):
        assert any(part in w for w in what), part
    assert sum("CIFAR-10-LT schedule" in w for w in what) == 2
    for name, value, _, _ in rows:  # no CUDA: both captured paths trained eagerly, and say so
        if "model.cuda_graph=true" in name:
            assert "**ran eagerly**: the model trains on cpu" in value, name
    test_every_epoch = next(value for name, value, _, _ in rows if "every epoch" in name)
    if "test_every_epoch" in compose_cfg():  # issue 24's option, measured once it exists
        assert "ms/epoch" in test_every_epoch
    else:
        assert test_every_epoch.startswith("not available")
    assert rows[-1][:2] == ["pytest -m cuda", "skipped: no CUDA device in this run"]


def test_cuda_graph_on_the_cpu_trains_eagerly_with_one_message(
    compose_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same run as ``model.cuda_graph=false`` (CPU runs are deterministic), plus one line."""
    options = [*FAST, "debug=fdr", "logger=none"]
    with caplog.at_level(logging.WARNING, logger="imblab"):
        graphed = train(compose_cfg(*options, "model.cuda_graph=true", run_dir=tmp_path / "a"))
    messages = [m for r in caplog.records if (m := r.getMessage()).startswith("model.cuda_graph")]
    assert messages == [MESSAGE]
    eager = train(compose_cfg(*options, run_dir=tmp_path / "b"))
    assert graphed == eager and math.isfinite(eager["train/loss_epoch"])


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (["model.cuda_graph=sometimes"], "must be true or false"),
        (["model.cuda_graph=1"], "must be true or false"),
        (["model.cuda_graph=true", "model.compile=true"], "cannot be combined with model.compile"),
    ],
)
def test_bad_cuda_graph_values_fail_before_training(
    compose_cfg, overrides: list[str], problem: str
) -> None:
    with pytest.raises(ConfigError, match=r"^model\.cuda_graph=") as err:
        validate(compose_cfg(*overrides))
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_cuda_graph_and_its_default_compose(compose_cfg) -> None:
    assert compose_cfg().model.cuda_graph is False
    validate(compose_cfg("model.cuda_graph=true"))
    validate(compose_cfg("model=resnet32", "model.cuda_graph=true"))


class StandIn:
    """A stand-in for :func:`classifier.capture_backbone`: the "graph" runs the backbone
    eagerly and records the batch sizes it was captured for and replayed with."""

    def __init__(self, fail: bool = False) -> None:
        self.captured: list[int] = []
        self.replayed: list[int] = []
        self.fail = fail

    def __call__(
        self, backbone: nn.Module, x: torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\ntraceback")
        self.captured.append(len(x))

        def replay(batch: torch.Tensor) -> torch.Tensor:
            self.replayed.append(len(batch))
            return backbone(batch)

        return replay


def model(monkeypatch: pytest.MonkeyPatch, stand_in: StandIn) -> Classifier:
    """A CUDA-graph model whose captures go to ``stand_in`` (on the CPU, as if on a GPU)."""
    monkeypatch.setattr(classifier, "capture_backbone", stand_in)
    monkeypatch.setattr(Classifier, "_graph_obstacle", lambda self, x: None)
    net = Classifier(SmallCNN(1, 3, width=4), torch.optim.SGD, 3, ["a", "b", "c"], cuda_graph=True)
    net.configure_model()
    return net.train()


def step(net: Classifier, n: int) -> torch.Tensor:
    x = torch.randn(n, 1, 8, 8)
    out = net(x)
    out.sum().backward()
    return out


def test_the_full_batch_and_the_last_partial_one_get_a_graph_each(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stand_in = StandIn()
    net = model(monkeypatch, stand_in)
    with caplog.at_level(logging.WARNING, logger="imblab"):
        for n in (8, 8, 3, 8, 3):  # two epochs of 19 samples in batches of 8
            step(net, n)
    assert stand_in.captured == [8, 3] and stand_in.replayed == [8, 8, 3, 8, 3]
    step(net, 5)  # a third shape: eager, no third graph
    first = next(net.backbone.parameters())
    first.requires_grad_(False)  # another signature: eager too (two graphs already)
    step(net, 8)
    first.requires_grad_(True)
    with torch.no_grad():
        net(torch.randn(8, 1, 8, 8))  # no gradients: eager
    net.eval()
    net(torch.randn(8, 1, 8, 8))  # evaluation: eager
    assert stand_in.captured == [8, 3] and stand_in.replayed == [8, 8, 3, 8, 3]
    assert not caplog.records
    net.train().configure_model()  # a new fit (the parameters may have moved): captured afresh
    step(net, 8)
    assert stand_in.captured == [8, 3, 8]


def test_a_changed_parameter_set_is_a_new_graph_signature() -> None:
    backbone = SmallCNN(1, 3, width=4)
    x = torch.randn(4, 1, 8, 8)
    key = classifier.graph_key(x, backbone)
    assert classifier.graph_key(x.clone(), backbone) == key
    assert classifier.graph_key(torch.randn(3, 1, 8, 8), backbone) != key
    assert classifier.graph_key(torch.randn(4, 1, 8, 9)[..., :8], backbone) != key  # strides
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert classifier.graph_key(x, backbone) != key
    next(backbone.parameters()).requires_grad_(False)
    assert classifier.graph_key(x, backbone) != key


def test_a_failed_capture_trains_eagerly_after_one_message(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stand_in = StandIn(fail=True)
    net = model(monkeypatch, stand_in)
    with caplog.at_level(logging.WARNING, logger="imblab"):
        outputs = [step(net, n) for n in (8, 8, 3)]
    assert [r.getMessage() for r in caplog.records] == [
        "model.cuda_graph=true: CUDA graph capture failed (RuntimeError: operation not permitted "
        "when stream is capturing); training eagerly instead (set model.cuda_graph=false to skip "
        "the attempt)"
    ]
    assert [len(o) for o in outputs] == [8, 8, 3] and not net._graphs
