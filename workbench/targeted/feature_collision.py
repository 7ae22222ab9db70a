"""Feature-space attacks for transfer learning: Feature Collision (Poison Frogs) and Bullseye Polytope.

Both keep the feature extractor ``f`` (the input of the network's last linear layer,
:func:`~workbench.targeted.common.penultimate`) fixed and move the poisons in feature
space; the victim then retrains (or fine-tunes) the classifier on them, and the target,
whose features sit among the poisons', is classified as the poisons' (clean) label y_adv.

* **Feature Collision** — Shafahi et al., "Poison Frogs! Targeted clean-label poisoning
  attacks on neural networks", NeurIPS 2018, Eq. 1 and Algorithm 1: for each base ``b``,
  ``p = argmin_x ‖f(x) − f(t)‖² + β ‖x − b‖²`` by forward–backward splitting
  (forward: ``x̂ = x − λ ∇x ‖f(x) − f(t)‖²``; backward, the proximal step of the
  β-term: ``x = (x̂ + λβ b) / (1 + λβ)``). As in the poisoning benchmark [Schwarzschild 2021] the
  step size is multiplied by ``decay`` when the objective rises (the step is undone),
  and the result is kept in the [0, 1] pixel box. By default the β (ℓ2) term is the only
  constraint on the perturbation, as [Yang 2022, §4.1.2] runs FC: "as imposing the ℓ∞
  constraint ε = 8 will greatly reduce the power of Feature Collision attack
  [Schwarzschild 2021], we keep the ℓ2 regularization term ... to impose a soft rather than
  hard constraint". ``hard_bound=True`` also projects on the ℓ∞ ball ε after every step
  (the poisoning benchmark's constrained FC).
* **Bullseye Polytope** — Aghakhani et al., EuroS&P 2021: the target should sit at the
  *centre* of the poisons' convex hull in feature space, i.e. minimise over Δ
  ``‖(1/k) Σ_i f(x_i + Δ_i) − f(x_t)‖² / ‖f(x_t)‖²`` (mean over an ensemble of feature
  extractors when several are given) with Adam (lr 0.04 on normalised inputs in the
  reference; here on the pixel scale) and projection on the ε-ball and the box after
  every step. [Yang 2022, §2.1, §3.1] (the better the poisons surround the
  target, the more effective the attack).

Δ is held on the [0, 1] pixel scale (projection in pixel space) and converted to the
model's normalised units for the returned :class:`~workbench.data.poison.Poison`.
Models are used in eval mode and left unchanged.

No UI imports.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ..data.poison import Poison
from .common import Attack, CraftProgress, device_of, frozen, penultimate, poison_from_delta
from .setup import PixelBox, ThreatSetup

__all__ = ["FeatureCollision", "BullseyePolytope", "feature_distances"]


def _models(model) -> list[nn.Module]:
    return list(model) if isinstance(model, (list, tuple)) else [model]


def _prepare(model, setup: ThreatSetup, data):
    dev = device_of(_models(model)[0])
    box = PixelBox.for_bundle(data, setup.epsilon)
    rows = setup.poison_rows(data.train)
    x = data.train.x[rows.to(data.train.x.device)].to(dev)
    x_t, _ = setup.target(data)
    return dev, box, x, x_t.to(dev)


def _std(box: PixelBox, x: Tensor) -> Tensor | float:
    if box.std is None:
        return 1.0
    return torch.as_tensor(box.std, dtype=x.dtype, device=x.device).view((1, -1) + (1,) * (x.dim() - 2))


def _project(d_pix: Tensor, x_pix: Tensor, eps: float) -> Tensor:
    return (x_pix + d_pix.clamp(-eps, eps)).clamp(0.0, 1.0) - x_pix


def feature_distances(model: nn.Module, x: Tensor, x_t: Tensor) -> Tensor:
    """``‖f(x_i) − f(x_t)‖₂`` per row of ``x`` (``[N]``), in eval mode, model unchanged."""
    with frozen(model), torch.no_grad():
        return (penultimate(model, x) - penultimate(model, x_t)).norm(dim=1)


class FeatureCollision(Attack):
    """Poison Frogs feature collision: ``craft(model, setup, data) -> Poison``.

    Args:
        iterations: forward–backward steps (120 in the benchmark).
        lr: initial step size λ of the forward step (on pixels per unit of feature-distance gradient).
        beta: weight β of the ``‖x − b‖²`` term (pixel scale); ``0`` turns the backward step off.
        decay: λ is multiplied by this when the objective rises (the step is then undone).
        tol: stop when the relative change of the objective is below ``tol``.
        hard_bound: also project on the ℓ∞ ball ``setup.epsilon`` (pixel scale) after every step.
            Default ``False``: the soft β-penalty only, as [Yang 2022, §4.1.2] runs FC (the [0, 1]
            pixel box always holds), so ``‖Δ‖∞`` may exceed ``setup.epsilon``.

    After :meth:`craft`: ``initial_distance`` / ``final_distance`` (mean ``‖f(p_i) − f(t)‖``), ``history``.
    """

    name = "feature_collision"

    def __init__(self, iterations: int = 120, lr: float = 0.01, beta: float = 0.1, decay: float = 0.5,
                 tol: float = 1e-5, *, hard_bound: bool = False):
        super().__init__()
        self._check_steps(iterations, lr)
        if not (isinstance(beta, (int, float)) and beta >= 0):
            raise ValueError(f"beta={beta!r} is invalid: must be >= 0")
        if not (0 < decay < 1):
            raise ValueError(f"decay={decay!r} is invalid: must lie in (0, 1)")
        if not isinstance(hard_bound, bool):
            raise ValueError(f"hard_bound={hard_bound!r} is invalid: must be True or False")
        self.iterations, self.lr, self.beta, self.decay, self.tol = iterations, float(lr), float(beta), decay, tol
        self.hard_bound = hard_bound
        self.initial_distance = self.final_distance = float("nan")

    def config(self) -> dict:
        """The attack's settings as a plain dict (recorded with the poison)."""
        return {"iterations": self.iterations, "lr": self.lr, "beta": self.beta, "decay": self.decay, "tol": self.tol,
                "hard_bound": self.hard_bound}

    def craft(self, model, setup: ThreatSetup, data, *, callback: Callable[[CraftProgress], None] | None = None,
              stop: threading.Event | None = None) -> Poison:
        """Craft the poisons (see the module docstring); ``model`` may be a list (ensemble: summed objectives)."""
        t0 = time.perf_counter()
        self.history = []
        models = _models(model)
        dev, box, x, x_t = _prepare(models, setup, data)
        std = _std(box, x)
        b_pix = box.to_pixels(x)
        with _all_frozen(models):
            f_t = [penultimate(m, x_t).detach() for m in models]

            def objective(p_pix: Tensor) -> Tensor:  # per-poison feature collision term
                inp = (p_pix - b_pix) / std + x
                return sum(((penultimate(m, inp) - ft) ** 2).sum(dim=1) for m, ft in zip(models, f_t))

            def full(p_pix: Tensor) -> Tensor:
                with torch.no_grad():
                    return objective(p_pix) + self.beta * ((p_pix - b_pix) ** 2).flatten(1).sum(1)

            p = b_pix.clone()
            lam = torch.full((len(x),), self.lr, device=dev, dtype=x.dtype)
            shape = (-1,) + (1,) * (x.dim() - 1)
            with torch.no_grad():
                d0 = objective(p)
            self.initial_distance = float(d0.sqrt().mean())
            prev = full(p)
            stopped, it = False, 0
            for it in range(1, self.iterations + 1):
                q = p.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(objective(q).sum(), q)
                with torch.no_grad():
                    fwd = p - lam.view(shape) * g                                         # forward step
                    new = (fwd + lam.view(shape) * self.beta * b_pix) / (1 + lam.view(shape) * self.beta)  # proximal
                    new = b_pix + _project(new - b_pix, b_pix, setup.epsilon if self.hard_bound else 1.0)
                    val = full(new)
                    worse = val > prev                                                    # undo and shrink the step
                    p = torch.where(worse.view(shape), p, new)
                    lam = torch.where(worse, lam * self.decay, lam)
                    rel = ((prev - torch.minimum(val, prev)).abs() / prev.clamp_min(1e-12)).max()
                    prev = torch.minimum(val, prev)
                self._emit(callback, 0, it, self.iterations, float(prev.mean()), float("nan"), t0)
                if float(rel) < self.tol and not bool(worse.any()):
                    break
                if stop is not None and stop.is_set():
                    stopped = True
                    break
            with torch.no_grad():
                self.final_distance = float(objective(p).sqrt().mean())
        self.seconds, self.iterations_done = time.perf_counter() - t0, it
        d_in = (p - b_pix) / std
        return poison_from_delta(d_in, setup, data, self.name, attack=self.config(),
                                 initial_distance=self.initial_distance, final_distance=self.final_distance,
                                 stopped=stopped, seconds=self.seconds, iterations_done=it)


class BullseyePolytope(Attack):
    """Bullseye Polytope: target at the centre of the poisons' feature polytope; ``craft(...) -> Poison``.

    Args:
        iterations: Adam steps (1200 in the reference; a few hundred suffice on small data).
        lr: Adam step size on the pixel scale.
        seed: seed of the (optional) random start; ``init_noise`` its size as a fraction of ε.

    After :meth:`craft`: ``initial_loss`` / ``final_loss`` (the normalised bullseye loss),
    ``initial_distance`` / ``final_distance`` (mean ``‖f(p_i) − f(t)‖``), ``history``.
    """

    name = "bullseye_polytope"

    def __init__(self, iterations: int = 400, lr: float = 0.01, *, init_noise: float = 0.0, seed: int = 0):
        super().__init__()
        self._check_steps(iterations, lr)
        if not 0 <= init_noise <= 1:
            raise ValueError(f"init_noise={init_noise!r} is invalid: a fraction of epsilon in [0, 1]")
        self.iterations, self.lr, self.init_noise, self.seed = iterations, float(lr), float(init_noise), int(seed)
        self.initial_loss = self.final_loss = float("nan")
        self.initial_distance = self.final_distance = float("nan")

    def config(self) -> dict:
        """The attack's settings as a plain dict (recorded with the poison)."""
        return {"iterations": self.iterations, "lr": self.lr, "init_noise": self.init_noise, "seed": self.seed}

    def craft(self, model, setup: ThreatSetup, data, *, callback: Callable[[CraftProgress], None] | None = None,
              stop: threading.Event | None = None) -> Poison:
        """Craft the poisons; ``model`` may be a list of feature extractors (mean of their losses)."""
        t0 = time.perf_counter()
        self.history = []
        models = _models(model)
        dev, box, x, x_t = _prepare(models, setup, data)
        std = _std(box, x)
        x_pix = box.to_pixels(x)
        with _all_frozen(models):
            f_t = [penultimate(m, x_t).detach()[0] for m in models]

            def loss_of(d_pix: Tensor) -> Tensor:
                inp = x + d_pix / std
                return sum(((penultimate(m, inp).mean(dim=0) - ft) ** 2).sum() / (ft ** 2).sum().clamp_min(1e-12)
                           for m, ft in zip(models, f_t)) / len(models)

            gen = torch.Generator().manual_seed(self.seed)
            init = (torch.rand(x.shape, generator=gen, dtype=x.dtype) * 2 - 1).to(dev) * setup.epsilon * self.init_noise
            delta = _project(init, x_pix, setup.epsilon).requires_grad_(True)
            with torch.no_grad():
                self.initial_loss = float(loss_of(torch.zeros_like(delta)))
                self.initial_distance = float((penultimate(models[0], x) - f_t[0]).norm(dim=1).mean())
            opt = torch.optim.Adam([delta], lr=self.lr, betas=(0.9, 0.999))
            stopped, it = False, 0
            for it in range(1, self.iterations + 1):
                loss = loss_of(delta)
                opt.zero_grad(set_to_none=True)
                (delta.grad,) = torch.autograd.grad(loss, delta)
                opt.step()
                with torch.no_grad():
                    delta.copy_(_project(delta, x_pix, setup.epsilon))
                self._emit(callback, 0, it, self.iterations, float(loss.detach()), float("nan"), t0)
                if stop is not None and stop.is_set():
                    stopped = True
                    break
            with torch.no_grad():
                self.final_loss = float(loss_of(delta))
                self.final_distance = float((penultimate(models[0], x + delta / std) - f_t[0]).norm(dim=1).mean())
        self.seconds, self.iterations_done = time.perf_counter() - t0, it
        return poison_from_delta(delta.detach() / std, setup, data, self.name, attack=self.config(),
                                 initial_loss=self.initial_loss, final_loss=self.final_loss,
                                 initial_distance=self.initial_distance, final_distance=self.final_distance,
                                 stopped=stopped, seconds=self.seconds, iterations_done=it)


class _all_frozen:
    """:func:`frozen` for several models at once."""

    def __init__(self, models: Sequence[nn.Module]):
        self.cms = [frozen(m) for m in models]

    def __enter__(self):
        return [cm.__enter__() for cm in self.cms]

    def __exit__(self, *exc):
        for cm in reversed(self.cms):
            cm.__exit__(*exc)
        return False
