"""Synthetic data sets of [Andriushchenko 2024].

* :func:`sparse_regression` — noiseless (or noisy) sparse linear regression
  with Gaussian inputs, the data of every diagonal-linear-net experiment:
  Fig. 5.13 (d = 30, n = 20, κ = 3), Figs. 5.6/5.14/5.15 (§5.5.2, §5.9.3),
  Fig. 6.2 (n = 80, d = 200, κ = 20, §6.4.1), Fig. 7.7 (d = 200, 90 % sparse,
  §7.6.2). β* follows the public code (``tml-epfl/understanding-sam``
  ``diag_nets_sam.ipynb``): |N(0, 1)| on κ coordinates, normalised to
  ‖β*‖₂ = 1; a fresh test set of 1000 points (as in that code).
* :func:`relu_1d_points` — the 12-point 1-D regression set ([Blanc 2020] /
  [Maennel 2018]) of Fig. 5.7 (§5.5.3) and Fig. 6.4 (§6.4.2):
  x = [−5.5, −4.5, …, 5.5]/4 + 0.07, y = 0.345 + [−2, 1.5, 0, 0, 2, 1, 0, −1, 0, 1, 2, −1]
  (values from ``understanding-sam/one_layer_relu_nets/1d_nn.ipynb``; the
  thesis gives only the picture).

Everything is seeded by a ``torch.Generator``. Part of the core: no UI imports.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SparseRegression", "sparse_regression", "relu_1d_points", "RELU_1D_X", "RELU_1D_Y"]

#: The 12 inputs of the 1-D regression set (Fig. 5.7 / 6.4).
RELU_1D_X = tuple(v / 4 + 0.07 for v in (-5.5, -4.5, -3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5))
#: The 12 targets of the 1-D regression set (Fig. 5.7 / 6.4).
RELU_1D_Y = tuple(0.345 + v for v in (-2, 1.5, 0, 0, 2, 1, 0, -1, 0, 1, 2, -1))


@dataclass
class SparseRegression:
    """A sparse-regression problem.

    Attributes:
        x_train: ``[n, d]`` inputs, rows ~ N(0, I_d).
        y_train: ``[n]`` targets ⟨β*, x⟩ + noise.
        x_test: ``[n_test, d]`` fresh inputs.
        y_test: ``[n_test]`` noiseless targets ⟨β*, x⟩.
        beta_star: ``[d]`` the κ-sparse ground truth (‖β*‖₂ = 1 unless ``normalize=False``).
        support: ``[κ]`` indices of the non-zero coordinates of β*.
        noise: standard deviation of the label noise on the training targets.
        seed: the generator seed.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    beta_star: Tensor
    support: Tensor
    noise: float
    seed: int

    @property
    def n(self) -> int:
        """Number of training points."""
        return self.x_train.shape[0]

    @property
    def d(self) -> int:
        """Input dimension."""
        return self.x_train.shape[1]

    @property
    def kappa(self) -> int:
        """Sparsity κ of the ground truth: the number of non-zero coordinates (``support``)."""
        return int(self.support.numel())


def sparse_regression(d: int = 30, n: int = 20, kappa: int = 3, *, noise: float = 0.0, n_test: int = 1000,
                      seed: int = 0, random_support: bool = False, normalize: bool = True,
                      dtype: torch.dtype = torch.float64) -> SparseRegression:
    """Draw a sparse linear-regression problem y = ⟨β*, x⟩ (+ noise), x ~ N(0, I_d).

    Args:
        d: dimension (30 in Fig. 5.13, 200 in Figs. 6.2/7.7).
        n: number of training points (n ≪ d: overparametrised).
        kappa: sparsity κ = ‖β*‖₀ (1 <= κ <= d). Alternatively think "sparsity":
            Fig. 7.7's 90 % sparse β* in d = 200 is κ = 20.
        noise: standard deviation σ of Gaussian label noise added to the
            training targets only (the thesis' experiments are noiseless: 0).
        n_test: number of fresh test points (public code: 1000).
        seed: generator seed (inputs, β*, noise).
        random_support: put the κ non-zeros on random coordinates (default:
            the first κ, as the public code).
        normalize: scale β* to unit ℓ2 norm (public code).
        dtype: tensor dtype (default float64).

    Returns:
        :class:`SparseRegression`.

    Raises:
        ValueError: non-positive sizes, ``kappa`` outside [1, d], negative noise.
    """
    if d < 1 or n < 1 or n_test < 1:
        raise ValueError(f"need d, n, n_test >= 1, got d={d}, n={n}, n_test={n_test}")
    if not 1 <= kappa <= d:
        raise ValueError(f"kappa={kappa} is invalid: need 1 <= kappa <= d={d}")
    if noise < 0:
        raise ValueError(f"noise={noise} is invalid: must be >= 0")
    g = torch.Generator().manual_seed(int(seed))
    x_train = torch.randn(n, d, generator=g, dtype=dtype)
    x_test = torch.randn(n_test, d, generator=g, dtype=dtype)
    support = torch.randperm(d, generator=g)[:kappa].sort().values if random_support else torch.arange(kappa)
    beta = torch.zeros(d, dtype=dtype)
    beta[support] = torch.randn(kappa, generator=g, dtype=dtype).abs()
    if normalize:
        beta = beta / beta.norm()
    y_train = x_train @ beta
    if noise > 0:
        y_train = y_train + noise * torch.randn(n, generator=g, dtype=dtype)
    return SparseRegression(x_train, y_train, x_test, x_test @ beta, beta, support, float(noise), int(seed))


def relu_1d_points(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The 12-point 1-D regression set: ``(x [12], y [12])`` (see module docstring)."""
    return torch.tensor(RELU_1D_X, dtype=dtype), torch.tensor(RELU_1D_Y, dtype=dtype)
