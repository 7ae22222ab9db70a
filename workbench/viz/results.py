"""From analysis results (or partial progress data) to figures.

:func:`result_figure` draws finished results of one analysis kind, several runs
overlaid; :func:`progress_figure` draws the partial data an analysis reports
while it runs (Ritz values, interpolation points, plane rows, ...), with the
same builders, so the live panel fills in the figure the export will show.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import plotly.graph_objects as go

from .analysis import (cosine_histogram_figure, density_figure, eigenvalues_figure, interpolation_figure,
                       pca_figure, plane_figure, sharpness_figure, slice_figure)
from .theme import apply_theme

__all__ = ["result_figure", "progress_figure", "summary_rows", "slice_settings", "plane_settings", "ANALYSIS_TITLES",
           "COMPUTING"]

ANALYSIS_TITLES = {
    "hessian": "Top Hessian eigenvalues", "trace": "Hessian trace", "density": "Hessian eigenvalue spectral density",
    "layerwise": "Per-layer curvature", "interpolate": "Linear interpolation θ(α) = αθ₁ + (1−α)θ₂",
    "slice": "1-D loss slices", "plane": "2-D loss landscape", "sparsity": "Feature sparsity per layer",
    "sharpness": "Sharpness vs ρ", "pca": "PCA projection", "cosine": "Histogram of gradient cosines",
}
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
        what: the analysis (``hessian``, ``trace``, ``density``, ``layerwise``, ``interpolate``,
            ``slice``, ``plane``, ``sparsity``, ``sharpness``, ``pca``, ``cosine``).
        results: list of :class:`~workbench.analysis.tasks.AnalysisOutput` or ``{label: result}``.
        metric: ``loss`` or ``acc`` for slices and planes.
        split: split shown for slices/planes (default the first one).
        kind: ``contour`` or ``surface`` for planes.

    Raises:
        ValueError: unknown ``what``.
    """
    items = _unique(_items(results))
    if what == "hessian":
        return eigenvalues_figure({l: np.asarray(r.values)[: r.k] if r.which != "SA" else np.asarray(r.values)
                                   for l, r, _ in items},
                                  subtitle={l: f"({r.count} {r.split} examples, {r.n_matvecs} HVPs, {r.method})"
                                            for l, r, _ in items}, theme=theme, log_y=log_y)
    if what == "density":
        return density_figure({l: (r.grid, r.density) for l, r, _ in items}, theme=theme)
    if what == "trace":
        fig = go.Figure(go.Bar(x=[l for l, _, _ in items], y=[r.estimate for _, r, _ in items],
                               error_y=dict(type="data", array=[r.std_error for _, r, _ in items]),
                               marker_color="#0072B2"))
        fig.update_yaxes(title_text="tr(H) estimate ± s.e.")
        apply_theme(fig, theme)
        if theme == "screen":
            fig.update_layout(title=dict(text="Hessian trace", x=0.01))
        return fig
    if what == "layerwise":
        fig = go.Figure()
        for i, (l, r, _) in enumerate(items):
            fig.add_trace(go.Bar(x=list(r.names), y=np.asarray(r.top_eigenvalues, dtype=float), name=f"{l} λ_max"))
        fig.update_yaxes(title_text="top eigenvalue of the layer's Hessian block")
        fig.update_layout(barmode="group")
        apply_theme(fig, theme)
        if theme == "screen":
            fig.update_layout(title=dict(text="Per-layer curvature", x=0.01))
        return fig
    if what == "interpolate":
        (l, r, _), = items[:1]
        a, b = l.split(" → ") if " → " in l else ("θ₁", "θ₂")
        return interpolation_figure(r.alphas, r.loss, r.acc, labels=(a, b), theme=theme, log_y=log_y)
    if what == "slice":
        curves = {}
        for l, r, extra in items:
            for j, s in enumerate([r] + list(extra)):
                sp = split or next(iter(s.loss))
                vals = s.loss[sp] if metric == "loss" else s.acc[sp]
                curves[f"{l} · dir {j + 1} · {sp}"] = vals
        fig = slice_figure(items[0][1].alphas, curves, metric=metric, theme=theme, log_y=log_y)
        return _subtitle(fig, [(l, slice_settings(r, extra)) for l, r, extra in items], theme)
    if what == "plane":
        (l, r, _), = items[:1]
        sp = split or next(iter(r.loss))
        z = r.loss[sp] if metric == "loss" else r.acc[sp]
        d0 = next((d for d in r.directions if isinstance(d, Mapping)), {})
        plane = f"a {_normalised(d0)} plane" if "normalization" in d0 else "a plane"
        fig = plane_figure(r.alphas, r.betas, z, kind=kind, metric=f"{sp} {metric}", theme=theme, log_z=log_y,
                           title=None if theme == "paper" else f"{l}: {sp} {metric} on {plane}")
        return _subtitle(fig, [(l, plane_settings(r))], theme)
    if what == "sparsity":
        fig = go.Figure()
        for i, (l, r, _) in enumerate(items):
            fig.add_trace(go.Bar(x=list(r.layers), y=np.asarray(r.feature_sparsity_coefficient), name=l))
        fig.update_yaxes(title_text="feature sparsity coefficient", range=[0, 1])
        fig.update_layout(barmode="group")
        apply_theme(fig, theme)
        if theme == "screen":
            fig.update_layout(title=dict(text=f"Feature sparsity per layer (τ = {items[0][1].tau:g})", x=0.01))
        return fig
    if what == "sharpness":
        r0 = items[0][1]
        label = f"{r0.kind}-case {'adaptive ' if r0.adaptive else ''}{r0.norm} m-sharpness (m={r0.m})"
        return sharpness_figure({l: (r.rhos, r.values, np.std(r.per_batch, axis=1) / np.sqrt(max(r.n_batches, 1)))
                                 for l, r, _ in items}, ylabel=label, theme=theme)
    if what == "pca":
        (l, r, _), = items[:1]
        groups = r.groups if r.groups is not None else (
            [f"class {int(c)}" for c in r.labels] if r.labels is not None else None)
        return pca_figure(r.coords, labels=r.labels, groups=groups, explained=r.explained_variance_ratio,
                          index=r.index, theme=theme, title=None if theme == "paper" else f"PCA of {r.source}: {l}")
    if what == "cosine":
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
    raise ValueError(f"what={what!r} is invalid")


def progress_figure(what: str, data: Mapping[str, Any], *, label: str = "", theme: str = "screen") -> go.Figure:
    """Figure of the partial data of a running analysis (see ``Progress.data``).

    On screen its title ends with :data:`COMPUTING` ("— computing…"); without drawable data (nothing reported
    yet, or an analysis that reports none) it is an empty figure titled e.g. "Top Hessian eigenvalues — computing…".

    Args:
        what: the analysis (as in :func:`result_figure`).
        data: ``Progress.data`` so far (may be empty).
        label: legend label of the partial series.
    """
    fig = _progress_figure(what, data, label=label, theme=theme)
    if theme == "screen":
        text = fig.layout.title.text or ANALYSIS_TITLES.get(what, what)
        if not text.endswith(COMPUTING):
            fig.update_layout(title=dict(text=text + COMPUTING, x=0.01))
    return fig


def _progress_figure(what: str, data: Mapping[str, Any], *, label: str, theme: str) -> go.Figure:
    if what == "hessian" and "values" in data:
        return eigenvalues_figure({label or "Ritz values": data["values"]}, theme=theme,
                                  title="Top Hessian eigenvalues (Ritz values, converging)")
    if what == "density" and "grid" in data:
        return density_figure({label: (data["grid"], data["density"])}, theme=theme)
    if what == "interpolate" and "loss" in data:
        return interpolation_figure(data["alphas"], data["loss"], data["acc"], theme=theme,
                                    n_total=len(data["alphas"]), labels=tuple(label.split(" → "))
                                    if " → " in label else ("θ₁", "θ₂"))
    if what == "slice" and "loss" in data:
        curves = {}
        for j, prev in enumerate(data.get("previous", [])):
            for sp, v in prev["loss"].items():
                curves[f"dir {j + 1} · {sp}"] = v
        for sp, v in data["loss"].items():
            curves[f"dir {data.get('direction', 0) + 1} · {sp}"] = v
        return slice_figure(data["alphas"], curves, theme=theme)
    if what == "plane" and "z" in data:
        return plane_figure(data["alphas"], data["betas"], np.asarray(data["z"], dtype=float),
                            metric=f"{data.get('split', 'train')} loss", theme=theme)
    if what == "sharpness" and "values" in data:
        return sharpness_figure({label or "running mean over batches": (data["rhos"], data["values"])}, theme=theme)
    fig = go.Figure()
    apply_theme(fig, theme)
    return fig


def summary_rows(what: str, results) -> list[dict]:
    """One plain dict per result with the headline numbers (for tables and the CLI)."""
    rows = []
    for l, r, extra in _unique(_items(results)):
        row: dict[str, Any] = {"run": l}
        if what == "hessian":
            vals = np.asarray(r.values, dtype=float)
            row.update({f"lambda_{i + 1}": float(v) for i, v in enumerate(vals[:8])})
            if r.which != "SA" and len(vals) >= 5 and vals[4] != 0:
                row["lambda_1/lambda_5"] = float(vals[0] / vals[4])
            row.update(n_matvecs=r.n_matvecs, converged=r.converged, count=r.count, seconds=r.seconds)
        elif what == "trace":
            row.update(trace=r.estimate, std_error=r.std_error, n_matvecs=r.n_matvecs, method=r.method)
        elif what == "density":
            row.update(trace_estimate=r.trace_estimate, steps=r.steps, n_probes=r.n_probes, sigma=r.sigma)
        elif what == "layerwise":
            for n, t, tr in zip(r.names, np.asarray(r.top_eigenvalues), np.asarray(r.traces)):
                row[f"{n}: lambda_max"] = float(t)
                row[f"{n}: trace"] = float(tr)
        elif what == "interpolate":
            for s in r.loss:
                i_mid = int(np.argmin(np.abs(np.asarray(r.alphas) - 0.5)))
                row[f"{s} loss at alpha=0.5"] = float(r.loss[s][i_mid])
                row[f"max {s} loss on [0,1]"] = float(np.max(np.asarray(r.loss[s])[(r.alphas >= 0) & (r.alphas <= 1)]))
        elif what == "slice":
            for j, s in enumerate([r] + list(extra)):
                for sp, v in s.loss.items():
                    row[f"dir {j + 1} {sp} loss range"] = float(np.max(v) - np.min(v))
        elif what == "plane":
            for sp, v in r.loss.items():
                row[f"{sp} loss min/max"] = f"{np.nanmin(v):.4g} / {np.nanmax(v):.4g}"
        elif what == "sparsity":
            for n, f, a in zip(r.layers, r.feature_sparsity_coefficient, r.active_fraction):
                row[f"{n}: fsc"] = float(f)
                row[f"{n}: active"] = float(a)
        elif what == "sharpness":
            row.update({f"rho={rho:g}": float(v) for rho, v in zip(r.rhos, r.values)})
        elif what == "pca":
            row.update({f"PC{i + 1} var": float(v) for i, v in enumerate(r.explained_variance_ratio)})
        elif what == "cosine":
            vals = np.asarray(r.cosines if hasattr(r, "cosines") else r.values, dtype=float)
            row.update(mean=float(np.nanmean(vals)), median=float(np.nanmedian(vals)), n=int(np.isfinite(vals).sum()))
        rows.append(row)
    return rows
