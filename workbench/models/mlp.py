"""Fully connected network (multi-layer perceptron)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ._common import check_dropout, check_num_classes, check_positive_int


class MLP(nn.Module):
    """``Flatten - [Linear - ReLU - Dropout(p)] x len(hidden_sizes) - Linear(num_classes)``.

    Dropout layers are only inserted when ``dropout > 0``. Works on any input
    shape: images ``[N, C, H, W]`` and vectors ``[N, D]`` are flattened to
    ``[N, in_features]``.

    Args:
        in_features: ``prod(input_shape)`` (784 for MNIST, 2 for toy data).
        hidden_sizes: widths of the hidden layers (e.g. ``[512, 512]``).
        num_classes: number of outputs (>= 2).
        dropout: dropout probability after each hidden ReLU.

    Shapes: input ``[N, *input_shape]``, output logits ``[N, num_classes]``.

    Source: the standard fully connected baseline, e.g. the 784-512-512-10
    network of the Keras MNIST example and of Srivastava et al., "Dropout",
    JMLR 2014. Parameter count: 784-512-512-10 has 669,706 parameters
    (784*512+512 + 512*512+512 + 512*10+10).
    """

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], num_classes: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        check_num_classes(num_classes)
        dropout = check_dropout(dropout)
        hidden_sizes = list(hidden_sizes)
        for h in hidden_sizes:
            check_positive_int("hidden_sizes", h)
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for h in hidden_sizes:
            layers += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = h
        layers.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*layers)

    @classmethod
    def for_input(cls, input_shape: Sequence[int], hidden_sizes: Sequence[int], num_classes: int,
                  dropout: float = 0.0) -> "MLP":
        """Build from a per-example input shape such as ``(1, 28, 28)`` or ``(2,)``."""
        return cls(math.prod(input_shape), hidden_sizes, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for inputs ``[N, ...]``."""
        return self.net(x)
