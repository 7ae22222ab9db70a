"""Per-layer curvature: one Hessian operator per layer (or parameter group) of a model.

No UI imports.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..common import ExampleSet, preserved_state
from .eigen import lanczos
from .operator import (
    HessianOperator,
)
from .results import LayerwiseResult
from .trace import hutchinson_trace, hutchpp_trace


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
