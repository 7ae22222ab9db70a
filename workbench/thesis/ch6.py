"""Chapter 6 of the thesis: SGD with large step sizes learns sparse features.

Over 700 lines, kept whole: one module per thesis chapter, so that a figure's code, its criterion and its
registry entry read together with the chapter (sections below: schedules, diagonal nets, the quadratic toy,
1-D ReLU regression, teacher–student nets, SDE, registry).

Source: [Andriushchenko 2024, Ch. 6] (section, equation and figure numbers below refer to it). The
thesis gives no numeric step sizes for its toy experiments; every η, decay factor and warm-up factor below is
from the public code ``tml-epfl/sgd-sparse-features`` and is a parameter.

Algorithms
----------
* Regression loss (Eq. 6.1) ``L(θ) = (1/2n) Σ (h_θ(x_i) − y_i)²``; SGD with batch 1 (Eq. 6.2)
  ``θ ← θ − η (h_θ(x_i) − y_i) ∇_θ h_θ(x_i)``; full-batch GD ``θ ← θ − η ∇L``.
* Step-size schedules as pure functions of the iteration (:func:`piecewise_constant`, :func:`linear_warmup`,
  :func:`exponential_warmup`): large η then ``η / decay`` after a fraction p ∈ {10, 30, 50}% (§6.4.1); the public
  code's linear warm-up ``η_t = η + (F − 1) η (t/T)^e`` for ``t ≤ pT`` followed by ``÷ decay``; the deep-net
  exponential warm-up ``η₀ · 1.05^{100 t/T}`` for ``t/T < p`` then ``/10`` until 0.9T, then ``/100`` (§6.4.3).
* SGD ≡ GD with label noise (Prop. 6.3.1): :func:`label_noise_targets` gives
  ``y^t = y + ξ_t``, ``[ξ_t]_i = (h(x_i) − y_i)(1 − n 1{i = i_t})`` so that a full-batch step on ``y^t`` is exactly
  the SGD step on example ``i_t``.
* SDE model (Eq. 6.8) and its discretisation (Eq. 6.58):
  ``θ_{t+1} = θ_t − γ_t ∇L(θ_t) + √γ_t √(η_t δ_t) φ_θt(X)ᵀ Z_t``, Z_t ~ N(0, I_n), γ_t = η_t / k (thesis k = 10),
  run k× longer than SGD, η_t = η^SGD_{⌊t/k⌋}, δ_t = c · L(θ^SGD_{⌊t/k⌋}); gradient flow = the same recursion
  without noise (§6.8). For diagonal nets φ rows are ``[x ⊙ v, x ⊙ u]`` so the noise is
  ``(v ⊙ XᵀZ, u ⊙ XᵀZ)`` (Eq. 6.9).
* Loss-stabilisation toy (Prop. 6.3.2, Eq. 6.5, §6.3.2): y = x θ*², ``F(θ) = ¼ E(y − xθ²)²``,
  ``θ ← θ + η θ x (y − x θ²)``.

Models: diagonal linear nets (:class:`workbench.models.toy.DiagonalLinearNet`, parametrization ``"uv"``, data
:func:`workbench.data.synthetic.sparse_regression`), 1-D ReLU nets (:class:`workbench.models.toy.ReLU1D`, data
:func:`workbench.data.synthetic.relu_1d_points`) and teacher–student ReLU nets
(:mod:`workbench.models.teacher_student`). The training loops use closed-form gradients, vectorised over runs
(numpy / torch), so that 10⁵ single-example steps take seconds on a CPU.

Reproductions (registered in :mod:`workbench.thesis.registry`; figures in :mod:`workbench.viz.thesis_sparse`):
``fig6.2`` (+6.11 GD control, 6.3 trajectories), ``prop6.3.2``, ``fig6.4`` (+6.13 snapshots), ``fig6.12``,
``fig6.5``, ``fig6.10`` (+6.14), ``fig6.9`` (SDE vs SGD vs gradient flow).
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..data.synthetic import relu_1d_points, sparse_regression
from ..models.toy import DiagonalLinearNet, ReLU1D
from .metrics import (
    L0_THRESHOLD_DIAG,
    RANK_THRESHOLD_DIAG,
    RANK_THRESHOLD_RELU,
    diag_net_jacobian_rank,
    fsc,
    l0_norm,
    l1_norm,
    singular_value_rank,
)
from .registry import Outcome, Param, register

__all__ = [
    "piecewise_constant", "linear_warmup", "exponential_warmup", "label_noise_targets",
    "DiagRun", "train_diag_net", "diag_sde", "quadratic_toy", "repro_diag_nets", "repro_quadratic_toy",
    "repro_sde", "relu1d_train", "repro_relu1d", "repro_relu1d_overregularized", "mlp_jacobian", "train_relu_nets",
    "repro_teacher_student", "repro_two_layer", "DECAY_FRACTIONS",
]

DECAY_FRACTIONS = (0.1, 0.3, 0.5)
Progress = Callable[[float, str], None] | None


# ------------------------------------------------------------------ schedules (pure functions)
def _check_T(T: int) -> int:
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T={T!r} is invalid: the number of iterations must be a positive integer")
    return int(T)


def piecewise_constant(T: int, eta: float, decay_at: float | None = None, decay: float = 1.0) -> np.ndarray:
    """Piecewise-constant step sizes η_t for t = 0..T−1 (thesis §6.4.1).

    ``eta`` up to iteration ``⌊decay_at·T⌋`` (inclusive, as the public code), ``eta/decay`` after.
    ``decay_at=None``: constant.

    Raises ``ValueError`` for ``decay_at`` outside [0, 1] or ``decay <= 0``.
    """
    T = _check_T(T)
    out = np.full(T, float(eta))
    if decay_at is not None:
        if not 0 <= decay_at <= 1 or decay <= 0:
            raise ValueError(f"need 0 <= decay_at <= 1 and decay > 0, got decay_at={decay_at}, decay={decay}")
        out[int(decay_at * T) + 1:] /= decay
    return out


def linear_warmup(T: int, eta: float, warmup_until: float, factor: float, *, exponent: float = 1.0,
                  decay: float = 1.0) -> np.ndarray:
    """Public-code warm-up (``fc_nets.train_fc_net``): a rising step size, then a decay.

    ``η_t = η + (F − 1) η (t/T)^e`` for ``t ≤ ⌊pT⌋`` (note: t/T uses the *total* T), then the last warm-up value
    divided by ``decay``.

    Args:
        T: number of iterations.
        eta: the initial step size η.
        warmup_until: p, the fraction of T at which the warm-up stops and the step size is decayed.
        factor: F (1-D regression: 400·p; Fig. 6.12 over-regularisation: 500·p; 3-layer teacher–student: 6).
        exponent: e (1-D: 1; 3-layer: 0.5).
        decay: divisor of the step size after the warm-up.
    """
    T = _check_T(T)
    if not 0 < warmup_until <= 1 or factor < 1 or decay <= 0:
        raise ValueError(f"need 0 < warmup_until <= 1, factor >= 1, decay > 0; got {warmup_until}, {factor}, {decay}")
    t = np.arange(T, dtype=np.float64)
    stop = int(warmup_until * T)
    out = eta + (factor - 1) * eta * (np.minimum(t, stop) / T) ** exponent
    out[stop + 1:] /= decay
    return out


def exponential_warmup(T: int, eta0: float, p: float) -> np.ndarray:
    """Deep-net schedule (§6.4.3; public code ``get_lr_schedule``): exponential warm-up, then two decays.

    ``η₀ · 1.05^{100 t/T}`` for ``t/T < p``, then ``η₀ · 1.05^{100 p} / 10`` until 0.9 T, then ``/ 100``.
    """
    T = _check_T(T)
    if not 0 < p < 0.9:
        raise ValueError(f"p={p!r} is invalid: need 0 < p < 0.9")
    r = np.arange(T, dtype=np.float64) / T
    peak = eta0 * 1.05 ** (100 * p)
    return np.where(r < p, eta0 * 1.05 ** (100 * r), np.where(r < 0.9, peak / 10, peak / 100))


# ------------------------------------------------------------------ SGD = label-noise GD (Prop. 6.3.1)
def label_noise_targets(pred: np.ndarray, y: np.ndarray, i_t: int) -> np.ndarray:
    """Targets ``y^t = y + ξ_t`` of Prop. 6.3.1, ``[ξ_t]_i = (h(x_i) − y_i)(1 − n·1{i = i_t})``.

    A full-batch GD step with step η on ``(1/2n) Σ (h(x_i) − y^t_i)²`` equals the SGD step on example ``i_t``:
    the residuals become ``h − y^t = n (h(x_{i_t}) − y_{i_t}) e_{i_t}``. ``E ξ = 0`` and
    ``E‖ξ‖² = 2 n (n − 1) L`` over uniform ``i_t``.
    """
    pred, y = np.asarray(pred, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(y)
    xi = (pred - y) * (1 - n * (np.arange(n) == i_t))
    return y + xi


# ------------------------------------------------------------------ diagonal linear nets
class DiagRun:
    """Checkpoints of several diagonal-net runs trained together (numpy, float64).

    Attributes:
        names: run names; iterations: ``[C]`` checkpoint iterations; u, v: ``[C, S, d]`` weights at checkpoints;
        eta: ``[S, T]`` step sizes used; final: the last :class:`~workbench.models.toy.DiagonalLinearNet` (S models);
        loss: ``[S, T]`` full training loss before every step (``record_loss=True``), else ``None``.
    """

    def __init__(self, names, iterations, u, v, eta, final, loss=None):
        self.names, self.iterations, self.u, self.v, self.eta, self.final = names, iterations, u, v, eta, final
        self.loss = loss


def _checkpoints(T: int, count: int) -> np.ndarray:
    return np.unique(np.linspace(0, T, count).round().astype(int))


def train_diag_net(X: np.ndarray, y: np.ndarray, etas: np.ndarray, *, method: str = "sgd", u0: float = 0.1,
                   seed: int = 0, checkpoints: int = 200, names: Sequence[str] | None = None,
                   record_loss: bool = False, progress: Progress = None) -> DiagRun:
    """Train S diagonal nets β = u ⊙ v with SGD (batch 1, Eq. 6.2) or full-batch GD, one step-size sequence each.

    Initialisation u = u0·1, v = 0 (§6.4.1); loss ``L = (1/2n)‖X(u⊙v) − y‖²`` (Eq. 6.1), one step-size sequence per run.

    Args:
        X: ``[n, d]`` inputs.
        y: ``[n]`` targets.
        etas: ``[S, T]`` step sizes (from the schedule functions).
        method: ``"sgd"`` (each run draws its own i_t ~ U{1..n}, seeded) or ``"gd"``.
        u0: initial scale of u.
        seed: seed of the example draws.
        checkpoints: number of evenly spaced checkpoints (iteration 0 and T included).
        names: one name per run (default ``run0``, ``run1``, ...).
        record_loss: also record the full training loss L(θ_t) before every step (``run.loss``, ``[S, T]``; the
            noise level of the SDE of Eq. 6.58).
        progress: called with ``(fraction done, message)`` during the run (optional).

    Returns:
        :class:`DiagRun`. Raises ``ValueError`` for a bad method or shapes.
    """
    if method not in ("sgd", "gd"):
        raise ValueError(f"method={method!r} is invalid: choose 'sgd' or 'gd'")
    X, y, etas = np.asarray(X, np.float64), np.asarray(y, np.float64), np.atleast_2d(np.asarray(etas, np.float64))
    n, d = X.shape
    S, T = etas.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(T, S)) if method == "sgd" else None
    u, v = np.full((S, d), float(u0)), np.zeros((S, d))
    cps = _checkpoints(T, checkpoints)
    cp_set = {int(c): k for k, c in enumerate(cps)}
    U, V = np.empty((len(cps), S, d)), np.empty((len(cps), S, d))
    losses = np.empty((S, T)) if record_loss else None
    every = max(T // 20, 1)
    old_err = np.seterr(over="ignore", invalid="ignore")  # diverging runs become NaN and are reported
    try:
        for t in range(T + 1):
            k = cp_set.get(t)
            if k is not None:
                U[k], V[k] = u, v
            if t == T:
                break
            e = etas[:, t, None]
            if not np.isfinite(u).all():   # a diverged run: freeze it as NaN (reported, never silently dropped)
                bad = ~np.isfinite(u).all(1) | ~np.isfinite(v).all(1)
                u[bad], v[bad] = np.nan, np.nan
            if record_loss:
                losses[:, t] = (((u * v) @ X.T - y) ** 2).sum(1) / (2 * n)
            if method == "sgd":
                xi = X[idx[t]]                                     # [S, d]
                err = np.einsum("sd,sd->s", xi, u * v) - y[idx[t]]  # [S]
                g = err[:, None] * xi
            else:
                r = (u * v) @ X.T - y                              # [S, n]
                g = r @ X / n
            u, v = u - e * g * v, v - e * g * u
            if progress is not None and t % every == 0:
                progress(t / T, f"{method.upper()} iteration {t}/{T}")
    finally:
        np.seterr(**old_err)
    final = DiagonalLinearNet.from_weights(torch.from_numpy(u.copy()), torch.from_numpy(v.copy()), "uv")
    return DiagRun(list(names or [f"run{k}" for k in range(S)]), cps, U, V, etas, final, losses)


def diag_sde(X: np.ndarray, y: np.ndarray, eta_sgd: np.ndarray, delta_sgd: np.ndarray, *, substeps: int = 10,
             noise: bool = True, u0: float = 0.1, seed: int = 0, checkpoints: int = 200,
             progress: Progress = None) -> DiagRun:
    """Discretised SDE (Eq. 6.58) — or, with ``noise=False``, gradient flow (§6.8) — for diagonal nets.

    ``θ_{t+1} = θ_t − γ_t ∇L(θ_t) + √γ_t √(η_t δ_t) φ_θt(X)ᵀ Z_t`` with γ_t = η_t / ``substeps``, run ``substeps``×
    longer than the SGD it models; η_t = η^SGD_{⌊t/substeps⌋} and δ_t = δ^SGD_{⌊t/substeps⌋} (the caller passes
    ``delta_sgd = c · L(θ^SGD)`` per SGD iteration). For diagonal nets ``φᵀZ = (v ⊙ XᵀZ, u ⊙ XᵀZ)`` (Eq. 6.9).

    Args:
        X: ``[n, d]`` inputs.
        y: ``[n]`` targets.
        eta_sgd: ``[S, T]`` per-SGD-iteration step size.
        delta_sgd: ``[S, T]`` per-SGD-iteration noise level (ignored without noise).
        substeps: k (thesis: 10). Checkpoints are reported in SGD iterations (t / k).
        noise: the SDE; ``False``: gradient flow.
        u0: initial scale of u (v = 0).
        seed: seed of the Gaussian noise Z_t.
        checkpoints: number of evenly spaced checkpoints.
        progress: called with ``(fraction done, message)`` during the run (optional).
    """
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    eta_sgd, delta_sgd = np.atleast_2d(eta_sgd), np.atleast_2d(delta_sgd)
    n, d = X.shape
    S, T = eta_sgd.shape
    rng = np.random.default_rng(seed)
    u, v = np.full((S, d), float(u0)), np.zeros((S, d))
    cps = _checkpoints(T, checkpoints)
    cp_set = {int(c) * substeps: k for k, c in enumerate(cps)}
    U, V = np.empty((len(cps), S, d)), np.empty((len(cps), S, d))
    total = T * substeps
    every = max(total // 20, 1)
    old_err = np.seterr(over="ignore", invalid="ignore")  # diverging runs become NaN and are reported
    try:
        for t in range(total + 1):
            k = cp_set.get(t)
            if k is not None:
                U[k], V[k] = u, v
            if t == total:
                break
            j = t // substeps
            eta = eta_sgd[:, j, None]
            gam = eta / substeps
            r = (u * v) @ X.T - y
            g = r @ X / n
            du, dv = -gam * g * v, -gam * g * u
            if noise:
                xz = rng.standard_normal((S, n)) @ X                          # [S, d] = (XᵀZ)ᵀ
                amp = np.sqrt(gam * eta * np.maximum(delta_sgd[:, j, None], 0.0))
                du, dv = du + amp * v * xz, dv + amp * u * xz
            u, v = u + du, v + dv
            if progress is not None and t % every == 0:
                progress(t / total, f"{'SDE' if noise else 'gradient flow'} step {t}/{total}")
    finally:
        np.seterr(**old_err)
    final = DiagonalLinearNet.from_weights(torch.from_numpy(u.copy()), torch.from_numpy(v.copy()), "uv")
    return DiagRun([f"run{k}" for k in range(S)], cps, U, V, eta_sgd, final)


def _diag_metrics(run: DiagRun, X, y, X_test, y_test, X_fresh, rank_threshold, l0_threshold,
                  extra=None) -> pd.DataFrame:
    rows = []
    n, nt = len(y), len(y_test)
    for c, it in enumerate(run.iterations):
        u, v = run.u[c], run.v[c]
        with np.errstate(all="ignore"):
            beta = u * v
            tr = ((beta @ X.T - y) ** 2).sum(1) / (2 * n)
            te = ((beta @ X_test.T - y_test) ** 2).sum(1) / (2 * nt)
        rk = diag_net_jacobian_rank(u, v, X_fresh, rank_threshold)
        l0, l1 = l0_norm(beta, l0_threshold), l1_norm(beta)
        bal = np.abs(np.abs(u) - np.abs(v)).sum(1)
        for s, name in enumerate(run.names):
            rows.append({"run": name, "iteration": int(it), "train_loss": tr[s], "test_loss": te[s],
                         "rank": int(rk[s]), "l0": int(l0[s]), "l1": l1[s], "balancedness": bal[s],
                         "eta": float(run.eta[s, min(int(it), run.eta.shape[1] - 1)]), **(extra or {})})
    return pd.DataFrame(rows)


def _plane_projection(run: DiagRun, w_star: np.ndarray, w_init: np.ndarray, w_flow: np.ndarray) -> pd.DataFrame:
    """Coordinates of each checkpoint's w = (u, v) in the plane span{w* − w_init, w_flow − w_init} (Fig. 6.3).

    The plane is orthonormalised by Gram–Schmidt (first axis along w* − w_init).
    """
    a = w_star - w_init
    e1 = a / np.linalg.norm(a)
    b = w_flow - w_init
    b = b - (b @ e1) * e1
    e2 = b / max(np.linalg.norm(b), 1e-300)
    rows = []
    for c, it in enumerate(run.iterations):
        for s, name in enumerate(run.names):
            w = np.concatenate([run.u[c, s], run.v[c, s]]) - w_init
            rows.append({"run": name, "iteration": int(it), "x": float(w @ e1), "y": float(w @ e2)})
    return pd.DataFrame(rows)


def _diag_problem(n, d, r, seed):
    prob = sparse_regression(d=d, n=n, kappa=r, n_test=max(1000, 2 * d), seed=seed)
    return (prob.x_train.numpy(), prob.y_train.numpy(), prob.x_test.numpy(), prob.y_test.numpy(),
            prob.beta_star.numpy())


def repro_diag_nets(*, n: int = 80, d: int = 200, r: int = 20, T: int = 100_000, eta_small: float = 0.2125,
                    eta_large: float = 0.2397, decays: Sequence[float] = (4.8, 3.4, 1.5),
                    gd_eta_small: float = 1.0, gd_eta_large: float = 4.6, gd_decay: float = 4.6,
                    gd_T: int | None = None, u0: float = 0.1, seed: int = 3, checkpoints: int = 200,
                    rank_threshold: float = RANK_THRESHOLD_DIAG, l0_threshold: float = L0_THRESHOLD_DIAG,
                    include_gd: bool = True, progress: Progress = None) -> Outcome:
    """Figs. 6.2 (SGD), 6.11 (full-batch GD control) and 6.3 (GD vs SGD trajectories) on diagonal linear nets.

    Setting (§6.4.1): n = 80, d = 200, β* 20-sparse (|N(0,1)| normalised, :func:`sparse_regression`), x ~ N(0, I),
    u₀ = 0.1, v₀ = 0, T = 10⁵ SGD iterations (batch 1); small η constant vs large η decayed at 10/30/50 % by
    4.8/3.4/1.5 (public-code decays). Step sizes: the public code's 0.25 / 0.282 sit at SGD's edge of stability and
    diverge on most data draws here; the defaults are 0.85× those values (0.2125 / 0.2397) with data seed 3.
    GD control (Fig. 6.11): full-batch GD for T/10 steps, η = 1.0 constant vs 4.6 (at GD's edge: the loss
    stabilises around 10^-2) decayed at 10/30/50 % by ``gd_decay`` — GD step sizes chosen here, the thesis gives
    none.

    Criterion (faithful reproduction): (a) plateau: train loss of the large-η SGD runs stays within
    [10^-2.5, 10^-0.5] during the large-step phase; (b) rank φ(X) and ‖u⊙v‖₀ fall *during* the plateau (value just
    before the decay < value at 5 % of training, for the 30 % and 50 % runs); (c) final test loss ordered
    small-η > 10 % > 30 % > 50 %; (d) GD: at its decay point the large-η GD run's ‖β‖₀ is ≥ 90 % of d (no
    sparsification) and its final test loss is not below the 50 %-SGD run's.

    Data: dict ``metrics`` (DataFrame per run × checkpoint), ``plane`` (Fig. 6.3 coordinates), ``decay_at``
    (run → fraction), ``settings``.
    """
    t0 = time.perf_counter()
    X, y, Xt, yt, beta_star = _diag_problem(n, d, r, seed)
    X_fresh = Xt[:2 * d]
    l1_star = float(np.abs(beta_star).sum())
    names = ["small η"] + [f"large η, decay at {int(p * 100)}%" for p in DECAY_FRACTIONS]
    etas = np.stack([piecewise_constant(T, eta_small)]
                    + [piecewise_constant(T, eta_large, p, dec) for p, dec in zip(DECAY_FRACTIONS, decays)])
    sub = (lambda a, b, msg: (lambda f, m: progress(a + (b - a) * f, m))) if progress else (lambda a, b, msg: None)
    sgd = train_diag_net(X, y, etas, method="sgd", u0=u0, seed=seed, checkpoints=checkpoints, names=names,
                         progress=sub(0, 0.45 if include_gd else 0.9, "SGD"))
    df = _diag_metrics(sgd, X, y, Xt, yt, X_fresh, rank_threshold, l0_threshold, {"method": "SGD"})
    decay_at = {names[0]: None, **{nm: p for nm, p in zip(names[1:], DECAY_FRACTIONS)}}
    frames, plane, plane_refs = [df], None, {}
    if include_gd:
        Tg = int(gd_T or T // 10)
        gnames = ["GD small η"] + [f"GD large η, decay at {int(p * 100)}%" for p in DECAY_FRACTIONS]
        getas = np.stack([piecewise_constant(Tg, gd_eta_small)]
                         + [piecewise_constant(Tg, gd_eta_large, p, gd_decay) for p in DECAY_FRACTIONS])
        gd = train_diag_net(X, y, getas, method="gd", u0=u0, seed=seed, checkpoints=checkpoints, names=gnames,
                            progress=sub(0.45, 0.9, "GD"))
        gdf = _diag_metrics(gd, X, y, Xt, yt, X_fresh, rank_threshold, l0_threshold, {"method": "GD"})
        # GD iterations are rescaled to SGD iterations for a shared x axis (one GD step uses all n examples)
        gdf["iteration_sgd_scale"] = gdf["iteration"] * (T / Tg)
        frames.append(gdf)
        decay_at.update({nm: p for nm, p in zip(gnames[1:], DECAY_FRACTIONS)})
        # Fig. 6.3: GD (large η, 50 %) and SGD (large η, 50 %) in span{w* − w_init, w_flow − w_init}; w_flow ≈
        # gradient flow by small-step GD (η = 0.1, until the loss is ~0); w* = (√|β*|, sign(β*)√|β*|)
        flow = train_diag_net(X, y, piecewise_constant(Tg, 0.1)[None], method="gd", u0=u0, checkpoints=2)
        w_flow = np.concatenate([flow.u[-1, 0], flow.v[-1, 0]])
        w_init = np.concatenate([np.full(d, u0), np.zeros(d)])
        bs = np.sqrt(np.abs(beta_star))
        w_star = np.concatenate([bs, np.sign(beta_star) * bs])
        p_sgd = _plane_projection(DiagRun([names[3]], sgd.iterations, sgd.u[:, 3:4], sgd.v[:, 3:4], sgd.eta[3:4],
                                          None), w_star, w_init, w_flow).assign(method="SGD")
        p_gd = _plane_projection(DiagRun([gnames[3]], gd.iterations, gd.u[:, 3:4], gd.v[:, 3:4], gd.eta[3:4], None),
                                 w_star, w_init, w_flow).assign(method="GD")
        plane = pd.concat([p_sgd, p_gd], ignore_index=True)
        a = w_star - w_init
        e1 = a / np.linalg.norm(a)
        bvec = (w_flow - w_init) - ((w_flow - w_init) @ e1) * e1
        e2 = bvec / max(np.linalg.norm(bvec), 1e-300)
        plane_refs = {"w_star": (float(a @ e1), float(a @ e2)),
                      "w_flow": (float((w_flow - w_init) @ e1), float((w_flow - w_init) @ e2))}
    metrics_df = pd.concat(frames, ignore_index=True)
    if progress:
        progress(1.0, "done")
    m, (verdict, why), measured = _diag_verdict(metrics_df, names, T, d, include_gd)
    settings = dict(n=n, d=d, r=r, T=T, l1_star=l1_star, eta_small=eta_small, eta_large=eta_large, decays=list(decays),
                    gd_eta_small=gd_eta_small, gd_eta_large=gd_eta_large, gd_decay=gd_decay, u0=u0, seed=seed,
                    rank_threshold=rank_threshold, l0_threshold=l0_threshold, seconds=time.perf_counter() - t0)
    notes = ["Decay factors and the thresholds (rank 1e-15, l0 1e-50) are from the public code; the thesis gives "
             "none. The public code's SGD step sizes (0.25 / 0.282) diverged on every data draw tried "
             "here (SGD with batch 1 at its edge of stability); 0.85x those values are used, with data seed 3. A run "
             "that diverges shows NaN losses and rank -1 and fails the verdict.",
             "Rank of phi(X) on 2d fresh inputs (|theta| = 2d), singular values normalised by the largest.",
             "GD control: same data as the SGD runs; GD step sizes 1.0 / 4.6 and decay factor 4.6 chosen here so "
             "that GD stabilises (the public-code GD values 1.0 / 2.72 do not stabilise on this draw)."]
    return Outcome(data={"metrics": metrics_df, "plane": plane, "plane_refs": plane_refs, "decay_at": decay_at, "T": T},
                   measured=measured, verdict=verdict, verdict_reason=why, metrics=m, settings=settings, notes=notes)


def _at(df, run, frac, T):
    g = df[df["run"] == run]
    i = (g["iteration"] - frac * T).abs().idxmin()
    return g.loc[i]


def _diag_verdict(df, names, T, d, include_gd):
    sgd = df[df["method"] == "SGD"]
    m: dict[str, float] = {}
    final = {nm: float(sgd[sgd["run"] == nm]["test_loss"].iloc[-1]) for nm in names}
    for nm, key in zip(names, ("small", "10", "30", "50")):
        m[f"final_test_loss_{key}"] = final[nm]
        m[f"final_l0_{key}"] = float(sgd[sgd["run"] == nm]["l0"].iloc[-1])
        m[f"final_rank_{key}"] = float(sgd[sgd["run"] == nm]["rank"].iloc[-1])
    ordered = final[names[0]] > final[names[1]] > final[names[2]] > final[names[3]]
    plateau_ok, falls = True, True
    for nm, p, key in zip(names[1:], DECAY_FRACTIONS, ("10", "30", "50")):
        g = sgd[(sgd["run"] == nm) & (sgd["iteration"] >= 0.02 * T) & (sgd["iteration"] <= p * T)]
        lo = float(np.log10(g["train_loss"]).median())
        m[f"plateau_log10_loss_median_{key}"] = lo
        plateau_ok &= -2.5 <= lo <= -0.5
        early, before = _at(sgd, nm, 0.05, T), _at(sgd, nm, p - 0.005, T)
        m[f"rank_at_5pct_{key}"], m[f"rank_before_decay_{key}"] = float(early["rank"]), float(before["rank"])
        m[f"l0_at_5pct_{key}"], m[f"l0_before_decay_{key}"] = float(early["l0"]), float(before["l0"])
        if key in ("30", "50"):
            falls &= before["rank"] < early["rank"] and before["l0"] < early["l0"]
    small_end = sgd[sgd["run"] == names[0]].iloc[-1]
    m["rank_small_eta_final"], m["l0_small_eta_final"] = float(small_end["rank"]), float(small_end["l0"])
    sgd_ok = bool(ordered and plateau_ok and falls)
    if sgd_ok:
        verdict, why = "partial", "the SGD part holds; the full-batch GD control was not run (include_gd=False)"
    else:
        verdict, why = "not reproduced", "; ".join(w for w, ok in (
            ("final test losses not ordered small > 10% > 30% > 50%", ordered),
            ("a plateau median outside 10^-2.5..10^-0.5", plateau_ok),
            ("rank / l0 do not fall during the 30%/50% plateaus", falls)) if not ok)
    measured = (f"Final test loss: small η {final[names[0]]:.2e}, decay at 10% {final[names[1]]:.2e}, 30% "
                f"{final[names[2]]:.2e}, 50% {final[names[3]]:.2e} (ordered: {ordered}). Plateau log10(train loss) "
                f"medians {m['plateau_log10_loss_median_10']:.2f}/{m['plateau_log10_loss_median_30']:.2f}/"
                f"{m['plateau_log10_loss_median_50']:.2f}. During the 50% plateau rank {m['rank_at_5pct_50']:.0f} → "
                f"{m['rank_before_decay_50']:.0f}, ||u⊙v||_0 {m['l0_at_5pct_50']:.0f} → {m['l0_before_decay_50']:.0f} "
                f"(small η ends at rank {m['rank_small_eta_final']:.0f}, l0 {m['l0_small_eta_final']:.0f}).")
    if include_gd:
        gd = df[df["method"] == "GD"]
        gname = [r for r in gd["run"].unique() if "50%" in r][0]
        gsmall = [r for r in gd["run"].unique() if "small" in r][0]
        before = _at(gd, gname, 0.495, gd["iteration"].max())
        m["gd_l0_before_decay_50"] = float(before["l0"])
        m["gd_rank_before_decay_50"] = float(before["rank"])
        m["gd_plateau_log10_loss_median_50"] = float(np.log10(gd[(gd["run"] == gname)
                                                                 & (gd["iteration"] <= 0.5 * gd["iteration"].max())
                                                                 & (gd["iteration"] >= 0.02 * gd["iteration"].max())]
                                                              ["train_loss"]).median())
        m["gd_final_test_loss_50"] = float(gd[gd["run"] == gname]["test_loss"].iloc[-1])
        m["gd_final_test_loss_small"] = float(gd[gd["run"] == gsmall]["test_loss"].iloc[-1])
        gd_ok = m["gd_l0_before_decay_50"] >= 0.9 * d and m["gd_final_test_loss_50"] >= final[names[3]]
        gd_stable = -2.5 <= m["gd_plateau_log10_loss_median_50"] <= -0.5
        if sgd_ok and gd_ok and gd_stable:
            verdict, why = "reproduced", ("SGD: ordered test losses, plateau, rank and l0 fall; GD stabilises "
                                          "without sparsifying or generalising as well")
        elif sgd_ok:
            verdict, why = "partial", ("the SGD part holds but the GD control does not: "
                                       + ("GD does not stabilise (plateau median outside 10^-2.5..10^-0.5)"
                                          if not gd_stable else "GD sparsifies or generalises as well as SGD"))
        measured += (f" GD control (large η, decay at 50%): plateau log10 loss "
                     f"{m['gd_plateau_log10_loss_median_50']:.2f}, "
                     f"||u⊙v||_0 before decay {m['gd_l0_before_decay_50']:.0f}/{d}, final test loss "
                     f"{m['gd_final_test_loss_50']:.2e} (GD small η {m['gd_final_test_loss_small']:.2e}).")
    return m, (verdict, why), measured


# ------------------------------------------------------------------ Prop. 6.3.2 loss-stabilisation toy
def quadratic_toy(*, eta: float = 1.05, theta_star: float = 1.0, theta0: float = 0.5, x_min: float = 1.0,
                  x_max: float = 1.05, T: int = 2000, seed: int = 0) -> pd.DataFrame:
    """SGD on the 1-D quadratic parametrisation of Prop. 6.3.2 (Eq. 6.5), y = x θ*².

    ``θ_{t+1} = θ_t + η θ_t x_t (y_t − x_t θ_t²)`` with x_t ~ U[x_min, x_max] (seeded).

    Returns a DataFrame with ``iteration``, ``theta``, ``loss`` = F(θ) = ¼ E_x[x²] (θ*² − θ²)² (exact expectation).
    """
    T = _check_T(T)
    rng = np.random.default_rng(seed)
    xs = rng.uniform(x_min, x_max, T)
    ex2 = (x_min ** 2 + x_min * x_max + x_max ** 2) / 3
    th = np.empty(T + 1)
    th[0] = theta0
    for t in range(T):
        x = xs[t]
        th[t + 1] = th[t] + eta * th[t] * x * (x * theta_star ** 2 - x * th[t] ** 2)
    return pd.DataFrame({"iteration": np.arange(T + 1), "theta": th,
                         "loss": 0.25 * ex2 * (theta_star ** 2 - th ** 2) ** 2})


def repro_quadratic_toy(*, eta: float = 1.05, theta0: float = 0.5, x_min: float = 1.0, x_max: float = 1.05,
                        T: int = 2000, burn_in: int = 200, seed: int = 0, progress: Progress = None) -> Outcome:
    """Prop. 6.3.2 / 6.7.1 (§6.3.2, §6.7): loss stabilisation of SGD on y = xθ*², θ* = 1.

    For ``η ∈ ((θ* x_min)^-2, 1.25 (θ* x_max)^-2)`` and θ₀ ∈ (0, θ*) the thesis proves that, after some time,
    F(θ_t) ∈ (ε_o² θ*², 0.17 θ*²) with ε_o = min{(η (θ* x_min)² − 1)/3, 0.02}, and the iterates alternate between
    (0.65 θ*, (1 − ε_o) θ*) and ((1 + ε_o) θ*, 1.162 θ*). Criterion: after ``burn_in`` iterations every iterate
    satisfies these bounds (the proposition's "a.s." statement, checked on one seeded path).
    Data: dict ``trace`` (DataFrame), ``bounds``.
    """
    lo_eta, hi_eta = 1 / x_min ** 2, 1.25 / x_max ** 2
    eps_o = min((eta * x_min ** 2 - 1) / 3, 0.02)
    df = quadratic_toy(eta=eta, theta0=theta0, x_min=x_min, x_max=x_max, T=T, seed=seed)
    if progress:
        progress(1.0, "done")
    tail = df[df["iteration"] >= burn_in]
    th = tail["theta"].to_numpy()
    below, above = th < 1, th > 1
    alternates = bool(np.all(below[:-1] != below[1:]))
    in_low = bool(np.all((th[below] > 0.65) & (th[below] < 1 - eps_o)))
    in_high = bool(np.all((th[above] > 1 + eps_o) & (th[above] < 1.162)))
    F = tail["loss"].to_numpy()
    in_F = bool(np.all((F > eps_o ** 2) & (F < 0.17)))
    valid_eta = lo_eta < eta < hi_eta
    m = {"eps_o": eps_o, "loss_min": float(F.min()), "loss_max": float(F.max()),
         "theta_low_max": float(th[below].max()),
         "theta_low_min": float(th[below].min()), "theta_high_min": float(th[above].min()),
         "theta_high_max": float(th[above].max()), "alternates": float(alternates)}
    verdict = "reproduced" if (valid_eta and alternates and in_low and in_high and in_F) else "not reproduced"
    why = ("the iterates alternate inside the stated intervals and F stays in (eps_o^2, 0.17) theta*^2"
           if verdict == "reproduced" else "a bound of the proposition is violated (see measured)")
    measured = (f"eta = {eta} ({'inside' if valid_eta else 'OUTSIDE'} the range ({lo_eta:.3f}, {hi_eta:.3f})). "
                f"After {burn_in} iterations: theta alternates below/above theta* at every step: {alternates}; "
                f"low iterates in [{m['theta_low_min']:.3f}, {m['theta_low_max']:.3f}] "
                f"(bound (0.65, {1 - eps_o:.3f})), "
                f"high in [{m['theta_high_min']:.3f}, {m['theta_high_max']:.3f}] (bound ({1 + eps_o:.3f}, 1.162)); "
                f"F in [{m['loss_min']:.4f}, {m['loss_max']:.4f}] (bound ({eps_o ** 2:.1e}, 0.17)).")
    return Outcome(data={"trace": df, "bounds": {"eps_o": eps_o, "burn_in": burn_in, "F_low": eps_o ** 2,
                                                 "F_high": 0.17}},
                   measured=measured, verdict=verdict, verdict_reason=why, metrics=m,
                   settings=dict(eta=eta, theta0=theta0, x_min=x_min, x_max=x_max, T=T, seed=seed),
                   notes=["x ~ U[1, 1.05], eta = 1.05 and theta0 = 0.5 are our choice (a quick check); the thesis "
                          "states the proposition for any distribution supported in [x_min, x_max]."])


# ------------------------------------------------------------------ 1-D ReLU regression (Figs. 6.4, 6.12, 6.13)
def _relu1d_jacobian(w, b, a, x):
    """φ_θ(x) of h(x) = Σ_j a_j relu(w_j x + b_j) w.r.t. (a, w, b): ``[len(x), 3·width]`` (closed form)."""
    pre = np.outer(x, w) + b
    act = np.maximum(pre, 0.0)
    on = (pre > 0).astype(np.float64)
    return np.concatenate([act, a * on * x[:, None], a * on], axis=1)


def _distinct_kinks(w, b, a, lo, hi, tol=1e-3, amp_tol=1e-8):
    """Number of distinct kink positions −b_j/w_j inside [lo, hi].

    Only units with a non-negligible slope change |a_j w_j| count; kinks closer than ``tol`` are merged.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(w != 0, -b / w, np.inf)
    k = np.sort(k[(k >= lo) & (k <= hi) & (np.abs(a * w) > amp_tol)])
    if k.size == 0:
        return 0
    return int(1 + (np.diff(k) > tol).sum())


def relu1d_train(etas: np.ndarray, *, width: int = 100, seed: int = 0, checkpoints: int = 100,
                 snapshots: int = 8, grid: int = 200, tau: float = 0.95, normalize_rows: bool = False,
                 rank_threshold: float = RANK_THRESHOLD_RELU, names: Sequence[str] | None = None,
                 init_seeds: Sequence[int] | None = None, progress: Progress = None) -> dict:
    """SGD (batch 1) on the 12-point 1-D regression set with a 1-hidden-layer ReLU net (Fig. 6.4, §6.4.2).

    Loss per example ``(h(x_i) − y_i)²`` (public code: ``mean((ŷ − y)²)`` over the batch, no ½); each run s uses
    the step sizes ``etas[s]`` and the initialisation (:class:`~workbench.models.toy.ReLU1D`, Blanc et al.) of seed
    ``init_seeds[s]`` (default: ``seed`` for every run); runs from the same initialisation visit the examples in
    the same order (seeded by ``(seed, init seed)``), so they differ only by their step sizes.

    Measured every checkpoint: train loss (mean square over the 12 points), rank of φ_θ on |θ| = 3·width fresh
    points uniform in [min x, max x] (threshold ``rank_threshold``), FSC of the hidden layer on the 12 training
    points (τ = ``tau``), number of distinct kinks in the data range; ``snapshots`` predictor snapshots on a grid.

    Returns:
        dict ``metrics`` (DataFrame), ``functions`` (DataFrame: run, iteration, x, y_hat), ``points`` (x, y).
    """
    etas = np.atleast_2d(np.asarray(etas, np.float64))
    S, T = etas.shape
    xt, yt = (t.numpy() for t in relu_1d_points())
    n = len(xt)
    init_seeds = [seed] * S if init_seeds is None else [int(v) for v in init_seeds]
    if len(init_seeds) != S:
        raise ValueError(f"need one init seed per run: got {len(init_seeds)} for {S} step-size sequences")
    net = ReLU1D(width, n_models=S, seeds=init_seeds)
    w, b, a = (p.detach().numpy().copy() for p in (net.w, net.b, net.a))
    # the example order of a run depends only on (seed, its init seed): runs from the same init share the order
    # (common random numbers: they differ only by their step sizes), whatever else is batched with them
    orders = {k: np.random.default_rng((seed, k)).integers(0, n, size=T) for k in set(init_seeds)}
    idx = np.stack([orders[k] for k in init_seeds], axis=1)
    lo, hi = float(xt.min()), float(xt.max())
    fresh = np.random.default_rng(seed + 1).uniform(lo, hi, 3 * width)
    xg = np.linspace(lo - 0.25, hi + 0.25, grid)
    cps = _checkpoints(T, checkpoints)
    snap = set(int(c) for c in np.unique(np.geomspace(max(T // 1000, 1), T, snapshots - 1).round().astype(int))) | {0}
    names = list(names or [f"run{s}" for s in range(S)])
    rows, funcs = [], []
    cp_set = set(int(c) for c in cps) | snap
    every = max(T // 20, 1)
    cp_only = set(int(c) for c in cps)
    for t in range(T + 1):
        if t in cp_set:
            for s in range(S):
                pre = np.outer(xt, w[s]) + b[s]
                act = np.maximum(pre, 0)
                pred = act @ a[s]
                if t in cp_only:
                    st = fsc(act, tau, normalize_rows=normalize_rows)
                    rows.append({"run": names[s], "iteration": t, "train_loss": float(((pred - yt) ** 2).mean()),
                                 "rank": singular_value_rank(_relu1d_jacobian(w[s], b[s], a[s], fresh), rank_threshold),
                                 "fsc": st["feature_sparsity_coefficient"], "active_fraction": st["active_fraction"],
                                 "kinks": _distinct_kinks(w[s], b[s], a[s], lo, hi),
                                 "eta": float(etas[s, min(t, T - 1)])})
                if t in snap:
                    yg = np.maximum(np.outer(xg, w[s]) + b[s], 0) @ a[s]
                    funcs.append(pd.DataFrame({"run": names[s], "iteration": t, "x": xg, "y_hat": yg}))
        if t == T:
            break
        i = idx[t]
        x, y = xt[i][:, None], yt[i]
        pre = x * w + b
        act = np.maximum(pre, 0)
        r = 2 * ((act * a).sum(1) - y)[:, None] * etas[:, t, None]      # η · ∂loss/∂h
        on = pre > 0
        ga, gw, gb = r * act, r * a * on * x, r * a * on
        a, w, b = a - ga, w - gw, b - gb
        if progress is not None and t % every == 0:
            progress(t / T, f"SGD iteration {t}/{T}")
    return {"metrics": pd.DataFrame(rows), "functions": pd.concat(funcs, ignore_index=True),
            "points": pd.DataFrame({"x": xt, "y": yt})}


def repro_relu1d(*, T: int = 31_623, eta: float = 2e-4, fractions: Sequence[float] = (0.02, 0.5),
                 warmup_per_fraction: float = 400.0, decays: Sequence[float] = (2.5, 3.0), width: int = 100,
                 seed: int = 0, checkpoints: int = 100, tau: float = 0.999, normalize_rows: bool = True,
                 rank_threshold: float = RANK_THRESHOLD_RELU, progress: Progress = None) -> Outcome:
    """Figs. 6.4 / 6.12 / 6.13 (§6.4.2, §6.9): 1-D regression with 100 ReLUs, short vs long linear warm-up.

    SGD batch 1 with a long linear warm-up ``η_t = η + (F − 1) η t/T`` up to p·T (F = ``warmup_per_fraction``·p) then ÷
    decay; p = 2 % vs 50 %.

    Public-code settings: η = 2e-4, F = 400·p (Fig. 6.4) or 500·p (Fig. 6.12), decay 2.5 / 3.0, T = 10^4.5.
    Criterion (faithful reproduction, Fig. 6.4): the 50 % run ends with fewer kinks, lower rank and lower FSC than the
    2 % run, and its rank/FSC fall during its warm-up plateau (value just before the decay < value at 10 %); the
    50 % run's warm-up loss stays high (median log10 > −1.5; thesis ≈ 10^-0.5). For Fig. 6.12 pass
    ``warmup_per_fraction=500``: the 50 % run should stay stuck at a high loss (reported as ``final_loss_50``).
    Data: dict ``metrics``, ``functions``, ``points``, ``decay_at``.
    """
    names = [f"decay at {p:.0%}" for p in fractions]
    etas = np.stack([linear_warmup(T, eta, p, warmup_per_fraction * p, decay=dec) for p, dec in zip(fractions, decays)])
    out = relu1d_train(etas, width=width, seed=seed, checkpoints=checkpoints, tau=tau, normalize_rows=normalize_rows,
                       rank_threshold=rank_threshold, names=names, progress=progress)
    if progress:
        progress(1.0, "done")
    df = out["metrics"]
    m: dict[str, float] = {}
    for nm, p in zip(names, fractions):
        g = df[df["run"] == nm]
        key = f"{int(round(p * 100))}"
        end = g.iloc[-1]
        m[f"final_loss_{key}"] = float(end["train_loss"])
        m[f"final_rank_{key}"], m[f"final_fsc_{key}"] = float(end["rank"]), float(end["fsc"])
        m[f"final_kinks_{key}"] = float(end["kinks"])
        plateau = g[(g["iteration"] >= 0.02 * T) & (g["iteration"] <= p * T)]
        m[f"plateau_log10_loss_median_{key}"] = (float(np.log10(plateau["train_loss"]).median()) if len(plateau)
                                                  else float("nan"))
        early, before = _at(df, nm, min(0.1, p / 2), T), _at(df, nm, p - 0.01, T)
        m[f"rank_early_{key}"], m[f"rank_before_decay_{key}"] = float(early["rank"]), float(before["rank"])
        m[f"fsc_early_{key}"], m[f"fsc_before_decay_{key}"] = float(early["fsc"]), float(before["fsc"])
    a, b = (f"{int(round(p * 100))}" for p in (fractions[0], fractions[-1]))
    simpler = (m[f"final_kinks_{b}"] < m[f"final_kinks_{a}"] and m[f"final_rank_{b}"] < m[f"final_rank_{a}"]
               and m[f"final_fsc_{b}"] < m[f"final_fsc_{a}"])
    falls = m[f"rank_before_decay_{b}"] < m[f"rank_early_{b}"] and m[f"fsc_before_decay_{b}"] < m[f"fsc_early_{b}"]
    high = m[f"plateau_log10_loss_median_{b}"] > -1.5
    near = -1.0 <= m[f"plateau_log10_loss_median_{b}"] <= 0.0   # within half a decade of the thesis' 10^-0.5
    if simpler and falls and near:
        verdict, why = "reproduced", ("simpler predictor, rank and FSC fall, warm-up loss within half a decade of "
                                      "10^-0.5")
    elif simpler and falls and high:
        verdict, why = "partial", (f"the warm-up loss level (median 10^{m[f'plateau_log10_loss_median_{b}']:.2f}) is "
                                   "above 10^-1.5 but not within half a decade of the thesis' 10^-0.5")
    else:
        verdict, why = "not reproduced", "; ".join(w for w, ok in (
            ("the longer schedule does not end simpler (kinks, rank, FSC)", simpler),
            ("rank/FSC do not fall during the warm-up", falls), ("the warm-up loss is below 10^-1.5", high)) if not ok)
    measured = (f"Final (decay at {a}% vs {b}%): kinks {m[f'final_kinks_{a}']:.0f} vs "
                f"{m[f'final_kinks_{b}']:.0f}, rank "
                f"{m[f'final_rank_{a}']:.0f} vs {m[f'final_rank_{b}']:.0f}, FSC {m[f'final_fsc_{a}']:.1%} vs "
                f"{m[f'final_fsc_{b}']:.1%}, train loss {m[f'final_loss_{a}']:.1e} vs {m[f'final_loss_{b}']:.1e}. "
                f"During the {b}% warm-up: median log10 loss {m[f'plateau_log10_loss_median_{b}']:.2f}, rank "
                f"{m[f'rank_early_{b}']:.0f} → {m[f'rank_before_decay_{b}']:.0f}, FSC {m[f'fsc_early_{b}']:.1%} → "
                f"{m[f'fsc_before_decay_{b}']:.1%}.")
    return Outcome(data={**out, "decay_at": dict(zip(names, fractions)), "T": T}, measured=measured,
                   verdict=verdict, verdict_reason=why, metrics=m,
                   settings=dict(T=T, eta=eta, fractions=list(fractions), warmup_per_fraction=warmup_per_fraction,
                                 decays=list(decays), width=width, seed=seed, tau=tau, normalize_rows=normalize_rows,
                                 rank_threshold=rank_threshold),
                   notes=["eta, warm-up factor (400p; 500p for Fig. 6.12), decays and T are public-code values; the "
                          "thesis gives none.",
                          f"FSC threshold tau = {tau} (thesis 0.95; the 1-D notebook uses 0.999 with per-example "
                          f"normalised activations — with only 12 training points almost all units correlate above "
                          f"0.95); rank threshold "
                          f"{rank_threshold:g} on 3*width fresh points."])


# ------------------------------------------------------------------ teacher–student ReLU nets (Figs. 6.5, 6.10, 6.14)
def _mlp_params(net) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    Ws = [l.weight.detach().double().numpy().copy() for l in net.layers]
    bs = [l.bias.detach().double().numpy().copy() for l in net.layers] if net.bias else None
    return Ws, bs


def _mlp_forward(Ws, bs, X):
    """Forward pass of a ReLU MLP with scalar output (numpy) for inputs X [m, d].

    Returns (output [m], activations [a0 .. a_L-1], pre-activations).
    """
    acts, pres = [X], []
    a = X
    for l, W in enumerate(Ws):
        z = a @ W.T + (bs[l] if bs is not None else 0.0)
        pres.append(z)
        if l < len(Ws) - 1:
            a = np.maximum(z, 0.0)
            acts.append(a)
    return pres[-1][:, 0], acts, pres


def mlp_jacobian(Ws, bs, X) -> np.ndarray:
    """φ_θ(X) of a ReLU MLP with scalar output: per-example gradients of the output w.r.t. all parameters.

    Shape ``[m, |θ|]`` in the order (W_1, b_1, W_2, b_2, ...) — closed-form backpropagation, vectorised over examples.
    """
    _, acts, pres = _mlp_forward(Ws, bs, X)
    m = X.shape[0]
    delta = np.ones((m, 1))
    blocks = []
    for l in range(len(Ws) - 1, -1, -1):
        gW = (delta[:, :, None] * acts[l][:, None, :]).reshape(m, -1)
        blocks.append([gW] + ([delta] if bs is not None else []))
        if l > 0:
            delta = (delta @ Ws[l]) * (pres[l - 1] > 0)
    return np.concatenate([b for blk in reversed(blocks) for b in blk], axis=1)


def train_relu_nets(students: Sequence[torch.nn.Module], x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor,
                    y_test: torch.Tensor, etas: np.ndarray, *, names: Sequence[str], seed: int = 0,
                    checkpoints: int = 100, tau: float = 0.99, normalize_rows: bool = True,
                    rank_threshold: float = RANK_THRESHOLD_RELU, x_fresh: torch.Tensor | None = None,
                    keep_first_layer: bool = False, common_order: bool = True,
                    progress: Progress = None) -> tuple[pd.DataFrame, list]:
    """SGD with batch 1 on ``(f(x_i) − y_i)²`` for several students at once, one step-size sequence each.

    The loss is the public code's (``train_fc_net``: ``mean((ŷ − y)²)``); one step-size sequence ``etas[s]`` per
    student, all students trained together (closed-form backpropagation in numpy,
    vectorised over runs). With ``common_order`` (default) all runs visit the examples in the same seeded order
    (common random numbers: the runs differ only by their step sizes); otherwise each run draws its own order.

    Measured every checkpoint: train/test loss (mean square), rank of φ_θ on ``x_fresh`` (default: the first |θ|
    test points, as the public code), FSC and active fraction of every hidden layer on the training set (τ,
    per-example row normalisation as the public code). The students
    (:class:`~workbench.models.teacher_student.ReLUNet`) receive the final weights.

    Returns:
        ``(metrics DataFrame, snapshots)`` — snapshots: ``(run, iteration, first-layer W [m, d], output weights [m])``
        when ``keep_first_layer``.
    """
    etas = np.atleast_2d(np.asarray(etas, np.float64))
    S, T = etas.shape
    X, Y = x.detach().double().numpy(), y.detach().double().numpy()
    Xt, Yt = x_test.detach().double().numpy(), y_test.detach().double().numpy()
    per = [_mlp_params(st) for st in students]
    has_b = per[0][1] is not None
    L = len(per[0][0])
    Ws = [np.stack([p[0][l] for p in per]) for l in range(L)]               # [S, out, in]
    bs = [np.stack([p[1][l] for p in per]) for l in range(L)] if has_b else None
    n_params = sum(w[0].size for w in Ws) + (sum(b[0].size for b in bs) if has_b else 0)
    Xf = (x_test[:n_params] if x_fresh is None else x_fresh).detach().double().numpy()
    n = len(Y)
    rng = np.random.default_rng(seed)
    idx = np.repeat(rng.integers(0, n, size=(T, 1)), S, axis=1) if common_order else rng.integers(0, n, size=(T, S))
    cps = set(int(c) for c in _checkpoints(T, checkpoints))
    rows, snaps = [], []
    every = max(T // 20, 1)
    for t in range(T + 1):
        if t in cps:
            for s in range(S):
                W_s, b_s = [w[s] for w in Ws], ([b[s] for b in bs] if has_b else None)
                with np.errstate(all="ignore"):
                    out, acts, _ = _mlp_forward(W_s, b_s, X)
                    te = float(((_mlp_forward(W_s, b_s, Xt)[0] - Yt) ** 2).mean())
                    J = mlp_jacobian(W_s, b_s, Xf)
                finite = np.isfinite(J).all()
                rec = {"run": names[s], "iteration": t, "train_loss": float(((out - Y) ** 2).mean()), "test_loss": te,
                       "rank": singular_value_rank(J, rank_threshold) if finite else -1,
                       "eta": float(etas[s, min(t, T - 1)])}
                for l, A in enumerate(acts[1:]):
                    st = fsc(A, tau, normalize_rows=normalize_rows) if finite else {}
                    rec[f"fsc_layer{l + 1}"] = st.get("feature_sparsity_coefficient", float("nan"))
                    rec[f"active_layer{l + 1}"] = st.get("active_fraction", float("nan"))
                rows.append(rec)
                if keep_first_layer:
                    snaps.append((names[s], t, W_s[0].copy(), W_s[-1][0].copy()))
        if t == T:
            break
        # forward for one example per run
        a = X[idx[t]]                                                           # [S, d]
        acts, pres = [a], []
        for l in range(L):
            z = np.einsum("soi,si->so", Ws[l], a) + (bs[l] if has_b else 0.0)
            pres.append(z)
            if l < L - 1:
                a = np.maximum(z, 0.0)
                acts.append(a)
        err = 2 * (pres[-1][:, 0] - Y[idx[t]]) * etas[:, t]                      # η · ∂loss/∂f
        delta = err[:, None]                                                    # [S, 1]
        for l in range(L - 1, -1, -1):
            gW = delta[:, :, None] * acts[l][:, None, :]
            if l > 0:
                nxt = np.einsum("so,soi->si", delta, Ws[l]) * (pres[l - 1] > 0)
            Ws[l] -= gW
            if has_b:
                bs[l] -= delta
            if l > 0:
                delta = nxt
        if progress is not None and t % every == 0:
            progress(t / T, f"SGD iteration {t}/{T}")
    with torch.no_grad():
        for s, st in enumerate(students):
            for l, lin in enumerate(st.layers):
                lin.weight.copy_(torch.from_numpy(Ws[l][s]))
                if has_b:
                    lin.bias.copy_(torch.from_numpy(bs[l][s]))
    return pd.DataFrame(rows), snaps


def _ts_verdict(df: pd.DataFrame, names: list[str], fractions, T: int,
                layers: int) -> tuple[dict, tuple[str, str], str]:
    m: dict[str, float] = {}
    final = {}
    for nm, key in zip(names, ["small"] + [f"{int(p * 100)}" for p in fractions]):
        end = df[df["run"] == nm].iloc[-1]
        final[key] = float(end["test_loss"])
        m[f"final_test_loss_{key}"] = final[key]
        m[f"final_train_loss_{key}"] = float(end["train_loss"])
        m[f"final_rank_{key}"] = float(end["rank"])
        for l in range(1, layers + 1):
            m[f"final_fsc_layer{l}_{key}"] = float(end[f"fsc_layer{l}"])
    keys = ["small"] + [f"{int(p * 100)}" for p in fractions]
    ordered = all(final[a] > final[b] for a, b in zip(keys[:-1], keys[1:]))
    last = keys[-1]
    sparser = all(m[f"final_fsc_layer{l}_{last}"] < m[f"final_fsc_layer{l}_small"] for l in range(1, layers + 1))
    g = df[df["run"] == names[-1]]
    p = fractions[-1]
    init, before = g.iloc[0], _at(df, names[-1], p - 0.01, T)
    small_before = _at(df, names[0], p - 0.01, T)
    m["rank_init"], m["rank_before_decay_last"] = float(init["rank"]), float(before["rank"])
    m["rank_small_eta_same_iteration"] = float(small_before["rank"])
    for l in range(1, layers + 1):
        m[f"fsc_layer{l}_init"] = float(init[f"fsc_layer{l}"])
        m[f"fsc_layer{l}_before_decay_last"] = float(before[f"fsc_layer{l}"])
        m[f"fsc_layer{l}_small_eta_same_iteration"] = float(small_before[f"fsc_layer{l}"])
    plateau = g[(g["iteration"] >= 0.02 * T) & (g["iteration"] <= p * T)]
    m["plateau_log10_loss_median_last"] = float(np.log10(plateau["train_loss"]).median())
    fsc_falls = all(m[f"fsc_layer{l}_before_decay_last"] < min(m[f"fsc_layer{l}_init"],
                                                                m[f"fsc_layer{l}_small_eta_same_iteration"])
                    for l in range(1, layers + 1))
    rank_falls = m["rank_before_decay_last"] < min(m["rank_init"], m["rank_small_eta_same_iteration"])
    if ordered and sparser and fsc_falls and rank_falls:
        verdict = ("reproduced", "test losses ordered by schedule length; FSC and Jacobian rank fall in the "
                                 "large-step phase")
    elif ordered and sparser and fsc_falls:
        verdict = ("partial", "test losses ordered and FSC falls on every layer, but the Jacobian rank does not fall "
                              "below its initial value and the small-step run's")
    else:
        verdict = ("not reproduced", "; ".join(w for w, ok in (
            ("final test losses not ordered by schedule length", ordered), ("not sparser than the small step", sparser),
            ("FSC does not fall during the large-step phase", fsc_falls)) if not ok))
    measured = ("Final test loss " + ", ".join(f"{k}: {final[k]:.2e}" for k in keys) + f" (ordered: {ordered}); "
                + "; ".join(f"FSC layer {l}: " + ", ".join(f"{k} {m[f'final_fsc_layer{l}_{k}']:.1%}" for k in keys)
                            for l in range(1, layers + 1))
                + f". During the {last}% plateau (median log10 train loss {m['plateau_log10_loss_median_last']:.2f}): "
                + ", ".join(f"FSC layer {l} {m[f'fsc_layer{l}_init']:.1%} → {m[f'fsc_layer{l}_before_decay_last']:.1%} "
                            f"(small η at that iteration: {m[f'fsc_layer{l}_small_eta_same_iteration']:.1%})"
                            for l in range(1, layers + 1))
                + f", rank {m['rank_init']:.0f} → {m['rank_before_decay_last']:.0f} (small η: "
                  f"{m['rank_small_eta_same_iteration']:.0f}).")
    return m, verdict, measured


def repro_teacher_student(*, T: int = 10_000, eta_small: float = 0.011, eta: float = 0.04, warmup_factor: float = 6.0,
                          warmup_exponent: float = 0.5, decays: Sequence[float] = (3.5, 2.5, 5.0),
                          fractions: Sequence[float] = DECAY_FRACTIONS, d: int = 5, n: int = 50,
                          teacher_hidden: Sequence[int] = (2, 2), student_hidden: Sequence[int] = (10, 10),
                          student_scale: float = 0.8, seed: int = 5, checkpoints: int = 100, tau: float = 0.99,
                          normalize_rows: bool = True, rank_threshold: float = RANK_THRESHOLD_RELU,
                          progress: Progress = None) -> Outcome:
    """Fig. 6.5 (§6.4.2): three-layer ReLU teacher (2-2 hidden) and student (10-10), n = 50, SGD batch 1.

    Runs: medium constant η (``eta_small``) and large η with warm-up ``η_t = η + (F − 1) η (t/T)^e`` decayed at
    10/30/50 % (public code: η = 0.04, F = 6, e = 0.5, decays 3.5/2.5/5.0, small η = 0.011, T = 10⁴, d = 5, inputs
    on the unit sphere, student init ×0.8, seed 5). Criterion (faithful reproduction): final test loss ordered
    small > 10 % > 30 % > 50 %, the 50 % run ends with a lower FSC than the small-η run on *both* layers, and at the
    end of its large-step phase its FSC on both layers is below its initial value and below the small-η run's at
    the same iteration. Data: dict ``metrics``, ``decay_at``.
    """
    from ..models.teacher_student import make_student, teacher_student_data

    data = teacher_student_data(d=d, n=n, teacher_hidden=teacher_hidden, seed=seed)
    names = ["small η"] + [f"large η, decay at {int(p * 100)}%" for p in fractions]
    schedules = [piecewise_constant(T, eta_small)] + [
        linear_warmup(T, eta, p, warmup_factor, exponent=warmup_exponent, decay=dec)
        for p, dec in zip(fractions, decays)]
    students = [make_student(d, student_hidden, scales=student_scale, bias=True, seed=seed) for _ in names]
    df, _ = train_relu_nets(students, data.x_train, data.y_train, data.x_test, data.y_test, np.stack(schedules),
                            names=names, seed=seed, checkpoints=checkpoints, tau=tau, normalize_rows=normalize_rows,
                            rank_threshold=rank_threshold, progress=progress)
    if progress:
        progress(1.0, "done")
    m, (verdict, why), measured = _ts_verdict(df, names, fractions, T, len(student_hidden))
    return Outcome(data={"metrics": df, "decay_at": dict(zip(names, [None, *fractions])), "T": T,
                         "layers": len(student_hidden)},
                   measured=measured, verdict=verdict, verdict_reason=why, metrics=m,
                   settings=dict(T=T, eta_small=eta_small, eta=eta, warmup_factor=warmup_factor,
                                 warmup_exponent=warmup_exponent, decays=list(decays), d=d, n=n,
                                 teacher_hidden=list(teacher_hidden), student_hidden=list(student_hidden),
                                 student_scale=student_scale, seed=seed, tau=tau, normalize_rows=normalize_rows,
                                 rank_threshold=rank_threshold),
                   notes=["All step sizes, the warm-up and the sizes are public-code values (thesis: none).",
                          f"FSC tau = {tau} with per-example normalised activations (public toy code); "
                          "thesis tau = 0.95."])


# ------------------------------------------------------------------ Fig. 6.9: SGD vs SDE vs gradient flow
def repro_sde(*, n: int = 80, d: int = 200, r: int = 20, T: int = 100_000, eta_large: float = 0.2397,
              decay_at: float = 0.5, decay: float = 1.5, c: float | None = None, substeps: int = 10, u0: float = 0.1,
              seed: int = 3, checkpoints: int = 100, rank_threshold: float = RANK_THRESHOLD_DIAG,
              l0_threshold: float = L0_THRESHOLD_DIAG, progress: Progress = None) -> Outcome:
    """Fig. 6.9 (§6.8) for diagonal nets: SGD vs its SDE vs gradient flow.

    SGD (large η decayed at ``decay_at``; the Fig. 6.2 setting) vs the discretised SDE (Eq. 6.58) with γ_t = η_t/k, k =
    ``substeps`` (thesis 10), η_t = η^SGD_{⌊t/k⌋}, δ_t = c · L(θ^SGD_{⌊t/k⌋}), vs gradient flow (the same recursion
    without noise).

    ``c=None`` uses c = 2/n [derived]: over one SGD step the SDE injects noise with covariance η² δ φᵀφ, while the
    batch-1 SGD noise has covariance ≈ η² (1/n) Σ_i r_i² ∇h_i ∇h_iᵀ ≈ η² (2L/n) φᵀφ — equal for δ = 2L/n.

    Criterion (faithful reproduction): the SDE sparsifies like SGD — its rank and ‖u⊙v‖₀ at the decay point are at least
    half-way from d to SGD's values (rank_SDE ≤ d − ½ (d − rank_SGD), same for ℓ0) — while gradient flow does not
    (its rank and ℓ0 stay ≥ 0.95 d), and the SDE's final test loss is below gradient flow's.
    Data: dict ``metrics`` (runs SGD / SDE / gradient flow), ``decay_at``, ``T``.
    """
    X, y, Xt, yt, _ = _diag_problem(n, d, r, seed)
    X_fresh = Xt[:2 * d]
    c = 2.0 / n if c is None else float(c)
    eta = piecewise_constant(T, eta_large, decay_at, decay)
    sub = (lambda a, b: (lambda f, m: progress(a + (b - a) * f, m))) if progress else (lambda a, b: None)
    sgd = train_diag_net(X, y, eta[None], method="sgd", u0=u0, seed=seed, checkpoints=checkpoints, names=["SGD"],
                         record_loss=True, progress=sub(0, 0.2))
    delta = np.stack([c * sgd.loss[0], np.zeros(T)])
    sde = diag_sde(X, y, np.stack([eta, eta]), delta, substeps=substeps, noise=True, u0=u0, seed=seed + 1,
                   checkpoints=checkpoints, progress=sub(0.2, 0.95))
    sde.names = ["SDE", "gradient flow"]
    df = pd.concat([_diag_metrics(sgd, X, y, Xt, yt, X_fresh, rank_threshold, l0_threshold),
                    _diag_metrics(sde, X, y, Xt, yt, X_fresh, rank_threshold, l0_threshold)], ignore_index=True)
    if progress:
        progress(1.0, "done")
    m: dict[str, float] = {}
    for run in ("SGD", "SDE", "gradient flow"):
        b = _at(df, run, decay_at - 0.005, T)
        end = df[df["run"] == run].iloc[-1]
        key = run.replace(" ", "_")
        m[f"rank_before_decay_{key}"], m[f"l0_before_decay_{key}"] = float(b["rank"]), float(b["l0"])
        m[f"final_test_loss_{key}"], m[f"final_train_loss_{key}"] = float(end["test_loss"]), float(end["train_loss"])
        m[f"final_rank_{key}"], m[f"final_l0_{key}"] = float(end["rank"]), float(end["l0"])
    tracks = (m["rank_before_decay_SDE"] <= d - 0.5 * (d - m["rank_before_decay_SGD"])
              and m["l0_before_decay_SDE"] <= d - 0.5 * (d - m["l0_before_decay_SGD"])
              and m["rank_before_decay_SGD"] < d)
    gf_dense = m["rank_before_decay_gradient_flow"] >= 0.95 * d and m["l0_before_decay_gradient_flow"] >= 0.95 * d
    better = m["final_test_loss_SDE"] < m["final_test_loss_gradient_flow"]
    close = (m["rank_before_decay_SDE"] <= d - 0.8 * (d - m["rank_before_decay_SGD"])
             and m["l0_before_decay_SDE"] <= d - 0.8 * (d - m["l0_before_decay_SGD"]))
    if tracks and close and gf_dense and better:
        verdict, why = "reproduced", ("the SDE reaches >= 80% of SGD's rank and l0 reduction; gradient flow stays "
                                      "dense and generalises worse")
    elif tracks and gf_dense and better:
        verdict, why = "partial", ("the SDE reduces rank and l0 by at least half of SGD's reduction but not 80%: it "
                                   "follows SGD only part of the way")
    else:
        verdict, why = "not reproduced", "; ".join(w for w, ok in (
            ("the SDE does not reach half of SGD's rank/l0 reduction", tracks), ("gradient flow sparsifies", gf_dense),
            ("the SDE does not generalise better than gradient flow", better)) if not ok)
    measured = (f"At the decay point ({decay_at:.0%}): rank SGD {m['rank_before_decay_SGD']:.0f}, SDE "
                f"{m['rank_before_decay_SDE']:.0f}, gradient flow {m['rank_before_decay_gradient_flow']:.0f}; "
                f"||u⊙v||_0 SGD {m['l0_before_decay_SGD']:.0f}, SDE {m['l0_before_decay_SDE']:.0f}, gradient flow "
                f"{m['l0_before_decay_gradient_flow']:.0f} (d = {d}). Final test loss SGD "
                f"{m['final_test_loss_SGD']:.2e}, SDE {m['final_test_loss_SDE']:.2e}, gradient flow "
                f"{m['final_test_loss_gradient_flow']:.2e}.")
    return Outcome(data={"metrics": df, "decay_at": decay_at, "T": T}, measured=measured,
                   verdict=verdict, verdict_reason=why, metrics=m,
                   settings=dict(n=n, d=d, r=r, T=T, eta_large=eta_large, decay_at=decay_at, decay=decay, c=c,
                                 substeps=substeps, u0=u0, seed=seed, rank_threshold=rank_threshold,
                                 l0_threshold=l0_threshold),
                   notes=[f"c = {c:.4g}: the thesis tunes c per setting to match SGD's dynamics (§6.8) and does not "
                          "report it; the default 2/n matches the covariance of batch-1 SGD noise [derived].",
                          f"k = {substeps} SDE steps per SGD step (thesis: 10).",
                          "delta_t uses SGD's instantaneous full training loss, as written in the thesis (no "
                          "smoothing)."])


def _neuron_geometry(W0: np.ndarray, W: np.ndarray, a: np.ndarray, teacher: np.ndarray) -> dict[str, float]:
    """Movement and teacher alignment of first-layer neurons (rows of ``W0`` → ``W``, output weights ``a``).

    ``movement_deg``: median angle (degrees) between each neuron's initial and final direction.
    ``teacher_angle_deg``: mean angle to the nearest teacher direction, weighted by each neuron's contribution
    |a_i| ‖w_i‖ (neurons that do not contribute do not count). ``within_5deg``: the weighted fraction of neurons
    within 5° of a teacher direction.
    """
    from ..models.teacher_student import angle_between

    W0_, W_, T_ = (torch.as_tensor(np.asarray(M, np.float64)) for M in (W0, W, teacher))
    move = np.degrees(torch.diagonal(angle_between(W0_, W_)).numpy())     # neuron i at init vs at the end
    near = np.degrees(angle_between(W_, T_).numpy()).min(1)
    wts = np.abs(a) * np.linalg.norm(W, axis=1)
    wts = wts / max(wts.sum(), 1e-300)
    return {"movement_deg": float(np.median(move)), "teacher_angle_deg": float((wts * near).sum()),
            "within_5deg": float(wts[near < 5.0].sum())}


def largest_stable_step(students_fn, data, schedule_fn, *, lo: float, hi: float, iters: int = 8,
                           seed: int = 0) -> float:
    """Largest step size η in ``[lo, hi]`` for which batch-1 SGD does not diverge, by bisection.

    SGD runs with the step sizes ``schedule_fn(η)`` on ``data``; it does not diverge (its final train loss is finite and
    below 10³); the "large step" of the toy experiments is chosen just below it (the public code tunes it by hand per
    draw). Not the "edge of stability" 2/λ_max of GD.

    Args:
        students_fn: ``() -> ReLUNet``, a fresh student with the run's initialisation (called once per probe).
        data: a :class:`~workbench.models.teacher_student.TeacherStudentData`.
        schedule_fn: ``η -> ndarray [T]`` of step sizes.
        lo: lower end of the search interval (must not diverge).
        hi: upper end of the search interval.
        iters: bisection halvings (precision (hi − lo)/2^iters).
        seed: example order of the probes (as the runs).

    Returns:
        The largest probed η that did not diverge (``hi`` if even ``hi`` does not).

    Raises:
        ValueError: SGD already diverges at ``lo``.
    """
    def diverges(eta: float) -> bool:
        with np.errstate(all="ignore"):      # overflow is the expected outcome of a diverging probe
            df, _ = train_relu_nets([students_fn()], data.x_train, data.y_train, data.x_test, data.y_test,
                                    schedule_fn(eta)[None], names=["probe"], seed=seed, checkpoints=2)
        loss = df["train_loss"].iloc[-1]
        return not (np.isfinite(loss) and loss < 1e3)

    if diverges(lo):
        raise ValueError(f"SGD already diverges at the lower end of the search, eta = {lo:g}")
    if not diverges(hi):
        return float(hi)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if diverges(mid) else (mid, hi)
    return float(lo)


def repro_two_layer(*, T: int = 14_125, eta_small: float = 0.13, eta_large: float | None = None,
                    stable_fraction: float = 0.95, decays: Sequence[float] = (2.0, 4.0, 5.0),
                    fractions: Sequence[float] = DECAY_FRACTIONS, d: int = 2, n: int = 15, teacher_width: int = 3,
                    student_width: int = 20, student_scales: Sequence[float] = (0.5, 0.0), seed: int = 0,
                    checkpoints: int = 100, tau: float = 0.99, normalize_rows: bool = True,
                    rank_threshold: float = RANK_THRESHOLD_RELU, progress: Progress = None) -> Outcome:
    """Figs. 6.10 and 6.14 (§6.9): two-layer ReLU teacher–student nets, small vs large decayed step size.

    Nets without biases in the teacher–student setup of Chizat et al. (d = 2, teacher: 3 unit-norm neurons with ±1
    output weights; student: 20 neurons), SGD batch 1 with a small constant η vs a large η decayed at 10/30/50 % (public
    code: η 0.13 vs 0.455, decays 2/4/5, T = 10^4.15, n = 15, student init scales (0.5, 0.0)).

    The public large step 0.455 was tuned by hand for the public draw ("good stabilization"); it diverges on most
    other draws. ``eta_large=None`` (default) takes ``stable_fraction`` × the largest non-diverging step of the
    50 % schedule on this draw (:func:`largest_stable_step`).

    Criterion (faithful reproduction: "FSC decreases; neurons cluster on teacher directions only for large η"; thesis:
    "for a small step size the neurons stay close to their initialization, for a large step size there is a clear
    clustering along the teacher directions"): the 50 % run ends with a lower FSC than the small-η run; the small-η
    neurons barely turn (median angle moved < ⅓ of the 50 % run's); and the 50 % run's neurons end closer to the
    teacher directions (contribution-weighted mean angle, :func:`_neuron_geometry`) than the small-η run's.
    Test losses and the plateau level are reported (Fig. 6.14) but not part of the verdict.
    Data: dict ``metrics``, ``neurons`` (init/final first-layer neurons w_i and output weights a_i), ``teacher``,
    ``geometry`` (per run), ``decay_at``, ``T``.
    """
    from ..models.teacher_student import make_student, teacher_student_data

    data = teacher_student_data(d=d, n=n, teacher_hidden=(teacher_width,), bias=False, chizat=True, seed=seed)

    def student():
        return make_student(d, (student_width,), scales=student_scales, bias=False, seed=seed)

    edge = None
    if eta_large is None:
        if progress:
            progress(0.0, "searching the largest stable step")
        edge = largest_stable_step(student, data,
                                      lambda e: piecewise_constant(T, e, fractions[-1], decays[-1]),
                                      lo=eta_small, hi=8 * eta_small, seed=seed)
        eta_large = stable_fraction * edge
    names = ["small η"] + [f"large η, decay at {int(p * 100)}%" for p in fractions]
    schedules = [piecewise_constant(T, eta_small)] + [piecewise_constant(T, eta_large, p, dec)
                                                      for p, dec in zip(fractions, decays)]
    students = [student() for _ in names]
    df, snaps = train_relu_nets(students, data.x_train, data.y_train, data.x_test, data.y_test, np.stack(schedules),
                                names=names, seed=seed, checkpoints=checkpoints, tau=tau,
                                normalize_rows=normalize_rows, rank_threshold=rank_threshold, keep_first_layer=True,
                                progress=progress)
    if progress:
        progress(1.0, "done")
    teacher = data.teacher_directions.numpy()
    keys = ["small"] + [f"{int(p * 100)}" for p in fractions]
    rows, geo = [], []
    for run, key in zip(names, keys):
        mine = [sn for sn in snaps if sn[0] == run]
        for stage, (_, _it, W, a) in (("init", mine[0]), ("final", mine[-1])):
            for i, (px, py) in enumerate(W[:, :2]):
                rows.append({"run": run, "neuron": i, "stage": stage, "x": float(px), "y": float(py),
                             "out_weight": float(a[i])})
        geo.append({"run": run, "key": key, **_neuron_geometry(mine[0][2], mine[-1][2], mine[-1][3], teacher)})
    geometry = pd.DataFrame(geo)
    m, _, measured = _ts_verdict(df, names, fractions, T, 1)
    for g in geo:
        for k in ("movement_deg", "teacher_angle_deg", "within_5deg"):
            m[f"{k}_{g['key']}"] = g[k]
    m["eta_large"] = float(eta_large)
    if edge is not None:
        m["largest_stable_step"] = edge
    last = keys[-1]
    finite = bool(np.isfinite(m[f"final_train_loss_{last}"]))
    sparser = finite and m[f"final_fsc_layer1_{last}"] < m["final_fsc_layer1_small"]
    lazy = finite and m["movement_deg_small"] < m[f"movement_deg_{last}"] / 3
    clusters = finite and m[f"teacher_angle_deg_{last}"] < m["teacher_angle_deg_small"]
    better = [k for k in keys[1:] if m[f"final_test_loss_{k}"] < m["final_test_loss_small"]]
    measured = (f"Large step η = {eta_large:.3f}" + (f" ({stable_fraction:g} × the largest stable step {edge:.3f})"
                                                      if edge is not None else "") + ". "
                + "Neurons (median angle moved / weighted angle to the nearest teacher direction / weight within 5°): "
                + ", ".join(f"{k} {m[f'movement_deg_{k}']:.1f}° / {m[f'teacher_angle_deg_{k}']:.1f}° / "
                            f"{m[f'within_5deg_{k}']:.0%}" for k in keys)
                + f". Large-step runs with a lower final test loss than the small step: {len(better)}/{len(keys) - 1}. "
                + measured)
    return Outcome(data={"metrics": df, "neurons": pd.DataFrame(rows), "geometry": geometry,
                         "teacher": pd.DataFrame(teacher[:, :2], columns=["x", "y"]),
                         "decay_at": dict(zip(names, [None, *fractions])), "T": T, "layers": 1},
                   measured=measured, verdict="reproduced" if (sparser and lazy and clusters) else "not reproduced",
                   verdict_reason=("small step lazy; large-step neurons cluster on the teacher directions with sparser "
                                   "features") if (sparser and lazy and clusters) else "; ".join(w for w, ok in (
                       ("not sparser than the small step", sparser), ("the small step is not lazy", lazy),
                       ("neurons do not cluster on the teacher directions", clusters)) if not ok),
                   metrics=m,
                   settings=dict(T=T, eta_small=eta_small, eta_large=float(eta_large), stable_fraction=stable_fraction,
                                 decays=list(decays), d=d, n=n, teacher_width=teacher_width,
                                 student_width=student_width, student_scales=list(student_scales), seed=seed,
                                 tau=tau, normalize_rows=normalize_rows, rank_threshold=rank_threshold),
                   notes=["Sizes, the small step, decays and init scales are public-code values "
                          "(fc_nets_two_layer.ipynb); the thesis gives none. The large step is set relative to this "
                          "draw's largest stable step because the public 0.455 was tuned for the public draw.",
                          "Not reproduced at this size: a loss plateau near 10^-1.5 and test losses ordered by the "
                          "schedule length (Fig. 6.14) — on most draws the large-step runs interpolate before the "
                          "first decay, so the 10/30/50 % runs end alike.",
                          f"FSC tau = {tau} (toy code) vs 0.95 (thesis)."])


def repro_relu1d_overregularized(*, factors: Sequence[float] = (400.0, 500.0, 600.0),
                                 seeds: Sequence[int] = tuple(range(8)),
                                 T: int = 31_623, eta: float = 2e-4, fraction: float = 0.5, decay: float = 3.0,
                                 width: int = 100, seed: int = 0, checkpoints: int = 30, tau: float = 0.999,
                                 normalize_rows: bool = True, rank_threshold: float = RANK_THRESHOLD_RELU,
                                 stuck_level: float = 10 ** -1.5, progress: Progress = None) -> Outcome:
    """Fig. 6.12: a larger warm-up factor over-regularises the 1-D ReLU regression.

    The 50 % schedule of Fig. 6.4 with a larger warm-up factor (F = 500·p instead of 400·p) over-regularises — the run
    "fails to fit all the training points and gets stuck at a too high value of the training loss (≈ 10^-0.5)".

    For every initialisation in ``seeds`` (Blanc et al. init of :class:`~workbench.models.toy.ReLU1D`) and every
    warm-up factor in ``factors`` (per unit of p: F = factor·``fraction``), one SGD run (batch 1) with
    ``η_t = η + (F − 1) η t/T`` up to ``fraction``·T, then ÷ ``decay`` (public code: η = 2e-4, p = 50 %, decay 3.0,
    T = 10^4.5); runs from the same init share the example order, so the factors are compared on equal terms.
    A run is *stuck* when its final train loss (mean square over the 12 points) is above ``stuck_level``.

    Whether a given init over-regularises at 500× depends on the draw (the thesis shows one draw; the public code uses
    seed 3 of its own generator), so the reproduction reports the fraction of stuck inits per factor. Verdict:
    ``reproduced`` when 500× gets stuck on most inits (> 50 %) and the fraction of stuck inits grows with the factor
    from 0 at the smallest (400×: Fig. 6.4 fits); ``partial`` when only the fraction grows (a weaker criterion than
    "500× gets stuck"); ``not reproduced`` otherwise. Measured over inits 0–7: 400× 0/8, 500× 1/8, 600× 3/8 stuck
    (partial) (the stuck runs end at train loss 0.13–0.36). Data: ``metrics`` / ``functions`` (per run), ``points``,
    ``summary`` (DataFrame init, factor, run, final_loss, stuck, kinks), ``stuck_level``, ``T``.
    """
    factors = [float(f) for f in factors]
    seeds = [int(v) for v in seeds]
    if len(factors) < 2 or not seeds:
        raise ValueError("need at least two warm-up factors and one init seed")
    runs = [(k, f) for k in seeds for f in factors]
    names = [f"{f:g}x warm-up, init {k}" for k, f in runs]
    etas = np.stack([linear_warmup(T, eta, fraction, f * fraction, decay=decay) for _, f in runs])
    out = relu1d_train(etas, width=width, seed=seed, checkpoints=checkpoints, tau=tau, normalize_rows=normalize_rows,
                       rank_threshold=rank_threshold, names=names, init_seeds=[k for k, _ in runs], progress=progress)
    if progress:
        progress(1.0, "done")
    df = out["metrics"]
    last = df.loc[df.groupby("run", sort=False)["iteration"].idxmax()].set_index("run")
    summary = pd.DataFrame([{"init": k, "factor": f, "run": nm, "final_loss": float(last.loc[nm, "train_loss"]),
                             "kinks": int(last.loc[nm, "kinks"])} for (k, f), nm in zip(runs, names)])
    summary["stuck"] = summary["final_loss"] > stuck_level
    frac = summary.groupby("factor")["stuck"].mean()
    hi_f = factors[-1]
    m: dict[str, float] = {f"stuck_fraction_{f:g}": float(frac[f]) for f in factors}
    for f in factors:
        m[f"median_final_loss_{f:g}"] = float(summary.loc[summary["factor"] == f, "final_loss"].median())
    fr = [float(frac[f]) for f in factors]
    grows = bool(all(b >= a for a, b in zip(fr[:-1], fr[1:])) and fr[-1] > fr[0] and fr[0] == 0.0)
    f500 = float(frac[500.0]) if 500.0 in frac.index else float("nan")
    if grows and f500 > 0.5:
        verdict, why = "reproduced", f"500x gets stuck on most inits ({f500:.0%}), 400x on none"
    elif grows:
        verdict, why = "partial", ("the criterion 'the stuck fraction grows with the warm-up factor' is weaker than "
                                   f"the claim '500x gets stuck': 500x is stuck on only {f500:.0%} of the inits"
                                   if f500 == f500 else "no 500x run measured")
    else:
        verdict, why = "not reproduced", ("the fraction of stuck inits does not grow with the warm-up factor from 0 "
                                          "at the smallest")
    stuck_runs = summary[summary["stuck"] & (summary["factor"] == hi_f)]
    per_init = "; ".join(
        f"init {k}: "
        + ", ".join(f"{f:g}x {summary[(summary.init == k) & (summary.factor == f)].final_loss.iloc[0]:.1e}"
                    for f in factors) for k in seeds)
    measured = (f"Runs stuck above train loss {stuck_level:.2g} after the {fraction:.0%} schedule: "
                + ", ".join(f"{f:g}x warm-up {int(frac[f] * len(seeds))}/{len(seeds)} inits" for f in factors)
                + (f" (stuck {hi_f:g}x runs end at " + ", ".join(f"{v:.2f}" for v in stuck_runs.final_loss) + ")"
                   if len(stuck_runs) else "")
                + f". Final train loss per init — {per_init}.")
    return Outcome(data={**out, "summary": summary, "stuck_level": stuck_level, "T": T,
                         "decay_at": {nm: fraction for nm in names}},
                   measured=measured, verdict=verdict, verdict_reason=why, metrics=m,
                   settings=dict(factors=factors, seeds=seeds, T=T, eta=eta, fraction=fraction, decay=decay,
                                 width=width, seed=seed, tau=tau, normalize_rows=normalize_rows,
                                 rank_threshold=rank_threshold, stuck_level=stuck_level),
                   notes=["eta, the warm-up factors (400x / 500x per unit of p), the decay 3.0 and T are public-code "
                          "values; the thesis gives none.",
                          "Over-regularisation is a property of the draw: the thesis shows one init. Here it is "
                          "measured over several inits, and the criterion compares the fraction of stuck runs."])


# ------------------------------------------------------------------ registry
_DIAG_CLAIM = ("Large-step SGD on diagonal linear nets: the train loss stabilises (~10^-1.5) while rank phi(X) and "
               "||u*v||_0 fall during the plateau; final test loss ordered small eta > decay at 10% > 30% > 50%; "
               "full-batch GD with a large step also stabilises but does not sparsify nor generalise "
               "(Figs. 6.2, 6.11, 6.3; §6.4.1, §6.9).")
register("fig6.2", repro_diag_nets, chapter=6, title="Diagonal nets: large-step SGD vs GD (Figs. 6.2, 6.3, 6.11)",
         claim=_DIAG_CLAIM,
         params=[Param("T", 100_000, help="SGD iterations (GD runs T/10 steps)"),
                 Param("eta_small", 0.2125), Param("eta_large", 0.2397),
                 Param("gd_eta_large", 4.6, help="GD large step (edge of stability)"),
                 Param("seed", 3, help="data and SGD seed"),
                 Param("checkpoints", 200, test=40),
                 Param("rank_threshold", RANK_THRESHOLD_DIAG, help="normalised singular-value threshold (code: 1e-15)"),
                 Param("l0_threshold", L0_THRESHOLD_DIAG, help="|beta_i| threshold for ||u*v||_0 (code: 1e-50)")],
         figure="workbench.viz.thesis_sparse:diag_nets_figure")
register("prop6.3.2", repro_quadratic_toy, chapter=6, title="Loss stabilisation toy (Prop. 6.3.2)",
         claim="For eta in ((theta* x_min)^-2, 1.25 (theta* x_max)^-2) SGD on y = x theta*^2 stabilises: F(theta_t) in "
               "(eps_o^2, 0.17) theta*^2 and iterates alternate in (0.65, 1-eps_o) theta* / (1+eps_o, 1.162) theta* "
               "(Prop. 6.3.2, §6.3.2).",
         params=[Param("eta", 1.05), Param("theta0", 0.5), Param("T", 2000, test=1000), Param("seed", 0)],
         figure="workbench.viz.thesis_sparse:quadratic_toy_figure")
register("fig6.4", repro_relu1d, chapter=6, title="1-D ReLU regression: warm-up decayed at 2% vs 50% (Figs. 6.4, 6.13)",
         claim="Two-layer ReLU net on 12 points: with a long warm-up (50%) the loss stabilises (~10^-0.5), the "
               "predictor becomes simpler (few kinks) and rank phi(X) and the feature sparsity coefficient fall "
               "(Fig. 6.4, §6.4.2; Fig. 6.13: first simplified, then fitted).",
         params=[Param("T", 31_623), Param("eta", 2e-4), Param("warmup_per_fraction", 400.0, help="F = this x p"),
                 Param("seed", 0), Param("checkpoints", 100, test=40),
                 Param("tau", 0.999, help="FSC correlation threshold (thesis 0.95; 1-D code 0.999)"),
                 Param("rank_threshold", RANK_THRESHOLD_RELU)],
         figure="workbench.viz.thesis_sparse:relu1d_figure")
register("fig6.12", repro_relu1d_overregularized, chapter=6,
         title="1-D ReLU regression: over-regularisation by a larger warm-up (Fig. 6.12)",
         claim="With a larger warm-up factor (500x vs 400x) the 50% run over-regularises: it cannot fit all training "
               "points and stays at a high loss (~10^-0.5) (Fig. 6.12). Measured over several inits: the "
               "fraction of stuck runs grows with the warm-up factor.",
         params=[Param("factors", [400.0, 500.0, 600.0], help="warm-up factors F/p to compare (increasing)"),
                 Param("seeds", list(range(8)), test=[0, 1], help="initialisations (Blanc et al.) to run"),
                 Param("T", 31_623), Param("checkpoints", 30, test=15),
                 Param("tau", 0.999, help="FSC correlation threshold (thesis 0.95; 1-D code 0.999)")],
         figure="workbench.viz.thesis_sparse:overregularization_figure")
register("fig6.5", repro_teacher_student, chapter=6, title="Three-layer teacher-student ReLU nets (Fig. 6.5)",
         claim="Three-layer ReLU student (10-10) of a 2-2 teacher, n = 50: large steps with warm-up stabilise the "
               "loss, lower the Jacobian rank and the feature sparsity coefficient on both hidden layers, and give a "
               "lower test loss for longer schedules at the same final train loss (Fig. 6.5, §6.4.2).",
         params=[Param("T", 10_000), Param("eta_small", 0.011), Param("eta", 0.04), Param("seed", 5),
                 Param("checkpoints", 100, test=30),
                 Param("tau", 0.99, help="FSC threshold (toy code 0.99; thesis 0.95)")],
         figure="workbench.viz.thesis_sparse:teacher_student_figure")
register("fig6.10", repro_two_layer, chapter=6,
         title="Two-layer teacher-student, d = 2: neuron clustering (Figs. 6.10, 6.14)",
         claim="Two-layer ReLU nets (Chizat et al. setup): with a small step the neurons stay near their "
               "initialisation (lazy); only with a large step do they cluster on the teacher directions, giving "
               "sparser features (Figs. 6.10, 6.14; §6.9).",
         params=[Param("T", 14_125), Param("eta_small", 0.13),
                 Param("eta_large", None, help="large step; None = stable_fraction x the largest stable step"),
                 Param("stable_fraction", 0.95), Param("seed", 0), Param("checkpoints", 100, test=30)],
         figure="workbench.viz.thesis_sparse:neurons_figure")
register("fig6.9", repro_sde, chapter=6, title="SGD vs SDE discretisation vs gradient flow (Fig. 6.9)",
         claim="The discretised SDE (Eq. 6.58) reproduces SGD's rank and sparsity decrease; gradient flow (no noise) "
               "shows no rank minimisation or sparsity (Fig. 6.9, §6.8).",
         params=[Param("T", 100_000), Param("substeps", 10, test=2, help="SDE steps per SGD step (thesis 10)"),
                 Param("c", 0.025, help="delta_t = c L(theta_SGD); default 2/n matches the SGD noise covariance"),
                 Param("seed", 3), Param("checkpoints", 100, test=30)],
         figure="workbench.viz.thesis_sparse:sde_figure")
