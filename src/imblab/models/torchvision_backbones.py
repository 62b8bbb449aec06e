"""torchvision classification models as imblab backbones: built by name, input channels and
head adapted to the data, optional pretrained weights (torchvision's weight enums or a local
file) and transfer-learning freezing.

Adaptation: the model is built with its stock 3-channel stem and 1000-class head (so pretrained
weights load unchanged), then

- the *first* ``nn.Conv2d`` (in module order) is replaced when ``in_channels != 3``; with
  pretrained weights the new kernel is the mean of the RGB kernels over the input channels,
  scaled by ``3 / in_channels`` (the response to a grey image is kept);
- the *last* ``nn.Linear`` (the classifier head) is replaced by a fresh ``Linear(in, num_classes)``.

Freezing (transfer learning): ``freeze_backbone=true`` sets ``requires_grad=False`` on every
parameter except the head and a replaced stem; ``finetune_last_n=N`` then trains the last ``N``
blocks too. A *block* is a parameterised top-level child of the model, a top-level
``nn.Sequential`` counting as its children (resnet18: conv1, bn1, layer1.0, ..., layer4.1;
mobilenet/efficientnet/convnext: features.0, features.1, ...); the top-level child that holds
the head is not a block. Frozen BatchNorm layers stay in eval mode (their running statistics
are not updated) whatever ``train()`` is called with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import hub, nn

from imblab.errors import ConfigError, config_error

KEY = "model.backbone"


def _fail(key: str, value: object, what: str, fix: str) -> ConfigError:
    return config_error(f"{KEY}.{key}", value, what, fix)


def classification_models() -> list[str]:
    """Names of torchvision's classification models (``torchvision.models.list_models``)."""
    return list(torchvision.models.list_models(module=torchvision.models))


def _module_path(root: nn.Module, kind: type[nn.Module], last: bool) -> str | None:
    names = [name for name, m in root.named_modules() if isinstance(m, kind)]
    if not names:
        return None
    return names[-1] if last else names[0]


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def _new_stem(old: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """A copy of ``old`` reading ``in_channels`` channels; with ``pretrained`` its kernel is
    the mean of ``old``'s over input channels, times ``3 / in_channels``."""
    if old.groups != 1:
        raise _fail(
            "in_channels",
            in_channels,
            "the model's first convolution is grouped and cannot be adapted",
            "use RGB data (data.grayscale=false) or another model",
        )
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,  # type: ignore[arg-type]
        stride=old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        dilation=old.dilation,  # type: ignore[arg-type]
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    if pretrained:
        with torch.no_grad():
            mean = old.weight.mean(dim=1, keepdim=True) * (old.in_channels / in_channels)
            new.weight.copy_(mean.expand_as(new.weight))
            if old.bias is not None and new.bias is not None:
                new.bias.copy_(old.bias)
    return new


def _blocks(model: nn.Module, head_path: str) -> list[nn.Module]:
    """The model's blocks in forward order (see the module docstring)."""
    head_top = head_path.split(".")[0]
    blocks: list[nn.Module] = []
    for name, child in model.named_children():
        if name == head_top:
            continue
        parts = list(child.children()) if isinstance(child, nn.Sequential) else [child]
        blocks += [p for p in parts if any(True for _ in p.parameters())]
    return blocks


def _torch_home_checkpoint(url: str) -> Path:
    return Path(hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_pretrained(name: str, weights: str, weights_path: str | None) -> dict[str, Any]:
    """The state dict for model ``name``: from ``weights_path`` if given (a state dict, or a
    checkpoint dict with ``state_dict`` / ``model``), else torchvision's ``weights`` enum member
    via ``torch.hub`` (read from ``$TORCH_HOME/hub/checkpoints`` when there, else downloaded)."""
    if weights_path is not None:
        path = Path(os.path.expanduser(str(weights_path)))
        if not path.is_file():
            raise _fail(
                "weights_path", str(weights_path), "no such file", "give the .pth file's path"
            )
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch.load raises many types for a bad file
            raise _fail(
                "weights_path",
                str(path),
                f"not a loadable state dict ({type(err).__name__})",
                "save one with torch.save(model.state_dict(), path)",
            ) from None
        if isinstance(loaded, dict):
            for key in ("state_dict", "model"):
                if isinstance(loaded.get(key), dict):
                    loaded = loaded[key]
        if not isinstance(loaded, dict):
            raise _fail("weights_path", str(path), "holds no state dict", "save model.state_dict()")
        return loaded
    enum = torchvision.models.get_model_weights(name)
    try:
        member = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        names = ["DEFAULT", *(w.name for w in enum)]
        raise _fail(
            "weights", weights, f"not a weight set of {name}", f"use one of {names}"
        ) from None
    target = _torch_home_checkpoint(member.url)
    had_file = target.is_file()
    try:
        return hub.load_state_dict_from_url(member.url, progress=False, check_hash=True)
    except Exception as err:  # download (URLError, OSError, hash mismatch) or torch.load errors
        if had_file:
            raise _fail(
                "pretrained",
                True,
                f"cannot load {target} ({type(err).__name__}: {err})",
                f"delete it to download it again, or set {KEY}.weights_path=FILE",
            ) from None
        raise _fail(
            "pretrained",
            True,
            f"cannot download {member.url} ({type(err).__name__}: {err}; offline?)",
            f"put that file at {target} (TORCH_HOME={Path(hub.get_dir()).parent}), or set "
            f"{KEY}.weights_path=FILE, or {KEY}.pretrained=false",
        ) from None


class TorchvisionBackbone(nn.Module):
    """A torchvision classification model by ``name``, adapted to ``in_channels`` and
    ``num_classes`` (see the module docstring). ``forward`` maps (B, in_channels, H, W) to
    (B, num_classes) logits.

    Args:
        name: a torchvision classification model (``resnet18``, ``resnet50``,
            ``mobilenet_v3_small``, ``efficientnet_b0``, ``convnext_tiny``, ...).
        in_channels, num_classes: from the datamodule.
        pretrained: load pretrained weights (``weights`` from torchvision, or ``weights_path``).
        weights: the weight enum member's name (``DEFAULT``, ``IMAGENET1K_V1``, ...).
        weights_path: a local state dict of the stock model (1000-class head, 3 channels).
        freeze_backbone: train only the head (and a replaced stem).
        finetune_last_n: with ``freeze_backbone``, also train the last N blocks.
    """

    def __init__(
        self,
        name: str,
        in_channels: int,
        num_classes: int,
        pretrained: bool = False,
        weights: str = "DEFAULT",
        weights_path: str | None = None,
        freeze_backbone: bool = False,
        finetune_last_n: int = 0,
    ) -> None:
        super().__init__()
        models = classification_models()
        if name not in models:
            raise _fail(
                "name",
                name,
                "not a torchvision classification model",
                "use e.g. resnet18, resnet50, mobilenet_v3_small, efficientnet_b0, convnext_tiny "
                "(all: torchvision.models.list_models(module=torchvision.models))",
            )
        for key, flag in (("pretrained", pretrained), ("freeze_backbone", freeze_backbone)):
            if not isinstance(flag, bool):
                raise _fail(key, flag, "not a boolean", "use true or false")
        if weights_path is not None and not pretrained:
            raise _fail(
                "weights_path",
                weights_path,
                "is only read with pretrained=true",
                f"set {KEY}.pretrained=true or {KEY}.weights_path=null",
            )
        if isinstance(finetune_last_n, bool) or not isinstance(finetune_last_n, int):
            raise _fail("finetune_last_n", finetune_last_n, "not an integer", "use 0, 1, 2, ...")
        if finetune_last_n < 0:
            raise _fail("finetune_last_n", finetune_last_n, "must be >= 0", "use 0, 1, 2, ...")
        if finetune_last_n and not freeze_backbone:
            raise _fail(
                "finetune_last_n",
                finetune_last_n,
                "has no effect unless the rest is frozen",
                f"set {KEY}.freeze_backbone=true, or {KEY}.finetune_last_n=0",
            )
        self.name = name
        net: nn.Module = torchvision.models.get_model(name, weights=None)
        if pretrained:
            state = load_pretrained(name, weights, weights_path)
            try:
                net.load_state_dict(state)
            except RuntimeError as err:
                first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
                raise _fail(
                    "weights_path" if weights_path else "weights",
                    weights_path or weights,
                    f"does not fit {name} ({first})",
                    f"give the stock {name}'s state dict (3 channels, 1000 classes)",
                ) from None
        replaced: list[nn.Module] = []
        stem_path = _module_path(net, nn.Conv2d, last=False)
        if in_channels != 3:
            if stem_path is None:
                raise _fail("name", name, "has no Conv2d stem to adapt", "use a CNN")
            stem = _new_stem(net.get_submodule(stem_path), in_channels, pretrained)  # type: ignore[arg-type]
            _set_module(net, stem_path, stem)
            replaced.append(stem)
        head_path = _module_path(net, nn.Linear, last=True)
        if head_path is None:
            raise _fail("name", name, "has no Linear classifier head", "use another model")
        old_head = net.get_submodule(head_path)
        head = nn.Linear(old_head.in_features, num_classes)  # type: ignore[arg-type]
        _set_module(net, head_path, head)
        replaced.append(head)
        self.net = net
        self.frozen_bn: list[nn.Module] = []
        if freeze_backbone:
            blocks = _blocks(net, head_path)
            if finetune_last_n > len(blocks):
                raise _fail(
                    "finetune_last_n",
                    finetune_last_n,
                    f"{name} has only {len(blocks)} blocks",
                    f"use 0..{len(blocks)}",
                )
            trainable = replaced + blocks[len(blocks) - finetune_last_n :]
            keep = {id(p) for m in trainable for p in m.parameters()}
            for p in net.parameters():
                p.requires_grad_(id(p) in keep)
            live = {id(m) for t in trainable for m in t.modules()}
            self.frozen_bn = [
                m
                for m in net.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in live
            ]

    def train(self, mode: bool = True) -> TorchvisionBackbone:
        """As ``nn.Module.train``, but frozen BatchNorm layers stay in eval mode."""
        super().train(mode)
        for m in self.frozen_bn:
            m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if not isinstance(out, torch.Tensor):  # googlenet / inception in training mode
            out = out.logits
        return out
