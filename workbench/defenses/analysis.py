"""Data behind the EPIC views of [Yang 2022, Figs. 2, 3b, 3c, 4–5].

* :func:`cluster_size_fractions` — fraction of clean vs poison examples in gradient
  clusters of each size at chosen rounds (Figs. 4–5: effective poisons are isolated
  as clusters of size 1, clean examples form large clusters).
* :func:`cumulative_drops` — cumulative fraction of poisons (optionally split into
  effective / ineffective) and of clean examples dropped after every round, joined with
  the test error of the run (Fig. 3b).
* :func:`kept_vs_random_gradient_difference` and :class:`GradientDifferenceProbe` —
  ``‖∇L_kept − ∇L_V‖`` against ``‖∇L_R − ∇L_V‖`` for random subsets ``R`` of the same
  size, ``V`` the full training set (Fig. 3c: EPIC keeps the main gradient components,
  which is what Theorem 3.1's error ``ρ`` measures).
* :func:`drop_rates` — fraction of (effective) poisons dropped vs fraction of all examples
  dropped, per defense and round (Fig. 2: EPIC vs lowest confidence / highest loss).

Gradients ``∇L_S`` are, by default, *summed* per-example cross-entropy gradients over ``S``
(the paper's training loss ``L(θ) = Σ_{i∈V} L_i(θ)``, §3 Eq. (2), whose gradient change ``ρ``
Theorem 3.1 bounds); ``reduction="mean"`` uses averages instead. Model in eval mode
(BatchNorm running statistics), left unchanged.

No UI imports.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..analysis.common import eval_mode, model_device, preserved_state
from ..analysis.gradients import last_layer_gradients
from ..training.trainer import Probe
from .base import SelectionDefense

__all__ = ["SIZE_BINS", "cluster_size_fractions", "cumulative_drops", "kept_vs_random_gradient_difference",
           "GradientDifferenceProbe", "drop_rates", "GRADIENT_SPACES"]

#: Cluster-size bins ``(low, high, label)`` (inclusive) for :func:`cluster_size_fractions`.
SIZE_BINS = ((1, 1, "1"), (2, 2, "2"), (3, 4, "3–4"), (5, 8, "5–8"), (9, 16, "9–16"), (17, 32, "17–32"),
             (33, 64, "33–64"), (65, 10 ** 12, ">64"))
GRADIENT_SPACES = ("last_layer", "full")


def _as_index(indices) -> Tensor:
    if indices is None:
        return torch.zeros(0, dtype=torch.long)
    if isinstance(indices, Tensor):
        return indices.detach().cpu().long().reshape(-1)
    return torch.as_tensor(np.asarray(list(indices), dtype=np.int64)).reshape(-1)


def _groups(index: Tensor, poison: Tensor, effective: Tensor | None) -> np.ndarray:
    g = np.full(len(index), "clean", dtype=object)
    is_p = torch.isin(index, poison).numpy()
    g[is_p] = "poison"
    if effective is not None and len(effective):
        is_e = torch.isin(index, effective).numpy()
        g[is_p & ~is_e] = "ineffective poison"
        g[is_e & is_p] = "effective poison"
    return g


def cluster_size_fractions(defense: SelectionDefense, *, epochs: Iterable[int] | None = None, effective=None,
                           bins: Sequence[tuple[int, int, str]] = SIZE_BINS) -> pd.DataFrame:
    """Fraction of each group's examples that sit in gradient clusters of each size ([Yang 2022, Figs. 4–5]).

    Args:
        defense: an :class:`~workbench.defenses.EPIC` after training (uses ``defense.clusters``,
            the cluster size of every kept example at every round, and ``poison_indices``).
        epochs: rounds to report, by epoch (default: all rounds).
        effective: dataset indices of the effective poisons (§3.2), to split poisons into
            effective / ineffective; None: one ``poison`` group.
        bins: cluster-size bins ``(low, high, label)``, inclusive.

    Returns:
        DataFrame with one row per (epoch, group, bin): ``epoch, round, group, size_bin,
        bin_order, count, group_total, fraction`` (``fraction = count / group_total``; groups
        are ``clean``, ``poison`` or ``effective poison`` / ``ineffective poison``, counted
        among the examples still kept at that round).

    Raises:
        ValueError: the defense recorded no clusters (not EPIC, or no round yet), or an
            asked-for epoch had no round.
    """
    if not defense.clusters:
        raise ValueError("the defense recorded no gradient clusters: run EPIC for at least one round")
    by_epoch = {int(c["epoch"]): c for c in defense.clusters}
    want = sorted(by_epoch) if epochs is None else [int(e) for e in epochs]
    missing = [e for e in want if e not in by_epoch]
    if missing:
        raise ValueError(f"no EPIC round at epochs {missing}; rounds happened at {sorted(by_epoch)}")
    eff = None if effective is None else _as_index(effective)
    rows = []
    for e in want:
        c = by_epoch[e]
        index, size = _as_index(c["index"]), torch.as_tensor(c["cluster_size"]).numpy()
        groups = _groups(index, defense.poison_indices, eff)
        for gname in [g for g in ("clean", "poison", "ineffective poison", "effective poison") if (groups == g).any()]:
            m = groups == gname
            total = int(m.sum())
            for order, (lo, hi, label) in enumerate(bins):
                cnt = int(((size >= lo) & (size <= hi) & m).sum())
                rows.append({"epoch": e, "round": int(c["round"]), "group": gname, "size_bin": label,
                             "bin_order": order, "count": cnt, "group_total": total,
                             "fraction": cnt / total if total else float("nan")})
    return pd.DataFrame(rows)


def cumulative_drops(defense: SelectionDefense, n_train: int, *, effective=None,
                     metrics: pd.DataFrame | Sequence[Mapping] | None = None) -> pd.DataFrame:
    """Cumulative fraction of poisons and clean examples dropped after every round ([Yang 2022, Fig. 3b]).

    Args:
        defense: a defense after training (``rounds``, ``log``, ``poison_indices``).
        n_train: size of the (poisoned) training set ``|V|`` at the start.
        effective: effective-poison indices; when given, ``frac_effective`` and
            ``frac_ineffective`` columns are added.
        metrics: the run's epoch records (``RunData.epochs`` or ``TrainResult.history``) with
            ``epoch`` and ``test_acc``; adds ``test_error`` (1 − accuracy of the epoch record at
            the round's epoch, NaN when that epoch was not evaluated).

    Returns:
        DataFrame, one row per round: ``round, epoch, frac_poison, frac_clean`` (+ effective
        columns, ``test_error``); fractions in [0, 1] of each group's initial size.
    """
    log = defense.log
    poison = defense.poison_indices
    n_p = len(poison)
    n_c = int(n_train) - n_p
    eff = None if effective is None else _as_index(effective)
    rows = []
    for r in defense.rounds:
        done = log[log["round"] <= r["round"]]
        dropped = _as_index(done["index"].to_numpy())
        is_p = torch.isin(dropped, poison)
        row = {"round": r["round"], "epoch": r["epoch"],
               "frac_poison": float(is_p.sum()) / n_p if n_p else float("nan"),
               "frac_clean": float((~is_p).sum()) / n_c if n_c else float("nan")}
        if eff is not None:
            is_e = torch.isin(dropped, eff)
            n_e = int(torch.isin(eff, poison).sum())
            row["frac_effective"] = float(is_e.sum()) / n_e if n_e else float("nan")
            row["frac_ineffective"] = float((is_p & ~is_e).sum()) / (n_p - n_e) if n_p > n_e else float("nan")
        rows.append(row)
    df = pd.DataFrame(rows)
    if metrics is not None and len(df):
        m = pd.DataFrame(list(metrics) if not isinstance(metrics, pd.DataFrame) else metrics)
        if "test_acc" in m.columns:
            acc = m.dropna(subset=["test_acc"]).drop_duplicates("epoch", keep="last").set_index("epoch")["test_acc"]
            df["test_error"] = [1.0 - float(acc[e]) if e in acc.index else float("nan") for e in df["epoch"]]
    return df


def _subset_gradients_full(model: nn.Module, x: Tensor, y: Tensor, subsets: Sequence[Tensor], batch_size: int,
                           mean: bool) -> Tensor:
    dev = model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    with preserved_state(model), eval_mode(model):
        for pos in subsets:
            acc = [torch.zeros_like(p) for p in params]
            for s in range(0, len(pos), batch_size):
                b = pos[s:s + batch_size]
                loss = F.cross_entropy(model(x[b.to(x.device)].to(dev)), y[b.to(y.device)].to(dev), reduction="sum")
                gs = torch.autograd.grad(loss, params)
                for a, g in zip(acc, gs):
                    a += g
            g = torch.cat([a.reshape(-1) for a in acc]).double().cpu()
            out.append(g / max(len(pos), 1) if mean else g)
    return torch.stack(out)


def kept_vs_random_gradient_difference(model: nn.Module, train, kept_indices, *, n_random: int = 10, seed: int = 0,
                                       space: str = "last_layer", reduction: str = "sum",
                                       batch_size: int = 512) -> pd.DataFrame:
    """Gradient error of the kept subset vs random subsets of the same size ([Yang 2022, Fig. 3c]).

    For the full (poisoned) training set ``V`` and a subset ``S``, reports
    ``‖∇L_S − ∇L_V‖₂`` with ``∇L_S = Σ_{i∈S} ∇_θ ℓ(x_i, y_i)`` (``reduction="sum"``, the
    paper's loss; then ``∇L_S − ∇L_V = −Σ_{dropped} ∇ℓ_i``: isolated, scattered gradients
    largely cancel, randomly removed ones share the mean direction) or the mean over ``S``
    (``"mean"``: random subsets are then unbiased), for ``S`` = the kept set and for
    ``n_random`` uniformly random subsets of the same size (seeded).

    Args:
        model: the model (eval mode inside, left unchanged).
        train: the full training split (IndexedTensorDataset).
        kept_indices: dataset indices of the kept examples.
        n_random: number of random subsets.
        seed: seed of the random subsets.
        space: ``"last_layer"`` — gradients of the last linear layer's weights and bias,
            from per-example gradients in one inference pass (exact for that layer);
            ``"full"`` — all trainable parameters (one backward pass per subset).
        reduction: ``"sum"`` (default) or ``"mean"`` gradients over a subset.
        batch_size: examples per pass.

    Returns:
        DataFrame: ``subset`` (``"kept"`` / ``"random"``), ``trial``, ``size``, ``grad_diff``
        (‖∇L_S − ∇L_V‖), ``relative`` (divided by ‖∇L_V‖).

    Raises:
        ValueError: unknown ``space``, empty or unknown kept indices, ``n_random < 1``.
    """
    if space not in GRADIENT_SPACES:
        raise ValueError(f"space={space!r} is invalid: choose one of {', '.join(map(repr, GRADIENT_SPACES))}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction={reduction!r} is invalid: choose 'sum' or 'mean'")
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
        raise ValueError(f"n_random={n_random!r} is invalid: must be a positive integer")
    index = train.index.detach().cpu()
    kept = _as_index(kept_indices)
    pos_kept = torch.nonzero(torch.isin(index, kept)).squeeze(1)
    if len(pos_kept) == 0 or len(pos_kept) != len(torch.unique(kept)):
        raise ValueError(f"kept_indices must be non-empty dataset indices of the training split "
                         f"({len(pos_kept)} of {len(torch.unique(kept))} found)")
    n, m = len(index), len(pos_kept)
    g = torch.Generator().manual_seed(int(seed))
    randoms = [torch.sort(torch.randperm(n, generator=g)[:m]).values for _ in range(n_random)]
    if space == "last_layer":
        G = last_layer_gradients(model, (train.x, train.y), "weights", batch_size=batch_size).double()
        red = (lambda A: A.mean(0)) if reduction == "mean" else (lambda A: A.sum(0))
        means = torch.stack([red(G), red(G[pos_kept])] + [red(G[r]) for r in randoms])
    else:
        means = _subset_gradients_full(model, train.x, train.y, [torch.arange(n), pos_kept] + randoms, batch_size,
                                       reduction == "mean")
    full = means[0]
    diffs = (means[1:] - full).norm(dim=1)
    fn = float(full.norm())
    rows = [{"subset": "kept" if i == 0 else "random", "trial": max(i - 1, 0), "size": m,
             "grad_diff": float(d), "relative": float(d) / fn if fn > 0 else float("nan")}
            for i, d in enumerate(diffs)]
    return pd.DataFrame(rows)


class GradientDifferenceProbe(Probe):
    """Trainer probe recording Fig. 3c's gradient differences at epoch ends while a defense is active.

    Values (a ``probe`` record named ``gradient_difference``): ``kept`` (‖∇L_kept − ∇L_V‖),
    ``random_mean``, ``random_std`` (over ``n_random`` random subsets of the same size),
    ``relative_kept``, ``relative_random``, ``size``. Before the defense's first round
    (everything kept) it records nothing.

    Args:
        defense: the defense passed to the same trainer.
        every: epochs between measurements.
        n_random, seed, space, reduction, batch_size: as in :func:`kept_vs_random_gradient_difference`.
    """

    name = "gradient_difference"

    def __init__(self, defense: SelectionDefense, every: int = 1, *, n_random: int = 10, seed: int = 0,
                 space: str = "last_layer", reduction: str = "sum", batch_size: int = 512):
        super().__init__(every)
        self.defense, self.n_random, self.seed, self.space, self.batch_size = defense, n_random, seed, space, batch_size
        self.reduction = reduction

    def setup(self, trainer) -> None:
        """Keep a reference to the run's (possibly poisoned) training set."""
        self._train = trainer.bundle.train

    def measure(self, model: nn.Module, trainer) -> dict:
        """Gradient difference of the kept subset vs random subsets of the same size (``{}`` before a round)."""
        if self.defense.kept_indices is None:
            return {}
        df = kept_vs_random_gradient_difference(model, self._train, self.defense.kept_indices,
                                                n_random=self.n_random, seed=self.seed, space=self.space,
                                                reduction=self.reduction, batch_size=self.batch_size)
        k, r = df[df["subset"] == "kept"].iloc[0], df[df["subset"] == "random"]
        return {"kept": float(k["grad_diff"]), "random_mean": float(r["grad_diff"].mean()),
                "random_std": float(r["grad_diff"].std(ddof=0)), "relative_kept": float(k["relative"]),
                "relative_random": float(r["relative"].mean()), "size": int(k["size"])}


def drop_rates(defenses: Mapping[str, SelectionDefense], n_train: int, *, effective=None) -> pd.DataFrame:
    """Fraction of (effective) poisons dropped vs fraction of all examples dropped ([Yang 2022, Fig. 2]).

    Args:
        defenses: label → defense after training (e.g. ``{"EPIC-0.2": epic, "loss 10%": ...}``).
        n_train: initial training-set size.
        effective: effective-poison indices (default: all of each defense's poisons).

    Returns:
        DataFrame, one row per defense and round plus a starting row at 0: ``defense, round,
        epoch, frac_all, frac_target`` where ``frac_target`` is the cumulative fraction of the
        effective poisons (or of all poisons) dropped, and ``frac_clean``.
    """
    rows = []
    for label, d in defenses.items():
        target = _as_index(effective) if effective is not None else d.poison_indices
        n_t = len(target)
        n_c = int(n_train) - len(d.poison_indices)
        log = d.log
        rows.append({"defense": label, "round": -1, "epoch": np.nan, "frac_all": 0.0, "frac_target": 0.0,
                     "frac_clean": 0.0})
        for r in d.rounds:
            dropped = _as_index(log.loc[log["round"] <= r["round"], "index"].to_numpy())
            is_t = torch.isin(dropped, target)
            is_p = torch.isin(dropped, d.poison_indices)
            rows.append({"defense": label, "round": r["round"], "epoch": r["epoch"],
                         "frac_all": len(dropped) / n_train, "frac_target": float(is_t.sum()) / n_t if n_t else np.nan,
                         "frac_clean": float((~is_p).sum()) / n_c if n_c else np.nan})
    return pd.DataFrame(rows)
