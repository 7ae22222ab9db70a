r"""EPIC — Effective Poison IdentifiCation ([Yang 2022, Alg. 1, §3.5]).

Every ``period`` (T) epochs after ``warmup`` (K) epochs, for every class ``c``:

1. compute the gradient proxies of the class's *remaining* examples ``V_c ⊂ V``
   in eval mode (BatchNorm running statistics): ``softmax(z) − onehot(y)`` (the
   loss gradient w.r.t. the logits, what the EPIC code uses), or the gradient
   w.r.t. the input of the last linear layer ``(softmax(z) − onehot(y)) W``
   (``∇_f^L ℓ_i`` in §3.5 after Eq. (5), the paper's wording);
2. greedily select ``k_c = ceil(budget · |V_c|)`` facility-location medoids
   (Alg. 1 "while |S| < k/C do j ∈ argmax_{e ∈ V_c \ S} F(e|S)", Eq. 5), with the
   similarity ``c0 − d`` of Eq. 5 (``kernel="shifted_distance"``, default) or the authors'
   code's ``exp(−d/ℓ)`` (``kernel="exponential"``; see :mod:`~workbench.defenses.medoids`);
3. assign every example of ``V_c`` to its nearest medoid and count the cluster
   sizes ``γ_j`` (Alg. 1 "γ_j = Σ_{i∈V_c} 𝕀[j = argmin_s ‖∇ℓ_i − ∇ℓ_s‖]");
4. drop the medoids with ``γ_j == 1`` (Alg. 1 "if γ_j == 1 then Z = Z ∪ {j}";
   ``V = V \ Z``).

Then training continues on the whole remaining set ``V`` ("Train on V for T
epochs") — the medoids are only used to find the isolated points, the victim
is *not* trained on the medoids alone. Drops are permanent: each round selects
among the examples kept by all earlier rounds. Budgets EPIC-0.1/0.2/0.3 and
warm-ups K = 10/20/30 for a 40/200-epoch pipeline are the paper's (§4.1.1).

No UI imports.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..analysis.gradients import last_layer_gradients
from .base import SelectionDefense
from .medoids import GREEDY_METHODS, _check_kernel, class_medoid_clusters

__all__ = ["EPIC", "PROXIES", "gradient_proxies"]

#: EPIC gradient proxies: ``softmax`` = ∂ℓ/∂logits, ``last_input`` = ∂ℓ/∂(input of the last linear layer).
PROXIES = {"softmax": "logits", "last_input": "last_input"}


def gradient_proxies(model: nn.Module, x: Tensor, y: Tensor, proxy: str = "softmax", *, batch_size: int = 512
                     ) -> Tensor:
    """Per-example last-layer gradient proxies of EPIC ([Yang 2022, §3.5]), model in eval mode and left unchanged.

    Args:
        model: a classifier ending in an ``nn.Linear``.
        x: inputs ``[N, ...]``.
        y: labels ``[N]``.
        proxy: ``"softmax"`` → ``softmax(z) − onehot(y)``, ``[N, C]``; ``"last_input"`` →
            ``(softmax(z) − onehot(y)) W``, ``[N, D]`` (D: input width of the last linear layer).
        batch_size: examples per forward pass.

    Returns:
        ``Tensor [N, C or D]`` on the CPU.

    Raises:
        ValueError: unknown ``proxy``.
    """
    if proxy not in PROXIES:
        raise ValueError(f"proxy={proxy!r} is invalid: choose one of {', '.join(map(repr, PROXIES))}")
    return last_layer_gradients(model, (x, y), PROXIES[proxy], batch_size=batch_size)


class EPIC(SelectionDefense):
    """EPIC defense ([Yang 2022, Alg. 1]): drop isolated gradient-space medoids of every class, in rounds.

    Args:
        budget: fraction of every class selected as medoids per round (EPIC-0.1/0.2/0.3), in (0, 1].
        period: ``T``, epochs between rounds (paper: 2 for 40 epochs, 10 for 200, 1 for transfer).
        warmup: ``K``, epochs on all data before the first round (paper: 10/20/30 for EPIC-0.1/0.2/0.3).
        proxy: ``"softmax"`` (∂ℓ/∂logits, the EPIC code's choice) or ``"last_input"``
            (∂ℓ/∂ input of the last layer, the paper's wording).
        seed: kept for the common defense interface (the selection is deterministic).
        greedy: greedy implementation, one of :data:`~workbench.defenses.medoids.GREEDY_METHODS`
            (``"incremental"``: own exact greedy with incremental gain updates, default and fastest
            in benchmarks/bench_epic.py; ``"lazy"``/``"naive"``: own variants; ``"submodlib"``/``"apricot"``:
            the PyPI libraries, if installed).
        max_isolated: medoids with clusters of at most this many examples are dropped (1 in Alg. 1).
        kernel: facility-location similarity: ``"shifted_distance"`` (``c0 − d``, [Yang 2022, Eq. 5],
            default) or ``"exponential"`` (``exp(−d/ℓ)``, what the authors' code runs through submodlib).
        length_scale: ``ℓ`` of the exponential kernel (None: the proxy dimension, as in submodlib).
        stop_after: no round at epochs ``>= stop_after``.
        batch_size: examples per inference pass for the proxies.

    Example::

        defense = EPIC(budget=0.2, period=2, warmup=10)
        defense.set_poison_indices(poison.index)
        Trainer(cfg, data=bundle, defense=defense).run()
        defense.log  # one row per dropped example
    """

    name = "epic"

    def __init__(self, budget: float = 0.2, period: int = 2, warmup: int = 10, proxy: str = "softmax", seed: int = 0,
                 *, greedy: str = "incremental", max_isolated: int = 1, stop_after: int | None = None,
                 batch_size: int = 512, kernel: str = "shifted_distance", length_scale: float | None = None):
        super().__init__(period=period, warmup=warmup, stop_after=stop_after, seed=seed, batch_size=batch_size)
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
            raise ValueError(f"budget={budget!r} is invalid: must be a fraction of each class in (0, 1]")
        if proxy not in PROXIES:
            raise ValueError(f"proxy={proxy!r} is invalid: choose one of {', '.join(map(repr, PROXIES))}")
        if greedy not in GREEDY_METHODS:
            raise ValueError(f"greedy={greedy!r} is invalid: choose one of {', '.join(map(repr, GREEDY_METHODS))}")
        if isinstance(max_isolated, bool) or not isinstance(max_isolated, int) or max_isolated < 1:
            raise ValueError(f"max_isolated={max_isolated!r} is invalid: must be an integer >= 1")
        _check_kernel(kernel, length_scale)
        self.budget = float(budget)
        self.kernel = kernel
        self.length_scale = None if length_scale is None else float(length_scale)
        self.proxy = proxy
        self.greedy = greedy
        self.max_isolated = max_isolated
        self.timings: dict[str, float] = {}

    def config(self) -> dict:
        """The defense's settings as a plain dict (saved with the run's state and in its records)."""
        cfg = {"budget": self.budget, "proxy": self.proxy, "max_isolated": self.max_isolated, **super().config()}
        if self.kernel != "shifted_distance" or self.length_scale is not None:  # states saved before kernel= load
            cfg.update(kernel=self.kernel, length_scale=self.length_scale)
        return cfg

    def _select(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int) -> dict:
        import time

        t0 = time.perf_counter()
        g = gradient_proxies(model, x, y, self.proxy, batch_size=self.batch_size)
        t1 = time.perf_counter()
        dev = next(model.parameters()).device
        g = g.to(dev)
        yc = y.cpu()
        n = len(yc)
        drop = torch.zeros(n, dtype=torch.bool)
        size = torch.zeros(n, dtype=torch.long)
        for c in torch.unique(yc).tolist():
            pos = torch.nonzero(yc == c).squeeze(1)
            cl = class_medoid_clusters(g[pos.to(dev)], self.budget, method=self.greedy,
                                       max_isolated=self.max_isolated, kernel=self.kernel,
                                       length_scale=self.length_scale)
            drop[pos[cl.isolated]] = True
            size[pos] = cl.cluster_size
        self.timings = {"proxies": t1 - t0, "medoids": time.perf_counter() - t1}
        return {"drop": drop, "cluster_size": size}
