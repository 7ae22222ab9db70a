"""The PyHessian package [Yao 2020] as a backend, for comparison with the workbench's own solvers.

No UI imports.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..common import ExampleSet, model_device, preserved_state
from .results import DensityResult, EigenResult, TraceResult
from .trace import _broaden, _mean_se

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
