"""Hessian curvature: eigenvalues, trace and spectral density of the training loss.

The sharpness measures of [Murphy 2025, §2.2.1] ("Spectrum of
the Hessian") need the extreme eigenvalues of the Hessian of the loss, the ratio
λmax/λ5 ([Foret 2021], as used there) and the eigenvalue density. The Hessian is
never formed: every algorithm here only needs Hessian-vector products (HVPs).

Two layers:

* :class:`HessianOperator` — the Hessian of the **mean** loss over **all**
  examples of an :class:`~workbench.analysis.common.ExampleSet`, with respect to
  a chosen set of parameters, as a linear operator on flat vectors
  (``size``, ``matvec``, ``@``, :meth:`~HessianOperator.as_linear_operator`).
  BatchNorm and dropout are in eval mode during every product (the Hessian of
  the eval-mode loss, as PyHessian; a train-mode BatchNorm Hessian is a
  different, batch-coupled object), and the model is left exactly as it was.
* Free functions over any operator with ``size`` and ``matvec`` (the
  :class:`LinearOperatorLike` protocol; :class:`DenseOperator` wraps a dense
  symmetric matrix): :func:`lanczos`, :func:`eigsh_eigenvalues`,
  :func:`power_iteration`, :func:`smallest_eigenvalues`,
  :func:`hutchinson_trace`, :func:`hutchpp_trace`, :func:`spectral_density`.
  Each returns a frozen result record (:class:`EigenResult`,
  :class:`TraceResult`, :class:`DensityResult`) that
  :func:`~workbench.analysis.common.save_result` writes as JSON + NPZ.

Model-level helpers: :func:`layerwise` (one operator per layer),
:func:`pyhessian_eigenvalues` / :func:`pyhessian_trace` /
:func:`pyhessian_density` (the PyHessian package, for comparison), and
:class:`TopEigenvalueProbe` (λmax tracked during training by the
:class:`~workbench.training.trainer.Trainer`).

Cost on a CPU (measured by
``benchmarks/bench_hessian.py``): one HVP on the cached double-backward graph
costs about 1.5-2 gradient evaluations. Lanczos with full re-orthogonalisation
needs far fewer HVPs than PyHessian's deflated power iteration for the same
accuracy (top-5: ~30 against several hundred), because its error falls with
the Chebyshev rate in sqrt(gap) rather than the power-iteration rate in gap.

References:
    * B. Ghorbani, S. Krishnan, Y. Xiao, "An investigation into neural net
      optimization via Hessian eigenvalue density", ICML 2019 (Lanczos, SLQ).
    * Z. Yao, A. Gholami, K. Keutzer, M. Mahoney, "PyHessian: Neural networks
      through the lens of the Hessian", IEEE BigData 2020 (power iteration,
      Hutchinson trace, SLQ density).
    * R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: Optimal
      stochastic trace estimation", SOSA 2021.
    * M. F. Hutchinson, "A stochastic estimator of the trace of the influence
      matrix for Laplacian smoothing splines", 1990.
    * G. H. Golub, G. Meurant, "Matrices, Moments and Quadrature", 1994
      (Gauss quadrature from the Lanczos tridiagonal matrix).
    * P. Foret et al., "Sharpness-Aware Minimization", ICLR 2021 (λmax/λ5).

No UI imports.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..training.trainer import Probe
from .common import ExampleSet, ResultRecord, eval_mode, model_device, preserved_state

__all__ = [
    "LinearOperatorLike", "HessianOperator", "DenseOperator",
    "EigenResult", "TraceResult", "DensityResult", "LayerwiseResult",
    "lanczos", "eigsh_eigenvalues", "power_iteration", "smallest_eigenvalues",
    "hutchinson_trace", "hutchpp_trace", "spectral_density", "eigenvalue_ratio", "layerwise",
    "pyhessian_eigenvalues", "pyhessian_trace", "pyhessian_density", "TopEigenvalueProbe",
]


# ====================================================================== operators
@runtime_checkable
class LinearOperatorLike(Protocol):
    """What the algorithms need: a symmetric linear map on flat vectors of length ``size``.

    ``dtype`` and ``device`` are optional (float64 / CPU when absent); an
    ``examples`` attribute (an :class:`ExampleSet`) is recorded in results when present.
    """

    size: int

    def matvec(self, v: Tensor) -> Tensor:
        """The product ``A v`` for a flat vector ``v`` of length ``size``."""
        ...


def _select_parameters(model: nn.Module, params) -> list[tuple[str, nn.Parameter]]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    if params is None:
        return named
    wanted = [params] if isinstance(params, str) else list(params)
    if not wanted:
        raise ValueError("params=[] selects no parameters")
    chosen: set[str] = set()
    for w in wanted:
        if not isinstance(w, str):
            raise TypeError(f"params entries must be parameter or module names (str), got {type(w).__name__}")
        hit = [n for n, _ in named if n == w or n.startswith(w + ".") or w == ""]
        if not hit:
            modules = sorted({n.rsplit(".", 1)[0] for n, _ in named if "." in n})
            raise ValueError(f"params={w!r} matches no trainable parameter; available parameters: "
                             + ", ".join(n for n, _ in named) + "; modules: " + ", ".join(modules))
        chosen.update(hit)
    return [(n, p) for n, p in named if n in chosen]  # model order


class HessianOperator:
    """Hessian of the mean loss over all examples of ``examples`` as a linear operator on flat vectors.

    H = ∇²_θ (1/N) Σ_i loss(model(x_i), y_i), with θ the selected parameters
    flattened in model order (``param_names``). Products run with every module
    in eval mode (BatchNorm uses its running statistics, dropout is off) on a
    private copy of the buffers; parameters, buffers, modes and ``.grad`` of the
    model are never changed (products use ``torch.autograd.grad``, never
    ``backward``).

    Engines:

    * ``method="autograd"`` (default), one batch (``batch_size`` None or
      ``>= examples.count``): the first-order gradient graph is built once with
      ``create_graph=True`` (on the first product) and cached; each HVP is one
      double backward ``autograd.grad(grads, params, grad_outputs=v,
      retain_graph=True)`` (Pearlmutter), about 1.5-2 gradient evaluations on CPU.
      The cache holds the activations of the whole set: free it with
      :meth:`release` (or use the operator as a context manager). The graph is
      rebuilt automatically if a parameter or buffer of the model changed since
      it was built (see "Model changes" below).
    * ``method="autograd"``, several batches: each product loops over the batches
      (forward, gradient with ``create_graph``, double backward), weighting batch
      ``b`` by ``len(b) / N`` so the result is exactly the full-set Hessian
      (``loss_fn`` must use mean reduction).
    * ``method="func"``: ``torch.func.jvp(grad(loss))`` (forward-over-reverse) per
      batch; recomputes everything per product (about 3 gradient units on CPU).
      For comparisons.

    Model changes: every top-level call (:meth:`matvec`, ``@``, :meth:`prepare`) checks
    the model first, so products are always those of the model as it is now:

    * a parameter *replaced* (``module.weight = nn.Parameter(...)``, ``load_state_dict``
      with ``assign=True``) is picked up by name (same names and shapes required);
    * a value written in place, through autograd (``p.add_`` under ``no_grad``) or
      around it (``p.data.mul_(1.2)``, which autograd's version counters miss), or a
      buffer updated (BatchNorm statistics), rebuilds the cached graph.

    The check compares each parameter's and buffer's identity, ``data_ptr()``, shape,
    ``_version`` and a float64 checksum (sum of its elements, one reduction per
    tensor: O(#parameters), far below one product's cost). An in-place edit that
    keeps every tensor's sum exactly and bypasses the version counter is not seen;
    call :meth:`release` after such an edit.

    Args:
        model: the network.
        examples: the fixed example set (moved to the model's device).
        loss_fn: ``loss_fn(logits, y) -> scalar`` with **mean** reduction.
        params: ``None`` (all trainable parameters), a parameter/module name
            (prefix, e.g. ``"classifier.4"`` or ``"features.0"``), or a list of
            such names.
        batch_size: examples per product batch (``None``: all at once).
        method: ``"autograd"`` or ``"func"``.

    Raises:
        ValueError: unknown parameter names (the message lists the available
            ones), mixed parameter dtypes/devices, bad ``batch_size``/``method``;
            on a product: the selected parameters were replaced by ones of other
            names, shapes, dtype or device (build a new operator).

    Attributes:
        size: number of selected parameters (length of the flat vectors).
        param_names, shapes: the selected parameters and their shapes.
        n_matvecs: products computed so far.
        setup_seconds: time spent building the cached gradient graph.
    """

    def __init__(self, model: nn.Module, examples: ExampleSet, loss_fn: Callable = F.cross_entropy, *,
                 params=None, batch_size: int | None = None, method: str = "autograd"):
        if method not in ("autograd", "func"):
            raise ValueError(f"method={method!r} is invalid: choose 'autograd' or 'func'")
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"batch_size={batch_size!r} is invalid: must be a positive number of examples")
        if examples.count <= 0:
            raise ValueError("the example set is empty")
        self.model = model
        self.loss_fn = loss_fn
        self.method = method
        sel = _select_parameters(model, params)
        self.param_names = [n for n, _ in sel]
        self.params = [p for _, p in sel]
        dtypes = {p.dtype for p in self.params}
        devices = {p.device for p in self.params}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(f"the selected parameters mix dtypes {dtypes} / devices {devices}")
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        self.shapes = [tuple(p.shape) for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.size = int(sum(self.numels))
        self.param_selection = params
        self.examples = examples if examples.x.device == self.device else examples.to(self.device)
        self.batch_size = None if batch_size is None or batch_size >= examples.count else int(batch_size)
        selected = set(self.param_names)
        self._frozen = [(n, p) for n, p in model.named_parameters() if n not in selected]
        self.n_matvecs = 0
        self.setup_seconds = 0.0
        self._grads: list[Tensor] | None = None
        self._grad_idx: list[int] = []
        self._versions: tuple | None = None  # the model's fingerprint when the cached graph was built

    # ----------------------------------------------------------- protocol
    def __repr__(self) -> str:
        return (f"HessianOperator(size={self.size}, params={len(self.params)} tensors, examples={self.examples.count} "
                f"{self.examples.split}, batch_size={self.batch_size}, method={self.method!r}, dtype={self.dtype})")

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matvec(v)

    def __enter__(self) -> "HessianOperator":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def cached(self) -> bool:
        """Whether a first-order gradient graph is held."""
        return self._grads is not None

    def release(self) -> None:
        """Drop the cached gradient graph (and the activations it holds)."""
        self._grads = None
        self._versions = None

    def describe(self) -> dict:
        """JSON-ready summary: number and selection of parameters, batch size, method and the examples'."""
        return {"n_params": self.size, "params": self.param_selection, "batch_size": self.batch_size,
                "method": self.method, **self.examples.describe()}

    def as_linear_operator(self):
        """A :class:`scipy.sparse.linalg.LinearOperator` (float64 in and out) calling :meth:`matvec`."""
        return _to_scipy(self)

    # ------------------------------------------------------------ products
    def _versions_now(self) -> tuple:
        """A fingerprint of the model's parameters and buffers (see "Model changes" in the class docstring)."""
        tensors = [t for _, t in self.model.named_parameters()] + [b for _, b in self.model.named_buffers()]
        meta = tuple((id(t), t.data_ptr(), tuple(t.shape), t._version) for t in tensors)
        with torch.no_grad():
            sums = [t.detach().sum(dtype=torch.float64) if (t.is_floating_point() or t.is_complex())
                    else t.detach().sum() for t in tensors if t.numel()]
            checksum = tuple(torch.stack([c.to(torch.float64) for c in sums]).cpu().tolist()) if sums else ()
        return meta, checksum

    def _sync_parameters(self) -> None:
        """Pick up parameters replaced in the model since the last call (by name); drop a stale graph.

        Raises:
            ValueError: the selection now has other names, shapes, dtype or device.
        """
        named = dict(self.model.named_parameters())
        if all(named.get(n) is p for n, p in zip(self.param_names, self.params)) and \
                all(named.get(n) is p for n, p in self._frozen) and len(named) == len(self.params) + len(self._frozen):
            return
        sel = _select_parameters(self.model, self.param_selection)
        names = [n for n, _ in sel]
        shapes = [tuple(p.shape) for _, p in sel]
        if names != self.param_names or shapes != self.shapes or \
                any(p.dtype != self.dtype or p.device != self.device for _, p in sel):
            raise ValueError("the model's selected parameters were replaced by ones of other names, shapes, dtype or "
                             f"device (was {len(self.param_names)} tensors, size {self.size}): build a new "
                             "HessianOperator")
        self.params = [p for _, p in sel]
        selected = set(names)
        self._frozen = [(n, p) for n, p in self.model.named_parameters() if n not in selected]
        self.release()

    def _forward_loss(self, x: Tensor, y: Tensor, replace: Sequence[Tensor] | None = None) -> Tensor:
        from torch.func import functional_call

        overrides = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        overrides.update({n: p.detach() for n, p in self._frozen})
        if replace is not None:
            overrides.update(zip(self.param_names, replace))
        with eval_mode(self.model):
            out = functional_call(self.model, overrides, (x,))
        return self.loss_fn(out, y)

    def _gradient_graph(self, x: Tensor, y: Tensor, weight: float) -> tuple[list[Tensor], list[int]]:
        loss = self._forward_loss(x, y)
        if weight != 1.0:
            loss = loss * weight
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True, materialize_grads=True)
        idx = [i for i, g in enumerate(grads) if g.requires_grad]
        return [grads[i] for i in idx], idx

    def _hvp_from(self, grads: list[Tensor], idx: list[int], parts: Sequence[Tensor], retain: bool) -> list[Tensor]:
        out = [torch.zeros_like(p) for p in self.params]
        if not idx:
            return out
        hv = torch.autograd.grad(grads, self.params, grad_outputs=[parts[i] for i in idx], retain_graph=retain,
                                 allow_unused=True, materialize_grads=True)
        return list(hv)

    def prepare(self) -> None:
        """Build the cached gradient graph now (single-batch autograd engine; otherwise a no-op).

        A graph built before the model changed (see the class docstring) is rebuilt.
        """
        self._sync_parameters()
        if self.method != "autograd" or self.batch_size is not None:
            return
        versions = self._versions_now()
        if self._grads is not None and versions == self._versions:
            return
        t0 = time.perf_counter()
        with torch.enable_grad():
            self._grads, self._grad_idx = self._gradient_graph(self.examples.x, self.examples.y, 1.0)
        self._versions = versions  # taken before the build: a change during it is seen next time
        self.setup_seconds += time.perf_counter() - t0

    def matvec(self, v: Tensor) -> Tensor:
        """H @ v for a flat vector ``v`` of length ``size`` (returned in the operator's dtype/device)."""
        v = torch.as_tensor(v)
        if v.shape != (self.size,):
            raise ValueError(f"v has shape {tuple(v.shape)}, expected ({self.size},)")
        v = v.detach().to(device=self.device, dtype=self.dtype)
        parts = [c.view(s) for c, s in zip(v.split(self.numels), self.shapes)]
        self._sync_parameters()
        with torch.enable_grad():
            if self.method == "func":
                hv = self._func_hvp(v)
            elif self.batch_size is None:
                self.prepare()
                hv = torch.cat([h.reshape(-1) for h in self._hvp_from(self._grads, self._grad_idx, parts, True)])
            else:
                hv = torch.zeros(self.size, dtype=self.dtype, device=self.device)
                n = self.examples.count
                for xb, yb in self.examples.batches(self.batch_size):
                    grads, idx = self._gradient_graph(xb, yb, xb.shape[0] / n)
                    hb = self._hvp_from(grads, idx, parts, False)
                    hv += torch.cat([h.reshape(-1) for h in hb])
                    del grads
        self.n_matvecs += 1
        return hv.detach()

    def _func_hvp(self, v: Tensor) -> Tensor:
        from torch.func import grad, jvp

        flat = torch.cat([p.detach().reshape(-1) for p in self.params])
        n = self.examples.count
        bs = self.batch_size or n
        out = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        for xb, yb in self.examples.batches(bs):
            w = xb.shape[0] / n

            def f(theta, xb=xb, yb=yb, w=w):
                parts = [c.view(s) for c, s in zip(theta.split(self.numels), self.shapes)]
                return self._forward_loss(xb, yb, parts) * w

            out += jvp(grad(f), (flat,), (v,))[1]
        return out


class DenseOperator:
    """A dense symmetric matrix as an operator (tests, small problems).

    Raises:
        ValueError: not square or not symmetric (relative tolerance 1e-6).
    """

    def __init__(self, matrix: Tensor):
        m = torch.as_tensor(matrix)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"matrix must be square, got shape {tuple(m.shape)}")
        scale = float(m.abs().max()) if m.numel() else 0.0
        if m.numel() and float((m - m.T).abs().max()) > 1e-6 * max(scale, 1e-300):
            raise ValueError("matrix is not symmetric")
        self.matrix = m
        self.size = int(m.shape[0])
        self.dtype = m.dtype
        self.device = m.device
        self.n_matvecs = 0

    def matvec(self, v: Tensor) -> Tensor:
        """``M v`` (``v`` converted to the matrix's device and dtype); counted in ``n_matvecs``."""
        self.n_matvecs += 1
        return self.matrix @ torch.as_tensor(v).to(device=self.device, dtype=self.dtype)

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matvec(v)

    def as_linear_operator(self):
        """The operator as a ``scipy.sparse.linalg.LinearOperator`` (float64 NumPy vectors), e.g. for ARPACK."""
        return _to_scipy(self)


def _op_dtype(op) -> torch.dtype:
    return getattr(op, "dtype", torch.float64)


def _op_device(op) -> torch.device:
    return torch.device(getattr(op, "device", "cpu"))


def _to_scipy(op):
    from scipy.sparse.linalg import LinearOperator

    dtype, device, n = _op_dtype(op), _op_device(op), int(op.size)

    def mv(x):
        v = torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(-1)))
        return op.matvec(v.to(device=device, dtype=dtype)).detach().to("cpu", torch.float64).numpy()

    return LinearOperator((n, n), matvec=mv, rmatvec=mv, dtype=np.float64)


class _Counted:
    """Counts the products an algorithm asks for (the operator's own counter may be shared)."""

    def __init__(self, op):
        if not hasattr(op, "matvec") or not hasattr(op, "size"):
            if isinstance(op, Tensor):
                op = DenseOperator(op)
            else:
                raise TypeError(f"expected an operator with size and matvec, got {type(op).__name__}")
        self.op = op
        self.n = 0
        self.size = int(op.size)
        self.dtype = _op_dtype(op)
        self.device = _op_device(op)

    def __call__(self, v: Tensor) -> Tensor:
        self.n += 1
        return self.op.matvec(v)


def _meta(op) -> dict:
    ex = getattr(op, "examples", None)
    return {"count": None if ex is None else int(ex.count), "split": None if ex is None else ex.split,
            "n_params": int(op.size)}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _randn(n: int, g: torch.Generator, dtype, device) -> Tensor:
    return torch.randn(n, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def _rademacher(n: int, g: torch.Generator, dtype, device) -> Tensor:
    return (torch.randint(0, 2, (n,), generator=g, dtype=torch.int8) * 2 - 1).to(device=device, dtype=dtype)


# ====================================================================== results
@dataclass(frozen=True, eq=False)
class EigenResult(ResultRecord):
    """Eigenvalues of a curvature operator.

    Attributes:
        values: float64 eigenvalues. ``which="LA"``: largest first (λ1 ≥ λ2 ≥ …);
            ``"SA"``: smallest first (most negative first); ``"both"``: the top-k
            (largest first) followed by the bottom-k (smallest first).
        vectors: eigenvectors ``[len(values), n_params]`` (operator dtype) or None.
        residuals: ‖H v − λ v‖ per value (Lanczos: the Ritz estimate β_m·|s_mi|;
            power iteration: of the last iterate) or None where not defined.
        converged: every wanted value met the stopping rule (None: not reported).
        n_matvecs: Hessian-vector products used; iterations: steps taken.
        which, method, k, tol, seed: the request.
        count, split: the example set (None for a plain matrix); n_params: operator size.
        seconds: wall time.
    """

    values: Any
    vectors: Any = None
    residuals: Any = None
    converged: bool | None = None
    n_matvecs: int = 0
    iterations: int = 0
    which: str = "LA"
    method: str = "lanczos"
    k: int = 1
    tol: float = 0.0
    seed: int | None = 0
    count: int | None = None
    split: str | None = None
    n_params: int = 0
    seconds: float = 0.0

    @property
    def top(self):
        """The largest values, largest first (``which`` LA or both)."""
        if self.which == "SA":
            raise ValueError("this result holds the smallest eigenvalues (which='SA')")
        return self.values[:self.k]

    @property
    def bottom(self):
        """The smallest values, smallest first (``which`` SA or both)."""
        if self.which == "LA":
            raise ValueError("this result holds the largest eigenvalues (which='LA')")
        return self.values[-self.k:] if self.which == "both" else self.values[:self.k]


@dataclass(frozen=True, eq=False)
class TraceResult(ResultRecord):
    """A stochastic trace estimate.

    Attributes:
        estimate: the trace estimate; std_error: its standard error
            (sample standard deviation / sqrt(number of samples) of the stochastic part).
        samples: the per-probe samples vᵀHv (Hutch++: of the deflated remainder).
        low_rank_trace: Hutch++'s exact trace on the sketched subspace (None otherwise).
        n_matvecs, n_probes, seed, distribution, method: what was done.
        count, split, n_params, seconds: as in :class:`EigenResult`.
    """

    estimate: float
    std_error: float
    samples: Any
    n_matvecs: int
    n_probes: int
    seed: int | None = 0
    distribution: str = "rademacher"
    method: str = "hutchinson"
    low_rank_trace: float | None = None
    count: int | None = None
    split: str | None = None
    n_params: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class DensityResult(ResultRecord):
    """Eigenvalue spectral density by stochastic Lanczos quadrature.

    Attributes:
        grid: float64 eigenvalue grid; density: float64 density on it, strictly
            positive (clamped at ``density_floor``) and integrating to 1 (trapezoid).
        nodes, weights: per probe, the Gauss quadrature nodes (eigenvalues of the
            Lanczos tridiagonal T) and weights (squared first components of T's
            eigenvectors; they sum to 1).
        sigma: Gaussian broadening width; steps: Lanczos steps asked per probe.
        mass_in_grid: integral of the broadened density over the grid before
            renormalisation (below 1 when tails were cut off).
        density_floor: lower clamp of ``density`` (for the log axis).
        trace_estimate, trace_std_error: n_params · mean over probes of Σ wᵢθᵢ
            (each term is a Hutchinson sample vᵀHv) and its standard error (NaN for one probe).
        n_matvecs, n_probes, seed, method, count, split, n_params, seconds: as elsewhere.
    """

    grid: Any
    density: Any
    nodes: Any
    weights: Any
    sigma: float
    steps: int
    n_probes: int
    n_matvecs: int
    seed: int | None = 0
    mass_in_grid: float = 1.0
    density_floor: float = 0.0
    trace_estimate: float = float("nan")
    trace_std_error: float = float("nan")
    method: str = "slq"
    count: int | None = None
    split: str | None = None
    n_params: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class LayerwiseResult(ResultRecord):
    """Per-layer curvature: each entry uses the Hessian block of that layer's parameters only.

    Attributes:
        names: module names (``by="module"``) or parameter names (``by="parameter"``).
        n_params: parameters per entry.
        top_eigenvalues: λmax of each block (NaN where not computed); converged: per entry.
        traces, trace_std_errors: trace estimate of each block (NaN where not computed).
        n_matvecs: products per entry.
        what, by, tol, n_probes, trace_method, seed, count, split, seconds: the request.
    """

    names: list
    n_params: list
    top_eigenvalues: Any
    traces: Any
    trace_std_errors: Any
    n_matvecs: list
    converged: list
    what: str = "top"
    by: str = "module"
    tol: float = 1e-3
    n_probes: int = 0
    trace_method: str = "hutchpp"
    seed: int | None = 0
    count: int | None = None
    split: str | None = None
    seconds: float = 0.0


# ====================================================================== Lanczos core
class _Lanczos:
    """Lanczos tridiagonalisation with full re-orthogonalisation.

    Three-term recurrence plus one classical Gram-Schmidt pass against the whole
    basis (two GEMVs), repeated once when it removed most of the vector
    ("twice is enough", Kahan/Parlett), so no ghost eigenvalues appear. The
    basis grows in chunks (no preallocation of ``max_steps`` vectors).
    On breakdown (β ≈ 0: an invariant subspace was found) it either stops
    (``restart=None``) or continues with a fresh random vector orthogonal to
    the basis (T is then block diagonal).
    """

    def __init__(self, matvec: Callable, v0: Tensor, max_steps: int, restart: torch.Generator | None = None):
        self.matvec = matvec
        self.n = v0.numel()
        self.dtype, self.device = v0.dtype, v0.device
        self.max_steps = max_steps
        self.restart = restart
        self.V = torch.empty(min(max_steps, 16), self.n, dtype=self.dtype, device=self.device)
        self.alpha: list[float] = []
        self.beta: list[float] = []      # beta[j]: T[j, j+1] (0 after a restart)
        self.last_beta = 0.0             # coupling to the next vector (for Ritz residuals)
        self.m = 0
        self.exhausted = False
        self.v = v0 / torch.linalg.vector_norm(v0)
        self.eps = torch.finfo(self.dtype).eps

    def _grow(self) -> None:
        if self.m < self.V.shape[0]:
            return
        new = torch.empty(min(self.max_steps, 2 * self.V.shape[0]), self.n, dtype=self.dtype, device=self.device)
        new[:self.m] = self.V[:self.m]
        self.V = new

    def _orthogonalise(self, w: Tensor, upto: int) -> Tensor:
        B = self.V[:upto]
        for _ in range(2):
            before = torch.linalg.vector_norm(w)
            w = w - (B @ w) @ B
            if torch.linalg.vector_norm(w) > 0.7 * before:
                break
        return w

    def step(self) -> None:
        j = self.m
        self._grow()
        self.V[j] = self.v
        w = self.matvec(self.v).to(dtype=self.dtype, device=self.device)
        a = float(torch.dot(w, self.v))
        w = w - a * self.v
        if j > 0 and self.beta[j - 1] != 0.0:
            w = w - self.beta[j - 1] * self.V[j - 1]
        w = self._orthogonalise(w, j + 1)
        b = float(torch.linalg.vector_norm(w))
        self.alpha.append(a)
        self.m = j + 1
        self.last_beta = b
        scale = max(max(abs(x) for x in self.alpha), max(self.beta, default=0.0), 1e-300)
        if self.m >= self.n:
            self.exhausted = True
            self.beta.append(b)
            return
        if b <= 100 * self.eps * scale:
            if self.restart is None:
                self.exhausted = True
                self.beta.append(b)
                return
            for _ in range(3):
                r = _randn(self.n, self.restart, self.dtype, self.device)
                r = self._orthogonalise(r, self.m)
                nr = float(torch.linalg.vector_norm(r))
                if nr > 1e-3:
                    break
            self.v = r / nr
            self.beta.append(0.0)
            return
        self.v = w / b
        self.beta.append(b)

    def tridiagonal(self) -> Tensor:
        m = self.m
        T = torch.diag(torch.tensor(self.alpha, dtype=torch.float64))
        if m > 1:
            off = torch.tensor(self.beta[:m - 1], dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        return T


def _validate_which(which: str) -> None:
    if which not in ("LA", "SA", "both"):
        raise ValueError(f"which={which!r} is invalid: choose 'LA' (largest), 'SA' (smallest) or 'both'")


def lanczos(op, k: int = 5, which: str = "LA", tol: float = 1e-3, max_iter: int | None = None, seed: int = 0,
            return_vectors: bool = False, callback: Callable[[int, Tensor], Any] | None = None) -> EigenResult:
    """Extreme eigenvalues by Lanczos with full re-orthogonalisation (own torch implementation).

    After every step the tridiagonal T_m is diagonalised (T_m = S Θ Sᵀ); the
    Ritz pair (θᵢ, V sᵢ) has residual ‖H V sᵢ − θᵢ V sᵢ‖ = β_m |s_mi|. The run
    stops when every wanted pair satisfies β_m |s_mi| <= tol · max(|θᵢ|, √ε ‖T‖)
    (ε of the operator dtype; the floor keeps eigenvalues near zero from
    demanding more accuracy than the HVP has), when the Krylov space is
    exhausted (then the values are exact), or after ``max_iter`` steps
    (``converged=False``). Eigenvalue errors are about residual²/gap, so tol 1e-3
    typically gives values accurate to 1e-6 relative (float32 HVPs limit the
    accuracy to about 1e-6 anyway). Like every single-vector Krylov method it
    sees one copy of a multiple eigenvalue per start vector (after a breakdown
    it restarts with a fresh random vector orthogonal to the basis, which finds
    further copies), and an eigenvector with a negligible component in the
    start vector can be missed: the random Gaussian start makes that unlikely.
    Ghorbani et al. 2019; Golub & Van Loan §10.

    Args:
        op: an operator with ``size`` and ``matvec`` (or a dense symmetric tensor).
        k: number of eigenvalues (per end for ``which="both"``).
        which: ``"LA"`` largest, ``"SA"`` smallest (most negative: negative
            curvature), ``"both"`` top-k and bottom-k from one Krylov space.
        tol: relative residual tolerance.
        max_iter: maximum Lanczos steps = stored basis vectors (default
            ``min(size, max(100, 10·k + 50))``).
        seed: seed of the Gaussian start vector (generated on the CPU).
        return_vectors: also return the Ritz vectors ``[len(values), size]``.
        callback: ``callback(iteration, ritz_values)`` after every step, with all
            current Ritz values (float64, largest first); returning True stops
            the run (``converged`` then reflects the stopping rule at that step).

    Returns:
        :class:`EigenResult` (method ``"lanczos"``).
    """
    _validate_which(which)
    t0 = time.perf_counter()
    A = _Counted(op)
    n = A.size
    if k <= 0 or k > n:
        raise ValueError(f"k={k!r} is invalid for an operator of size {n}")
    need = k if which != "both" else min(n, 2 * k)
    max_iter = min(n, max(100, 10 * need + 50)) if max_iter is None else min(int(max_iter), n)
    if max_iter < need:
        raise ValueError(f"max_iter={max_iter} is smaller than the number of wanted eigenvalues ({need})")
    g = _gen(seed)
    L = _Lanczos(A, _randn(n, g, A.dtype, A.device), max_iter, restart=g)
    floor_rel = math.sqrt(L.eps)
    converged = False
    theta = S = res = sel = None
    while True:
        L.step()
        T = L.tridiagonal()
        theta, S = torch.linalg.eigh(T)  # ascending
        m = L.m
        res = (L.last_beta * S[m - 1, :]).abs()
        if which == "LA":
            sel = torch.arange(m - 1, max(m - 1 - k, -1), -1)
        elif which == "SA":
            sel = torch.arange(0, min(k, m))
        else:
            sel = torch.cat([torch.arange(m - 1, max(m - 1 - k, -1), -1), torch.arange(0, min(k, m))])
        tnorm = float(theta.abs().max())
        thr = tol * torch.clamp(theta[sel].abs(), min=floor_rel * tnorm)
        converged = L.exhausted or (m >= need and bool((res[sel] <= thr).all()))
        stop = False
        if callback is not None:
            stop = bool(callback(m, theta.flip(0).clone()))
        if converged or stop or L.exhausted or m >= max_iter:
            break
    vectors = None
    if return_vectors:
        vectors = S[:, sel].T.to(dtype=L.dtype, device=L.device) @ L.V[:L.m]
    return EigenResult(values=theta[sel].clone(), vectors=vectors, residuals=res[sel].clone(),
                       converged=bool(converged), n_matvecs=A.n, iterations=L.m, which=which, method="lanczos",
                       k=int(k), tol=float(tol), seed=int(seed), seconds=time.perf_counter() - t0, **_meta(A.op))


def eigsh_eigenvalues(op, k: int = 5, which: str = "LA", tol: float = 1e-3, seed: int = 0, ncv: int | None = None,
                      return_vectors: bool = False, max_iter: int | None = None) -> EigenResult:
    """Extreme eigenvalues by ARPACK's implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``).

    A second, independent backend for cross-checks. The operator is wrapped as a
    float64 :class:`~scipy.sparse.linalg.LinearOperator`; the start vector is
    Gaussian from ``seed``. BLAS threads are limited to 1 during the call
    (numpy/scipy's OpenBLAS threads otherwise compete with torch's on small
    machines). ``tol`` is ARPACK's relative accuracy of the Ritz values.
    ``converged=False`` when ARPACK stopped early (the values found so far
    are returned). No residuals (ARPACK does not report them). Only the
    OpenBLAS pools are limited (``user_api="blas"``): torch's OpenMP pool keeps
    its threads, so the HVPs inside run at full speed.

    Raises:
        ValueError: ``k >= size`` (ARPACK needs k < n) or a bad ``which``.
    """
    if which not in ("LA", "SA"):
        raise ValueError(f"which={which!r} is invalid for eigsh: choose 'LA' or 'SA'")
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    try:  # installed with scikit-learn
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        def threadpool_limits(**_kw):
            return contextlib.nullcontext()

    t0 = time.perf_counter()
    A = _Counted(op)
    n = A.size
    if not 0 < k < n:
        raise ValueError(f"k={k!r} is invalid for eigsh on an operator of size {n} (need 0 < k < size)")
    lin = _to_scipy(_CountingView(A))
    v0 = np.random.default_rng(int(seed)).standard_normal(n)
    converged = True
    with threadpool_limits(limits=1, user_api="blas"):  # numpy/scipy OpenBLAS only, not torch's OpenMP pool
        try:
            out = eigsh(lin, k=k, which=which, tol=tol, v0=v0, ncv=ncv, maxiter=max_iter,
                        return_eigenvectors=return_vectors)
        except ArpackNoConvergence as e:
            converged = False
            out = (e.eigenvalues, e.eigenvectors) if return_vectors else e.eigenvalues
    vals, vecs = (out if return_vectors else (out, None))
    vals = torch.as_tensor(np.asarray(vals, dtype=np.float64))
    order = torch.argsort(vals, descending=(which == "LA"))
    vectors = None
    if return_vectors and vecs is not None:
        vectors = torch.as_tensor(np.asarray(vecs)[:, order.numpy()].T.copy()).to(dtype=A.dtype, device=A.device)
    return EigenResult(values=vals[order], vectors=vectors, residuals=None, converged=converged, n_matvecs=A.n,
                       iterations=A.n, which=which, method="eigsh", k=int(k), tol=float(tol), seed=int(seed),
                       seconds=time.perf_counter() - t0, **_meta(A.op))


class _CountingView:
    def __init__(self, counted: _Counted):
        self.c = counted
        self.size, self.dtype, self.device = counted.size, counted.dtype, counted.device

    def matvec(self, v):
        return self.c(v)


def power_iteration(op, k: int = 5, max_iter: int = 100, tol: float = 1e-3, seed: int = 0,
                    return_vectors: bool = False) -> EigenResult:
    """PyHessian's method: deflated power iteration with a relative-change stopping rule.

    For each of the k values: a Gaussian start vector, then repeat
    ``v ← orth(v against the found vectors); Hv; λ = vᵀHv; v ← Hv/‖Hv‖`` until
    two successive λ differ by less than ``tol`` relative, or ``max_iter``
    products (Yao et al. 2020). Reproduced for comparison; prefer :func:`lanczos`.

    Caveats (measured against :func:`lanczos` on the same operators):

    * power iteration converges to the eigenvalue of **largest magnitude**; when
      the most negative eigenvalue is larger in magnitude than λ_k it returns it
      among the "top" values, and it cannot target negative curvature without a
      shift (use :func:`smallest_eigenvalues`);
    * its rate is |λ2/λ1| per step, slow for the clustered top of a Hessian
      spectrum, so the relative-change rule fires before convergence: 1-6 %
      errors at tol 1e-3 are typical, and it needs 5-60x more products than
      Lanczos for the same accuracy.

    Values are returned sorted, largest first (PyHessian returns them in the
    order found). ``residuals`` are ‖Hv − λv‖ of the last iterate (free: Hv is
    known); ``converged`` is True when every value met the relative-change rule.
    """
    t0 = time.perf_counter()
    A = _Counted(op)
    n = A.size
    if k <= 0 or k > n:
        raise ValueError(f"k={k!r} is invalid for an operator of size {n}")
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r} is invalid: must be >= 1")
    g = _gen(seed)
    found: list[Tensor] = []
    vals, resid, ok, iters = [], [], [], 0
    for _ in range(k):
        v = _randn(n, g, A.dtype, A.device)
        v = v / torch.linalg.vector_norm(v)
        lam, conv, r = None, False, float("nan")
        for _it in range(max_iter):
            for u in found:
                v = v - torch.dot(v, u) * u
            v = v / torch.linalg.vector_norm(v)
            hv = A(v)
            iters += 1
            new = float(torch.dot(hv, v))
            r = float(torch.linalg.vector_norm(hv - new * v))
            nh = torch.linalg.vector_norm(hv)
            prev_v = v
            v = hv / nh if float(nh) > 0 else v
            if lam is not None and abs(lam - new) / (abs(lam) + 1e-12) < tol:
                lam, conv = new, True
                break
            lam = new
        vals.append(lam)
        resid.append(r)
        ok.append(conv)
        found.append(v if conv else prev_v)
    values = torch.tensor(vals, dtype=torch.float64)
    order = torch.argsort(values, descending=True)
    vectors = torch.stack(found)[order] if return_vectors else None
    return EigenResult(values=values[order], vectors=vectors,
                       residuals=torch.tensor(resid, dtype=torch.float64)[order], converged=all(ok), n_matvecs=A.n,
                       iterations=iters, which="LA", method="power_iteration", k=int(k), tol=float(tol),
                       seed=int(seed), seconds=time.perf_counter() - t0, **_meta(A.op))


def smallest_eigenvalues(op, k: int = 1, tol: float = 1e-3, max_iter: int | None = None, seed: int = 0,
                         return_vectors: bool = False, method: str = "lanczos") -> EigenResult:
    """The k smallest (most negative) eigenvalues: negative curvature / saddle directions.

    Lanczos targets either end of the spectrum from the same Krylov space, so
    ``which="SA"`` needs no transformation. Power iteration cannot do this
    without a shift: it converges to the eigenvalue of largest *magnitude*
    (usually λmax), and finding λmin needs iterating on ``H − σI`` with
    σ ≥ λmax (e.g. the ``0.51·λmax`` trick of the loss-landscape code), which
    converges slowly because λmin − σ is close to the rest of the shifted spectrum.

    Args:
        op: an operator with ``size`` and ``matvec`` (or a dense symmetric tensor).
        k: number of eigenvalues.
        tol: relative residual tolerance.
        max_iter: maximum iterations (Lanczos steps, or ARPACK's ``maxiter``; default as :func:`lanczos`).
        seed: seed of the start vector.
        return_vectors: also return the eigenvectors ``[k, size]``.
        method: ``"lanczos"`` (own) or ``"eigsh"`` (ARPACK).

    Returns:
        :class:`EigenResult` with the k smallest eigenvalues, smallest first.

    Raises:
        ValueError: an unknown ``method``.
    """
    if method == "lanczos":
        return lanczos(op, k=k, which="SA", tol=tol, max_iter=max_iter, seed=seed, return_vectors=return_vectors)
    if method == "eigsh":
        return eigsh_eigenvalues(op, k=k, which="SA", tol=tol, seed=seed, return_vectors=return_vectors,
                                 max_iter=max_iter)
    raise ValueError(f"method={method!r} is invalid: choose 'lanczos' or 'eigsh'")


# ====================================================================== trace
def _draw(distribution: str, n: int, g, dtype, device) -> Tensor:
    if distribution == "rademacher":
        return _rademacher(n, g, dtype, device)
    if distribution == "gaussian":
        return _randn(n, g, dtype, device)
    raise ValueError(f"distribution={distribution!r} is invalid: choose 'rademacher' or 'gaussian'")


def _mean_se(samples: Tensor) -> tuple[float, float]:
    s = samples.to(torch.float64)
    if s.numel() == 0:
        return float("nan"), float("nan")
    se = float(s.std(correction=1) / math.sqrt(s.numel())) if s.numel() > 1 else float("nan")
    return float(s.mean()), se


def hutchinson_trace(op, n_probes: int = 100, seed: int = 0, distribution: str = "rademacher") -> TraceResult:
    """Hutchinson's estimator tr(H) ≈ (1/m) Σ vᵢᵀ H vᵢ with E[v vᵀ] = I.

    Rademacher probes (entries ±1) have the smallest variance among i.i.d.
    probes: Var = 2 Σ_{i≠j} H_ij². The standard error is the sample standard
    deviation / sqrt(m) (unlike PyHessian's stop on a small change of the running
    mean, which says nothing about accuracy). One product per probe.
    Hutchinson 1990; Yao et al. 2020.
    """
    if n_probes <= 0:
        raise ValueError(f"n_probes={n_probes!r} is invalid: must be positive")
    t0 = time.perf_counter()
    A = _Counted(op)
    g = _gen(seed)
    samples = []
    for _ in range(n_probes):
        v = _draw(distribution, A.size, g, A.dtype, A.device)
        samples.append(float(torch.dot(A(v), v)))
    s = torch.tensor(samples, dtype=torch.float64)
    est, se = _mean_se(s)
    return TraceResult(estimate=est, std_error=se, samples=s, n_matvecs=A.n, n_probes=n_probes, seed=int(seed),
                       distribution=distribution, method="hutchinson", seconds=time.perf_counter() - t0,
                       **_meta(A.op))


def hutchpp_trace(op, n_matvecs: int = 102, seed: int = 0, distribution: str = "rademacher") -> TraceResult:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021): low-rank deflation plus Hutchinson on the rest.

    With s = n_matvecs // 3: sketch Y = H S (S: s random probes), Q = orth(Y),
    then tr(H) ≈ tr(Qᵀ H Q) + (1/s) Σ gᵢᵀ (I−QQᵀ) H (I−QQᵀ) gᵢ. It uses 3s
    products (2s + size when s > size: then Q spans everything and the
    result is exact); the error falls as O(1/m) instead of O(1/√m) when the spectrum
    decays, as Hessian spectra do (a few outliers hold much of the trace).
    ``std_error`` is that of the Hutchinson part; ``samples`` are its terms.

    Raises:
        ValueError: ``n_matvecs < 3``.
    """
    if n_matvecs < 3:
        raise ValueError(f"n_matvecs={n_matvecs!r} is invalid: Hutch++ needs at least 3 products")
    t0 = time.perf_counter()
    A = _Counted(op)
    n = A.size
    s = n_matvecs // 3
    g = _gen(seed)
    S = torch.stack([_draw(distribution, n, g, A.dtype, A.device) for _ in range(s)], 1)
    Y = torch.stack([A(S[:, i]) for i in range(s)], 1)
    Q, _ = torch.linalg.qr(Y.to(torch.float64))
    Q = Q.to(A.dtype)
    low = sum(float(torch.dot(Q[:, i], A(Q[:, i]))) for i in range(Q.shape[1]))
    samples = []
    for _ in range(s):
        v = _draw(distribution, n, g, A.dtype, A.device)
        v = v - Q @ (Q.T @ v)
        samples.append(float(torch.dot(v, A(v))))
    smp = torch.tensor(samples, dtype=torch.float64)
    rest, se = _mean_se(smp)
    return TraceResult(estimate=low + rest, std_error=se, samples=smp, n_matvecs=A.n, n_probes=s, seed=int(seed),
                       distribution=distribution, method="hutch++", low_rank_trace=low,
                       seconds=time.perf_counter() - t0, **_meta(A.op))


# ====================================================================== density
def _broaden(nodes: list[Tensor], weights: list[Tensor], steps: int, sigma: float | None, grid_points: int,
             grid_padding: float) -> tuple[Tensor, Tensor, float, float, float]:
    allnodes = torch.cat([t.to(torch.float64) for t in nodes])
    lo, hi = float(allnodes.min()), float(allnodes.max())
    rng = hi - lo
    if rng <= 0:
        rng = max(abs(hi), 1e-12)
    if sigma is None:
        sigma = rng / max(int(steps), 1)
    if not sigma > 0:
        raise ValueError(f"sigma={sigma!r} is invalid: must be positive")
    pad = max(grid_padding * rng, 5.0 * sigma)  # at least 5σ: tails beyond hold < 3e-7 of a node's weight
    grid = torch.linspace(lo - pad, hi + pad, int(grid_points), dtype=torch.float64)
    dens = torch.zeros_like(grid)
    for th, w in zip(nodes, weights):
        z = (grid[:, None] - th.to(torch.float64)[None, :]) / sigma
        dens += (torch.exp(-0.5 * z * z) * w.to(torch.float64)[None, :]).sum(1)
    dens /= len(nodes) * sigma * math.sqrt(2 * math.pi)
    mass = float(torch.trapezoid(dens, grid))
    floor = float(dens.max()) * 1e-12 if float(dens.max()) > 0 else 1e-300
    dens = torch.clamp(dens, min=floor)
    dens = dens / float(torch.trapezoid(dens, grid))
    return grid, dens, float(sigma), mass, floor


def spectral_density(op, n_probes: int = 1, steps: int = 80, seed: int = 0, sigma: float | None = None,
                     grid_points: int = 1000, grid_padding: float = 0.1) -> DensityResult:
    """Eigenvalue spectral density by stochastic Lanczos quadrature (SLQ).

    For each probe: a normalised Rademacher vector v, ``steps`` Lanczos steps
    with full re-orthogonalisation (without it, lost orthogonality produces
    ghost copies of the outliers), T = S Θ Sᵀ by ``torch.linalg.eigh`` of the
    symmetric tridiagonal T (not a general ``eig``). The Gauss quadrature rule
    vᵀ f(H) v ≈ Σᵢ wᵢ f(θᵢ) has nodes θᵢ and weights wᵢ = S[0, i]² (squared
    **first** components of T's eigenvectors); it is exact for polynomials of
    degree < 2·steps. The density is the probe average of Σᵢ wᵢ N(λ; θᵢ, σ²)
    (Ghorbani et al. 2019; Yao et al. 2020; Golub & Meurant 1994).

    ``sigma`` defaults to (θmax − θmin)/steps: the m nodes of a probe spread over
    the range, so that width merges neighbouring nodes into a smooth curve while
    keeping outliers separated by more than a few node spacings visible. The
    grid spans [θmin − p, θmax + p] with p = max(``grid_padding``·(θmax − θmin), 5σ)
    (the 5σ minimum keeps the tails of the extreme nodes when steps < 50); the
    density is clamped below at 1e-12 of its maximum (``density_floor``: it is
    drawn on a log axis) and renormalised to integrate to 1 (trapezoid rule);
    ``mass_in_grid`` is the mass before renormalisation.

    Breakdown (β ≈ 0, the Krylov space of v is exhausted, e.g. ``steps >= size``)
    ends a probe early: its rule is then exact. Each probe's first moment
    n·Σ wᵢθᵢ equals the Hutchinson sample vᵀHv, reported as ``trace_estimate``.
    """
    if n_probes <= 0 or steps <= 0:
        raise ValueError(f"n_probes={n_probes!r} and steps={steps!r} must be positive")
    t0 = time.perf_counter()
    A = _Counted(op)
    n = A.size
    g = _gen(seed)
    nodes, weights = [], []
    for _ in range(n_probes):
        v = _rademacher(n, g, A.dtype, A.device)
        L = _Lanczos(A, v, min(int(steps), n), restart=None)
        while L.m < L.max_steps and not L.exhausted:
            L.step()
        theta, S = torch.linalg.eigh(L.tridiagonal())
        nodes.append(theta)
        weights.append(S[0, :] ** 2)
    grid, dens, sigma, mass, floor = _broaden(nodes, weights, steps, sigma, grid_points, grid_padding)
    moments = torch.tensor([float((w * t).sum()) * n for t, w in zip(nodes, weights)], dtype=torch.float64)
    tr, tr_se = _mean_se(moments)
    return DensityResult(grid=grid, density=dens, nodes=nodes, weights=weights, sigma=sigma, steps=int(steps),
                         n_probes=int(n_probes), n_matvecs=A.n, seed=int(seed), mass_in_grid=mass,
                         density_floor=floor, trace_estimate=tr, trace_std_error=tr_se, method="slq",
                         seconds=time.perf_counter() - t0, **_meta(A.op))


def eigenvalue_ratio(result_or_values, i: int = 5) -> float:
    """λ1/λ_i of the largest eigenvalues (i = 5: the λmax/λ5 sharpness ratio of [Foret 2021], [Murphy 2025, §2.2.1]).

    A higher ratio means the curvature is concentrated in fewer directions
    (a "sharper" minimum in that reading).

    Args:
        result_or_values: an :class:`EigenResult` with the largest values
            (``which`` LA or both) or a sequence of eigenvalues (sorted here).
        i: 1-based index of the denominator.

    Raises:
        ValueError: fewer than ``i`` values, or a result of the smallest values.
    """
    if i < 1:
        raise ValueError(f"i={i!r} is invalid: must be >= 1")
    if isinstance(result_or_values, EigenResult):
        vals = np.asarray(_np(result_or_values.top), dtype=np.float64)
    else:
        vals = np.sort(np.asarray(_np(result_or_values), dtype=np.float64).reshape(-1))[::-1]
    if vals.size < i:
        raise ValueError(f"need at least {i} eigenvalues for λ1/λ{i}, got {vals.size}")
    den = vals[i - 1]
    return float(vals[0] / den) if den != 0 else float("inf") * np.sign(vals[0])


def _np(x):
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return x


# ====================================================================== layerwise
def _layer_groups(model: nn.Module, by: str) -> list[tuple[str, list[str]]]:
    if by == "parameter":
        return [(n, [n]) for n, p in model.named_parameters() if p.requires_grad]
    if by != "module":
        raise ValueError(f"by={by!r} is invalid: choose 'module' or 'parameter'")
    out = []
    for name, mod in model.named_modules():
        own = [pn for pn, p in mod.named_parameters(recurse=False) if p.requires_grad]
        if own:
            out.append((name or "(root)", [f"{name}.{pn}" if name else pn for pn in own]))
    return out


def layerwise(model: nn.Module, examples: ExampleSet, what: str = "top", *, by: str = "module",
              loss_fn: Callable = F.cross_entropy, tol: float = 1e-3, max_iter: int | None = None, seed: int = 0,
              n_probes: int = 30, trace_method: str = "hutchpp", batch_size: int | None = None) -> LayerwiseResult:
    """Top eigenvalue and/or trace of each layer's Hessian block.

    A frequent request on PyHessian's tracker (https://github.com/amirgholami/PyHessian/issues/10).

    Each entry gets its own :class:`HessianOperator` restricted to that
    layer's parameters (the diagonal block H_ll of the full Hessian; cross-layer
    blocks are ignored), released after use.

    Args:
        model: the network (its state is preserved).
        examples: the examples whose mean loss defines the Hessian.
        what: ``"top"``, ``"trace"`` or ``"both"``.
        by: ``"module"`` (modules that own parameters: weight and bias together)
            or ``"parameter"`` (every parameter tensor alone).
        loss_fn: the loss, mean reduction (default cross-entropy).
        tol: Lanczos relative residual tolerance (top eigenvalue).
        max_iter: maximum Lanczos steps (default as :func:`lanczos`).
        seed: seed of the Lanczos start vector and of the trace probes.
        n_probes: trace budget per entry (Hutchinson probes, or Hutch++ products).
        trace_method: ``"hutchpp"`` or ``"hutchinson"``.
        batch_size: examples per Hessian-vector product batch (default: all at once).

    Returns:
        A :class:`LayerwiseResult`, one entry per layer (or parameter).

    Raises:
        ValueError: an unknown ``what`` or ``trace_method``.
    """
    if what not in ("top", "trace", "both"):
        raise ValueError(f"what={what!r} is invalid: choose 'top', 'trace' or 'both'")
    if trace_method not in ("hutchpp", "hutchinson"):
        raise ValueError(f"trace_method={trace_method!r} is invalid: choose 'hutchpp' or 'hutchinson'")
    t0 = time.perf_counter()
    groups = _layer_groups(model, by)
    names, sizes, tops, trs, ses, nmv, conv = [], [], [], [], [], [], []
    with preserved_state(model):
        for gname, pnames in groups:
            with HessianOperator(model, examples, loss_fn, params=pnames, batch_size=batch_size) as op:
                top, tr, se, c = float("nan"), float("nan"), float("nan"), True
                if what in ("top", "both"):
                    r = lanczos(op, k=1, which="LA", tol=tol, max_iter=max_iter, seed=seed)
                    top, c = float(r.values[0]), bool(r.converged)
                if what in ("trace", "both"):
                    t = (hutchpp_trace(op, n_matvecs=max(3, n_probes), seed=seed) if trace_method == "hutchpp"
                         else hutchinson_trace(op, n_probes=n_probes, seed=seed))
                    tr, se = t.estimate, t.std_error
                names.append(gname)
                sizes.append(op.size)
                tops.append(top)
                trs.append(tr)
                ses.append(se)
                nmv.append(op.n_matvecs)
                conv.append(c)
    return LayerwiseResult(names=names, n_params=sizes, top_eigenvalues=torch.tensor(tops, dtype=torch.float64),
                           traces=torch.tensor(trs, dtype=torch.float64),
                           trace_std_errors=torch.tensor(ses, dtype=torch.float64), n_matvecs=nmv, converged=conv,
                           what=what, by=by, tol=float(tol), n_probes=int(n_probes), trace_method=trace_method,
                           seed=int(seed), count=int(examples.count), split=examples.split,
                           seconds=time.perf_counter() - t0)


# ====================================================================== PyHessian backend
_PYHESSIAN_LOCK = threading.Lock()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    if dtype == old or not dtype.is_floating_point:
        yield
        return
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@contextlib.contextmanager
def _pyhessian_session(model: nn.Module, examples: ExampleSet, loss_fn: Callable, seed: int,
                       batch_size: int | None):
    """A ``pyhessian.hessian`` object with HVP counting, seeded RNG and full clean-up.

    PyHessian calls ``model.eval()`` on the caller's model, accumulates a
    graph-carrying gradient into every ``.grad`` (``loss.backward(create_graph=True)``)
    and draws its random vectors from torch's global generator. Here the model
    is wrapped in :func:`~workbench.analysis.common.preserved_state` (modes, values and ``.grad`` restored; any
    pre-existing ``.grad`` is hidden from PyHessian so it does not enter its
    gradient), the global RNG is forked and seeded, and
    ``pyhessian.hessian.hessian_vector_product`` is wrapped temporarily to count
    products (one count per product over the whole set, also in dataloader mode).
    The installed package is not modified. Not re-entrant (a lock serialises sessions).
    """
    import importlib

    ph = importlib.import_module("pyhessian.hessian")  # the module (the package re-exports the class under that name)
    dev = model_device(model)
    dtype = next(p for p in model.parameters() if p.requires_grad).dtype
    ex = examples.to(dev)
    counter = {"hvp": 0}
    orig = ph.hessian_vector_product

    def counted(gradsH, params, v):
        counter["hvp"] += 1
        return orig(gradsH, params, v)

    rng_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with _PYHESSIAN_LOCK, preserved_state(model), torch.random.fork_rng(devices=rng_devices), _default_dtype(dtype):
        for p in model.parameters():
            p.grad = None
        torch.manual_seed(int(seed))
        ph.hessian_vector_product = counted
        h = None
        try:
            cuda = dev.type == "cuda"
            if batch_size is None or batch_size >= ex.count:
                h = ph.hessian(model, loss_fn, data=(ex.x, ex.y), cuda=cuda)
            else:
                h = ph.hessian(model, loss_fn, dataloader=list(ex.batches(int(batch_size))), cuda=cuda)
                orig_dl = h.dataloader_hv_product

                def dl(v, _orig=orig_dl):
                    counter["hvp"] += 1
                    return _orig(v)

                h.dataloader_hv_product = dl
            yield h, counter
        finally:
            ph.hessian_vector_product = orig
            if h is not None:
                h.gradsH = None
                h.params = None
            for p in model.parameters():
                p.grad = None


def _flatten_lists(vecs) -> Tensor:
    return torch.stack([torch.cat([t.detach().reshape(-1) for t in v]) for v in vecs])


def pyhessian_eigenvalues(model: nn.Module, examples: ExampleSet, k: int = 5, tol: float = 1e-3,
                          max_iter: int = 100, *, loss_fn: Callable = F.cross_entropy, seed: int = 0,
                          batch_size: int | None = None, return_vectors: bool = False) -> EigenResult:
    """Top-k eigenvalues by the PyHessian package (``hessian.eigenvalues(maxIter, tol, top_n)``).

    Deflated power iteration with a relative-change stop, over all trainable
    parameters, eval mode (see :func:`power_iteration` for its caveats: largest
    |λ|, early stops with 1-6 % errors at tol 1e-3). ``n_matvecs`` counts its
    HVPs; values are sorted largest first; ``converged`` is None (PyHessian does
    not report it); the model is left exactly as it was (see ``_pyhessian_session``).
    """
    t0 = time.perf_counter()
    with _pyhessian_session(model, examples, loss_fn, seed, batch_size) as (h, counter):
        n_params = sum(p.numel() for p in h.params)
        vals, vecs = h.eigenvalues(maxIter=int(max_iter), tol=float(tol), top_n=int(k))
        values = torch.tensor([float(v) for v in vals], dtype=torch.float64)
        order = torch.argsort(values, descending=True)
        vectors = _flatten_lists(vecs)[order] if return_vectors else None
        n = counter["hvp"]
    return EigenResult(values=values[order], vectors=vectors, residuals=None, converged=None, n_matvecs=n,
                       iterations=n, which="LA", method="pyhessian_power_iteration", k=int(k), tol=float(tol),
                       seed=int(seed), count=int(examples.count), split=examples.split, n_params=int(n_params),
                       seconds=time.perf_counter() - t0)


def pyhessian_trace(model: nn.Module, examples: ExampleSet, max_iter: int = 100, tol: float = 1e-3, *,
                    loss_fn: Callable = F.cross_entropy, seed: int = 0, batch_size: int | None = None) -> TraceResult:
    """Hutchinson trace by the PyHessian package (``hessian.trace(maxIter, tol)``).

    PyHessian stops when the running mean changes by less than ``tol``
    (relative), which says nothing about accuracy; the standard error reported
    here is the honest one (sample std / sqrt(probes)). ``tol=0`` runs all
    ``max_iter`` probes (for a positive trace).
    """
    t0 = time.perf_counter()
    with _pyhessian_session(model, examples, loss_fn, seed, batch_size) as (h, counter):
        n_params = sum(p.numel() for p in h.params)
        samples = torch.tensor([float(s) for s in h.trace(maxIter=int(max_iter), tol=float(tol))],
                               dtype=torch.float64)
        n = counter["hvp"]
    est, se = _mean_se(samples)
    return TraceResult(estimate=est, std_error=se, samples=samples, n_matvecs=n, n_probes=int(samples.numel()),
                       seed=int(seed), distribution="rademacher", method="pyhessian_hutchinson",
                       count=int(examples.count), split=examples.split, n_params=int(n_params),
                       seconds=time.perf_counter() - t0)


def pyhessian_density(model: nn.Module, examples: ExampleSet, steps: int = 80, n_probes: int = 1, *,
                      loss_fn: Callable = F.cross_entropy, seed: int = 0, batch_size: int | None = None,
                      sigma: float | None = None, grid_points: int = 1000, grid_padding: float = 0.1) -> DensityResult:
    """SLQ density by the PyHessian package (``hessian.density(iter, n_v)``), broadened like :func:`spectral_density`.

    Raises:
        RuntimeError: on torch >= 2.0 PyHessian 0.1 calls the removed
            ``torch.eig`` (https://github.com/amirgholami/PyHessian/issues/17); the model is still restored.
    """
    t0 = time.perf_counter()
    with _pyhessian_session(model, examples, loss_fn, seed, batch_size) as (h, counter):
        n_params = sum(p.numel() for p in h.params)
        eigs, wts = h.density(iter=int(steps), n_v=int(n_probes))
        n = counter["hvp"]
    nodes = [torch.tensor(np.asarray(e, dtype=np.float64)) for e in eigs]
    weights = [torch.tensor(np.asarray(w, dtype=np.float64)) for w in wts]
    grid, dens, sig, mass, floor = _broaden(nodes, weights, steps, sigma, grid_points, grid_padding)
    moments = torch.tensor([float((w * t).sum()) * n_params for t, w in zip(nodes, weights)], dtype=torch.float64)
    tr, tr_se = _mean_se(moments)
    return DensityResult(grid=grid, density=dens, nodes=nodes, weights=weights, sigma=sig, steps=int(steps),
                         n_probes=int(n_probes), n_matvecs=n, seed=int(seed), mass_in_grid=mass, density_floor=floor,
                         trace_estimate=tr, trace_std_error=tr_se, method="pyhessian_slq", count=int(examples.count),
                         split=examples.split, n_params=int(n_params), seconds=time.perf_counter() - t0)


# ====================================================================== training probe
class TopEigenvalueProbe(Probe):
    """Track λmax (and optionally the top-k, λ1/λ5 and the trace) of the training-loss Hessian during training.

    In :meth:`setup` a fixed, seeded :class:`ExampleSet` of ``count`` examples
    is drawn from the trainer's ``split`` (default 512 training examples, for
    speed; the same examples at every measurement). :meth:`measure` runs
    :func:`lanczos` on a :class:`HessianOperator` of the trainer's loss (label
    smoothing included) in eval mode, inside :func:`~workbench.analysis.common.preserved_state`: it uses its
    own seeded generators (never torch's global RNG), so training is not disturbed.

    Returns per measurement ``{"lambda_max", "eigenvalues", "n_matvecs",
    "converged", "count", "split"}``, plus ``"ratio_1_5"`` (λ1/λ5) when
    ``k >= 5`` and ``"trace", "trace_std_error"`` when ``trace=True``.
    """

    name = "top_eigenvalue"

    def __init__(self, every: int = 1, *, k: int = 1, count: int | None = 512, seed: int = 0, split: str = "train",
                 tol: float = 1e-3, max_iter: int | None = None, trace: bool = False, n_probes: int = 30,
                 batch_size: int | None = None):
        super().__init__(every)
        if k <= 0:
            raise ValueError(f"k={k!r} is invalid: must be positive")
        self.k, self.count, self.seed, self.split = int(k), count, int(seed), split
        self.tol, self.max_iter, self.trace, self.n_probes, self.batch_size = tol, max_iter, trace, n_probes, batch_size
        self.examples: ExampleSet | None = None

    def setup(self, trainer) -> None:
        """Draw the probe's fixed, seeded examples from the trainer's ``split``.

        Raises:
            ValueError: the trainer has no such split.
        """
        splits = trainer.splits
        if self.split not in splits:
            raise ValueError(f"split={self.split!r} is invalid: choose one of {sorted(splits)}")
        self.examples = ExampleSet.from_dataset(splits[self.split], count=self.count, seed=self.seed,
                                                split=self.split)

    def measure(self, model: nn.Module, trainer) -> dict:
        """Top-k Hessian eigenvalues (and the trace with ``trace``) at ``model``; the keys are in the class doc."""
        if self.examples is None:
            self.setup(trainer)
        loss_fn = trainer.loss_fn
        with preserved_state(model):
            with HessianOperator(model, self.examples, loss_fn, batch_size=self.batch_size) as op:
                r = lanczos(op, k=self.k, which="LA", tol=self.tol, max_iter=self.max_iter, seed=self.seed)
                vals = [float(v) for v in r.values]
                out = {"lambda_max": vals[0], "eigenvalues": vals, "n_matvecs": int(r.n_matvecs),
                       "converged": bool(r.converged), "count": int(self.examples.count), "split": self.split}
                if self.k >= 5:
                    out["ratio_1_5"] = eigenvalue_ratio(vals, 5)
                if self.trace:
                    t = hutchpp_trace(op, n_matvecs=max(3, self.n_probes), seed=self.seed)
                    out.update(trace=t.estimate, trace_std_error=t.std_error, n_matvecs=int(op.n_matvecs))
        return out
