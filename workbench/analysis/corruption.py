"""Parameter corruption: how much can changing ``n`` weights by a total p-norm ``ε`` raise the loss?

[Sun 2020, §2] measure the robustness of a trained network's parameters by the largest loss increase an
n-sparse, ε-bounded change of the weights can cause,

    Δ_max L(w; S, D) = max_{a ∈ S} L(w + a; D) − L(w; D),     S = {a ∈ R^k : ‖a‖₀ ≤ n, ‖a‖_p ≤ ε},

(``w`` the ``k`` trainable weights flattened, ``D`` the examples, ``n`` the *corruption size*, ``ε`` the
*budget*), and estimate it two ways:

* **random corruption** [Sun 2020, Alg. 1, Eq. 4]: draw ``r ~ N(0, I_k)`` and corrupt by
  ``ã = argmax_{a ∈ S} aᵀr`` (``n`` uniformly random coordinates, random signs); the mean over ``n_random``
  draws is a Monte-Carlo estimate of the typical loss change;
* **gradient-based corruption** [Sun 2020, Alg. 2, Eq. 7]: ``g = ∇_w L(w; D)`` and ``ã = argmax_{a ∈ S} aᵀg``,
  the corruption that raises the loss most to first order (``L(w + a) ≈ L(w) + aᵀg``).

Both solve the same linear problem ``argmax_{a ∈ S} aᵀv`` in closed form (Hölder's inequality; ``q`` the dual
exponent, ``1/p + 1/q = 1``). With ``T`` the ``n`` coordinates of largest ``|v_i|`` and ``h = v_T``:

* ``p = 2``: ``ã_T = ε h / ‖h‖₂`` (first-order increase ``ε ‖h‖₂``);
* ``p = ∞``: ``ã_T = ε sign(h)`` (``ε ‖h‖₁``);
* ``p = 1``: all of ``ε`` on the single largest coordinate, ``ã = ε sign(v_i*) e_i*`` (``ε ‖v‖_∞``);

and ``ã = 0`` for ``n = 0`` (or ``h = 0``). Coordinates outside ``T`` are untouched, so ``‖ã‖₀ ≤ n`` and
``‖ã‖_p = ε`` (up to rounding). The gradient-based first-order increase ``gᵀã`` is therefore never below the
random one at the same ``n`` and ``ε``; the measured increases add the higher-order terms, which the first
order dominates for small ``ε`` (``ε → 0``), while for large ``ε`` a random corruption can, rarely, do better.

Protocol: the loss is the mean cross-entropy (nats) over a fixed, seeded :class:`ExampleSet`, with BatchNorm
and dropout in eval mode (running statistics) throughout -- gradient and evaluations alike; the weights are
written in place for each evaluation (``w + ã``) and the model is restored exactly from a saved copy at the
end (:func:`~workbench.analysis.common.preserved_state`: parameters, buffers, modes and ``.grad``). Random
draws come from CPU generators seeded by ``(seed, n, draw)``, so a size's draws do not depend on the
other sizes asked for.

No UI imports.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import ExampleSet, ResultRecord, eval_mode, preserved_state

__all__ = ["CorruptionResult", "NORMS", "corruption", "gradient_corruption", "random_corruption",
           "parameter_corruption", "run_analysis", "headline"]

NORMS = ("l2", "linf", "l1")
"""The budget's norm ``p``: ``l2``, ``linf`` (per-coordinate bound) or ``l1``."""

DEFINITION = ("Delta L = L(w + a) - L(w), a = argmax_{||a||_0 <= n, ||a||_p <= eps} a^T v with v = grad L(w) "
              "(gradient-based) or v ~ N(0, I) (random) [Sun 2020, Alg. 1-2]; mean cross-entropy, eval mode")


def _check(norm: str, epsilon: float) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is invalid: choose one of {', '.join(map(repr, NORMS))}")
    if not (isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool) and math.isfinite(epsilon)
            and epsilon >= 0):
        raise ValueError(f"epsilon={epsilon!r} is invalid: the budget must be a finite number >= 0")


def corruption(v: Tensor, n: int, epsilon: float, norm: str = "l2") -> Tensor:
    """``argmax_{‖a‖₀ ≤ n, ‖a‖_p ≤ ε} aᵀv``: the n-sparse corruption of p-norm ``ε`` aligned with ``v``.

    Args:
        v: ``[k]`` direction (the loss gradient, or a Gaussian draw for random corruption).
        n: corruption size, the number of coordinates that may change (``0 <= n``; more than ``k`` means ``k``).
        epsilon: budget ``ε >= 0`` on ``‖a‖_p``.
        norm: ``l2``, ``linf`` or ``l1``.

    Returns:
        ``[k]`` tensor ``a`` (same dtype and device as ``v``): zero outside the ``n`` largest ``|v_i|``;
        ``aᵀv = ε ‖v_T‖_q`` (``q`` dual to ``p``). All zeros when ``n = 0``, ``ε = 0`` or ``v_T = 0``.

    Raises:
        ValueError: ``v`` not one-dimensional, ``n < 0``, a bad ``epsilon`` or ``norm``.
    """
    _check(norm, epsilon)
    if v.dim() != 1:
        raise ValueError(f"v must be a flat [k] vector, got shape {tuple(v.shape)}")
    if int(n) < 0:
        raise ValueError(f"n={n!r} is invalid: the corruption size must be >= 0")
    a = torch.zeros_like(v)
    n = min(int(n), v.numel())
    if n == 0 or epsilon == 0:
        return a
    if norm == "l1":
        n = 1  # the l1 ball's vertices: all of the budget on the largest coordinate
    idx = torch.topk(v.abs(), n, sorted=False).indices
    h = v[idx]
    if norm == "linf":
        a[idx] = float(epsilon) * torch.sign(h)
    else:  # l2 (and l1 with n = 1, where h / ||h||_2 = sign(h))
        nrm = torch.linalg.vector_norm(h)
        if float(nrm) > 0:
            a[idx] = h * (float(epsilon) / nrm)
    return a


def gradient_corruption(grad: Tensor, n: int, epsilon: float, norm: str = "l2") -> Tensor:
    """Gradient-based corruption [Sun 2020, Alg. 2, Eq. 7]: :func:`corruption` along the loss gradient ``[k]``."""
    return corruption(grad, n, epsilon, norm)


def random_corruption(k: int, n: int, epsilon: float, norm: str = "l2", *, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """Random corruption [Sun 2020, Alg. 1, Eq. 4]: :func:`corruption` along ``r ~ N(0, I_k)`` (CPU draw).

    Returns:
        ``[k]`` CPU tensor: ``min(n, k)`` uniformly random coordinates with random signs (``linf``: ``±ε``;
        ``l2``: a random direction of norm ``ε`` on them; ``l1``: ``±ε`` on one coordinate).
    """
    r = torch.randn(int(k), generator=generator, dtype=dtype)
    return corruption(r, n, epsilon, norm)


@dataclass(frozen=True, eq=False)
class CorruptionResult(ResultRecord):
    """Loss after random and gradient-based corruption of ``n`` weights, for each corruption size ``n``.

    Attributes:
        sizes: ``[S]`` corruption sizes ``n`` (number of weights changed), ascending, at most ``n_params``.
        epsilon: the budget ``ε`` on ``‖a‖_p``; norm: ``l2``, ``linf`` or ``l1``.
        base_loss, base_acc: mean cross-entropy (nats) and accuracy in [0, 1] of the uncorrupted model.
        gradient_loss, gradient_acc: ``[S]`` after the gradient-based corruption.
        gradient_first_order: ``[S]`` its first-order increase ``gᵀã = ε ‖g_T‖_q``.
        random_loss, random_acc, random_first_order: ``[S, n_random]`` after each random corruption.
        gradient_norm: ``‖g‖₂`` of the full loss gradient at ``w``.
        n_params: ``k``, the trainable weights that may be corrupted.
        n_random: random draws per size; seed: seed of the draws and of the example set.
        count, split, examples: the example set (its description).
        definition: the formula and source; seconds: wall time.
    """

    sizes: np.ndarray
    epsilon: float
    norm: str
    base_loss: float
    base_acc: float
    gradient_loss: np.ndarray
    gradient_acc: np.ndarray
    gradient_first_order: np.ndarray
    random_loss: np.ndarray
    random_acc: np.ndarray
    random_first_order: np.ndarray
    gradient_norm: float
    n_params: int
    n_random: int
    seed: int
    count: int
    split: str
    examples: dict = field(default_factory=dict)
    definition: str = DEFINITION
    seconds: float = 0.0

    @property
    def gradient_increase(self) -> np.ndarray:
        """``[S]`` loss increase (nats) of the gradient-based corruption."""
        return np.asarray(self.gradient_loss, dtype=float) - float(self.base_loss)

    @property
    def random_increase(self) -> np.ndarray:
        """``[S, n_random]`` loss increase (nats) of each random corruption."""
        return np.asarray(self.random_loss, dtype=float).reshape(len(self.sizes), -1) - float(self.base_loss)

    @property
    def random_increase_mean(self) -> np.ndarray:
        """``[S]`` mean over the random draws."""
        return self.random_increase.mean(axis=1)

    @property
    def random_increase_std(self) -> np.ndarray:
        """``[S]`` standard deviation over the random draws (0 for one draw)."""
        return self.random_increase.std(axis=1)


def _params(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _evaluate(model: nn.Module, examples: ExampleSet, batch_size: int) -> tuple[float, float]:
    total, correct = 0.0, 0
    with torch.no_grad():
        for x, y in examples.batches(batch_size):
            out = model(x)
            total += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
    n = max(examples.count, 1)
    return total / n, correct / n


def _gradient(model: nn.Module, params: list[nn.Parameter], examples: ExampleSet, batch_size: int) -> Tensor:
    """``[k]`` gradient of the mean cross-entropy over ``examples`` (batched, summed exactly)."""
    flat = None
    n = max(examples.count, 1)
    for x, y in examples.batches(batch_size):
        loss = F.cross_entropy(model(x), y, reduction="sum") / n
        gs = torch.autograd.grad(loss, params, allow_unused=True)  # an unused weight has gradient 0
        g = torch.cat([(torch.zeros_like(p) if t is None else t).reshape(-1) for p, t in zip(params, gs)])
        flat = g if flat is None else flat + g
    return flat.detach()


def _write(params: list[nn.Parameter], w0: Tensor, a: Tensor) -> None:
    """Weights := ``w0 + a`` in place (no ``.data`` swap: the Parameter objects and their storage stay)."""
    with torch.no_grad():
        i = 0
        for p in params:
            k = p.numel()
            p.copy_((w0[i:i + k] + a[i:i + k]).view_as(p))
            i += k


def _draw_seed(seed: int, n: int, j: int) -> int:
    return ((int(seed) * 1_000_003 + int(n)) * 1_009 + int(j)) % (2 ** 63)


def parameter_corruption(model: nn.Module, examples: ExampleSet, *, sizes: Sequence[int] = (0, 1, 10, 100, 1000),
                         epsilon: float = 0.5, norm: str = "l2", n_random: int = 5, seed: int = 0,
                         batch_size: int = 512,
                         callback: Callable[[int, int, dict], None] | None = None) -> CorruptionResult:
    """Loss increase under random and gradient-based n-sparse corruption of the weights, vs ``n``.

    See the module docstring for the definitions [Sun 2020, Alg. 1-2].

    Args:
        model: the network; all parameters with ``requires_grad`` may be corrupted. Left exactly as found.
        examples: the fixed example set ``D`` (on the model's device).
        sizes: corruption sizes ``n >= 0`` (integers; values above the number of weights mean all of them).
        epsilon: budget ``ε >= 0`` on ``‖a‖_p``.
        norm: ``l2``, ``linf`` or ``l1``.
        n_random: random corruptions drawn per size (``>= 1``).
        seed: seed of the random draws.
        batch_size: examples per forward pass.
        callback: ``callback(done, total, data)`` after each size; ``data`` holds the curves so far
            (``sizes``, ``gradient``, ``random_mean``, ``random_std``: loss increases in nats).

    Returns:
        :class:`CorruptionResult`.

    Raises:
        ValueError: a negative or non-integer size, no sizes, ``n_random < 1``, a bad ``epsilon`` or ``norm``.
    """
    t0 = time.perf_counter()
    _check(norm, epsilon)
    if isinstance(sizes, (int, np.integer)) or not len(sizes):
        raise ValueError(f"sizes={sizes!r} is invalid: give a list of corruption sizes, e.g. [0, 1, 10, 100]")
    bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0]
    if bad:
        raise ValueError(f"sizes={list(sizes)!r} is invalid: corruption sizes are integers >= 0 (got {bad})")
    if isinstance(n_random, bool) or not isinstance(n_random, (int, np.integer)) or n_random < 1:
        raise ValueError(f"n_random={n_random!r} is invalid: draw at least one random corruption per size")
    epsilon = float(epsilon)
    with preserved_state(model), eval_mode(model):
        params = _params(model)
        k = sum(p.numel() for p in params)
        ns = sorted({min(int(s), k) for s in sizes})
        w0 = torch.cat([p.detach().reshape(-1) for p in params]).clone()
        base_loss, base_acc = _evaluate(model, examples, batch_size)
        g = _gradient(model, params, examples, batch_size)
        S, R = len(ns), int(n_random)
        g_loss, g_acc, g_first = np.zeros(S), np.zeros(S), np.zeros(S)
        r_loss, r_acc, r_first = np.zeros((S, R)), np.zeros((S, R)), np.zeros((S, R))
        for i, n in enumerate(ns):
            a = gradient_corruption(g, n, epsilon, norm)
            g_first[i] = float(a.double() @ g.double())
            _write(params, w0, a)
            g_loss[i], g_acc[i] = _evaluate(model, examples, batch_size)
            for j in range(R):
                gen = torch.Generator().manual_seed(_draw_seed(seed, n, j))
                a = random_corruption(k, n, epsilon, norm, generator=gen, dtype=w0.dtype).to(w0.device)
                r_first[i, j] = float(a.double() @ g.double())
                _write(params, w0, a)
                r_loss[i, j], r_acc[i, j] = _evaluate(model, examples, batch_size)
            _write(params, w0, torch.zeros_like(w0))
            if callback is not None:
                inc = r_loss[: i + 1] - base_loss
                callback(i + 1, S, {"sizes": ns[: i + 1], "gradient": (g_loss[: i + 1] - base_loss).tolist(),
                                    "random_mean": inc.mean(axis=1).tolist(), "random_std": inc.std(axis=1).tolist(),
                                    "epsilon": epsilon, "norm": norm})
    return CorruptionResult(
        sizes=np.asarray(ns, dtype=np.int64), epsilon=epsilon, norm=norm, base_loss=base_loss, base_acc=base_acc,
        gradient_loss=g_loss, gradient_acc=g_acc, gradient_first_order=g_first, random_loss=r_loss,
        random_acc=r_acc, random_first_order=r_first, gradient_norm=float(torch.linalg.vector_norm(g)),
        n_params=int(k), n_random=R, seed=int(seed), count=int(examples.count), split=str(examples.split),
        examples=examples.describe(), seconds=time.perf_counter() - t0)


# ------------------------------------------------------------------ the analysis' registry pieces
def run_analysis(model, bundle, rd, p, *, split, count, seed, device, report, **_):
    """Runner of ``analyze("corruption", run)`` (:data:`~workbench.analysis_registry.Runner`)."""
    from .tasks import example_set

    ex = example_set(bundle, split, count, seed, device)
    r = parameter_corruption(model, ex, sizes=list(p["sizes"]), epsilon=p["epsilon"], norm=p["norm"],
                             n_random=p["n_random"], seed=seed,
                             callback=lambda done, total, data: report(done, total, data))
    return r, []


def headline(r: CorruptionResult, extra=()) -> dict:
    """Headline numbers of a :class:`CorruptionResult`.

    Base loss and accuracy, then the loss increase (nats) per size: gradient-based and random (mean over draws).
    """
    row = {"base_loss": float(r.base_loss), "base_acc": float(r.base_acc)}
    for n, gi, ri in zip(np.asarray(r.sizes), r.gradient_increase, r.random_increase_mean):
        row[f"gradient n={int(n)}"] = float(gi)
        row[f"random n={int(n)}"] = float(ri)
    return row
