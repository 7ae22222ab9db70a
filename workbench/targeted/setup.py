"""Threat setups for targeted clean-label poisoning, in the poisoning-benchmark format.

A :class:`ThreatSetup` says *who* is attacked and *with what*: one target example
``x_t`` (by dataset index, from the test split) of class ``target_class`` that the
attacker wants classified as ``poison_class`` (= ``y_adv``, the adversarial label);
the poisons are clean training examples of that class (the *base* class, so the
poisons keep their correct labels: clean-label) whose dataset indices are
``poison_indices``; ``budget`` is their number as a fraction of the training set and
``epsilon`` the ℓ∞ bound of each perturbation on the [0, 1] pixel scale (8/255, 16/255).

Sources: [Yang 2022, §3] (Eq. 1: ``C = {δ : ‖δ‖∞ ≤ ε, δ_i = 0 ∀ i ∉ V_p}``;
§4.1.1: 1 % of the training set, ε = 8/255), [Murphy 2025, §2.5] (Eq. 2.9);
the setup fields follow the poisoning benchmark ([Schwarzschild 2021], "Just How
Toxic is Data Poisoning?": ``target class``, ``target index``, ``base class``,
``base indices``).

Inputs are normalised per channel (``(x − mean_c) / std_c``, :mod:`workbench.data`), so
the pixel-scale ε becomes ``ε / std_c`` per channel and the [0, 1] pixel box becomes
``[(0 − mean_c)/std_c, (1 − mean_c)/std_c]``; :class:`PixelBox` does both projections in
that space (the Witches' Brew pitfall: project in pixel space, not on normalised values).

No UI imports.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["ThreatSetup", "make_setups", "save_setups", "load_setups", "PixelBox", "SETUP_FORMAT"]

SETUP_FORMAT = 1


@dataclass
class ThreatSetup:
    """One targeted clean-label poisoning trial (poisoning-benchmark fields plus budget and ε).

    Attributes:
        target_class: label of the target example ``x_t`` (its true class).
        target_index: dataset index of ``x_t`` (in ``target_split``).
        poison_class: the adversarial label ``y_adv``; also the base class of the poisons.
        poison_indices: dataset indices of the poisons (training split, all of ``poison_class``).
        budget: number of poisons as a fraction of the training set (``len(poison_indices) / n_train``).
        epsilon: ℓ∞ bound on the [0, 1] pixel scale (e.g. ``8/255``).
        seed: seed the setup was drawn with (``None`` for a hand-made setup).
        trial: trial number within a study.
        target_split: split holding the target (``"test"``).
    """

    target_class: int
    target_index: int
    poison_class: int
    poison_indices: list[int]
    budget: float
    epsilon: float
    seed: int | None = None
    trial: int = 0
    target_split: str = "test"

    def __post_init__(self) -> None:
        if self.target_class == self.poison_class:
            raise ValueError(f"poison_class={self.poison_class!r} is invalid: the adversarial label must differ "
                             f"from the target's class ({self.target_class})")
        self.poison_indices = [int(i) for i in self.poison_indices]
        if not self.poison_indices:
            raise ValueError("poison_indices is empty: a setup needs at least one poison")
        if len(set(self.poison_indices)) != len(self.poison_indices):
            raise ValueError("poison_indices must be unique dataset indices")
        if not (isinstance(self.epsilon, (int, float)) and 0 < self.epsilon <= 1):
            raise ValueError(f"epsilon={self.epsilon!r} is invalid: an l_inf bound on the [0, 1] pixel scale in (0, 1]")
        if not (isinstance(self.budget, (int, float)) and 0 < self.budget <= 1):
            raise ValueError(f"budget={self.budget!r} is invalid: a fraction of the training set in (0, 1]")
        if self.target_split not in ("train", "val", "test"):
            raise ValueError(f"target_split={self.target_split!r} is invalid: choose 'train', 'val' or 'test'")

    @property
    def adversarial_label(self) -> int:
        """``y_adv`` (= ``poison_class``)."""
        return self.poison_class

    @property
    def num_poisons(self) -> int:
        """Number of poisoned training examples."""
        return len(self.poison_indices)

    def to_dict(self) -> dict:
        """The setup as a plain dict (field name → value); :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    def to_benchmark(self) -> dict:
        """The poisoning-benchmark record (``target class``, ``target index``, ``base class``, ``base indices``)."""
        return {"target class": self.target_class, "target index": self.target_index,
                "base class": self.poison_class, "base indices": list(self.poison_indices)}

    @classmethod
    def from_dict(cls, d: dict) -> "ThreatSetup":
        """A setup from :meth:`to_dict`'s keys or the poisoning benchmark's (``target class``, ``base indices``, ...).

        Raises:
            ValueError: an unknown key.
        """
        if "base indices" in d:  # benchmark keys
            d = {"target_class": d["target class"], "target_index": d["target index"],
                 "poison_class": d["base class"], "poison_indices": d["base indices"],
                 **{k: v for k, v in d.items() if " " not in k}}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown setup key(s) {unknown}: choose from {sorted(known)}")
        return cls(**d)

    # ------------------------------------------------------------- data access
    def target(self, bundle) -> tuple[Tensor, int]:
        """``(x_t [1, *input_shape], y_adv)`` from ``bundle``'s ``target_split``.

        Raises:
            ValueError: the target index is not in that split, or its label is not ``target_class``.
        """
        split = getattr(bundle, self.target_split)
        pos = torch.nonzero(split.index.cpu() == self.target_index).flatten()
        if len(pos) != 1:
            raise ValueError(f"target_index={self.target_index} is not in the {self.target_split} split")
        p = int(pos[0])
        if int(split.y[p]) != self.target_class:
            raise ValueError(f"target_index={self.target_index} has label {int(split.y[p])}, "
                             f"not target_class={self.target_class}")
        return split.x[p:p + 1], self.poison_class

    def poison_rows(self, train) -> Tensor:
        """Positions of ``poison_indices`` in the training split ``train`` (same order).

        Raises:
            ValueError: an index is not in the split, or a poison is not of ``poison_class`` (not clean-label).
        """
        idx = train.index.cpu()
        order = torch.argsort(idx)
        want = torch.as_tensor(self.poison_indices, dtype=torch.long)
        pos = torch.searchsorted(idx[order], want).clamp(max=len(idx) - 1)
        rows = order[pos]
        missing = want[idx[rows] != want]
        if len(missing):
            raise ValueError(f"poison indices {missing[:5].tolist()} are not in the training split")
        labels = train.y.cpu()[rows]
        if bool((labels != self.poison_class).any()):
            raise ValueError(f"every poison must be a training example of poison_class={self.poison_class} "
                             f"(clean-label); found labels {sorted(set(labels.tolist()))}")
        return rows


def make_setups(bundle, n: int, *, budget: float = 0.01, epsilon: float = 8 / 255, seed: int = 0,
                target_class: int | None = None, poison_class: int | None = None,
                target_split: str = "test") -> list[ThreatSetup]:
    """Draw ``n`` seeded setups as the poisoning benchmark does.

    For trial ``k`` (generator seeded with ``(seed, k)``): a target class (or ``target_class``),
    a target uniformly among the ``target_split`` examples of that class, an adversarial
    class different from it (or ``poison_class``), and ``max(1, round(budget · n_train))``
    poisons drawn without replacement from the training examples of the adversarial class.

    Args:
        bundle: a :class:`~workbench.data.DataBundle`.
        n: number of trials.
        budget: fraction of the training set perturbed (0.01 in [Yang 2022, §4.1.1]).
        epsilon: ℓ∞ bound on the [0, 1] pixel scale.
        seed: seeds every trial's draw (with the trial number).
        target_class: a fixed target class (default: drawn per trial).
        poison_class: a fixed adversarial (poison) class (default: drawn per trial, different from the target's).
        target_split: the split the target is drawn from (``"test"`` by default).

    Raises:
        ValueError: ``n < 1``; a class has too few training examples for the budget.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is invalid: the number of trials must be a positive integer")
    if not (0 < budget <= 1):
        raise ValueError(f"budget={budget!r} is invalid: a fraction of the training set in (0, 1]")
    train = bundle.train
    split = getattr(bundle, target_split)
    n_train = len(train)
    k = max(1, int(round(budget * n_train)))
    ytr, itr = train.y.cpu().numpy(), train.index.cpu().numpy()
    ysp, isp = split.y.cpu().numpy(), split.index.cpu().numpy()
    classes = list(range(bundle.num_classes))
    out = []
    for t in range(n):
        rng = np.random.default_rng([int(seed), t])
        tc = int(target_class) if target_class is not None else int(rng.choice(classes))
        others = [c for c in classes if c != tc]
        pc = int(poison_class) if poison_class is not None else int(rng.choice(others))
        cand_t = isp[ysp == tc]
        if len(cand_t) == 0:
            raise ValueError(f"the {target_split} split has no example of class {tc}")
        cand_p = itr[ytr == pc]
        if len(cand_p) < k:
            raise ValueError(f"budget={budget} asks for {k} poisons but class {pc} has only {len(cand_p)} "
                             "training examples")
        ti = int(rng.choice(cand_t))
        pi = np.sort(rng.choice(cand_p, size=k, replace=False))
        out.append(ThreatSetup(target_class=tc, target_index=ti, poison_class=pc,
                               poison_indices=[int(i) for i in pi], budget=k / n_train, epsilon=float(epsilon),
                               seed=int(seed), trial=t, target_split=target_split))
    return out


def save_setups(setups: Sequence[ThreatSetup], path: str | Path, *, extra: dict | None = None) -> Path:
    """Write setups as JSON (atomic): ``{"format", "setups": [...], "benchmark": [...], **extra}``."""
    from ..runs.store import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": SETUP_FORMAT, **(extra or {}), "setups": [s.to_dict() for s in setups],
           "benchmark": [s.to_benchmark() for s in setups]}
    atomic_write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode())
    return path


def load_setups(path: str | Path) -> list[ThreatSetup]:
    """Read setups written by :func:`save_setups` (or a plain list of benchmark records)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"setup file {str(path)!r} does not exist")
    doc = json.loads(path.read_text())
    items = doc if isinstance(doc, list) else doc.get("setups")
    if items is None:
        raise ValueError(f"{str(path)!r} holds no 'setups' list")
    return [ThreatSetup.from_dict(d) for d in items]


@dataclass
class PixelBox:
    """ℓ∞ ball and [0, 1] pixel box expressed in normalised input space.

    With per-channel statistics ``mean_c``, ``std_c`` (pixel scale), a pixel-scale
    bound ε is ``ε / std_c`` in input units and the pixel box is
    ``[−mean_c/std_c, (1 − mean_c)/std_c]``. Without normalisation (``mean``/``std``
    ``None``) input units are pixels.

    Attributes:
        epsilon: ℓ∞ bound on the pixel scale.
        mean, std: per-channel statistics (lists, pixel scale) or ``None``.
        channel_dim: the channel dimension of an example batch (1 for ``[N, C, H, W]``).
    """

    epsilon: float
    mean: list[float] | None = None
    std: list[float] | None = None
    channel_dim: int = 1
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def for_bundle(cls, bundle, epsilon: float) -> "PixelBox":
        """The box of radius ``epsilon`` (pixel scale [0, 1]) for ``bundle``'s normalisation (mean, std)."""
        return cls(float(epsilon), bundle.mean, bundle.std)

    def _shape(self, x: Tensor) -> tuple:
        return (1, -1) + (1,) * (x.dim() - 2)

    def bounds(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(eps, lo, hi)`` broadcastable to ``x`` (input units)."""
        if self.mean is None or self.std is None:
            e = torch.tensor(self.epsilon, dtype=x.dtype, device=x.device)
            return e, torch.zeros((), dtype=x.dtype, device=x.device), torch.ones((), dtype=x.dtype, device=x.device)
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(self._shape(x))
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(self._shape(x))
        return self.epsilon / std, (0 - mean) / std, (1 - mean) / std

    def project(self, delta: Tensor, x: Tensor) -> Tensor:
        """Δ clipped to ``|Δ| ≤ ε/std_c`` and then to ``x + Δ`` inside the pixel box (a new tensor).

        ``x`` must itself lie in the box (clean data do); the result then satisfies both constraints.
        """
        eps, lo, hi = self.bounds(x)
        d = torch.maximum(torch.minimum(delta, eps), -eps)
        return torch.minimum(torch.maximum(x + d, lo), hi) - x

    def pixel_delta(self, delta: Tensor, x: Tensor | None = None) -> Tensor:
        """Δ converted to the pixel scale (``Δ · std_c``)."""
        if self.std is None:
            return delta
        std = torch.as_tensor(self.std, dtype=delta.dtype, device=delta.device).view(self._shape(delta))
        return delta * std

    def to_pixels(self, x: Tensor) -> Tensor:
        """Normalised inputs back to the [0, 1] pixel scale."""
        if self.mean is None or self.std is None:
            return x
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(self._shape(x))
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(self._shape(x))
        return x * std + mean

    def check(self, delta: Tensor, x: Tensor, tol: float = 1e-5) -> dict:
        """Largest violations on the pixel scale: ``{"linf": max |Δ|·std − ε, "box": distance outside [0, 1]}``."""
        pd = self.pixel_delta(delta)
        px = self.to_pixels(x + delta)
        return {"linf_excess": float((pd.abs().amax() - self.epsilon).clamp_min(0)) if pd.numel() else 0.0,
                "box_excess": float(torch.maximum((-px).clamp_min(0), (px - 1).clamp_min(0)).amax())
                if px.numel() else 0.0, "max_linf_pixels": float(pd.abs().amax()) if pd.numel() else 0.0,
                "ok": bool(pd.numel() == 0 or (pd.abs().amax() <= self.epsilon + tol
                                               and px.amin() >= -tol and px.amax() <= 1 + tol))}


def fraction_text(eps: float) -> str:  # pragma: no cover - display helper
    """``8/255`` style text for an ε close to k/255."""
    k = eps * 255
    return f"{round(k)}/255" if math.isclose(k, round(k), abs_tol=1e-6) else f"{eps:.4g}"
