"""The synthetic 2-D illustration of [Carnerero-Cano 2021, Fig. 1] (§3 and App. C.1).

Two Gaussian classes ``N(μ0, Σ)`` and ``N(μ1, Σ)`` with ``μ0 = (−3, 0)``, ``μ1 = (3, 0)``,
``Σ = diag(2.5, 1.5)``; 32 training points (16 per class), 64 validation points
(32 per class); one poisoning point cloned from a validation point of class 1 whose
label is flipped to 0. Attack: α = 0.4, T_{D_p} = 50, Φ(D_p) = [−9.5, 9.5]², inner
η = 0.2, T = 500; testing the attack (and every map): η_tr = 0.2, full batch, 100
epochs. Regularised panel: λ = log 20 ≈ 3. The λ map explores λ ∈ [−8, 6].

:func:`poison_maps` trains one logistic regression per (poisoning-point position, λ) in a
single batched loop (:func:`~workbench.bilevel.model.train_gd_batched`), so a 50×50 map for
several λ values is a few seconds on a CPU; :func:`argmin_lambda` turns the λ stack into
the Fig. 1 (right) map. Note: the paper's Σ entries are variances; we draw with standard
deviations ``sqrt(2.5)`` and ``sqrt(1.5)``.

No UI imports.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .attack import AttackConfig, AttackResult, run_attack
from .hypergrad import BilevelProblem
from .model import error_rate, train_gd, train_gd_batched, val_loss

__all__ = ["Toy2D", "IllustrationSettings", "PoisonMaps", "gaussian_2d", "poison_maps", "argmin_lambda",
           "fit_eval", "illustrate", "Illustration", "save_illustration", "load_illustration"]

MU0, MU1 = (-3.0, 0.0), (3.0, 0.0)
SIGMA = (2.5, 1.5)  # diagonal covariance (variances), App. C.1


@dataclass
class Toy2D:
    """Training and validation points of the 2-D example (``float64`` tensors, labels {0, 1})."""

    x_tr: torch.Tensor
    y_tr: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    seed: int = 0


@dataclass
class IllustrationSettings:
    """App. C.1 settings (see module docstring); ``grid`` is the map resolution per axis."""

    alpha: float = 0.4
    attack_steps: int = 50
    box: tuple[float, float] = (-9.5, 9.5)
    eta: float = 0.2
    inner_steps: int = 500
    eta_tr: float = 0.2
    epochs: int = 100
    log_lam_reg: float = math.log(20.0)
    lam_grid: tuple[float, float, int] = (-8.0, 6.0, 15)
    grid: int = 50
    poison_class: int = 1  # the cloned validation point's class; its label is flipped to 1 - poison_class

    def attack_config(self, seed: int = 0) -> AttackConfig:
        """The poisoning attack's settings (step size ``alpha``, steps, box; λ unbounded), seeded by ``seed``."""
        return AttackConfig(alpha=self.alpha, beta=0.0, steps=self.attack_steps, box=self.box, seed=seed,
                            lam_range=(-math.inf, math.inf))


def gaussian_2d(seed: int = 0, n_train: int = 32, n_val: int = 64, *, dtype=torch.float64, device=None) -> Toy2D:
    """Sample the App. C.1 data: half of each split per class, seeded by ``seed``."""
    if n_train < 2 or n_val < 2:
        raise ValueError(f"need at least 2 training and 2 validation points, got {n_train}, {n_val}")
    g = torch.Generator().manual_seed(int(seed))
    std = torch.tensor(SIGMA, dtype=dtype).sqrt()

    def draw(n):
        n0 = n // 2
        x = torch.randn(n, 2, generator=g, dtype=dtype) * std
        y = torch.cat([torch.zeros(n0, dtype=dtype), torch.ones(n - n0, dtype=dtype)])
        x = x + torch.where(y[:, None] > 0, torch.tensor(MU1, dtype=dtype), torch.tensor(MU0, dtype=dtype))
        return x.to(device), y.to(device)

    x_tr, y_tr = draw(n_train)
    x_val, y_val = draw(n_val)
    return Toy2D(x_tr, y_tr, x_val, y_val, seed)


def fit_eval(x: torch.Tensor, y: torch.Tensor, log_lam: float, s: IllustrationSettings) -> torch.Tensor:
    """Train the model used to test an attack (full batch, ``s.epochs`` steps of ``s.eta_tr``); returns θ."""
    return train_gd(x, y, torch.tensor(log_lam, dtype=x.dtype), eta=s.eta_tr, steps=s.epochs)


@dataclass
class PoisonMaps:
    """Validation error and loss as functions of the poisoning point's position, per λ.

    Attributes:
        xs, ys: ``[G]`` grid coordinates (the map's pixel centres).
        log_lams: ``[L]`` λ values (log scale, ``-inf`` = no regularisation).
        error, loss: ``[L, G(y), G(x)]`` validation error and mean cross-entropy of the model
            trained on ``D_tr ∪ {(x, y_p)}`` with the poisoning point at ``(xs[j], ys[i])``.
        seconds: wall time of the computation.
    """

    xs: np.ndarray
    ys: np.ndarray
    log_lams: np.ndarray
    error: np.ndarray
    loss: np.ndarray
    y_p: int
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready dict (arrays as nested lists, ``-inf`` λ as ``None``); :meth:`from_dict` inverts it."""
        return {"xs": self.xs.tolist(), "ys": self.ys.tolist(), "log_lams": [_jf(v) for v in self.log_lams],
                "error": self.error.tolist(), "loss": self.loss.tolist(), "y_p": self.y_p, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> "PoisonMaps":
        """The maps from :meth:`to_dict`'s output (lists back to arrays, ``None`` λ back to ``-inf``)."""
        return cls(np.asarray(d["xs"]), np.asarray(d["ys"]), np.asarray([_pf(v) for v in d["log_lams"]], dtype=float),
                   np.asarray(d["error"]), np.asarray(d["loss"]), int(d["y_p"]), float(d.get("seconds", 0.0)))


def _jf(v: float):
    return None if v == -math.inf else float(v)


def _pf(v) -> float:
    return -math.inf if v is None else float(v)


def poison_maps(toy: Toy2D, log_lams, *, grid: int = 50, box: tuple[float, float] = (-9.5, 9.5), y_p: int = 0,
                eta: float = 0.2, steps: int = 100, max_batch: int = 20000,
                progress: Callable[[float], None] | None = None) -> PoisonMaps:
    """Fig. 1 background maps, vectorised: one model per (grid cell, λ), all trained at once.

    Args:
        toy: the data.
        log_lams: λ values (log scale; ``-inf`` allowed).
        grid: points per axis over ``box`` (``grid × grid`` positions).
        box: ``(low, high)`` of both coordinates of the poisoning point.
        y_p: label of the poisoning point.
        eta: step size of the full-batch training used to test the attack (App. C.1: 0.2).
        steps: its number of steps (App. C.1: 100).
        max_batch: models trained per batched loop (bounds memory).
        progress: called with the fraction done after every chunk.

    Returns:
        :class:`PoisonMaps`.
    """
    if grid < 2:
        raise ValueError(f"grid must be >= 2, got {grid}")
    t0 = time.perf_counter()
    dtype, dev = toy.x_tr.dtype, toy.x_tr.device
    lams = torch.as_tensor(list(log_lams), dtype=dtype, device=dev)
    xs = torch.linspace(box[0], box[1], grid, dtype=dtype, device=dev)
    gy, gx = torch.meshgrid(xs, xs, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)  # [G*G, 2], row-major over (y, x)
    P = len(pts)
    # all (λ, position) pairs, λ-major
    lam_all = lams.repeat_interleave(P)
    pts_all = pts.repeat(len(lams), 1)
    y = torch.cat([toy.y_tr, toy.y_tr.new_tensor([float(y_p)])])
    errs, losses = [], []
    total = len(lam_all)
    for i in range(0, total, max_batch):
        p = pts_all[i:i + max_batch]
        x = torch.cat([toy.x_tr.expand(len(p), -1, -1), p[:, None, :]], dim=1)
        theta = train_gd_batched(x, y, lam_all[i:i + max_batch], eta=eta, steps=steps)
        errs.append(error_rate(theta, toy.x_val, toy.y_val))
        losses.append(val_loss(theta, toy.x_val, toy.y_val))
        if progress is not None:
            progress(min(1.0, (i + max_batch) / total))
    err = torch.cat(errs).reshape(len(lams), grid, grid).cpu().numpy()
    loss = torch.cat(losses).reshape(len(lams), grid, grid).cpu().numpy()
    return PoisonMaps(xs.cpu().numpy(), xs.cpu().numpy(), lams.cpu().numpy(), err, loss, int(y_p),
                      time.perf_counter() - t0)


def argmin_lambda(maps: PoisonMaps, *, diverged: float = 1e3) -> np.ndarray:
    """``[G, G]`` λ minimising the validation error at every position (App. C.1, Fig. 1 right).

    Ties (the error of 64 validation points takes few values) go to the smallest λ of the
    grid. Models whose training diverged (validation loss above ``diverged`` or not finite:
    ``η e^λ / n > 2``, e.g. λ = 6 with η = 0.2 and 33 points) are excluded.
    """
    err = np.where(np.isfinite(maps.loss) & (maps.loss < diverged), maps.error, np.inf)
    return maps.log_lams[np.argmin(err, axis=0)]


@dataclass
class Illustration:
    """Everything Fig. 1 shows, for one seed (see :func:`illustrate`).

    Arrays are numpy; ``-inf`` = no regularisation.
    """

    settings: dict
    data: dict  # x_tr, y_tr, x_val, y_val (lists)
    clean_theta: dict  # label -> θ (d+1 list) trained on the clean set
    poisoned_theta: dict  # label -> θ trained with the attack's final poisoning point
    attacks: dict  # label -> {"log_lam", "path" [steps+1, 2], "val_loss" [steps], "val_error_before/after"}
    maps: PoisonMaps
    lam_map: np.ndarray
    lam_maps: PoisonMaps | None = None
    seconds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready dict (maps via :meth:`PoisonMaps.to_dict`); :meth:`from_dict` inverts it."""
        return {"settings": self.settings, "data": self.data, "clean_theta": self.clean_theta,
                "poisoned_theta": self.poisoned_theta, "attacks": self.attacks, "maps": self.maps.to_dict(),
                "lam_map": self.lam_map.tolist(),
                "lam_maps": None if self.lam_maps is None else self.lam_maps.to_dict(), "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> "Illustration":
        """The illustration from :meth:`to_dict`'s output."""
        return cls(d["settings"], d["data"], d["clean_theta"], d["poisoned_theta"], d["attacks"],
                   PoisonMaps.from_dict(d["maps"]), np.asarray(d["lam_map"]),
                   None if d.get("lam_maps") is None else PoisonMaps.from_dict(d["lam_maps"]), d.get("seconds", {}))


LABELS = {"no_reg": -math.inf, "reg": None}  # "reg" uses settings.log_lam_reg


def illustrate(seed: int = 0, settings: IllustrationSettings | None = None, *, lam_map: bool = True,
               progress: Callable[[str, float], None] | None = None) -> Illustration:
    """Compute Fig. 1: the data, the attacks, both background maps and the argmin-λ map.

    The attack runs against logistic regression without regularisation and with λ = log 20.

    The poisoning point starts from a seeded validation point of class ``settings.poison_class``
    (label flipped). ``progress(stage, fraction)`` reports the stages ``attack``, ``maps``, ``lambda``.
    """
    s = settings or IllustrationSettings()
    toy = gaussian_2d(seed)
    y_p = 1 - s.poison_class
    cand = torch.nonzero(toy.y_val.long() == s.poison_class).squeeze(1)
    g = torch.Generator().manual_seed(int(seed))
    start = toy.x_val[cand[torch.randint(len(cand), (1,), generator=g)]].clone()
    problem = BilevelProblem(toy.x_tr, toy.y_tr, toy.x_val, toy.y_val, toy.y_tr.new_tensor([float(y_p)]),
                             eta=s.eta, steps=s.inner_steps)
    lams = {"no_reg": -math.inf, "reg": s.log_lam_reg}
    seconds: dict = {}
    clean, poisoned, attacks = {}, {}, {}
    t0 = time.perf_counter()
    for i, (name, ll) in enumerate(lams.items()):
        res: AttackResult = run_attack(problem, start, ll, s.attack_config(seed), learn_xp=True, record_path=True)
        th_c = fit_eval(toy.x_tr, toy.y_tr, ll, s)
        xpois, ypois = problem.training_set(res.x_p)
        th_p = fit_eval(xpois, ypois, ll, s)
        clean[name], poisoned[name] = th_c.tolist(), th_p.tolist()
        attacks[name] = {
            "log_lam": _jf(ll), "path": res.path[:, 0, :].tolist(), "val_loss": [h.val_loss for h in res.history],
            "final_val_loss": res.val_loss,
            "val_error_clean": float(error_rate(th_c, toy.x_val, toy.y_val)),
            "val_error_poisoned": float(error_rate(th_p, toy.x_val, toy.y_val)),
        }
        if progress:
            progress("attack", (i + 1) / len(lams))
    seconds["attack"] = time.perf_counter() - t0
    maps = poison_maps(toy, list(lams.values()), grid=s.grid, box=s.box, y_p=y_p, eta=s.eta_tr, steps=s.epochs,
                       progress=(lambda f: progress("maps", f)) if progress else None)
    seconds["maps"] = maps.seconds
    lm, lam_maps = np.full((s.grid, s.grid), np.nan), None
    if lam_map:
        lo, hi, n = s.lam_grid
        lam_maps = poison_maps(toy, np.linspace(lo, hi, int(n)).tolist(), grid=s.grid, box=s.box, y_p=y_p,
                               eta=s.eta_tr, steps=s.epochs,
                               progress=(lambda f: progress("lambda", f)) if progress else None)
        lm = argmin_lambda(lam_maps)
        seconds["lambda_map"] = lam_maps.seconds
    data = {"x_tr": toy.x_tr.tolist(), "y_tr": toy.y_tr.tolist(), "x_val": toy.x_val.tolist(),
            "y_val": toy.y_val.tolist(), "seed": seed}
    sd = asdict(s)
    return Illustration(sd, data, clean, poisoned, attacks, maps, lm, lam_maps, seconds)


def save_illustration(ill: Illustration, path: str | Path) -> Path:
    """Write ``ill`` as JSON (atomically)."""
    from ..runs.store import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(ill.to_dict()).encode())
    return path


def load_illustration(path: str | Path) -> Illustration:
    """Read an illustration written by :func:`save_illustration`."""
    return Illustration.from_dict(json.loads(Path(path).read_text()))
