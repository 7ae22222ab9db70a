"""m-sharpness: worst-case and average-case, ℓ2 / ℓ∞, standard / adaptive.

Definitions (per batch ``B`` of ``m`` training examples, ``L_B`` the mean loss
on it, ``w`` the trainable parameters):

* **worst-case** ``S_B = max_{||δ ⊙ c^{-1}||_p <= ρ} L_B(w + δ) − L_B(w)``;
* **average-case** ``S_B = E_δ L_B(w + δ) − L_B(w)``;

and the **m-sharpness** is the mean of ``S_B`` over the consecutive batches of
``m`` examples of a fixed :class:`~workbench.analysis.common.ExampleSet`
(un-augmented training points; the protocol of the thesis uses 1,024 points,
``m = 128``). ``c = 1`` is the *standard* sharpness of
[Andriushchenko 2024, Eq. 5.1] (Ch. 5, "Towards Understanding SAM"; the m-sharpness of
[Foret 2021]), ``c = |w|``
the elementwise *adaptive* sharpness of [Andriushchenko 2024, Eq. 7.1] ([Kwon 2021];
[Andriushchenko 2023], "A modern look at the relationship between sharpness
and generalization", ICML 2023), which is invariant to multiplicative
reparametrisations ``w -> w ⊙ c`` that keep the network function (the
criticism of [Dinh 2017] / [Murphy 2025, §2.2.2] does not apply to it).

Implementation: the perturbation is written ``δ = c ⊙ δ'`` and the search is
over ``δ'`` in the plain ball ``||δ'||_p <= ρ`` (the same optimisation problem):

* ``method="pgd"`` (Ch. 5 protocol, [Andriushchenko 2024, §5.11] "Sharpness computation"):
  ``steps=100`` normalised projected gradient-ascent steps of size
  ``step_size·ρ`` (``step_size=0.1``): ℓ2 ``δ' <- Π(δ' + η u/||u||)`` with
  ``u = c ⊙ ∇L`` (in δ this is a step along ``c² ⊙ g / ||c ⊙ g||``, i.e. scaled
  by ``|w|²`` when adaptive), projection = rescaling onto the ball; ℓ∞
  ``δ' <- clip(δ' + η sign(u), −ρ, ρ)``. Start at 0, or a uniformly random point
  of the ball with ``rand_init=True``. The best loss over all iterates is kept.
* ``method="apgd"``: Auto-PGD ([Croce 2020]; [Andriushchenko 2024, Alg. 5] in §7.10) in
  weight space: ``steps=20``, initial ``η = step_size·ρ`` with ``step_size=2``,
  momentum ``α = 0.75`` (``δ_{k+1} = Π(δ_k + α(z_{k+1} − δ_k) + (1−α)(δ_k − δ_{k−1}))``,
  ``z_{k+1} = Π(δ_k + η·dir(u_k))``, exactly step 8 of Alg. 5), checkpoints
  ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``,
  ``W = {⌈p_j N⌉}``; at a checkpoint ``w_j`` the step is halved and the iterate
  restarts from the best point when (1) fewer than 75 % of the steps since
  ``w_{j−1}`` increased the loss, or (2) the step was not halved at the
  previous checkpoint and the best loss has not improved since.
* Average-case: ``n_draws`` random ``δ'`` per batch (default 100, as the thesis): ℓ2 ``avg_dist="gaussian"``
  (default) ``δ' ~ N(0, ρ² I)``, i.e. ``δ ~ N(0, ρ² diag(c²))`` -- Eq. 7.1 of [Andriushchenko 2024] literally
  (per-coordinate standard deviation ρ, norm about ``ρ√p``; the radii of its Table 7.3 refer to this form);
  ``avg_dist="sphere"`` a Gaussian direction rescaled to norm ρ (uniform on the sphere, so worst-case >=
  average-case at the same ρ by construction); ℓ∞ uniform in the box ``[−ρ, ρ]^p`` (thesis/code).
* Logit normalisation ([Andriushchenko 2024, Eq. 7.5], after Tsuzuku et al.): the loss is evaluated on
  ``f(x) / sqrt(mean_k (f_k(x) − mean_j f_j(x))²)`` so that scaling the last layer (which drives the
  cross-entropy, and any sharpness measured with it, to 0 after zero training error -- the thesis' Fig. 7.1)
  no longer changes the value. On by default (``logit_norm=None``) for the default cross-entropy on K >= 2
  logits; off for a custom ``loss_fn``; ``logit_norm=False`` gives the plain measure.

``δ = 0`` is always feasible and counted, so worst-case ``S_B >= 0``, and at
``ρ = 0`` every evaluation is at ``w`` itself: ``S = 0``. BatchNorm and
dropout are in eval mode throughout (the thesis's ``model.eval()``; its Fig.
5.19 shows train-mode BN gives very different values -- prefer GroupNorm / no
normalisation models or state the mode). The model is perturbed in place and
restored exactly from a saved copy (parameters, buffers, modes;
:func:`~workbench.analysis.common.preserved_state`). Random numbers come from
CPU generators seeded by ``(seed, batch index)``.

No UI imports.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import ExampleSet, ResultRecord, preserved_state

__all__ = ["sharpness", "sharpness_curve", "SharpnessResult", "SharpnessCurve", "apgd_checkpoints", "logit_normalize",
           "KINDS", "NORMS", "METHODS", "AVG_DISTS", "RECOMMENDED_COUNT"]

KINDS = ("worst", "average")
NORMS = ("l2", "linf")
METHODS = ("pgd", "apgd")
AVG_DISTS = ("sphere", "gaussian")
RECOMMENDED_COUNT = 1024
_DEFAULT_STEPS = {"pgd": 100, "apgd": 20}
_DEFAULT_STEP_SIZE = {"pgd": 0.1, "apgd": 2.0}
_APGD_MOMENTUM = 0.75
_APGD_RHO = 0.75

LossFn = Callable[[Tensor, Tensor], Tensor]


def _check(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is invalid: choose one of {', '.join(map(repr, choices))}")


# ================================================================ results
@dataclass(frozen=True, eq=False)
class SharpnessResult(ResultRecord):
    """One m-sharpness value and everything needed to reproduce it.

    Attributes:
        value: mean over batches of ``S_B`` (nats for cross-entropy).
        per_batch: ``[n_batches]`` ``S_B``.
        base_loss: mean of ``L_B(w)`` over batches; ``base_loss_per_batch`` per batch.
        perturbed_loss_per_batch: worst-case ``L_B(w + δ*)``; average-case the mean over draws.
        std_per_batch: average-case standard deviation of ``L_B(w + δ)`` over draws (worst-case: 0).
        delta_norm_per_batch: ``||δ'||_p`` of the best perturbation (worst-case;
            in the adaptive coordinates ``δ' = δ / |w|``), mean over draws (average-case).
        rho, kind, norm, adaptive, m, method, steps, step_size (relative to ρ),
        n_draws, avg_dist, rand_init, seed: the settings (``None`` where not applicable).
        count: examples used (``n_batches * m``); ``dropped``: examples of an incomplete last batch left out.
        examples: the ExampleSet's description; ``n_params``: perturbed (trainable) parameters.
        warm_start: the search started from a smaller radius' solution (curves).
        loss: name of the loss; ``definition``: formula and source; ``notes``: caveats.
        seconds: wall time.
    """

    value: float
    per_batch: np.ndarray
    base_loss: float
    base_loss_per_batch: np.ndarray
    perturbed_loss_per_batch: np.ndarray
    std_per_batch: np.ndarray
    delta_norm_per_batch: np.ndarray
    rho: float
    kind: str
    norm: str
    adaptive: bool
    m: int
    method: str | None
    steps: int | None
    step_size: float | None
    n_draws: int | None
    avg_dist: str | None
    rand_init: bool
    seed: int
    count: int
    n_batches: int
    dropped: int = 0
    examples: dict = field(default_factory=dict)
    n_params: int = 0
    warm_start: bool = False
    loss: str = "cross_entropy"
    definition: str = ""
    notes: list = field(default_factory=list)
    seconds: float = 0.0
    logit_norm: bool = False


@dataclass(frozen=True, eq=False)
class SharpnessCurve(ResultRecord):
    """m-sharpness against ρ (same batches, same seeds for every ρ).

    Attributes:
        rhos: ``[R]`` ascending.
        values: ``[R]`` mean over batches; ``per_batch``: ``[R, n_batches]``.
        base_loss_per_batch: ``[n_batches]``; ``perturbed_loss``, ``std``: ``[R, n_batches]``;
        delta_norm: ``[R, n_batches]`` (see :class:`SharpnessResult`).
        monotone: how non-decrease in ρ of the worst case is ensured (``""`` for average-case).
        other attributes: as in :class:`SharpnessResult`.
    """

    rhos: np.ndarray
    values: np.ndarray
    per_batch: np.ndarray
    base_loss_per_batch: np.ndarray
    perturbed_loss: np.ndarray
    std: np.ndarray
    delta_norm: np.ndarray
    kind: str
    norm: str
    adaptive: bool
    m: int
    method: str | None
    steps: int | None
    step_size: float | None
    n_draws: int | None
    avg_dist: str | None
    rand_init: bool
    seed: int
    count: int
    n_batches: int
    warm_start: bool = True
    monotone: str = ""
    dropped: int = 0
    examples: dict = field(default_factory=dict)
    n_params: int = 0
    loss: str = "cross_entropy"
    definition: str = ""
    notes: list = field(default_factory=list)
    seconds: float = 0.0
    logit_norm: bool = False

    @property
    def base_loss(self) -> float:
        """Mean unperturbed loss over the batches."""
        return float(np.mean(self.base_loss_per_batch))


# ================================================================ the objective
class _Problem:
    """``δ' -> L_B(w0 + c ⊙ δ')`` on the trainable parameters of ``model`` (in place)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, adaptive: bool):
        self.model = model
        self.loss_fn = loss_fn
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters to perturb")
        self.numels = [p.numel() for p in self.params]
        self.w0 = torch.cat([p.detach().reshape(-1) for p in self.params]).clone()
        self.c = self.w0.abs() if adaptive else None
        self.n = int(self.w0.numel())

    def zeros(self) -> Tensor:
        return torch.zeros_like(self.w0)

    @torch.no_grad()
    def _set(self, d: Tensor) -> None:
        v = self.w0 + (self.c * d if self.c is not None else d)
        for p, chunk in zip(self.params, torch.split(v, self.numels)):
            p.copy_(chunk.view_as(p))

    def value(self, x: Tensor, y: Tensor, d: Tensor) -> float:
        self._set(d)
        with torch.no_grad():
            return float(self.loss_fn(self.model(x), y))

    def value_grad(self, x: Tensor, y: Tensor, d: Tensor) -> tuple[float, Tensor]:
        """Loss and its gradient with respect to ``δ'`` (``c ⊙ ∇_w L``)."""
        self._set(d)
        with torch.enable_grad():
            loss = self.loss_fn(self.model(x), y)
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        g = torch.cat([(gr if gr is not None else torch.zeros_like(p)).reshape(-1)
                       for gr, p in zip(grads, self.params)])
        if self.c is not None:
            g = g * self.c
        return float(loss.detach()), g


def logit_normalize(f: Tensor, eps: float = 1e-12) -> Tensor:
    """Logit normalisation ``f / sqrt(mean_k (f_k − mean_j f_j)²)`` per example ([Andriushchenko 2024, Eq. 7.5]).

    Args:
        f: ``[N, K]`` logits (K >= 2).
        eps: floor of the standard deviation (all-equal logits stay finite).

    Returns:
        ``[N, K]``; invariant to ``f -> a f`` for ``a > 0``.
    """
    std = f.var(dim=-1, unbiased=False, keepdim=True).clamp_min(eps * eps).sqrt()
    return f / std


def _ascent(u: Tensor, norm: str) -> Tensor:
    if norm == "linf":
        return u.sign()
    n = u.norm()
    return u / n if n > 0 else torch.zeros_like(u)


def _project(d: Tensor, rho: float, norm: str) -> Tensor:
    if norm == "linf":
        return d.clamp(-rho, rho)
    n = float(d.norm())
    return d * (rho / n) if n > rho else d


def _pnorm(d: Tensor, norm: str) -> float:
    return float(d.abs().max()) if norm == "linf" and d.numel() else float(d.norm())


def _random_in_ball(n: int, rho: float, norm: str, gen: torch.Generator, like: Tensor) -> Tensor:
    """A uniformly random point of the ρ-ball (ℓ2: Gaussian direction, radius ρ·U^(1/n); ℓ∞: uniform box)."""
    if norm == "linf":
        v = (2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1) * rho
    else:
        z = torch.randn(n, generator=gen, dtype=torch.float64)
        u = float(torch.rand((), generator=gen, dtype=torch.float64))
        r = rho * math.exp(math.log(max(u, 1e-300)) / n)
        v = z / z.norm().clamp_min(1e-300) * r
    return v.to(device=like.device, dtype=like.dtype)


def _draw(n: int, rho: float, norm: str, avg_dist: str, gen: torch.Generator, like: Tensor) -> Tensor:
    if norm == "linf":
        v = (2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1) * rho
    elif avg_dist == "gaussian":
        v = torch.randn(n, generator=gen, dtype=torch.float64) * rho
    else:
        z = torch.randn(n, generator=gen, dtype=torch.float64)
        v = z / z.norm().clamp_min(1e-300) * rho
    return v.to(device=like.device, dtype=like.dtype)


def _batch_generator(seed: int, b: int) -> torch.Generator:
    s = int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(b)]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(s % (2 ** 63))


def apgd_checkpoints(steps: int) -> list[int]:
    """Auto-PGD checkpoints ``⌈p_j N⌉`` in ``[1, N−1]`` (Croce & Hein 2020, §3.1)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps - 1e-9) for q in p[1:] if 1 <= math.ceil(q * steps - 1e-9) <= steps - 1})


class _Best:
    __slots__ = ("f", "d", "u")

    def __init__(self, f: float, d: Tensor, u: Tensor | None = None):
        self.f, self.d, self.u = f, d, u

    def offer(self, f: float, d: Tensor, u: Tensor | None) -> bool:
        if f > self.f:
            self.f, self.d, self.u = f, d.clone(), (u.clone() if u is not None else None)
            return True
        return False


def _pgd(prob: _Problem, x, y, start: Tensor, rho: float, norm: str, steps: int, eta: float, best: _Best) -> _Best:
    d = start
    for _ in range(steps):
        f, u = prob.value_grad(x, y, d)
        best.offer(f, d, None)
        d = _project(d + eta * _ascent(u, norm), rho, norm)
    best.offer(prob.value(x, y, d), d, None)
    return best


def _apgd(prob: _Problem, x, y, start: Tensor, rho: float, norm: str, steps: int, eta: float,
          best: _Best) -> _Best:
    """Auto-PGD (thesis Alg. 5; Croce & Hein 2020) maximising ``L_B(w0 + c ⊙ δ')`` over the ρ-ball."""
    checkpoints = set(apgd_checkpoints(steps))
    d0 = start
    f0, u0 = prob.value_grad(x, y, d0)
    best.offer(f0, d0, u0)
    best_at_last_cp = best.f
    fs = [f0]
    d1 = _project(d0 + eta * _ascent(u0, norm), rho, norm)
    if steps <= 1:
        best.offer(prob.value(x, y, d1), d1, None)
        return best
    f1, u1 = prob.value_grad(x, y, d1)
    best.offer(f1, d1, u1)
    fs.append(f1)
    d_prev, d, u = d0, d1, u1
    last_cp, reduced_last = 0, False
    for k in range(1, steps):
        z = _project(d + eta * _ascent(u, norm), rho, norm)
        d_new = _project(d + _APGD_MOMENTUM * (z - d) + (1 - _APGD_MOMENTUM) * (d - d_prev), rho, norm)
        if k == steps - 1:
            f_new, u_new = prob.value(x, y, d_new), None
        else:
            f_new, u_new = prob.value_grad(x, y, d_new)
        fs.append(f_new)
        best.offer(f_new, d_new, u_new)
        d_prev, d, u = d, d_new, u_new
        if k in checkpoints and k < steps - 1:
            increases = sum(fs[i + 1] > fs[i] for i in range(last_cp, k))
            cond1 = increases < _APGD_RHO * (k - last_cp)
            cond2 = (not reduced_last) and not (best.f > best_at_last_cp)
            reduced_last = cond1 or cond2
            best_at_last_cp = best.f
            last_cp = k
            if reduced_last:
                eta /= 2.0
                if best.u is None:  # best point found without a gradient (start, δ = 0 or warm start)
                    _, best.u = prob.value_grad(x, y, best.d)
                d, u = best.d.clone(), best.u.clone()
    return best


# ================================================================ drivers
def _batches(examples: ExampleSet, m: int | None) -> tuple[list[tuple[Tensor, Tensor]], int, int]:
    if not isinstance(examples, ExampleSet):
        raise ValueError(f"examples must be an ExampleSet, got {type(examples).__name__}")
    n = examples.count
    if n == 0:
        raise ValueError("examples is empty")
    m = n if m is None else m
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m={m!r} is invalid: must be a positive integer (or None for one batch of all examples)")
    m = int(m)
    if m > n:
        raise ValueError(f"m={m} is larger than the {n} examples of the ExampleSet")
    nb = n // m
    out = [(examples.x[i * m:(i + 1) * m], examples.y[i * m:(i + 1) * m]) for i in range(nb)]
    return out, m, n - nb * m


def _settings(kind, norm, adaptive, m, method, steps, step_size, n_draws, avg_dist, rand_init, seed):
    _check("kind", kind, KINDS)
    _check("norm", norm, NORMS)
    if kind == "worst":
        _check("method", method, METHODS)
        steps = _DEFAULT_STEPS[method] if steps is None else int(steps)
        if steps < 0:
            raise ValueError(f"steps={steps} is invalid: must be >= 0")
        step_size = _DEFAULT_STEP_SIZE[method] if step_size is None else float(step_size)
        if not step_size > 0:
            raise ValueError(f"step_size={step_size} is invalid: must be > 0 (a multiple of rho)")
        n_draws_, avg_dist_ = None, None
    else:
        if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
            raise ValueError(f"n_draws={n_draws!r} is invalid: must be a positive integer")
        _check("avg_dist", avg_dist, AVG_DISTS)
        method, steps, step_size, n_draws_ = None, None, None, int(n_draws)
        avg_dist_ = avg_dist if norm == "l2" else "uniform"
    return dict(kind=kind, norm=norm, adaptive=bool(adaptive), method=method, steps=steps, step_size=step_size,
                n_draws=n_draws_, avg_dist=avg_dist_, rand_init=bool(rand_init), seed=int(seed))


def _definition(s: dict) -> str:
    c = "|w|" if s["adaptive"] else "1"
    ball = "||delta/c||_2 <= rho" if s["norm"] == "l2" else "||delta/c||_inf <= rho"
    if s["kind"] == "worst":
        how = (f"{s['method']} ({s['steps']} steps, step {s['step_size']}*rho)")
        return (f"mean over batches B of m: max_[{ball}] L_B(w+delta) - L_B(w), c={c}, by {how}; "
                "Andriushchenko 2024, Eq. 5.1 (standard) / Eq. 7.1 (adaptive)")
    dist = {"sphere": "c * rho * z/||z||, z ~ N(0, I)", "gaussian": "c * N(0, rho^2 I)",
            "uniform": "c * U[-rho, rho]^p"}[s["avg_dist"]]
    return (f"mean over batches B of m: E_delta L_B(w+delta) - L_B(w), delta = {dist}, "
            f"{s['n_draws']} draws; Andriushchenko 2024, Eq. 7.1")


def _notes(examples: ExampleSet, model: nn.Module) -> list[str]:
    notes = []
    if examples.count < RECOMMENDED_COUNT:
        notes.append(f"{examples.count} examples: fewer than the {RECOMMENDED_COUNT} of the thesis protocol")
    if examples.split != "train":
        notes.append(f"evaluated on the {examples.split!r} split; sharpness is defined on training points")
    if any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in model.modules()):
        notes.append("BatchNorm in eval mode (running statistics); SAM sees train-mode BN (thesis Fig. 5.19)")
    return notes


def _loss_name(loss_fn) -> str:
    return getattr(loss_fn, "__name__", type(loss_fn).__name__)


def _run_batch(prob: _Problem, x, y, s: dict, rhos: Sequence[float], warm_start: bool, b: int):
    """All radii for one batch; returns per-ρ (S_B, perturbed loss, std, δ-norm) and the base loss."""
    f0 = prob.value(x, y, prob.zeros())
    out = []
    prev: _Best | None = None
    prev_rho = 0.0
    for rho in rhos:
        gen = _batch_generator(s["seed"], b)
        if s["kind"] == "average":
            vals, norms = [], []
            for _ in range(s["n_draws"]):
                d = _draw(prob.n, rho, s["norm"], s["avg_dist"], gen, prob.w0)
                vals.append(prob.value(x, y, d))
                norms.append(_pnorm(d, s["norm"]))
            v = np.asarray(vals, dtype=np.float64)
            out.append((float(v.mean() - f0), float(v.mean()), float(v.std()), float(np.mean(norms))))
            continue
        best = _Best(f0, prob.zeros(), None)  # δ = 0 is feasible
        if warm_start and prev is not None and prev_rho > 0 and prev.f > best.f:
            best = _Best(prev.f, prev.d.clone(), prev.u)   # the smaller radius' solution is feasible here
            start = prev.d * (rho / prev_rho)               # and, scaled up, the starting point
        elif s["rand_init"]:
            start = _random_in_ball(prob.n, rho, s["norm"], gen, prob.w0)
        else:
            start = prob.zeros()
        eta = s["step_size"] * rho
        if rho > 0:
            algo = _pgd if s["method"] == "pgd" else _apgd
            best = algo(prob, x, y, start, rho, s["norm"], s["steps"], eta, best)
        out.append((float(best.f - f0), float(best.f), 0.0, _pnorm(best.d, s["norm"])))
        prev, prev_rho = best, rho
    return f0, out


def _check_rho(rho) -> float:
    rho = float(rho)
    if not math.isfinite(rho) or rho < 0:
        raise ValueError(f"rho={rho!r} is invalid: must be a finite number >= 0")
    return rho


def sharpness(model: nn.Module, examples: ExampleSet, rho: float, *, kind: str = "worst", norm: str = "l2",
              adaptive: bool = False, m: int | None = 128, method: str = "pgd", steps: int | None = None,
              step_size: float | None = None, n_draws: int = 100, avg_dist: str = "gaussian",
              rand_init: bool = False, seed: int = 0, loss_fn: LossFn | None = None,
              callback: Callable[[int, int, float], object] | None = None,
              logit_norm: bool | None = None) -> SharpnessResult:
    """m-sharpness of ``model`` on ``examples`` at radius ``rho`` (see the module docstring).

    Args:
        model: the network (restored exactly afterwards).
        examples: fixed, un-augmented training examples (>= 1,024 recommended;
            smaller sets are accepted and noted in ``result.notes``).
        rho: radius (>= 0), in parameter units (standard) or relative to ``|w|`` (adaptive).
        kind: ``"worst"`` (default) or ``"average"``.
        norm: ``"l2"`` (default) or ``"linf"``.
        adaptive: ``c = |w|`` (Eq. 7.1, elementwise adaptive) instead of ``c = 1``.
        m: batch size of the m-sharpness (default 128); the examples are cut into
            ``count // m`` consecutive batches (an incomplete last batch is left
            out and counted in ``dropped``); ``None``: one batch of all examples.
        method: worst-case optimiser, ``"pgd"`` (default; 100 steps of 0.1ρ) or ``"apgd"`` (20 steps, η0 = 2ρ).
        steps: number of ascent steps (overrides the method's default).
        step_size: ascent step size as a multiple of ρ (overrides the method's default).
        n_draws: average-case draws per batch (default 100, as the thesis).
        avg_dist: ℓ2 average-case distribution, ``"gaussian"`` (default: δ ~ N(0, ρ² diag(c²)), Eq. 7.1 of
            [Andriushchenko 2024]) or ``"sphere"`` (norm exactly ρ: worst-case >= average-case).
        rand_init: worst-case start from a uniformly random point of the ball instead of 0.
        seed: seeds the random start / draws (per batch: ``(seed, batch index)``).
        loss_fn: ``loss_fn(outputs, targets) -> mean loss``; default cross-entropy.
        callback: ``callback(batch_index, n_batches, S_B)`` after each batch.
        logit_norm: evaluate the loss on logit-normalised outputs ([Andriushchenko 2024, Eq. 7.5],
            :func:`logit_normalize`). ``None`` (default): on for the default cross-entropy when the model has
            K >= 2 outputs, off for a custom ``loss_fn``; ``True`` also applies it before a custom ``loss_fn``.

    Returns:
        A :class:`SharpnessResult` (``logit_norm`` says whether normalisation was applied); ``model`` is
        restored exactly.

    Raises:
        ValueError: a bad setting; ``logit_norm=True`` for a model with a single output.
    """
    rho = _check_rho(rho)
    curve = sharpness_curve(model, examples, [rho], kind=kind, norm=norm, adaptive=adaptive, m=m, method=method,
                            steps=steps, step_size=step_size, n_draws=n_draws, avg_dist=avg_dist,
                            rand_init=rand_init, seed=seed, loss_fn=loss_fn, warm_start=False,
                            logit_norm=logit_norm, callback=None if callback is None else
                            (lambda b, nb, running, per: callback(b, nb, float(per[0]))))
    return SharpnessResult(
        value=float(curve.values[0]), per_batch=curve.per_batch[0].copy(), base_loss=curve.base_loss,
        base_loss_per_batch=curve.base_loss_per_batch.copy(),
        perturbed_loss_per_batch=curve.perturbed_loss[0].copy(),
        std_per_batch=curve.std[0].copy(),
        delta_norm_per_batch=curve.delta_norm[0].copy(), rho=rho, kind=curve.kind, norm=curve.norm,
        adaptive=curve.adaptive, m=curve.m, method=curve.method, steps=curve.steps, step_size=curve.step_size,
        n_draws=curve.n_draws, avg_dist=curve.avg_dist, rand_init=curve.rand_init, seed=curve.seed,
        count=curve.count, n_batches=curve.n_batches, dropped=curve.dropped, examples=curve.examples,
        n_params=curve.n_params, warm_start=False, loss=curve.loss, definition=curve.definition,
        notes=list(curve.notes), seconds=curve.seconds, logit_norm=curve.logit_norm)


def sharpness_curve(model: nn.Module, examples: ExampleSet, rhos: Sequence[float], *, kind: str = "worst",
                    norm: str = "l2", adaptive: bool = False, m: int | None = 128, method: str = "pgd",
                    steps: int | None = None, step_size: float | None = None, n_draws: int = 100,
                    avg_dist: str = "gaussian", rand_init: bool = False, seed: int = 0,
                    loss_fn: LossFn | None = None, warm_start: bool = True,
                    callback: Callable[[int, int, np.ndarray, np.ndarray], object] | None = None,
                    logit_norm: bool | None = None) -> SharpnessCurve:
    """m-sharpness for several radii (arguments as :func:`sharpness`; ``rhos`` are sorted ascending).

    Computed batch by batch, all radii per batch (one perturbation in memory at
    a time). The same batches and the same seeds are used for every ρ, so an
    average-case curve uses the same draws scaled by ρ (a smooth curve).

    Monotonicity of the worst case (``warm_start=True``, default): for each
    batch the radii are processed in increasing order; the best perturbation
    ``δ*_{k−1}`` found for ``ρ_{k−1}`` lies in the larger ball too, so it seeds
    the search for ``ρ_k`` as the incumbent best value, and the search starts
    from ``δ*_{k−1}·ρ_k/ρ_{k−1}``. Hence ``S_B(ρ_k) >= S_B(ρ_{k−1})`` per batch
    and the reported curve is non-decreasing (a valid lower bound on the true
    worst case at every ρ). With ``warm_start=False`` every radius is searched
    independently, as :func:`sharpness` does.

    Args:
        model: the network (restored exactly afterwards).
        examples: fixed, un-augmented training examples (as :func:`sharpness`).
        rhos: the radii (sorted ascending here).
        kind: ``"worst"`` (default) or ``"average"``.
        norm: ``"l2"`` (default) or ``"linf"``.
        adaptive: elementwise adaptive radius ``c = |w|`` (Eq. 7.1).
        m: batch size of the m-sharpness (as :func:`sharpness`).
        method: worst-case optimiser, ``"pgd"`` or ``"apgd"``.
        steps: number of ascent steps (default: the method's).
        step_size: ascent step size as a multiple of ρ (default: the method's).
        n_draws: average-case draws per batch.
        avg_dist: ℓ2 average-case distribution, ``"gaussian"`` or ``"sphere"``.
        rand_init: worst-case start from a uniformly random point of the ball instead of 0.
        seed: seeds the random start / draws (the same for every ρ).
        loss_fn: ``loss_fn(outputs, targets) -> mean loss``; default cross-entropy.
        warm_start: seed each radius's search with the previous radius's best perturbation (see above).
        callback: ``callback(batch_index, n_batches, running_values[R], batch_values[R])``
            after each batch, ``running_values`` the mean over the batches so far.
        logit_norm: logit normalisation as in :func:`sharpness`.
    """
    t0 = time.perf_counter()
    rhos_arr = np.asarray([_check_rho(r) for r in np.asarray(rhos, dtype=np.float64).reshape(-1)])
    if rhos_arr.size == 0:
        raise ValueError("rhos must not be empty")
    rhos_arr = np.sort(rhos_arr)
    s = _settings(kind, norm, adaptive, m, method, steps, step_size, n_draws, avg_dist, rand_init, seed)
    batches, m_eff, dropped = _batches(examples, m)
    custom_loss = loss_fn is not None
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    if logit_norm not in (None, True, False):
        raise ValueError(f"logit_norm={logit_norm!r} is invalid: True, False or None (automatic)")
    nb, R = len(batches), len(rhos_arr)
    per = np.zeros((R, nb))
    pert = np.zeros((R, nb))
    std = np.zeros((R, nb))
    dnorm = np.zeros((R, nb))
    base = np.zeros(nb)
    with preserved_state(model):
        model.eval()
        prob = _Problem(model, loss_fn, adaptive)
        dev = prob.w0.device
        use_ln = False
        if logit_norm or (logit_norm is None and not custom_loss):
            with torch.no_grad():
                k = int(model(batches[0][0][:1].to(dev)).shape[-1]) if batches else 0
            if logit_norm and k < 2:
                raise ValueError(f"logit_norm=True needs a model with >= 2 outputs (logits); this one has {k}")
            use_ln = k >= 2
        if use_ln:
            base_fn = loss_fn
            prob.loss_fn = lambda out, t: base_fn(logit_normalize(out), t)
        for b, (x, y) in enumerate(batches):
            f0, vals = _run_batch(prob, x.to(dev), y.to(dev), s, [float(r) for r in rhos_arr],
                                  warm_start and kind == "worst", b)
            base[b] = f0
            for k, (sv, pl, sd, dn) in enumerate(vals):
                per[k, b], pert[k, b], std[k, b], dnorm[k, b] = sv, pl, sd, dn
            if callback is not None:
                callback(b, nb, per[:, :b + 1].mean(axis=1), per[:, b].copy())
        n_params = prob.n
    monotone = ""
    if kind == "worst":
        monotone = ("warm start: per batch, rho ascending; the previous radius' best perturbation is the incumbent "
                    "and, scaled by rho_k/rho_{k-1}, the start") if warm_start else \
            "none (radii searched independently)"
    curve = SharpnessCurve(
        rhos=rhos_arr, values=per.mean(axis=1), per_batch=per, base_loss_per_batch=base, perturbed_loss=pert,
        std=std, delta_norm=dnorm, kind=s["kind"], norm=s["norm"], adaptive=s["adaptive"], m=m_eff, method=s["method"],
        steps=s["steps"], step_size=s["step_size"], n_draws=s["n_draws"], avg_dist=s["avg_dist"],
        rand_init=s["rand_init"], seed=s["seed"], count=nb * m_eff, n_batches=nb,
        warm_start=bool(warm_start and kind == "worst"), monotone=monotone, dropped=dropped,
        examples=examples.describe(), n_params=n_params, loss=_loss_name(loss_fn),
        definition=_definition(s) + ("; loss on logit-normalised outputs (Eq. 7.5)" if use_ln else ""),
        notes=_notes(examples, model), seconds=time.perf_counter() - t0, logit_norm=use_ln)
    return curve
