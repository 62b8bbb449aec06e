"""model=resnet32: the CIFAR ResNet-32 (parameter count, option-A shortcut, cosine head,
initialisation), the papers' warm-up + step schedule, and the head bias of the sigmoid
class-balanced focal loss."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from imblab.errors import ConfigError
from imblab.models.backbones import SmallCNN, init_head_bias
from imblab.models.heads import NormedLinear
from imblab.models.resnet_cifar import ResNetCIFAR, ShortcutA
from imblab.models.schedules import warmup_multistep
from imblab.pipelines.training import build_datamodule, build_model
from tests.conftest import FAST


def resnet_cifar_params(blocks: int, num_classes: int, in_channels: int = 3, cosine=False) -> int:
    """Parameters of He et al.'s CIFAR ResNet-(6n+2) with option-A shortcuts, counted layer by
    layer: 3x3 convs without bias, BatchNorm weight + bias, the head."""

    def conv(cin: int, cout: int) -> int:
        return 9 * cin * cout

    def bn(c: int) -> int:
        return 2 * c

    total = conv(in_channels, 16) + bn(16)
    cin = 16
    for planes in (16, 32, 64):
        for _ in range(blocks):
            total += conv(cin, planes) + bn(planes) + conv(planes, planes) + bn(planes)
            cin = planes
    return total + 64 * num_classes + (0 if cosine else num_classes)


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_resnet32_has_the_papers_parameter_count(num_classes: int, head: str) -> None:
    net = ResNetCIFAR(3, num_classes, head=head)
    count = sum(p.numel() for p in net.parameters())
    assert count == resnet_cifar_params(5, num_classes, cosine=head == "cosine")
    if num_classes == 10:
        assert round(count / 1e6, 2) == 0.46  # "ResNet32 | 32 layers | 0.46M" (He et al.)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 32  # 31 conv layers + the head


def test_forward_shapes_and_the_option_a_shortcut() -> None:
    net = ResNetCIFAR(3, 10).eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    x = torch.randn(2, 16, 8, 8)
    expected = np.zeros((2, 32, 4, 4), dtype=np.float32)
    expected[:, 8:24] = x.numpy()[:, :, ::2, ::2]
    np.testing.assert_array_equal(ShortcutA(32)(x).numpy(), expected)


def test_cosine_head_outputs_cosine_similarities() -> None:
    head = NormedLinear(64, 10)
    x = torch.randn(5, 64)
    got = head(x).detach().numpy()
    f, w = x.numpy().astype(np.float64), head.weight.detach().numpy().astype(np.float64)
    expected = (f @ w) / np.linalg.norm(f, axis=1)[:, None] / np.linalg.norm(w, axis=0)[None]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(got).max() <= 1 + 1e-6


def test_convolutions_are_kaiming_normal() -> None:
    torch.manual_seed(0)
    net = ResNetCIFAR(3, 10)
    conv = net.layers[-1].conv2  # 64 x 64 x 3 x 3: 36,864 weights
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.03)


def test_bad_head_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^model\.head='arc': "):
        ResNetCIFAR(3, 10, head="arc")
    with pytest.raises(ConfigError, match=r"^model\.head='arc': "):
        SmallCNN(1, 10, head="arc")


def test_the_small_cnn_takes_the_cosine_head() -> None:
    """``model.head=cosine`` on the default CNN (the MNIST-LT LDAM-DRW preset): logits are
    cosine similarities, in [-1, 1]."""
    model = SmallCNN(1, 10, head="cosine").eval()
    assert isinstance(model.head[-1], NormedLinear)
    logits = model(torch.randn(4, 1, 28, 28))
    assert logits.shape == (4, 10) and float(logits.abs().max()) <= 1 + 1e-6


def official_lr(epoch: int, lr: float = 0.1) -> float:
    """``adjust_learning_rate`` of kaidic/LDAM-DRW ``cifar_train.py``."""
    epoch = epoch + 1
    if epoch <= 5:
        return lr * epoch / 5
    if epoch > 180:
        return lr * 0.0001
    if epoch > 160:
        return lr * 0.01
    return lr


def test_schedule_is_the_papers_warm_up_and_steps() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    scheduler = warmup_multistep(opt, max_epochs=200)
    got = []
    for _ in range(200):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert got == pytest.approx([official_lr(e) for e in range(200)], rel=1e-12)


def test_schedule_past_the_last_epoch_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with caplog.at_level(logging.WARNING):
        warmup_multistep(opt, max_epochs=1)
    assert "[5, 160, 180]" in caplog.text and "never reached" in caplog.text
    with pytest.raises(ConfigError, match=r"^model\.scheduler\.milestones="):
        warmup_multistep(opt, milestones=[180, 160])


def test_init_head_bias_sets_the_last_linear_bias() -> None:
    net = SmallCNN(1, 10)
    assert init_head_bias(net, -math.log(9))
    assert torch.all(net.head[-1].bias == torch.tensor(-math.log(9)))
    assert not init_head_bias(ResNetCIFAR(3, 10, head="cosine"), -1.0)  # no bias to set


def test_sigmoid_cb_focal_initialises_the_head_bias(compose_cfg) -> None:
    cfg = compose_cfg(*FAST, "loss=cb_focal")
    model = build_model(cfg, build_datamodule(cfg))
    bias = model.backbone.head[-1].bias
    torch.testing.assert_close(bias, torch.full_like(bias, -math.log(9)))
    cfg = compose_cfg(*FAST, "loss=cb_focal", "loss.form=softmax")
    model = build_model(cfg, build_datamodule(cfg))
    assert not torch.allclose(model.backbone.head[-1].bias, torch.tensor(-math.log(9)))
