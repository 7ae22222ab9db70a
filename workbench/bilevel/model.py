"""L2-regularised logistic regression: the inner (training) problem of the bilevel attack.

Source: [Carnerero-Cano 2021, §3 and App. B–C] ("Regularization can help
mitigate poisoning attacks... with the right hyperparameters").

Parameters are one flat vector ``theta = [w, b]`` of length ``d + 1`` (``w``: weights,
``b``: bias). Labels are ``{0, 1}``. The training loss on a (possibly poisoned) set
``D'_tr = D_tr ∪ D_p`` is the paper's §3 objective with the hyperparameter on a log
scale (the paper's ``ελ`` is ``e^λ``; its ranges such as ``Φ(λ) = [−8, log 200]`` and
"λ = log 20 ≈ 3" are log values)::

    L(D, λ, θ) = 1/n [ Σ_i softplus(−(2y_i − 1)(w·x_i + b)) + (e^λ / 2) ‖w‖² ]        (§3)

i.e. the summed cross-entropy plus the paper's penalty, divided by the number ``n`` of
training points (clean + poisoning) so that full-batch steps have the paper's η. The
division by ``n`` is inferred, not printed in the paper: with a plain mean loss plus
``e^λ/2‖w‖²`` gradient descent diverges for the paper's own settings (η·e^λ > 2, e.g. the
2-D example's η = 0.2 with λ = log 20, or MNIST's η = 0.1 with λ up to log 200), whereas
with ``e^λ/(2n)`` every Table 2 setting is stable (ImageNet: 0.05·20000/512 ≈ 1.95 < 2).
It is also scikit-learn's ``C Σℓ + ½‖w‖²`` with ``C = e^{−λ}``.
The bias is not penalised. ``log_lam = -inf`` means no regularisation.
The validation (attacker's) objective ``A = L(D_val, w)`` is the same cross-entropy
without the penalty (§2: the attacker maximises the defender's validation loss).

Everything here is plain torch and works on any device and dtype (the hypergradient
code uses ``float64``); functions with a leading batch dimension train many logistic
regressions at once (used for the 2-D maps of Fig. 1).

No UI imports.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["augment", "logits", "train_loss", "val_loss", "train_grad", "train_gd", "train_gd_batched",
           "solve_inner", "train_sgd", "error_rate", "penalty_weight"]


def penalty_weight(log_lam: torch.Tensor | float) -> torch.Tensor | float:
    """``e^λ`` (0 for ``λ = -inf``)."""
    if isinstance(log_lam, torch.Tensor):
        return torch.exp(log_lam)
    return 0.0 if log_lam == -math.inf else math.exp(log_lam)


def augment(x: torch.Tensor) -> torch.Tensor:
    """``[..., n, d] -> [..., n, d + 1]``: append a column of ones (the bias input)."""
    return torch.cat([x, x.new_ones(x.shape[:-1] + (1,))], dim=-1)


def logits(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``w·x + b`` for ``theta [..., d + 1]`` and ``x [..., n, d]`` -> ``[..., n]``."""
    return (x @ theta[..., :-1].unsqueeze(-1)).squeeze(-1) + theta[..., -1:]


def val_loss(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy ``[...]`` of the model ``theta`` on ``(x, y)`` (the attacker's objective 𝒜)."""
    z = logits(theta, x)
    return F.binary_cross_entropy_with_logits(z, y.to(theta.dtype).expand(z.shape), reduction="none").mean(-1)


def train_loss(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, log_lam) -> torch.Tensor:
    """The regularised training loss of §3: mean cross-entropy + ``e^λ/(2n) ‖w‖²`` (shape ``[...]``)."""
    lam = penalty_weight(log_lam)
    return val_loss(theta, x, y) + 0.5 * lam / x.shape[-2] * theta[..., :-1].square().sum(-1)


def train_grad(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, log_lam, n_total: int | None = None
               ) -> torch.Tensor:
    """Closed-form ``∇_θ L`` ``[..., d + 1]``: ``X̃ᵀ(σ(z) − y)/n + (e^λ/N) [w; 0]``.

    ``N = n_total`` (default: ``n = len(x)``); a mini-batch passes the full training-set size
    so that its gradient is an unbiased estimate of the full objective's.
    """
    r = torch.sigmoid(logits(theta, x)) - y.to(theta.dtype)
    n = x.shape[-2]
    g_w = (r.unsqueeze(-2) @ x).squeeze(-2) / n
    g_b = r.mean(-1, keepdim=True)
    lam = penalty_weight(log_lam)
    if isinstance(lam, torch.Tensor):
        lam = lam.unsqueeze(-1) if lam.dim() else lam
    return torch.cat([g_w + lam / (n_total or n) * theta[..., :-1], g_b], dim=-1)


def train_gd(x: torch.Tensor, y: torch.Tensor, log_lam, *, eta: float, steps: int, theta0: torch.Tensor | None = None,
             trajectory: bool = False):
    """``steps`` full-batch gradient-descent steps ``θ ← θ − η∇_θL`` (App. B, Alg. 1 lines 1–4).

    Args:
        x: ``[n, d]`` training inputs (clean + poisoning points).
        y: ``[n]`` labels in {0, 1}.
        log_lam: λ on the log scale (float or 0-d tensor; ``-inf``: no penalty).
        eta: learning rate η.
        steps: number of iterations T.
        theta0: initial ``[d + 1]`` parameters (zeros if ``None``).
        trajectory: also return the states ``θ⁽⁰⁾ … θ⁽ᵀ⁾`` as a ``[T + 1, d + 1]`` tensor.

    Returns:
        ``θ⁽ᵀ⁾`` (and the trajectory when asked).
    """
    theta = x.new_zeros(x.shape[-1] + 1) if theta0 is None else theta0.clone()
    states = [theta] if trajectory else None
    for _ in range(steps):
        theta = theta - eta * train_grad(theta, x, y, log_lam)
        if trajectory:
            states.append(theta)
    return (theta, torch.stack(states)) if trajectory else theta


def train_gd_batched(x: torch.Tensor, y: torch.Tensor, log_lam: torch.Tensor, *, eta: float,
                     steps: int) -> torch.Tensor:
    """Train ``B`` logistic regressions at once by full-batch gradient descent from zero.

    Args:
        x: ``[B, n, d]`` one training set per model (broadcastable, e.g. ``[1, n, d]``).
        y: ``[B, n]`` or ``[n]`` labels in {0, 1}.
        log_lam: ``[B]`` λ per model (log scale; ``-inf`` allowed).
        eta: learning rate η.
        steps: number of full-batch steps.

    Returns:
        ``[B, d + 1]`` parameters. Used for the Fig. 1 maps (one model per poisoning-point
        position and λ), so a 50×50 map is a single batched loop of ``steps`` iterations.
    """
    if log_lam.dim() != 1:
        raise ValueError(f"log_lam must be 1-D [B], got shape {tuple(log_lam.shape)}")
    B = max(x.shape[0], log_lam.shape[0])
    theta = x.new_zeros(B, x.shape[-1] + 1)
    n = x.shape[-2]
    lam = torch.exp(log_lam.to(x.dtype)).unsqueeze(-1) / n
    yf = y.to(x.dtype)
    for _ in range(steps):
        z = (x @ theta[:, :-1].unsqueeze(-1)).squeeze(-1) + theta[:, -1:]
        r = torch.sigmoid(z) - yf
        g_w = (r.unsqueeze(-2) @ x).squeeze(-2) / n + lam * theta[:, :-1]
        g_b = r.mean(-1, keepdim=True)
        theta = theta - eta * torch.cat([g_w, g_b], dim=-1)
    return theta


def solve_inner(x: torch.Tensor, y: torch.Tensor, log_lam, *, theta0: torch.Tensor | None = None, tol: float = 1e-12,
                max_iter: int = 100) -> torch.Tensor:
    """The inner optimum ``θ* = argmin_θ L(D, λ, θ)`` by damped Newton's method (for the implicit hypergradient).

    Needs a finite λ (or separable-free data) for a unique optimum. Stops when the squared
    Newton decrement is below ``tol``.

    Raises:
        RuntimeError: no convergence in ``max_iter`` iterations.
    """
    theta = x.new_zeros(x.shape[-1] + 1) if theta0 is None else theta0.clone()
    xt = augment(x)
    lam = penalty_weight(log_lam)
    reg = torch.ones(x.shape[-1] + 1, dtype=x.dtype, device=x.device)
    reg[-1] = 0
    for _ in range(max_iter):
        g = train_grad(theta, x, y, log_lam)
        s = torch.sigmoid(xt @ theta)
        H = (xt.T * (s * (1 - s))) @ xt / len(x) + torch.diag(lam / len(x) * reg)
        step = torch.linalg.solve(H, g)
        dec = float(g @ step)
        if dec < tol:
            return theta
        t, f0 = 1.0, float(train_loss(theta, x, y, log_lam))
        while float(train_loss(theta - t * step, x, y, log_lam)) > f0 - 0.25 * t * dec and t > 1e-10:
            t *= 0.5
        theta = theta - t * step
    raise RuntimeError(f"Newton's method did not converge in {max_iter} iterations (decrement {dec:.3g})")


def train_sgd(x: torch.Tensor, y: torch.Tensor, log_lam, *, eta: float, epochs: int, batch_size: int,
              seed: int = 0) -> torch.Tensor:
    """Mini-batch SGD from zero, used to *test* an attack (App. C, Table 3: η_tr, batch size, epochs).

    Each epoch visits a fresh random permutation (``torch.Generator`` seeded by ``seed``);
    the gradient of a mini-batch is the closed-form :func:`train_grad` on it.

    Returns:
        ``[d + 1]`` parameters.
    """
    n = len(x)
    g = torch.Generator().manual_seed(int(seed))
    theta = x.new_zeros(x.shape[-1] + 1)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).to(x.device)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            theta = theta - eta * train_grad(theta, x[idx], y[idx], log_lam, n_total=n)
    return theta


def error_rate(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Classification error ``[...]`` (fraction of ``(w·x + b > 0) != y``)."""
    return ((logits(theta, x) > 0).to(torch.long) != y.long()).to(theta.dtype).mean(-1)
