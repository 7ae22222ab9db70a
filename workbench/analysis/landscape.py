r"""Loss landscapes: directions, 1-D interpolation, 1-D slices and 2-D planes.

Over 700 lines, kept whole: directions, interpolation, slices and planes share the scratch-copy and BatchNorm
machinery that keeps the caller's models untouched.

Three evaluations, all on scratch copies of the models (the models passed in
are never modified: parameters, buffers and train/eval modes stay bitwise
what they were):

* :func:`interpolate` -- the linear path between two models,

  .. math:: \theta(\alpha) = \alpha\,\theta_a + (1 - \alpha)\,\theta_b,

  exactly [Murphy 2025, Eq. 2.5] (§2.2.3,
  "One-Dimensional Linear Interpolation", after [Goodfellow 2015]), with
  ``model_a`` in the role of θ1 and ``model_b`` of θ2: **α = 1 is model_a,
  α = 0 is model_b**; α outside [0, 1] extrapolates.
* :func:`slice_1d` -- ``θ + α d`` around one model along a :class:`Direction`.
* :func:`plane_2d` -- ``θ + α d1 + β d2`` on a grid.

Directions are objects (:class:`Direction`) built by :func:`target_direction`
(θ_b − θ_a), :func:`random_direction` (Gaussian, filter-normalised) and
:func:`eigenvector_direction` (a flat vector such as a Hessian eigenvector).

Why filter normalisation. Sharpness measured along raw directions is not
invariant to reparametrisations that leave the network function unchanged
([Dinh 2017]; [Murphy 2025, §2.2.2] "Shortcomings of Sharpness Measures"):
scaling a ReLU layer by c and the next by 1/c makes the same function look
flatter or sharper. [Li 2018] ("Visualizing the Loss Landscape of Neural
Nets", NeurIPS 2018) therefore rescale each filter of a random Gaussian
direction to the norm of the corresponding filter of the model,
``d_i <- d_i / ||d_i|| * ||θ_i||`` ([Murphy 2025, §2.2.3] "Filter Normalization"),
so a slice of a rescaled network equals the slice of the original network.
The policy for 1-D parameters (biases, BatchNorm weight/bias; ``bias_bn``) is
explicit and recorded in the direction's ``meta``; the default zeroes them
(tomgoldstein/loss-landscape ``--xignore biasbn``).

BatchNorm policy (``bn``), always recorded in the result:

* ``"keep"``: evaluate in eval mode with the running statistics the model
  carries (for interpolation: the running statistics interpolated with the
  same α, so the endpoints are exactly the two checkpoints). **Default for
  slices and planes around one model**: the centre then equals the model's own
  (eval-mode) loss, filter-normalised perturbations change activation
  statistics moderately near the centre, it costs no extra passes, and it is
  what Li et al. / tomgoldstein plot.
* ``"recompute"``: at every point reset the running statistics and re-estimate
  them from training data (``bn_data``; train-mode BatchNorm, every other
  module in eval mode so dropout is off, ``momentum=None`` = cumulative
  average over the batches, no gradients), then evaluate in eval mode.
  **Default for interpolation between two models**: the running statistics of
  either endpoint (or their interpolation) are not the statistics of the
  interpolated network -- activation variances shrink between two unrelated
  solutions -- and keeping them grossly overstates the barrier
  (tml-epfl/understanding-sam ``eval_loss_surface.py`` ``bn_update`` at every α).
  With ``"recompute"`` the endpoint values are those of the two models with
  statistics re-estimated on ``bn_data`` (equal to the checkpoints' own values
  only for networks without BatchNorm).

Every evaluation reports mean cross-entropy (nats) and accuracy
(:func:`workbench.training.evaluate.evaluate`) on each :class:`ExampleSet`.
No UI imports.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..training.evaluate import evaluate
from .common import ExampleSet, ResultRecord

__all__ = [
    "Direction", "target_direction", "random_direction", "eigenvector_direction", "normalize_direction",
    "interpolate", "slice_1d", "plane_2d", "interpolated_model", "perturbed_model", "recompute_bn_stats",
    "InterpolationResult", "SliceResult", "PlaneResult", "cache_key", "model_fingerprint",
    "INTERPOLATION_CONVENTION", "BN_POLICIES", "NORMALIZATIONS", "BIAS_BN_POLICIES",
]

INTERPOLATION_CONVENTION = ("theta(alpha) = alpha * theta_a + (1 - alpha) * theta_b "
                            "(Murphy 2025, Eq. 2.5; alpha=1: model_a, alpha=0: model_b)")
BN_POLICIES = ("keep", "recompute")
NORMALIZATIONS = ("filter", "layer", "none")
BIAS_BN_POLICIES = ("zero", "keep", "normalize")
DIRECTION_KINDS = ("target", "random", "eigenvector", "custom")
_EPS = 1e-10  # as in Li et al.'s reference code: d * ||w|| / (||d|| + 1e-10)

Callback = Callable[[int, Any, dict], Any]


# ================================================================ directions
@dataclass(frozen=True, eq=False)
class Direction:
    """A direction in weight space: one tensor per named parameter (optionally buffer).

    Attributes:
        tensors: ``name -> tensor`` with the shape of the model's entry of that
            name (``model.state_dict()`` names); entries not listed are not moved.
        kind: ``"target"``, ``"random"``, ``"eigenvector"`` or ``"custom"``.
        meta: how it was made (seed, normalization, bias_bn policy, scale, ...).
    """

    tensors: dict[str, Tensor]
    kind: str = "custom"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in DIRECTION_KINDS:
            raise ValueError(f"kind={self.kind!r} is invalid: choose one of {DIRECTION_KINDS}")
        if not self.tensors:
            raise ValueError("a direction needs at least one tensor")

    @property
    def names(self) -> list[str]:
        """Names of the tensors the direction covers (``state_dict`` names), in order."""
        return list(self.tensors)

    def norm(self) -> float:
        """Euclidean norm over all tensors (computed in float64)."""
        return math.sqrt(sum(float(t.detach().double().pow(2).sum()) for t in self.tensors.values()))

    def scaled(self, c: float) -> "Direction":
        """``c * d`` (a new direction; ``meta['scale']`` multiplied by ``c``)."""
        meta = dict(self.meta)
        meta["scale"] = float(meta.get("scale", 1.0)) * float(c)
        return Direction({k: v * c for k, v in self.tensors.items()}, self.kind, meta)

    def to(self, device=None, dtype=None) -> "Direction":
        """A copy on ``device``; floating tensors are also cast to ``dtype`` when given (integer ones keep theirs)."""
        return Direction({k: v.to(device=device, dtype=dtype if v.is_floating_point() else None)
                          for k, v in self.tensors.items()}, self.kind, dict(self.meta))

    def to_vector(self, names: Sequence[str]) -> Tensor:
        """Concatenate the flattened tensors in the order ``names`` (missing names raise)."""
        missing = [n for n in names if n not in self.tensors]
        if missing:
            raise ValueError(f"direction has no tensor for {missing[:5]}")
        return torch.cat([self.tensors[n].reshape(-1) for n in names])

    def dot(self, other: "Direction") -> float:
        """Inner product over the names both directions share (float64)."""
        return float(sum(float((self.tensors[k].double() * other.tensors[k].double()).sum())
                         for k in self.tensors if k in other.tensors))

    def describe(self) -> dict:
        """JSON-ready summary: ``kind``, ``norm``, the number of tensors (``names``), ``meta`` as plain values."""
        return {"kind": self.kind, "norm": self.norm(), "names": len(self.tensors), **_plain_meta(self.meta)}


def _plain_meta(meta: Mapping) -> dict:
    out = {}
    for k, v in meta.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)):
            out[k] = [x if isinstance(x, (str, int, float, bool)) or x is None else repr(x) for x in v]
        else:
            out[k] = repr(v)
    return out


def _check(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is invalid: choose one of {', '.join(map(repr, choices))}")


def _named_entries(model: nn.Module, dir_type: str) -> list[tuple[str, Tensor]]:
    """Parameters (``weights``) or parameters plus floating buffers (``states``), in state_dict order."""
    _check("dir_type", dir_type, ("weights", "states"))
    params = dict(model.named_parameters())
    out = []
    for k, v in model.state_dict(keep_vars=True).items():
        if k in params:
            out.append((k, params[k]))
        elif dir_type == "states" and v.is_floating_point():
            out.append((k, v))
    return out


def normalize_direction(direction: Direction, model: nn.Module, *, normalization: str = "filter",
                        bias_bn: str = "zero") -> Direction:
    """Rescale ``direction`` to the scale of ``model`` (Li et al. 2018).

    * ``"filter"``: for every tensor with ``dim >= 2`` (conv / linear weights)
      each filter ``d_i = d[i]`` (slice along dim 0: an output channel or
      output neuron) becomes ``d_i / (||d_i|| + 1e-10) * ||θ_i||``.
    * ``"layer"``: each such tensor becomes ``d / (||d|| + 1e-10) * ||θ||``.
    * ``"none"``: unchanged.

    Tensors with ``dim <= 1`` (biases, BatchNorm weight/bias, BN running
    statistics) follow ``bias_bn``: ``"zero"`` (default; Li et al.'s
    ``biasbn`` ignore), ``"keep"`` (left as they are) or ``"normalize"`` (the
    whole vector rescaled to the parameter's norm, as one filter).
    """
    _check("normalization", normalization, NORMALIZATIONS)
    _check("bias_bn", bias_bn, BIAS_BN_POLICIES)
    state = model.state_dict(keep_vars=True)
    out = {}
    with torch.no_grad():
        for k, d in direction.tensors.items():
            if k not in state:
                raise ValueError(f"direction entry {k!r} is not a parameter or buffer of the model")
            w = state[k].detach()
            if w.shape != d.shape:
                raise ValueError(f"direction entry {k!r} has shape {tuple(d.shape)}, the model's {tuple(w.shape)}")
            d = d.detach().to(device=w.device, dtype=w.dtype)
            if d.dim() <= 1:
                if bias_bn == "zero":
                    d = torch.zeros_like(d)
                elif bias_bn == "normalize":
                    d = d * (w.norm() / (d.norm() + _EPS))
                else:
                    d = d.clone()
            elif normalization == "filter":
                dn = d.reshape(d.shape[0], -1).norm(dim=1)
                wn = w.reshape(w.shape[0], -1).norm(dim=1)
                d = d * (wn / (dn + _EPS)).reshape(-1, *([1] * (d.dim() - 1)))
            elif normalization == "layer":
                d = d * (w.norm() / (d.norm() + _EPS))
            else:
                d = d.clone()
            out[k] = d
    meta = dict(direction.meta)
    meta.update(normalization=normalization, bias_bn=bias_bn)
    return Direction(out, direction.kind, meta)


def target_direction(model_a: nn.Module, model_b: nn.Module, *, dir_type: str = "weights") -> Direction:
    """``θ_b − θ_a`` (kind ``"target"``): ``slice_1d(model_a, d, alphas)`` at α = 1 is model_b's weights.

    Args:
        model_a: the start θ_a.
        model_b: the end θ_b (same architecture: same entry names and shapes).
        dir_type: ``"weights"`` (parameters) or ``"states"`` (also floating buffers
            such as BatchNorm running statistics).

    Raises:
        ValueError: the two models' entries differ in names or shapes.
    """
    ea, eb = dict(_named_entries(model_a, dir_type)), dict(_named_entries(model_b, dir_type))
    if list(ea) != list(eb):
        only_a = sorted(set(ea) - set(eb))
        only_b = sorted(set(eb) - set(ea))
        raise ValueError("model_a and model_b do not have the same parameters: "
                         f"only in model_a {only_a[:5]}, only in model_b {only_b[:5]}"
                         + ("" if only_a or only_b else " (same names, different order)"))
    out = {}
    with torch.no_grad():
        for k, a in ea.items():
            b = eb[k]
            if a.shape != b.shape:
                raise ValueError(f"parameter {k!r} has shape {tuple(a.shape)} in model_a "
                                 f"and {tuple(b.shape)} in model_b")
            out[k] = b.detach().to(a.device, a.dtype) - a.detach()
    return Direction(out, "target", {"dir_type": dir_type, "definition": "theta_b - theta_a"})


def random_direction(model: nn.Module, seed: int = 0, normalization: str = "filter", bias_bn: str = "zero", *,
                     dir_type: str = "weights") -> Direction:
    """A seeded Gaussian direction, filter-normalised by default (Li et al. 2018).

    Entries are drawn i.i.d. N(0, 1) (not uniform: a uniform-[0, 1) direction is
    all positive, a known loss-landscapes pitfall) from a CPU generator seeded
    with ``seed`` in ``state_dict`` order, so the same seed gives the same
    direction on any device for the same architecture. Then
    :func:`normalize_direction` with ``normalization`` and ``bias_bn``.

    Args:
        model: the network whose entries (names, shapes, norms) the direction follows.
        seed: generator seed.
        normalization: ``"filter"`` (default), ``"layer"`` or ``"none"``.
        bias_bn: 1-D parameters: ``"zero"`` (default), ``"keep"`` (raw Gaussian)
            or ``"normalize"``.
        dir_type: ``"weights"`` (parameters) or ``"states"`` (also BN running
            statistics, tomgoldstein's ``dir_type='states'``; they follow
            ``bias_bn`` and are overwritten under ``bn="recompute"``).
    """
    _check("normalization", normalization, NORMALIZATIONS)
    _check("bias_bn", bias_bn, BIAS_BN_POLICIES)
    g = torch.Generator().manual_seed(int(seed))
    raw = {}
    for k, w in _named_entries(model, dir_type):
        raw[k] = torch.randn(w.shape, generator=g, dtype=torch.float64).to(device=w.device, dtype=w.dtype)
    d = Direction(raw, "random", {"seed": int(seed), "distribution": "gaussian", "dir_type": dir_type})
    return normalize_direction(d, model, normalization=normalization, bias_bn=bias_bn)


def _trainable_names(model: nn.Module) -> list[str]:
    return [k for k, p in model.named_parameters() if p.requires_grad]


def eigenvector_direction(model: nn.Module, flat_vector, param_names: Sequence[str] | None = None) -> Direction:
    """Map a flat vector (e.g. a Hessian eigenvector) back to named tensors (kind ``"eigenvector"``).

    Args:
        model: the network the vector's parameters belong to.
        flat_vector: 1-D tensor / array over the parameters ``param_names``
            concatenated in that order; by default the trainable parameters in
            ``model.parameters()`` order (the order curvature code such as
            PyHessian uses: ``[p for p in model.parameters() if p.requires_grad]``).
        param_names: names (``model.named_parameters()``) the vector covers, in order.

    The vector is used as given (a unit eigenvector moves the weights by α in
    parameter units); use :meth:`Direction.scaled` or
    :func:`normalize_direction` to rescale it. ``direction.to_vector(names)``
    inverts the mapping.

    Raises:
        ValueError: unknown names or a length that does not match.
    """
    params = dict(model.named_parameters())
    names = list(param_names) if param_names is not None else _trainable_names(model)
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"unknown parameter names {unknown[:5]}")
    v = torch.as_tensor(np.asarray(flat_vector) if not isinstance(flat_vector, Tensor) else flat_vector)
    v = v.detach().reshape(-1)
    total = sum(params[n].numel() for n in names)
    if v.numel() != total:
        raise ValueError(f"flat vector has {v.numel()} entries, the {len(names)} parameters have {total}")
    out, i = {}, 0
    for n in names:
        p = params[n]
        out[n] = v[i:i + p.numel()].reshape(p.shape).to(device=p.device, dtype=p.dtype).clone()
        i += p.numel()
    return Direction(out, "eigenvector", {"source": "flat vector", "length": total,
                                          "vector_norm": float(v.double().norm())})


# ================================================================ BN handling
def _bn_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, bn_data: ExampleSet, *, batch_size: int = 1024) -> int:
    """Re-estimate BatchNorm running statistics of ``model`` in place from ``bn_data``.

    Resets every BatchNorm's running mean/var, sets ``momentum=None``
    (cumulative average over the batches), runs forward passes with BatchNorm
    in train mode and every other module in eval mode (dropout off), no
    gradients; afterwards the modes and momenta are restored. Acts on the
    model given (the landscape functions call it on their scratch copy only).

    Returns:
        The number of BatchNorm layers updated (0: nothing to do).
    """
    bns = _bn_modules(model)
    if not bns:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in bns]
    dev = next(iter(bns)).running_mean.device
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for xb, _ in bn_data.batches(batch_size):
            model(xb.to(dev))
    finally:
        for m, mom in momenta:
            m.momentum = mom
        for m, mode in modes:
            m.training = mode
    return len(bns)


# ================================================================ scratch evaluation
def _as_examples(examples) -> dict[str, ExampleSet]:
    if isinstance(examples, ExampleSet):
        return {examples.split: examples}
    if not isinstance(examples, Mapping) or not examples:
        raise ValueError("examples must be an ExampleSet or a non-empty dict {split name: ExampleSet}")
    for k, v in examples.items():
        if not isinstance(v, ExampleSet):
            raise ValueError(f"examples[{k!r}] is a {type(v).__name__}, expected an ExampleSet")
    return dict(examples)


def _resolve_bn_data(bn: str, bn_data, examples: Mapping[str, ExampleSet], model: nn.Module):
    _check("bn", bn, BN_POLICIES)
    if bn != "recompute":
        return None
    if bn_data is not None:
        if not isinstance(bn_data, ExampleSet):
            raise ValueError("bn_data must be an ExampleSet of training examples")
        return bn_data
    if not _bn_modules(model):
        return None
    if "train" in examples:
        return examples["train"]
    raise ValueError('bn="recompute" needs bn_data (an ExampleSet of training examples) '
                     'or a "train" entry in examples')


class _Scratch:
    """A private deep copy of a model whose floating state is set by ``copy_`` from saved originals."""

    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.grad = None
        self.model.eval()
        self.state = dict(self.model.state_dict(keep_vars=True))
        self.base = {k: v.detach().clone() for k, v in self.state.items()}

    @torch.no_grad()
    def set_entries(self, values: Mapping[str, Tensor]) -> None:
        for k, v in values.items():
            self.state[k].copy_(v)

    @torch.no_grad()
    def set_offset(self, dirs: Sequence[Direction], coeffs: Sequence[float]) -> None:
        """``θ = base + Σ c_i d_i`` for every entry any direction touches (always from the saved base)."""
        names = dict.fromkeys(k for d in dirs for k in d.tensors)
        for k in names:
            v = self.base[k].clone()
            for d, c in zip(dirs, coeffs):
                if k in d.tensors and c != 0:
                    v.add_(d.tensors[k], alpha=float(c))
            self.state[k].copy_(v)

    def evaluate(self, examples: Mapping[str, ExampleSet], bn: str, bn_data, batch_size: int) -> dict:
        if bn == "recompute" and bn_data is not None:
            recompute_bn_stats(self.model, bn_data, batch_size=batch_size)
        self.model.eval()
        return {s: evaluate(self.model, es.x, es.y, batch_size=batch_size) for s, es in examples.items()}


def _check_direction(model: nn.Module, d: Direction, what: str) -> Direction:
    if not isinstance(d, Direction):
        raise ValueError(f"{what} must be a Direction, got {type(d).__name__}")
    state = model.state_dict(keep_vars=True)
    for k, t in d.tensors.items():
        if k not in state:
            raise ValueError(f"{what} entry {k!r} is not a parameter or buffer of the model")
        if tuple(t.shape) != tuple(state[k].shape):
            raise ValueError(f"{what} entry {k!r} has shape {tuple(t.shape)}, the model's {tuple(state[k].shape)}")
        if not state[k].is_floating_point():
            raise ValueError(f"{what} entry {k!r} is not a floating-point tensor")
    return Direction({k: t.detach().to(device=state[k].device, dtype=state[k].dtype) for k, t in d.tensors.items()},
                     d.kind, d.meta)


def _as_floats(a, default) -> np.ndarray:
    a = np.asarray(default if a is None else a, dtype=np.float64).reshape(-1)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError("coordinates must be a non-empty sequence of finite numbers")
    return a


# ================================================================ results
class _GridResult(ResultRecord):
    def __post_init__(self):
        for name in ("loss", "acc"):
            v = getattr(self, name)
            object.__setattr__(self, name, {str(k): np.asarray(x, dtype=np.float64) for k, x in v.items()})
        for name in ("alphas", "betas"):
            if hasattr(self, name):
                object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))

    @property
    def splits(self) -> list[str]:
        return list(self.loss)


@dataclass(frozen=True, eq=False)
class InterpolationResult(_GridResult):
    """Loss/accuracy along θ(α) = α θ_a + (1 − α) θ_b ([Murphy 2025, Eq. 2.5]).

    Attributes:
        alphas: ``[A]``; α = 1 is model_a, α = 0 is model_b.
        loss, acc: ``split -> [A]`` mean cross-entropy (nats) / accuracy in [0, 1].
        bn: BatchNorm policy used (``"keep"`` or ``"recompute"``).
        examples: ``split -> ExampleSet.describe()``.
        bn_data: description of the BN re-estimation set (``None`` if not used).
        fingerprints: ``{"model_a": ..., "model_b": ...}`` (:func:`model_fingerprint`).
        convention: the formula, in words.
        seconds: wall time.
    """

    alphas: np.ndarray
    loss: dict
    acc: dict
    bn: str
    examples: dict
    bn_data: dict | None = None
    fingerprints: dict = field(default_factory=dict)
    convention: str = INTERPOLATION_CONVENTION
    seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class SliceResult(_GridResult):
    """Loss/accuracy along θ + α d.

    Attributes:
        alphas: ``[A]`` (α = 0 is the model).
        loss, acc: ``split -> [A]``.
        direction: :meth:`Direction.describe` of ``d``.
        bn, examples, bn_data, fingerprint, seconds: as in :class:`InterpolationResult`.
    """

    alphas: np.ndarray
    loss: dict
    acc: dict
    bn: str
    examples: dict
    direction: dict = field(default_factory=dict)
    bn_data: dict | None = None
    fingerprint: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class PlaneResult(_GridResult):
    """Loss/accuracy on θ + α d1 + β d2.

    Attributes:
        alphas: ``[A]`` coefficients of ``d1`` (columns / x axis).
        betas: ``[B]`` coefficients of ``d2`` (rows / y axis).
        loss, acc: ``split -> [B, A]`` grids (``grid[j, i]`` at ``(alphas[i], betas[j])``).
        directions: descriptions of ``d1`` and ``d2``; ``cosine``: their cosine similarity.
        bn, examples, bn_data, fingerprint, seconds: as in :class:`InterpolationResult`.
    """

    alphas: np.ndarray
    betas: np.ndarray
    loss: dict
    acc: dict
    bn: str
    examples: dict
    directions: list = field(default_factory=list)
    cosine: float = 0.0
    bn_data: dict | None = None
    fingerprint: str = ""
    seconds: float = 0.0


def _emit(callback, i, coord, values):
    if callback is not None:
        callback(i, coord, {s: (float(l), float(a)) for s, (l, a) in values.items()})


# ================================================================ evaluations
def interpolate(model_a: nn.Module, model_b: nn.Module, examples, alphas=None, bn: str = "recompute",
                bn_data: ExampleSet | None = None, batch_size: int = 1024,
                callback: Callback | None = None) -> InterpolationResult:
    """Loss and accuracy along the line between two models ([Murphy 2025, Eq. 2.5]).

    θ(α) = α θ_a + (1 − α) θ_b: **α = 1 gives model_a, α = 0 gives model_b**
    (the report's convention, θ1 = model_a, θ2 = model_b; α ∉ [0, 1]
    extrapolates). Every floating entry of the state (parameters and, for
    ``bn="keep"``, BatchNorm running statistics) is set at each point by
    ``copy_`` of ``α·θ_a + (1−α)·θ_b`` computed from saved originals, on a
    scratch deep copy of model_a: the endpoints are bitwise the two models and
    neither model is modified. Integer buffers (``num_batches_tracked``) are
    model_a's.

    Args:
        model_a: θ_a, the model at α = 1.
        model_b: θ_b, the model at α = 0 (same architecture: same state names and shapes).
        examples: ``{split: ExampleSet}`` (e.g. ``{"train": ..., "test": ...}``) or one ExampleSet.
        alphas: default ``np.linspace(-0.5, 1.5, 41)`` (step 0.05, contains 0 and 1).
        bn: ``"recompute"`` (default: the interpolated network's statistics are
            re-estimated at every α; see the module docstring) or ``"keep"``.
        bn_data: training examples for ``bn="recompute"`` (default ``examples["train"]``).
        batch_size: evaluation / BN-estimation batch size.
        callback: ``callback(i, alpha, {split: (loss, acc)})`` after each point.

    Raises:
        ValueError: mismatched models, bad ``bn``, no data to re-estimate BN.
    """
    t0 = time.perf_counter()
    examples = _as_examples(examples)
    alphas = _as_floats(alphas, np.linspace(-0.5, 1.5, 41))
    bn_set = _resolve_bn_data(bn, bn_data, examples, model_a)
    sa, sb = model_a.state_dict(), model_b.state_dict()
    if list(sa) != list(sb):
        only_a, only_b = sorted(set(sa) - set(sb)), sorted(set(sb) - set(sa))
        raise ValueError(f"model_a and model_b differ: only in model_a {only_a[:5]}, only in model_b {only_b[:5]}")
    for k in sa:
        if sa[k].shape != sb[k].shape:
            raise ValueError(f"entry {k!r} has shape {tuple(sa[k].shape)} in model_a "
                             f"and {tuple(sb[k].shape)} in model_b")
    fp = {"model_a": model_fingerprint(model_a), "model_b": model_fingerprint(model_b)}
    scratch = _Scratch(model_a)
    params = {k for k, _ in model_a.named_parameters()}
    keys = [k for k, v in scratch.base.items() if v.is_floating_point() and (k in params or bn == "keep")]
    tb = {k: sb[k].detach().to(scratch.base[k].device, scratch.base[k].dtype).clone() for k in keys}
    loss = {s: np.full(len(alphas), np.nan) for s in examples}
    acc = {s: np.full(len(alphas), np.nan) for s in examples}
    for i, a in enumerate(alphas):
        a = float(a)
        scratch.set_entries({k: a * scratch.base[k] + (1.0 - a) * tb[k] for k in keys})
        vals = scratch.evaluate(examples, bn, bn_set, batch_size)
        for s, (l, c) in vals.items():
            loss[s][i], acc[s][i] = l, c
        _emit(callback, i, a, vals)
    return InterpolationResult(alphas=alphas, loss=loss, acc=acc, bn=bn,
                               examples={s: es.describe() for s, es in examples.items()},
                               bn_data=bn_set.describe() if bn_set is not None else None,
                               fingerprints=fp, seconds=time.perf_counter() - t0)


def slice_1d(model: nn.Module, direction: Direction, examples, alphas=None, bn: str = "keep",
             bn_data: ExampleSet | None = None, batch_size: int = 1024,
             callback: Callback | None = None) -> SliceResult:
    """Loss and accuracy along θ + α d (evaluated on a scratch copy; ``model`` untouched).

    Args:
        model: the network at the centre θ (not modified).
        direction: a :class:`Direction` (e.g. :func:`random_direction`,
            filter-normalised, so α = 1 moves every filter by its own norm).
        examples: ``{split: ExampleSet}`` (e.g. ``{"train": ..., "test": ...}``) or one ExampleSet.
        alphas: default ``np.linspace(-1, 1, 41)``.
        bn: ``"keep"`` (default: checkpoint statistics; the centre equals the
            model's own eval-mode loss) or ``"recompute"`` (needs ``bn_data`` or
            ``examples["train"]``).
        bn_data: training examples for ``bn="recompute"`` (default ``examples["train"]``).
        batch_size: evaluation / BN-estimation batch size.
        callback: ``callback(i, alpha, {split: (loss, acc)})`` after each point.
    """
    t0 = time.perf_counter()
    examples = _as_examples(examples)
    alphas = _as_floats(alphas, np.linspace(-1, 1, 41))
    bn_set = _resolve_bn_data(bn, bn_data, examples, model)
    direction = _check_direction(model, direction, "direction")
    fp = model_fingerprint(model)
    scratch = _Scratch(model)
    loss = {s: np.full(len(alphas), np.nan) for s in examples}
    acc = {s: np.full(len(alphas), np.nan) for s in examples}
    for i, a in enumerate(alphas):
        scratch.set_offset([direction], [float(a)])
        vals = scratch.evaluate(examples, bn, bn_set, batch_size)
        for s, (l, c) in vals.items():
            loss[s][i], acc[s][i] = l, c
        _emit(callback, i, float(a), vals)
    return SliceResult(alphas=alphas, loss=loss, acc=acc, bn=bn,
                       examples={s: es.describe() for s, es in examples.items()},
                       direction=direction.describe(),
                       bn_data=bn_set.describe() if bn_set is not None else None,
                       fingerprint=fp, seconds=time.perf_counter() - t0)


def plane_2d(model: nn.Module, d1: Direction, d2: Direction, examples, alphas=None, betas=None,
             bn: str = "keep", bn_data: ExampleSet | None = None, batch_size: int = 1024,
             callback: Callback | None = None) -> PlaneResult:
    """Loss and accuracy on the grid θ + α d1 + β d2 (scratch copy; ``model`` untouched).

    Points are evaluated row by row (β outer, α inner). Grids are
    ``[len(betas), len(alphas)]``.

    Args:
        model: the network at the centre θ (not modified).
        d1: the first direction (α axis).
        d2: the second direction (β axis).
        examples: ``{split: ExampleSet}`` or one ExampleSet.
        alphas: coefficients of ``d1``, default ``np.linspace(-1, 1, 21)``.
        betas: coefficients of ``d2``, default ``np.linspace(-1, 1, 21)``.
        bn: ``"keep"`` (default) or ``"recompute"``.
        bn_data: training examples for ``bn="recompute"`` (default ``examples["train"]``).
        batch_size: evaluation / BN-estimation batch size.
        callback: ``callback(k, (alpha, beta), {split: (loss, acc)})`` after each
            point, ``k = j * len(alphas) + i`` the flat row-major index
            (``j, i = divmod(k, len(alphas))``).
    """
    t0 = time.perf_counter()
    examples = _as_examples(examples)
    alphas = _as_floats(alphas, np.linspace(-1, 1, 21))
    betas = _as_floats(betas, np.linspace(-1, 1, 21))
    bn_set = _resolve_bn_data(bn, bn_data, examples, model)
    d1 = _check_direction(model, d1, "d1")
    d2 = _check_direction(model, d2, "d2")
    n1, n2 = d1.norm(), d2.norm()
    cos = d1.dot(d2) / (n1 * n2) if n1 > 0 and n2 > 0 else float("nan")
    fp = model_fingerprint(model)
    scratch = _Scratch(model)
    shape = (len(betas), len(alphas))
    loss = {s: np.full(shape, np.nan) for s in examples}
    acc = {s: np.full(shape, np.nan) for s in examples}
    k = 0
    for j, b in enumerate(betas):
        for i, a in enumerate(alphas):
            scratch.set_offset([d1, d2], [float(a), float(b)])
            vals = scratch.evaluate(examples, bn, bn_set, batch_size)
            for s, (l, c) in vals.items():
                loss[s][j, i], acc[s][j, i] = l, c
            _emit(callback, k, (float(a), float(b)), vals)
            k += 1
    return PlaneResult(alphas=alphas, betas=betas, loss=loss, acc=acc, bn=bn,
                       examples={s: es.describe() for s, es in examples.items()},
                       directions=[d1.describe(), d2.describe()], cosine=float(cos),
                       bn_data=bn_set.describe() if bn_set is not None else None,
                       fingerprint=fp, seconds=time.perf_counter() - t0)


def interpolated_model(model_a: nn.Module, model_b: nn.Module, alpha: float, *, bn: str = "recompute",
                       bn_data: ExampleSet | None = None, batch_size: int = 1024) -> nn.Module:
    """A new model (eval mode) at θ(α) = α θ_a + (1 − α) θ_b, as :func:`interpolate` evaluates it.

    With ``bn="recompute"`` its BatchNorm statistics are re-estimated on
    ``bn_data`` (required when the model has BatchNorm). Neither input is modified.
    """
    _check("bn", bn, BN_POLICIES)
    if bn == "recompute" and bn_data is None and _bn_modules(model_a):
        raise ValueError('bn="recompute" needs bn_data (an ExampleSet of training examples)')
    scratch = _Scratch(model_a)
    sb = model_b.state_dict()
    params = {k for k, _ in model_a.named_parameters()}
    a = float(alpha)
    scratch.set_entries({k: a * v + (1.0 - a) * sb[k].to(v.device, v.dtype) for k, v in scratch.base.items()
                         if v.is_floating_point() and (k in params or bn == "keep")})
    if bn == "recompute" and bn_data is not None:
        recompute_bn_stats(scratch.model, bn_data, batch_size=batch_size)
    return scratch.model.eval()


def perturbed_model(model: nn.Module, directions: Sequence[Direction], coeffs: Sequence[float], *,
                    bn: str = "keep", bn_data: ExampleSet | None = None, batch_size: int = 1024) -> nn.Module:
    """A new model (eval mode) at θ + Σ c_i d_i, as :func:`slice_1d` / :func:`plane_2d` evaluate it."""
    _check("bn", bn, BN_POLICIES)
    if len(directions) != len(coeffs):
        raise ValueError("directions and coeffs must have the same length")
    if bn == "recompute" and bn_data is None and _bn_modules(model):
        raise ValueError('bn="recompute" needs bn_data (an ExampleSet of training examples)')
    dirs = [_check_direction(model, d, f"directions[{i}]") for i, d in enumerate(directions)]
    scratch = _Scratch(model)
    scratch.set_offset(dirs, [float(c) for c in coeffs])
    if bn == "recompute" and bn_data is not None:
        recompute_bn_stats(scratch.model, bn_data, batch_size=batch_size)
    return scratch.model.eval()


# ================================================================ cache keys
def _tensor_bytes(t: Tensor) -> bytes:
    t = t.detach().contiguous().reshape(-1).cpu()
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def model_fingerprint(model: nn.Module) -> str:
    """Stable hash of a model's state (names, dtypes, shapes and bytes of every parameter and buffer)."""
    h = hashlib.blake2b(digest_size=20)
    for k, v in model.state_dict().items():
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(_tensor_bytes(v))
    return h.hexdigest()


def _feed(h, v: Any) -> None:
    if isinstance(v, nn.Module):
        h.update(b"M" + model_fingerprint(v).encode())
    elif isinstance(v, Direction):
        h.update(b"D" + v.kind.encode())
        _feed(h, _plain_meta(v.meta))
        for k, t in v.tensors.items():
            h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(_tensor_bytes(t))
    elif isinstance(v, ExampleSet):
        h.update(b"E")
        _feed(h, v.describe())
        for t in (v.x, v.y, v.index):
            h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(_tensor_bytes(t))
    elif isinstance(v, Tensor):
        h.update(f"T{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(_tensor_bytes(v))
    elif isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        h.update(f"A{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    elif isinstance(v, Mapping):
        h.update(b"{")
        for k in sorted(v, key=str):
            h.update(repr(str(k)).encode() + b":")
            _feed(h, v[k])
        h.update(b"}")
    elif isinstance(v, (list, tuple)):
        h.update(b"[")
        for x in v:
            _feed(h, x)
            h.update(b",")
        h.update(b"]")
    elif v is None or isinstance(v, (bool, int, str, np.integer, np.bool_)):
        h.update(f"{type(v).__name__}:{v!r}".encode())
    elif isinstance(v, (float, np.floating)):
        h.update(f"f:{float(v).hex()}".encode())
    elif callable(v):
        h.update(f"C{getattr(v, '__module__', '')}.{getattr(v, '__qualname__', repr(type(v)))}".encode())
    elif dataclasses.is_dataclass(v) and not isinstance(v, type):
        h.update(type(v).__name__.encode())
        _feed(h, {f.name: getattr(v, f.name) for f in dataclasses.fields(v)})
    else:
        raise TypeError(f"cache_key: cannot hash a value of type {type(v).__name__}")


def cache_key(**params) -> str:
    """A stable hex key for a computation, so a UI can reuse a result instead of recomputing.

    Models are hashed by their state (:func:`model_fingerprint`), directions and
    example sets by their tensors' bytes, arrays by dtype/shape/bytes, floats
    exactly (``float.hex``), dicts order-independently, callables by qualified
    name. Example::

        key = cache_key(fn="slice_1d", model=model, direction=d, examples=ex, alphas=alphas, bn="keep")

    Raises:
        TypeError: a value of a type it cannot hash stably.
    """
    h = hashlib.blake2b(digest_size=20)
    _feed(h, params)
    return h.hexdigest()
