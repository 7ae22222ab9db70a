"""Teacher–student ReLU networks of [Andriushchenko 2024, Ch. 6] (Figs. 6.5, 6.10, 6.14) and their data generator.

Source: [Andriushchenko 2024, §6.4.2] (three-layer teacher with 2 neurons per hidden layer, student with 10,
n = 50) and §6.9 (two-layer nets without biases in the teacher–student setup of [Chizat 2019], large
initialisation). Sizes, input distribution and initialisation scales are not in the thesis; defaults follow the
public code ``tml-epfl/sgd-sparse-features`` (``fc_nets.py``, ``fc_nets_multi_layer.ipynb``,
``fc_nets_two_layer.ipynb``):

* three-layer (Fig. 6.5): d = 5, inputs on the unit sphere, teacher hidden [2, 2], student [10, 10], biases, Gaussian
  weights ×1.0 (teacher) and ×0.8 (student), n = 50;
* two-layer (Figs. 6.10, 6.14): d = 2, teacher with 3 unit-norm neurons and ±1 output weights, student 20 neurons,
  no biases, student init scales (0.5, 0.0) for (first, second) layer, n = 15.

:class:`ReLUNet` uses ``nn.Linear`` and ``nn.ReLU`` modules, so the analysis suite's forward hooks
(:mod:`workbench.analysis.features`) see every hidden layer. Output: one scalar per input (regression).

Part of the core: no UI imports.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ReLUNet", "TeacherStudentData", "teacher_student_data", "make_student", "angle_between", "TWO_LAYER",
           "THREE_LAYER"]

#: Public-code defaults of the three-layer setup (Fig. 6.5).
THREE_LAYER = dict(d=5, n=50, teacher_hidden=(2, 2), student_hidden=(10, 10), teacher_scale=1.0, student_scale=0.8,
                   bias=True, seed=5)
#: Public-code defaults of the two-layer setup of Chizat et al. (Figs. 6.10, 6.14).
TWO_LAYER = dict(d=2, n=15, teacher_hidden=(3,), student_hidden=(20,), student_scales=(0.5, 0.0), bias=False, seed=0)


class ReLUNet(nn.Module):
    """Fully connected ReLU network ``R^d -> R``: ``Linear -> ReLU -> ... -> Linear``.

    Args:
        d: input dimension.
        hidden: widths of the hidden layers (e.g. ``(10, 10)``).
        bias: biases in every layer.
        init_scales: one Gaussian standard deviation per weight matrix (``len(hidden) + 1`` values) — weights are
            drawn ``scale · N(0, 1)`` (public code ``init_gaussian``); biases keep PyTorch's default initialisation.
            ``None`` keeps PyTorch's default initialisation everywhere.
        generator: seeds the Gaussian draws.
        dtype: parameter dtype.

    Attributes ``layers`` (``nn.ModuleList`` of ``nn.Linear``) and ``relus`` (one ``nn.ReLU`` per hidden layer,
    named ``relus.0``, ``relus.1``, ...). Input ``[N, d]`` → output ``[N]``.

    Raises:
        ValueError: non-positive sizes or a wrong number of scales.
    """

    def __init__(self, d: int, hidden: Sequence[int], *, bias: bool = True, init_scales: Sequence[float] | None = None,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if d < 1 or not hidden or min(hidden) < 1:
            raise ValueError(f"need d >= 1 and positive hidden widths, got d={d}, hidden={hidden}")
        sizes = (d, *hidden, 1)
        self.d, self.hidden, self.bias = d, hidden, bias
        self.layers = nn.ModuleList(nn.Linear(sizes[i], sizes[i + 1], bias=bias, dtype=dtype)
                                    for i in range(len(sizes) - 1))
        self.relus = nn.ModuleList(nn.ReLU() for _ in hidden)
        if init_scales is not None:
            if len(init_scales) != len(self.layers):
                raise ValueError(f"need {len(self.layers)} init scales (one per weight matrix), got {len(init_scales)}")
            with torch.no_grad():
                for lin, s in zip(self.layers, init_scales):
                    lin.weight.copy_(float(s) * torch.randn(lin.weight.shape, generator=generator, dtype=dtype))

    def features(self, x: Tensor) -> list[Tensor]:
        """Post-ReLU activations of every hidden layer: list of ``[N, width_l]``."""
        out = []
        for lin, act in zip(self.layers[:-1], self.relus):
            x = act(lin(x))
            out.append(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """The network's output ``[N]`` for inputs ``[N, d]``."""
        for lin, act in zip(self.layers[:-1], self.relus):
            x = act(lin(x))
        return self.layers[-1](x).squeeze(-1)

    def extra_repr(self) -> str:
        """Sizes shown in ``repr``: input dimension, hidden widths, biases."""
        return f"d={self.d}, hidden={self.hidden}, bias={self.bias}"


@dataclass
class TeacherStudentData:
    """A teacher network and data labelled by it.

    Attributes:
        teacher: the :class:`ReLUNet` that labels the data (parameters frozen).
        x_train ``[n, d]``, y_train ``[n]``, x_test ``[n_test, d]``, y_test ``[n_test]``.
        teacher_directions: ``[m, d]`` unit first-layer teacher neurons (Fig. 6.10).
        seed: generator seed.
    """

    teacher: ReLUNet
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    teacher_directions: Tensor
    seed: int


def _sphere(n: int, d: int, g: torch.Generator, dtype) -> Tensor:
    x = torch.randn(n, d, generator=g, dtype=dtype)
    return x / x.norm(dim=1, keepdim=True)


def teacher_student_data(*, d: int = 5, n: int = 50, teacher_hidden: Sequence[int] = (2, 2), teacher_scale: float = 1.0,
                         bias: bool = True, n_test: int = 1000, chizat: bool = False, seed: int = 5,
                         dtype: torch.dtype = torch.float64) -> TeacherStudentData:
    """Draw a random teacher ReLU net and inputs uniform on the unit sphere S^{d−1}, labelled by the teacher.

    Args:
        d: input dimension.
        n: number of training points.
        teacher_hidden: teacher widths (three-layer setup: ``(2, 2)``; two-layer: ``(m,)``).
        teacher_scale: Gaussian scale of the teacher weights (public code 1.0).
        bias: biases in the teacher.
        n_test: number of test points.
        chizat: the two-layer teacher of Chizat et al.: first-layer rows normalised to unit norm, output weights ±1
            (random signs), no biases (requires ``len(teacher_hidden) == 1``).
        seed: seeds the teacher and the inputs.
        dtype: dtype of the inputs, labels and teacher weights.

    Raises:
        ValueError: ``chizat`` with more than one hidden layer, or non-positive sizes.
    """
    if n < 1 or n_test < 1:
        raise ValueError(f"need n, n_test >= 1, got n={n}, n_test={n_test}")
    g = torch.Generator().manual_seed(int(seed))
    depth = len(teacher_hidden) + 1
    if chizat:
        if len(teacher_hidden) != 1:
            raise ValueError("the Chizat et al. teacher has exactly one hidden layer")
        teacher = ReLUNet(d, teacher_hidden, bias=False, init_scales=[1.0, 1.0], generator=g, dtype=dtype)
        with torch.no_grad():
            W = teacher.layers[0].weight
            W.div_(W.norm(dim=1, keepdim=True))
            signs = torch.randint(0, 2, (1, teacher_hidden[0]), generator=g).to(dtype) * 2 - 1
            teacher.layers[1].weight.copy_(signs)
    else:
        torch.manual_seed(int(seed))  # PyTorch's default bias initialisation uses the global generator
        teacher = ReLUNet(d, teacher_hidden, bias=bias, init_scales=[teacher_scale] * depth, generator=g, dtype=dtype)
    for p in teacher.parameters():
        p.requires_grad_(False)
    x_train, x_test = _sphere(n, d, g, dtype), _sphere(n_test, d, g, dtype)
    W1 = teacher.layers[0].weight.detach()
    with torch.no_grad():
        return TeacherStudentData(teacher, x_train, teacher(x_train), x_test, teacher(x_test),
                                  W1 / W1.norm(dim=1, keepdim=True).clamp_min(1e-300), int(seed))


def make_student(d: int, hidden: Sequence[int], *, scales: Sequence[float] | float = 0.8, bias: bool = True,
                 seed: int = 0, dtype: torch.dtype = torch.float64) -> ReLUNet:
    """A student :class:`ReLUNet` with Gaussian weights.

    ``scales`` is one standard deviation per weight matrix or a single value. Three-layer setup: ``scales=0.8``,
    biases; two-layer: ``scales=(0.5, 0.0)``, no biases.
    """
    depth = len(tuple(hidden)) + 1
    sc = [float(scales)] * depth if isinstance(scales, (int, float)) else [float(s) for s in scales]
    torch.manual_seed(int(seed) + 1)  # default bias init
    return ReLUNet(d, hidden, bias=bias, init_scales=sc, generator=torch.Generator().manual_seed(int(seed) + 1),
                   dtype=dtype)


def angle_between(a: Tensor, b: Tensor) -> Tensor:
    """Angles (radians) between rows of ``a [m, d]`` and ``b [k, d]``: ``[m, k]``."""
    an = a / a.norm(dim=1, keepdim=True).clamp_min(1e-300)
    bn = b / b.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return torch.arccos((an @ bn.T).clamp(-1, 1))

