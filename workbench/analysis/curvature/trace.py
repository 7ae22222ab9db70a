"""Trace and spectral density of a symmetric operator.

Hutchinson and Hutch++ trace estimators [Hutchinson 1990; Meyer 2021], the stochastic Lanczos quadrature density
[Golub 1994; Ghorbani 2019], and the λ1/λk ratio [Foret 2021].

No UI imports.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor

from .eigen import _Lanczos
from .operator import (
    _Counted,
    _gen,
    _meta,
    _rademacher,
    _randn,
)
from .results import DensityResult, EigenResult, TraceResult


# ====================================================================== trace
def _draw(distribution: str, n: int, g, dtype, device) -> Tensor:
    if distribution == "rademacher":
        return _rademacher(n, g, dtype, device)
    if distribution == "gaussian":
        return _randn(n, g, dtype, device)
    raise ValueError(f"distribution={distribution!r} is invalid: choose 'rademacher' or 'gaussian'")


def _mean_se(samples: Tensor) -> tuple[float, float]:
    s = samples.to(torch.float64)
    if s.numel() == 0:
        return float("nan"), float("nan")
    se = float(s.std(correction=1) / math.sqrt(s.numel())) if s.numel() > 1 else float("nan")
    return float(s.mean()), se


def hutchinson_trace(op, n_probes: int = 100, seed: int = 0, distribution: str = "rademacher") -> TraceResult:
    """Hutchinson's estimator tr(H) ≈ (1/m) Σ vᵢᵀ H vᵢ with E[v vᵀ] = I.

    Rademacher probes (entries ±1) have the smallest variance among i.i.d.
    probes: Var = 2 Σ_{i≠j} H_ij². The standard error is the sample standard
    deviation / sqrt(m) (unlike PyHessian's stop on a small change of the running
    mean, which says nothing about accuracy). One product per probe.
    Hutchinson 1990; Yao et al. 2020.
    """
    if n_probes <= 0:
        raise ValueError(f"n_probes={n_probes!r} is invalid: must be positive")
    t0 = time.perf_counter()
    A = _Counted(op)
    g = _gen(seed)
    samples = []
    for _ in range(n_probes):
        v = _draw(distribution, A.size, g, A.dtype, A.device)
        samples.append(float(torch.dot(A(v), v)))
    s = torch.tensor(samples, dtype=torch.float64)
    est, se = _mean_se(s)
    return TraceResult(estimate=est, std_error=se, samples=s, n_matvecs=A.n, n_probes=n_probes, seed=int(seed),
                       distribution=distribution, method="hutchinson", seconds=time.perf_counter() - t0,
                       **_meta(A.op))


def hutchpp_trace(op, n_matvecs: int = 102, seed: int = 0, distribution: str = "rademacher") -> TraceResult:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021): low-rank deflation plus Hutchinson on the rest.

    With s = n_matvecs // 3: sketch Y = H S (S: s random probes), Q = orth(Y),
    then tr(H) ≈ tr(Qᵀ H Q) + (1/s) Σ gᵢᵀ (I−QQᵀ) H (I−QQᵀ) gᵢ. It uses 3s
    products (2s + size when s > size: then Q spans everything and the
    result is exact); the error falls as O(1/m) instead of O(1/√m) when the spectrum
    decays, as Hessian spectra do (a few outliers hold much of the trace).
    ``std_error`` is that of the Hutchinson part; ``samples`` are its terms.

    Raises:
        ValueError: ``n_matvecs < 3``.
    """
    if n_matvecs < 3:
        raise ValueError(f"n_matvecs={n_matvecs!r} is invalid: Hutch++ needs at least 3 products")
    t0 = time.perf_counter()
    A = _Counted(op)
    n = A.size
    s = n_matvecs // 3
    g = _gen(seed)
    S = torch.stack([_draw(distribution, n, g, A.dtype, A.device) for _ in range(s)], 1)
    Y = torch.stack([A(S[:, i]) for i in range(s)], 1)
    Q, _ = torch.linalg.qr(Y.to(torch.float64))
    Q = Q.to(A.dtype)
    low = sum(float(torch.dot(Q[:, i], A(Q[:, i]))) for i in range(Q.shape[1]))
    samples = []
    for _ in range(s):
        v = _draw(distribution, n, g, A.dtype, A.device)
        v = v - Q @ (Q.T @ v)
        samples.append(float(torch.dot(v, A(v))))
    smp = torch.tensor(samples, dtype=torch.float64)
    rest, se = _mean_se(smp)
    return TraceResult(estimate=low + rest, std_error=se, samples=smp, n_matvecs=A.n, n_probes=s, seed=int(seed),
                       distribution=distribution, method="hutch++", low_rank_trace=low,
                       seconds=time.perf_counter() - t0, **_meta(A.op))


# ====================================================================== density
def _broaden(nodes: list[Tensor], weights: list[Tensor], steps: int, sigma: float | None, grid_points: int,
             grid_padding: float) -> tuple[Tensor, Tensor, float, float, float]:
    allnodes = torch.cat([t.to(torch.float64) for t in nodes])
    lo, hi = float(allnodes.min()), float(allnodes.max())
    rng = hi - lo
    if rng <= 0:
        rng = max(abs(hi), 1e-12)
    if sigma is None:
        sigma = rng / max(int(steps), 1)
    if not sigma > 0:
        raise ValueError(f"sigma={sigma!r} is invalid: must be positive")
    pad = max(grid_padding * rng, 5.0 * sigma)  # at least 5σ: tails beyond hold < 3e-7 of a node's weight
    grid = torch.linspace(lo - pad, hi + pad, int(grid_points), dtype=torch.float64)
    dens = torch.zeros_like(grid)
    for th, w in zip(nodes, weights):
        z = (grid[:, None] - th.to(torch.float64)[None, :]) / sigma
        dens += (torch.exp(-0.5 * z * z) * w.to(torch.float64)[None, :]).sum(1)
    dens /= len(nodes) * sigma * math.sqrt(2 * math.pi)
    mass = float(torch.trapezoid(dens, grid))
    floor = float(dens.max()) * 1e-12 if float(dens.max()) > 0 else 1e-300
    dens = torch.clamp(dens, min=floor)
    dens = dens / float(torch.trapezoid(dens, grid))
    return grid, dens, float(sigma), mass, floor


def spectral_density(op, n_probes: int = 1, steps: int = 80, seed: int = 0, sigma: float | None = None,
                     grid_points: int = 1000, grid_padding: float = 0.1) -> DensityResult:
    """Eigenvalue spectral density by stochastic Lanczos quadrature (SLQ).

    For each probe: a normalised Rademacher vector v, ``steps`` Lanczos steps
    with full re-orthogonalisation (without it, lost orthogonality produces
    ghost copies of the outliers), T = S Θ Sᵀ by ``torch.linalg.eigh`` of the
    symmetric tridiagonal T (not a general ``eig``). The Gauss quadrature rule
    vᵀ f(H) v ≈ Σᵢ wᵢ f(θᵢ) has nodes θᵢ and weights wᵢ = S[0, i]² (squared
    **first** components of T's eigenvectors); it is exact for polynomials of
    degree < 2·steps. The density is the probe average of Σᵢ wᵢ N(λ; θᵢ, σ²)
    (Ghorbani et al. 2019; Yao et al. 2020; Golub & Meurant 1994).

    ``sigma`` defaults to (θmax − θmin)/steps: the m nodes of a probe spread over
    the range, so that width merges neighbouring nodes into a smooth curve while
    keeping outliers separated by more than a few node spacings visible. The
    grid spans [θmin − p, θmax + p] with p = max(``grid_padding``·(θmax − θmin), 5σ)
    (the 5σ minimum keeps the tails of the extreme nodes when steps < 50); the
    density is clamped below at 1e-12 of its maximum (``density_floor``: it is
    drawn on a log axis) and renormalised to integrate to 1 (trapezoid rule);
    ``mass_in_grid`` is the mass before renormalisation.

    Breakdown (β ≈ 0, the Krylov space of v is exhausted, e.g. ``steps >= size``)
    ends a probe early: its rule is then exact. Each probe's first moment
    n·Σ wᵢθᵢ equals the Hutchinson sample vᵀHv, reported as ``trace_estimate``.
    """
    if n_probes <= 0 or steps <= 0:
        raise ValueError(f"n_probes={n_probes!r} and steps={steps!r} must be positive")
    t0 = time.perf_counter()
    A = _Counted(op)
    n = A.size
    g = _gen(seed)
    nodes, weights = [], []
    for _ in range(n_probes):
        v = _rademacher(n, g, A.dtype, A.device)
        L = _Lanczos(A, v, min(int(steps), n), restart=None)
        while L.m < L.max_steps and not L.exhausted:
            L.step()
        theta, S = torch.linalg.eigh(L.tridiagonal())
        nodes.append(theta)
        weights.append(S[0, :] ** 2)
    grid, dens, sigma, mass, floor = _broaden(nodes, weights, steps, sigma, grid_points, grid_padding)
    moments = torch.tensor([float((w * t).sum()) * n for t, w in zip(nodes, weights)], dtype=torch.float64)
    tr, tr_se = _mean_se(moments)
    return DensityResult(grid=grid, density=dens, nodes=nodes, weights=weights, sigma=sigma, steps=int(steps),
                         n_probes=int(n_probes), n_matvecs=A.n, seed=int(seed), mass_in_grid=mass,
                         density_floor=floor, trace_estimate=tr, trace_std_error=tr_se, method="slq",
                         seconds=time.perf_counter() - t0, **_meta(A.op))


def eigenvalue_ratio(result_or_values, i: int = 5) -> float:
    """λ1/λ_i of the largest eigenvalues (i = 5: the λmax/λ5 sharpness ratio of [Foret 2021], [Murphy 2025, §2.2.1]).

    A higher ratio means the curvature is concentrated in fewer directions
    (a "sharper" minimum in that reading).

    Args:
        result_or_values: an :class:`EigenResult` with the largest values
            (``which`` LA or both) or a sequence of eigenvalues (sorted here).
        i: 1-based index of the denominator.

    Raises:
        ValueError: fewer than ``i`` values, or a result of the smallest values.
    """
    if i < 1:
        raise ValueError(f"i={i!r} is invalid: must be >= 1")
    if isinstance(result_or_values, EigenResult):
        vals = np.asarray(_np(result_or_values.top), dtype=np.float64)
    else:
        vals = np.sort(np.asarray(_np(result_or_values), dtype=np.float64).reshape(-1))[::-1]
    if vals.size < i:
        raise ValueError(f"need at least {i} eigenvalues for λ1/λ{i}, got {vals.size}")
    den = vals[i - 1]
    return float(vals[0] / den) if den != 0 else float("inf") * np.sign(vals[0])


def _np(x):
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return x
