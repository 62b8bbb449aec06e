"""TorchvisionBackbone: models by name with channels and classes adapted, pretrained weights
from the torch hub cache or a local file (never the internet), the offline message, freezing."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from imblab.errors import ConfigError
from imblab.models.torchvision_backbones import TorchvisionBackbone

NAMES = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny"]


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME and a download that fails as it does offline."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def no_internet(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError(f"offline test: {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_internet)
    return home


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("in_channels", [1, 3, 4])
def test_models_adapt_channels_and_classes(name: str, in_channels: int) -> None:
    torch.manual_seed(0)
    model = TorchvisionBackbone(name, in_channels=in_channels, num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, 32, 32))
    assert out.shape == (2, 5)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == in_channels


def test_offline_without_weights_says_how_to_supply_them(offline: Path) -> None:
    with pytest.raises(ConfigError) as err:
        TorchvisionBackbone("resnet18", 3, 2, pretrained=True)
    message = str(err.value)
    assert message.startswith("model.backbone.pretrained=True: cannot download")
    assert "\n" not in message
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    assert str(offline / "hub" / "checkpoints" / Path(url).name) in message
    assert "model.backbone.weights_path=FILE" in message and "pretrained=false" in message


def test_weights_in_the_hub_cache_are_used_without_download(offline: Path) -> None:
    stock = torchvision.models.resnet18(weights=None)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    target = offline / "hub" / "checkpoints" / Path(url).name
    target.parent.mkdir(parents=True)
    torch.save(stock.state_dict(), target)
    model = TorchvisionBackbone("resnet18", 3, 2, pretrained=True)
    assert torch.equal(model.net.layer4[1].conv2.weight, stock.layer4[1].conv2.weight)
    assert model.net.fc.out_features == 2


def test_a_corrupt_file_in_the_hub_cache_is_named(offline: Path) -> None:
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    target = offline / "hub" / "checkpoints" / Path(url).name
    target.parent.mkdir(parents=True)
    target.write_bytes(b"<html>not weights</html>")
    with pytest.raises(ConfigError) as err:
        TorchvisionBackbone("resnet18", 3, 2, pretrained=True)
    assert str(err.value).startswith(f"model.backbone.pretrained=True: cannot load {target}")
    assert "delete it" in str(err.value) and "\n" not in str(err.value)


def test_weights_path_and_grey_stem_from_rgb_weights(tmp_path: Path) -> None:
    stock = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": stock.state_dict()}, path)
    model = TorchvisionBackbone("resnet18", 1, 3, pretrained=True, weights_path=str(path))
    assert torch.equal(model.net.layer1[0].conv1.weight, stock.layer1[0].conv1.weight)
    # a grey image through the new stem = that image in all three channels through the old one
    grey = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(
            model.net.conv1(grey), stock.conv1(grey.expand(1, 3, 16, 16)), atol=1e-5
        )


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"name": "resnet_9000"}, "model.backbone.name"),
        ({"weights_path": "/x.pth"}, "model.backbone.weights_path"),
        ({"pretrained": True, "weights_path": "/nonexistent.pth"}, "model.backbone.weights_path"),
        ({"pretrained": True, "weights": "IMAGENET9K"}, "model.backbone.weights"),
        ({"finetune_last_n": 2}, "model.backbone.finetune_last_n"),
        ({"freeze_backbone": True, "finetune_last_n": 99}, "model.backbone.finetune_last_n"),
        ({"freeze_backbone": "yes"}, "model.backbone.freeze_backbone"),
    ],
)
def test_bad_options_fail_with_one_line(kwargs: dict, key: str) -> None:
    args = {"name": "resnet18", "in_channels": 3, "num_classes": 2, **kwargs}
    with pytest.raises(ConfigError) as err:
        TorchvisionBackbone(**args)
    assert str(err.value).startswith(key + "=") and "\n" not in str(err.value)


def test_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "wrong.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    with pytest.raises(ConfigError, match=r"^model\.backbone\.weights_path=.*does not fit"):
        TorchvisionBackbone("resnet18", 3, 2, pretrained=True, weights_path=str(path))


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_backbone_and_finetune_last_n() -> None:
    frozen = TorchvisionBackbone("resnet18", 3, 2, freeze_backbone=True)
    assert trainable(frozen) == {"net.fc.weight", "net.fc.bias"}
    last2 = TorchvisionBackbone("resnet18", 3, 2, freeze_backbone=True, finetune_last_n=2)
    names = trainable(last2)
    assert {n.split(".")[1] for n in names} == {"layer4", "fc"}
    assert any(n.startswith("net.layer4.0.") for n in names)
    assert any(n.startswith("net.layer4.1.") for n in names)
    grey = TorchvisionBackbone("mobilenet_v3_small", 1, 2, freeze_backbone=True)
    assert trainable(grey) == {
        "net.features.0.0.weight",  # the replaced stem trains
        "net.classifier.3.weight",
        "net.classifier.3.bias",
    }
    assert TorchvisionBackbone("efficientnet_b0", 3, 2, freeze_backbone=True, finetune_last_n=1)


def test_frozen_layers_do_not_change_in_a_training_step() -> None:
    torch.manual_seed(0)
    model = TorchvisionBackbone("resnet18", 3, 2, freeze_backbone=True, finetune_last_n=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    model.train()
    assert not model.net.bn1.training and model.net.layer4[1].bn1.training
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "net.fc.weight" in changed and "net.layer4.1.conv2.weight" in changed
    assert "net.layer4.1.bn1.running_mean" in changed  # trainable BN keeps learning statistics
    assert not {k for k in changed if k.startswith(("net.conv1", "net.bn1", "net.layer1"))}
