"""Effective poisons ([Yang 2022, §3.2]) and the gradient views of [Yang 2022, Figs. 1b and 3a].

*Effective poisons* are the poisons that make the attack succeed: trained with them the
attack succeeds even if all other poisons are removed, and without them the remaining
poisons fail (§3.2: "We tried different combinations of the poisons and identified the
smallest subset of poisons that is responsible for the success of the attack").

* :func:`find_effective_poisons` — the slow, explicit procedure: retrain the victim with
  subsets of the poisons (the others reset to their clean bases) and shrink the set of
  perturbed poisons with the *ddmin* delta-debugging search (Zeller & Hildebrandt 2002)
  under the predicate "the attack succeeds with only these poisons" (1-minimal: removing any
  single poison of it makes it fail; O(k log k) retrains in typical cases). When the other
  poisons still succeed on their own (redundant attacks, typical in transfer learning), a
  minimal responsible subset of *them* is added, until the rest fails: the result E
  succeeds alone and the poisons outside E do not (§3.2's two conditions). Every retrain
  is recorded.
* :func:`poison_target_cosines` — the cheap proxy: ``cos(∇θ ℓ(x_i + Δ_i, y_i), ∇θ ℓ(x_t, y_adv))``
  per poison at a given model (all parameters, or the last layer: [Yang 2022, §3.1] — the alignment
  Eq. 3 asks for), and :func:`proxy_agreement` — how well it ranks the effective poisons
  (ROC AUC, precision at k = number of effective poisons).
* :func:`gradient_pca_frame` (Fig. 1b: last-layer gradients of effective and ineffective
  poisons and of clean target- and poison-class examples on their first two principal
  components, scikit-learn PCA) and :class:`CosineTracker` (Fig. 3a: cosine of effective /
  ineffective poisons' gradients to the target and to each other over the epochs of a
  victim run; a ``train_victim(on_epoch_end=...)`` hook).

No UI imports.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..analysis.gradients import last_layer_gradients, per_example_gradients
from ..data.poison import Poison
from .setup import ThreatSetup
from .victim import VictimConfig, train_victim

__all__ = ["EffectiveResult", "find_effective_poisons", "subset_poison", "poison_target_cosines", "proxy_agreement",
           "gradient_pca_frame", "CosineTracker", "GRADIENT_SPACES"]

GRADIENT_SPACES = ("last", "full")


def subset_poison(poison: Poison, keep: Sequence[int]) -> Poison:
    """The poison restricted to the dataset indices ``keep`` (the other bases stay clean)."""
    keep_t = torch.as_tensor(list(keep), dtype=torch.long)
    mask = torch.isin(poison.index, keep_t)
    return Poison(delta=poison.delta[mask].clone(), index=poison.index[mask].clone(),
                  meta=dict(poison.meta, subset_of=len(poison.index)))


@dataclass
class EffectiveResult:
    """Outcome of :func:`find_effective_poisons`.

    Attributes:
        effective: dataset indices of the (1-minimal) effective subset.
        ineffective: dataset indices of the other poisons.
        full_success: the attack succeeds with all poisons (otherwise nothing is searched).
        effective_only_success: success trained with only the effective poisons perturbed.
        complement_success: success trained with only the ineffective poisons perturbed (should be False).
        retrains: number of victim trainings.
        seconds: wall time.
        log: one row per retrain (step, size, success, adv_prob, phase).
        minimal: the search ended with 1-minimality proved (not cut by ``max_retrains`` / stop).
    """

    effective: list[int]
    ineffective: list[int]
    full_success: bool
    effective_only_success: bool | None
    complement_success: bool | None
    retrains: int
    seconds: float
    log: pd.DataFrame
    minimal: bool = True

    @property
    def fraction_effective(self) -> float:
        """Share of the poisons in the effective subset (NaN without poisons)."""
        n = len(self.effective) + len(self.ineffective)
        return len(self.effective) / n if n else float("nan")


def find_effective_poisons(data, poison: Poison, setup: ThreatSetup, victim: VictimConfig, *, pretrained=None,
                           model_cfg=None, max_retrains: int = 200, order: Sequence[int] | None = None,
                           callback: Callable[[dict], None] | None = None, stop: threading.Event | None = None,
                           device: str = "cpu") -> EffectiveResult:
    """The smallest responsible subset of poisons by retraining with subsets ([Yang 2022, §3.2]; slow).

    Predicate: ``succeeds(S)`` = a victim trained (``victim`` config, fixed seed) on the data
    with only the poisons in ``S`` perturbed classifies the target as ``y_adv``. ddmin:
    split the current set into ``n`` chunks; if a chunk alone succeeds keep it (n = 2);
    else if a complement succeeds keep it (n − 1); else refine (2n) until chunks are
    single poisons. Rounds: E ← E ∪ ddmin(rest) while ``succeeds(rest)`` (rest = poisons
    outside E). Each predicate value is cached.

    Args:
        data: the clean :class:`~workbench.data.DataBundle`.
        poison: the crafted poison (perturbations keyed by dataset index).
        setup: the threat setup (target, adversarial label, poison class).
        victim: the victim's training settings (:class:`VictimConfig`; its seed is fixed for every retrain).
        pretrained: the pretrained network (or its ``state_dict``) for ``transfer`` / ``finetune`` victims.
        model_cfg: the victim's architecture (default LeNet-5, as :func:`train_victim`).
        max_retrains: cap on victim trainings (the result then says ``minimal=False``).
        order: poison indices in the order chunks are cut (e.g. by decreasing proxy score;
            default the poison's order). Any order gives a 1-minimal subset; a good order
            needs fewer retrains.
        callback: receives each log row as a dict.
        stop: when set, the search ends at the next retrain (the result then says ``minimal=False``).
        device: device of the victim trainings.

    Raises:
        ValueError: ``order`` is not a permutation of the poison's indices.
    """
    t0 = time.perf_counter()
    all_idx = [int(i) for i in (order if order is not None else poison.index.tolist())]
    if sorted(all_idx) != sorted(int(i) for i in poison.index.tolist()):
        raise ValueError("order must be a permutation of the poison's dataset indices")
    cache: dict[frozenset, tuple[bool, float]] = {}
    log: list[dict] = []

    def succeeds(sub: Sequence[int], phase: str) -> bool:
        key = frozenset(sub)
        if key in cache:
            return cache[key][0]
        if len(cache) >= max_retrains or (stop is not None and stop.is_set()):
            raise _Budget()
        p = subset_poison(poison, sub) if len(sub) < len(all_idx) else poison
        if len(sub) == 0:
            p = None
        r = train_victim(data, p, victim, setup=setup, model_cfg=model_cfg, pretrained=pretrained, device=device,
                         eval_every=victim.epochs)
        cache[key] = (bool(r.success), float(r.adv_prob))
        row = {"step": len(cache), "size": len(sub), "success": bool(r.success), "adv_prob": float(r.adv_prob),
               "phase": phase, "seconds": time.perf_counter() - t0}
        log.append(row)
        if callback is not None:
            callback(row)
        return bool(r.success)

    minimal = True
    try:
        full = succeeds(all_idx, "full")
    except _Budget:
        full = False
    if not full:
        return EffectiveResult([], all_idx, False, None, None, len(cache), time.perf_counter() - t0,
                               pd.DataFrame(log), minimal=False)

    def ddmin(current: list[int], rnd: int) -> list[int]:
        n = 2
        while len(current) >= 2:
            chunks = [c.tolist() for c in np.array_split(np.asarray(current), min(n, len(current))) if len(c)]
            reduced = False
            for c in chunks:
                if succeeds(c, f"round {rnd}: subset"):
                    current, n, reduced = c, 2, True
                    break
            if not reduced and len(chunks) > 2:
                for c in chunks:
                    cs = set(c)
                    comp = [i for i in current if i not in cs]
                    if succeeds(comp, f"round {rnd}: complement"):
                        current, n, reduced = comp, max(len(chunks) - 1, 2), True
                        break
            if not reduced:
                if len(chunks) >= len(current):
                    break
                n = min(2 * len(chunks), len(current))
        return current

    eff: set[int] = set()
    rnd = 0
    try:
        # a 1-minimal responsible subset; while the other poisons still succeed on their own,
        # add a minimal responsible subset of them (the attack can be redundant, e.g. in transfer)
        rest = list(all_idx)
        while True:
            eff |= set(ddmin(rest, rnd))
            rest = [i for i in all_idx if i not in eff]
            rnd += 1
            if not rest or not succeeds(rest, f"round {rnd}: rest"):
                break
        ineff = [i for i in all_idx if i not in eff]
        eff_only = succeeds(sorted(eff), "verify effective only")
        comp_ok = succeeds(ineff, "verify rest") if ineff else False
    except _Budget:
        minimal = False
        ineff = [i for i in all_idx if i not in eff]
        eff_only = cache.get(frozenset(eff), (None,))[0]
        comp_ok = cache.get(frozenset(ineff), (None,))[0]
    return EffectiveResult(sorted(eff), sorted(ineff), True, eff_only, comp_ok, len(cache), time.perf_counter() - t0,
                           pd.DataFrame(log), minimal=minimal)


class _Budget(Exception):
    pass


# ------------------------------------------------------------------ gradients
def _poisoned_examples(data, poison: Poison, setup: ThreatSetup) -> tuple[Tensor, Tensor, Tensor]:
    """``(x_i + Δ_i, y_i, index)`` of the poisons, in ``setup.poison_indices`` order."""
    rows = setup.poison_rows(data.train)
    x = data.train.x[rows].clone()
    mask, d = poison.rows_for(data.train.index[rows].cpu())
    x[mask] = x[mask] + d.to(x.dtype)
    return x, data.train.y[rows], data.train.index[rows].cpu()


def _grads(model: nn.Module, x: Tensor, y: Tensor, space: str) -> Tensor:
    if space == "last":
        return last_layer_gradients(model, (x, y), "weights").double()
    if space == "full":
        return per_example_gradients(model, (x, y)).double()
    raise ValueError(f"space={space!r} is invalid: choose one of {', '.join(GRADIENT_SPACES)}")


def poison_target_cosines(model: nn.Module, data, poison: Poison, setup: ThreatSetup, *,
                          space: str = "full") -> pd.DataFrame:
    """Per poison: ``cos(∇θ ℓ(x_i + Δ_i, y_i), ∇θ ℓ(x_t, y_adv))`` at ``model`` (eval mode, unchanged).

    Args:
        model: the network whose gradients are compared (eval mode, not modified).
        data: the clean :class:`~workbench.data.DataBundle`.
        poison: the crafted poison.
        setup: the threat setup (target and adversarial label ``y_adv``).
        space: ``"full"`` (all parameters; exact per-example gradients) or ``"last"`` (the last
            linear layer's weight and bias gradient).

    Returns:
        DataFrame with ``index`` (dataset index), ``cosine``, ``clean_cosine`` (the same for the
        clean base x_i), ``grad_norm``.
    """
    x, y, idx = _poisoned_examples(data, poison, setup)
    x_t, y_adv = setup.target(data)
    G = _grads(model, x, y, space)
    G0 = _grads(model, data.train.x[setup.poison_rows(data.train)], y, space)
    gt = _grads(model, x_t, torch.tensor([y_adv]), space)[0]
    cos = (G @ gt) / (G.norm(dim=1) * gt.norm()).clamp_min(1e-30)
    cos0 = (G0 @ gt) / (G0.norm(dim=1) * gt.norm()).clamp_min(1e-30)
    return pd.DataFrame({"index": idx.numpy(), "cosine": cos.numpy(), "clean_cosine": cos0.numpy(),
                         "grad_norm": G.norm(dim=1).numpy()})


def proxy_agreement(cosines: pd.DataFrame, effective: Sequence[int]) -> dict:
    """How well the proxy (higher cosine = more likely effective) ranks the effective poisons.

    Returns:
        ``{"auc": ROC AUC (NaN if one class is empty), "precision_at_k": fraction of the k
        highest-cosine poisons that are effective (k = number of effective poisons),
        "k", "n", "mean_cos_effective", "mean_cos_ineffective"}``.
    """
    from sklearn.metrics import roc_auc_score

    eff = np.isin(cosines["index"].to_numpy(), np.asarray(list(effective), dtype=np.int64))
    s = cosines["cosine"].to_numpy()
    k = int(eff.sum())
    auc = float(roc_auc_score(eff, s)) if 0 < k < len(eff) else float("nan")
    top = np.argsort(-s)[:k]
    return {"auc": auc, "precision_at_k": float(eff[top].mean()) if k else float("nan"), "k": k, "n": int(len(eff)),
            "mean_cos_effective": float(s[eff].mean()) if k else float("nan"),
            "mean_cos_ineffective": float(s[~eff].mean()) if k < len(eff) else float("nan")}


def _groups(idx: np.ndarray, effective: set, default: str) -> list[str]:
    return ["effective poison" if int(i) in effective else default for i in idx]


def gradient_pca_frame(model: nn.Module, data, poison: Poison, setup: ThreatSetup, *,
                       effective: Sequence[int] | None = None, n_clean: int = 200, seed: int = 0,
                       kind: str = "weights") -> tuple[pd.DataFrame, np.ndarray]:
    """[Yang 2022, Fig. 1b]: last-layer gradients of poisons and clean examples on their first two PCs.

    Points: the poisons (``effective poison`` / ``ineffective poison``, or ``poison`` when
    ``effective`` is ``None``), up to ``n_clean`` clean training examples of the target class
    and of the poison class (seeded draw), and the target with label y_adv (``target``).
    Gradients: :func:`~workbench.analysis.gradients.last_layer_gradients` of ``kind``
    (``weights``: the last layer's weight gradient; ``logits``; ``last_input``).

    Returns:
        ``(frame, explained_variance_ratio)``: frame columns ``pc1, pc2, group, index, label``.
    """
    from ..analysis.projections import pca

    x_p, y_p, idx_p = _poisoned_examples(data, poison, setup)
    eff = set(int(i) for i in effective) if effective is not None else None
    g = np.random.default_rng(seed)
    tr = data.train
    pois = set(setup.poison_indices)
    parts_x, parts_y, index = [x_p], [y_p], list(idx_p.numpy())
    groups = _groups(idx_p.numpy(), eff, "ineffective poison") if eff is not None else ["poison"] * len(idx_p)
    for cls, name in ((setup.target_class, "clean target class"), (setup.poison_class, "clean poison class")):
        cand = [int(i) for i, (yy, ii) in enumerate(zip(tr.y.tolist(), tr.index.tolist()))
                if yy == cls and ii not in pois]
        take = np.sort(g.choice(cand, size=min(n_clean, len(cand)), replace=False))
        parts_x.append(tr.x[take])
        parts_y.append(tr.y[take])
        groups += [name] * len(take)
        index += tr.index[take].tolist()
    x_t, y_adv = setup.target(data)
    parts_x.append(x_t)
    parts_y.append(torch.tensor([y_adv]))
    groups.append("target")
    index.append(setup.target_index)
    X, Y = torch.cat(parts_x), torch.cat(parts_y)
    G = last_layer_gradients(model, (X, Y), kind)
    res = pca(G.double(), 2, groups=groups, labels=Y.numpy(), index=np.asarray(index), seed=seed,
              source=f"gradients:{kind}")
    frame = pd.DataFrame({"pc1": res.coords[:, 0], "pc2": res.coords[:, 1], "group": groups,
                          "index": np.asarray(index), "label": Y.numpy()})
    return frame, res.explained_variance_ratio


class CosineTracker:
    """[Yang 2022, Fig. 3a]: cosine of effective / ineffective poisons to the target and to each other, per epoch.

    Use as ``train_victim(..., on_epoch_end=tracker)``; afterwards :meth:`frame` gives one row
    per (epoch, series) with ``mean`` and ``se`` over poisons (or pairs). Series:
    ``effective → target``, ``ineffective → target``, ``effective ↔ effective``,
    ``ineffective ↔ ineffective`` (mean pairwise cosine among distinct poisons).

    Args:
        data: the clean :class:`~workbench.data.DataBundle` of the poisoned trial.
        poison: its crafted poison.
        setup: its threat setup.
        effective: dataset indices of the effective poisons (e.g. from
            :func:`find_effective_poisons`, or the proxy's top-k).
        space: gradient space (``"last"``: last-layer weights; ``"full"``: all parameters).
        every: record every this many epochs (and epoch 1).
    """

    def __init__(self, data, poison: Poison, setup: ThreatSetup, effective: Sequence[int], *, space: str = "last",
                 every: int = 1):
        self.data, self.poison, self.setup, self.space, self.every = data, poison, setup, space, max(1, int(every))
        self.x, self.y, self.idx = _poisoned_examples(data, poison, setup)
        self.x_t, self.y_adv = setup.target(data)
        self.eff = np.isin(self.idx.numpy(), np.asarray(list(effective), dtype=np.int64))
        self.rows: list[dict] = []

    def __call__(self, model: nn.Module, epoch: int, record: dict | None = None) -> None:
        """Record the cosines at ``model`` after ``epoch`` (epoch 1 and every ``every``-th; ``record`` unused)."""
        if epoch != 1 and epoch % self.every:
            return
        dev = next(model.parameters()).device
        G = _grads(model, self.x.to(dev), self.y.to(dev), self.space)
        gt = _grads(model, self.x_t.to(dev), torch.tensor([self.y_adv], device=dev), self.space)[0]
        Gn = G / G.norm(dim=1, keepdim=True).clamp_min(1e-30)
        ct = (Gn @ (gt / gt.norm().clamp_min(1e-30))).numpy()
        C = (Gn @ Gn.T).numpy()
        for name, m in (("effective", self.eff), ("ineffective", ~self.eff)):
            if m.sum() == 0:
                continue
            v = ct[m]
            self.rows.append({"epoch": epoch, "series": f"{name} → target", "mean": float(v.mean()),
                              "se": float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")})
            sub = C[np.ix_(m, m)]
            iu = np.triu_indices(int(m.sum()), 1)
            if len(iu[0]):
                pv = sub[iu]
                self.rows.append({"epoch": epoch, "series": f"{name} ↔ {name}", "mean": float(pv.mean()),
                                  "se": float(pv.std(ddof=1) / math.sqrt(len(pv))) if len(pv) > 1 else float("nan")})

    def frame(self) -> pd.DataFrame:
        """The recorded rows: columns ``epoch``, ``series``, ``mean``, ``se`` (standard error)."""
        return pd.DataFrame(self.rows, columns=["epoch", "series", "mean", "se"])
