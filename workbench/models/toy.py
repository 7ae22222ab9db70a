"""Toy models of [Andriushchenko 2024]: diagonal linear networks and 1-D ReLU nets.

The ReLU nets have one hidden layer and fit a 1-D regression.

Both models keep a leading **batch-of-models** dimension ``S`` on every weight
tensor, so that several seeds / learning rates / initialisations train as one
vectorised computation (``S = 1`` for a single model). They are plain
``nn.Module``s with ``nn.Parameter`` weights, so autograd, ``torch.func`` and
the optimizers work on them; the thesis reproductions in
:mod:`workbench.thesis` use their closed-form gradients instead (faster on a CPU).

Diagonal linear networks
------------------------
Two parametrizations appear in the thesis and they are **never mixed silently**
here — ``parametrization`` is a required, explicit choice:

* ``"uv"``: β = u ⊙ v (Ch. 6 §6.3-6.4.1, Ch. 7 Eq. 7.6, and the public
  code of Ch. 5 ``tml-epfl/understanding-sam/diagonal_linear_nets``). The
  Ch. 5 code initialises u = c·1, v = 0.
* ``"w_pm"``: β = w₊² − w₋² (Ch. 5 theory, Eq. 5.5), initialised
  w₊ = w₋ = α.

The two are linked by u = w₊ + w₋, v = w₊ − w₋ (then u ⊙ v = w₊² − w₋²), so the
Ch. 5 code's ``u0 = 0.1`` is the thesis' α = 0.05 (the code's ``diagonal_linear_nets``).
:meth:`DiagonalLinearNet.to_parametrization` converts explicitly.

Loss normalisations (:data:`LOSS_NORMALIZATIONS`, :func:`square_loss`) — each
chapter uses a different one, and the constants inside SAM ascent steps change
with it:

* ``"quarter_mean"``: L = (1/4n) Σ (⟨β, x_i⟩ − y_i)²  — Ch. 5 theory, Eq. 5.5;
* ``"half_mean"``:    L = (1/2n) ‖Xβ − y‖²           — Ch. 5 code, Ch. 6 Eq. 6.1;
* ``"sum"``:          L = ‖Xβ − y‖²                  — Ch. 7 Eq. 7.6.

One-hidden-layer ReLU net (1-D regression)
------------------------------------------
h(x) = Σ_j a_j ReLU(w_j x + b_j) (no output bias), the model of Fig. 5.7
(§5.5.3) and Fig. 6.4 (§6.4.2), initialised as in [Blanc 2020] / the
public notebook ``understanding-sam/one_layer_relu_nets/1d_nn.ipynb``:
w_j = ±2.5 (random sign), b_j ~ 2.5·N(0, 1), a_j ~ 4·N(0, 1) (all × ``init_scale``).

Part of the core: no UI imports.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "PARAMETRIZATIONS", "LOSS_NORMALIZATIONS", "square_loss", "DiagonalLinearNet", "ReLU1D",
    "uv_to_w_pm", "w_pm_to_uv",
]

#: The two diagonal-net parametrizations (see module docstring).
PARAMETRIZATIONS = ("uv", "w_pm")
#: Square-loss normalisations used by the chapters (see module docstring).
LOSS_NORMALIZATIONS = ("quarter_mean", "half_mean", "sum")


def square_loss(pred: Tensor, y: Tensor, normalization: str) -> Tensor:
    """Square loss with an explicit normalisation.

    Args:
        pred: predictions ``[..., n]``.
        y: targets ``[n]`` (broadcast against ``pred``).
        normalization: one of :data:`LOSS_NORMALIZATIONS` — ``"quarter_mean"``
            (1/4n)Σr² (Eq. 5.5), ``"half_mean"`` (1/2n)Σr² (Eq. 6.1, Ch. 5 code),
            ``"sum"`` Σr² (Eq. 7.6).

    Returns:
        ``[...]`` loss per model.

    Raises:
        ValueError: unknown normalisation.
    """
    r2 = (pred - y).pow(2).sum(-1)
    n = pred.shape[-1]
    if normalization == "quarter_mean":
        return r2 / (4 * n)
    if normalization == "half_mean":
        return r2 / (2 * n)
    if normalization == "sum":
        return r2
    raise ValueError(f"normalization={normalization!r} is invalid: choose one of {LOSS_NORMALIZATIONS}")


def uv_to_w_pm(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(u, v) -> (w₊, w₋) with w₊ = (u+v)/2, w₋ = (u−v)/2, so w₊² − w₋² = u ⊙ v."""
    return (u + v) / 2, (u - v) / 2


def w_pm_to_uv(w_plus: Tensor, w_minus: Tensor) -> tuple[Tensor, Tensor]:
    """(w₊, w₋) -> (u, v) with u = w₊ + w₋, v = w₊ − w₋, so u ⊙ v = w₊² − w₋²."""
    return w_plus + w_minus, w_plus - w_minus


def _check_param(p: str) -> str:
    if p not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization={p!r} is invalid: choose one of {PARAMETRIZATIONS} "
                         "('uv': beta = u*v; 'w_pm': beta = w_plus**2 - w_minus**2)")
    return p


class DiagonalLinearNet(nn.Module):
    """A batch of S diagonal linear networks h(x) = ⟨β, x⟩ on R^d.

    Args:
        d: input dimension.
        parametrization: ``"uv"`` (β = u ⊙ v; weights ``u``, ``v``) or
            ``"w_pm"`` (β = w₊² − w₋²; weights ``w_plus``, ``w_minus``). Required.
        init_scale: for ``"uv"`` the value c of u₀ = c·1, v₀ = 0 (Ch. 5/6 code);
            for ``"w_pm"`` the value α of w₊ = w₋ = α (Eq. 5.5). A float or a
            ``[S]`` / ``[S, d]`` tensor (per-model / per-coordinate scale).
        n_models: S, the number of models held (leading weight dimension).
        dtype: weight dtype (default float64: the reproductions reach train
            losses of 1e-10 and below).

    Weights are ``nn.Parameter``s of shape ``[S, d]``.

    Raises:
        ValueError: bad parametrization, ``d < 1`` or ``n_models < 1``.
    """

    def __init__(self, d: int, parametrization: str, init_scale: float | Tensor = 0.1, n_models: int = 1,
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        if d < 1 or n_models < 1:
            raise ValueError(f"need d >= 1 and n_models >= 1, got d={d}, n_models={n_models}")
        self.parametrization = _check_param(parametrization)
        self.d, self.n_models = d, n_models
        scale = torch.as_tensor(init_scale, dtype=dtype)
        if scale.dim() == 1:
            scale = scale[:, None]
        base = torch.ones(n_models, d, dtype=dtype) * scale
        if self.parametrization == "uv":
            self.u = nn.Parameter(base.clone())
            self.v = nn.Parameter(torch.zeros(n_models, d, dtype=dtype))
        else:
            self.w_plus = nn.Parameter(base.clone())
            self.w_minus = nn.Parameter(base.clone())

    @classmethod
    def from_weights(cls, a: Tensor, b: Tensor, parametrization: str) -> "DiagonalLinearNet":
        """Build from explicit weights ``[S, d]`` (``(u, v)`` or ``(w_plus, w_minus)``)."""
        if a.shape != b.shape or a.dim() != 2:
            raise ValueError(f"weights must both be [S, d], got {tuple(a.shape)} and {tuple(b.shape)}")
        net = cls(a.shape[1], parametrization, 0.0, a.shape[0], dtype=a.dtype)
        with torch.no_grad():
            first, second = net.weights()
            first.copy_(a)
            second.copy_(b)
        return net

    def weights(self) -> tuple[Tensor, Tensor]:
        """The two weight tensors ``[S, d]``: ``(u, v)`` or ``(w_plus, w_minus)``."""
        return (self.u, self.v) if self.parametrization == "uv" else (self.w_plus, self.w_minus)

    def beta(self) -> Tensor:
        """Linear predictor β ``[S, d]`` (u ⊙ v or w₊² − w₋²)."""
        a, b = self.weights()
        return a * b if self.parametrization == "uv" else a.pow(2) - b.pow(2)

    def forward(self, x: Tensor) -> Tensor:
        """Predictions ``[S, n]`` for inputs ``x`` ``[n, d]``."""
        if x.dim() != 2 or x.shape[1] != self.d:
            raise ValueError(f"x must be [n, {self.d}], got {tuple(x.shape)}")
        return self.beta().to(x.dtype) @ x.T

    def loss(self, x: Tensor, y: Tensor, normalization: str) -> Tensor:
        """Square loss per model ``[S]`` with an explicit normalisation (:func:`square_loss`)."""
        return square_loss(self(x), y, normalization)

    def jacobian_features(self, x: Tensor) -> Tensor:
        """Jacobian φ(X) = ∂h(x_i)/∂(first, second weights): ``[S, n, 2d]``.

        ``"uv"``: rows [x ⊙ v, x ⊙ u] (as in ``tml-epfl/sgd-sparse-features``); ``"w_pm"``:
        rows [2x ⊙ w₊, −2x ⊙ w₋].
        """
        a, b = (w.detach() for w in self.weights())
        if self.parametrization == "uv":
            return torch.cat([x[None] * b[:, None], x[None] * a[:, None]], dim=-1)
        return torch.cat([2 * x[None] * a[:, None], -2 * x[None] * b[:, None]], dim=-1)

    def to_parametrization(self, parametrization: str) -> "DiagonalLinearNet":
        """A new net with the same β in the other (or same) parametrization.

        ``"uv"`` -> ``"w_pm"`` uses w₊ = (u+v)/2, w₋ = (u−v)/2 and back
        u = w₊ + w₋, v = w₊ − w₋ (exact; same function, different weights).
        """
        _check_param(parametrization)
        a, b = (w.detach() for w in self.weights())
        if parametrization == self.parametrization:
            return DiagonalLinearNet.from_weights(a.clone(), b.clone(), parametrization)
        conv = uv_to_w_pm if self.parametrization == "uv" else w_pm_to_uv
        return DiagonalLinearNet.from_weights(*conv(a, b), parametrization)

    def extra_repr(self) -> str:
        """Sizes shown in ``repr``: input dimension, number of models, parametrization."""
        return f"d={self.d}, n_models={self.n_models}, parametrization={self.parametrization!r}"


class ReLU1D(nn.Module):
    """A batch of S one-hidden-layer ReLU nets on scalar inputs: h(x) = Σ_j a_j ReLU(w_j x + b_j).

    Args:
        width: number of hidden ReLUs (100 in Fig. 5.7, §5.5.3).
        n_models: S, the number of nets held (e.g. 5 seeds).
        seeds: optional list of S integer seeds, one per net (each net is then
            drawn from its own ``torch.Generator``, so net k is identical whether
            it is trained alone or in a batch). Default ``range(S)``.
        init_scale: multiplies all three initial scales (Blanc et al.: 2.5, 2.5, 4).
        dtype: weight dtype.

    Weights (``nn.Parameter``): ``w`` ``[S, width]`` (input weights), ``b``
    ``[S, width]`` (hidden biases), ``a`` ``[S, width]`` (output weights).

    Raises:
        ValueError: ``width < 1``, or ``seeds`` of the wrong length.
    """

    def __init__(self, width: int = 100, n_models: int = 1, seeds: Sequence[int] | None = None,
                 init_scale: float = 1.0, dtype: torch.dtype = torch.float64):
        super().__init__()
        if width < 1 or n_models < 1:
            raise ValueError(f"need width >= 1 and n_models >= 1, got width={width}, n_models={n_models}")
        seeds = list(range(n_models)) if seeds is None else list(seeds)
        if len(seeds) != n_models:
            raise ValueError(f"need one seed per model: got {len(seeds)} seeds for n_models={n_models}")
        ws, bs, as_ = [], [], []
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            ws.append(2.5 * init_scale * (2 * torch.randint(0, 2, (width,), generator=g) - 1).to(dtype))
            bs.append(2.5 * init_scale * torch.randn(width, generator=g, dtype=dtype))
            as_.append(4.0 * init_scale * torch.randn(width, generator=g, dtype=dtype))
        self.width, self.n_models, self.seeds = width, n_models, seeds
        self.w = nn.Parameter(torch.stack(ws))
        self.b = nn.Parameter(torch.stack(bs))
        self.a = nn.Parameter(torch.stack(as_))

    def params(self) -> dict[str, Tensor]:
        """The weights as a dict ``{"w", "b", "a"}`` of ``[S, width]`` tensors."""
        return {"w": self.w, "b": self.b, "a": self.a}

    @staticmethod
    def apply(params: dict[str, Tensor], x: Tensor) -> Tensor:
        """Functional forward: ``params`` of ``[S, width]`` tensors, ``x`` ``[n]`` -> ``[S, n]``."""
        pre = x[None, :, None] * params["w"][:, None, :] + params["b"][:, None, :]
        return (torch.relu(pre) * params["a"][:, None, :]).sum(-1)

    def forward(self, x: Tensor) -> Tensor:
        """Predictions ``[S, n]`` for scalar inputs ``x`` ``[n]`` (or ``[n, 1]``)."""
        if x.dim() == 2 and x.shape[1] == 1:
            x = x[:, 0]
        if x.dim() != 1:
            raise ValueError(f"x must be [n] or [n, 1], got {tuple(x.shape)}")
        return self.apply(self.params(), x.to(self.w.dtype))

    def kinks(self) -> Tensor:
        """Kink positions −b_j/w_j ``[S, width]`` (``inf`` where w_j = 0)."""
        with torch.no_grad():
            return torch.where(self.w != 0, -self.b / self.w, torch.full_like(self.b, math.inf))

    def extra_repr(self) -> str:
        """Sizes shown in ``repr``: hidden width and number of models."""
        return f"width={self.width}, n_models={self.n_models}"
