"""Optimizers (SGD, Adam, SAM/ASAM/m-SAM) and learning-rate schedules."""
from __future__ import annotations

import torch

from ..config import OptimConfig
from .sam import BN_POLICIES, SAM, SAMStepResult, bn_policy, optimizer_update, sam_step
from .schedules import build_scheduler, lr_factor

__all__ = ["SAM", "SAMStepResult", "sam_step", "optimizer_update", "bn_policy", "BN_POLICIES", "build_optimizer",
           "build_scheduler", "lr_factor"]


def _base(cfg: OptimConfig, name: str) -> tuple[type[torch.optim.Optimizer], dict]:
    if name == "sgd":
        return torch.optim.SGD, dict(lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                     weight_decay=cfg.weight_decay)
    if name == "adam":
        return torch.optim.Adam, dict(lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ValueError(f"optim.base={name!r} is invalid: choose 'sgd' or 'adam'")


def build_optimizer(cfg: OptimConfig, params) -> torch.optim.Optimizer:
    """Build the optimizer named by ``cfg.name`` over ``params``.

    ``sgd``/``adam`` return the torch optimizer; ``sam``/``asam`` return
    :class:`SAM` wrapping ``cfg.base`` (ASAM = SAM with ``adaptive=True``).

    Raises:
        ValueError: unknown optimizer name (lists the choices).
    """
    if cfg.name in ("sgd", "adam"):
        cls, kw = _base(cfg, cfg.name)
        return cls(params, **kw)
    if cfg.name in ("sam", "asam"):
        cls, kw = _base(cfg, cfg.base)
        return SAM(params, cls, rho=cfg.rho, adaptive=cfg.adaptive or cfg.name == "asam", eta=cfg.eta,
                   perturb_weight_decay=cfg.perturb_weight_decay, **kw)
    raise ValueError(f"optim.name={cfg.name!r} is invalid: choose one of 'sgd', 'sam', 'asam', 'adam'")
