"""Eigen solvers over any operator with ``size`` and ``matvec``.

Lanczos with full re-orthogonalisation, ARPACK (scipy ``eigsh``), deflated power iteration and the smallest
eigenvalues [Ghorbani 2019; Yao 2020], for :class:`~workbench.analysis.curvature.operator.LinearOperatorLike`.

No UI imports.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .operator import (
    _Counted,
    _gen,
    _meta,
    _randn,
    _to_scipy,
)
from .results import EigenResult


# ====================================================================== Lanczos core
class _Lanczos:
    """Lanczos tridiagonalisation with full re-orthogonalisation.

    Three-term recurrence plus one classical Gram-Schmidt pass against the whole
    basis (two GEMVs), repeated once when it removed most of the vector
    ("twice is enough", Kahan/Parlett), so no ghost eigenvalues appear. The
    basis grows in chunks (no preallocation of ``max_steps`` vectors).
    On breakdown (β ≈ 0: an invariant subspace was found) it either stops
    (``restart=None``) or continues with a fresh random vector orthogonal to
    the basis (T is then block diagonal).
    """

    def __init__(self, matvec: Callable, v0: Tensor, max_steps: int, restart: torch.Generator | None = None):
        self.matvec = matvec
        self.n = v0.numel()
        self.dtype, self.device = v0.dtype, v0.device
        self.max_steps = max_steps
        self.restart = restart
        self.V = torch.empty(min(max_steps, 16), self.n, dtype=self.dtype, device=self.device)
        self.alpha: list[float] = []
        self.beta: list[float] = []      # beta[j]: T[j, j+1] (0 after a restart)
        self.last_beta = 0.0             # coupling to the next vector (for Ritz residuals)
        self.m = 0
        self.exhausted = False
        self.v = v0 / torch.linalg.vector_norm(v0)
        self.eps = torch.finfo(self.dtype).eps

    def _grow(self) -> None:
        if self.m < self.V.shape[0]:
            return
        new = torch.empty(min(self.max_steps, 2 * self.V.shape[0]), self.n, dtype=self.dtype, device=self.device)
        new[:self.m] = self.V[:self.m]
        self.V = new

    def _orthogonalise(self, w: Tensor, upto: int) -> Tensor:
        B = self.V[:upto]
        for _ in range(2):
            before = torch.linalg.vector_norm(w)
            w = w - (B @ w) @ B
            if torch.linalg.vector_norm(w) > 0.7 * before:
                break
        return w

    def step(self) -> None:
        j = self.m
        self._grow()
        self.V[j] = self.v
        w = self.matvec(self.v).to(dtype=self.dtype, device=self.device)
        a = float(torch.dot(w, self.v))
        w = w - a * self.v
        if j > 0 and self.beta[j - 1] != 0.0:
            w = w - self.beta[j - 1] * self.V[j - 1]
        w = self._orthogonalise(w, j + 1)
        b = float(torch.linalg.vector_norm(w))
        self.alpha.append(a)
        self.m = j + 1
        self.last_beta = b
        scale = max(max(abs(x) for x in self.alpha), max(self.beta, default=0.0), 1e-300)
        if self.m >= self.n:
            self.exhausted = True
            self.beta.append(b)
            return
        if b <= 100 * self.eps * scale:
            if self.restart is None:
                self.exhausted = True
                self.beta.append(b)
                return
            for _ in range(3):
                r = _randn(self.n, self.restart, self.dtype, self.device)
                r = self._orthogonalise(r, self.m)
                nr = float(torch.linalg.vector_norm(r))
                if nr > 1e-3:
                    break
            self.v = r / nr
            self.beta.append(0.0)
            return
        self.v = w / b
        self.beta.append(b)

    def tridiagonal(self) -> Tensor:
        m = self.m
        T = torch.diag(torch.tensor(self.alpha, dtype=torch.float64))
        if m > 1:
            off = torch.tensor(self.beta[:m - 1], dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        return T


def _validate_which(which: str) -> None:
    if which not in ("LA", "SA", "both"):
        raise ValueError(f"which={which!r} is invalid: choose 'LA' (largest), 'SA' (smallest) or 'both'")


def lanczos(op, k: int = 5, which: str = "LA", tol: float = 1e-3, max_iter: int | None = None, seed: int = 0,
            return_vectors: bool = False, callback: Callable[[int, Tensor], Any] | None = None) -> EigenResult:
    """Extreme eigenvalues by Lanczos with full re-orthogonalisation (own torch implementation).

    After every step the tridiagonal T_m is diagonalised (T_m = S Θ Sᵀ); the
    Ritz pair (θᵢ, V sᵢ) has residual ‖H V sᵢ − θᵢ V sᵢ‖ = β_m |s_mi|. The run
    stops when every wanted pair satisfies β_m |s_mi| <= tol · max(|θᵢ|, √ε ‖T‖)
    (ε of the operator dtype; the floor keeps eigenvalues near zero from
    demanding more accuracy than the HVP has), when the Krylov space is
    exhausted (then the values are exact), or after ``max_iter`` steps
    (``converged=False``). Eigenvalue errors are about residual²/gap, so tol 1e-3
    typically gives values accurate to 1e-6 relative (float32 HVPs limit the
    accuracy to about 1e-6 anyway). Like every single-vector Krylov method it
    sees one copy of a multiple eigenvalue per start vector (after a breakdown
    it restarts with a fresh random vector orthogonal to the basis, which finds
    further copies), and an eigenvector with a negligible component in the
    start vector can be missed: the random Gaussian start makes that unlikely.
    Ghorbani et al. 2019; Golub & Van Loan §10.

    Args:
        op: an operator with ``size`` and ``matvec`` (or a dense symmetric tensor).
        k: number of eigenvalues (per end for ``which="both"``).
        which: ``"LA"`` largest, ``"SA"`` smallest (most negative: negative
            curvature), ``"both"`` top-k and bottom-k from one Krylov space.
        tol: relative residual tolerance.
        max_iter: maximum Lanczos steps = stored basis vectors (default
            ``min(size, max(100, 10·k + 50))``).
        seed: seed of the Gaussian start vector (generated on the CPU).
        return_vectors: also return the Ritz vectors ``[len(values), size]``.
        callback: ``callback(iteration, ritz_values)`` after every step, with all
            current Ritz values (float64, largest first); returning True stops
            the run (``converged`` then reflects the stopping rule at that step).

    Returns:
        :class:`EigenResult` (method ``"lanczos"``).
    """
    _validate_which(which)
    t0 = time.perf_counter()
    A = _Counted(op)
    n = A.size
    if k <= 0 or k > n:
        raise ValueError(f"k={k!r} is invalid for an operator of size {n}")
    need = k if which != "both" else min(n, 2 * k)
    max_iter = min(n, max(100, 10 * need + 50)) if max_iter is None else min(int(max_iter), n)
    if max_iter < need:
        raise ValueError(f"max_iter={max_iter} is smaller than the number of wanted eigenvalues ({need})")
    g = _gen(seed)
    L = _Lanczos(A, _randn(n, g, A.dtype, A.device), max_iter, restart=g)
    floor_rel = math.sqrt(L.eps)
    converged = False
    theta = S = res = sel = None
    while True:
        L.step()
        T = L.tridiagonal()
        theta, S = torch.linalg.eigh(T)  # ascending
        m = L.m
        res = (L.last_beta * S[m - 1, :]).abs()
        if which == "LA":
            sel = torch.arange(m - 1, max(m - 1 - k, -1), -1)
        elif which == "SA":
            sel = torch.arange(0, min(k, m))
        else:
            sel = torch.cat([torch.arange(m - 1, max(m - 1 - k, -1), -1), torch.arange(0, min(k, m))])
        tnorm = float(theta.abs().max())
        thr = tol * torch.clamp(theta[sel].abs(), min=floor_rel * tnorm)
        converged = L.exhausted or (m >= need and bool((res[sel] <= thr).all()))
        stop = False
        if callback is not None:
            stop = bool(callback(m, theta.flip(0).clone()))
        if converged or stop or L.exhausted or m >= max_iter:
            break
    vectors = None
    if return_vectors:
        vectors = S[:, sel].T.to(dtype=L.dtype, device=L.device) @ L.V[:L.m]
    return EigenResult(values=theta[sel].clone(), vectors=vectors, residuals=res[sel].clone(),
                       converged=bool(converged), n_matvecs=A.n, iterations=L.m, which=which, method="lanczos",
                       k=int(k), tol=float(tol), seed=int(seed), seconds=time.perf_counter() - t0, **_meta(A.op))


def eigsh_eigenvalues(op, k: int = 5, which: str = "LA", tol: float = 1e-3, seed: int = 0, ncv: int | None = None,
                      return_vectors: bool = False, max_iter: int | None = None) -> EigenResult:
    """Extreme eigenvalues by ARPACK's implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``).

    A second, independent backend for cross-checks. The operator is wrapped as a
    float64 :class:`~scipy.sparse.linalg.LinearOperator`; the start vector is
    Gaussian from ``seed``. BLAS threads are limited to 1 during the call
    (numpy/scipy's OpenBLAS threads otherwise compete with torch's on small
    machines). ``tol`` is ARPACK's relative accuracy of the Ritz values.
    ``converged=False`` when ARPACK stopped early (the values found so far
    are returned). No residuals (ARPACK does not report them). Only the
    OpenBLAS pools are limited (``user_api="blas"``): torch's OpenMP pool keeps
    its threads, so the HVPs inside run at full speed.

    Raises:
        ValueError: ``k >= size`` (ARPACK needs k < n) or a bad ``which``.
    """
    if which not in ("LA", "SA"):
        raise ValueError(f"which={which!r} is invalid for eigsh: choose 'LA' or 'SA'")
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    try:  # installed with scikit-learn
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        def threadpool_limits(**_kw):
            return contextlib.nullcontext()

    t0 = time.perf_counter()
    A = _Counted(op)
    n = A.size
    if not 0 < k < n:
        raise ValueError(f"k={k!r} is invalid for eigsh on an operator of size {n} (need 0 < k < size)")
    lin = _to_scipy(_CountingView(A))
    v0 = np.random.default_rng(int(seed)).standard_normal(n)
    converged = True
    with threadpool_limits(limits=1, user_api="blas"):  # numpy/scipy OpenBLAS only, not torch's OpenMP pool
        try:
            out = eigsh(lin, k=k, which=which, tol=tol, v0=v0, ncv=ncv, maxiter=max_iter,
                        return_eigenvectors=return_vectors)
        except ArpackNoConvergence as e:
            converged = False
            out = (e.eigenvalues, e.eigenvectors) if return_vectors else e.eigenvalues
    vals, vecs = (out if return_vectors else (out, None))
    vals = torch.as_tensor(np.asarray(vals, dtype=np.float64))
    order = torch.argsort(vals, descending=(which == "LA"))
    vectors = None
    if return_vectors and vecs is not None:
        vectors = torch.as_tensor(np.asarray(vecs)[:, order.numpy()].T.copy()).to(dtype=A.dtype, device=A.device)
    return EigenResult(values=vals[order], vectors=vectors, residuals=None, converged=converged, n_matvecs=A.n,
                       iterations=A.n, which=which, method="eigsh", k=int(k), tol=float(tol), seed=int(seed),
                       seconds=time.perf_counter() - t0, **_meta(A.op))


class _CountingView:
    def __init__(self, counted: _Counted):
        self.c = counted
        self.size, self.dtype, self.device = counted.size, counted.dtype, counted.device

    def matvec(self, v):
        return self.c(v)


def power_iteration(op, k: int = 5, max_iter: int = 100, tol: float = 1e-3, seed: int = 0,
                    return_vectors: bool = False) -> EigenResult:
    """PyHessian's method: deflated power iteration with a relative-change stopping rule.

    For each of the k values: a Gaussian start vector, then repeat
    ``v ← orth(v against the found vectors); Hv; λ = vᵀHv; v ← Hv/‖Hv‖`` until
    two successive λ differ by less than ``tol`` relative, or ``max_iter``
    products (Yao et al. 2020). Reproduced for comparison; prefer :func:`lanczos`.

    Caveats (measured against :func:`lanczos` on the same operators):

    * power iteration converges to the eigenvalue of **largest magnitude**; when
      the most negative eigenvalue is larger in magnitude than λ_k it returns it
      among the "top" values, and it cannot target negative curvature without a
      shift (use :func:`smallest_eigenvalues`);
    * its rate is |λ2/λ1| per step, slow for the clustered top of a Hessian
      spectrum, so the relative-change rule fires before convergence: 1-6 %
      errors at tol 1e-3 are typical, and it needs 5-60x more products than
      Lanczos for the same accuracy.

    Values are returned sorted, largest first (PyHessian returns them in the
    order found). ``residuals`` are ‖Hv − λv‖ of the last iterate (free: Hv is
    known); ``converged`` is True when every value met the relative-change rule.
    """
    t0 = time.perf_counter()
    A = _Counted(op)
    n = A.size
    if k <= 0 or k > n:
        raise ValueError(f"k={k!r} is invalid for an operator of size {n}")
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r} is invalid: must be >= 1")
    g = _gen(seed)
    found: list[Tensor] = []
    vals, resid, ok, iters = [], [], [], 0
    for _ in range(k):
        v = _randn(n, g, A.dtype, A.device)
        v = v / torch.linalg.vector_norm(v)
        lam, conv, r = None, False, float("nan")
        for _it in range(max_iter):
            for u in found:
                v = v - torch.dot(v, u) * u
            v = v / torch.linalg.vector_norm(v)
            hv = A(v)
            iters += 1
            new = float(torch.dot(hv, v))
            r = float(torch.linalg.vector_norm(hv - new * v))
            nh = torch.linalg.vector_norm(hv)
            prev_v = v
            v = hv / nh if float(nh) > 0 else v
            if lam is not None and abs(lam - new) / (abs(lam) + 1e-12) < tol:
                lam, conv = new, True
                break
            lam = new
        vals.append(lam)
        resid.append(r)
        ok.append(conv)
        found.append(v if conv else prev_v)
    values = torch.tensor(vals, dtype=torch.float64)
    order = torch.argsort(values, descending=True)
    vectors = torch.stack(found)[order] if return_vectors else None
    return EigenResult(values=values[order], vectors=vectors,
                       residuals=torch.tensor(resid, dtype=torch.float64)[order], converged=all(ok), n_matvecs=A.n,
                       iterations=iters, which="LA", method="power_iteration", k=int(k), tol=float(tol),
                       seed=int(seed), seconds=time.perf_counter() - t0, **_meta(A.op))


def smallest_eigenvalues(op, k: int = 1, tol: float = 1e-3, max_iter: int | None = None, seed: int = 0,
                         return_vectors: bool = False, method: str = "lanczos") -> EigenResult:
    """The k smallest (most negative) eigenvalues: negative curvature / saddle directions.

    Lanczos targets either end of the spectrum from the same Krylov space, so
    ``which="SA"`` needs no transformation. Power iteration cannot do this
    without a shift: it converges to the eigenvalue of largest *magnitude*
    (usually λmax), and finding λmin needs iterating on ``H − σI`` with
    σ ≥ λmax (e.g. the ``0.51·λmax`` trick of the loss-landscape code), which
    converges slowly because λmin − σ is close to the rest of the shifted spectrum.

    Args:
        op: an operator with ``size`` and ``matvec`` (or a dense symmetric tensor).
        k: number of eigenvalues.
        tol: relative residual tolerance.
        max_iter: maximum iterations (Lanczos steps, or ARPACK's ``maxiter``; default as :func:`lanczos`).
        seed: seed of the start vector.
        return_vectors: also return the eigenvectors ``[k, size]``.
        method: ``"lanczos"`` (own) or ``"eigsh"`` (ARPACK).

    Returns:
        :class:`EigenResult` with the k smallest eigenvalues, smallest first.

    Raises:
        ValueError: an unknown ``method``.
    """
    if method == "lanczos":
        return lanczos(op, k=k, which="SA", tol=tol, max_iter=max_iter, seed=seed, return_vectors=return_vectors)
    if method == "eigsh":
        return eigsh_eigenvalues(op, k=k, which="SA", tol=tol, seed=seed, return_vectors=return_vectors,
                                 max_iter=max_iter)
    raise ValueError(f"method={method!r} is invalid: choose 'lanczos' or 'eigsh'")
