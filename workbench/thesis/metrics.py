"""Chapter-6 metrics: rank of the feature Jacobian φ_θ(X), ‖β‖₀ / ‖β‖₁ of diagonal nets, feature sparsity.

Source: [Andriushchenko 2024, §6.4] and its public code ``tml-epfl/sgd-sparse-features``.

* **Rank of φ_θ(X)** (§6.4): "a fixed threshold on the singular values of φ_θ(X) normalized by the largest
  singular value", computed on as many *fresh* inputs as the model has parameters |θ| (so that rank deficiency is
  not caused by n ≪ |θ|): ``rank = #{i : σ_i / σ_1 > threshold}``. The thesis gives no threshold; the public code
  (``tml-epfl/sgd-sparse-features``) uses 1e-4 for ReLU nets and 1e-15 in the diagonal-net notebook — the
  threshold is a parameter everywhere and is reported with the result.
* **‖β‖₀** of a diagonal net β = u ⊙ v: ``#{i : |β_i| > threshold}`` (public code: 1e-50 — coordinates off the
  support decay geometrically, never to exactly 0); ‖β‖₁ = Σ|β_i|.
* **Feature sparsity coefficient** (§6.4): reuses
  :func:`workbench.analysis.features.sparsity_of_activation_matrix` (greedy merge of units whose Pearson
  correlation is ≥ τ, FSC = fraction of (example, kept unit) entries that are non-zero). Thesis τ = 0.95 vs toy-code
  τ = 0.99 / 0.999, thesis "at least" vs code "|corr| > τ", and the toy code's per-example ℓ2 normalisation of the
  activation rows — all three are parameters here (``tau``, ``absolute``, ``normalize_rows``).

Plain numpy / torch; no UI imports.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..analysis.features import sparsity_of_activation_matrix

__all__ = ["bootstrap_ci", "singular_value_rank", "diag_net_jacobian_rank", "l0_norm", "l1_norm", "fsc",
           "functional_jacobian", "RANK_THRESHOLD_RELU", "RANK_THRESHOLD_DIAG", "L0_THRESHOLD_DIAG"]

#: Public-code threshold for the normalised singular values of ReLU-net Jacobians (thesis: unspecified).
RANK_THRESHOLD_RELU = 1e-4
#: Public-code threshold in the diagonal-net notebook (thesis: unspecified).
RANK_THRESHOLD_DIAG = 1e-15
#: Public-code threshold for ‖u ⊙ v‖₀.
L0_THRESHOLD_DIAG = 1e-50


def _np(a) -> np.ndarray:
    return a.detach().cpu().double().numpy() if isinstance(a, Tensor) else np.asarray(a, dtype=np.float64)


def singular_value_rank(J, threshold: float = RANK_THRESHOLD_RELU) -> int:
    """Number of singular values of the matrix ``J`` with ``σ_i / σ_1 > threshold`` (thesis §6.4).

    Args:
        J: ``[rows, cols]`` array or tensor (e.g. φ_θ(X), rows = inputs, cols = parameters).
        threshold: relative threshold in (0, 1).

    Returns:
        The rank (0 for an all-zero matrix).

    Raises:
        ValueError: not a matrix, or threshold outside (0, 1).
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold={threshold!r} is invalid: a relative singular-value threshold lies in (0, 1)")
    M = _np(J)
    if M.ndim != 2:
        raise ValueError(f"expected a matrix, got shape {M.shape}")
    s = np.linalg.svd(M, compute_uv=False)
    if s.size == 0 or s[0] == 0:
        return 0
    return int((s / s[0] > threshold).sum())


def diag_net_jacobian_rank(u, v, X_fresh, threshold: float = RANK_THRESHOLD_DIAG) -> np.ndarray:
    """Rank of φ_θ(X) for diagonal nets h(x) = ⟨u ⊙ v, x⟩, whose Jacobian rows are ``[x ⊙ v, x ⊙ u]``.

    Uses ``φ φᵀ = X diag(u² + v²) Xᵀ``, so the singular values of φ (``[m, 2d]``) equal those of the
    ``[m, d]`` matrix ``X diag(√(u² + v²))`` — the same numbers at half the cost.

    Args:
        u: ``[d]`` or ``[S, d]`` (S models).
        v: same shape as ``u``.
        X_fresh: ``[m, d]`` fresh inputs (thesis: m = |θ| = 2d).
        threshold: relative singular-value threshold (public code: 1e-15).

    Returns:
        int array ``[S]`` (or a 0-d array for ``[d]`` input); −1 for a model with non-finite weights (diverged).
    """
    U, V, X = _np(u), _np(v), _np(X_fresh)
    single = U.ndim == 1
    U, V = np.atleast_2d(U), np.atleast_2d(V)
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.sqrt(U ** 2 + V ** 2)
    out = np.array([singular_value_rank(X * s[k][None, :], threshold) if np.isfinite(s[k]).all() else -1
                    for k in range(len(s))])
    return out[0] if single else out


def l0_norm(beta, threshold: float = L0_THRESHOLD_DIAG) -> np.ndarray:
    """``#{i : |β_i| > threshold}`` along the last axis (public code threshold 1e-50)."""
    return (np.abs(_np(beta)) > threshold).sum(-1)


def l1_norm(beta) -> np.ndarray:
    """``Σ_i |β_i|`` along the last axis."""
    return np.abs(_np(beta)).sum(-1)


def fsc(phi, tau: float = 0.95, *, normalize_rows: bool = False, absolute: bool = False) -> dict:
    """Feature sparsity coefficient of one layer's post-ReLU activations ``phi [N examples, k units]``.

    Wraps :func:`workbench.analysis.features.sparsity_of_activation_matrix` (thesis §6.4). With
    ``normalize_rows=True`` each example's activation vector is first divided by its ℓ2 norm (zero rows stay
    zero), as the public toy-net code does (``FCNet.features(normalize=True)``); this changes Pearson correlations
    but not which entries are non-zero.

    Returns:
        the dict of :func:`sparsity_of_activation_matrix` (``feature_sparsity_coefficient``, ``active_fraction``,
        ``dead_units``, ``n_merged``, ``n_distinct``, ``tau``, ...) plus ``normalize_rows``, ``absolute``.
    """
    A = _np(phi)
    if normalize_rows:
        nrm = np.linalg.norm(A, axis=1, keepdims=True)
        A = np.divide(A, nrm, out=np.zeros_like(A), where=nrm > 0)
    out = sparsity_of_activation_matrix(A, tau, absolute=absolute)
    out.update(normalize_rows=bool(normalize_rows), absolute=bool(absolute))
    return out


def functional_jacobian(f: Callable[[dict, Tensor], Tensor], params: dict[str, Tensor], X: Tensor) -> Tensor:
    """φ_θ(X): the Jacobian of a scalar-output model w.r.t. all its parameters, ``[n, |θ|]``.

    Args:
        f: ``f(params, x) -> scalar`` for ONE input ``x`` (a functional model).
        params: name -> tensor (flattened in this order, as ``torch.cat([p.flatten() ...])``).
        X: ``[n, ...]`` inputs.

    Uses ``torch.func.vmap(torch.func.jacrev(f))`` — one vectorised pass.
    """
    jac = torch.func.vmap(torch.func.jacrev(f), in_dims=(None, 0))(params, X)
    return torch.cat([jac[k].reshape(X.shape[0], -1) for k in params], dim=1)


def bootstrap_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap CI of the mean over seeds (the thesis' error bars: seaborn's default, §5.11).

    Args:
        values: ``[n]`` per-seed values (e.g. test errors, or seed-paired differences).
        n_boot: bootstrap resamples.
        level: CI level (e.g. 0.95).
        seed: resampling seed.

    Returns:
        ``(mean, lo, hi)``; all NaN for no values.
    """
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(v, size=(n_boot, len(v)), replace=True).mean(1)
    a = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))
