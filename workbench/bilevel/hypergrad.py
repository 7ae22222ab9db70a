"""Hypergradients of the attacker's objective w.r.t. the poisoning points and λ.

Source: [Carnerero-Cano 2021, App. A] (Eq. 3: Hessian-vector and mixed
second-derivative products by Pearlmutter's trick [Pearlmutter 1994]) and App. B (Alg. 1: reverse-mode
differentiation, RMD, through T steps of full-batch gradient descent).

Notation (App. B): the inner problem is T steps ``θ⁽ᵗ⁺¹⁾ = θ⁽ᵗ⁾ − η∇_θL(θ⁽ᵗ⁾; X_p, λ)``
on ``D'_tr = D_tr ∪ D_p``; the outer objective is ``𝒜 = L(D_val, θ⁽ᵀ⁾)`` (mean
validation cross-entropy). :func:`reverse_hypergradient` returns ``∇_{X_p}𝒜`` and
``∂𝒜/∂λ`` by Alg. 1::

    dθ ← ∇_θ𝒜(θ⁽ᵀ⁾);  dX_p ← 0;  dλ ← 0
    for t = T−1 … 0:
        dX_p ← dX_p − η (∇_{X_p}∇_θ L(θ⁽ᵗ⁾))ᵀ dθ      # mixed product, Eq. 3 (lower)
        dλ   ← dλ   − η (∂_λ∇_θ L(θ⁽ᵗ⁾))ᵀ dθ
        dθ   ← dθ   − η ∇²_θ L(θ⁽ᵗ⁾) dθ               # Hessian-vector product, Eq. 3 (upper)

All three products come from one vector-Jacobian product of the gradient map
``(θ, X_p, λ) ↦ ∇_θL``: ``method="autograd"`` builds ``∇_θL`` with
``torch.autograd.grad(create_graph=True)`` and differentiates ``vᵀ∇_θL`` again (exactly
Eq. 3); ``method="analytic"`` evaluates the same products from the closed form of the
logistic loss (faster, used by the studies; both are checked against each other and
against finite differences in ``tests/test_bilevel.py``).

:func:`implicit_hypergradient` is the exact hypergradient at the inner optimum θ*
(implicit function theorem): ``∇𝒜 = −(∂∇_θL/∂(X_p, λ))ᵀ H⁻¹ ∇_θ𝒜(θ*)`` with the
linear system solved by conjugate gradients on Hessian-vector products (or directly);
RMD converges to it as T grows (App. B, last paragraph).

No UI imports.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .model import augment, logits, solve_inner, train_gd, train_loss, val_loss

__all__ = ["BilevelProblem", "Hypergradient", "grad_vjp", "reverse_hypergradient", "implicit_hypergradient",
           "unrolled_objective", "conjugate_gradient", "central_difference", "METHODS"]

METHODS = ("analytic", "autograd")


@dataclass
class BilevelProblem:
    """The data and inner-solver settings of one bilevel poisoning problem.

    Attributes:
        x_tr: ``[n_tr, d]`` clean training inputs; y_tr: ``[n_tr]`` labels in {0, 1}.
        x_val: ``[n_val, d]`` the defender's trusted validation inputs; y_val: ``[n_val]``.
        y_p: ``[n_p]`` labels of the poisoning points (fixed a priori, §2).
        eta: inner learning rate η (App. C, Table 2); steps: inner iterations T.
    """

    x_tr: torch.Tensor
    y_tr: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    y_p: torch.Tensor
    eta: float = 0.1
    steps: int = 150

    def __post_init__(self):
        if self.x_tr.dim() != 2 or self.x_val.dim() != 2:
            raise ValueError(f"x_tr and x_val must be [n, d], got {tuple(self.x_tr.shape)} and "
                             f"{tuple(self.x_val.shape)}")
        if self.x_tr.shape[1] != self.x_val.shape[1]:
            raise ValueError(f"x_tr has {self.x_tr.shape[1]} features but x_val has {self.x_val.shape[1]}")
        if self.eta <= 0 or self.steps < 1:
            raise ValueError(f"eta must be > 0 and steps >= 1, got eta={self.eta}, steps={self.steps}")

    def training_set(self, x_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``D'_tr = D_tr ∪ D_p`` as ``(x [n_tr + n_p, d], y [n_tr + n_p])``."""
        if x_p.shape != (len(self.y_p), self.x_tr.shape[1]):
            raise ValueError(f"x_p must have shape {(len(self.y_p), self.x_tr.shape[1])}, got {tuple(x_p.shape)}")
        return torch.cat([self.x_tr, x_p.to(self.x_tr.dtype)]), torch.cat([self.y_tr, self.y_p.to(self.y_tr.dtype)])

    def with_poison_labels(self, y_p: torch.Tensor) -> "BilevelProblem":
        """The same problem with the poisoning labels ``y_p`` (``[n_p]``) instead."""
        return BilevelProblem(self.x_tr, self.y_tr, self.x_val, self.y_val, y_p, self.eta, self.steps)


@dataclass
class Hypergradient:
    """Result of one hypergradient evaluation.

    Attributes:
        val_loss: the outer objective 𝒜 = mean validation cross-entropy at θ⁽ᵀ⁾ (or θ*).
        grad_xp: ``[n_p, d]`` ∇_{X_p}𝒜.
        grad_log_lam: 0-d tensor ∂𝒜/∂λ (λ on the log scale).
        theta: ``[d + 1]`` the inner solution the hypergradient was taken at.
    """

    val_loss: float
    grad_xp: torch.Tensor
    grad_log_lam: torch.Tensor
    theta: torch.Tensor


def _as_log_lam(log_lam, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(log_lam, dtype=like.dtype, device=like.device).reshape(())


def _vjp_autograd(theta, problem: BilevelProblem, x_p, log_lam, v):
    with torch.enable_grad():
        th = theta.detach().requires_grad_(True)
        xp = x_p.detach().requires_grad_(True)
        ll = log_lam.detach().requires_grad_(True)
        x, y = problem.training_set(xp)
        (g,) = torch.autograd.grad(train_loss(th, x, y, ll), th, create_graph=True)
        hv, xb, lb = torch.autograd.grad(g, (th, xp, ll), grad_outputs=v, allow_unused=True)
    xb = torch.zeros_like(x_p) if xb is None else xb
    lb = torch.zeros_like(log_lam) if lb is None else lb
    return hv.detach(), xb.detach(), lb.detach()


def _vjp_analytic(theta, problem: BilevelProblem, x_p, log_lam, v):
    x, y = problem.training_set(x_p)
    n, k = len(x), len(problem.x_tr)
    lam = torch.exp(log_lam) / n  # penalty e^λ/(2n)‖w‖² (see workbench.bilevel.model)
    s = torch.sigmoid(logits(theta, x))
    r, D = s - y.to(s.dtype), s * (1 - s)
    xv = x @ v[:-1] + v[-1]
    Dxv = D * xv
    hv = torch.cat([x.T @ Dxv / n + lam * v[:-1], Dxv.sum().reshape(1) / n])
    xb = (r[k:, None] * v[None, :-1] + Dxv[k:, None] * theta[None, :-1]) / n
    lb = lam * (theta[:-1] @ v[:-1])
    return hv, xb, lb


def grad_vjp(theta: torch.Tensor, problem: BilevelProblem, x_p: torch.Tensor, log_lam, v: torch.Tensor,
             method: str = "analytic") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The products of App. A, Eq. 3 at ``θ``: ``(∇²_θL v, (∇_{X_p}∇_θL)ᵀ v, (∂_λ∇_θL)ᵀ v)``.

    Shapes: ``[d + 1]``, ``[n_p, d]``, 0-d. ``method``: ``"analytic"`` (closed form of the
    logistic loss) or ``"autograd"`` (double backward, Pearlmutter 1994).

    Raises:
        ValueError: unknown method.
    """
    log_lam = _as_log_lam(log_lam, theta)
    if method == "analytic":
        return _vjp_analytic(theta, problem, x_p, log_lam, v)
    if method == "autograd":
        return _vjp_autograd(theta, problem, x_p, log_lam, v)
    raise ValueError(f"method={method!r} is invalid: choose one of {METHODS}")


def _val_grad(theta: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor) -> tuple[float, torch.Tensor]:
    r = torch.sigmoid(logits(theta, x_val)) - y_val.to(theta.dtype)
    return float(val_loss(theta, x_val, y_val)), augment(x_val).T @ r / len(x_val)


def reverse_hypergradient(problem: BilevelProblem, x_p: torch.Tensor, log_lam, *, theta0: torch.Tensor | None = None,
                          method: str = "analytic") -> Hypergradient:
    """RMD hypergradient through ``problem.steps`` gradient-descent steps (App. B, Alg. 1).

    Args:
        problem: data and inner settings (η, T).
        x_p: ``[n_p, d]`` poisoning-point features X_p (labels ``problem.y_p``).
        log_lam: λ on the log scale (float or 0-d tensor).
        theta0: initial parameters θ⁽⁰⁾ (zeros if ``None``).
        method: how the Eq. 3 products are evaluated (see :func:`grad_vjp`).

    Returns:
        :class:`Hypergradient` with 𝒜(θ⁽ᵀ⁾), ∇_{X_p}𝒜, ∂𝒜/∂λ and θ⁽ᵀ⁾. Cost: T forward steps
        plus T reverse steps of one Hessian-vector/mixed product each; memory ``(T+1)(d+1)``.
    """
    x, y = problem.training_set(x_p)
    ll = _as_log_lam(log_lam, x)
    if method == "analytic":
        return _reverse_analytic(problem, x, y, ll, theta0)
    if method not in METHODS:
        raise ValueError(f"method={method!r} is invalid: choose one of {METHODS}")
    theta_T, states = train_gd(x, y, ll, eta=problem.eta, steps=problem.steps, theta0=theta0, trajectory=True)
    loss, dw = _val_grad(theta_T, problem.x_val, problem.y_val)
    dxp = torch.zeros_like(x_p, dtype=x.dtype)
    dlam = torch.zeros((), dtype=x.dtype, device=x.device)
    eta = problem.eta
    for t in range(problem.steps - 1, -1, -1):
        hv, xb, lb = grad_vjp(states[t], problem, x_p, ll, dw, method)
        dxp = dxp - eta * xb
        dlam = dlam - eta * lb
        dw = dw - eta * hv
    return Hypergradient(loss, dxp, dlam, theta_T)


def _reverse_analytic(problem: BilevelProblem, x, y, ll, theta0) -> Hypergradient:
    """Alg. 1 with the closed-form Eq. 3 products of the logistic loss, fused for speed.

    Same arithmetic as ``grad_vjp(method="analytic")`` but the forward pass keeps σ(z⁽ᵗ⁾)
    of every step so the reverse pass needs no new logits (about half the tensor operations).
    """
    n, k, eta = len(x), len(problem.x_tr), problem.eta
    xt = augment(x)
    yf = y.to(x.dtype)
    mask = torch.ones(xt.shape[1], dtype=x.dtype, device=x.device)
    mask[-1] = 0
    c = torch.exp(ll) / n  # penalty e^λ/(2n)‖w‖²
    theta = xt.new_zeros(xt.shape[1]) if theta0 is None else theta0.clone()
    states, sig = [], []
    for _ in range(problem.steps):
        s = torch.sigmoid(xt @ theta)
        states.append(theta)
        sig.append(s)
        theta = theta - eta * (xt.T @ (s - yf) / n + c * mask * theta)
    loss, dw = _val_grad(theta, problem.x_val, problem.y_val)
    dxp = x.new_zeros((n - k, x.shape[1]))
    dlam = x.new_zeros(())
    for t in range(problem.steps - 1, -1, -1):
        s, th = sig[t], states[t]
        Dxv = s * (1 - s) * (xt @ dw)
        # mixed product (∇_{X_p}∇_θL)ᵀdθ: rows (r_k dθ_w + D_k (x̃_k·dθ) w)/n
        dxp = dxp - (eta / n) * ((s[k:] - yf[k:])[:, None] * dw[None, :-1] + Dxv[k:, None] * th[None, :-1])
        dlam = dlam - eta * c * (th[:-1] @ dw[:-1])
        dw = dw - eta * (xt.T @ Dxv / n + c * mask * dw)
    return Hypergradient(loss, dxp, dlam, theta)


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, *, tol: float = 1e-12,
                       max_iter: int | None = None) -> torch.Tensor:
    """Solve ``A q = b`` for symmetric positive-definite ``A`` given by ``matvec`` (Hestenes–Stiefel CG).

    Stops when ``‖r‖ ≤ tol·‖b‖`` or after ``max_iter`` (default ``10·len(b)``) iterations.
    """
    q = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = r @ r
    stop = (tol * torch.linalg.vector_norm(b)) ** 2
    for _ in range(max_iter or 10 * len(b)):
        if rs <= stop:
            break
        Ap = matvec(p)
        a = rs / (p @ Ap)
        q = q + a * p
        r = r - a * Ap
        rs_new = r @ r
        p = r + (rs_new / rs) * p
        rs = rs_new
    return q


def implicit_hypergradient(problem: BilevelProblem, x_p: torch.Tensor, log_lam, *,
                           theta_star: torch.Tensor | None = None, solver: str = "cg", method: str = "analytic",
                           tol: float = 1e-12) -> Hypergradient:
    """Exact hypergradient at the inner optimum θ* by the implicit function theorem.

    ``q = H⁻¹∇_θ𝒜(θ*)`` (``solver="cg"``: conjugate gradients on Hessian-vector products;
    ``"direct"``: dense solve of the ``(d+1)×(d+1)`` Hessian), then
    ``∇_{X_p}𝒜 = −(∇_{X_p}∇_θL)ᵀq`` and ``∂𝒜/∂λ = −(∂_λ∇_θL)ᵀq`` (mixed products of Eq. 3).
    θ* comes from :func:`~workbench.bilevel.model.solve_inner` unless given.

    Raises:
        ValueError: unknown solver.
    """
    if solver not in ("cg", "direct"):
        raise ValueError(f"solver={solver!r} is invalid: choose 'cg' or 'direct'")
    x, y = problem.training_set(x_p)
    ll = _as_log_lam(log_lam, x)
    theta = solve_inner(x, y, ll) if theta_star is None else theta_star
    loss, gv = _val_grad(theta, problem.x_val, problem.y_val)

    def hvp(v):
        return grad_vjp(theta, problem, x_p, ll, v, method)[0]

    if solver == "cg":
        q = conjugate_gradient(hvp, gv, tol=tol)
    else:
        H = torch.stack([hvp(e) for e in torch.eye(len(gv), dtype=gv.dtype, device=gv.device)])
        q = torch.linalg.solve(0.5 * (H + H.T), gv)
    _, xb, lb = grad_vjp(theta, problem, x_p, ll, q, method)
    return Hypergradient(loss, -xb, -lb, theta)


def unrolled_objective(problem: BilevelProblem, x_p: torch.Tensor, log_lam, *, theta0: torch.Tensor | None = None
                       ) -> float:
    """``𝒜(θ⁽ᵀ⁾(X_p, λ))``: validation loss after T inner steps (the function RMD differentiates)."""
    x, y = problem.training_set(x_p)
    theta = train_gd(x, y, _as_log_lam(log_lam, x), eta=problem.eta, steps=problem.steps, theta0=theta0)
    return float(val_loss(theta, problem.x_val, problem.y_val))


def central_difference(f: Callable[[torch.Tensor], float], x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Central finite-difference gradient ``(f(x + εe_i) − f(x − εe_i)) / 2ε`` of a scalar function, shape of ``x``."""
    flat = x.detach().reshape(-1).clone()
    out = torch.empty_like(flat)
    for i in range(len(flat)):
        e = torch.zeros_like(flat)
        e[i] = eps
        out[i] = (f((flat + e).reshape(x.shape)) - f((flat - e).reshape(x.shape))) / (2 * eps)
    return out.reshape(x.shape)
