"""Figure builders for the bilevel poisoning study ([Carnerero-Cano 2021, Figs. 1–3]).

Pure builders: plain data in (an :class:`~workbench.bilevel.Illustration`, its maps,
DataFrames of study records, weight lists), a ``plotly.graph_objects.Figure`` out,
themed with :func:`~workbench.viz.theme.apply_theme`.

* :func:`poison_map_figure`        one Fig. 1 panel: validation error as a function of the poisoning
  point's position (background), data, clean (dashed) vs poisoned (red) boundary, attack path, box
* :func:`lambda_map_figure`        Fig. 1 (right): the λ that minimises the validation error per position
* :func:`illustration_figure`      the three Fig. 1 panels side by side
* :func:`attack_curve_figure`      attacker objective 𝒜 per hyperiteration
* :func:`error_vs_fraction_figure` Fig. 2 (a–c): test error vs poisoning fraction per λ strategy (mean ± s.e.)
* :func:`lambda_norm_figure`       Fig. 2 (d–f): learned λ and ‖w‖² vs poisoning fraction
* :func:`weight_histogram_figure`  Fig. 3: histograms of w, clean vs poisoned, without regularisation and with λ_RMD

No UI imports.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .theme import color_for
from .theme import finish_figure as _finish

__all__ = ["poison_map_figure", "lambda_map_figure", "illustration_figure", "attack_curve_figure",
           "error_vs_fraction_figure", "lambda_norm_figure", "weight_histogram_figure", "boundary_xy",
           "STRATEGY_LABELS", "PANEL_TITLES"]

STRATEGY_LABELS = {"small": "λ small (fixed)", "large": "λ large (fixed)", "clean": "λ_CLEAN (5-fold CV)",
                   "rmd": "λ_RMD (learned)"}
PANEL_TITLES = {"no_reg": "No regularisation", "reg": "L2, λ = log 20 ≈ 3"}
CLASS_COLORS = ("#009E73", "#0072B2")  # class 0 green, class 1 blue (as in Fig. 1)
POISON_COLOR = "#D62728"




def boundary_xy(theta: Sequence[float], box: Sequence[float]) -> tuple[list[float], list[float]]:
    """Points of the decision boundary ``w·x + b = 0`` of a 2-D model ``theta = [w0, w1, b]`` inside ``box``.

    Returns empty lists when ``w = 0`` (no boundary).
    """
    w0, w1, b = (float(v) for v in theta[:3])
    lo, hi = float(box[0]), float(box[1])
    t = np.linspace(lo, hi, 200)
    if abs(w1) >= abs(w0) and w1 != 0:
        x, y = t, -(w0 * t + b) / w1
    elif w0 != 0:
        x, y = -(w1 * t + b) / w0, t
    else:
        return [], []
    keep = (x >= lo) & (x <= hi) & (y >= lo) & (y <= hi)
    return x[keep].tolist(), y[keep].tolist()


def _data_traces(data: Mapping, show_val: bool, showlegend: bool) -> list[go.Scatter]:
    tr = []
    x, y = np.asarray(data["x_tr"]), np.asarray(data["y_tr"])
    for c in (0, 1):
        m = y == c
        tr.append(go.Scatter(x=x[m, 0], y=x[m, 1], mode="markers", name=f"train, class {c}", legendgroup=f"c{c}",
                             showlegend=showlegend,
                             marker=dict(color=CLASS_COLORS[c], size=7, line=dict(color="white", width=0.8))))
    if show_val:
        xv, yv = np.asarray(data["x_val"]), np.asarray(data["y_val"])
        for c in (0, 1):
            m = yv == c
            tr.append(go.Scatter(x=xv[m, 0], y=xv[m, 1], mode="markers", name=f"validation, class {c}",
                                 legendgroup=f"v{c}", showlegend=showlegend,
                                 marker=dict(color=CLASS_COLORS[c], size=5, symbol="circle-open", opacity=0.7)))
    return tr


def _box_trace(box, showlegend: bool) -> go.Scatter:
    lo, hi = box
    return go.Scatter(x=[lo, hi, hi, lo, lo], y=[lo, lo, hi, hi, lo], mode="lines", name="Φ(D_p) box",
                      legendgroup="box", showlegend=showlegend, line=dict(color="grey", dash="dashdot", width=1.2))


def _panel_traces(ill, which: str, *, coloraxis: str, showlegend: bool, path_upto: int | None = None,
                  poison_xy: Sequence[float] | None = None, poisoned_theta: Sequence[float] | None = None
                  ) -> list[go.BaseTraceType]:
    maps = ill.maps
    lams = [(-math.inf if v is None else v) for v in maps.log_lams]
    target = -math.inf if which == "no_reg" else ill.settings["log_lam_reg"]
    k = int(np.argmin([abs(l - target) if math.isfinite(l) and math.isfinite(target) else (0 if l == target else 1e9)
                       for l in lams]))
    box = ill.settings["box"]
    att = ill.attacks[which]
    path = np.asarray(att["path"])
    if path_upto is not None:
        path = path[: path_upto + 1]
    p = np.asarray(poison_xy) if poison_xy is not None else path[-1]
    th_p = poisoned_theta if poisoned_theta is not None else ill.poisoned_theta[which]
    traces: list[go.BaseTraceType] = [
        go.Heatmap(x=maps.xs, y=maps.ys, z=maps.error[k], coloraxis=coloraxis, name="validation error",
                   hovertemplate="poison at (%{x:.2f}, %{y:.2f})<br>validation error %{z:.3f}<extra></extra>"),
        _box_trace(box, showlegend),
        *_data_traces(ill.data, False, showlegend),
    ]
    bx, by = boundary_xy(ill.clean_theta[which], box)
    traces.append(go.Scatter(x=bx, y=by, mode="lines", name="boundary, clean", legendgroup="bc", showlegend=showlegend,
                             line=dict(color="white", dash="dash", width=2.5)))
    bx, by = boundary_xy(th_p, box)
    traces.append(go.Scatter(x=bx, y=by, mode="lines", name="boundary, poisoned", legendgroup="bp",
                             showlegend=showlegend, line=dict(color=POISON_COLOR, width=2.5)))
    traces.append(go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines", name="attack path", legendgroup="path",
                             showlegend=showlegend, line=dict(color=POISON_COLOR, width=1.2, dash="dot")))
    traces.append(go.Scatter(x=[p[0]], y=[p[1]], mode="markers", name=f"poisoning point (label {ill.maps.y_p})",
                             legendgroup="pp", showlegend=showlegend,
                             marker=dict(color=POISON_COLOR, size=12, symbol="star",
                                         line=dict(color="black", width=1))))
    return traces


def poison_map_figure(ill, which: str = "no_reg", *, theme: str = "screen", title: str | None = None,
                      path_upto: int | None = None, poison_xy: Sequence[float] | None = None,
                      poisoned_theta: Sequence[float] | None = None) -> go.Figure:
    """One Fig. 1 panel (``which``: ``"no_reg"`` or ``"reg"``) from an :class:`~workbench.bilevel.Illustration`.

    ``path_upto`` truncates the attack path (animation); ``poison_xy``/``poisoned_theta`` draw a
    user-placed poisoning point and the boundary trained with it instead of the attack's.
    """
    if which not in ill.attacks:
        raise ValueError(f"which={which!r} is invalid: choose one of {sorted(ill.attacks)}")
    fig = go.Figure(_panel_traces(ill, which, coloraxis="coloraxis", showlegend=True, path_upto=path_upto,
                                  poison_xy=poison_xy, poisoned_theta=poisoned_theta))
    lo, hi = ill.settings["box"]
    fig.update_layout(coloraxis=dict(colorscale="Viridis", colorbar=dict(title="val. error"),
                                     cmin=0, cmax=float(np.nanmax(ill.maps.error)) or 1.0),
                      legend=dict(orientation="h", y=-0.2, x=0, bgcolor="rgba(150,150,150,0.35)"))
    fig.update_xaxes(range=[lo - 0.3, hi + 0.3], title="x₁")
    fig.update_yaxes(range=[lo - 0.3, hi + 0.3], title="x₂", scaleanchor="x", scaleratio=1)
    return _finish(fig, theme, title, PANEL_TITLES.get(which, which))


def lambda_map_figure(ill, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig. 1 (right): λ (log scale) minimising the validation error as a function of the poisoning point."""
    fig = go.Figure([go.Heatmap(x=ill.maps.xs, y=ill.maps.ys, z=ill.lam_map, colorscale="Magma",
                                colorbar=dict(title="argmin λ"),
                                hovertemplate="poison at (%{x:.2f}, %{y:.2f})<br>λ* = %{z:.2f}<extra></extra>"),
                     _box_trace(ill.settings["box"], True), *_data_traces(ill.data, False, True)])
    lo, hi = ill.settings["box"]
    fig.update_xaxes(range=[lo - 0.3, hi + 0.3], title="x₁")
    fig.update_yaxes(range=[lo - 0.3, hi + 0.3], title="x₂", scaleanchor="x", scaleratio=1)
    fig.update_layout(legend=dict(orientation="h", y=-0.2, x=0))
    return _finish(fig, theme, title, "λ minimising the validation error")


def illustration_figure(ill, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig. 1: no regularisation | λ = log 20 (shared error colour scale) | argmin-λ map."""
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09,
                        subplot_titles=(PANEL_TITLES["no_reg"], PANEL_TITLES["reg"],
                                        "argmin-λ of the validation error"))
    for col, which in ((1, "no_reg"), (2, "reg")):
        for tr in _panel_traces(ill, which, coloraxis="coloraxis", showlegend=col == 1):
            fig.add_trace(tr, row=1, col=col)
    fig.add_trace(go.Heatmap(x=ill.maps.xs, y=ill.maps.ys, z=ill.lam_map, coloraxis="coloraxis2",
                             hovertemplate="λ* = %{z:.2f}<extra></extra>"), row=1, col=3)
    fig.add_trace(_box_trace(ill.settings["box"], False), row=1, col=3)
    for tr in _data_traces(ill.data, False, False):
        fig.add_trace(tr, row=1, col=3)
    emax = float(np.nanmax(ill.maps.error)) or 1.0
    fig.update_layout(coloraxis=dict(colorscale="Viridis", cmin=0, cmax=emax,
                                     colorbar=dict(title="val. error", x=0.64, len=0.9, thickness=12)),
                      coloraxis2=dict(colorscale="Magma", colorbar=dict(title="λ*", x=1.0, len=0.9, thickness=12)),
                      legend=dict(orientation="h", y=-0.15, x=0, bgcolor="rgba(150,150,150,0.35)"))
    lo, hi = ill.settings["box"]
    for c in (1, 2, 3):
        fig.update_xaxes(range=[lo - 0.3, hi + 0.3], row=1, col=c, title="x₁")
        fig.update_yaxes(range=[lo - 0.3, hi + 0.3], row=1, col=c, scaleanchor=f"x{'' if c == 1 else c}")
    fig = _finish(fig, theme, title, "Effect of L2 regularisation on a single optimal poisoning point (Fig. 1)")
    fig.update_layout(height=460 if theme == "screen" else fig.layout.height, width=1350 if theme == "screen" else None)
    return fig


def attack_curve_figure(ill, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Attacker objective 𝒜 (validation cross-entropy after T inner steps) per hyperiteration, per panel."""
    fig = go.Figure()
    for i, (which, att) in enumerate(ill.attacks.items()):
        v = list(att["val_loss"]) + [att["final_val_loss"]]
        fig.add_trace(go.Scatter(x=list(range(len(v))), y=v, mode="lines", name=PANEL_TITLES.get(which, which),
                                 line=dict(color=color_for(i))))
    fig.update_xaxes(title="hyperiteration")
    fig.update_yaxes(title="validation loss 𝒜")
    return _finish(fig, theme, title, "Attack objective during projected hypergradient ascent")


def _agg(records: pd.DataFrame, value: str) -> pd.DataFrame:
    g = records.groupby(["strategy", "fraction"])[value]
    return pd.DataFrame({"mean": g.mean(), "se": g.sem().fillna(0.0), "n": g.count()}).reset_index()


def error_vs_fraction_figure(records: pd.DataFrame, *, value: str = "test_error", theme: str = "screen",
                             title: str | None = None) -> go.Figure:
    """Fig. 2 (a–c): ``value`` (default test error) vs poisoning fraction, one line per λ strategy, mean ± s.e."""
    fig = go.Figure()
    if len(records):
        a = _agg(records, value)
        for i, key in enumerate(k for k in STRATEGY_LABELS if k in set(a["strategy"])):
            d = a[a["strategy"] == key].sort_values("fraction")
            fig.add_trace(go.Scatter(x=100 * d["fraction"], y=d["mean"], mode="lines+markers",
                                     name=STRATEGY_LABELS[key], line=dict(color=color_for(i)),
                                     error_y=dict(type="data", array=d["se"], visible=True, thickness=1.2),
                                     customdata=d["n"], hovertemplate="%{y:.4f} (n=%{customdata})<extra></extra>"))
    fig.update_xaxes(title="poisoning points (% of the training set)")
    fig.update_yaxes(title=value.replace("_", " "), tickformat=".1%" if value.endswith("error") else None)
    return _finish(fig, theme, title, "Test error vs fraction of poisoning points (Fig. 2)")


def lambda_norm_figure(records: pd.DataFrame, *, strategy: str = "rmd", theme: str = "screen",
                       title: str | None = None) -> go.Figure:
    """Fig. 2 (d–f): the learned λ (log scale) and ‖w‖² of ``strategy`` vs poisoning fraction (mean ± s.e.)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("learned λ (log scale)", "‖w‖²₂"))
    if len(records):
        r = records[records["strategy"] == strategy]
        for col, value in ((1, "log_lam"), (2, "w_norm2")):
            a = _agg(r, value).sort_values("fraction")
            fig.add_trace(go.Scatter(x=100 * a["fraction"], y=a["mean"], mode="lines+markers",
                                     error_y=dict(type="data", array=a["se"], visible=True),
                                     name=value, line=dict(color=color_for(col - 1)), showlegend=False), row=1, col=col)
    for c in (1, 2):
        fig.update_xaxes(title="poisoning points (%)", row=1, col=c)
    return _finish(fig, theme, title, f"{STRATEGY_LABELS.get(strategy, strategy)}: λ and ‖w‖² vs poisoning (Fig. 2)")


def weight_histogram_figure(weights: Mapping[str, Sequence[float]], *, rep: int | None = None,
                            strategies: Sequence[str] = ("small", "rmd"), bins: int = 40, theme: str = "screen",
                            title: str | None = None) -> go.Figure:
    """Fig. 3: relative-frequency histograms of w, clean (0 poisoning points) vs the most poisoned set.

    ``weights`` maps ``"<rep>/<strategy>/<n_poison>"`` to weight lists (:attr:`StudyResult.weights`); all
    repetitions are pooled unless ``rep`` is given.
    """
    titles = [("no regularisation (λ small)" if s == "small" else STRATEGY_LABELS.get(s, s)) for s in strategies]
    fig = make_subplots(rows=1, cols=len(strategies), subplot_titles=titles)
    for col, strat in enumerate(strategies, start=1):
        keys = [k for k in weights if k.split("/")[1] == strat and (rep is None or int(k.split("/")[0]) == rep)]
        if not keys:
            continue
        counts = sorted({int(k.split("/")[2]) for k in keys})
        ws = [np.concatenate([np.asarray(weights[k], dtype=float) for k in keys if int(k.split("/")[2]) == n_p])
              for n_p in (counts[0], counts[-1])]
        edges = np.histogram_bin_edges(np.concatenate(ws), bins=bins)  # shared bins: clean and poisoned comparable
        for j, (w, label) in enumerate(zip(ws, ("clean", f"poisoned ({counts[-1]} points)"))):
            fig.add_trace(go.Histogram(x=w, histnorm="probability", name=label, legendgroup=label,
                                       showlegend=col == 1, opacity=0.6, marker_color=color_for(j),
                                       xbins=dict(start=float(edges[0]), end=float(edges[-1]),
                                                  size=float(edges[1] - edges[0]) or 1.0)), row=1, col=col)
        fig.update_xaxes(title="w", row=1, col=col)
    fig.update_yaxes(title="relative frequency", row=1, col=1)
    fig.update_layout(barmode="overlay")
    return _finish(fig, theme, title, "Histograms of the LR weights, clean vs poisoned (Fig. 3)")
