"""Greedy facility-location medoids and gradient clusters (the selection step of EPIC).

Source: [Yang 2022, §3.5, Eq. 4–5 and Alg. 1] (Yang, Liu, Mirzasoleiman, "Not All Poisons are
Created Equal", ICML 2022). For the points ``g_i``
of one class (gradient proxies), the medoids ``S`` maximise the facility-location
function

    F(S) = Σ_i max_{j ∈ S} s_ij,   s_ij = c0 − ‖g_i − g_j‖₂,   c0 ≥ max_{i,j} ‖g_i − g_j‖₂   (Eq. 5)

which is monotone submodular for any non-negative similarity ``s_ij``, so the greedy
algorithm (add ``argmax_e F(e | S)``, Alg. 1 lines "while |S| < k/C: j ∈ argmax F(e|S);
S = S ∪ {j}") is a (1 − 1/e) approximation (Wolsey 1982). Every point is then assigned
to its nearest medoid and ``γ_j`` (Alg. 1) counts the points of medoid ``j``'s cluster.

Two similarity kernels (``kernel=``), both on the Euclidean distance ``d_ij = ‖g_i − g_j‖₂``:

* ``"shifted_distance"`` (default): ``s_ij = c0 − d_ij`` with ``c0 = max d`` — the paper's
  Eq. 5.
* ``"exponential"``: the exponential kernel ``s_ij = exp(−d_ij / ℓ)`` with length scale ``ℓ``
  (``length_scale``; default the proxy dimension ``d``, i.e. ``exp(−d_ij / d)``). This is what
  the authors' code actually runs: it builds ``submodlib.FacilityLocationFunction(data=...,
  metric="euclidean", mode="dense")``, whose dense Euclidean kernel is ``exp(−d_ij / d)``
  with ``d`` the number of features (checked against submodlib-py 0.0.3 in
  ``tests/test_epic.py``).

Once ``S`` is non-empty the greedy gains of the shifted distance, ``Σ_i max(0, d_iS − d_ie)``,
do not depend on ``c0``; the exponential kernel is a concave, decreasing transform of ``d``,
so it weighs near neighbours more. Both give the same nearest-medoid assignment.

Implementations of the greedy step (all exact greedy, same result up to ties):

* ``"lazy"`` (own): vectorised lazy greedy (Minoux 1978). Stale gains are upper
  bounds on the true ones (submodularity); each step evaluates the exact gains of the
  ``block`` candidates with the largest bounds in one ``[n, block]`` operation and accepts
  the best one as soon as its exact gain is at least the largest bound outside the block,
  otherwise it refreshes those bounds and repeats. Typically ``O(n · block)`` per step, but
  more torch calls per step than ``"incremental"``; slower in benchmarks/bench_epic.py.
* ``"incremental"`` (default, own): keeps the gains ``F(e | S)`` of all candidates
  and, when ``j`` is added, subtracts the change only for the rows whose
  nearest-medoid similarity improved. The first step costs ``O(n²)``, later
  steps ``O(|changed rows| · n)``; vectorised torch, no Python loop over candidates.
  It returns exactly what lazy greedy (Minoux 1978) returns, usually faster since
  it needs no priority queue.
* ``"naive"`` (own): recomputes every gain each step, ``O(k n²)``; the reference.
* ``"submodlib"``: ``submodlib.FacilityLocationFunction`` (PyPI ``submodlib-py``),
  lazy greedy on the same precomputed similarity matrix (the library the EPIC authors' code uses).
* ``"apricot"``: ``apricot.FacilityLocationSelection`` (PyPI ``apricot-select``,
  numba) on the same precomputed similarity matrix, lazy greedy.

The libraries are optional: they are imported only when asked for.

No UI imports.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["GREEDY_METHODS", "KERNELS", "facility_location_similarity", "greedy_facility_location", "assign_to_medoids",
           "ClassClusters", "class_medoid_clusters", "medoid_budget"]

GREEDY_METHODS = ("lazy", "incremental", "naive", "submodlib", "apricot")
#: Facility-location similarity kernels: ``c0 − d`` (the paper's Eq. 5) and ``exp(−d/ℓ)`` (the authors' code).
KERNELS = ("shifted_distance", "exponential")


def _check_kernel(kernel: str, length_scale) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is invalid: choose one of {', '.join(map(repr, KERNELS))}")
    if length_scale is not None and (isinstance(length_scale, bool) or not isinstance(length_scale, (int, float))
                                     or not np.isfinite(length_scale) or length_scale <= 0):
        raise ValueError(f"length_scale={length_scale!r} is invalid: must be a positive number (or None: the "
                         "proxy dimension)")


def _as_points(points) -> Tensor:
    X = torch.as_tensor(points)
    if X.dim() != 2:
        raise ValueError(f"points must be a matrix [n, d], got shape {tuple(X.shape)}")
    if not X.dtype.is_floating_point:
        X = X.double()
    if not torch.isfinite(X).all():
        raise ValueError("points contain NaN or inf")
    return X


def facility_location_similarity(points, *, kernel: str = "shifted_distance", length_scale: float | None = None,
                                 dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Pairwise distances and the facility-location similarity (see the module docstring for the kernels).

    Args:
        points: ``[n, d]`` vectors (e.g. gradient proxies of one class), any float dtype/device.
        kernel: ``"shifted_distance"``: ``S = c0 − D`` with ``c0 = max D`` (the smallest constant
            satisfying the condition of [Yang 2022, Eq. 5]), so ``S ≥ 0`` and ``S_ii = c0``; when all
            points coincide ``c0 = 0`` and ``c0`` is set to 1. ``"exponential"``: ``S = exp(−D / ℓ)``
            (the EPIC authors' code, through submodlib's dense Euclidean kernel), ``S ∈ (0, 1]``.
        length_scale: ``ℓ`` of the exponential kernel; ``None``: the dimension ``d`` of the points
            (submodlib's choice). Ignored by ``"shifted_distance"``.
        dtype: working precision (float64 keeps greedy ties stable).

    Returns:
        ``(D, S)``: ``D [n, n]`` Euclidean distances (zero diagonal) and the similarity ``S [n, n]``.

    Raises:
        ValueError: unknown ``kernel``, a non-positive ``length_scale``, points not ``[n, d]`` or non-finite.
    """
    _check_kernel(kernel, length_scale)
    X = _as_points(points).to(dtype)
    D = torch.cdist(X, X)
    D.fill_diagonal_(0.0)
    if kernel == "exponential":
        ell = float(length_scale) if length_scale is not None else float(max(X.shape[1], 1))
        return D, torch.exp(-D / ell)
    c0 = D.max() if D.numel() else torch.tensor(0.0, dtype=dtype)
    if float(c0) <= 0.0:
        c0 = torch.tensor(1.0, dtype=dtype, device=D.device)
    return D, c0 - D


def _greedy_naive(S: Tensor, k: int) -> Tensor:
    n = S.shape[0]
    cur = torch.zeros(n, dtype=S.dtype, device=S.device)
    chosen = torch.zeros(n, dtype=torch.bool, device=S.device)
    order = []
    for _ in range(k):
        gains = (S - cur[:, None]).clamp_min_(0).sum(0)
        gains[chosen] = -float("inf")
        j = int(torch.argmax(gains))
        order.append(j)
        chosen[j] = True
        cur = torch.maximum(cur, S[:, j])
    return torch.tensor(order, dtype=torch.long)


def _greedy_incremental(S: Tensor, k: int) -> Tensor:
    n = S.shape[0]
    cur = torch.zeros(n, dtype=S.dtype, device=S.device)  # max_{j∈S} s_ij (0 for S = ∅, as S ≥ 0)
    gains = S.sum(0)  # F(e | ∅) = Σ_i s_ie
    chosen = torch.zeros(n, dtype=torch.bool, device=S.device)
    order = []
    for _ in range(k):
        g = gains.masked_fill(chosen, -float("inf"))
        j = int(torch.argmax(g))
        order.append(j)
        chosen[j] = True
        new = S[:, j]
        rows = torch.nonzero(new > cur).squeeze(1)
        if rows.numel():
            Sr = S.index_select(0, rows)  # [r, n]
            old_c, new_c = cur[rows, None], new[rows, None]
            # F(e|S) = Σ_i max(0, s_ie − cur_i): only rows whose cur_i rose (old → new) change, each by
            # max(0, s − old) − max(0, s − new) = clamp(s, old, new) − old (one pass instead of two)
            gains -= (torch.clamp(Sr, min=old_c, max=new_c) - old_c).sum(0)
            cur[rows] = new[rows]
    return torch.tensor(order, dtype=torch.long)


def _greedy_lazy(S: Tensor, k: int, block: int = 32) -> Tensor:
    n = S.shape[0]
    cur = torch.zeros(n, dtype=S.dtype, device=S.device)
    ub = S.sum(0)  # exact F(e | ∅); later stale gains, i.e. upper bounds (submodularity)
    chosen = torch.zeros(n, dtype=torch.bool, device=S.device)
    order: list[int] = []
    while len(order) < k:
        left = n - len(order)
        b = min(block, left)
        vals, cand = torch.topk(ub.masked_fill(chosen, -float("inf")), min(b + 1, left))
        top = cand[:b]
        exact = (S[:, top] - cur[:, None]).clamp_min_(0).sum(0)
        ub[top] = exact
        best = int(torch.argmax(exact))
        if left == b or exact[best] >= vals[b]:  # no candidate outside the block can beat it
            j = int(top[best])
            order.append(j)
            chosen[j] = True
            cur = torch.maximum(cur, S[:, j])
    return torch.tensor(order, dtype=torch.long)


def _greedy_submodlib(S: Tensor, k: int) -> Tensor:
    try:
        from submodlib import FacilityLocationFunction
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("method='submodlib' needs the PyPI package submodlib-py (pip install submodlib-py)") from e
    n = S.shape[0]
    sim = S.detach().cpu().double().numpy()
    f = FacilityLocationFunction(n=n, mode="dense", sijs=sim, separate_rep=False)
    res = f.maximize(budget=k, optimizer="LazyGreedy", stopIfZeroGain=False, stopIfNegativeGain=False,
                     verbose=False, show_progress=False)
    return torch.tensor([int(i) for i, _ in res], dtype=torch.long)


def _greedy_apricot(S: Tensor, k: int) -> Tensor:
    try:
        from apricot import FacilityLocationSelection
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("method='apricot' needs the PyPI package apricot-select (pip install apricot-select)") from e
    sim = S.detach().cpu().double().numpy()
    sel = FacilityLocationSelection(k, metric="precomputed", optimizer="lazy", verbose=False).fit(sim)
    return torch.as_tensor(np.asarray(sel.ranking, dtype=np.int64))


def greedy_facility_location(points, k: int, *, method: str = "incremental", similarity: Tensor | None = None,
                             kernel: str = "shifted_distance", length_scale: float | None = None) -> Tensor:
    """Greedy maximisation of the facility-location function ([Yang 2022, Eq. 5]; Alg. 1 inner ``while`` loop).

    Args:
        points: ``[n, d]`` vectors (ignored when ``similarity`` is given; may then be None).
        k: number of medoids, ``1 <= k <= n``.
        method: one of :data:`GREEDY_METHODS` (see the module docstring).
        similarity: a precomputed non-negative ``[n, n]`` similarity (from
            :func:`facility_location_similarity`) to reuse.
        kernel: the similarity built from ``points`` when ``similarity`` is None
            (:func:`facility_location_similarity`).
        length_scale: ``ℓ`` of the exponential kernel (None: the dimension of the points).

    Returns:
        ``LongTensor [k]``: positions (rows of ``points``) of the medoids in the order the
        greedy algorithm picked them (ties between numerically equal gains may be broken differently by each method).

    Raises:
        ValueError: bad ``k`` or ``method``, non-finite points.
        ImportError: a library method whose package is not installed.
    """
    if method not in GREEDY_METHODS:
        raise ValueError(f"method={method!r} is invalid: choose one of {', '.join(map(repr, GREEDY_METHODS))}")
    S = similarity if similarity is not None else \
        facility_location_similarity(points, kernel=kernel, length_scale=length_scale)[1]
    n = S.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= n:
        raise ValueError(f"k={k!r} is invalid: must be an integer in 1..{n} (the number of points)")
    k = int(k)
    fn = {"lazy": _greedy_lazy, "incremental": _greedy_incremental, "naive": _greedy_naive,
          "submodlib": _greedy_submodlib,
          "apricot": _greedy_apricot}[method]
    return fn(S, k)


def assign_to_medoids(distances: Tensor, medoids: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest-medoid assignment and cluster sizes ``γ_j`` ([Yang 2022, Alg. 1], the ``for j = 1 to |S|`` loop).

    Args:
        distances: ``[n, n]`` pairwise distances of the class's points.
        medoids: ``LongTensor [m]`` positions of the medoids.

    Returns:
        ``(assignment, gamma)``: ``assignment [n]`` — for every point, the position *within*
        ``medoids`` of its nearest medoid (a medoid is always assigned to itself, also when
        another medoid coincides with it); ``gamma [m]`` — the number of points assigned to
        each medoid (≥ 1, since it contains the medoid).
    """
    medoids = medoids.to(distances.device)
    assignment = torch.argmin(distances[:, medoids], dim=1)
    assignment[medoids] = torch.arange(len(medoids), device=distances.device)
    gamma = torch.bincount(assignment, minlength=len(medoids))
    return assignment.cpu(), gamma.cpu()


def medoid_budget(budget: float, n: int) -> int:
    """Number of medoids for a class of ``n`` points: ``ceil(budget · n)``, at least 1, at most ``n``.

    ``budget`` is the fraction of the class selected as medoids (EPIC-0.1/0.2/0.3 in
    [Yang 2022, Tables 1–2]; Alg. 1 writes it as ``k/C`` per class for ``k`` medoids in all).
    """
    if n <= 0:
        return 0
    return int(min(n, max(1, int(np.ceil(budget * n - 1e-9)))))


@dataclass
class ClassClusters:
    """Medoids and gradient clusters of one class (positions are rows of the class's points).

    Attributes:
        medoids: ``LongTensor [m]`` positions of the medoids (greedy order).
        assignment: ``LongTensor [n]`` position within ``medoids`` of every point's medoid.
        gamma: ``LongTensor [m]`` cluster sizes ``γ_j``.
        cluster_size: ``LongTensor [n]`` size of the cluster every point belongs to.
        isolated: ``LongTensor [z]`` positions of the medoids with ``γ_j <= max_isolated``
            (Alg. 1: ``γ_j == 1`` → ``Z``), the points EPIC drops.
    """

    medoids: Tensor
    assignment: Tensor
    gamma: Tensor
    cluster_size: Tensor
    isolated: Tensor


def class_medoid_clusters(points, budget: float, *, method: str = "incremental", max_isolated: int = 1,
                          kernel: str = "shifted_distance", length_scale: float | None = None) -> ClassClusters:
    """Medoids, clusters and isolated medoids of one class ([Yang 2022, Alg. 1], one ``for examples V_c`` pass).

    Args:
        points: ``[n, d]`` gradient proxies of the class's (remaining) examples.
        budget: fraction of the class taken as medoids (:func:`medoid_budget`).
        method: greedy implementation (:data:`GREEDY_METHODS`).
        max_isolated: medoids whose cluster has at most this many points are isolated
            (1 in Alg. 1; the EPIC code calls it ``cluster_thresh``).
        kernel: the facility-location similarity (:func:`facility_location_similarity`:
            ``"shifted_distance"`` ``c0 − d``, the paper's; ``"exponential"`` ``exp(−d/ℓ)``, the authors' code's).
        length_scale: ``ℓ`` of the exponential kernel (None: the dimension of the points).

    Returns:
        :class:`ClassClusters`.

    Raises:
        ValueError: ``budget`` outside (0, 1], ``max_isolated < 1``, bad points, bad ``kernel``/``length_scale``.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise ValueError(f"budget={budget!r} is invalid: must be a fraction in (0, 1]")
    if isinstance(max_isolated, bool) or not isinstance(max_isolated, int) or max_isolated < 1:
        raise ValueError(f"max_isolated={max_isolated!r} is invalid: must be an integer >= 1")
    _check_kernel(kernel, length_scale)
    X = _as_points(points)
    n = X.shape[0]
    if n == 0:
        e = torch.zeros(0, dtype=torch.long)
        return ClassClusters(e, e, e, e, e)
    D, S = facility_location_similarity(X, kernel=kernel, length_scale=length_scale)
    medoids = greedy_facility_location(None, medoid_budget(budget, n), method=method, similarity=S)
    assignment, gamma = assign_to_medoids(D, medoids)
    isolated = medoids[gamma <= max_isolated]
    return ClassClusters(medoids=medoids, assignment=assignment, gamma=gamma, cluster_size=gamma[assignment],
                         isolated=isolated)
