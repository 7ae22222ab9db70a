"""The minimax bilevel poisoning attack (Eq. 1) solved by projected hypergradient ascent/descent (Eq. 2).

Source: [Carnerero-Cano 2021, §2] (Eq. 1–2), App. C (T_{D_p}, T_λ, T_mul, α, β,
Φ(D_p), Φ(λ) of Table 2) and footnote 4 (restarts).

    min_{λ∈Φ(λ)} max_{D_p∈Φ(D_p)} L(D_val, w*)  s.t. w* ∈ argmin_w L(D_tr ∪ D_p, λ, w)        (1)
    X_p ← Π_{Φ(D_p)}(X_p + α∇_{X_p}𝒜),   λ ← Π_{Φ(λ)}(λ − β∇_λ𝒜)                              (2)

:func:`run_attack` covers the three modes of App. C:

* ``learn_xp`` only: the poisoning points are learned with λ fixed (``T_{D_p}`` hyperiterations),
* ``learn_lambda`` only: λ is learned (e.g. on the clean training set, ``T_λ`` hyperiterations),
* both: X_p and λ are learned "in a coordinate manner" (``T_mul`` hyperiterations): every
  hyperiteration takes one ascent step on X_p, then one descent step on λ at the new X_p
  (two RMD passes).

Labels of the poisoning points are flipped and fixed a priori; the points are initialised
from validation points (:func:`init_poison`). Hypergradients come from
:func:`~workbench.bilevel.hypergrad.reverse_hypergradient` (Alg. 1).

Step scaling (an implementation choice; the paper does not say how ∇_{X_p}𝒜 is scaled):
with ``normalize=True`` (default) each poisoning point moves by ``α·g_k/‖g_k‖₂`` — the raw
hypergradient of a mean validation loss w.r.t. one of ~500 training points is O(1/n), so
α = 0.99 on the raw gradient would barely move a point inside the [0, 1]^784 box. λ takes
raw steps ``β∂𝒜/∂λ``.

Restarts (footnote 4), in the two single-variable modes only: when the best objective has
not improved by ``min_improvement`` for ``patience`` hyperiterations and restarts remain,
the poisoning points are re-drawn without duplicates from validation points of the same
class as their initialisation (so their flipped labels stay fixed), and λ is re-drawn
uniformly from ``[λ⁽τ⁾ − 0.5, λ⁽τ⁾ + 0.5]``; the best iterate over all restarts is returned.

No UI imports.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from .hypergrad import BilevelProblem, Hypergradient, reverse_hypergradient, unrolled_objective

__all__ = ["AttackConfig", "AttackStep", "AttackResult", "init_poison", "project_box", "project_lambda",
           "run_attack"]


@dataclass
class AttackConfig:
    """Settings of the outer problem (App. C, Table 2; defaults: MNIST '0' vs '8').

    Attributes:
        alpha: learning rate α of the poisoning points (ascent).
        beta: learning rate β of λ (descent, log scale).
        steps: hyperiterations (T_{D_p}, T_λ or T_mul depending on the mode).
        box: Φ(D_p) = ``[lo, hi]^d``, the feasible feature range.
        lam_range: Φ(λ) = ``[lo, hi]`` on the log scale.
        normalize: per-point L2-normalised X_p steps (see module docstring).
        restarts: maximum number of footnote-4 restarts (0: none).
        patience: hyperiterations without improvement that trigger a restart.
        min_improvement: improvement of the best objective that resets the patience counter.
        method: Eq. 3 products, ``"analytic"`` or ``"autograd"``.
        seed: seed of the restart draws.
    """

    alpha: float = 0.99
    beta: float = 0.8
    steps: int = 100
    box: tuple[float, float] = (0.0, 1.0)
    lam_range: tuple[float, float] = (-8.0, math.log(200.0))
    normalize: bool = True
    restarts: int = 0
    patience: int = 20
    min_improvement: float = 1e-4
    method: str = "analytic"
    seed: int = 0

    def __post_init__(self):
        self.box = tuple(float(v) for v in self.box)
        self.lam_range = tuple(float(v) for v in self.lam_range)
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={self.alpha}, beta={self.beta}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if not self.box[0] < self.box[1]:
            raise ValueError(f"box={self.box} is invalid: need lo < hi")
        if not self.lam_range[0] <= self.lam_range[1]:
            raise ValueError(f"lam_range={self.lam_range} is invalid: need lo <= hi")
        if self.restarts < 0 or self.patience < 1:
            raise ValueError(f"restarts must be >= 0 and patience >= 1, got {self.restarts}, {self.patience}")

    def to_dict(self) -> dict:
        """The settings as a plain dict (field name → value)."""
        return asdict(self)


@dataclass
class AttackStep:
    """One hyperiteration: the objective 𝒜 at the iterate before its update, the iterate's λ, restarts so far."""

    iteration: int
    val_loss: float
    log_lam: float
    restart: int


@dataclass
class AttackResult:
    """Outcome of :func:`run_attack`.

    Attributes:
        x_p: ``[n_p, d]`` final (or best, in single-variable modes) poisoning points.
        log_lam: final (or best) λ.
        val_loss: 𝒜 at the returned ``(x_p, log_lam)``.
        history: one :class:`AttackStep` per hyperiteration.
        path: ``[steps + 1, n_p, d]`` iterates of X_p (when ``record_path``), else ``None``.
        lam_path: λ of every iterate.
        restarts: restarts used.
    """

    x_p: torch.Tensor
    log_lam: float
    val_loss: float
    history: list[AttackStep] = field(default_factory=list)
    path: torch.Tensor | None = None
    lam_path: list[float] = field(default_factory=list)
    restarts: int = 0

    def history_records(self) -> list[dict]:
        """The history as one dict per hyperiteration (the fields of :class:`AttackStep`)."""
        return [asdict(h) for h in self.history]


def project_box(x: torch.Tensor, box: tuple[float, float]) -> torch.Tensor:
    """Π_{Φ(D_p)}: Euclidean projection onto the box ``[lo, hi]^d`` (element-wise clamp)."""
    return x.clamp(box[0], box[1])


def project_lambda(log_lam: float, lam_range: tuple[float, float]) -> float:
    """Π_{Φ(λ)}: clamp λ (log scale) to ``[lo, hi]``."""
    return float(min(max(log_lam, lam_range[0]), lam_range[1]))


def init_poison(x_val: torch.Tensor, y_val: torch.Tensor, n_p: int, *, generator: torch.Generator,
                exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clone ``n_p`` validation points drawn without duplicates and flip their labels (§2, App. C).

    Args:
        x_val: validation inputs ``[n, d]``.
        y_val: validation labels ``[n]`` in {0, 1}.
        n_p: number of poisoning points.
        generator: seeds the draw.
        exclude: validation positions not to draw (e.g. already used by earlier batches;
            ignored when too few remain).

    Returns:
        ``(x_p [n_p, d], y_p [n_p] = 1 − y_val[idx], idx [n_p])``.

    Raises:
        ValueError: ``n_p`` larger than the validation set.
    """
    n = len(x_val)
    if n_p > n:
        raise ValueError(f"cannot draw {n_p} poisoning points from {n} validation points without duplicates")
    allowed = torch.ones(n, dtype=torch.bool)
    if exclude is not None and len(exclude) and n - len(torch.unique(exclude)) >= n_p:
        allowed[exclude.cpu()] = False
    pool = torch.nonzero(allowed).squeeze(1)
    idx = pool[torch.randperm(len(pool), generator=generator)[:n_p]].to(x_val.device)
    return x_val[idx].clone(), 1 - y_val[idx].clone(), idx


def _redraw_same_class(problem: BilevelProblem, generator: torch.Generator) -> torch.Tensor:
    """Restart draw: for every poisoning point a distinct validation point of class ``1 − y_p``.

    The label stays flipped.
    """
    out = []
    for c in (0, 1):
        k = torch.nonzero(problem.y_p.long() == c).squeeze(1)
        if len(k) == 0:
            continue
        pool = torch.nonzero(problem.y_val.long() == 1 - c).squeeze(1).cpu()
        pick = pool[torch.randperm(len(pool), generator=generator)[:len(k)]]
        if len(pick) < len(k):  # fewer validation points of that class than poisoning points: allow repeats
            pick = pool[torch.randint(len(pool), (len(k),), generator=generator)]
        out.append((k, pick.to(problem.x_val.device)))
    x_p = problem.x_val.new_empty((len(problem.y_p), problem.x_val.shape[1]))
    for k, pick in out:
        x_p[k] = problem.x_val[pick]
    return x_p


def _ascent_step(x_p: torch.Tensor, g: torch.Tensor, cfg: AttackConfig) -> torch.Tensor:
    if cfg.normalize:
        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return project_box(x_p + cfg.alpha * g, cfg.box)


def run_attack(problem: BilevelProblem, x_p: torch.Tensor, log_lam: float, cfg: AttackConfig, *,
               learn_xp: bool = True, learn_lambda: bool = False, record_path: bool = False,
               callback: Callable[[AttackStep, torch.Tensor], bool | None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> AttackResult:
    """Projected hypergradient ascent on X_p and/or descent on λ (Eq. 2), see the module docstring.

    Args:
        problem: data and inner settings; ``problem.y_p`` are the (fixed) poisoning labels.
        x_p: ``[n_p, d]`` initial poisoning points (projected onto the box first).
        log_lam: initial λ (log scale). With ``learn_lambda`` it is projected onto Φ(λ); a fixed
            λ is used as given (``-inf``: no regularisation).
        cfg: :class:`AttackConfig`.
        learn_xp: learn the poisoning points X_p (the attacker).
        learn_lambda: learn λ (the defender); at least one of the two.
        record_path: keep every X_p iterate (for the animated 2-D path).
        callback: called after every hyperiteration with ``(step, x_p)``; returning ``True`` stops.
        should_stop: polled every hyperiteration; ``True`` stops early.

    Returns:
        :class:`AttackResult`. In the single-variable modes the best iterate (max 𝒜 for the
        attack, min 𝒜 for λ) over all restarts; in the minimax mode the last iterate.

    Raises:
        ValueError: neither variable learned; x_p of the wrong shape.
    """
    if not (learn_xp or learn_lambda):
        raise ValueError("run_attack needs learn_xp and/or learn_lambda")
    gen = torch.Generator().manual_seed(int(cfg.seed))
    x_p = project_box(x_p.to(problem.x_tr.dtype), cfg.box) if learn_xp else x_p.to(problem.x_tr.dtype)
    lam = project_lambda(log_lam, cfg.lam_range) if learn_lambda else float(log_lam)
    minimax = learn_xp and learn_lambda
    sign = 1.0 if learn_xp else -1.0  # +: maximise 𝒜 (attacker), -: minimise (λ alone)
    best = (-math.inf, x_p, lam)
    ref, since, restarts = -math.inf, 0, 0
    history: list[AttackStep] = []
    path = [x_p.clone()] if record_path else None
    lam_path = [lam]

    def hyper(xp, ll) -> Hypergradient:
        return reverse_hypergradient(problem, xp, ll, method=cfg.method)

    for it in range(cfg.steps):
        if should_stop is not None and should_stop():
            break
        h = hyper(x_p, lam)
        step = AttackStep(it, h.val_loss, lam, restarts)
        history.append(step)
        if sign * h.val_loss > best[0]:
            best = (sign * h.val_loss, x_p.clone(), lam)
        if sign * h.val_loss > ref + cfg.min_improvement:  # progress resets the patience counter
            ref, since = sign * h.val_loss, 0
        else:
            since += 1
        if learn_xp:
            x_p = _ascent_step(x_p, h.grad_xp, cfg)
        if learn_lambda:
            g_lam = hyper(x_p, lam).grad_log_lam if minimax else h.grad_log_lam
            lam = project_lambda(lam - cfg.beta * float(g_lam), cfg.lam_range)
        if not minimax and since >= cfg.patience and restarts < cfg.restarts:  # footnote 4
            restarts, since = restarts + 1, 0
            if learn_xp:
                x_p = _redraw_same_class(problem, gen)
            else:
                lam = project_lambda(lam + float(torch.rand((), generator=gen, dtype=torch.float64)) - 0.5,
                                     cfg.lam_range)
        if record_path:
            path.append(x_p.clone())
        lam_path.append(lam)
        if callback is not None and callback(step, x_p):
            break
    final = unrolled_objective(problem, x_p, lam)
    if not minimax and best[0] > sign * final:
        x_p, lam, final = best[1], best[2], sign * best[0]
    return AttackResult(x_p, lam, final, history, torch.stack(path) if record_path else None, lam_path, restarts)
