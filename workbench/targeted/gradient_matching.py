"""Gradient matching (Witches' Brew, [Geiping 2021]) for targeted clean-label poisoning.

Sources: [Murphy 2025, §2.5] — Eq. 2.9 (the bilevel problem), Eq. 2.10 (the
poisons' summed gradient should match the adversarial target gradient for any θ) and
Eq. 2.11 (the surrogate solved at the weights θ of a clean pretrained model)::

    𝓑(Δ, θ) = 1 − ⟨∇θ ℓ(x_t, y_adv), Σ_i ∇θ ℓ(x_i + Δ_i, y_i)⟩
                 / (‖∇θ ℓ(x_t, y_adv)‖ · ‖Σ_i ∇θ ℓ(x_i + Δ_i, y_i)‖)

and [Yang 2022, Eq. 3] (the same alignment, §3.1). Procedure as in [Geiping 2021]
and its public code (re-implemented, no code copied):

* the target gradient ``∇θ ℓ(x_t, y_adv)`` is computed once, over all parameters;
* Δ is optimised by **signed Adam** (Adam on ``sign(∂𝓑/∂Δ)``) with a step decay
  ×0.1 at 3/8, 5/8 and 7/8 of the iterations; ∂𝓑/∂Δ needs a double backward
  (``create_graph=True`` on the poison gradient);
* after every step Δ is projected on the ℓ∞ ball ``‖Δ_i‖∞ ≤ ε`` and on the
  [0, 1] pixel box — in pixel space (Δ is held on the pixel scale and divided by the
  channel std before it enters the model);
* ``restarts`` random initialisations (uniform in the ε-ball), the one with the lowest
  final 𝓑 (without augmentation) is kept;
* optional differentiable augmentation (random translation, optional flip) drawn anew
  every iteration and applied to x_i + Δ_i;
* BatchNorm (and dropout) in eval mode throughout; the model is left unchanged.

With more poisons than ``batch_size`` the poisons are processed in batches; each batch's
summed gradient is aligned with the target gradient (as Witches' Brew does) and one
signed-Adam step follows the pass over all batches.

No UI imports.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.poison import Poison
from .common import Attack, CraftProgress, DiffAugment, device_of, frozen, poison_from_delta
from .setup import PixelBox, ThreatSetup

__all__ = ["GradientMatching", "alignment_loss", "target_gradient"]


def alignment_loss(g: list[Tensor], g_target: list[Tensor]) -> Tensor:
    """``1 − cos(g_target, g)`` over all parameters concatenated ([Murphy 2025, Eq. 2.11]); differentiable in ``g``."""
    dot = sum((a * b).sum() for a, b in zip(g, g_target))
    na = torch.sqrt(sum((a * a).sum() for a in g))
    nb = torch.sqrt(sum((b * b).sum() for b in g_target))
    return 1 - dot / (na * nb + 1e-12)


def target_gradient(model: nn.Module, x_t: Tensor, y_adv: int, params: list[Tensor]) -> list[Tensor]:
    """``∇θ ℓ(x_t, y_adv)`` (cross-entropy) for the parameters ``params``, detached."""
    y = torch.full((x_t.shape[0],), int(y_adv), dtype=torch.long, device=x_t.device)
    loss = F.cross_entropy(model(x_t), y, reduction="sum")
    return [g.detach() for g in torch.autograd.grad(loss, params)]


class GradientMatching(Attack):
    """Witches' Brew gradient matching: ``craft(model, setup, data) -> Poison``.

    Args:
        iterations: signed-Adam steps per restart (250 in Witches' Brew).
        lr: Adam step size on the [0, 1] pixel scale (a signed-Adam step moves a pixel by about ``lr``).
        restarts: independent random initialisations; the best final 𝓑 is kept (8 in Witches' Brew).
        augment: differentiable augmentation while crafting (random translation by up to
            ``padding`` pixels, ``flip`` optional).
        padding, flip: the augmentation (``padding=1`` suits 8x8 digits).
        batch_size: poisons per double-backward pass.
        seed: seed of the initialisations and augmentation draws.

    After :meth:`craft`: ``history`` (one record per iteration), ``restart_losses``
    (final 𝓑 of each restart), ``initial_loss`` (𝓑 at Δ = 0), ``final_loss``, ``seconds``,
    ``iterations_done``.

    Raises:
        ValueError: a bad setting (named).
    """

    name = "gradient_matching"

    def __init__(self, iterations: int = 250, lr: float = 0.01, restarts: int = 8, *, augment: bool = False,
                 padding: int = 1, flip: bool = False, batch_size: int = 512, seed: int = 0):
        super().__init__()
        self._check_steps(iterations, lr, " (pixel scale)")
        if not isinstance(restarts, int) or restarts < 1:
            raise ValueError(f"restarts={restarts!r} is invalid: must be a positive integer")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is invalid: must be a positive integer")
        self.iterations, self.lr, self.restarts = iterations, float(lr), restarts
        self.augment, self.padding, self.flip = bool(augment), int(padding), bool(flip)
        self.batch_size, self.seed = batch_size, int(seed)
        self.restart_losses: list[float] = []
        self.initial_loss = float("nan")
        self.final_loss = float("nan")

    def config(self) -> dict:
        """The attack's settings as a plain dict (recorded with the poison)."""
        return {"iterations": self.iterations, "lr": self.lr, "restarts": self.restarts, "augment": self.augment,
                "padding": self.padding, "flip": self.flip, "batch_size": self.batch_size, "seed": self.seed}

    # -------------------------------------------------------------- objective
    def _objective(self, model, params, gt, x, y, delta_pix, box, aug=None, create_graph=True) -> list[Tensor]:
        """Per-batch 𝓑 (list of scalars), differentiable in ``delta_pix`` when ``create_graph``."""
        out = []
        for s in range(0, len(x), self.batch_size):
            xb, yb = x[s:s + self.batch_size], y[s:s + self.batch_size]
            d = delta_pix[s:s + self.batch_size]
            inp = xb + self._to_input(d, box, xb)
            if aug is not None:
                inp = aug(inp)
            loss = F.cross_entropy(model(inp), yb, reduction="sum")  # Σ_i ℓ(x_i + Δ_i, y_i)
            g = torch.autograd.grad(loss, params, create_graph=create_graph)
            out.append(alignment_loss(list(g), gt))
        return out

    @staticmethod
    def _to_input(d_pix: Tensor, box: PixelBox, x: Tensor) -> Tensor:
        if box.std is None:
            return d_pix
        std = torch.as_tensor(box.std, dtype=x.dtype, device=x.device).view((1, -1) + (1,) * (x.dim() - 2))
        return d_pix / std

    # ------------------------------------------------------------------ craft
    def craft(self, model: nn.Module, setup: ThreatSetup, data, *,
              callback: Callable[[CraftProgress], None] | None = None, stop: threading.Event | None = None) -> Poison:
        """Craft Δ for ``setup`` against ``model`` (a clean pretrained model; left unchanged).

        Args:
            model: the crafting network (eval mode is used).
            setup: target, adversarial label, poison indices and ε.
            data: the :class:`~workbench.data.DataBundle` the setup refers to.
            callback: receives a :class:`CraftProgress` after every iteration.
            stop: a ``threading.Event``; when set, crafting ends after the current iteration and
                the best Δ so far is returned (``meta["stopped"] = True``).

        Returns:
            :class:`~workbench.data.poison.Poison` with Δ ``[P, *input_shape]`` in input
            (normalised) units, index = ``setup.poison_indices``; ``meta`` holds the setup, the
            attack configuration, ``initial_loss``/``final_loss`` (𝓑) and ``restart_losses``.
        """
        t0 = time.perf_counter()
        self.history, self.restart_losses = [], []
        dev = device_of(model)
        box = PixelBox.for_bundle(data, setup.epsilon)
        rows = setup.poison_rows(data.train)
        x = data.train.x[rows.to(data.train.x.device)].to(dev)
        y = data.train.y[rows.to(data.train.y.device)].to(dev)
        x_t, y_adv = setup.target(data)
        x_t = x_t.to(dev)
        x_pix = box.to_pixels(x)
        best, best_loss, stopped, iters = None, float("inf"), False, 0
        with frozen(model) as params:
            gt = target_gradient(model, x_t, y_adv, params)
            zero = torch.zeros_like(x)
            self.initial_loss = float(torch.stack(self._objective(model, params, gt, x, y, zero, box,
                                                                  create_graph=False)).mean())
            for r in range(self.restarts):
                gen = torch.Generator().manual_seed(self.seed * 7919 + r)
                aug = DiffAugment(self.padding, self.flip, torch.Generator().manual_seed(self.seed * 7919 + r + 1)) \
                    if self.augment else None
                init = (torch.rand(x.shape, generator=gen, dtype=x.dtype) * 2 - 1).to(dev) * setup.epsilon
                delta = self._project(init, x_pix, setup.epsilon).requires_grad_(True)
                opt = torch.optim.Adam([delta], lr=self.lr)
                m = [int(self.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
                sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=m, gamma=0.1)
                for it in range(1, self.iterations + 1):
                    if aug is not None:
                        aug.draw(len(x))
                    grads = torch.zeros_like(delta)
                    losses = []
                    for s in range(0, len(x), self.batch_size):
                        sl = slice(s, s + self.batch_size)
                        obj = self._objective(model, params, gt, x[sl], y[sl], delta[sl], box,
                                              aug=_Sliced(aug, sl) if aug is not None else None)[0]
                        (gd,) = torch.autograd.grad(obj, delta)
                        grads += gd
                        losses.append(float(obj.detach()))
                    delta.grad = grads.sign()  # signed Adam
                    opt.step()
                    sched.step()
                    with torch.no_grad():
                        delta.copy_(self._project(delta, x_pix, setup.epsilon))
                    iters += 1
                    self._emit(callback, r, it, self.iterations, sum(losses) / len(losses),
                               best_loss if best is not None else float("nan"), t0)
                    if stop is not None and stop.is_set():
                        stopped = True
                        break
                final = float(torch.stack(self._objective(model, params, gt, x, y, delta.detach(), box,
                                                          create_graph=False)).mean())
                self.restart_losses.append(final)
                if final < best_loss:
                    best_loss, best = final, delta.detach().clone()
                if stopped:
                    break
        self.final_loss, self.seconds, self.iterations_done = best_loss, time.perf_counter() - t0, iters
        d_in = self._to_input(best, box, x)
        return poison_from_delta(d_in, setup, data, self.name, attack=self.config(), initial_loss=self.initial_loss,
                                 final_loss=best_loss, restart_losses=self.restart_losses, stopped=stopped,
                                 seconds=self.seconds, iterations_done=iters)

    @staticmethod
    def _project(d_pix: Tensor, x_pix: Tensor, eps: float) -> Tensor:
        """ℓ∞ ball of radius ε, then the [0, 1] box for ``x + Δ`` (both on the pixel scale)."""
        d = d_pix.clamp(-eps, eps)
        return (x_pix + d).clamp(0.0, 1.0) - x_pix


class _Sliced:
    """The rows ``sl`` of a batch-wide augmentation draw."""

    def __init__(self, aug: DiffAugment, sl: slice):
        self.aug, self.sl = aug, sl

    def __call__(self, x: Tensor) -> Tensor:
        oy, ox, fl = self.aug._draw
        sub = DiffAugment(self.aug.padding, self.aug.flip)
        sub._draw = (oy[self.sl], ox[self.sl], fl[self.sl])
        return sub(x)
