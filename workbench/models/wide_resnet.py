"""Wide residual networks WRN-depth-k (Zagoruyko & Komodakis 2016)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import check_dropout, check_num_classes, check_positive_int, init_weights


class WideBasicBlock(nn.Module):
    """Pre-activation wide block: ``BN-ReLU-conv3x3-[dropout]-BN-ReLU-conv3x3`` + shortcut.

    When the shape changes (``stride != 1`` or ``in_planes != out_planes``) the
    shortcut is a 1x1 convolution applied to the pre-activated input, as in the
    reference implementation.

    Every activation is its own ``nn.ReLU`` module (``relu1``, ``relu2``), not
    ``F.relu``, so forward hooks (feature analyses) see each one.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output: pre-activation residual branch plus the (projected) shortcut."""
        o = self.relu1(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.relu2(self.bn2(o))
        if self.dropout > 0:
            o = F.dropout(o, p=self.dropout, training=self.training)
        o = self.conv2(o)
        return o + identity


class WideResNet(nn.Module):
    """WRN-depth-k: ``conv3x3(C -> 16) - 3 stages of N wide blocks - BN - ReLU - avg-pool - fc``.

    The stages have ``16k, 32k, 64k`` channels and strides 1, 2, 2, with
    ``N = (depth - 4) / 6`` :class:`WideBasicBlock` each (so ``depth`` must be
    16, 22, 28, 40, ...). Dropout (if > 0) sits between the two convolutions
    of every block. Global average pooling makes it work on any image of at
    least 4x4 pixels (32x32 -> 8x8 before pooling, as in the paper).

    Args:
        in_channels: input channels ``C``.
        num_classes: number of outputs (>= 2).
        depth: total depth (``(depth - 4) % 6 == 0``).
        widen_factor: ``k``.
        dropout: dropout probability inside the blocks (the paper uses 0.3).

    Shapes: input ``[N, C, H, W]``, output logits ``[N, num_classes]``.

    Source: S. Zagoruyko, N. Komodakis, "Wide residual networks", BMVC 2016.
    Parameter counts (3 input channels, 10 classes): WRN-28-10 36,479,194
    (published 36.5M), WRN-16-8 10,961,370 (published 11.0M), WRN-40-4
    8,949,210 (published 8.9M); WRN-16-1 175,066.
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int = 28, widen_factor: int = 10,
                 dropout: float = 0.0) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_num_classes(num_classes)
        check_positive_int("widen_factor", widen_factor)
        dropout = check_dropout(dropout)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"wide_resnet: depth={depth!r} is invalid: (depth - 4) must be a positive "
                             "multiple of 6 (e.g. 16, 22, 28, 40)")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        blocks = []
        in_planes = widths[0]
        for out_planes, stride in zip(widths[1:], (1, 2, 2)):
            stage = []
            for i in range(n):
                stage.append(WideBasicBlock(in_planes, out_planes, stride if i == 0 else 1, dropout))
                in_planes = out_planes
            blocks.append(nn.Sequential(*stage))
        self.block1, self.block2, self.block3 = blocks
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for inputs ``[N, ...]``."""
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)
