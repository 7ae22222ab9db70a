"""ERM, n-SAM, 1-SAM, stochastic n-SAM, random perturbations and multi-step ascent on toy models.

[Andriushchenko 2024, Ch. 5]; section, equation and figure numbers below refer to
that thesis.

Everything is vectorised over a batch of ``S`` models (one per ρ, seed, or method),
with closed-form gradients — 10⁴ full-batch steps of 10 diagonal nets take about a
second on a CPU.

Diagonal linear nets (:func:`train_diag`) use β = u ⊙ v and the loss of the
Ch. 5 public code, L(u, v) = (1/2n)‖X(u⊙v) − y‖² (``"half_mean"`` in
:mod:`workbench.models.toy`); r = X(u⊙v) − y, g = Xᵀr/n, ∇_u L = g ⊙ v,
∇_v L = g ⊙ u. One step of each method (the public code
``tml-epfl/understanding-sam``; thesis Eq. 5.7-5.8, Eq. 5.21):

* ``"erm"``: w ← w − γ∇L_I(w) on the batch I (full batch: GD);
* ``"nsam"``: shared ascent w' = w + ρ∇L_I(w), then w ← w − γ∇L_I(w') (Eq. 5.8, n-SAM);
* ``"nsam_stoch"``: ascent on a *different* batch J: w' = w + ρ∇L_J(w),
  w ← w − γ∇L_I(w') (Eq. 5.21, how "n-SAM" is run in practice, §5.11);
* ``"1sam"``: per-example ascent w'_k = w + ρ·c·∇ℓ_k(w) for every k ∈ I, then
  w ← w − γ(1/|I|)Σ_k ∇ℓ_k(w'_k) (Eq. 5.8, 1-SAM), with ℓ_k = ½r_k² and
  ``one_sam_factor`` c = 2 by default — the public code's ascent 2ρ r_k x_k ⊙ v,
  i.e. the gradient of the *un-halved* r_k² (``diagonal_linear_nets`` of that code). This keeps
  the thesis' ρ values (ρ_{1-SAM} = 0.175, ρ_{GD→1-SAM} = 10, §5.9.3) meaningful;
* ``"random"``: w' = w + δ, δ uniform on the sphere of radius ρ‖∇L_I(w)‖ (the
  same length as SAM's ascent step; the thesis does not give σ), w ← w − γ∇L_I(w').

Options shared by all SAM variants: ``normalize`` (ascent ρ·g/‖g‖ instead of ρ·g),
``ascent_steps`` k (k steps of size ρ/k each, re-evaluating the gradient: the
multi-step inner maximisation of Fig. 5.4), ``rho_follows_lr`` (ρ_t = ρ·γ_t/γ₀,
the decreasing-ρ variant of Fig. 5.21), and a switch: from iteration
``switch_at`` on, ``method_after`` with ``rho_after`` (ERM↔SAM, Fig. 5.15).

1-D ReLU nets (:func:`train_relu1d`): full-batch GD / SAM on ½Σ(h(x_i) − y_i)²,
SAM with a normalised ascent ρ∇L/‖∇L‖ (per model), as in
``understanding-sam/one_layer_relu_nets/1d_nn.ipynb``; with n = 12, 1-SAM ≈ n-SAM (§5.5.3).

Part of the core: no UI imports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

__all__ = [
    "DIAG_METHODS", "DiagRun", "diag_loss", "diag_grad", "diag_step", "train_diag",
    "implicit_bias_potential", "q_potential", "l0_norm",
    "Relu1DRun", "relu1d_grads", "train_relu1d", "count_kinks",
    "log_grid",
]

DIAG_METHODS = ("erm", "nsam", "nsam_stoch", "1sam", "random")

Progress = Callable[[float, str], None] | None


# ----------------------------------------------------------------------------- diagonal nets
def diag_loss(u: Tensor, v: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """(1/2n)‖X(u⊙v) − y‖² per model: ``u, v [S, d]``, ``x [n, d]``, ``y [n]`` -> ``[S]``."""
    r = (u * v) @ x.T - y
    return r.pow(2).mean(-1) / 2


def diag_grad(u: Tensor, v: Tensor, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gradient of the batch loss (1/2b)Σ_{k∈batch} r_k² w.r.t. (u, v), per model.

    Args:
        u: ``[S, d]`` (or ``[S, k, d]`` for per-example ascent points).
        v: same shape as ``u``.
        xb: ``[S, b, d]`` or ``[b, d]`` batch inputs.
        yb: ``[S, b]`` or ``[b]`` targets.

    Returns:
        ``(grad_u, grad_v, r)`` with ``grad_* [S, d]`` and residuals ``r [S, b]``.
    """
    beta = u * v
    if beta.dim() == 2:
        r = (xb * beta[:, None, :]).sum(-1) - yb if xb.dim() == 3 else beta @ xb.T - yb
        g = (r[..., None] * xb).mean(-2)
        return g * v, g * u, r
    # per-example points: beta [S, b, d] paired with xb [S, b, d]
    r = (xb * beta).sum(-1) - yb
    gk = r[..., None] * xb                               # [S, b, d]: ∇_β ℓ_k at its own point
    return (gk * v).mean(-2), (gk * u).mean(-2), r


def _sphere(like: Tensor, gen: torch.Generator) -> Tensor:
    z = torch.randn(like.shape, generator=gen, dtype=like.dtype)
    return z / z.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (z.dim() - 1))


def _ascent(u: Tensor, v: Tensor, xb: Tensor, yb: Tensor, rho: Tensor, normalize: bool, steps: int,
            xa: Tensor | None = None, ya: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Shared ascent point (n-SAM): k steps w ← w + (ρ/k)·g(w) (g normalised if asked); ``xa, ya`` = ascent batch."""
    xa = xb if xa is None else xa
    ya = yb if ya is None else ya
    ua, va = u, v
    for _ in range(steps):
        gu, gv, _ = diag_grad(ua, va, xa, ya)
        if normalize:
            nrm = (gu.pow(2).sum(-1) + gv.pow(2).sum(-1)).sqrt().clamp_min(1e-12)[:, None]
            gu, gv = gu / nrm, gv / nrm
        ua, va = ua + (rho[:, None] / steps) * gu, va + (rho[:, None] / steps) * gv
    return ua, va


def _ascent_per_example(u: Tensor, v: Tensor, xb: Tensor, yb: Tensor, rho: Tensor, normalize: bool, steps: int,
                        factor: float) -> tuple[Tensor, Tensor]:
    """Per-example ascent points (1-SAM): ``[S, b, d]`` each, w'_k = w + ρ·factor·∇ℓ_k(w), ℓ_k = ½r_k²."""
    if xb.dim() == 2:                                   # one shared batch [b, d] for all models
        xb, yb = xb.expand(u.shape[0], *xb.shape), yb.expand(u.shape[0], *yb.shape)
    s, b, d = xb.shape
    ua = u[:, None, :].expand(s, b, d)
    va = v[:, None, :].expand(s, b, d)
    for _ in range(steps):
        r = (xb * ua * va).sum(-1) - yb                  # [S, b]
        gu, gv = r[..., None] * xb * va, r[..., None] * xb * ua
        if normalize:
            nrm = (gu.pow(2).sum(-1) + gv.pow(2).sum(-1)).sqrt().clamp_min(1e-12)[..., None]
            gu, gv = gu / nrm, gv / nrm
        step = (factor * rho / steps)[:, None, None]
        ua, va = ua + step * gu, va + step * gv
    return ua, va


def diag_step(method: str, u: Tensor, v: Tensor, xb: Tensor, yb: Tensor, lr: Tensor, rho: Tensor, *,
              xa: Tensor | None = None, ya: Tensor | None = None, normalize: bool = False, ascent_steps: int = 1,
              one_sam_factor: float = 2.0, gen: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """One update of ``method`` for S diagonal nets (see the module docstring for the rules).

    Args:
        method: one of :data:`DIAG_METHODS`.
        u: ``[S, d]`` first factor of the weights (not modified).
        v: ``[S, d]`` second factor (not modified).
        xb: descent batch inputs ``[S, b, d]`` (or one batch ``[b, d]`` shared by all models).
        yb: descent batch targets ``[S, b]`` (or ``[b]``).
        lr: ``[S]`` step sizes γ.
        rho: ``[S]`` radii ρ.
        xa: ascent batch inputs for ``"nsam_stoch"`` (required there), shaped like ``xb``.
        ya: ascent batch targets for ``"nsam_stoch"``, shaped like ``yb``.
        normalize: normalised ascent ρ·g/‖g‖.
        ascent_steps: k inner ascent steps (k = 1: SAM).
        one_sam_factor: c in the 1-SAM ascent ρ·c·∇(½r_k²) (2 = public code).
        gen: generator for ``"random"``.

    Returns:
        The new ``(u, v)``.

    Raises:
        ValueError: unknown method or missing ascent batch / generator.
    """
    if method == "erm":
        gu, gv, _ = diag_grad(u, v, xb, yb)
    elif method in ("nsam", "nsam_stoch"):
        if method == "nsam_stoch" and xa is None:
            raise ValueError("method 'nsam_stoch' needs a separate ascent batch (xa, ya)")
        ua, va = _ascent(u, v, xb, yb, rho, normalize, ascent_steps, xa, ya)
        gu, gv, _ = diag_grad(ua, va, xb, yb)
    elif method == "1sam":
        ua, va = _ascent_per_example(u, v, xb, yb, rho, normalize, ascent_steps, one_sam_factor)
        gu, gv, _ = diag_grad(ua, va, xb, yb)
    elif method == "random":
        if gen is None:
            raise ValueError("method 'random' needs a torch.Generator")
        gu, gv, _ = diag_grad(u, v, xb, yb)
        radius = rho * (gu.pow(2).sum(-1) + gv.pow(2).sum(-1)).sqrt()
        if normalize:
            radius = rho
        z = _sphere(torch.cat([u, v], -1), gen) * radius[:, None]
        gu, gv, _ = diag_grad(u + z[:, :u.shape[1]], v + z[:, u.shape[1]:], xb, yb)
    else:
        raise ValueError(f"method={method!r} is invalid: choose one of {DIAG_METHODS}")
    return u - lr[:, None] * gu, v - lr[:, None] * gv


def q_potential(z: Tensor) -> Tensor:
    """q(z) = 2 − √(4 + z²) + z·arcsinh(z/2) (Eq. 5.12)."""
    return 2 - torch.sqrt(4 + z * z) + z * torch.asinh(z / 2)


def implicit_bias_potential(beta: Tensor, alpha: Tensor | float) -> Tensor:
    """φ_α(β) = Σ_i α_i² q(β_i/α_i²) (Eq. 5.12; Woodworth et al.), per row of ``beta [..., d]``.

    α is the thesis' scale (w₊ = w₋ = α; α = u₀/2 for the ``"uv"`` init). Small α: ≈ ℓ1-like,
    large α: ≈ ℓ2-like (Fig. 5.5).
    """
    a2 = torch.as_tensor(alpha, dtype=beta.dtype) ** 2
    return (a2 * q_potential(beta / a2)).sum(-1)


def l0_norm(beta: Tensor, threshold: float = 1e-50) -> Tensor:
    """‖β‖₀ = #{i : |β_i| > threshold} per row (public code threshold 1e-50)."""
    return (beta.abs() > threshold).sum(-1)


def log_grid(n_steps: int, n_points: int = 60) -> np.ndarray:
    """About ``n_points`` log-spaced iteration indices in [0, n_steps] (for log-log curves)."""
    pts = np.unique(np.concatenate([[0], np.round(np.logspace(0, math.log10(max(n_steps, 1)), n_points))]))
    return pts[pts <= n_steps].astype(int)


@dataclass
class DiagRun:
    """Result of :func:`train_diag`.

    Attributes:
        history: long DataFrame, one row per (model, logged iteration): ``model``, ``iteration``,
            ``train_loss``, ``test_loss``, ``l1``, ``l0``, ``phi`` and the model's label columns.
        u, v: final weights ``[S, d]``.
        labels: DataFrame of the per-model settings (``method``, ``rho``, ``lr``, ...).
        snapshots: iteration -> ``(u, v)`` clones at ``snapshot_at``.
    """

    history: pd.DataFrame
    u: Tensor
    v: Tensor
    labels: pd.DataFrame
    snapshots: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)

    def final(self) -> pd.DataFrame:
        """The last logged row of every model."""
        return self.history.sort_values("iteration").groupby("model").tail(1).set_index("model").sort_index()


def _per_model(value, s: int, dtype) -> Tensor:
    t = torch.as_tensor(value, dtype=dtype)
    return t.expand(s).clone() if t.dim() == 0 else t.clone()


def train_diag(x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, *, methods: Sequence[str] | str,
               rho: Sequence[float] | float, lr: Sequence[float] | float, n_steps: int,
               init_scale: Sequence[float] | float = 0.1, batch_size: int | None = None,
               normalize: bool = False, ascent_steps: int = 1, one_sam_factor: float = 2.0,
               rho_follows_lr: bool = False, lr_schedule: Callable[[int], float] | None = None,
               switch_at: int | None = None, method_after: Sequence[str] | str | None = None,
               rho_after: Sequence[float] | float | None = None, init_weights: tuple[Tensor, Tensor] | None = None,
               log_at: Sequence[int] | None = None, snapshot_at: Sequence[int] = (), seed: int = 0,
               labels: dict[str, Sequence] | None = None, stop_loss: float | None = None,
               progress: Progress = None) -> DiagRun:
    """Train S diagonal linear nets (β = u ⊙ v, loss (1/2n)‖Xβ − y‖²) at once.

    Models sharing a method are updated together; each model has its own method, ρ, γ and init.

    Args:
        x: training inputs ``[n, d]``.
        y: training targets ``[n]``.
        x_test: test inputs ``[n_test, d]`` (test loss uses the same (1/2n_test) normalisation).
        y_test: test targets ``[n_test]``.
        methods: one method per model (or one for all) from :data:`DIAG_METHODS`.
        rho: ρ per model (ignored for ``"erm"``).
        lr: step size γ per model.
        n_steps: number of updates T.
        init_scale: u₀ = c·1, v₀ = 0 per model (c = 2α in the thesis' w₊ = w₋ = α).
        batch_size: ``None``/``n`` for full batch, else SGD with ``batch_size`` indices drawn uniformly
            with replacement per step and per model (``"nsam_stoch"`` draws a second, independent batch).
        normalize: normalised ascent ρ·g/‖g‖ (:func:`diag_step`).
        ascent_steps: k inner ascent steps (:func:`diag_step`).
        one_sam_factor: c in the 1-SAM ascent (:func:`diag_step`).
        rho_follows_lr: ρ_t = ρ·γ_t/γ₀ (Fig. 5.21).
        lr_schedule: multiplier t ↦ γ_t/γ₀ (default constant 1).
        switch_at: iteration from which ``method_after``/``rho_after`` are used (ERM↔SAM).
        method_after: method per model (or one for all) from ``switch_at`` on (default: unchanged).
        rho_after: ρ per model from ``switch_at`` on (default: unchanged).
        init_weights: explicit initial ``(u, v)`` ``[S, d]`` (overrides ``init_scale``).
        log_at: iterations to log (default: a log grid).
        snapshot_at: iterations at which to keep weight copies.
        seed: seed of the batch sampling / random perturbations.
        labels: extra per-model label columns for the history.
        stop_loss: freeze a model (γ = 0 from then on) once its full training loss is below this
            (checked every 20 steps); the iteration is recorded in ``labels["stopped_at"]``; training ends
            when all models are frozen (a final row is logged at that iteration).
        progress: ``(fraction, message)`` callback.

    Returns:
        :class:`DiagRun`.

    Raises:
        ValueError: inconsistent lengths, unknown method, ``n_steps < 1``.
    """
    n, d = x.shape
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    sizes = [len(a) for a in (methods, rho, lr, init_scale, method_after, rho_after)
             if a is not None and not isinstance(a, (str, float, int))]
    s = max(sizes) if sizes else 1
    if any(k not in (1, s) for k in sizes):
        raise ValueError(f"per-model settings must have one common length, got lengths {sizes}")
    if init_weights is not None:
        s = init_weights[0].shape[0]
    dtype = x.dtype
    meth = [methods] * s if isinstance(methods, str) else list(methods) * (s if len(methods) == 1 else 1)
    if method_after is not None and not isinstance(method_after, str) and len(method_after) == 1:
        method_after = method_after[0]
    for m in meth:
        if m not in DIAG_METHODS:
            raise ValueError(f"method={m!r} is invalid: choose one of {DIAG_METHODS}")
    meth_after = meth if method_after is None else (
        [method_after] * s if isinstance(method_after, str) else list(method_after))
    rho_t = _per_model(rho, s, dtype)
    rho_after_t = rho_t if rho_after is None else _per_model(rho_after, s, dtype)
    lr0 = _per_model(lr, s, dtype)
    if init_weights is not None:
        u, v = init_weights[0].clone().to(dtype), init_weights[1].clone().to(dtype)
    else:
        c = _per_model(init_scale, s, dtype)
        u, v = c[:, None] * torch.ones(s, d, dtype=dtype), torch.zeros(s, d, dtype=dtype)
    alpha = (u.abs() + v.abs()) / 2  # thesis α of w± at init (exact for v0 = 0)
    gen = torch.Generator().manual_seed(int(seed))
    full = batch_size is None or batch_size >= n
    log_set = set(int(t) for t in (log_grid(n_steps) if log_at is None else log_at))
    snap_set = set(int(t) for t in snapshot_at)
    rows: list[dict] = []
    snaps: dict[int, tuple[Tensor, Tensor]] = {}
    lab = pd.DataFrame({"model": range(s), "method": meth, "rho": rho_t.tolist(), "lr": lr0.tolist(),
                        **({} if labels is None else {k: list(v_) for k, v_ in labels.items()})})
    if switch_at is not None:
        lab["method_after"] = meth_after
        lab["rho_after"] = rho_after_t.tolist()

    def log(t: int) -> None:
        with torch.no_grad():
            beta = u * v
            tr = diag_loss(u, v, x, y)
            te = diag_loss(u, v, x_test, y_test)
            l1 = beta.abs().sum(-1)
            l0 = l0_norm(beta)
            phi = implicit_bias_potential(beta, alpha)
        for k in range(s):
            rows.append({"model": k, "iteration": t, "train_loss": float(tr[k]), "test_loss": float(te[k]),
                         "l1": float(l1[k]), "l0": int(l0[k]), "phi": float(phi[k])})

    active = torch.ones(s, dtype=torch.bool)
    stopped_at = torch.full((s,), n_steps)
    groups_before = _groups(meth)
    groups_after = _groups(meth_after)
    every = max(1, n_steps // 50)
    for t in range(n_steps + 1):
        if t in log_set:
            log(t)
        if t in snap_set:
            snaps[t] = (u.clone(), v.clone())
        if stop_loss is not None and t % 20 == 0:
            with torch.no_grad():
                done = active & (diag_loss(u, v, x, y) < stop_loss)
            stopped_at[done] = t
            active &= ~done
            if not active.any():
                if t not in log_set:
                    log(t)
                break
        if t == n_steps:
            break
        mult = 1.0 if lr_schedule is None else float(lr_schedule(t))
        lr_now = lr0 * mult * active
        after = switch_at is not None and t >= switch_at
        rho_now = (rho_after_t if after else rho_t) * (mult if rho_follows_lr else 1.0)
        if full:
            xb, yb = x, y                                   # [n, d], [n]: shared by all models (no copies)
        else:
            idx = torch.randint(n, (s, batch_size), generator=gen)
            xb, yb = x[idx], y[idx]
        groups = groups_after if after else groups_before
        single = len(groups) == 1
        if not single:
            new_u, new_v = u.clone(), v.clone()
        for m, ids in groups.items():
            sel = slice(None) if single else ids
            k_m = s if single else len(ids)
            xm, ym = (xb, yb) if full else (xb[sel], yb[sel])
            kw = {}
            if m == "nsam_stoch":
                if full:
                    kw = dict(xa=x, ya=y)
                else:
                    ja = torch.randint(n, (k_m, batch_size), generator=gen)
                    kw = dict(xa=x[ja], ya=y[ja])
            uu, vv = diag_step(m, u[sel], v[sel], xm, ym, lr_now[sel], rho_now[sel], normalize=normalize,
                               ascent_steps=ascent_steps, one_sam_factor=one_sam_factor, gen=gen, **kw)
            if single:
                u, v = uu, vv
            else:
                new_u[sel], new_v[sel] = uu, vv
        if not single:
            u, v = new_u, new_v
        if progress is not None and t % every == 0:
            progress(t / n_steps, f"iteration {t}/{n_steps}")
    if progress is not None:
        progress(1.0, "done")
    if stop_loss is not None:
        lab["stopped_at"] = stopped_at.tolist()
    cols = ["model", "iteration", "train_loss", "test_loss", "l1", "l0", "phi"]
    hist = pd.DataFrame(rows, columns=cols).merge(lab, on="model")
    return DiagRun(hist, u, v, lab, snaps)


def _groups(meth: Sequence[str]) -> dict[str, Tensor]:
    out: dict[str, list[int]] = {}
    for k, m in enumerate(meth):
        out.setdefault(m, []).append(k)
    return {m: torch.tensor(ids) for m, ids in out.items()}


# ----------------------------------------------------------------------------- 1-D ReLU nets
def relu1d_grads(params: dict[str, Tensor], x: Tensor, y: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """Closed-form gradients of L = ½Σ_i (h(x_i) − y_i)² per model for h(x) = Σ_j a_j ReLU(w_j x + b_j).

    Args:
        params: ``{"w", "b", "a"}`` of ``[S, h]``.
        x: inputs ``[n]``.
        y: targets ``[n]``.

    Returns:
        (gradients with the same keys/shapes, loss ``[S]``).
    """
    pre = x[None, :, None] * params["w"][:, None, :] + params["b"][:, None, :]   # [S, n, h]
    act = torch.relu(pre)
    r = (act * params["a"][:, None, :]).sum(-1) - y                              # [S, n]
    dpre = r[..., None] * params["a"][:, None, :] * (pre > 0)
    grads = {"a": (r[..., None] * act).sum(1), "w": (dpre * x[None, :, None]).sum(1), "b": dpre.sum(1)}
    return grads, 0.5 * r.pow(2).sum(-1)


def count_kinks(params: dict[str, Tensor], lo: float, hi: float, *, merge: float = 0.05,
                min_slope_change: float = 0.05) -> Tensor:
    """Number of kinks of each 1-D ReLU net inside [lo, hi] (Fig. 5.7's "simpler" criterion).

    A neuron j contributes a slope change |a_j w_j| at x = −b_j/w_j. Kinks closer than ``merge`` are
    merged (their signed slope changes add up); a merged kink counts if its |slope change| exceeds
    ``min_slope_change``.

    Returns:
        ``[S]`` integer counts.
    """
    w, b, a = (params[k].detach() for k in ("w", "b", "a"))
    out = []
    for s in range(w.shape[0]):
        ok = w[s] != 0
        pos = (-b[s][ok] / w[s][ok])
        # sign of the slope change: a_j |w_j| (the slope of a_j relu(w_j x + b_j) jumps by a_j|w_j| when
        # crossing from left)
        dslope = a[s][ok] * w[s][ok].abs()
        inside = (pos > lo) & (pos < hi)
        pos, dslope = pos[inside], dslope[inside]
        order = torch.argsort(pos)
        pos, dslope = pos[order].tolist(), dslope[order].tolist()
        count, cur, last = 0, 0.0, None
        for p_, ds in zip(pos, dslope):
            if last is not None and p_ - last > merge:
                count += abs(cur) > min_slope_change
                cur = 0.0
            cur += ds
            last = p_
        if last is not None:
            count += abs(cur) > min_slope_change
        out.append(count)
    return torch.tensor(out)


@dataclass
class Relu1DRun:
    """Result of :func:`train_relu1d`: history, final parameters and labels of each model.

    The history has columns ``model``, ``iteration``, ``train_loss``; the final parameters are ``[S, h]``; the
    per-model labels include ``rho``, ``seed`` and the ``iterations`` to stop.
    """

    history: pd.DataFrame
    params: dict[str, Tensor]
    labels: pd.DataFrame


def train_relu1d(x: Tensor, y: Tensor, params: dict[str, Tensor], *, rho: Sequence[float] | float, lr: float,
                 n_steps: int, lr_decay: Sequence[bool] | bool = False, stop_loss: float = 1e-5,
                 log_every: int = 1000, labels: dict[str, Sequence] | None = None,
                 progress: Progress = None) -> Relu1DRun:
    """Full-batch GD (ρ = 0) or SAM (ρ > 0, normalised ascent ρ∇L/‖∇L‖) on S 1-D ReLU nets at once.

    Loss ½Σ_i (h(x_i) − y_i)² (public notebook). A model stops (is frozen) once its loss is below
    ``stop_loss``, as the notebook's ``while loss > 1e-5``. ``lr_decay`` (per model) decays γ
    linearly to 0 over ``n_steps`` (the notebook's SAM runs).

    Args:
        x: inputs ``[n]``.
        y: targets ``[n]``.
        params: initial ``{"w", "b", "a"}`` ``[S, h]`` (e.g. :meth:`ReLU1D.params`); not modified.
        rho: ρ per model.
        lr: step size γ.
        n_steps: maximum number of steps.
        lr_decay: linear decay per model.
        stop_loss: freeze a model once its loss < this.
        log_every: history interval.
        labels: extra per-model label columns.
        progress: ``(fraction, message)`` callback.

    Returns:
        :class:`Relu1DRun`.
    """
    p = {k: v.detach().clone() for k, v in params.items()}
    s = p["w"].shape[0]
    rho_t = _per_model(rho, s, p["w"].dtype)
    decay = torch.as_tensor(lr_decay).expand(s).clone()
    active = torch.ones(s, dtype=torch.bool)
    stop_it = torch.full((s,), n_steps)
    rows = []
    every = max(1, n_steps // 100)
    sam = rho_t > 0
    for t in range(n_steps + 1):
        g, loss = relu1d_grads(p, x, y)
        done = active & (loss < stop_loss)
        stop_it[done] = t
        active &= ~done
        if t % log_every == 0 or t == n_steps or not active.any():
            rows.extend({"model": k, "iteration": t, "train_loss": float(loss[k])} for k in range(s))
        if t == n_steps or not active.any():
            break
        lr_t = torch.where(decay, torch.tensor(lr * (1 - t / n_steps)), torch.tensor(lr)).to(p["w"].dtype)
        if sam.any():
            nrm = torch.sqrt(sum(v.pow(2).sum(-1) for v in g.values())).clamp_min(1e-12)
            scale = torch.where(sam, rho_t / nrm, torch.zeros_like(nrm))[:, None]
            g_adv, _ = relu1d_grads({k: p[k] + scale * g[k] for k in p}, x, y)
            g = {k: torch.where(sam[:, None], g_adv[k], g[k]) for k in g}
        step = (lr_t * active)[:, None]
        for k in p:
            p[k] = p[k] - step * g[k]
        if progress is not None and t % every == 0:
            progress(t / n_steps, f"iteration {t}/{n_steps}, models still training: {int(active.sum())}")
    lab = pd.DataFrame({"model": range(s), "rho": rho_t.tolist(), "iterations": stop_it.tolist(),
                        **({} if labels is None else {k: list(v) for k, v in labels.items()})})
    return Relu1DRun(pd.DataFrame(rows).merge(lab, on="model"), p, lab)
