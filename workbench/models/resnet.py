"""ResNet-18 with the CIFAR stem (He et al. 2016), built from torchvision's ``BasicBlock``."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

from ._common import check_num_classes, check_positive_int, check_width, init_weights, scale_channels


class ResNet18(nn.Module):
    """ResNet-18 for small images: 3x3 stem, no max-pool, four stages of two basic blocks.

    Layers: ``conv3x3(C -> 64w, stride 1) - BN - ReLU - [2 x BasicBlock(64w)] -
    [2 x BasicBlock(128w), stride 2] - [2 x BasicBlock(256w), stride 2] -
    [2 x BasicBlock(512w), stride 2] - adaptive avg-pool - Linear(512w, num_classes)``.
    Blocks are :class:`torchvision.models.resnet.BasicBlock` (conv3x3-BN-ReLU-
    conv3x3-BN + shortcut, ReLU); a 1x1 conv + BN shortcut is used when the
    shape changes. ``w`` is the channel multiplier ``width`` (channels rounded,
    at least 1), e.g. 0.125 gives 8-16-32-64 channels for fast CPU demos.

    Global average pooling makes it work on any image of at least 4x4 pixels
    (8x8 digits: 8 -> 8 -> 4 -> 2 -> 1; 32x32 CIFAR: 32 -> 32 -> 16 -> 8 -> 4).

    Args:
        in_channels: input channels ``C``.
        num_classes: number of outputs (>= 2).
        width: channel multiplier (1.0: 64-128-256-512).

    Shapes: input ``[N, C, H, W]``, output logits ``[N, num_classes]``.

    Source: K. He, X. Zhang, S. Ren, J. Sun, "Deep residual learning for image
    recognition", CVPR 2016; the CIFAR-stem ResNet-18 is the variant used by
    SAM (Foret et al. 2021) and most CIFAR code (e.g. kuangliu/pytorch-cifar).
    Parameter count: 11,173,962 with 3 input channels and 10 classes (about
    11.17M, the usually quoted 11.2M); 11,220,132 with 100 classes.
    """

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_num_classes(num_classes)
        width = check_width(width)
        planes = [scale_channels(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self._inplanes = planes[0]
        self.layer1 = self._make_layer(planes[0], 2, stride=1)
        self.layer2 = self._make_layer(planes[1], 2, stride=2)
        self.layer3 = self._make_layer(planes[2], 2, stride=2)
        self.layer4 = self._make_layer(planes[3], 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes[3], num_classes)
        init_weights(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes:
            downsample = nn.Sequential(conv1x1(self._inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self._inplanes, planes, stride, downsample)]
        self._inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for inputs ``[N, ...]``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
