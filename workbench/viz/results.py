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

__all__ = ["result_figure", "progress_figure", "summary_rows"]


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
        return slice_figure(items[0][1].alphas, curves, metric=metric, theme=theme, log_y=log_y)
    if what == "plane":
        (l, r, _), = items[:1]
        sp = split or next(iter(r.loss))
        z = r.loss[sp] if metric == "loss" else r.acc[sp]
        return plane_figure(r.alphas, r.betas, z, kind=kind, metric=f"{sp} {metric}", theme=theme, log_z=log_y,
                            title=None if theme == "paper" else f"{l}: {sp} {metric} on a filter-normalised plane")
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
    """Figure of the partial data of a running analysis (see ``Progress.data``)."""
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
    fig.update_layout(title=dict(text=f"{what}: computing ...", x=0.01))
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
