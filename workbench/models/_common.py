"""Helpers shared by the model builders (argument checks, channel scaling, init)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def check_num_classes(num_classes: int) -> int:
    """Return ``num_classes`` after checking it is an integer >= 2."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r} is invalid: must be an integer >= 2")
    return num_classes


def check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid: must be a positive integer")
    return value


def check_width(width: float) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"width={width!r} is invalid: must be a positive number")
    return float(width)


def check_dropout(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0 <= p < 1):
        raise ValueError(f"dropout={p!r} is invalid: must lie in [0, 1)")
    return float(p)


def image_size_hw(image_size: int | Sequence[int], *, model: str, min_size: int = 4) -> tuple[int, int]:
    """Normalise ``image_size`` (``int`` or ``(H, W)``) and reject images smaller than ``min_size``."""
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        hw = (image_size, image_size)
    else:
        hw = tuple(image_size)
        if len(hw) != 2 or any(isinstance(s, bool) or not isinstance(s, int) for s in hw):
            raise ValueError(f"{model}: image_size={image_size!r} must be an int or a pair (H, W) of ints")
    if min(hw) < min_size:
        raise ValueError(f"{model}: images of size {hw[0]}x{hw[1]} are too small; "
                         f"height and width must be at least {min_size}")
    return hw  # type: ignore[return-value]


def scale_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded to the nearest integer, at least 1."""
    return max(1, int(round(channels * width)))


def init_weights(model: nn.Module) -> None:
    """Reference-code initialisation: He-normal convs (fan_out), BN weight 1 / bias 0, linear bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@torch.no_grad()
def flat_features(module: nn.Module, in_shape: tuple[int, ...]) -> int:
    """Number of features ``module`` produces per example, by a dummy forward pass."""
    was_training = module.training
    module.eval()
    try:
        out = module(torch.zeros(1, *in_shape))
    finally:
        module.train(was_training)
    return int(out[0].numel())
