"""The Hessian as a linear operator on flat parameter vectors.

:class:`HessianOperator` (cached double-backward HVPs on a model) and :class:`DenseOperator` (a dense symmetric
matrix), behind the :class:`LinearOperatorLike` protocol that every solver of :mod:`workbench.analysis.curvature`
takes.

No UI imports.
"""
from __future__ import annotations

import time
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..common import ExampleSet, eval_mode


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
