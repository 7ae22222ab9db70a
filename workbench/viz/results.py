"""From analysis results (or partial progress data) to figures.

:func:`result_figure` draws finished results of one analysis kind, several runs
overlaid; :func:`progress_figure` draws the partial data an analysis reports
while it runs (Ritz values, interpolation points, plane rows, ...), with the
same builders, so the live panel fills in the figure the export will show.

Which builder draws which analysis is read from the analysis registry
(:mod:`workbench.analysis_registry`): each entry names its ``figure`` (and
optional ``progress``) builder as ``"module:function"``, so this module has no
per-analysis ``if`` chain and a new analysis needs no edit here. The builders
of the built-in analyses are the ``_figure_<name>`` / ``_progress_<name>``
functions below; builders take ``(items, *, theme, metric, split, kind, log_y)``
with ``items`` a list of ``(label, result, extra)``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import plotly.graph_objects as go

from ..analysis_registry import analysis_names, get_entry, resolve
from .analysis import (
    cosine_histogram_figure,
    density_figure,
    eigenvalues_figure,
    interpolation_figure,
    pca_figure,
    plane_figure,
    sharpness_figure,
    slice_figure,
)
from .theme import apply_theme

__all__ = ["result_figure", "progress_figure", "summary_rows", "slice_settings", "plane_settings", "ANALYSIS_TITLES",
           "COMPUTING"]

class _Titles(Mapping):
    """``{analysis: plain-words title}`` read live from the registry (entries registered later included)."""

    def __getitem__(self, what: str) -> str:
        try:
            return get_entry(what).title
        except ValueError:
            raise KeyError(what) from None

    def __iter__(self):
        return iter(analysis_names())

    def __len__(self) -> int:
        return len(analysis_names())


ANALYSIS_TITLES: Mapping[str, str] = _Titles()
"""Plain-words name of each analysis (figure titles before a result exists)."""

COMPUTING = " — computing…"
"""Suffix of the title of every screen figure :func:`progress_figure` draws (an analysis still running)."""


def _items(results) -> list[tuple[str, Any, list]]:
    """Normalise ``[AnalysisOutput]`` or ``{label: result}`` to ``[(label, result, extra)]``."""
    if isinstance(results, Mapping):
        return [(k, v, []) for k, v in results.items()]
    return [(o.label, o.result, list(getattr(o, "extra", []))) for o in results]


def _unique(items):
    seen: dict[str, int] = {}
    out = []
    for label, r, extra in items:
        n = seen.get(label, 0)
        seen[label] = n + 1
        out.append((label if n == 0 else f"{label} ({n + 1})", r, extra))
    return out


def _normalised(d: Mapping) -> str:
    n = d.get("normalization")
    return {"filter": "filter-normalised", "layer": "layer-normalised", "none": "not normalised"}.get(n, str(n))


def _direction_text(dirs: list) -> str:
    """"2 random directions (filter-normalised, biases/BN zero)" from :meth:`Direction.describe` dicts."""
    dirs = [d for d in dirs if isinstance(d, Mapping)]
    if not dirs:
        return ""
    kind = dirs[0].get("kind", "?")
    name = "top Hessian eigenvector" if kind == "eigenvector" else f"{kind} direction"
    text = name if len(dirs) == 1 and kind == "eigenvector" else f"{len(dirs)} {name}{'s' if len(dirs) > 1 else ''}"
    if "normalization" in dirs[0]:
        text += f" ({_normalised(dirs[0])}, biases/BN {dirs[0].get('bias_bn', '?')})"
    return text


def _examples_text(r) -> str:
    """"64 train / 64 test examples, seed 0" from a landscape result's ``examples``; BN mode and its data."""
    ex = {sp: d for sp, d in (getattr(r, "examples", None) or {}).items() if isinstance(d, Mapping)}
    text = " / ".join(f"{d.get('count', '?')} {d.get('split', sp)}" for sp, d in ex.items()) + " examples"
    seeds = sorted({str(d["seed"]) for d in ex.values() if d.get("seed") is not None})
    if seeds:
        text += f", seed {', '.join(seeds)}"
    bn = f"BN {r.bn}"
    if isinstance(r.bn_data, Mapping) and r.bn_data.get("count") is not None:
        bn += f" (statistics from {r.bn_data['count']} {r.bn_data.get('split', '')} examples)".replace("  ", " ")
    return f"{bn} · {text}"


def slice_settings(result, extra=()) -> str:
    """The settings a slice result was computed with, in words, read from the result itself.

    Args:
        result: a :class:`~workbench.analysis.landscape.SliceResult` (the first direction).
        extra: the slices along the further directions (``AnalysisOutput.extra``).

    Returns:
        e.g. ``"2 random directions (filter-normalised, biases/BN zero) · α ∈ [-1, 1], 41 points · BN keep ·
        2048 train / 2048 test examples, seed 0"``.
    """
    a = np.asarray(result.alphas, dtype=float)
    parts = [_direction_text([result.direction] + [getattr(e, "direction", None) for e in extra]),
             f"α ∈ [{a.min():g}, {a.max():g}], {len(a)} points" if a.size else "", _examples_text(result)]
    return " · ".join(p for p in parts if p)


def plane_settings(result) -> str:
    """The settings of a plane result, in words, read from the result itself.

    Returns:
        e.g. ``"2 random directions (filter-normalised, biases/BN zero), cos(d₁, d₂) = 0.007 · span 1, 21×21 grid ·
        BN keep · 1024 train examples, seed 0"``.
    """
    a, b = np.asarray(result.alphas, dtype=float), np.asarray(result.betas, dtype=float)
    span = max(float(np.max(np.abs(a))) if a.size else 0.0, float(np.max(np.abs(b))) if b.size else 0.0)
    dirs = _direction_text(list(result.directions))
    if dirs:
        dirs += f", cos(d₁, d₂) = {float(result.cosine):.3g}"
    parts = [dirs, f"span {span:g}, {len(b)}×{len(a)} grid", _examples_text(result)]
    return " · ".join(p for p in parts if p)


def _subtitle(fig: go.Figure, texts: list[tuple[str, str]], theme: str) -> go.Figure:
    """Settings under the title (screen theme only): one line when all results share them, else one per run."""
    if theme != "screen" or not texts:
        return fig
    uniq = list(dict.fromkeys(t for _, t in texts))
    text = uniq[0] if len(uniq) == 1 else "<br>".join(f"{l}: {t}" for l, t in texts)
    fig.update_layout(title_subtitle_text=text, margin_t=max(fig.layout.margin.t or 0, 64 + 16 * len(uniq)))
    return fig


def result_figure(what: str, results, *, theme: str = "screen", metric: str = "loss", split: str | None = None,
                  kind: str = "contour", log_y: bool = False) -> go.Figure:
    """Figure of finished analysis results.

    Args:
        what: a registered analysis (``hessian``, ``trace``, ``density``, ``layerwise``, ``interpolate``,
            ``slice``, ``plane``, ``sparsity``, ``sharpness``, ``pca``, ``cosine``, ``corruption``, ...);
            its registry entry names the builder.
        results: list of :class:`~workbench.analysis.tasks.AnalysisOutput` or ``{label: result}``.
        metric: ``loss`` or ``acc`` for slices and planes.
        split: split shown for slices/planes (default the first one).
        kind: ``contour`` or ``surface`` for planes.
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        log_y: logarithmic y axis (for the builders that have one).

    Raises:
        ValueError: unknown ``what``.
    """
    builder = resolve(get_entry(what).figure)  # ValueError: what=... is invalid: choose one of ...
    return builder(_unique(_items(results)), theme=theme, metric=metric, split=split, kind=kind, log_y=log_y)


def progress_figure(what: str, data: Mapping[str, Any], *, label: str = "", theme: str = "screen") -> go.Figure:
    """Figure of the partial data of a running analysis (see ``Progress.data``).

    On screen its title ends with :data:`COMPUTING` ("— computing…"); without drawable data (nothing reported
    yet, or an analysis that reports none) it is an empty figure titled e.g. "Top Hessian eigenvalues — computing…".

    Args:
        what: the analysis (as in :func:`result_figure`).
        data: ``Progress.data`` so far (may be empty).
        label: legend label of the partial series.
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
    """
    fig = _progress_figure(what, data, label=label, theme=theme)
    if theme == "screen":
        text = fig.layout.title.text or ANALYSIS_TITLES.get(what, what)
        if not text.endswith(COMPUTING):
            fig.update_layout(title=dict(text=text + COMPUTING, x=0.01))
    return fig


def _progress_figure(what: str, data: Mapping[str, Any], *, label: str, theme: str) -> go.Figure:
    builder = resolve(get_entry(what).progress)
    fig = builder(data, label=label, theme=theme) if builder is not None and data else None
    if fig is None:
        fig = go.Figure()
        apply_theme(fig, theme)
    return fig


def summary_rows(what: str, results) -> list[dict]:
    """One plain dict per result with the headline numbers (for tables and the CLI), from the registry entry.

    Raises:
        ValueError: unknown ``what``.
    """
    entry = get_entry(what)
    return [{"run": l, **entry.headline_row(r, extra)} for l, r, extra in _unique(_items(results))]


# --------------------------------------------------------------- builders of the built-in analyses
# Named by their registry entries (workbench.analysis_registry.BUILTIN); signatures as in the module docstring.
def _figure_hessian(items, *, theme, metric, split, kind, log_y) -> go.Figure:
    return eigenvalues_figure({l: np.asarray(r.values)[: r.k] if r.which != "SA" else np.asarray(r.values)
                               for l, r, _ in items},
                              subtitle={l: f"({r.count} {r.split} examples, {r.n_matvecs} HVPs, {r.method})"
                                        for l, r, _ in items}, theme=theme, log_y=log_y)


def _figure_density(items, *, theme, metric, split, kind, log_y) -> go.Figure:
    return density_figure({l: (r.grid, r.density) for l, r, _ in items}, theme=theme)


def _figure_trace(items, *, theme, metric, split, kind, log_y) -> go.Figure:
    fig = go.Figure(go.Bar(x=[l for l, _, _ in items], y=[r.estimate for _, r, _ in items],
                           error_y=dict(type="data", array=[r.std_error for _, r, _ in items]),
                           marker_color="#0072B2"))
    fig.update_yaxes(title_text="tr(H) estimate ± s.e.")
    apply_theme(fig, theme)
    if theme == "screen":
        fig.update_layout(title=dict(text="Hessian trace", x=0.01))
    return fig


def _figure_layerwise(items, *, theme, metric, split, kind, log_y) -> go.Figure:
    fig = go.Figure()
    for l, r, _ in items:
        fig.add_trace(go.Bar(x=list(r.names), y=np.asarray(r.top_eigenvalues, dtype=float), name=f"{l} λ_max"))
    fig.update_yaxes(title_text="top eigenvalue of the layer's Hessian block")
    fig.update_layout(barmode="group")
    apply_theme(fig, theme)
    if theme == "screen":
        fig.update_layout(title=dict(text="Per-layer curvature", x=0.01))
    return fig


def _figure_interpolate(items, *, theme, metric, split, kind, log_y) -> go.Figure:
    (l, r, _), = items[:1]
    a, b = l.split(" → ") if " → " in l else ("θ₁", "θ₂")
    return interpolation_figure(r.alphas, r.loss, r.acc, labels=(a, b), theme=theme, log_y=log_y)


def _figure_slice(items, *, theme, metric, split, kind, log_y) -> go.Figure:
    curves = {}
    for l, r, extra in items:
        for j, s in enumerate([r] + list(extra)):
            sp = split or next(iter(s.loss))
            vals = s.loss[sp] if metric == "loss" else s.acc[sp]
            curves[f"{l} · dir {j + 1} · {sp}"] = vals
    fig = slice_figure(items[0][1].alphas, curves, metric=metric, theme=theme, log_y=log_y)
    return _subtitle(fig, [(l, slice_settings(r, extra)) for l, r, extra in items], theme)


def _figure_plane(items, *, theme, metric, split, kind, log_y) -> go.Figure:
    (l, r, _), = items[:1]
    sp = split or next(iter(r.loss))
    z = r.loss[sp] if metric == "loss" else r.acc[sp]
    d0 = next((d for d in r.directions if isinstance(d, Mapping)), {})
    plane = f"a {_normalised(d0)} plane" if "normalization" in d0 else "a plane"
    fig = plane_figure(r.alphas, r.betas, z, kind=kind, metric=f"{sp} {metric}", theme=theme, log_z=log_y,
                       title=None if theme == "paper" else f"{l}: {sp} {metric} on {plane}")
    return _subtitle(fig, [(l, plane_settings(r))], theme)


def _figure_sparsity(items, *, theme, metric, split, kind, log_y) -> go.Figure:
    fig = go.Figure()
    for l, r, _ in items:
        fig.add_trace(go.Bar(x=list(r.layers), y=np.asarray(r.feature_sparsity_coefficient), name=l))
    fig.update_yaxes(title_text="feature sparsity coefficient", range=[0, 1])
    fig.update_layout(barmode="group")
    apply_theme(fig, theme)
    if theme == "screen":
        fig.update_layout(title=dict(text=f"Feature sparsity per layer (τ = {items[0][1].tau:g})", x=0.01))
    return fig


def _figure_sharpness(items, *, theme, metric, split, kind, log_y) -> go.Figure:
    r0 = items[0][1]
    label = f"{r0.kind}-case {'adaptive ' if r0.adaptive else ''}{r0.norm} m-sharpness (m={r0.m})"
    return sharpness_figure({l: (r.rhos, r.values, np.std(r.per_batch, axis=1) / np.sqrt(max(r.n_batches, 1)))
                             for l, r, _ in items}, ylabel=label, theme=theme)


def _figure_pca(items, *, theme, metric, split, kind, log_y) -> go.Figure:
    (l, r, _), = items[:1]
    groups = r.groups if r.groups is not None else (
        [f"class {int(c)}" for c in r.labels] if r.labels is not None else None)
    return pca_figure(r.coords, labels=r.labels, groups=groups, explained=r.explained_variance_ratio,
                      index=r.index, theme=theme, title=None if theme == "paper" else f"PCA of {r.source}: {l}")


def _figure_cosine(items, *, theme, metric, split, kind, log_y) -> go.Figure:
    runs = {}
    xlabel = "cosine"
    for l, r, _ in items:
        if hasattr(r, "by_epoch"):
            runs[l] = r.by_epoch()
            xlabel = "cos(g, g′)"
        else:
            runs[l] = {0: np.asarray(r.values, dtype=float)}
            xlabel = f"cos(∇ℓᵢ, {r.reference}) [{r.kind}]"
    return cosine_histogram_figure(runs, xlabel=xlabel, theme=theme)


# partial data of a running analysis (Progress.data); None: nothing drawable yet
def _progress_hessian(data, *, label, theme) -> go.Figure | None:
    if "values" not in data:
        return None
    return eigenvalues_figure({label or "Ritz values": data["values"]}, theme=theme,
                              title="Top Hessian eigenvalues (Ritz values, converging)")


def _progress_density(data, *, label, theme) -> go.Figure | None:
    if "grid" not in data:
        return None
    return density_figure({label: (data["grid"], data["density"])}, theme=theme)


def _progress_interpolate(data, *, label, theme) -> go.Figure | None:
    if "loss" not in data:
        return None
    return interpolation_figure(data["alphas"], data["loss"], data["acc"], theme=theme,
                                n_total=len(data["alphas"]), labels=tuple(label.split(" → "))
                                if " → " in label else ("θ₁", "θ₂"))


def _progress_slice(data, *, label, theme) -> go.Figure | None:
    if "loss" not in data:
        return None
    curves = {}
    for j, prev in enumerate(data.get("previous", [])):
        for sp, v in prev["loss"].items():
            curves[f"dir {j + 1} · {sp}"] = v
    for sp, v in data["loss"].items():
        curves[f"dir {data.get('direction', 0) + 1} · {sp}"] = v
    return slice_figure(data["alphas"], curves, theme=theme)


def _progress_plane(data, *, label, theme) -> go.Figure | None:
    if "z" not in data:
        return None
    return plane_figure(data["alphas"], data["betas"], np.asarray(data["z"], dtype=float),
                        metric=f"{data.get('split', 'train')} loss", theme=theme)


def _progress_sharpness(data, *, label, theme) -> go.Figure | None:
    if "values" not in data:
        return None
    return sharpness_figure({label or "running mean over batches": (data["rhos"], data["values"])}, theme=theme)
