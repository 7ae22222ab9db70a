"""Per-example gradients, last-layer gradient proxies, gradient cosines, SAM's cos(g, g′) over training.

Three families of tools:

* :func:`per_example_gradients` — exact per-example gradients ``∇_θ ℓ(x_i, y_i)``
  of any subset of the parameters, vectorised with ``torch.func.vmap(torch.func.grad(...))``
  over ``torch.func.functional_call``.
* :func:`last_layer_gradients` — the cheap gradient proxies of EPIC
  ([Yang 2022, §3.5], the paragraph after Eq. 5, and the EPIC code
  YuYang0901/EPIC): the loss gradient w.r.t. the logits
  ``softmax(z) − onehot(y)`` (what the EPIC code uses), w.r.t. the input of the
  last linear layer (the paper's literal wording, after Katharopoulos & Fleuret
  2018), or the full last-layer weight gradient. These are the spaces in which
  [Yang 2022, Fig. 1] separates clean examples, poisons and *effective* poisons
  (Fig. 1a distances, Fig. 1b PCA; see :mod:`workbench.analysis.projections`).
* cosine statistics of gradient matrices (:func:`cosine_to_reference`,
  :func:`class_mean_cosines`, :func:`pairwise_within_class_cosines`,
  :func:`cosine_histogram`) and SAM's per-step ``cos(g, g′)`` between the plain
  mini-batch gradient g and the SAM gradient g′ = ∇L(w + ε̂)
  ([Murphy 2025, §5.3.4, Figs. 5.5–5.8]): :class:`SamCosineTracker`
  (a trainer callback) and :func:`sam_cosines_from_steps` (from a stored run).
  The report plots the *cosine similarity loss* ``1 − cos(g, g′)`` (its Eq. 3.6);
  the records here store ``cos`` itself (``CosineHistory.losses()`` gives 1 − cos).

Every function leaves the model exactly as it found it (parameters, buffers,
train/eval modes). No UI imports.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import ExampleSet, ResultRecord, eval_mode, model_device, preserved_state

__all__ = [
    "per_example_gradients", "last_layer_gradients", "find_last_linear", "LAST_LAYER_KINDS",
    "cosine_to_reference", "class_mean_cosines", "pairwise_within_class_cosines", "cosine_histogram",
    "gradient_cosines", "HistogramResult", "GradientCosineResult", "CosineHistory", "SamCosineTracker",
    "sam_cosines_from_steps", "DEFAULT_MAX_PARAMS",
]

#: Largest number of selected parameters :func:`per_example_gradients` accepts by default.
DEFAULT_MAX_PARAMS = 2_000_000
LAST_LAYER_KINDS = ("logits", "last_input", "weights")


# ----------------------------------------------------------------- helpers
def _as_examples(examples) -> ExampleSet:
    if isinstance(examples, ExampleSet):
        return examples
    if isinstance(examples, (tuple, list)) and len(examples) == 2:
        x, y = examples
        x, y = torch.as_tensor(x), torch.as_tensor(y).long()
        return ExampleSet(x=x, y=y, index=torch.arange(len(y)), split="custom", seed=None, count=len(y))
    raise TypeError(f"examples must be an ExampleSet or an (x, y) pair, got {type(examples).__name__}")


def find_last_linear(model: nn.Module, x: Tensor) -> tuple[str, nn.Linear]:
    """The ``nn.Linear`` whose output is the model's output, found by running ``model`` on ``x``.

    Forward hooks record every ``nn.Linear`` call; the last one called is the
    candidate, and its output must be the model's output (nothing may follow it).

    Args:
        model: any module mapping ``x`` to logits ``[B, C]``.
        x: a small input batch (on the model's device).

    Returns:
        ``(module name, module)``.

    Raises:
        ValueError: the model has no ``nn.Linear``, or the last one called does
            not produce the model output (something follows it), or its input is not 2-D.
    """
    linears = {m: n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer; last-layer gradients need the "
                         "model to end in an nn.Linear (use per_example_gradients for other models)")
    calls: list[tuple[nn.Module, Tensor, Tensor]] = []

    def hook(mod, inp, out):
        calls.append((mod, inp[0], out))

    handles = [m.register_forward_hook(hook) for m in linears]
    try:
        with preserved_state(model), eval_mode(model), torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    if not calls:
        raise ValueError(f"no nn.Linear of {type(model).__name__} was called in the forward pass")
    mod, inp, lin_out = calls[-1]
    if lin_out.shape != out.shape or not torch.equal(lin_out, out):
        raise ValueError(f"the last nn.Linear called ({linears[mod]!r}) does not produce the model output "
                         "(an operation follows it); last-layer gradient proxies need logits = Linear(h)")
    if inp.dim() != 2:
        raise ValueError(f"the last nn.Linear ({linears[mod]!r}) gets input of shape {tuple(inp.shape)}; "
                         "expected [batch, features]")
    return linears[mod], mod


def _select_parameters(model: nn.Module, params, example_x: Tensor) -> list[str]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    names = [n for n, _ in named]
    if params is None:
        return names
    if isinstance(params, str):
        if params == "last":
            _, lin = find_last_linear(model, example_x)
            own = {id(p) for p in lin.parameters()}
            return [n for n, p in named if id(p) in own]
        pre = params if params.endswith(".") else params + "."
        sel = [n for n in names if n == params or n.startswith(pre)]
        if not sel:
            prefixes = sorted({n.split(".")[0] for n in names})
            raise ValueError(f"params={params!r} matches no trainable parameter; name prefixes are "
                             f"{prefixes}, or pass 'last' for the last linear layer")
        return sel
    wanted = list(params)
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise ValueError(f"unknown or frozen parameter names {unknown}; trainable parameters are {names}")
    return [n for n in names if n in set(wanted)]  # model order


# ----------------------------------------------------- per-example gradients
def per_example_gradients(model: nn.Module, examples, *, params: None | str | Sequence[str] = None,
                          loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy, batch_size: int = 256,
                          flatten: bool = True, max_params: int | None = DEFAULT_MAX_PARAMS):
    """Per-example loss gradients ``∇_θ ℓ(f_θ(x_i), y_i)`` for every example of ``examples``.

    Computed with ``torch.func.vmap(torch.func.grad(loss))`` over
    ``torch.func.functional_call``, ``batch_size`` examples at a time; each
    example's loss is ``loss_fn(model(x_i[None]), y_i[None])``.

    **BatchNorm runs in eval mode** (running statistics; dropout off): with
    train-mode BatchNorm the batch statistics couple the examples of a batch,
    so a per-example gradient is not defined (it would depend on which other
    examples share the batch). The gradients are therefore those of the model
    as evaluated, which equal the training gradients only for models without
    BatchNorm/dropout. The model is left exactly as it was.

    **Memory**: the result holds ``N × P`` numbers (``P`` = selected parameters),
    e.g. 2,048 examples × 11.2M ResNet-18 parameters × 4 bytes ≈ 92 GB. Select a
    subset with ``params`` (``"last"``: the last linear layer; a name prefix such
    as ``"fc"``; or a list of names), or use :func:`last_layer_gradients`.

    Args:
        model: the network (any device; the result is on the CPU).
        examples: an :class:`ExampleSet` or an ``(x, y)`` pair.
        params: ``None`` (all trainable parameters), ``"last"`` (the parameters
            of the last ``nn.Linear``), a module-name prefix (``"fc"`` selects
            ``fc.weight`` and ``fc.bias``, not ``fc1.*``; ``"layer4"`` everything
            under ``layer4.``), an exact parameter name, or a list of parameter names.
        loss_fn: ``loss_fn(logits [1, C], y [1]) -> scalar``.
        batch_size: examples per vectorised chunk.
        flatten: return one ``[N, P]`` matrix (parameters concatenated in
            ``named_parameters`` order, each flattened row-major); otherwise a
            dict ``name -> [N, *shape]``.
        max_params: refuse more than this many selected parameters (``None``: no limit).

    Returns:
        ``Tensor [N, P]`` (model dtype, CPU) or ``dict[str, Tensor]``.

    Raises:
        ValueError: unknown parameter selection, or more than ``max_params`` parameters selected.
    """
    ex = _as_examples(examples)
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size!r} is invalid: must be positive")
    device = model_device(model)
    x0 = ex.x[:1].to(device)
    names = _select_parameters(model, params, x0)
    all_params = dict(model.named_parameters())
    shapes = {n: all_params[n].shape for n in names}
    n_sel = sum(all_params[n].numel() for n in names)
    if max_params is not None and n_sel > max_params:
        gb = ex.count * n_sel * all_params[names[0]].element_size() / 1e9
        raise ValueError(f"{n_sel:,} parameters selected (> max_params={max_params:,}): the result would hold "
                         f"{ex.count:,} x {n_sel:,} numbers (about {gb:.1f} GB). Pass params='last' (last linear "
                         "layer), a name prefix or a list of names, use last_layer_gradients(), or raise max_params")
    from torch.func import functional_call, grad, vmap

    with preserved_state(model), eval_mode(model), torch.no_grad():
        frozen = {n: p.detach() for n, p in all_params.items() if n not in shapes}
        frozen.update({n: b.detach() for n, b in model.named_buffers()})
        selected = {n: all_params[n].detach() for n in names}

        def loss_one(sel: dict, x: Tensor, y: Tensor) -> Tensor:
            out = functional_call(model, {**frozen, **sel}, (x.unsqueeze(0),))
            return loss_fn(out, y.unsqueeze(0))

        per_ex = vmap(grad(loss_one), in_dims=(None, 0, 0))
        dtype = selected[names[0]].dtype
        if flatten:
            out = torch.empty(ex.count, n_sel, dtype=dtype)
        else:
            out = {n: torch.empty(ex.count, *shapes[n], dtype=dtype) for n in names}
        i = 0
        for xb, yb in ex.batches(batch_size):
            g = per_ex(selected, xb.to(device), yb.to(device))
            b = xb.shape[0]
            if flatten:
                out[i:i + b] = torch.cat([g[n].reshape(b, -1) for n in names], dim=1).cpu()
            else:
                for n in names:
                    out[n][i:i + b] = g[n].cpu()
            i += b
    return out


# ---------------------------------------------------- last-layer proxies
def last_layer_gradients(model: nn.Module, examples, kind: str = "logits", *, batch_size: int = 512) -> Tensor:
    """EPIC's cheap per-example gradient proxies (cross-entropy loss), one inference pass in eval mode.

    With logits ``z = W h + b`` of the last ``nn.Linear`` and ``p = softmax(z)``,
    the per-example cross-entropy gradients are:

    * ``"logits"``: ``∂ℓ/∂z = p − onehot(y)`` → ``[N, C]``. This is what the EPIC
      code uses as its gradient proxy (computed under ``no_grad`` in eval mode).
    * ``"last_input"``: ``∂ℓ/∂h = (p − onehot(y)) W`` → ``[N, D]``: the gradient
      "w.r.t. the input to the last layer" as [Yang 2022, §3.5] words it
      (after Eq. 5, citing [Katharopoulos 2018]).
    * ``"weights"``: ``∂ℓ/∂W = (p − onehot(y)) ⊗ h`` flattened row-major
      (``[C, D]`` → ``C·D``), followed by ``∂ℓ/∂b = p − onehot(y)`` when the layer
      has a bias → ``[N, C·D (+ C)]``; equals :func:`per_example_gradients` with
      ``params="last"``.

    The last linear layer is found with forward hooks (:func:`find_last_linear`).
    Label smoothing and other losses are not modelled (plain cross-entropy).

    Args:
        model: a classifier ending in an ``nn.Linear``.
        examples: an :class:`ExampleSet` or an ``(x, y)`` pair.
        kind: ``"logits"``, ``"last_input"`` or ``"weights"``.
        batch_size: examples per forward pass.

    Returns:
        ``Tensor [N, ·]`` on the CPU, in the model's dtype.

    Raises:
        ValueError: unknown ``kind``; no suitable last ``nn.Linear``.
    """
    if kind not in LAST_LAYER_KINDS:
        raise ValueError(f"kind={kind!r} is invalid: choose one of {', '.join(map(repr, LAST_LAYER_KINDS))}")
    ex = _as_examples(examples)
    device = model_device(model)
    _, lin = find_last_linear(model, ex.x[:1].to(device))
    captured: list[Tensor] = []
    handle = lin.register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
    parts = []
    try:
        with preserved_state(model), eval_mode(model), torch.no_grad():
            for xb, yb in ex.batches(batch_size):
                captured.clear()
                logits = model(xb.to(device))
                yb = yb.to(device)
                g = torch.softmax(logits, dim=1)
                g[torch.arange(len(yb), device=device), yb] -= 1.0
                if kind == "logits":
                    parts.append(g.cpu())
                    continue
                h = captured[-1]
                if kind == "last_input":
                    parts.append((g @ lin.weight).cpu())
                else:
                    w = (g[:, :, None] * h[:, None, :]).reshape(len(g), -1)
                    parts.append((torch.cat([w, g], dim=1) if lin.bias is not None else w).cpu())
    finally:
        handle.remove()
    return torch.cat(parts, dim=0)


# ------------------------------------------------------------- cosines
def _as_matrix(G) -> Tensor:
    G = torch.as_tensor(G)
    if G.dim() != 2:
        raise ValueError(f"expected a gradient matrix [N, P], got shape {tuple(G.shape)}")
    return G.detach()


def _cos_rows(A: Tensor, b: Tensor) -> Tensor:
    """Cos between each row of A and b (or each row of b when 2-D); NaN where a norm is 0."""
    if b.dim() == 1:
        dots = A @ b
        norms = A.norm(dim=1) * b.norm()
    else:
        dots = (A * b).sum(dim=1)
        norms = A.norm(dim=1) * b.norm(dim=1)
    cos = dots / norms
    cos = torch.where(norms > 0, cos, torch.full_like(cos, float("nan")))
    return cos.clamp(-1.0, 1.0)


def cosine_to_reference(G, ref) -> np.ndarray:
    """Cosine of every row of ``G`` with a reference vector.

    Args:
        G: gradients ``[N, P]`` (Tensor or ndarray).
        ref: a vector ``[P]``, or ``"mean"`` (the mean row of ``G``, i.e. the gradient of the mean loss).

    Returns:
        ``float64 [N]`` in [-1, 1]; NaN for a zero row or a zero reference (the cosine is undefined).
    """
    G = _as_matrix(G)
    if isinstance(ref, str):
        if ref != "mean":
            raise ValueError(f"ref={ref!r} is invalid: pass a vector or 'mean'")
        r = G.mean(dim=0)
    else:
        r = torch.as_tensor(ref, dtype=G.dtype, device=G.device).reshape(-1)
    if r.numel() != G.shape[1]:
        raise ValueError(f"reference has {r.numel()} entries, the gradients have {G.shape[1]}")
    return _cos_rows(G, r).double().cpu().numpy()


def class_mean_cosines(G, y, *, leave_one_out: bool = False) -> np.ndarray:
    """Cosine of each example's gradient with the mean gradient of its class.

    Args:
        G: gradients ``[N, P]``.
        y: labels ``[N]``.
        leave_one_out: exclude the example itself from its class mean (NaN for a
            class with one example); default includes it.

    Returns:
        ``float64 [N]`` (NaN where undefined).
    """
    G = _as_matrix(G)
    y = torch.as_tensor(y).reshape(-1).to(G.device)
    if len(y) != G.shape[0]:
        raise ValueError(f"{len(y)} labels for {G.shape[0]} gradients")
    out = torch.full((G.shape[0],), float("nan"), dtype=G.dtype, device=G.device)
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        Gc = G[idx]
        n = len(idx)
        if leave_one_out:
            if n < 2:
                continue
            ref = (Gc.sum(dim=0, keepdim=True) - Gc) / (n - 1)
            out[idx] = _cos_rows(Gc, ref)
        else:
            out[idx] = _cos_rows(Gc, Gc.mean(dim=0))
    return out.double().cpu().numpy()


def _triu_pairs(n: int, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode linear indices ``k`` of the strict upper triangle (row-major) of an ``n × n`` matrix."""
    k = k.astype(np.int64)
    i = n - 2 - np.floor(np.sqrt(-8 * k + 4 * n * (n - 1) - 7) / 2.0 - 0.5).astype(np.int64)
    j = k + i + 1 - n * (n - 1) // 2 + (n - i) * ((n - i) - 1) // 2
    return i, j


def pairwise_within_class_cosines(G, y, *, max_pairs_per_class: int = 5000, seed: int = 0) -> dict[int, np.ndarray]:
    """Cosines between gradients of distinct examples of the same class.

    Per class with ``n`` examples there are ``n (n − 1) / 2`` unordered pairs;
    all are used when that is at most ``max_pairs_per_class``, otherwise that
    many distinct pairs are drawn without replacement (seeded).

    Args:
        G: gradients ``[N, P]``.
        y: labels ``[N]``.
        max_pairs_per_class: cap on pairs per class.
        seed: seed of the pair draw.

    Returns:
        ``{class: float64 [pairs]}`` (classes with one example give an empty array; NaN for zero rows).
    """
    if max_pairs_per_class <= 0:
        raise ValueError(f"max_pairs_per_class={max_pairs_per_class!r} is invalid: must be positive")
    G = _as_matrix(G)
    y = torch.as_tensor(y).reshape(-1)
    if len(y) != G.shape[0]:
        raise ValueError(f"{len(y)} labels for {G.shape[0]} gradients")
    rng = np.random.default_rng(seed)
    norms = G.norm(dim=1, keepdim=True)
    Gn = torch.where(norms > 0, G / norms.clamp_min(torch.finfo(G.dtype).tiny), torch.full_like(G, float("nan")))
    out: dict[int, np.ndarray] = {}
    y_np = y.cpu().numpy()
    for c in np.unique(y_np):
        idx = torch.as_tensor(np.flatnonzero(y_np == c), device=G.device)
        n = len(idx)
        total = n * (n - 1) // 2
        if total == 0:
            out[int(c)] = np.zeros(0)
            continue
        k = np.arange(total) if total <= max_pairs_per_class else np.sort(
            rng.choice(total, size=max_pairs_per_class, replace=False))
        i, j = _triu_pairs(n, k)
        Gc = Gn[idx]
        if n <= 4096:
            gram = Gc @ Gc.T
            vals = gram[torch.as_tensor(i, device=G.device), torch.as_tensor(j, device=G.device)]
        else:
            vals = torch.cat([(Gc[torch.as_tensor(i[s:s + 1024])] * Gc[torch.as_tensor(j[s:s + 1024])]).sum(1)
                              for s in range(0, len(i), 1024)])
        out[int(c)] = vals.clamp(-1.0, 1.0).double().cpu().numpy()
    return out


@dataclass(frozen=True, eq=False)
class HistogramResult(ResultRecord):
    """A histogram of cosine (or any bounded) values.

    Attributes:
        edges: ``[bins + 1]`` bin edges; counts: ``int64 [bins]``.
        count: finite values histogrammed (``counts.sum()``).
        n_nonfinite: NaN/inf values left out (undefined cosines).
        n_clipped: finite values outside ``range`` (by more than 1e-6), put in the edge bins.
        mean, std, median: of the finite values (NaN when there are none).
    """

    edges: np.ndarray
    counts: np.ndarray
    count: int
    n_nonfinite: int = 0
    n_clipped: int = 0
    mean: float = float("nan")
    std: float = float("nan")
    median: float = float("nan")

    @property
    def fractions(self) -> np.ndarray:
        """Fraction of the counted values in each bin, ``float64 [bins]`` (sums to 1; all zero when empty)."""
        c = np.asarray(self.counts, dtype=float)
        return c / max(c.sum(), 1.0)

    @property
    def centers(self) -> np.ndarray:
        """Bin centres, ``float64 [bins]``: midpoints of consecutive ``edges``."""
        e = np.asarray(self.edges, dtype=float)
        return 0.5 * (e[1:] + e[:-1])


def cosine_histogram(values, bins: int = 50, range: tuple[float, float] = (-1.0, 1.0)) -> HistogramResult:  # noqa: A002
    """Histogram of ``values`` over ``range`` with ``bins`` equal bins.

    Non-finite values are left out (counted in ``n_nonfinite``); finite values
    are clipped into ``range`` (cosines can exceed ±1 by rounding), so
    ``counts.sum()`` equals the number of finite values.
    """
    if bins <= 0:
        raise ValueError(f"bins={bins!r} is invalid: must be positive")
    lo, hi = float(range[0]), float(range[1])
    if not hi > lo:
        raise ValueError(f"range={range!r} is invalid: need low < high")
    v = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=float).reshape(-1)
    finite = v[np.isfinite(v)]
    n_clipped = int(((finite < lo - 1e-6) | (finite > hi + 1e-6)).sum())
    counts, edges = np.histogram(np.clip(finite, lo, hi), bins=bins, range=(lo, hi))
    has = finite.size > 0
    return HistogramResult(edges=edges, counts=counts.astype(np.int64), count=int(finite.size),
                           n_nonfinite=int(v.size - finite.size), n_clipped=n_clipped,
                           mean=float(finite.mean()) if has else float("nan"),
                           std=float(finite.std()) if has else float("nan"),
                           median=float(np.median(finite)) if has else float("nan"))


@dataclass(frozen=True, eq=False)
class GradientCosineResult(ResultRecord):
    """Per-example gradient cosines with a reference.

    Attributes:
        values: ``float64 [N]`` cosines (NaN where undefined).
        labels: ``int64 [N]`` class labels; index: ``int64 [N]`` dataset indices.
        reference: what each gradient was compared with (``class_mean``, ``mean``).
        kind: the gradient space (``logits``, ``last_input``, ``weights``, ``full``).
        count, seed, split: of the :class:`ExampleSet`; seconds: computation time.
    """

    values: np.ndarray
    labels: np.ndarray
    index: np.ndarray
    reference: str
    kind: str
    count: int
    seed: int | None
    split: str = "train"
    seconds: float = 0.0

    def histogram(self, bins: int = 50) -> HistogramResult:
        """Histogram of the cosines over ``[-1, 1]`` in ``bins`` equal bins (:func:`cosine_histogram`)."""
        return cosine_histogram(self.values, bins=bins)


def gradients_of_kind(model: nn.Module, examples, kind: str, *, params=None, batch_size: int = 256,
                      max_params: int | None = DEFAULT_MAX_PARAMS) -> Tensor:
    """Per-example gradients in the space ``kind``: a last-layer proxy or ``"full"`` (:func:`per_example_gradients`)."""
    if kind == "full":
        return per_example_gradients(model, examples, params=params, batch_size=batch_size, max_params=max_params)
    return last_layer_gradients(model, examples, kind, batch_size=max(batch_size, 1))


def gradient_cosines(model: nn.Module, examples: ExampleSet, *, kind: str = "logits",
                     reference: str = "class_mean", params=None, batch_size: int = 256) -> GradientCosineResult:
    """Cosine of every example's gradient with a reference gradient, in the gradient space ``kind``.

    Args:
        model: the network.
        examples: the examples (an :class:`ExampleSet` or ``(x, y)``).
        kind: the gradient space: a last-layer proxy (e.g. ``"logits"``) or ``"full"``
            (:func:`gradients_of_kind`).
        reference: ``"class_mean"`` (each example's class-mean gradient) or ``"mean"`` (the whole set's).
        params: the parameters of the full gradient (default: all); only for ``kind="full"``.
        batch_size: examples per backward pass.

    Returns:
        A :class:`GradientCosineResult` with one cosine per example (``values``, float64 ``[N]``).

    Raises:
        ValueError: an unknown ``reference``.
    """
    if reference not in ("class_mean", "mean"):
        raise ValueError(f"reference={reference!r} is invalid: choose 'class_mean' or 'mean'")
    ex = _as_examples(examples)
    t0 = time.perf_counter()
    G = gradients_of_kind(model, ex, kind, params=params, batch_size=batch_size)
    vals = class_mean_cosines(G, ex.y.cpu()) if reference == "class_mean" else cosine_to_reference(G, "mean")
    return GradientCosineResult(values=vals, labels=ex.y.cpu().numpy(), index=ex.index.cpu().numpy(),
                                reference=reference, kind=kind, count=ex.count, seed=ex.seed, split=ex.split,
                                seconds=time.perf_counter() - t0)


# -------------------------------------------------- SAM cos(g, g′) history
def _epoch_of(epoch_fraction: float) -> int:
    """1-based epoch a step belongs to, from its fractional epoch ``step / steps_per_epoch``."""
    return max(1, int(math.ceil(float(epoch_fraction) - 1e-9)))


@dataclass(frozen=True, eq=False)
class CosineHistory(ResultRecord):
    """SAM's per-step ``cos(g, g′)`` during training ([Murphy 2025, §5.3.4]).

    ``g`` is the mini-batch gradient at w and ``g′`` the SAM gradient at
    ``w + ε̂`` of the same step (:class:`workbench.optim.SAM`, ``last_cosine``).
    This is the quantity of the report's Fig. 5.8 (SAM on clean data, plotted as
    the loss ``1 − cos``, Eq. 3.6); Figs. 5.5–5.7 plot the same loss between g′
    and the SGD gradient on *poisoned* data during poisoning.

    Attributes:
        steps: ``int64 [S]`` optimizer step (1-based) of each logged value.
        epochs: ``int64 [S]`` 1-based epoch each step belongs to (step ``s`` of an
            epoch with ``spe`` steps: ``ceil(s / spe)``).
        cosines: ``float64 [S]``.
    """

    steps: np.ndarray
    epochs: np.ndarray
    cosines: np.ndarray

    def by_epoch(self) -> dict[int, np.ndarray]:
        """``{epoch: cosines of its steps}`` (the input of ``viz.cosine_histogram_figure``)."""
        ep = np.asarray(self.epochs)
        cs = np.asarray(self.cosines, dtype=float)
        return {int(e): cs[ep == e] for e in np.unique(ep)}

    def histograms(self, bins: int = 50, range: tuple[float, float] = (-1.0, 1.0)) -> dict[int, HistogramResult]:  # noqa: A002
        """One histogram of the cosines per epoch, ``{epoch: HistogramResult}`` (:func:`cosine_histogram`)."""
        return {e: cosine_histogram(v, bins=bins, range=range) for e, v in self.by_epoch().items()}

    def losses(self) -> np.ndarray:
        """The report's cosine similarity loss ``1 − cos(g, g′)`` ([Murphy 2025, Eq. 3.6, Fig. 5.8])."""
        return 1.0 - np.asarray(self.cosines, dtype=float)

    def epoch_means(self) -> tuple[np.ndarray, np.ndarray]:
        """``(epochs, mean cosine per epoch)``."""
        per = self.by_epoch()
        e = np.array(sorted(per), dtype=np.int64)
        return e, np.array([float(np.mean(per[k])) for k in e])


class SamCosineTracker:
    """Trainer callback collecting SAM's per-step ``cos(g, g′)`` from ``StepEnd`` events.

    Use ``Trainer(cfg, callbacks=[tracker]).run()``; afterwards
    :meth:`histograms` gives one histogram per epoch and :meth:`result` a
    :class:`CosineHistory`. Steps without a ``cosine`` metric (non-SAM
    optimizers) are ignored. With ``train.log_every > 1`` only logged steps
    (and the last step of each epoch) are seen.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """Forget the collected steps (e.g. before a new run)."""
        self._steps: list[int] = []
        self._epochs: list[int] = []
        self._cos: list[float] = []

    def __call__(self, event) -> None:
        """Record ``event`` when it is a ``StepEnd`` with a ``cosine`` metric; ignore anything else."""
        from ..training.events import StepEnd

        if not isinstance(event, StepEnd):
            return
        c = event.metrics.get("cosine")
        if c is None:
            return
        self._steps.append(int(event.step))
        self._epochs.append(_epoch_of(event.epoch))
        self._cos.append(float(c))

    def __len__(self) -> int:
        return len(self._cos)

    def result(self) -> CosineHistory:
        """The steps collected so far, as a :class:`CosineHistory`."""
        return CosineHistory(steps=np.asarray(self._steps, dtype=np.int64),
                             epochs=np.asarray(self._epochs, dtype=np.int64),
                             cosines=np.asarray(self._cos, dtype=np.float64))

    def histograms(self, bins: int = 50, range: tuple[float, float] = (-1.0, 1.0)) -> dict[int, HistogramResult]:  # noqa: A002
        """One histogram per epoch of the steps collected so far (:meth:`CosineHistory.histograms`)."""
        return self.result().histograms(bins=bins, range=range)


def sam_cosines_from_steps(steps) -> CosineHistory:
    """:class:`CosineHistory` from a stored run's step records.

    Args:
        steps: ``load_run(path).steps`` (a DataFrame with columns ``step``,
            ``epoch`` (fractional), ``cosine``), the :class:`~workbench.runs.RunData`
            itself, or a list of step-record dicts.

    Raises:
        ValueError: no ``cosine`` values (not a SAM run, or no step records).
    """
    if hasattr(steps, "steps") and not hasattr(steps, "columns") and not isinstance(steps, (Mapping, list)):
        steps = steps.steps
    if isinstance(steps, list):
        rows = [r for r in steps if r.get("cosine") is not None]
        step = np.array([r["step"] for r in rows], dtype=np.int64)
        ep = np.array([r["epoch"] for r in rows], dtype=float)
        cos = np.array([r["cosine"] for r in rows], dtype=float)
    else:
        cols = getattr(steps, "columns", ())
        if "cosine" not in cols:
            raise ValueError("the step records have no 'cosine' column: cos(g, g') is logged only by SAM-type "
                             "optimizers (sam, asam)")
        df = steps[steps["cosine"].notna()]
        step = df["step"].to_numpy(dtype=np.int64)
        ep = df["epoch"].to_numpy(dtype=float)
        cos = df["cosine"].to_numpy(dtype=float)
    if step.size == 0:
        raise ValueError("no step record carries a cosine value (not a SAM run, or no steps logged)")
    order = np.argsort(step, kind="stable")
    return CosineHistory(steps=step[order], epochs=np.array([_epoch_of(e) for e in ep[order]], dtype=np.int64),
                         cosines=cos[order])
