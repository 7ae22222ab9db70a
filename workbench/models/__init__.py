"""Model zoo: LeNet-5, MLP, logistic regression, CIFAR ResNet-18, Wide ResNet, DenseNet.

:func:`build_model` turns a :class:`workbench.config.ModelConfig` plus the
per-example input shape and the number of classes into a ``torch.nn.Module``
that maps a batch ``[N, *input_shape]`` to logits ``[N, num_classes]``::

    from workbench.config import ModelConfig
    from workbench.models import build_model, count_parameters

    model = build_model(ModelConfig(name="lenet5"), (1, 28, 28), 10)
    count_parameters(model)   # 61706

``input_shape`` is ``(C, H, W)`` for images (``(1, 8, 8)`` sklearn digits,
``(1, 28, 28)`` MNIST, ``(3, 32, 32)`` CIFAR) or ``(D,)`` for vector data
(``(2,)`` for the toy 2-D datasets). Only ``mlp`` and ``logistic_regression``
accept vector input; the convolutional models need ``(C, H, W)`` with
``H, W >= 4``.

:data:`MODEL_REGISTRY` maps every name of :data:`workbench.config.MODEL_CHOICES`
to a factory ``(cfg, input_shape, num_classes) -> nn.Module``; the classes
(:class:`LeNet5`, :class:`MLP`, ...) can also be used directly.

This module is part of the core: it imports neither ``ipywidgets`` nor ``plotly``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from torch import nn

from ..config import MODEL_CHOICES, ModelConfig
from ._common import check_num_classes
from .densenet import DenseNet
from .lenet import LeNet5
from .linear import LogisticRegression
from .mlp import MLP
from .resnet import ResNet18
from .wide_resnet import WideBasicBlock, WideResNet

__all__ = [
    "build_model", "count_parameters", "MODEL_REGISTRY", "VECTOR_MODELS",
    "LeNet5", "MLP", "LogisticRegression", "ResNet18", "WideResNet", "WideBasicBlock", "DenseNet",
]

#: Models that accept vector input ``(D,)`` (they flatten any input shape).
VECTOR_MODELS = ("mlp", "logistic_regression")


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"model {name!r} is convolutional and needs image input of shape (C, H, W), "
            f"got input_shape={input_shape!r}; models that accept vector input (D,) are: "
            + ", ".join(VECTOR_MODELS))
    c, h, w = input_shape
    if min(h, w) < 4:
        raise ValueError(f"model {name!r} needs images of at least 4x4 pixels, got input_shape={input_shape!r}")
    return c, h, w


def _lenet5(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c, h, w = _image_shape("lenet5", input_shape)
    return LeNet5(c, (h, w), num_classes, width=cfg.width)


def _mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return MLP(math.prod(input_shape), cfg.hidden_sizes, num_classes, dropout=cfg.dropout)


def _logistic_regression(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return LogisticRegression(math.prod(input_shape), num_classes)


def _resnet18(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c, _, _ = _image_shape("resnet18", input_shape)
    return ResNet18(c, num_classes, width=cfg.width)


def _wide_resnet(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c, _, _ = _image_shape("wide_resnet", input_shape)
    return WideResNet(c, num_classes, depth=cfg.depth, widen_factor=cfg.widen_factor, dropout=cfg.dropout)


def _densenet(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c, _, _ = _image_shape("densenet", input_shape)
    return DenseNet(c, num_classes, depth=cfg.depth, growth_rate=cfg.growth_rate,
                    bottleneck=cfg.bottleneck, dropout=cfg.dropout)


#: name -> factory ``(cfg, input_shape, num_classes) -> nn.Module``; keys equal ``MODEL_CHOICES``.
MODEL_REGISTRY: dict[str, Callable[[ModelConfig, tuple[int, ...], int], nn.Module]] = {
    "lenet5": _lenet5,
    "mlp": _mlp,
    "resnet18": _resnet18,
    "wide_resnet": _wide_resnet,
    "densenet": _densenet,
    "logistic_regression": _logistic_regression,
}


def build_model(cfg: ModelConfig, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Build the model named by ``cfg.name`` for per-example ``input_shape`` and ``num_classes``.

    Args:
        cfg: model configuration (name and size parameters).
        input_shape: per-example shape, ``(C, H, W)`` for images or ``(D,)`` for vectors.
        num_classes: number of output logits (>= 2).

    Returns:
        A freshly initialised module mapping ``[N, *input_shape]`` to ``[N, num_classes]``.

    Raises:
        ValueError: unknown model name (the message lists the choices), a
            malformed ``input_shape``, a convolutional model asked for vector
            input, images smaller than 4x4, or ``num_classes < 2``.
    """
    name = cfg.name
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}: choose one of " + ", ".join(repr(c) for c in MODEL_CHOICES))
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"input_shape={input_shape!r} must be a tuple of positive integers") from None
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"input_shape={input_shape!r} must be a non-empty tuple of positive integers, "
                         "e.g. (1, 28, 28) or (2,)")
    check_num_classes(num_classes)
    return MODEL_REGISTRY[name](cfg, shape, num_classes)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` by default)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
