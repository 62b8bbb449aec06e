"""The CIFAR ResNet-32 of the long-tail papers, with a linear or a cosine (normalised) head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imblab.errors import config_error
from imblab.models.heads import classifier_head


class ShortcutA(nn.Module):
    """He et al.'s option-A shortcut: subsample by 2 and zero-pad the channels
    (``planes // 4`` on each side), parameter-free."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with ReLU and an identity (or option-A) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = ShortcutA(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """ResNet-(6n+2) for 32 x 32 images (He et al. 2016, section 4.2): a 3x3 conv with 16
    channels, three stages of ``n`` basic blocks with 16, 32, 64 channels (the 2nd and 3rd
    stride 2, option-A shortcuts), global average pooling, then the head. ``blocks=5`` is
    ResNet-32 (0.46M parameters with 10 classes), as ``ResNet_s`` of ``kaidic/LDAM-DRW``
    (``models/resnet_cifar.py``): Kaiming-normal initialisation of every conv and of the linear
    head's weight (its bias: PyTorch's default), BatchNorm at its defaults.

    Args:
        in_channels: image channels (3 for CIFAR).
        num_classes: outputs of the head.
        blocks: basic blocks per stage (5: ResNet-32, 3: ResNet-20, 9: ResNet-56).
        head: ``linear`` (``nn.Linear(64, C)``) or ``cosine``
            (:class:`~imblab.models.heads.NormedLinear`, the
            head Cao et al. use with the LDAM loss).
    """

    def __init__(
        self, in_channels: int, num_classes: int, blocks: int = 5, head: str = "linear"
    ) -> None:
        super().__init__()
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
            raise config_error("model.backbone.blocks", blocks, "not an integer >= 1", "e.g. 5")
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers: list[nn.Module] = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks):
                layers.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.head = classifier_head(head, 64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.head(out.mean(dim=(2, 3)))
