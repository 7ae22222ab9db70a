"""Low-dimensional projections (PCA) of gradients and features, with per-point labels and groups.

[Yang 2022, Fig. 1b] projects last-layer gradients of clean
examples of the target and poison classes, poisons, and *effective* poisons on
their first two principal components (effective poisons lie isolated, far
from the clean examples of their class). :func:`gradient_pca` reproduces that
view for any model and gradient space (:mod:`workbench.analysis.gradients`);
:func:`feature_pca` does the same for a ReLU layer's activations
(:mod:`workbench.analysis.features`); :func:`pca` works on any matrix.
``groups`` carries any user label per point (``"clean"`` / ``"poison"`` /
``"effective poison"``; :func:`groups_from_indices` builds them from dataset
indices) through to the result and to ``workbench.viz.pca_figure``.

**Centring.** PCA centres each *feature* over the examples (subtracts the mean
over axis 0 of the ``[N examples, D features]`` matrix). The reference code of
tml-epfl/sam-low-rank-features subtracts the mean of each *example* across
features (axis 1) before its SVD, which is not PCA. Here
``center=True`` is scikit-learn's PCA (axis 0); ``center=False`` is a plain
truncated SVD of the uncentred matrix, whose "explained variance ratio" is the
fraction of the total energy ``‖X‖_F²`` (``σ_i² / Σσ²``).

No UI imports.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from torch import Tensor, nn

from .common import ExampleSet, ResultRecord

__all__ = ["ProjectionResult", "pca", "gradient_pca", "feature_pca", "groups_from_indices",
           "MAX_STORED_COMPONENT_ENTRIES"]

#: ``components`` are stored only when ``k × D`` is at most this many numbers (default of ``keep_components``).
MAX_STORED_COMPONENT_ENTRIES = 1_000_000
_RANDOMIZED_ABOVE = 1000


@dataclass(frozen=True, eq=False)
class ProjectionResult(ResultRecord):
    """A projection of N points to k dimensions.

    Attributes:
        coords: ``[N, k]`` projected points.
        explained_variance_ratio: ``[k]``, non-increasing, each ≤ 1 (energy ratio when uncentred).
        components: ``[k, D]`` principal axes, or ``None`` when not kept (large ``D``).
        labels: class per point (or ``None``).
        groups: any user label per point (``"clean"``, ``"poison"``, ...; or ``None``).
        index: dataset index per point (or ``None``).
        method: ``"pca"`` (centred) or ``"svd"`` (uncentred), with the solver, e.g. ``"pca/full"``.
        source: what was projected (e.g. ``"gradients:logits"``, ``"features:classifier.1"``, ``"matrix"``).
        center: whether features were centred over examples.
        n_features: ``D``; seed: random state of the randomized solver; seconds: time taken.
    """

    coords: np.ndarray
    explained_variance_ratio: np.ndarray
    components: np.ndarray | None = None
    labels: np.ndarray | None = None
    groups: list | None = None
    index: np.ndarray | None = None
    method: str = "pca"
    source: str = "matrix"
    center: bool = True
    n_features: int = 0
    seed: int = 0
    seconds: float = 0.0


def _to_numpy(m) -> np.ndarray:
    if isinstance(m, Tensor):
        m = m.detach().cpu().numpy()
    a = np.asarray(m)
    if a.dtype != np.float32:
        a = a.astype(np.float64)
    return a


def _plain_list(v) -> list:
    return [x.item() if hasattr(x, "item") else x for x in (v.tolist() if hasattr(v, "tolist") else list(v))]


def groups_from_indices(index, mapping: Mapping[str, Sequence[int]], default: str = "clean") -> list[str]:
    """Group name per point from dataset indices.

    Args:
        index: dataset index per point (e.g. ``examples.index``).
        mapping: ``{group: dataset indices}``, applied in order, so a later group
            overrides an earlier one (``{"poison": all_poisons, "effective poison": effective}``).
        default: group of the points in no list.
    """
    idx = np.asarray(index.cpu() if isinstance(index, Tensor) else index).reshape(-1)
    out = np.array([default] * len(idx), dtype=object)
    for name, members in mapping.items():
        m = np.asarray(members.cpu() if isinstance(members, Tensor) else list(members), dtype=np.int64)
        out[np.isin(idx, m)] = name
    return [str(g) for g in out]


def pca(matrix, n_components: int = 2, *, center: bool = True, labels=None, groups=None, index=None,
        seed: int = 0, solver: str = "auto", keep_components: bool | None = None,
        source: str = "matrix") -> ProjectionResult:
    """Principal components of the rows of ``matrix`` ``[N, D]`` (scikit-learn).

    Args:
        matrix: ``[N, D]`` Tensor or ndarray (float32 stays float32, else float64).
        n_components: k, ``1 <= k <= min(N, D)``.
        center: centre each feature over the examples (PCA); ``False``: uncentred truncated SVD.
        labels: per-point class labels (length N).
        groups: per-point user groups (length N).
        index: per-point dataset indices (length N).
        seed: random state of the randomized solver.
        solver: ``"auto"`` (``randomized`` when ``D > 1000`` and ``k < 0.8 min(N, D)``,
            else ``full``), ``"full"`` or ``"randomized"``.
        keep_components: store the ``[k, D]`` axes (default: when ``k·D <= 1e6``).
        source: free text describing what was projected.

    Returns:
        :class:`ProjectionResult`.
    """
    t0 = time.perf_counter()
    X = _to_numpy(matrix)
    if X.ndim != 2:
        raise ValueError(f"matrix must be 2-D [N, D], got shape {X.shape}")
    n, d = X.shape
    k = int(n_components)
    if not 1 <= k <= min(n, d):
        raise ValueError(f"n_components={n_components!r} is invalid: must lie in 1..min(N, D) = {min(n, d)}")
    if not np.isfinite(X).all():
        raise ValueError("matrix contains NaN or inf values")
    for name, v in (("labels", labels), ("groups", groups), ("index", index)):
        if v is not None and len(v) != n:
            raise ValueError(f"{name} has {len(v)} entries for {n} points")
    if solver == "auto":
        solver = "randomized" if d > _RANDOMIZED_ABOVE and k < 0.8 * min(n, d) else "full"
    if solver not in ("full", "randomized"):
        raise ValueError(f"solver={solver!r} is invalid: choose 'auto', 'full' or 'randomized'")
    if center:
        from sklearn.decomposition import PCA

        model = PCA(n_components=k, svd_solver=solver, random_state=seed if solver == "randomized" else None)
        coords = model.fit_transform(X)
        evr = model.explained_variance_ratio_
        comps = model.components_
    else:
        from sklearn.utils.extmath import randomized_svd, svd_flip

        if solver == "full":
            U, S, Vt = np.linalg.svd(X, full_matrices=False)
            U, S, Vt = U[:, :k], S[:k], Vt[:k]
        else:
            U, S, Vt = randomized_svd(X, k, random_state=seed)
        U, Vt = svd_flip(U, Vt)
        coords = U * S
        total = float((X.astype(np.float64) ** 2).sum())
        evr = (S.astype(np.float64) ** 2) / total if total > 0 else np.zeros(k)
        comps = Vt
    if keep_components is None:
        keep_components = k * d <= MAX_STORED_COMPONENT_ENTRIES
    lab = None if labels is None else np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    idx = None if index is None else np.asarray(index.cpu() if isinstance(index, Tensor) else index)
    return ProjectionResult(
        coords=np.asarray(coords), explained_variance_ratio=np.asarray(evr, dtype=np.float64),
        components=np.asarray(comps) if keep_components else None, labels=lab,
        groups=None if groups is None else _plain_list(groups), index=idx,
        method=f"{'pca' if center else 'svd'}/{solver}", source=source, center=bool(center), n_features=int(d),
        seed=int(seed), seconds=time.perf_counter() - t0)


def gradient_pca(model: nn.Module, examples: ExampleSet, kind: str = "logits", n_components: int = 2, *,
                 groups=None, params=None, center: bool = True, seed: int = 0, batch_size: int = 256,
                 max_params: int | None = None, solver: str = "auto") -> ProjectionResult:
    """PCA of per-example gradients ([Yang 2022, Fig. 1b]).

    Args:
        model: the classifier (left unchanged; gradients in eval mode).
        examples: the points; labels and dataset indices come from it.
        kind: ``"logits"`` (EPIC's proxy ``softmax − onehot``), ``"last_input"``,
            ``"weights"`` (last-layer weight gradient) or ``"full"``
            (:func:`~workbench.analysis.gradients.per_example_gradients` on ``params``).
        groups: user label per point (see :func:`groups_from_indices`).
        n_components: number of principal components k.
        params: parameter selection for ``kind="full"`` (default: all).
        center: centre each gradient coordinate over the examples (see :func:`pca`).
        seed: random state of the randomized solver.
        batch_size: examples per backward pass.
        max_params: guard on the gradient size for ``kind="full"``
            (default guard of :func:`~workbench.analysis.gradients.per_example_gradients`).
        solver: ``"auto"``, ``"full"`` or ``"randomized"`` (see :func:`pca`).
    """
    from .gradients import DEFAULT_MAX_PARAMS, gradients_of_kind

    t0 = time.perf_counter()
    G = gradients_of_kind(model, examples, kind, params=params, batch_size=batch_size,
                          max_params=DEFAULT_MAX_PARAMS if max_params is None else max_params)
    r = pca(G, n_components, center=center, labels=examples.y.cpu().numpy(), groups=groups,
            index=examples.index.cpu().numpy(), seed=seed, solver=solver, source=f"gradients:{kind}")
    return _retimed(r, t0)


def feature_pca(model: nn.Module, examples: ExampleSet, layer: str, n_components: int = 2, *, groups=None,
                max_units: int | None = None, center: bool = True, seed: int = 0, batch_size: int = 512,
                solver: str = "auto") -> ProjectionResult:
    """PCA of one ReLU layer's post-activation features (eval mode; see :mod:`workbench.analysis.features`).

    ``max_units=None`` uses every unit of the layer (``N × C·H·W`` numbers for a
    convolutional layer); an integer draws that many units (seeded by ``seed``).
    """
    from .features import collect_activations

    t0 = time.perf_counter()
    acts = collect_activations(model, examples, layers=[layer], max_units=max_units, seed=seed,
                               batch_size=batch_size)
    r = pca(acts.values[layer], n_components, center=center, labels=examples.y.cpu().numpy(), groups=groups,
            index=examples.index.cpu().numpy(), seed=seed, solver=solver, source=f"features:{layer}")
    return _retimed(r, t0)


def _retimed(r: ProjectionResult, t0: float) -> ProjectionResult:
    import dataclasses

    return dataclasses.replace(r, seconds=time.perf_counter() - t0)
