r"""Victim training for targeted poisoning: from scratch, transfer, fine-tune; with an optional defense.

Scenarios ([Yang 2022, §4.1.1–4.1.3]; the poisoning benchmark [Schwarzschild 2021]):

* ``scratch``  — a freshly initialised network (seed ``VictimConfig.seed``) trained on
  the poisoned training set (the attacker crafted on a *different*, clean pretrained model);
* ``transfer`` — the pretrained network's feature extractor is fixed (eval mode, no
  gradients), its last linear layer is re-initialised and trained (§4.1.2);
* ``finetune`` — the last linear layer is re-initialised and *all* layers are trained (§4.1.3).

The loop is the paper's "proxy" pipeline scaled down: SGD with momentum 0.9 and weight
decay 5e-4, learning rate decayed ×0.1 at 25/40 and 35/40 of the epochs (§4.1), seeded
batch order. A defense (EPIC or a baseline from :mod:`workbench.defenses`) is asked at the
start of every epoch ``defense.maybe_select(model, kept_train, epoch)`` (``epoch`` = number
of epochs completed so far); when it returns dataset indices the victim trains only on
them from then on — drops are permanent (Alg. 1: ``V = V \ Z``), and the victim never
sees a dropped example again.

Attack success ([Yang 2022, §4], benchmark): the trained victim classifies the target ``x_t`` as
the adversarial label ``y_adv``. Test accuracy is measured on the clean test split without
the target.

No UI imports.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..analysis.gradients import find_last_linear
from ..config import ModelConfig
from ..data.poison import Poison, apply_poison
from ..models import build_model
from .common import DiffAugment
from .setup import ThreatSetup

__all__ = ["SCENARIOS", "VictimConfig", "VictimResult", "train_victim", "pretrain", "evaluate_target"]

SCENARIOS = ("scratch", "transfer", "finetune")


@dataclass
class VictimConfig:
    """How the victim trains (defaults: the 40-epoch proxy pipeline of [Yang 2022, §4.1], scaled to small data).

    Attributes:
        scenario: ``scratch``, ``transfer`` or ``finetune``.
        epochs: training epochs.
        lr: initial SGD learning rate; momentum, weight_decay: SGD settings.
        milestones: epoch fractions where the learning rate is multiplied by 0.1 (25/40, 35/40).
        batch_size: examples per step.
        seed: initialisation (scratch; the new head otherwise) and batch order.
        augment: random translation by ``padding`` pixels on training batches.
        padding: translation range for ``augment``.
    """

    scenario: str = "scratch"
    epochs: int = 40
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple = (25 / 40, 35 / 40)
    batch_size: int = 64
    seed: int = 0
    augment: bool = False
    padding: int = 1

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario={self.scenario!r} is invalid: choose one of {', '.join(SCENARIOS)}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs={self.epochs!r} is invalid: must be a positive integer")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r} is invalid: must be a positive number")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} is invalid: must be a positive integer")
        self.milestones = tuple(float(m) for m in self.milestones)
        if any(not 0 < m <= 1 for m in self.milestones):
            raise ValueError(f"milestones={self.milestones!r} is invalid: fractions of the epochs in (0, 1]")

    def to_dict(self) -> dict:
        """The settings as a plain dict (``milestones`` as a list)."""
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d


@dataclass
class VictimResult:
    """A trained victim and how the target fares.

    Attributes:
        model: the trained network.
        history: one row per epoch (epoch, train_loss, kept, test_acc, target_adv_prob, target_pred, seconds).
        target_probs: softmax probabilities of the target ``[C]`` (numpy) after training.
        target_pred: predicted class of the target; adv_prob: probability of ``y_adv``.
        success: ``target_pred == y_adv``.
        test_acc: accuracy on the clean test split without the target.
        seconds: training wall time (defense selection included).
        kept: dataset indices trained on at the end; dropped: rows of the defense's drop log
            (``DataFrame`` or ``None`` without a defense).
        status: ``finished`` or ``stopped``.
    """

    model: nn.Module
    history: pd.DataFrame
    target_probs: Any
    target_pred: int
    adv_prob: float
    success: bool
    test_acc: float
    seconds: float
    kept: Tensor
    dropped: pd.DataFrame | None = None
    status: str = "finished"
    defense_seconds: float = 0.0


def _head(model: nn.Module, x: Tensor) -> nn.Linear:
    return find_last_linear(model, x[:1])[1]


def evaluate_target(model: nn.Module, x_t: Tensor, y_adv: int) -> tuple[Tensor, int, float]:
    """``(probabilities [C], predicted class, p(y_adv))`` of the target under ``model`` in eval mode."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = torch.softmax(model(x_t.to(next(model.parameters()).device)), dim=1)[0].cpu()
    finally:
        model.train(was)
    return p, int(p.argmax()), float(p[int(y_adv)])


def _accuracy(model: nn.Module, ds, exclude: int | None = None, batch_size: int = 1024) -> float:
    dev = next(model.parameters()).device
    keep = torch.ones(len(ds), dtype=torch.bool)
    if exclude is not None:
        keep &= ds.index.cpu() != int(exclude)
    if not keep.any():
        return float("nan")
    x, y = ds.x[keep.to(ds.x.device)], ds.y[keep.to(ds.y.device)]
    was = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            correct += int((model(x[s:s + batch_size].to(dev)).argmax(1).cpu() == y[s:s + batch_size].cpu()).sum())
    model.train(was)
    return correct / len(x)


def _new_model(data, model_cfg: ModelConfig | None, seed: int) -> nn.Module:
    torch.manual_seed(int(seed))
    return build_model(model_cfg or ModelConfig(name="lenet5"), tuple(data.input_shape), data.num_classes)


def pretrain(data, *, model_cfg: ModelConfig | None = None, epochs: int = 40, lr: float = 0.05, seed: int = 0,
             batch_size: int = 64, device: str | torch.device = "cpu",
             stop: threading.Event | None = None) -> nn.Module:
    """A clean model trained from scratch on ``data.train`` (the attacker's crafting model / the transfer base).

    Same loop as :func:`train_victim` with ``scenario="scratch"`` and no poison.
    """
    cfg = VictimConfig(scenario="scratch", epochs=epochs, lr=lr, seed=seed, batch_size=batch_size)
    return train_victim(data, None, cfg, model_cfg=model_cfg, device=device, stop=stop).model


def train_victim(data, poison: Poison | None, cfg: VictimConfig | None = None, *, setup: ThreatSetup | None = None,
                 model_cfg: ModelConfig | None = None, pretrained: nn.Module | dict | None = None, defense=None,
                 on_epoch_end: Callable[[nn.Module, int, dict], None] | None = None,
                 stop: threading.Event | None = None, device: str | torch.device = "cpu",
                 eval_every: int = 1) -> VictimResult:
    """Train a victim on ``data.train`` + Δ (``poison``) in ``cfg.scenario``, optionally with a defense.

    Args:
        data: the :class:`~workbench.data.DataBundle` (clean).
        poison: Δ keyed by dataset index (``None``: the clean run).
        cfg: :class:`VictimConfig`.
        setup: the threat setup (for target metrics per epoch and at the end; optional).
        model_cfg: architecture (default LeNet-5).
        pretrained: the pretrained network (or its ``state_dict``) for ``transfer`` / ``finetune``.
        defense: an object with ``maybe_select(model, train, epoch) -> Tensor | None``
            (dataset indices to keep; see :mod:`workbench.defenses`); ``set_poison_indices``
            is called with the poison's indices when it exists.
        on_epoch_end: ``fn(model, epoch, record)`` after each epoch (model in eval mode; must
            not change it), e.g. to record gradient views.
        stop: a ``threading.Event``; training ends after the current step when set.
        device: device of the training (``"cpu"``, ``"cuda"``, ...).
        eval_every: evaluate the test accuracy every this many epochs (and at the end).

    Returns:
        :class:`VictimResult`.

    Raises:
        ValueError: ``transfer``/``finetune`` without ``pretrained``; a poison that does not fit the data.
    """
    cfg = cfg or VictimConfig()
    dev = torch.device(device)
    t0 = time.perf_counter()
    model = _new_model(data, model_cfg, cfg.seed)
    if cfg.scenario != "scratch":
        if pretrained is None:
            raise ValueError(f"scenario={cfg.scenario!r} needs the pretrained model (pretrained=...)")
        state = pretrained.state_dict() if isinstance(pretrained, nn.Module) else pretrained
        model.load_state_dict(state)
    model = model.to(dev)
    train = apply_poison(data.train, poison) if poison is not None else data.train
    train = train.to(dev)
    head = _head(model, train.x)
    if cfg.scenario != "scratch":  # §4.1.2-4.1.3: the classifier is re-initialised
        torch.manual_seed(cfg.seed + 17)
        head.reset_parameters()
    if cfg.scenario == "transfer":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[int(round(m * cfg.epochs)) for m in cfg.milestones],
                                                 gamma=0.1)
    x_t = y_adv = None
    if setup is not None:
        x_t, y_adv = setup.target(data)
        x_t = x_t.to(dev)
    if defense is not None and poison is not None and hasattr(defense, "set_poison_indices"):
        defense.set_poison_indices(poison.index.clone())
    kept_pos = torch.arange(len(train), device=dev)
    gen = torch.Generator().manual_seed(int(cfg.seed) + 1)
    aug = DiffAugment(cfg.padding, False, torch.Generator().manual_seed(int(cfg.seed) + 2)) if cfg.augment else None
    history, status, defense_seconds = [], "finished", 0.0
    index_dev = train.index
    for epoch in range(cfg.epochs):
        if defense is not None:
            td = time.perf_counter()
            # the full (poisoned) split: the defense keeps its own record of what is still kept
            sel = defense.maybe_select(model, train, epoch)
            model.train()
            if sel is not None:
                sel = torch.as_tensor(sel, dtype=torch.long).to(dev)
                kept_pos = kept_pos[torch.isin(index_dev[kept_pos], sel)]  # drops are permanent
            defense_seconds += time.perf_counter() - td
        # the fixed feature extractor of transfer learning stays in eval mode
        model.train(cfg.scenario != "transfer")
        order = kept_pos[torch.randperm(len(kept_pos), generator=gen).to(dev)]
        total, count = 0.0, 0
        for s in range(0, len(order), cfg.batch_size):
            if stop is not None and stop.is_set():
                status = "stopped"
                break
            b = order[s:s + cfg.batch_size]
            xb, yb = train.x[b], train.y[b]
            if aug is not None:
                aug.draw(len(b))
                xb = aug(xb)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
            count += len(b)
        sched.step()
        rec: dict = {"epoch": epoch + 1, "train_loss": total / max(count, 1), "kept": int(len(kept_pos)),
                     "seconds": time.perf_counter() - t0}
        if (epoch + 1) % eval_every == 0 or epoch + 1 == cfg.epochs or status == "stopped":
            rec["test_acc"] = _accuracy(model, data.test, exclude=setup.target_index if setup else None)
        if x_t is not None:
            _, pred, pa = evaluate_target(model, x_t, y_adv)
            rec.update(target_pred=pred, target_adv_prob=pa)
        model.eval()
        if on_epoch_end is not None:
            on_epoch_end(model, epoch + 1, rec)
        history.append(rec)
        if status == "stopped":
            break
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    seconds = time.perf_counter() - t0
    test_acc = _accuracy(model, data.test, exclude=setup.target_index if setup else None)
    if x_t is not None:
        probs, pred, pa = evaluate_target(model, x_t, y_adv)
    else:
        probs, pred, pa = torch.full((data.num_classes,), float("nan")), -1, float("nan")
    dropped = getattr(defense, "log", None) if defense is not None else None
    return VictimResult(model=model, history=pd.DataFrame(history), target_probs=probs.numpy(), target_pred=pred,
                        adv_prob=pa, success=bool(x_t is not None and pred == y_adv), test_acc=test_acc,
                        seconds=seconds, kept=train.index[kept_pos].cpu(), dropped=dropped, status=status,
                        defense_seconds=defense_seconds)
