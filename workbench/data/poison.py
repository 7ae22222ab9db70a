"""Poisoned datasets: perturbations Δ keyed by dataset index, saved and loaded without pickling.

A poison is a tensor ``delta [K, *input_shape]`` and the dataset indices
``index [K]`` of the examples it perturbs (DESIGN: per-example data is keyed by
dataset index, never by position in a batch). Δ lives in the model's input
space (after normalisation), so a poison only fits data prepared the same way:
the file records the data settings it was made for and :func:`apply_poison`
refuses a mismatch.

File format (``poison.pt``, read with ``torch.load(..., weights_only=True)``)::

    {"format": 1, "delta": Tensor[K, ...] float32, "index": LongTensor[K], "meta": json string}

``meta`` holds ``kind`` ("sharpness_aware", "noise", ...), ``data`` (the
DataConfig fields that define the input space), the source run, the crafting
configuration and norms.

No UI imports.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["Poison", "save_poison", "load_poison", "apply_poison", "data_fingerprint", "POISON_FORMAT"]

POISON_FORMAT = 1
# DataConfig fields that define which examples exist and the input space Δ lives in
_FINGERPRINT_FIELDS = ("name", "classes", "split", "val_fraction", "test_fraction", "split_seed", "max_train",
                       "normalize", "resize", "n_samples", "noise")


def data_fingerprint(data_cfg) -> dict:
    """The data settings a poison depends on (a dict of DataConfig fields)."""
    d = data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg)
    return {k: d.get(k) for k in _FINGERPRINT_FIELDS}


@dataclass
class Poison:
    """Perturbations keyed by dataset index.

    Attributes:
        delta: ``float32 [K, *input_shape]`` in the model's input space (normalised units).
        index: ``int64 [K]`` dataset indices (unique).
        meta: JSON-able metadata (``kind``, ``data`` fingerprint, source, norms, ...).
    """

    delta: Tensor
    index: Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.delta.shape[0] != self.index.shape[0]:
            raise ValueError(f"delta has {self.delta.shape[0]} rows but index has {self.index.shape[0]}")
        if self.index.unique().numel() != self.index.numel():
            raise ValueError("poison indices must be unique")

    def norms(self) -> dict:
        """Frobenius norm of Δ, mean/max per-example ℓ2 norm and max |Δ| (input units)."""
        flat = self.delta.reshape(self.delta.shape[0], -1).double()
        per = flat.norm(dim=1)
        return {"frobenius": float(flat.norm()), "mean_l2": float(per.mean()) if len(per) else 0.0,
                "max_l2": float(per.max()) if len(per) else 0.0,
                "max_abs": float(flat.abs().max()) if flat.numel() else 0.0, "count": int(flat.shape[0])}

    def rows_for(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(mask, rows)``: which of ``index`` are poisoned, and their Δ rows (in that order)."""
        order = torch.argsort(self.index)
        sorted_idx = self.index[order]
        pos = torch.searchsorted(sorted_idx, index.cpu())
        pos = pos.clamp(max=max(len(sorted_idx) - 1, 0))
        mask = sorted_idx[pos] == index.cpu() if len(sorted_idx) else torch.zeros_like(index, dtype=torch.bool)
        return mask, self.delta[order[pos[mask]]]


def save_poison(poison: Poison, path: str | Path) -> Path:
    """Write ``poison`` atomically (``poison.pt``) plus a readable ``.json`` of its metadata beside it."""
    from ..runs.store import atomic_torch_save, atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(poison.meta, norms=poison.norms())
    atomic_torch_save({"format": POISON_FORMAT, "delta": poison.delta.detach().cpu().float().contiguous(),
                       "index": poison.index.detach().cpu().long(), "meta": json.dumps(meta, default=str)}, path)
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(meta, indent=1, default=str) + "\n").encode())
    return path


def load_poison(path: str | Path) -> Poison:
    """Read a poison written by :func:`save_poison` (``weights_only=True``: nothing is unpickled).

    Raises:
        FileNotFoundError: no such file; ValueError: not a poison file (says why).
    """
    from ..runs.store import CheckpointError, load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"poison file {str(path)!r} does not exist")
    try:
        d = load_checkpoint(path)
    except CheckpointError as e:
        raise ValueError(f"{str(path)!r} is not a readable poison file: {e}") from e
    if d.get("format") != POISON_FORMAT or "delta" not in d or "index" not in d:
        raise ValueError(f"{str(path)!r} is not a poison file (format {d.get('format')!r}, keys {sorted(d)})")
    return Poison(delta=d["delta"], index=d["index"], meta=json.loads(d.get("meta") or "{}"))


def apply_poison(dataset, poison: Poison, *, data_cfg=None):
    """A copy of ``dataset`` (an IndexedTensorDataset) with Δ added to the examples the poison covers.

    Args:
        dataset: the (clean) training split.
        poison: the poison; its rows are matched to the dataset by index (any order).
        data_cfg: the DataConfig the dataset was loaded with, checked against the poison's
            data fingerprint.

    Raises:
        ValueError: the poison was made for differently prepared data, or its shape does not fit.
    """
    if data_cfg is not None and poison.meta.get("data") is not None:
        want = poison.meta["data"]
        have = data_fingerprint(data_cfg)
        diff = {k: (want.get(k), have.get(k)) for k in _FINGERPRINT_FIELDS if want.get(k) != have.get(k)}
        if diff:
            raise ValueError("data.poison was crafted for other data settings (poison, now): "
                             + ", ".join(f"data.{k}: {a!r} vs {b!r}" for k, (a, b) in diff.items()))
    if tuple(poison.delta.shape[1:]) != tuple(dataset.x.shape[1:]):
        raise ValueError(f"poison examples have shape {tuple(poison.delta.shape[1:])}, the data "
                         f"{tuple(dataset.x.shape[1:])}")
    mask, rows = poison.rows_for(dataset.index)
    x = dataset.x.clone()
    m = mask.to(x.device)
    x[m] = x[m] + rows.to(device=x.device, dtype=x.dtype)
    return dataclasses.replace(dataset, x=x) if dataclasses.is_dataclass(dataset) else type(dataset)(
        x, dataset.y, dataset.index)


def _describe(p: Poison) -> dict[str, Any]:  # pragma: no cover - debugging aid
    return {"kind": p.meta.get("kind"), **p.norms()}
