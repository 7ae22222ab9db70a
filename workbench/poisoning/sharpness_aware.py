"""Sharpness-aware data poisoning: craft S′ = S + Δ so that plain SGD on S′ follows SAM's gradient on S.

Source: [Murphy 2025, Ch. 3] (Eq. 3.1-3.6 and both pseudocode blocks of
§3.2) and Ch. 6 (ensembles, §6.1; differentiable augmentations, §6.2, Eq. 6.1).

Crafting trains a model with SAM. For every batch B, after SAM's gradient
g′ = ∇θ L_B(θ)|θ+ε̂(θ) (Eq. 3.1-3.2) is computed and before the weights are
updated with it, the batch's perturbations Δ^B are optimised for up to ``n``
iterations to minimise (Eq. 3.6)

    𝓑(Δ, θ) = 1 − cos(g′, ∇θ L_{B+Δ}(θ))

by SGD or Adam with learning rate lr^P on Δ — a double backward through the
network (``create_graph=True``) — with an optional projection onto an ε-ball,
stopping early when Δ stops changing. Δ is stored per example by dataset
index and persists across epochs.

Options (:class:`PoisonConfig`) follow the report: start epoch (Table 4.2),
initial random noise (§5.3.2), global or per-tensor cosine, the BatchNorm
mode (g′ and crafting in the same mode: ``train`` uses batch statistics
without updating the running ones, ``eval`` uses the running ones — the
report's reference code awesomealex1/minf2 mixed them), iterations,
ensembles of m models trained side by side (§6.1: the sum of the m cosine
losses), differentiable flip+crop augmentation applied identically to B for
g′ and to B + Δ for crafting (§6.2, Eq. 6.1).

No UI imports.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import RunConfig
from ..data.poison import Poison, data_fingerprint, save_poison
from ..optim import SAM, bn_policy, build_optimizer, optimizer_update, sam_step
from ..training.trainer import Stepper, Trainer, TrainResult

__all__ = ["PoisonConfig", "SharpnessAwarePoisoner", "CraftStep", "craft_poison", "cosine_loss", "project",
           "matched_noise", "POISON_FILE"]

POISON_FILE = "poison.pt"


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"poison.{name}={value!r} is invalid: {allowed}")


@dataclass
class PoisonConfig:
    """How poisons are crafted ([Murphy 2025, Ch. 3]; defaults from its §5.2 and the reference code).

    Attributes:
        lr: lr^P, the learning rate on Δ (Table 4.1; 0.01 in §5.2).
        optimizer: ``adam`` (the reference code) or ``sgd`` (the pseudocode).
        iterations: maximum inner iterations n per batch (5 for MNIST, §5.2; 25/50 in Table 4.1).
        epsilon: radius of the projection; ``0`` leaves Δ unconstrained (the report's default).
        norm: ``linf`` (|Δ_i| ≤ bound elementwise) or ``l2`` (‖Δ_i‖₂ ≤ bound), per example.
        relative: the bound is ``epsilon`` times each example's own norm
            (‖x_i‖∞ for linf, ‖x_i‖₂ for l2): Table 4.1's "ε(%)"; otherwise ``epsilon``
            in input units (the model's normalised inputs).
        start_epoch: crafting starts at this epoch (1-based; Table 4.2's "start epoch");
            before it the run trains with SAM and leaves Δ as initialised.
        init_noise: standard deviation of Gaussian noise Δ starts from (§5.3.2;
            input units); ``0`` starts from Δ = 0.
        cosine: ``global`` (one cosine over all parameters, Eq. 3.6) or
            ``per_tensor`` (mean of per-parameter-tensor cosines, as the reference code).
        bn: ``train`` or ``eval``: the BatchNorm mode of both g′ and the crafting
            passes (running statistics are never updated by crafting passes). With
            ``eval`` both SAM passes run in eval mode too, so the running statistics
            keep their initial values for the whole crafting run.
        tol: stop the inner loop when max |Δ_new − Δ_old| < tol.
        train_on_poison: the crafting run's SAM gradient is taken on B + Δ (the
            model trains on the current poisons); default: on the clean batch B, so
            g′ is SAM's gradient on S as in Eq. 3.3.
        ensemble: number m of models trained side by side (§6.1); the crafting
            objective is the sum of their cosine losses (the logged loss is their mean,
            comparable with m = 1).
        augment: differentiable random crop (padding 4) + horizontal flip of B for g′
            and, with the same draw, of B + Δ for crafting (§6.2, Eq. 6.1).
        drift_epochs: keep the weights after these epochs and report, at every later
            epoch, the mean 𝓑 of the current poisons at those frozen weights (Fig. 5.7).
            This report uses plain SAM's g′ (ρ g/‖g‖ on the whole batch), also for
            ASAM / m-SAM runs.
        drift_batches: batches used for that report (a fixed, seeded subset).
        seed: seed of the initial noise, the augmentation draws and the drift subset.
        save_every: write ``artifacts/poison.pt`` every this many epochs (and at the end).
    """

    lr: float = 0.01
    optimizer: str = "adam"
    iterations: int = 5
    epsilon: float = 0.0
    norm: str = "linf"
    relative: bool = True
    start_epoch: int = 1
    init_noise: float = 0.0
    cosine: str = "global"
    bn: str = "train"
    tol: float = 1e-7
    train_on_poison: bool = False
    ensemble: int = 1
    augment: bool = False
    drift_epochs: list = field(default_factory=lambda: [1, 5, 10, 15])
    drift_batches: int = 4
    seed: int = 0
    save_every: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            _fail("lr", self.lr, "must be a positive number")
        if self.optimizer not in ("adam", "sgd"):
            _fail("optimizer", self.optimizer, "choose 'adam' or 'sgd'")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            _fail("iterations", self.iterations, "must be a positive integer")
        if not (isinstance(self.epsilon, (int, float)) and self.epsilon >= 0 and math.isfinite(self.epsilon)):
            _fail("epsilon", self.epsilon, "must be >= 0 (0 = unconstrained)")
        if self.norm not in ("linf", "l2"):
            _fail("norm", self.norm, "choose 'linf' or 'l2'")
        if not isinstance(self.start_epoch, int) or self.start_epoch < 1:
            _fail("start_epoch", self.start_epoch, "must be an epoch number >= 1")
        if not (isinstance(self.init_noise, (int, float)) and math.isfinite(self.init_noise)
                and self.init_noise >= 0):
            _fail("init_noise", self.init_noise, "must be a finite number >= 0")
        if not (isinstance(self.tol, (int, float)) and math.isfinite(self.tol) and self.tol >= 0):
            _fail("tol", self.tol, "must be a finite number >= 0")
        for name in ("relative", "train_on_poison", "augment"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "must be true or false")
        if self.cosine not in ("global", "per_tensor"):
            _fail("cosine", self.cosine, "choose 'global' or 'per_tensor'")
        if self.bn not in ("train", "eval"):
            _fail("bn", self.bn, "choose 'train' or 'eval'")
        if not isinstance(self.ensemble, int) or self.ensemble < 1:
            _fail("ensemble", self.ensemble, "must be a positive number of models")
        if not isinstance(self.drift_batches, int) or self.drift_batches < 0:
            _fail("drift_batches", self.drift_batches, "must be >= 0")
        if not isinstance(self.save_every, int) or self.save_every < 1:
            _fail("save_every", self.save_every, "must be a positive number of epochs")
        self.drift_epochs = sorted(int(e) for e in (self.drift_epochs or []))

    def to_dict(self) -> dict:
        """The settings as a plain dict (field name → value); :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PoisonConfig":
        """Settings from a dict of field values (validated as by the constructor).

        Raises:
            ValueError: an unknown key or an invalid value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown poison key(s) {unknown}: choose from {sorted(known)}")
        return cls(**d)


# ------------------------------------------------------------------- pieces
def cosine_loss(g: list[Tensor], g_ref: list[Tensor], mode: str = "global") -> Tensor:
    """𝓑 = 1 − cos(g_ref, g) ([Murphy 2025, Eq. 3.6]); differentiable in ``g``.

    Args:
        g: per-parameter gradients (the differentiable side).
        g_ref: per-parameter reference gradients, same shapes as ``g``; treated as a constant.
        mode: ``global`` (one cosine over the concatenated vectors) or ``per_tensor``
            (mean over parameter tensors of their cosines).
    """
    if mode == "global":
        dot = sum((a * b).sum() for a, b in zip(g, g_ref))
        na = torch.sqrt(sum((a * a).sum() for a in g))
        nb = torch.sqrt(sum((b * b).sum() for b in g_ref))
        return 1 - dot / (na * nb + 1e-12)
    cos = [F.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1), eps=1e-12)[0] for a, b in zip(g, g_ref)]
    return 1 - torch.stack(cos).mean()


def project(delta: Tensor, x: Tensor, epsilon: float, norm: str = "linf", relative: bool = True) -> Tensor:
    """Project each example's Δ_i onto its ε-ball (in place on a copy); ``epsilon == 0``: unchanged.

    Bounds per example: ``epsilon * ‖x_i‖`` (``relative``; ‖·‖∞ for linf, ‖·‖₂ for l2)
    or ``epsilon`` (absolute, input units).
    """
    if epsilon == 0:
        return delta
    n = delta.shape[0]
    flat = delta.reshape(n, -1)
    if relative:
        xf = x.reshape(n, -1)
        bound = epsilon * (xf.abs().amax(dim=1) if norm == "linf" else xf.norm(dim=1))
    else:
        bound = torch.full((n,), float(epsilon), device=delta.device, dtype=delta.dtype)
    if norm == "linf":
        flat = torch.maximum(torch.minimum(flat, bound[:, None]), -bound[:, None])
    else:
        norms = flat.norm(dim=1).clamp_min(1e-12)
        flat = flat * torch.clamp(bound / norms, max=1.0)[:, None]
    return flat.reshape(delta.shape)


def matched_noise(poison: Poison, seed: int = 0) -> Poison:
    """Random Gaussian perturbations with the poison's per-example ℓ2 norms (so the same Frobenius norm).

    The "SGD on S + random noise of the same magnitude" control ([Murphy 2025, §5.3.2, Fig. 5.3]).
    """
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(poison.delta.shape, generator=g, dtype=torch.float64)
    n = noise.shape[0]
    target = poison.delta.reshape(n, -1).double().norm(dim=1)
    cur = noise.reshape(n, -1).norm(dim=1).clamp_min(1e-12)
    noise = (noise.reshape(n, -1) * (target / cur)[:, None]).reshape(poison.delta.shape).float()
    meta = {k: v for k, v in poison.meta.items() if k in ("data", "source_run", "run_config")}
    return Poison(delta=noise, index=poison.index.clone(),
                  meta=dict(meta, kind="noise", matched_to=poison.meta.get("kind"), seed=int(seed)))


class _Augment:
    """One fixed random draw of crop (padding 4) + horizontal flip, applied differentiably to any batch."""

    def __init__(self, n: int, shape, generator: torch.Generator, device, padding: int = 4):
        h, w = shape[-2], shape[-1]
        self.padding = padding
        self.oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
        self.ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
        self.flip = torch.randint(0, 2, (n,), generator=generator).to(device).bool()
        self.h, self.w = h, w

    def __call__(self, x: Tensor) -> Tensor:
        p = self.padding
        xp = F.pad(x, (p, p, p, p))
        n = x.shape[0]
        rows = (self.oy[:, None] + torch.arange(self.h, device=x.device)[None, :])  # [n, h]
        cols = (self.ox[:, None] + torch.arange(self.w, device=x.device)[None, :])  # [n, w]
        bi = torch.arange(n, device=x.device)[:, None, None]
        out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        return torch.where(self.flip[:, None, None, None], out.flip(-1), out)


@contextlib.contextmanager
def _bn_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """``train``: batch statistics, running statistics restored afterwards; ``eval``: running statistics."""
    with bn_policy(model, "freeze" if mode == "train" else "eval"):
        yield


# ------------------------------------------------------------------ events
@dataclass(frozen=True)
class CraftStep:
    """Crafting on one batch: the cosine loss 𝓑 before each inner iteration ([Murphy 2025, Figs. 5.5-5.6]).

    Attributes: run_id, step (optimizer step), epoch, losses (list, one per iteration),
    iterations (done), delta_change (max |ΔΔ| of the last iteration).
    """

    run_id: str
    step: int
    epoch: int
    losses: list
    iterations: int
    delta_change: float


# ----------------------------------------------------------------- stepper
class SharpnessAwarePoisoner(Stepper):
    """The crafting run's step: SAM gradient g′, then Δ^B ← argmin 𝓑(Δ^B, θ), then θ ← θ − η g′.

    Use through :func:`craft_poison` (or pass it as ``Trainer(..., stepper=...)`` with a
    SAM run config). After training, ``poison`` holds Δ for every training example
    and ``artifacts/poison.pt`` is written in the run folder.

    Raises:
        ValueError: the run does not train with SAM/ASAM.
    """

    name = "poison"

    def __init__(self, cfg: PoisonConfig | None = None):
        self.cfg = cfg or PoisonConfig()
        self.delta: Tensor | None = None
        self.index: Tensor | None = None
        self.snapshots: dict[int, dict] = {}
        self.extra: list[tuple[nn.Module, torch.optim.Optimizer]] = []
        self.poison_path: Path | None = None
        self.craft_seconds = 0.0
        self.crafted_batches = 0

    # ------------------------------------------------------------ setup
    def setup(self, trainer: Trainer) -> None:
        """Start crafting for ``trainer``'s run: Δ = 0 (or seeded noise) per training example, ensemble models.

        Raises:
            ValueError: the run does not train with SAM/ASAM, or its training split is not sorted by index.
        """
        cfg, run_cfg = self.cfg, trainer.config
        if not isinstance(trainer.optimizer, SAM):
            raise ValueError(f"optim.name={run_cfg.optim.name!r} is invalid for poison crafting: "
                             "the crafting run trains with SAM (choose 'sam' or 'asam')")
        train = trainer.splits["train"]
        self.device = trainer.device
        self.index = train.index.detach().cpu()
        if bool((self.index[1:] < self.index[:-1]).any()):
            raise ValueError("the training split must be sorted by dataset index")
        g = torch.Generator().manual_seed(cfg.seed)
        self.delta = torch.zeros(train.x.shape, dtype=train.x.dtype)
        if cfg.init_noise > 0:
            self.delta = torch.randn(train.x.shape, generator=g, dtype=train.x.dtype) * cfg.init_noise
        self.delta = self.delta.to(self.device)
        self._clean_x = train.x
        self._aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.extra = []
        # leave the global streams as the trainer set them (a resumed run's restored state included)
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        for j in range(1, cfg.ensemble):  # §6.1: models trained side by side, own initialisation
            torch.manual_seed(run_cfg.train.seed + 1000 * j)
            m = copy.deepcopy(trainer.model)
            for mod in m.modules():
                if hasattr(mod, "reset_parameters"):
                    mod.reset_parameters()
            self.extra.append((m, build_optimizer(run_cfg.optim, m.parameters())))
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        n = len(self.index)
        if cfg.drift_batches and cfg.drift_epochs:
            bs = run_cfg.train.batch_size
            self._drift_rows = torch.randperm(n, generator=g)[: cfg.drift_batches * bs].sort().values
        else:
            self._drift_rows = torch.zeros(0, dtype=torch.long)
        self._fingerprint = data_fingerprint(run_cfg.data)

    def _rows(self, index: Tensor) -> Tensor:
        rows = torch.searchsorted(self.index, index.detach().cpu())
        if bool((self.index[rows.clamp(max=len(self.index) - 1)] != index.detach().cpu()).any()):
            raise ValueError("a batch contains dataset indices that are not in the training split")
        return rows.to(self.delta.device)

    # ------------------------------------------------------------- step
    def _sam_gradient(self, model, opt, loss_fn, x, y, trainer) -> tuple:
        c = trainer.config
        if self.cfg.bn == "eval":
            with bn_policy(model, "eval"):
                res = sam_step(model, loss_fn, x, y, opt, m=c.optim.m, bn="eval", max_grad_norm=c.train.max_grad_norm,
                               update=False)
        else:
            res = sam_step(model, loss_fn, x, y, opt, m=c.optim.m, bn=c.optim.bn_policy,
                           max_grad_norm=c.train.max_grad_norm, update=False)
        params = [p for p in model.parameters() if p.requires_grad]
        return res, params, [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    def step(self, trainer: Trainer, x, y, index, epoch: int):
        """One training step: SAM gradient, craft the batch's Δ towards it, then update the model(s).

        Returns:
            The SAM step's result for the trainer's model (its metrics are logged as usual).
        """
        cfg = self.cfg
        loss_fn = trainer.loss_fn
        rows = self._rows(index)
        d = self.delta[rows]
        aug = _Augment(x.shape[0], x.shape, self._aug_gen, x.device) if cfg.augment else (lambda t: t)
        x_train = x + d if cfg.train_on_poison else x
        models = [(trainer.model, trainer.optimizer)] + self.extra
        grads = []
        res = None
        for j, (m, opt) in enumerate(models):
            if j > 0:  # the ensemble follows the main model's learning-rate schedule
                for ga, gb in zip(opt.param_groups, trainer.optimizer.param_groups):
                    ga["lr"] = gb["lr"]
            r, params, gp = self._sam_gradient(m, opt, loss_fn, aug(x_train), y, trainer)
            res = r if j == 0 else res
            grads.append((m, params, gp))
        if epoch >= cfg.start_epoch:
            t0 = time.perf_counter()
            new, losses, change = self._craft(grads, loss_fn, x, y, d, aug)
            self.delta[rows] = new
            self.craft_seconds += time.perf_counter() - t0
            self.crafted_batches += 1
            rec = {"kind": "craft", "attempt": trainer.attempt, "epoch": epoch, "step": trainer.step + 1,
                   "losses": losses, "iterations": len(losses), "delta_change": change}
            trainer.log(rec)
            trainer.emit(CraftStep(trainer.run_id, trainer.step + 1, epoch, losses, len(losses), change))
        for _m, opt in models:
            # the SAM gradients are still in .grad: crafting used autograd.grad only
            optimizer_update(opt)
        return res

    def _craft(self, grads, loss_fn, x, y, d0: Tensor, aug) -> tuple[Tensor, list[float], float]:
        cfg = self.cfg
        d = d0.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([d], lr=cfg.lr) if cfg.optimizer == "adam" else torch.optim.SGD([d], lr=cfg.lr)
        losses: list[float] = []
        change = float("nan")
        for _ in range(cfg.iterations):
            total = 0.0
            # BN modes stay on until both backward passes are done: "train" restores the running
            # statistics in place on exit, which the saved BatchNorm nodes must not see
            with contextlib.ExitStack() as stack:
                for m, params, gp in grads:
                    stack.enter_context(_bn_mode(m, cfg.bn))
                    out = m(aug(x + d))
                    loss = loss_fn(out, y)
                    g = torch.autograd.grad(loss, params, create_graph=True)
                    total = total + cosine_loss(list(g), gp, cfg.cosine)
                obj = total  # §6.1: the sum of the m models' cosine losses
                (gd,) = torch.autograd.grad(obj, d)
            losses.append(float(obj.detach()) / len(grads))
            prev = d.detach().clone()
            d.grad = gd
            opt.step()
            with torch.no_grad():
                d.copy_(project(d, x, cfg.epsilon, cfg.norm, cfg.relative))
            change = float((d.detach() - prev).abs().max())
            if change < cfg.tol:
                break
        return d.detach(), losses, change

    # -------------------------------------------------------- epoch end
    def _cos_loss_at(self, model: nn.Module, loss_fn, rho: float, x: Tensor, y: Tensor, d: Tensor | None) -> float:
        """𝓑 at ``model``'s weights: g′ (SAM gradient on the clean batch) vs the gradient on x + d (or x)."""
        params = [p for p in model.parameters() if p.requires_grad]
        with _bn_mode(model, self.cfg.bn):
            g = torch.autograd.grad(loss_fn(model(x), y), params)
        norm = torch.sqrt(sum((a * a).sum() for a in g)) + 1e-12
        backup = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, a in zip(params, g):
                p.add_(a, alpha=rho / float(norm))
        try:
            with _bn_mode(model, self.cfg.bn):
                gp = torch.autograd.grad(loss_fn(model(x), y), params)
        finally:
            with torch.no_grad():
                for p, b in zip(params, backup):
                    p.copy_(b)
        if d is None:
            gq = g
        else:
            with _bn_mode(model, self.cfg.bn):
                gq = torch.autograd.grad(loss_fn(model(x + d), y), params)
        return float(cosine_loss(list(gq), list(gp), self.cfg.cosine))

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> dict:
        """Poison statistics of the epoch (Δ norms, drift of the objective); saves the poison every ``save_every``.

        Returns:
            Metrics added to the epoch record (``delta_*``, ``crafted_batches``, ``craft_seconds``, ``drift``,
            ``poison_cos_loss``, ``clean_cos_loss``).
        """
        cfg = self.cfg
        loss_fn = trainer.loss_fn
        rho = trainer.config.optim.rho
        if epoch in cfg.drift_epochs:
            self.snapshots[epoch] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        out: dict[str, Any] = {}
        flat = self.delta.reshape(self.delta.shape[0], -1).double()
        per = flat.norm(dim=1)
        out.update(delta_frobenius=float(flat.norm()), delta_mean_l2=float(per.mean()),
                   delta_max_l2=float(per.max()), delta_max_abs=float(flat.abs().max()),
                   crafted_batches=self.crafted_batches, craft_seconds=self.craft_seconds)
        if len(self._drift_rows):
            rows = self._drift_rows.to(self.delta.device)
            train = trainer.splits["train"]
            x, y, d = train.x[rows.to(train.x.device)], train.y[rows.to(train.y.device)], self.delta[rows]
            bs = trainer.config.train.batch_size
            batches = [(x[i:i + bs], y[i:i + bs], d[i:i + bs]) for i in range(0, len(x), bs)]
            scratch = copy.deepcopy(trainer.model)
            drift = {}
            for k, state in sorted(self.snapshots.items()):
                scratch.load_state_dict(state)
                drift[str(k)] = sum(self._cos_loss_at(scratch, loss_fn, rho, xb, yb, db)
                                    for xb, yb, db in batches) / len(batches)
            out["drift"] = drift
            # the same objective at the current weights, with and without the poison
            out["poison_cos_loss"] = sum(self._cos_loss_at(trainer.model, loss_fn, rho, xb, yb, db)
                                         for xb, yb, db in batches) / len(batches)
            out["clean_cos_loss"] = sum(self._cos_loss_at(trainer.model, loss_fn, rho, xb, yb, None)
                                        for xb, yb, _ in batches) / len(batches)
        if trainer.artifact_dir is not None and (epoch % cfg.save_every == 0 or epoch == trainer.config.train.epochs):
            self._save(trainer, epoch, "running")
        return out

    def on_end(self, trainer: Trainer, status: str) -> None:
        """Save the final poison into the run's artifacts, marked with the run's ``status``."""
        if trainer.artifact_dir is not None and self.delta is not None:
            self._save(trainer, None, status)

    # ------------------------------------------------------------- state
    def poison(self, trainer: Trainer | None = None) -> Poison:
        """The poison crafted so far (Δ on the CPU, dataset indices, provenance; ``trainer`` adds the run's)."""
        meta = {"kind": "sharpness_aware", "data": self._fingerprint, "poison_config": self.cfg.to_dict(),
                "crafted_batches": self.crafted_batches,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if trainer is not None:
            meta.update(source_run=str(trainer.run_path) if trainer.run_path else None,
                        run_config=trainer.config.to_dict())
        return Poison(delta=self.delta.detach().cpu().clone(), index=self.index.clone(), meta=meta)

    def _save(self, trainer: Trainer, epoch: int | None, status: str) -> None:
        p = self.poison(trainer)
        p.meta.update(epoch=epoch if epoch is not None else trainer.step, status=status)
        self.poison_path = save_poison(p, trainer.artifact_dir / POISON_FILE)

    def state_dict(self) -> dict:
        """Everything a resumed run needs (Δ, drift snapshots, ensemble models, counters, RNG); ``{}`` before setup."""
        if self.delta is None:
            return {}
        return {"delta": self.delta.detach().cpu(), "snapshots": {str(k): v for k, v in self.snapshots.items()},
                "extra": [{"model": m.state_dict(), "optimizer": o.state_dict()} for m, o in self.extra],
                "crafted_batches": self.crafted_batches, "craft_seconds": self.craft_seconds,
                "aug_rng": self._aug_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output after :meth:`setup` (an empty state is ignored)."""
        if not state:
            return
        self.delta = state["delta"].to(self.device)
        self.snapshots = {int(k): v for k, v in state.get("snapshots", {}).items()}
        for (m, o), s in zip(self.extra, state.get("extra", [])):
            m.load_state_dict(s["model"])
            o.load_state_dict(s["optimizer"])
        self.crafted_batches = int(state.get("crafted_batches", 0))
        self.craft_seconds = float(state.get("craft_seconds", 0.0))
        if state.get("aug_rng") is not None:
            self._aug_gen.set_state(state["aug_rng"])


# -------------------------------------------------------------------- entry
@dataclass
class CraftResult:
    """Outcome of :func:`craft_poison`: the crafting run and the poison file."""

    train: TrainResult
    poison_path: Path | None
    poisoner: SharpnessAwarePoisoner

    @property
    def run_path(self) -> Path | None:
        return self.train.run_path


def craft_poison(run_cfg: RunConfig, poison_cfg: PoisonConfig | None = None, *, callbacks=(),
                 probes=(), handle_sigint: bool = True, stop=None) -> CraftResult:
    """Train ``run_cfg`` (SAM or ASAM) while crafting a poison; returns the run and ``artifacts/poison.pt``.

    Args:
        run_cfg: the crafting run (``optim.name`` sam or asam; no ``data.poison``).
        poison_cfg: crafting settings (default :class:`PoisonConfig`).
        callbacks: trainer event callbacks (also receive :class:`CraftStep` events).
        probes: extra probes for the crafting run.
        handle_sigint: on the main thread, turn the first Ctrl-C into a graceful stop (the poison is saved).
        stop: a ``threading.Event``; when set, the run stops after its current step
            (the poison crafted so far is saved).

    Raises:
        ValueError: ``run_cfg`` does not train with SAM/ASAM, or a bad poison setting.
    """
    if not run_cfg.optim.is_sam:
        raise ValueError(f"optim.name={run_cfg.optim.name!r} is invalid for poison crafting: "
                         "the crafting run trains with SAM (choose 'sam' or 'asam')")
    if run_cfg.data.poison:
        raise ValueError("data.poison must be empty for the crafting run (it crafts the poison)")
    poisoner = SharpnessAwarePoisoner(poison_cfg)
    holder: list[Trainer] = []

    def watch(_ev) -> None:
        if stop is not None and stop.is_set() and holder:
            holder[0].stop()

    trainer = Trainer(run_cfg, callbacks=[*callbacks, watch], probes=probes, stepper=poisoner,
                      handle_sigint=handle_sigint)
    holder.append(trainer)
    if stop is not None and stop.is_set():
        trainer.stop()
    res = trainer.run()
    return CraftResult(train=res, poison_path=poisoner.poison_path, poisoner=poisoner)


def poison_config_json(cfg: PoisonConfig) -> str:  # pragma: no cover - convenience
    return json.dumps(cfg.to_dict(), indent=1)
