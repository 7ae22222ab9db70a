"""LeNet-5 (LeCun et al. 1998), with ReLU and max-pooling as usually run today."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._common import check_num_classes, check_positive_int, check_width, flat_features, image_size_hw, scale_channels


class LeNet5(nn.Module):
    """LeNet-5: conv(5x5, 6) - pool - conv(5x5, 16) - pool - fc 120 - fc 84 - fc classes.

    Layers: ``conv(C -> 6w, 5x5) - ReLU - maxpool 2 - conv(6w -> 16w, 5x5) - ReLU -
    maxpool 2 - Linear(F, 120) - ReLU - Linear(120, 84) - ReLU - Linear(84, num_classes)``,
    where ``w`` is the channel multiplier ``width`` (channels rounded, at least 1)
    and ``F`` the flattened feature size, found by a dummy forward pass.

    The padding adapts to the input size so that small images keep a usable
    feature map:

    * conv1 uses padding 2 when the image is smaller than 32 pixels (the usual
      choice for 28x28 MNIST: 28 -> 28 -> 14 -> 10 -> 5) and padding 0 from 32
      pixels on (classic LeNet-5 on 32x32: 32 -> 28 -> 14 -> 10 -> 5);
    * conv2 uses padding 0 unless the map after the first pooling is smaller
      than 10, then padding 2 (8x8 digits: 8 -> 8 -> 4 -> 4 -> 2).

    Args:
        in_channels: input channels ``C``.
        image_size: ``H`` (square) or ``(H, W)``; at least 4.
        num_classes: number of outputs (>= 2).
        width: channel multiplier (1.0: 6 and 16 channels).

    Shapes: input ``[N, C, H, W]``, output logits ``[N, num_classes]``.

    Source: Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning
    applied to document recognition", Proc. IEEE 1998. Parameter count: the
    original (with its sparse C3 table and RBF output) has about 60k trainable
    parameters; this dense variant has 61,706 on ``(1, 28, 28)`` with 10
    classes and also 61,706 on ``(1, 32, 32)`` (62,006 on ``(3, 32, 32)``).
    """

    def __init__(self, in_channels: int, image_size: int | Sequence[int], num_classes: int,
                 width: float = 1.0) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_num_classes(num_classes)
        width = check_width(width)
        h, w = image_size_hw(image_size, model="lenet5", min_size=4)
        c1, c2 = scale_channels(6, width), scale_channels(16, width)
        pad1 = 2 if min(h, w) < 32 else 0
        after_pool1 = (min(h, w) + 2 * pad1 - 4) // 2
        pad2 = 2 if after_pool1 < 10 else 0
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=pad1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=pad2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        n_flat = flat_features(self.features, (in_channels, h, w))
        self.classifier = nn.Sequential(
            nn.Linear(n_flat, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for inputs ``[N, ...]``."""
        return self.classifier(self.features(x))
