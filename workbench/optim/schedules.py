"""Learning-rate schedules as pure functions of the (fractional) epoch.

The schedule is evaluated per optimizer step, at ``epoch = step / steps_per_epoch``,
so warm-up is smooth and milestones fall on epoch boundaries. Supported:

* ``constant``;
* ``multistep``: multiply by ``gamma`` at each milestone (epochs, or fractions of
  the total: e.g. ×0.2 at epochs 60/120/160, or ÷10 at 50 % and 75 % as in
  [Murphy 2025, §4.3.1] and [Andriushchenko 2024, §5.11]);
* ``cosine``: half-cosine from 1 to ``min_lr_factor`` over the run;
* linear warm-up from ``warmup_start_factor`` over ``warmup_epochs``, combined
  with any of the above (multiplicatively).

No UI imports.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..config import ScheduleConfig

__all__ = ["lr_factor", "build_scheduler"]


def lr_factor(cfg: ScheduleConfig, epoch: float, total_epochs: int) -> float:
    """Multiplier of the base learning rate at fractional ``epoch`` (0-based).

    Args:
        cfg: schedule configuration.
        epoch: position in training in epochs, ``0 <= epoch <= total_epochs``.
        total_epochs: number of epochs of the run (> 0).

    Returns:
        The factor (dimensionless) that multiplies ``optim.lr``.
    """
    if cfg.name == "constant":
        f = 1.0
    elif cfg.name == "multistep":
        ms = cfg.milestones or [fr * total_epochs for fr in cfg.milestone_fractions]
        f = cfg.gamma ** sum(1 for mstone in ms if epoch >= mstone - 1e-9)
    elif cfg.name == "cosine":
        t = min(max(epoch / total_epochs, 0.0), 1.0)
        f = cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * t))
    else:  # pragma: no cover - config validates names
        raise ValueError(f"schedule.name={cfg.name!r} is invalid")
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        w = cfg.warmup_start_factor + (1 - cfg.warmup_start_factor) * epoch / cfg.warmup_epochs
        f *= w
    return f


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` to be stepped once per optimizer step.

    For :class:`~workbench.optim.sam.SAM` the scheduler is attached to its base
    optimizer (the parameter groups are shared, so SAM sees the same rate).
    """
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch={steps_per_epoch!r} must be > 0")
    fn: Callable[[int], float] = lambda step: lr_factor(cfg, step / steps_per_epoch, total_epochs)
    # SAM shares its parameter groups with the base optimizer, which is the one
    # that steps: schedule it there (LambdaLR checks that optimizer.step ran).
    target = getattr(optimizer, "base_optimizer", optimizer)
    return torch.optim.lr_scheduler.LambdaLR(target, fn)
