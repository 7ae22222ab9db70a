"""Figure builders for Chapter 6 of the thesis (large-step SGD learns sparse features).

Pure builders: the ``data`` of the reproductions in :mod:`workbench.thesis.ch6` in, a ``go.Figure`` out (the
registry calls ``builder(outcome.data)``). Themed with :func:`~workbench.viz.theme.apply_theme`; empty data gives
an empty figure with its axes.

* :func:`diag_nets_figure`   Figs. 6.2 / 6.11 — train loss, test loss, rank φ(X), ‖u⊙v‖₀ vs iteration per run
  (SGD solid, GD dashed); dotted verticals at the decay points
* :func:`trajectory_figure`  Fig. 6.3 — GD and SGD iterates in span{w* − w_init, w_flow − w_init}
* :func:`quadratic_toy_figure` Prop. 6.3.2 — θ_t and F(θ_t) with the proposition's bands
* :func:`relu1d_figure`      Fig. 6.4 — train loss, rank, FSC, kinks vs iteration, and the learned functions
* :func:`overregularization_figure` Fig. 6.12 — 400× vs 500× warm-up over several inits: stuck runs
* :func:`relu1d_snapshots_figure` Fig. 6.13 — predictor snapshots over training
* :func:`teacher_student_figure` Figs. 6.5 / 6.14 — train/test loss, rank, FSC per hidden layer
* :func:`neurons_figure`     Fig. 6.10 — first-layer neurons (init → final) and teacher directions, small vs large η
* :func:`sde_figure`         Fig. 6.9 — SGD vs SDE discretisation vs gradient flow

No UI imports.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .theme import color_for
from .theme import finish_figure as _finish

__all__ = ["diag_nets_figure", "trajectory_figure", "quadratic_toy_figure", "relu1d_figure", "relu1d_snapshots_figure",
           "teacher_student_figure", "neurons_figure", "sde_figure", "overregularization_figure"]




def _get(data: Any, key: str) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, dict) and data.get(key) is not None:
        return pd.DataFrame(data[key])
    return pd.DataFrame()


def _panels(df: pd.DataFrame, panels: list[tuple[str, str, bool]], *, xcol: str = "iteration", cols: int = 2,
            dash_by: str | None = None, decay_at: dict | None = None, T: float | None = None,
            run_order: list | None = None, color_key=None) -> go.Figure:
    """Generic grid: one panel per (column, title, log-y) entry, one line per run (colour).

    Lines are optionally dashed by a column (e.g. method).
    """
    rows = -(-len(panels) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p[1] for p in panels], horizontal_spacing=0.09,
                        vertical_spacing=0.13)
    if len(df):
        runs = run_order or list(dict.fromkeys(df["run"]))
        dashes = {}
        if dash_by:
            for i, v in enumerate(dict.fromkeys(df[dash_by])):
                dashes[v] = ("solid", "dash", "dot")[i % 3]
        keys = list(dict.fromkeys(color_key(r) if color_key else r for r in runs))
        cidx = {r: keys.index(color_key(r) if color_key else r) for r in runs}
        for run in runs:
            i = cidx[run]
            g = df[df["run"] == run]
            if not len(g):
                continue
            dash = dashes.get(g[dash_by].iloc[0], "solid") if dash_by else "solid"
            x = g[xcol] if xcol in g else g["iteration"]
            for k, (col, _, logy) in enumerate(panels):
                if col not in g:
                    continue
                y = g[col].astype(float)
                if logy:
                    y = y.where(y > 0)
                fig.add_trace(go.Scatter(x=x, y=y, name=str(run), legendgroup=str(run), showlegend=k == 0,
                                         line=dict(color=color_for(i), dash=dash)), k // cols + 1, k % cols + 1)
        if decay_at and T:
            for run in runs:
                i = cidx[run]
                p = decay_at.get(run)
                if p:
                    for k in range(len(panels)):
                        fig.add_vline(x=p * T, line=dict(color=color_for(i), width=1, dash="dot"), row=k // cols + 1,
                                      col=k % cols + 1)
    for k, (_, _, logy) in enumerate(panels):
        fig.update_xaxes(title="iteration", row=k // cols + 1, col=k % cols + 1)
        if logy:
            fig.update_yaxes(type="log", exponentformat="power", row=k // cols + 1, col=k % cols + 1)
    return fig


def diag_nets_figure(data: Any, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Figs. 6.2 / 6.11: diagonal linear nets, large-step SGD vs GD (losses, rank φ(X), ‖u⊙v‖₀ per iteration).

    ``data`` = ``{"metrics": DataFrame(run, method, iteration, [iteration_sgd_scale],
    train_loss, test_loss, rank, l0), "decay_at", "T"}``. GD runs (dashed) are drawn on the SGD iteration axis
    (``iteration_sgd_scale``: one GD step = T_SGD / T_GD SGD iterations).
    """
    df = _get(data, "metrics")
    if len(df) and "iteration_sgd_scale" in df:
        df = df.assign(x=df["iteration_sgd_scale"].fillna(df["iteration"]))
    elif len(df):
        df = df.assign(x=df["iteration"])
    panels = [("train_loss", "train loss", True), ("test_loss", "test loss", True), ("rank", "rank of φ(X)", False),
              ("l0", "‖u⊙v‖₀", False)]
    fig = _panels(df, panels, xcol="x", dash_by="method" if len(df) and "method" in df else None,
                  decay_at=data.get("decay_at") if isinstance(data, dict) else None,
                  T=data.get("T") if isinstance(data, dict) else None,
                  color_key=lambda r: str(r).replace("GD ", "").replace("small η", "small η"))
    return _finish(fig, theme, title, "Diagonal linear nets: large-step SGD (solid) vs GD (dashed) — Figs. 6.2, 6.11",
                   height=700)


def trajectory_figure(data: Any, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig. 6.3: GD and SGD take different trajectories.

    ``data`` = ``{"plane": DataFrame(run, method, iteration, x, y)}`` — coordinates of the iterates in the
    orthonormalised plane spanned by w* − w_init (x axis) and w_flow − w_init.
    """
    df = _get(data, "plane")
    fig = go.Figure()
    if len(df):
        for i, (meth, g) in enumerate(df.groupby("method", sort=False)):
            fig.add_trace(go.Scatter(x=g["x"], y=g["y"], mode="lines+markers",
                                     name=f"{meth}: {g['run'].iloc[0].replace('GD ', '')}",
                                     marker=dict(size=3, color=color_for(i)), line=dict(color=color_for(i))))
        ref = dict(mode="markers+text", textposition="top center", marker=dict(size=12, symbol="star", color="black"),
                   showlegend=False)
        pts = {"w_init": (0.0, 0.0), **((data.get("plane_refs") or {}) if isinstance(data, dict) else {})}
        fig.add_trace(go.Scatter(x=[p[0] for p in pts.values()], y=[p[1] for p in pts.values()],
                                 text=[k.replace("_", " ") for k in pts], **ref))
    fig.update_xaxes(title="along w* − w_init")
    fig.update_yaxes(title="along w_flow − w_init (orthogonalised)")
    return _finish(fig, theme, title, "GD and SGD take different trajectories (Fig. 6.3)")


def quadratic_toy_figure(data: Any, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Prop. 6.3.2: loss stabilisation on y = xθ*², the iterates θ_t and the loss F(θ_t) with the bounds.

    ``data`` = ``{"trace": DataFrame(iteration, theta, loss), "bounds": {eps_o, F_low, F_high,
    burn_in}}`` — θ_t with the bands (0.65, 1 − ε_o) and (1 + ε_o, 1.162), and F(θ_t) with (ε_o², 0.17).
    """
    df = _get(data, "trace")
    b = data.get("bounds", {}) if isinstance(data, dict) else {}
    fig = make_subplots(rows=1, cols=2, subplot_titles=["θ_t (θ* = 1)", "F(θ_t)"], horizontal_spacing=0.12)
    if len(df):
        n = min(len(df), 400)
        g = df.iloc[:n]
        fig.add_trace(go.Scatter(x=g["iteration"], y=g["theta"], mode="lines+markers", marker=dict(size=3),
                                 name="θ_t", line=dict(color=color_for(0), width=1)), 1, 1)
        fig.add_trace(go.Scatter(x=df["iteration"], y=df["loss"], name="F(θ_t)",
                                 line=dict(color=color_for(1), width=1)), 1, 2)
        e = b.get("eps_o")
        if e is not None:
            for lo, hi in ((0.65, 1 - e), (1 + e, 1.162)):
                fig.add_hrect(y0=lo, y1=hi, fillcolor="rgba(0,158,115,0.12)", line_width=0, row=1, col=1)
            fig.add_hrect(y0=b.get("F_low", e ** 2), y1=b.get("F_high", 0.17), fillcolor="rgba(0,158,115,0.12)",
                          line_width=0, row=1, col=2)
    fig.update_xaxes(title="iteration")
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=2)
    return _finish(fig, theme, title, "Loss stabilisation on y = xθ*² (Prop. 6.3.2): shaded = the proposition's bounds")


def relu1d_figure(data: Any, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Figs. 6.4 / 6.12: two-layer ReLU net on a 1-D regression (losses, predictors, rank, FSC, kinks).

    ``data`` = ``{"metrics": DataFrame(run, iteration, train_loss, rank, fsc, kinks),
    "functions": DataFrame(run, iteration, x, y_hat), "points": DataFrame(x, y), "decay_at", "T"}``. Panels: train
    loss, learned functions at the end (with the 12 points), rank φ(X), FSC, kinks.
    """
    df = _get(data, "metrics")
    fn = _get(data, "functions")
    pts = _get(data, "points")
    decay_at = data.get("decay_at") if isinstance(data, dict) else None
    T = data.get("T") if isinstance(data, dict) else None
    fig = make_subplots(rows=2, cols=3, subplot_titles=["train loss", "final predictor", "rank of φ(X)",
                                                        "feature sparsity coefficient", "active fraction",
                                                        "distinct kinks in the data range"],
                        horizontal_spacing=0.08, vertical_spacing=0.14)
    pos = {"train_loss": (1, 1), "rank": (1, 3), "fsc": (2, 1), "active_fraction": (2, 2), "kinks": (2, 3)}
    if len(df):
        for i, run in enumerate(dict.fromkeys(df["run"])):
            g = df[df["run"] == run]
            for k, (col, (r, c)) in enumerate(pos.items()):
                fig.add_trace(go.Scatter(x=g["iteration"], y=g[col], name=str(run), legendgroup=str(run),
                                         showlegend=k == 0, line=dict(color=color_for(i))), r, c)
            if decay_at and T and decay_at.get(run):
                for (r, c) in pos.values():
                    fig.add_vline(x=decay_at[run] * T, line=dict(color=color_for(i), width=1, dash="dot"), row=r, col=c)
            if len(fn):
                f = fn[fn["run"] == run]
                f = f[f["iteration"] == f["iteration"].max()]
                fig.add_trace(go.Scatter(x=f["x"], y=f["y_hat"], name=str(run), legendgroup=str(run), showlegend=False,
                                         line=dict(color=color_for(i))), 1, 2)
    if len(pts):
        fig.add_trace(go.Scatter(x=pts["x"], y=pts["y"], mode="markers", name="training points",
                                 marker=dict(color="black", size=7)), 1, 2)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=1)
    for (r, c) in list(pos.values()):
        fig.update_xaxes(title="iteration", row=r, col=c)
    fig.update_xaxes(title="x", row=1, col=2)
    return _finish(fig, theme, title, "Two-layer ReLU net, 1-D regression (Figs. 6.4 / 6.12)", height=680)


def overregularization_figure(data: Any, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig. 6.12: a larger warm-up over-regularises (runs stuck at a high loss).

    ``data`` = output of :func:`workbench.thesis.ch6.repro_relu1d_overregularized` (``metrics``,
    ``functions``, ``points``, ``summary`` with init / factor / run / final_loss / stuck, ``stuck_level``). Panels:
    train loss of every run (colour = warm-up factor), final train loss per initialisation, and the final predictors
    of one initialisation (the first one that gets stuck with the largest factor) for every factor.
    """
    df = _get(data, "metrics")
    fn = _get(data, "functions")
    pts = _get(data, "points")
    summ = _get(data, "summary")
    level = data.get("stuck_level") if isinstance(data, dict) else None
    factors = sorted(summ["factor"].unique()) if len(summ) else []
    colour = {f: color_for(i) for i, f in enumerate(factors)}
    stuck = summ[summ["stuck"] & (summ["factor"] == factors[-1])] if len(summ) else summ
    show = int(stuck["init"].iloc[0]) if len(stuck) else (int(summ["init"].iloc[0]) if len(summ) else None)
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08,
                        subplot_titles=["train loss (every init)", "final train loss per init",
                                        f"final predictors, init {show}" if show is not None else "final predictors"])
    seen: set = set()
    for _, r in summ.iterrows():
        g = df[df["run"] == r["run"]]
        f = r["factor"]
        fig.add_trace(go.Scatter(x=g["iteration"], y=g["train_loss"], name=f"{f:g}x warm-up", legendgroup=f"{f:g}",
                                 showlegend=f not in seen, opacity=0.75, line=dict(color=colour[f], width=1.2),
                                 hovertext=r["run"]), 1, 1)
        seen.add(f)
    for f in factors:
        g = summ[summ["factor"] == f]
        fig.add_trace(go.Scatter(x=g["init"], y=g["final_loss"], mode="markers", name=f"{f:g}x warm-up",
                                 legendgroup=f"{f:g}", showlegend=False,
                                 marker=dict(color=colour[f], size=10,
                                             symbol=["x" if s else "circle" for s in g["stuck"]]),
                                 hovertext=[f"{'stuck' if s else 'fits'}: {v:.2e}"
                                            for s, v in zip(g["stuck"], g["final_loss"])]),
                      1, 2)
    if level:
        for c in (1, 2):
            fig.add_hline(y=level, line=dict(color="grey", dash="dash", width=1), row=1, col=c)
    if show is not None and len(fn):
        for _, r in summ[summ["init"] == show].iterrows():
            f = fn[fn["run"] == r["run"]]
            f = f[f["iteration"] == f["iteration"].max()]
            fig.add_trace(go.Scatter(x=f["x"], y=f["y_hat"], name=f"{r['factor']:g}x warm-up",
                                     legendgroup=f"{r['factor']:g}", showlegend=False,
                                     line=dict(color=colour[r["factor"]])), 1, 3)
    if len(pts):
        fig.add_trace(go.Scatter(x=pts["x"], y=pts["y"], mode="markers", name="training points",
                                 marker=dict(color="black", size=7)), 1, 3)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=1)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=2)
    fig.update_xaxes(title="iteration", row=1, col=1)
    fig.update_xaxes(title="initialisation (seed)", dtick=1, row=1, col=2)
    fig.update_xaxes(title="x", row=1, col=3)
    return _finish(fig, theme, title, "Larger warm-up over-regularises: runs stuck at a high loss (Fig. 6.12)",
                   height=420)


def relu1d_snapshots_figure(data: Any, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig. 6.13: predictor snapshots (colour = iteration) per run, one column per run, with the training points."""
    fn = _get(data, "functions")
    pts = _get(data, "points")
    runs = list(dict.fromkeys(fn["run"])) if len(fn) else []
    fig = make_subplots(rows=1, cols=max(len(runs), 1), subplot_titles=runs or [""], horizontal_spacing=0.08)
    for j, run in enumerate(runs):
        f = fn[fn["run"] == run]
        its = sorted(f["iteration"].unique())
        for k, it in enumerate(its):
            g = f[f["iteration"] == it]
            shade = 0.25 + 0.75 * k / max(len(its) - 1, 1)
            fig.add_trace(go.Scatter(x=g["x"], y=g["y_hat"], name=f"iteration {it}", legendgroup=str(it),
                                     showlegend=j == 0, line=dict(color=f"rgba(0,114,178,{shade:.2f})", width=1.5)),
                          1, j + 1)
        if len(pts):
            fig.add_trace(go.Scatter(x=pts["x"], y=pts["y"], mode="markers", showlegend=False,
                                     marker=dict(color="black", size=6)), 1, j + 1)
        fig.update_xaxes(title="x", row=1, col=j + 1)
    if len(pts):
        lo, hi = float(pts["y"].min()), float(pts["y"].max())
        fig.update_yaxes(range=[lo - 1.5, hi + 1.5])
    return _finish(fig, theme, title, "Predictors over training: first simplified, then fitted (Fig. 6.13)")


def teacher_student_figure(data: Any, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Figs. 6.5 / 6.14: teacher–student ReLU nets (losses, rank φ(X), FSC per hidden layer per iteration).

    ``data`` = ``{"metrics": DataFrame(run, iteration, train_loss, test_loss, rank,
    fsc_layer1, [fsc_layer2]), "decay_at", "T", "layers"}``.
    """
    df = _get(data, "metrics")
    layers = int(data.get("layers", 1)) if isinstance(data, dict) else 1
    panels = [("train_loss", "train loss", True), ("test_loss", "test loss", True), ("rank", "rank of φ(X)", False)]
    panels += [(f"fsc_layer{l}", f"FSC, hidden layer {l}", False) for l in range(1, layers + 1)]
    fig = _panels(df, panels, cols=3 if len(panels) > 4 else 2,
                  decay_at=data.get("decay_at") if isinstance(data, dict) else None,
                  T=data.get("T") if isinstance(data, dict) else None)
    return _finish(fig, theme, title, f"Teacher–student ReLU nets ({layers + 1} layers): Figs. 6.5 / 6.14", height=680)


def neurons_figure(data: Any, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig. 6.10: first-layer neurons cluster on the teacher's directions only for a large step size.

    ``data`` = ``{"neurons": DataFrame(run, neuron, stage ∈ {init, final}, x, y, out_weight),
    "teacher": DataFrame(x, y)}`` — each first-layer neuron w_i ∈ R² at init (grey) and at the end (colour, size ∝
    |a_i|), with the teacher directions as rays; one panel per run.
    """
    nd = _get(data, "neurons")
    te = _get(data, "teacher")
    runs = list(dict.fromkeys(nd["run"])) if len(nd) else []
    short = [str(r).replace("large η, decay at ", "large η, ") for r in runs]
    fig = make_subplots(rows=1, cols=max(len(runs), 1), subplot_titles=short or [""], horizontal_spacing=0.06)
    for j, run in enumerate(runs):
        g = nd[nd["run"] == run]
        ini, fin = g[g["stage"] == "init"], g[g["stage"] == "final"]
        scale = float(np.abs(np.r_[fin["x"], fin["y"], ini["x"], ini["y"]]).max() or 1.0)
        if len(te):
            for k in range(len(te)):
                fig.add_trace(go.Scatter(x=[0, te["x"].iloc[k] * scale], y=[0, te["y"].iloc[k] * scale], mode="lines",
                                         line=dict(color="black", width=2, dash="dash"), name="teacher direction",
                                         legendgroup="teacher", showlegend=j == 0 and k == 0), 1, j + 1)
        fig.add_trace(go.Scatter(x=ini["x"], y=ini["y"], mode="markers", name="init", legendgroup="init",
                                 showlegend=j == 0, marker=dict(color="lightgray", size=7)), 1, j + 1)
        a = np.abs(fin["out_weight"].to_numpy()) if "out_weight" in fin else np.ones(len(fin))
        size = 5 + 12 * a / max(float(a.max()), 1e-12) if len(a) else 8
        fig.add_trace(go.Scatter(x=fin["x"], y=fin["y"], mode="markers", name="final (size ∝ |a_i|)",
                                 legendgroup="final", showlegend=j == 0, marker=dict(color=color_for(1), size=size)),
                      1, j + 1)
        fig.update_xaxes(title="w_i,1", row=1, col=j + 1, scaleanchor=f"y{'' if j == 0 else j + 1}")
        fig.update_yaxes(title="w_i,2" if j == 0 else None, row=1, col=j + 1)
    return _finish(fig, theme, title, "First-layer neurons cluster on teacher directions only for large η (Fig. 6.10)")


def sde_figure(data: Any, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig. 6.9: SGD vs its SDE discretisation vs gradient flow (losses, rank φ(X), ‖u⊙v‖₀ per iteration).

    ``data`` = ``{"metrics": DataFrame(run ∈ {SGD, SDE, gradient flow}, iteration, train_loss,
    test_loss, rank, l0), "decay_at", "T"}``.
    """
    df = _get(data, "metrics")
    panels = [("train_loss", "train loss", True), ("test_loss", "test loss", True), ("rank", "rank of φ(X)", False),
              ("l0", "‖u⊙v‖₀", False)]
    fig = _panels(df, panels, decay_at=None)
    if isinstance(data, dict) and data.get("decay_at") and data.get("T"):
        for k in range(4):
            fig.add_vline(x=data["decay_at"] * data["T"], line=dict(color="gray", width=1, dash="dot"),
                          row=k // 2 + 1, col=k % 2 + 1)
    return _finish(fig, theme, title, "SGD vs its SDE discretisation (Eq. 6.58) vs gradient flow (Fig. 6.9)",
                   height=700)
