"""CIFAR DenseNet and DenseNet-BC (Huang et al. 2017)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import check_dropout, check_num_classes, check_positive_int, init_weights


class _DenseLayer(nn.Module):
    """``BN-ReLU-conv3x3(k)`` or, with bottleneck, ``BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k)``.

    The output is concatenated to the input along the channels. Each ReLU is its own module.
    """

    def __init__(self, in_planes: int, growth_rate: int, bottleneck: bool, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.bottleneck = bottleneck
        if bottleneck:
            inter = 4 * growth_rate
            self.bn0 = nn.BatchNorm2d(in_planes)
            self.relu0 = nn.ReLU()
            self.conv0 = nn.Conv2d(in_planes, inter, 1, bias=False)
            in_planes = inter
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_planes, growth_rate, 3, padding=1, bias=False)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, p=self.dropout, training=self.training) if self.dropout > 0 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = x
        if self.bottleneck:
            o = self._drop(self.conv0(self.relu0(self.bn0(o))))
        o = self._drop(self.conv(self.relu(self.bn(o))))
        return torch.cat([x, o], 1)


class _Transition(nn.Module):
    """``BN-ReLU-conv1x1-[dropout]-avgpool2``."""

    def __init__(self, in_planes: int, out_planes: int, dropout: float) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.conv(self.relu(self.bn(x)))
        if self.dropout > 0:
            o = F.dropout(o, p=self.dropout, training=self.training)
        return F.avg_pool2d(o, 2)


class DenseNet(nn.Module):
    """CIFAR DenseNet: ``conv3x3 - [dense block - transition] x 2 - dense block - BN - ReLU - avg-pool - fc``.

    The pooling is global average pooling.

    * Plain (``bottleneck=False``): stem of 16 channels, ``(depth - 4) / 3``
      layers per block, each ``BN-ReLU-conv3x3`` adding ``growth_rate``
      channels; transitions ``BN-ReLU-conv1x1`` keep the channel count (no
      compression) and halve the resolution with 2x2 average pooling.
    * DenseNet-BC (``bottleneck=True``): stem of ``2 * growth_rate`` channels,
      ``(depth - 4) / 6`` layers per block, each ``BN-ReLU-conv1x1(4k)-BN-ReLU-
      conv3x3(k)``; transitions compress the channels by 0.5.

    Dropout (if > 0) follows every convolution except the stem. Images must be
    at least 4x4 pixels (two 2x2 poolings before the global pooling).

    Args:
        in_channels: input channels ``C``.
        num_classes: number of outputs (>= 2).
        depth: total depth (40, 100, ...; ``(depth - 4) % 3 == 0``, ``% 6`` for BC).
        growth_rate: ``k``.
        bottleneck: DenseNet-BC instead of plain DenseNet.
        dropout: dropout probability (the paper uses 0.2 without augmentation).

    Shapes: input ``[N, C, H, W]``, output logits ``[N, num_classes]``.

    Source: G. Huang, Z. Liu, L. van der Maaten, K. Q. Weinberger, "Densely
    connected convolutional networks", CVPR 2017. Published parameter counts
    (Table 2): DenseNet (L=40, k=12) 1.0M, DenseNet-BC (L=100, k=12) 0.8M.
    This implementation (3 input channels, 10 classes): DenseNet-40 k=12
    1,019,722 (1,001,626 without the BN affine parameters); DenseNet-BC-100
    k=12 769,162 (745,174 without BN).

    Every activation is its own ``nn.ReLU`` module (no ``F.relu``), so forward
    hooks (feature analyses) see each one; the top-level ``relu`` is the
    activation right before global average pooling (the "end of the network"
    layer of [Andriushchenko 2024, §6.4.3]).
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int = 40, growth_rate: int = 12,
                 bottleneck: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_num_classes(num_classes)
        check_positive_int("growth_rate", growth_rate)
        dropout = check_dropout(dropout)
        step = 6 if bottleneck else 3
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 4 + step or (depth - 4) % step != 0:
            raise ValueError(f"densenet: depth={depth!r} is invalid: (depth - 4) must be a positive multiple "
                             f"of {step} {'for DenseNet-BC (e.g. 100)' if bottleneck else '(e.g. 40)'}")
        n_layers = (depth - 4) // step
        planes = 2 * growth_rate if bottleneck else 16
        compression = 0.5 if bottleneck else 1.0
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for b in range(3):
            layers = []
            for _ in range(n_layers):
                layers.append(_DenseLayer(planes, growth_rate, bottleneck, dropout))
                planes += growth_rate
            stages.append(nn.Sequential(*layers))
            if b < 2:
                out_planes = int(planes * compression)
                stages.append(_Transition(planes, out_planes, dropout))
                planes = out_planes
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        x = self.features(self.conv1(x))
        x = self.relu(self.bn(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)
