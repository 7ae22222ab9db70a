"""Shared pieces of the analysis suite: fixed example sets, state guards, result records.

Every analysis evaluates a model on an :class:`ExampleSet`: a fixed, seeded
subset of a split with an explicit count (default 2,048, or the whole split
when smaller), so stochastic estimates are reproducible and report their
sample size. Every analysis leaves the model exactly as it found it
(:func:`preserved_state`: parameters, buffers such as BatchNorm running
statistics, and train/eval modes are restored from a saved copy).

No UI imports.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["ExampleSet", "preserved_state", "eval_mode", "model_device", "ResultRecord", "save_result",
           "load_result", "RESULT_TYPES", "DEFAULT_COUNT"]

DEFAULT_COUNT = 2048


@dataclass(frozen=True)
class ExampleSet:
    """A fixed set of examples used by an analysis.

    Attributes:
        x: inputs ``[N, ...]`` (as the model consumes them: normalised, un-augmented).
        y: labels ``[N]`` (int64).
        index: dataset indices ``[N]`` (int64), so results can be keyed by example.
        split: name of the split it was drawn from (``train``, ``val``, ``test``).
        seed: seed of the draw (``None`` when the whole split was taken).
        count: ``N``.
    """

    x: Tensor
    y: Tensor
    index: Tensor
    split: str = "train"
    seed: int | None = None
    count: int = 0

    @classmethod
    def from_dataset(cls, dataset, *, count: int | None = DEFAULT_COUNT, seed: int = 0,
                     split: str = "train") -> "ExampleSet":
        """Draw ``count`` examples without replacement (seeded); the whole split when smaller.

        Args:
            dataset: an :class:`~workbench.data.IndexedTensorDataset` (attributes x, y, index).
            count: number of examples (``None``: the whole split).
            seed: seed of the draw.
            split: the split's name, recorded in the result.

        Raises:
            ValueError: non-positive ``count`` or an empty dataset.
        """
        n = len(dataset)
        if n == 0:
            raise ValueError(f"the {split} split is empty")
        if count is not None and count <= 0:
            raise ValueError(f"count={count!r} is invalid: must be a positive number of examples")
        if count is None or count >= n:
            order = torch.arange(n)
            used_seed = None
        else:
            g = torch.Generator().manual_seed(int(seed))
            order = torch.randperm(n, generator=g)[:count].sort().values
            used_seed = int(seed)
        order_dev = order.to(dataset.x.device)
        return cls(x=dataset.x[order_dev], y=dataset.y[order_dev], index=dataset.index[order_dev].cpu(),
                   split=split, seed=used_seed, count=int(order.numel()))

    def to(self, device) -> "ExampleSet":
        """A copy with ``x`` and ``y`` on ``device`` (``index`` is not moved)."""
        return dataclasses.replace(self, x=self.x.to(device), y=self.y.to(device))

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Consecutive ``(x, y)`` batches in a fixed order."""
        for i in range(0, self.count, batch_size):
            yield self.x[i:i + batch_size], self.y[i:i + batch_size]

    def describe(self) -> dict:
        """JSON-ready provenance: ``split``, ``seed`` and ``count``."""
        return {"split": self.split, "seed": self.seed, "count": self.count}


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (else first buffer; a model with neither: CPU)."""
    p = next(model.parameters(), None)
    if p is not None:
        return p.device
    b = next(model.buffers(), None)
    return b.device if b is not None else torch.device("cpu")


def _bitwise_equal(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[nn.Module]:
    """Leave ``model`` exactly as it was: parameters, buffers, train/eval modes and ``.grad``.

    Values are restored with ``copy_`` from clones taken on entry (never by
    undoing arithmetic), also when the block raised. A tensor is written back
    only when it changed, so the version counters of untouched parameters stay
    put and an autograd graph built on them (a cached Hessian-vector-product
    graph) stays usable; every parameter's ``.grad`` is set back to the object
    it had on entry (with its values), which drops graph-carrying gradients that
    code such as PyHessian's ``loss.backward(create_graph=True)`` leaves behind.
    """
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                s = saved.get(k)
                if s is not None and not _bitwise_equal(v.detach(), s):
                    v.copy_(s)
            for p, g, gval in grads:
                p.grad = g
                if g is not None and not _bitwise_equal(g, gval):
                    g.copy_(gval)
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (BatchNorm uses running statistics, dropout off) inside the block; modes restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


# ----------------------------------------------------------------- results
RESULT_TYPES: dict[str, type] = {}


class ResultRecord:
    """Mixin for frozen result dataclasses: JSON/NPZ persistence without pickling.

    Array-like fields (tensors, numpy arrays, lists of arrays) are stored in
    ``<name>.npz`` (loaded with ``allow_pickle=False``); everything else in
    ``<name>.json``. Subclasses register themselves by class name.
    """

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        RESULT_TYPES[cls.__name__] = cls

    def to_dict(self) -> dict:
        """Plain JSON-able dict (arrays as nested lists)."""
        out = {}
        for f in fields(self):
            out[f.name] = _plain(getattr(self, f.name))
        return out


def _plain(v: Any) -> Any:
    if isinstance(v, Tensor):
        return v.detach().cpu().tolist()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in fields(v)}
    return v


def _is_array(v: Any) -> bool:
    return isinstance(v, (Tensor, np.ndarray))


def save_result(result: ResultRecord, directory: str | Path, name: str) -> Path:
    """Write ``result`` as ``<directory>/<name>.json`` (+ ``.npz`` for its arrays).

    Returns:
        The JSON path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays, meta = {}, {"__type__": type(result).__name__}
    for f in fields(result):
        v = getattr(result, f.name)
        if _is_array(v):
            arrays[f.name] = v.detach().cpu().numpy() if isinstance(v, Tensor) else v
        elif isinstance(v, (list, tuple)) and v and all(_is_array(x) for x in v):
            for i, x in enumerate(v):
                arrays[f"{f.name}__{i}"] = x.detach().cpu().numpy() if isinstance(x, Tensor) else x
            meta[f.name] = {"__arrays__": len(v)}
        else:
            meta[f.name] = _plain(v)
    from ..runs.store import atomic_write_bytes

    if arrays:
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(directory / f"{name}.npz", buf.getvalue())
    path = directory / f"{name}.json"
    atomic_write_bytes(path, (json.dumps(meta, indent=1, allow_nan=True) + "\n").encode())
    return path


def load_result(path: str | Path) -> ResultRecord:
    """Read a result written by :func:`save_result` (``path`` is the ``.json``; no unpickling)."""
    path = Path(path)
    meta = json.loads(path.read_text())
    cls = RESULT_TYPES.get(meta.pop("__type__", ""))
    if cls is None:
        raise ValueError(f"{str(path)!r}: unknown result type")
    arrays = {}
    npz = path.with_suffix(".npz")
    if npz.exists():
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    kwargs = {}
    for f in fields(cls):
        if f.name in arrays:
            kwargs[f.name] = arrays[f.name]
        elif isinstance(meta.get(f.name), dict) and "__arrays__" in meta[f.name]:
            kwargs[f.name] = [arrays[f"{f.name}__{i}"] for i in range(meta[f.name]["__arrays__"])]
        elif f.name in meta:
            kwargs[f.name] = meta[f.name]
    return cls(**kwargs)
