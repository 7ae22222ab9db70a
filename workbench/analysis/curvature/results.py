"""Result records of the curvature solvers.

Frozen dataclasses that :func:`~workbench.analysis.common.save_result` writes as JSON + NPZ.

No UI imports.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..common import ResultRecord


# ====================================================================== results
@dataclass(frozen=True, eq=False)
class EigenResult(ResultRecord):
    """Eigenvalues of a curvature operator.

    Attributes:
        values: float64 eigenvalues. ``which="LA"``: largest first (λ1 ≥ λ2 ≥ …);
            ``"SA"``: smallest first (most negative first); ``"both"``: the top-k
            (largest first) followed by the bottom-k (smallest first).
        vectors: eigenvectors ``[len(values), n_params]`` (operator dtype) or None.
        residuals: ‖H v − λ v‖ per value (Lanczos: the Ritz estimate β_m·|s_mi|;
            power iteration: of the last iterate) or None where not defined.
        converged: every wanted value met the stopping rule (None: not reported).
        n_matvecs: Hessian-vector products used; iterations: steps taken.
        which, method, k, tol, seed: the request.
        count, split: the example set (None for a plain matrix); n_params: operator size.
        seconds: wall time.
    """

    values: Any
    vectors: Any = None
    residuals: Any = None
    converged: bool | None = None
    n_matvecs: int = 0
    iterations: int = 0
    which: str = "LA"
    method: str = "lanczos"
    k: int = 1
    tol: float = 0.0
    seed: int | None = 0
    count: int | None = None
    split: str | None = None
    n_params: int = 0
    seconds: float = 0.0

    @property
    def top(self):
        """The largest values, largest first (``which`` LA or both)."""
        if self.which == "SA":
            raise ValueError("this result holds the smallest eigenvalues (which='SA')")
        return self.values[:self.k]

    @property
    def bottom(self):
        """The smallest values, smallest first (``which`` SA or both)."""
        if self.which == "LA":
            raise ValueError("this result holds the largest eigenvalues (which='LA')")
        return self.values[-self.k:] if self.which == "both" else self.values[:self.k]


@dataclass(frozen=True, eq=False)
class TraceResult(ResultRecord):
    """A stochastic trace estimate.

    Attributes:
        estimate: the trace estimate; std_error: its standard error
            (sample standard deviation / sqrt(number of samples) of the stochastic part).
        samples: the per-probe samples vᵀHv (Hutch++: of the deflated remainder).
        low_rank_trace: Hutch++'s exact trace on the sketched subspace (None otherwise).
        n_matvecs, n_probes, seed, distribution, method: what was done.
        count, split, n_params, seconds: as in :class:`EigenResult`.
    """

    estimate: float
    std_error: float
    samples: Any
    n_matvecs: int
    n_probes: int
    seed: int | None = 0
    distribution: str = "rademacher"
    method: str = "hutchinson"
    low_rank_trace: float | None = None
    count: int | None = None
    split: str | None = None
    n_params: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class DensityResult(ResultRecord):
    """Eigenvalue spectral density by stochastic Lanczos quadrature.

    Attributes:
        grid: float64 eigenvalue grid; density: float64 density on it, strictly
            positive (clamped at ``density_floor``) and integrating to 1 (trapezoid).
        nodes, weights: per probe, the Gauss quadrature nodes (eigenvalues of the
            Lanczos tridiagonal T) and weights (squared first components of T's
            eigenvectors; they sum to 1).
        sigma: Gaussian broadening width; steps: Lanczos steps asked per probe.
        mass_in_grid: integral of the broadened density over the grid before
            renormalisation (below 1 when tails were cut off).
        density_floor: lower clamp of ``density`` (for the log axis).
        trace_estimate, trace_std_error: n_params · mean over probes of Σ wᵢθᵢ
            (each term is a Hutchinson sample vᵀHv) and its standard error (NaN for one probe).
        n_matvecs, n_probes, seed, method, count, split, n_params, seconds: as elsewhere.
    """

    grid: Any
    density: Any
    nodes: Any
    weights: Any
    sigma: float
    steps: int
    n_probes: int
    n_matvecs: int
    seed: int | None = 0
    mass_in_grid: float = 1.0
    density_floor: float = 0.0
    trace_estimate: float = float("nan")
    trace_std_error: float = float("nan")
    method: str = "slq"
    count: int | None = None
    split: str | None = None
    n_params: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class LayerwiseResult(ResultRecord):
    """Per-layer curvature: each entry uses the Hessian block of that layer's parameters only.

    Attributes:
        names: module names (``by="module"``) or parameter names (``by="parameter"``).
        n_params: parameters per entry.
        top_eigenvalues: λmax of each block (NaN where not computed); converged: per entry.
        traces, trace_std_errors: trace estimate of each block (NaN where not computed).
        n_matvecs: products per entry.
        what, by, tol, n_probes, trace_method, seed, count, split, seconds: the request.
    """

    names: list
    n_params: list
    top_eigenvalues: Any
    traces: Any
    trace_std_errors: Any
    n_matvecs: list
    converged: list
    what: str = "top"
    by: str = "module"
    tol: float = 1e-3
    n_probes: int = 0
    trace_method: str = "hutchpp"
    seed: int | None = 0
    count: int | None = None
    split: str | None = None
    seconds: float = 0.0
