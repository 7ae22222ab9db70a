"""Multinomial logistic regression (a single linear layer on flattened inputs)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ._common import check_num_classes, check_positive_int


class LogisticRegression(nn.Module):
    """``Flatten - Linear(in_features, num_classes)``: multinomial logistic regression.

    Trained with cross-entropy this is softmax regression, a convex problem.

    Args:
        in_features: ``prod(input_shape)``.
        num_classes: number of outputs (>= 2; two logits also for binary problems).

    Shapes: input ``[N, *input_shape]``, output logits ``[N, num_classes]``.

    Source: the classic linear baseline (e.g. LeCun et al. 1998 report a linear
    classifier on MNIST). Parameter count: ``(in_features + 1) * num_classes``,
    i.e. 7,850 for MNIST (784 -> 10), 650 for 8x8 digits, 6 for 2-D data with
    two classes.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        check_num_classes(num_classes)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(in_features, num_classes)

    @classmethod
    def for_input(cls, input_shape: Sequence[int], num_classes: int) -> "LogisticRegression":
        """Build from a per-example input shape such as ``(1, 8, 8)`` or ``(2,)``."""
        return cls(math.prod(input_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for inputs ``[N, ...]``."""
        return self.linear(self.flatten(x))
