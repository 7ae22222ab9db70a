"""Figure builders for sharpness-aware data poisoning ([Murphy 2025, Ch. 5]).

Pure builders: plain data (lists of records, arrays, DataFrames) in, a
``plotly.graph_objects.Figure`` out, themed ``screen`` or ``paper`` with
:func:`~workbench.viz.theme.apply_theme`. The live poison panel, the notebook and
static export draw the same figures from the same data, so every builder
copes with partial data (a crafting run still in progress) and with no data
at all (an empty figure with its axis titles).

* :func:`craft_loss_figure`  cosine loss 𝓑 of every inner crafting iteration over the whole run
  (Fig. 5.5), or a few batches with separators at batch starts (``zoom``, Fig. 5.6)
* :func:`delta_norm_figure`  ‖Δ‖_F after every epoch (Fig. 5.2)
* :func:`drift_figure`       mean 𝓑 of the current poisons at weights frozen after epoch k, vs epoch
  (Fig. 5.7), with the current-weights poison loss and the clean-data baseline
* :func:`image_grid_figure`  x, Δ and x + Δ for the first n examples
* :func:`sam_cosine_figure`  1 − cos(g, g′) on clean data while training with SAM, per step and per epoch
  (Fig. 5.8)

Data sources (see :mod:`workbench.poisoning.sharpness_aware`): the crafting run's
``metrics.jsonl`` records of kind ``craft`` (``{"epoch", "step", "losses": [...],
"iterations", "delta_change"}``), its per-epoch probe records named ``poison``
(``delta_frobenius``, ``drift``, ``poison_cos_loss``, ``clean_cos_loss``, ...) and its
step records (``cosine`` = cos(g, g′) of every SAM step).

No UI imports.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .theme import color_for
from .theme import finish_figure as _finish

__all__ = ["craft_loss_figure", "delta_norm_figure", "drift_figure", "image_grid_figure", "sam_cosine_figure",
           "craft_loss_points"]

_B = "cosine loss 𝓑 = 1 − cos(g′, ∇L(B + Δ))"
_SEPARATOR = dict(color="rgba(120, 120, 120, 0.35)", width=1, dash="dot")
MAX_SEPARATORS = 400
"""Zoomed views with more batches than this draw no separators (they would hide the curve)."""




def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f


def _records(data) -> list[dict]:
    """A list of dicts from a list of dicts or a DataFrame (``to_dict("records")``)."""
    if data is None:
        return []
    if hasattr(data, "to_dict") and hasattr(data, "columns"):
        return data.to_dict("records")
    return [dict(r) for r in data]


# ------------------------------------------------------------------ craft loss
def craft_loss_points(records: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """The points of :func:`craft_loss_figure`: one per inner iteration, in record order.

    Returns:
        ``{"x": running iteration index (0-based, over the whole run), "loss": 𝓑,
        "step": optimizer step, "epoch": epoch, "iteration": inner iteration (1-based),
        "batch_start": x of the first iteration of every record}``.
    """
    xs, ys, steps, epochs, its, starts = [], [], [], [], [], []
    i = 0
    for r in records:
        losses = list(r.get("losses") or [])
        if not losses:
            continue
        starts.append(i)
        for j, v in enumerate(losses):
            xs.append(i)
            ys.append(_num(v))
            steps.append(int(r.get("step", 0)))
            epochs.append(int(r.get("epoch", 0)))
            its.append(j + 1)
            i += 1
    return {"x": np.asarray(xs, dtype=np.int64), "loss": np.asarray(ys, dtype=float),
            "step": np.asarray(steps, dtype=np.int64), "epoch": np.asarray(epochs, dtype=np.int64),
            "iteration": np.asarray(its, dtype=np.int64), "batch_start": np.asarray(starts, dtype=np.int64)}


def craft_loss_figure(records: list[dict], *, zoom: tuple[int, int] | None = None, theme: str = "screen",
                      title: str | None = None) -> go.Figure:
    """Cosine loss 𝓑 before every inner crafting iteration ([Murphy 2025, Figs. 5.5 and 5.6]).

    Args:
        records: the crafting run's ``craft`` records in order (``{"epoch", "step",
            "losses": [𝓑 before each inner iteration], ...}``); a growing list while the
            run crafts is fine, and so is an empty one.
        zoom: ``(first_step, last_step)``: only the batches (optimizer steps) in this
            inclusive range (Fig. 5.6), drawn with markers and a faint dotted vertical
            line at the start of every batch (at most :data:`MAX_SEPARATORS` of them),
            so the saw-tooth "spike per batch, falling with the iterations" is visible.
            The x coordinates stay those of the whole run.
        theme: ``screen`` or ``paper``.
        title: figure title (default: a descriptive one on screen, none on paper).

    Returns:
        Full view: two ``Scatter`` traces, ``𝓑 per inner iteration`` (x = running
        inner-iteration index over the whole run, y = 𝓑) and ``epoch mean`` (the mean 𝓑
        of each epoch, drawn over that epoch's x range). Zoomed: one trace, plus one
        layout shape per batch start.
    """
    recs = list(records or [])
    if zoom is not None:
        first, last = int(zoom[0]), int(zoom[1])
        if last < first:
            raise ValueError(f"zoom={tuple(zoom)!r} is invalid: give (first_step, last_step) with first <= last")
    pts = craft_loss_points(recs)
    hover = ("iteration %{customdata[2]} of step %{customdata[0]} (epoch %{customdata[1]})<br>"
             "𝓑 = %{y:.4g}<extra></extra>")
    fig = go.Figure()
    if zoom is None:
        custom = np.column_stack([pts["step"], pts["epoch"], pts["iteration"]]) if len(pts["x"]) else None
        fig.add_trace(go.Scatter(x=pts["x"], y=pts["loss"], mode="lines", name="𝓑 per inner iteration",
                                 line=dict(color=color_for(0), width=1.0), opacity=0.8, customdata=custom,
                                 hovertemplate=hover))
        mx, my = [], []
        for e in dict.fromkeys(pts["epoch"].tolist()):
            sel = pts["epoch"] == e
            m = float(np.nanmean(pts["loss"][sel])) if sel.any() else float("nan")
            xe = pts["x"][sel]
            mx += [int(xe.min()), int(xe.max()), None]
            my += [m, m, None]
        fig.add_trace(go.Scatter(x=mx, y=my, mode="lines", name="epoch mean",
                                 line=dict(color=color_for(1), width=2.5),
                                 hovertemplate="epoch mean 𝓑 = %{y:.4g}<extra></extra>"))
        default = "Cosine loss while crafting, every inner iteration of every batch"
    else:
        sel = (pts["step"] >= first) & (pts["step"] <= last)
        custom = (np.column_stack([pts["step"][sel], pts["epoch"][sel], pts["iteration"][sel]])
                  if sel.any() else None)
        fig.add_trace(go.Scatter(x=pts["x"][sel], y=pts["loss"][sel], mode="lines+markers",
                                 name="𝓑 per inner iteration", line=dict(color=color_for(0), width=1.5),
                                 marker=dict(size=5), customdata=custom, hovertemplate=hover))
        starts = [int(pts["x"][k]) for k in np.flatnonzero(sel) if pts["iteration"][k] == 1]
        if len(starts) <= MAX_SEPARATORS:
            for s in starts:
                fig.add_shape(type="line", x0=s - 0.5, x1=s - 0.5, y0=0, y1=1, xref="x", yref="paper",
                              line=_SEPARATOR, layer="below")
        default = f"Cosine loss while crafting, steps {first}–{last} (dotted lines: a new batch starts)"
    fig.update_xaxes(title_text="inner crafting iteration (running index over all batches)")
    fig.update_yaxes(title_text=_B, rangemode="tozero")
    fig.update_layout(showlegend=zoom is None)
    return _finish(fig, theme, title, default)


# ------------------------------------------------------------------- ‖Δ‖ per epoch
def delta_norm_figure(epochs: list[int], norms: list[float], *, theme: str = "screen",
                      title: str | None = None) -> go.Figure:
    """Frobenius norm of all perturbations, ‖Δ‖_F, after every epoch ([Murphy 2025, Fig. 5.2]).

    Args:
        epochs: epoch numbers (the ``epoch`` of the ``poison`` probe records).
        norms: ``delta_frobenius`` of those records (input units, i.e. normalised pixels).
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).

    Returns:
        One ``Scatter`` (lines+markers).

    Raises:
        ValueError: ``epochs`` and ``norms`` differ in length.
    """
    epochs, norms = list(epochs or []), list(norms or [])
    if len(epochs) != len(norms):
        raise ValueError(f"epochs has {len(epochs)} values but norms has {len(norms)}")
    fig = go.Figure(go.Scatter(x=epochs, y=[_num(v) for v in norms], mode="lines+markers", name="‖Δ‖_F",
                               line=dict(color=color_for(0)), marker=dict(size=6),
                               hovertemplate="epoch %{x}: ‖Δ‖_F = %{y:.4g}<extra></extra>"))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="‖Δ‖_F (Frobenius norm, input units)", rangemode="tozero")
    return _finish(fig, theme, title, "Magnitude of the poison perturbations")


# ------------------------------------------------------------------------- drift
def drift_figure(probe_records: list[dict], *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """How the crafting objective drifts as the poisons keep changing ([Murphy 2025, Fig. 5.7]).

    Args:
        probe_records: the crafting run's per-epoch ``poison`` probe records (dicts, or the
            rows of ``load_run(path).probes`` with ``name == "poison"``; other probe
            names are ignored). Used: ``epoch``, ``drift`` (``{"k": mean 𝓑 of the
            current poisons at the weights frozen after epoch k}``), ``poison_cos_loss``
            (the same at the current weights) and ``clean_cos_loss`` (1 − cos(g, g′) on
            the clean batches at the current weights: the baseline without poison).
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).

    Returns:
        One ``Scatter`` per frozen epoch k (``weights after epoch k``, in increasing k),
        then ``current weights, poisons`` and ``current weights, clean data`` (dashed).
        Traces without data are kept (empty), so the trace list is stable while a run
        progresses.
    """
    recs = [r for r in _records(probe_records) if r.get("name", "poison") == "poison"]
    recs = [r for r in recs if r.get("epoch") is not None and not (isinstance(r.get("epoch"), float)
                                                                 and math.isnan(r["epoch"]))]
    recs.sort(key=lambda r: int(r["epoch"]))
    ks: list[int] = []
    for r in recs:
        d = r.get("drift")
        if isinstance(d, Mapping):
            ks += [int(k) for k in d]
    ks = sorted(set(ks))
    fig = go.Figure()
    for i, k in enumerate(ks):
        x, y = [], []
        for r in recs:
            d = r.get("drift")
            if isinstance(d, Mapping) and (str(k) in d or k in d):
                x.append(int(r["epoch"]))
                y.append(_num(d.get(str(k), d.get(k))))
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"weights after epoch {k}",
                                 line=dict(color=color_for(i)), marker=dict(size=5),
                                 hovertemplate=f"θ frozen after epoch {k}<br>epoch %{{x}}: mean 𝓑 = %{{y:.4g}}"
                                               "<extra></extra>"))
    for j, (col, name, dash) in enumerate((("poison_cos_loss", "current weights, poisons", "solid"),
                                           ("clean_cos_loss", "current weights, clean data (no poison)", "dash"))):
        x = [int(r["epoch"]) for r in recs if col in r and math.isfinite(_num(r[col]))]
        y = [_num(r[col]) for r in recs if col in r and math.isfinite(_num(r[col]))]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name,
                                 line=dict(color="#000000" if j == 0 else "#777777", dash=dash, width=2.5),
                                 marker=dict(size=5, symbol="square" if j == 0 else "circle-open"),
                                 hovertemplate=f"{name}<br>epoch %{{x}}: mean 𝓑 = %{{y:.4g}}<extra></extra>"))
    fig.update_xaxes(title_text="epoch (poisons as they are after this epoch)")
    fig.update_yaxes(title_text="mean 𝓑 on a fixed subset of batches", rangemode="tozero")
    return _finish(fig, theme, title, "Objective drift: the current poisons judged at earlier weights")


# -------------------------------------------------------------------- image grid
def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=float)


def _nchw(a: np.ndarray, what: str) -> np.ndarray:
    if a.ndim == 3:
        return a[:, None]
    if a.ndim == 4:
        return a
    raise ValueError(f"{what} must be [N, C, H, W] or [N, H, W] images, got shape {tuple(a.shape)}")


def image_grid_figure(x, delta, *, n: int = 8, labels=None, theme: str = "screen",
                      title: str | None = None) -> go.Figure:
    """Clean images x, perturbations Δ and poisoned images x + Δ for the first ``n`` examples.

    Rows: ``x`` (top), ``Δ`` (middle), ``x + Δ`` (bottom); one column per example.

    * ``x`` and ``x + Δ`` share one grey colour scale (``coloraxis``) spanning both rows,
      so a visible change in the bottom row is a real change of the input.
    * ``Δ`` uses a diverging colour scale (``RdBu``, red negative, blue positive;
      ``coloraxis2``) symmetric around 0: ``cmin = −cmax = −max|Δ|``.
    * Colour images (C = 3): ``x`` and ``x + Δ`` are drawn as RGB images (``go.Image``),
      both rescaled to 0..255 with one common min/max (inputs are normalised, so the
      colours are approximate); ``Δ`` is drawn as its mean over the channels (a heat
      map). Other channel counts are drawn as channel means throughout.

    Args:
        x: clean inputs ``[N, C, H, W]`` or ``[N, H, W]`` (tensor or array; model input
            units, i.e. after normalisation, like Δ).
        delta: perturbations of the same shape.
        n: number of examples (columns); capped by N.
        labels: optional per-example labels (class names or indices) for column titles.
        theme: ``screen`` or ``paper``.
        title: figure title (default: a descriptive one).

    Raises:
        ValueError: shapes differ or are not images.
    """
    xa, da = _nchw(_to_numpy(x), "x"), _nchw(_to_numpy(delta), "delta")
    if xa.shape != da.shape:
        raise ValueError(f"x has shape {tuple(xa.shape)} but delta has {tuple(da.shape)}")
    if int(n) < 1:
        raise ValueError(f"n={n!r} is invalid: must be >= 1")
    k = min(int(n), xa.shape[0])
    xa, da = xa[:k], da[:k]
    pa = xa + da
    cols = max(k, 1)
    lab = list(labels)[:k] if labels is not None else None
    col_titles = [str(v) for v in lab] + [""] * (cols - len(lab)) if lab is not None else None
    titles = (col_titles or [""] * cols) + [""] * cols * 2
    fig = make_subplots(rows=3, cols=cols, horizontal_spacing=0.01, vertical_spacing=0.04,
                        subplot_titles=titles if lab is not None else None,
                        row_titles=["x", "Δ", "x + Δ"])
    rgb = xa.shape[1] == 3
    lo = float(np.nanmin([xa.min(), pa.min()])) if k else 0.0
    hi = float(np.nanmax([xa.max(), pa.max()])) if k else 1.0
    if hi - lo < 1e-12:
        hi = lo + 1.0
    dmax = float(np.nanmax(np.abs(da))) if k else 0.0
    dmax = dmax if dmax > 0 else 1e-12
    for j in range(k):
        for row, img in ((1, xa[j]), (3, pa[j])):
            if rgb:
                z = np.clip((img.transpose(1, 2, 0) - lo) / (hi - lo) * 255.0, 0, 255)
                fig.add_trace(go.Image(z=z, name=["x", "", "x + Δ"][row - 1], hoverinfo="skip"),
                              row=row, col=j + 1)
            else:
                fig.add_trace(go.Heatmap(z=img.mean(axis=0), coloraxis="coloraxis", name=["x", "", "x + Δ"][row - 1],
                                         hovertemplate="(%{x}, %{y}): %{z:.3g}<extra></extra>"),
                              row=row, col=j + 1)
        fig.add_trace(go.Heatmap(z=da[j].mean(axis=0), coloraxis="coloraxis2", name="Δ",
                                 hovertemplate="(%{x}, %{y}): Δ = %{z:.3g}<extra></extra>"), row=2, col=j + 1)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, ticks="")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, ticks="", autorange="reversed")
    for row in (1, 2, 3):
        for j in range(k):
            idx = (row - 1) * cols + j + 1
            fig.update_yaxes(scaleanchor="x" if idx == 1 else f"x{idx}", row=row, col=j + 1)
    fig.update_layout(
        coloraxis=dict(colorscale="gray", cmin=lo, cmax=hi, showscale=not rgb,
                       colorbar=dict(title=dict(text="x, x+Δ"), len=0.3, y=0.84, thickness=10)),
        coloraxis2=dict(colorscale="RdBu", cmin=-dmax, cmax=dmax, cmid=0.0,
                        colorbar=dict(title=dict(text="Δ"), len=0.3, y=0.5, thickness=10)))
    fig = _finish(fig, theme, title, f"Clean images, perturbations and poisoned images ({k} examples)")
    cell = min(140, max(60, 900 // cols))
    fig.update_layout(height=3 * cell + (110 if theme == "screen" else 60), showlegend=False)
    fig.update_xaxes(showgrid=False)
    fig.update_yaxes(showgrid=False)
    return fig


# ---------------------------------------------------------------- SAM cosine
def sam_cosine_figure(steps_df_or_records, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """1 − cos(g, g′) on clean data while training with SAM, per step and per epoch ([Murphy 2025, Fig. 5.8]).

    g is the plain gradient and g′ SAM's gradient at the perturbed weights, both on the
    clean batch; every SAM step record carries ``cosine`` = cos(g, g′).

    Args:
        steps_df_or_records: the run's step records (``load_run(path).steps`` or a list of
            dicts with ``step``, ``epoch`` (fractional, step / steps per epoch) and
            ``cosine``). Records without ``cosine`` (non-SAM runs) are skipped.
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).

    Returns:
        Two ``Scatter`` traces: ``per step`` (thin, translucent; x = fractional epoch)
        and ``epoch mean`` (x = epoch 1, 2, …: the mean over that epoch's steps).
    """
    recs = _records(steps_df_or_records)
    pts = [(float(r["epoch"]) if r.get("epoch") is not None else float("nan"), 1.0 - _num(r.get("cosine")),
            int(r.get("step", 0)) if r.get("step") is not None else 0)
           for r in recs if r.get("kind", "step") == "step" and math.isfinite(_num(r.get("cosine")))]
    x = np.array([p[0] for p in pts], dtype=float)
    y = np.array([p[1] for p in pts], dtype=float)
    st = np.array([p[2] for p in pts], dtype=np.int64)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="per step", line=dict(color=color_for(0), width=0.8),
                             opacity=0.45, customdata=st,
                             hovertemplate="step %{customdata} (epoch %{x:.2f}): 1 − cos = %{y:.4g}<extra></extra>"))
    ep = np.ceil(x - 1e-9).astype(np.int64) if len(x) else np.array([], dtype=np.int64)
    ep = np.maximum(ep, 1)
    epochs = sorted(set(ep.tolist()))
    means = [float(np.mean(y[ep == e])) for e in epochs]
    fig.add_trace(go.Scatter(x=epochs, y=means, mode="lines+markers", name="epoch mean",
                             line=dict(color=color_for(1), width=2.5), marker=dict(size=6),
                             hovertemplate="epoch %{x}: mean 1 − cos = %{y:.4g}<extra></extra>"))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="1 − cos(g, g′) on the clean batch", rangemode="tozero")
    return _finish(fig, theme, title, "SAM gradient vs plain gradient while training with SAM")
