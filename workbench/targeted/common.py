"""Pieces shared by the targeted attacks: progress events, the attack surface, penultimate features.

Every attack has one surface (the lesson of the Adversarial Robustness Toolbox and of the Witches' Brew
code): ``attack.craft(model, setup, data, *, callback=None, stop=None) -> Poison``
with Δ keyed by dataset index (:class:`workbench.data.poison.Poison`), in the model's
normalised input space, inside the setup's ε-ball and the [0, 1] pixel box
(:class:`~workbench.targeted.setup.PixelBox`). Crafting never changes the model: it runs
in eval mode (BatchNorm running statistics, dropout off) and the model's parameters,
buffers, modes and ``.grad`` are restored afterwards.

No UI imports.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..analysis.common import eval_mode, model_device, preserved_state
from ..analysis.gradients import find_last_linear
from ..data.poison import Poison, data_fingerprint

__all__ = ["CraftProgress", "Attack", "penultimate", "frozen", "DiffAugment", "poison_from_delta"]


@dataclass(frozen=True)
class CraftProgress:
    """One crafting iteration.

    Attributes:
        attack: attack name; restart: restart number (0-based); iteration: 1-based within the restart;
        iterations: planned per restart; loss: objective after the step (attack-specific, lower is better);
        best: best final loss of the finished restarts so far (``nan`` before the first ends);
        seconds: wall time since crafting began.
    """

    attack: str
    restart: int
    iteration: int
    iterations: int
    loss: float
    best: float
    seconds: float


class Attack:
    """Base class of the targeted attacks (subclasses implement :meth:`craft`).

    Attributes:
        name: short name (``gradient_matching``, ``feature_collision``, ``bullseye_polytope``).
        history: one dict per iteration (``restart``, ``iteration``, ``loss``) of the last :meth:`craft`.
        seconds: wall time of the last :meth:`craft`.
        iterations_done: iterations it ran.
    """

    name = "attack"

    def __init__(self) -> None:
        self.history: list[dict] = []
        self.seconds = 0.0
        self.iterations_done = 0

    def craft(self, model: nn.Module, setup, data, *, callback: Callable[[CraftProgress], None] | None = None,
              stop=None) -> Poison:  # pragma: no cover - interface
        """Craft a poison against ``model`` for the threat ``setup`` on ``data``.

        ``callback`` receives a :class:`CraftProgress` per iteration; ``stop`` (a ``threading.Event``) ends the
        crafting early with the poison so far.
        """
        raise NotImplementedError

    def config(self) -> dict:
        """The attack's settings as a plain dict (recorded with the poison); the base class has none."""
        return {}

    @staticmethod
    def _check_steps(iterations, lr, lr_unit: str = "") -> None:
        """Validate the iteration count and step size every attack takes.

        Raises:
            ValueError: ``iterations`` not a positive integer, or ``lr`` not a positive finite number.
        """
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations={iterations!r} is invalid: must be a positive integer")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr={lr!r} is invalid: must be a positive step size{lr_unit}")

    def _emit(self, callback, restart, it, iters, loss, best, t0) -> None:
        self.history.append({"restart": restart, "iteration": it, "loss": float(loss)})
        if callback is not None:
            callback(CraftProgress(self.name, restart, it, iters, float(loss), float(best),
                                   time.perf_counter() - t0))


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[list[nn.Parameter]]:
    """Eval mode (BatchNorm running statistics, dropout off) with every state restored afterwards.

    Yields the trainable parameters (their ``requires_grad`` is set on for the duration).
    """
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    with preserved_state(model), eval_mode(model):
        try:
            for p in params:
                p.requires_grad_(True)
            yield params
        finally:
            for p, f in zip(params, flags):
                p.requires_grad_(f)


def penultimate(model: nn.Module, x: Tensor) -> Tensor:
    """The input ``h`` of the model's last ``nn.Linear`` (the feature space of Poison Frogs / Bullseye).

    Differentiable in ``x`` (a forward hook keeps the graph). Shapes: ``x [N, ...] -> h [N, D]``.

    Raises:
        ValueError: the model does not end in an ``nn.Linear`` (see
            :func:`workbench.analysis.gradients.find_last_linear`).
    """
    _, lin = find_last_linear(model, x[:1].detach())
    got: list[Tensor] = []
    h = lin.register_forward_hook(lambda m, inp, out: got.append(inp[0]))
    try:
        model(x)
    finally:
        h.remove()
    return got[-1]


class DiffAugment:
    """Differentiable random translation (zero padding ``padding`` pixels, then crop) and optional flip.

    One draw per call of :meth:`draw`, applied identically to any batch of the same size
    (Witches' Brew ``paugment``; [Murphy 2025, §6.2, Eq. 6.1]). ``padding=1`` suits 8x8 digits,
    4 suits 32x32 CIFAR. Shapes: ``[N, C, H, W] -> [N, C, H, W]``.
    """

    def __init__(self, padding: int = 1, flip: bool = False, generator: torch.Generator | None = None):
        if padding < 0:
            raise ValueError(f"padding={padding!r} is invalid: must be >= 0")
        self.padding, self.flip = int(padding), bool(flip)
        self.generator = generator or torch.Generator().manual_seed(0)
        self._draw = None

    def draw(self, n: int) -> None:
        """Draw new shifts (and flips) for batches of ``n`` examples from the generator."""
        g, p = self.generator, self.padding
        self._draw = (torch.randint(0, 2 * p + 1, (n,), generator=g), torch.randint(0, 2 * p + 1, (n,), generator=g),
                      torch.randint(0, 2, (n,), generator=g).bool() & self.flip)

    def __call__(self, x: Tensor) -> Tensor:
        """Apply the current draw to ``x`` ``[N, C, H, W]`` (a new draw when there is none for ``N``)."""
        if self._draw is None or len(self._draw[0]) != x.shape[0]:
            self.draw(x.shape[0])
        oy, ox, fl = (t.to(x.device) for t in self._draw)
        p, (h, w) = self.padding, x.shape[-2:]
        xp = F.pad(x, (p, p, p, p))
        rows = oy[:, None] + torch.arange(h, device=x.device)[None, :]
        cols = ox[:, None] + torch.arange(w, device=x.device)[None, :]
        bi = torch.arange(x.shape[0], device=x.device)[:, None, None]
        out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        return torch.where(fl[:, None, None, None], out.flip(-1), out)


def poison_from_delta(delta: Tensor, setup, data, kind: str, **meta) -> Poison:
    """Wrap Δ ``[P, ...]`` (rows in ``setup.poison_indices`` order) as a :class:`Poison` with metadata."""
    cfg = getattr(data, "config", None)
    m = {"kind": kind, "setup": setup.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **meta}
    if cfg is not None:
        m["data"] = data_fingerprint(cfg)
    if hasattr(data, "name"):
        m["dataset"] = data.name
        m["split"] = {k: data.info.get(k) for k in ("split", "split_seed", "split_sizes", "classes")
                      if k in getattr(data, "info", {})}
    return Poison(delta=delta.detach().cpu().float().clone(),
                  index=torch.as_tensor(setup.poison_indices, dtype=torch.long), meta=m)


def device_of(model: nn.Module) -> torch.device:
    return model_device(model)
