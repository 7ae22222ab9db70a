"""Figure builders for Chapter 2 of the thesis (fast adversarial training, gradient alignment).

Pure builders (data in, ``go.Figure`` out), themed with :func:`~workbench.viz.theme.apply_theme`. They take the
``data`` of the reproductions in :mod:`workbench.thesis.ch2` (the registry calls ``builder(outcome.data)``) and
cope with partial data (a run in progress) and with empty data.

* :func:`lemma1_figure`  Fig. 2.2 — E‖δ_FGSM-RS‖₂/√d (Monte Carlo ± 2 s.e.) and the Lemma-1 bound vs α/ε,
  FGSM's ε, dashed α = 1.25 ε
* :func:`lemma2_figure`  Fig. 2.9 — gradient alignment at initialisation (finite k, m; limit), Hoeffding and
  final bounds vs ε
* :func:`fast_at_figure` Fig. 2.11 analogue — per method: clean / FGSM / PGD accuracy, gradient alignment,
  cos(δ_FGSM, δ_PGD) and FGSM/PGD loss vs epoch

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

__all__ = ["lemma1_figure", "lemma2_figure", "fast_at_figure", "METHOD_LABELS"]

METHOD_LABELS = {"standard": "standard", "fgsm": "FGSM", "fgsm_rs": "FGSM-RS", "pgd": "PGD-k",
                 "fgsm_gradalign": "FGSM + GradAlign"}




def _table(data: Any, key: str) -> pd.DataFrame:
    if data is None:
        return pd.DataFrame()
    if isinstance(data, pd.DataFrame):
        return data
    t = data.get(key) if isinstance(data, dict) else None
    return pd.DataFrame() if t is None else pd.DataFrame(t)


def lemma1_figure(data: Any, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig. 2.2 (Lemma 1): expected FGSM-RS perturbation norm vs step size, Monte Carlo and bound.

    ``data`` = ``{"table": DataFrame(alpha_over_eps, mc_mean_over_sqrt_d, mc_se_over_sqrt_d,
    bound_over_sqrt_d, fgsm_over_sqrt_d), "eps", "d"}`` (values in units of 1/255 on the y axis).
    """
    df = _table(data, "table")
    eps = data.get("eps", 8 / 255) if isinstance(data, dict) else 8 / 255
    d = data.get("d", "") if isinstance(data, dict) else ""
    fig = go.Figure()
    if len(df):
        x = df["alpha_over_eps"].to_numpy()
        mc = df["mc_mean_over_sqrt_d"].to_numpy() * 255
        se = df["mc_se_over_sqrt_d"].to_numpy() * 255
        fig.add_trace(go.Scatter(x=x, y=df["bound_over_sqrt_d"] * 255, name="bound (Eq. 2.4)", mode="lines",
                                 line=dict(color=color_for(1))))
        fig.add_trace(go.Scatter(x=x, y=mc, name="Monte Carlo E‖δ‖₂/√d", mode="markers",
                                 marker=dict(color=color_for(0), size=6),
                                 error_y=dict(type="data", array=2 * se, visible=True)))
        fig.add_trace(go.Scatter(x=x, y=df["fgsm_over_sqrt_d"] * 255, name="FGSM: ε", mode="lines",
                                 line=dict(color="gray", dash="dot")))
    fig.add_vline(x=1.25, line=dict(color="black", dash="dash", width=1),
                  annotation_text="α = 1.25ε", annotation_position="top left")
    fig.update_xaxes(title="step size α / ε")
    fig.update_yaxes(title="E‖δ_FGSM-RS‖₂ / √d  (×1/255)")
    return _finish(fig, theme, title,
                   f"Lemma 1 (Fig. 2.2): FGSM-RS perturbation norm, ε = {eps * 255:.0f}/255, d = {d}")


def lemma2_figure(data: Any, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig. 2.9 (Lemma 2): gradient alignment at initialisation vs ε, with its bounds.

    ``data`` = ``{"table": DataFrame(eps, cos_finite_mean, cos_finite_std, cos_limit,
    bound_hoeffding, bound_final, k, m)}``; the finite-(k, m) alignment is drawn with a ±1 std band.
    """
    df = _table(data, "table")
    fig = go.Figure()
    if len(df):
        x = df["eps"].to_numpy()
        k, m = int(df["k"].iloc[0]), int(df["m"].iloc[0])
        mu, sd = df["cos_finite_mean"].to_numpy(), df["cos_finite_std"].to_numpy()
        fig.add_trace(go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[mu + sd, (mu - sd)[::-1]], fill="toself",
                                 fillcolor="rgba(0,114,178,0.15)", line=dict(width=0), showlegend=False,
                                 hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=mu, name=f"cos, k={k} patches, m={m} filters (mean ± std)",
                                 line=dict(color=color_for(0))))
        fig.add_trace(go.Scatter(x=x, y=df["cos_limit"], name="limit k, m → ∞ (Eq. 2.9)",
                                 line=dict(color=color_for(2))))
        fig.add_trace(go.Scatter(x=x, y=df["bound_hoeffding"], name="Hoeffding bound",
                                 line=dict(color=color_for(3), dash="dash")))
        fig.add_trace(go.Scatter(x=x, y=df["bound_final"], name="Lemma 2 bound", line=dict(color=color_for(1))))
    fig.add_hline(y=0.7, line=dict(color="gray", dash="dot", width=1))
    fig.update_xaxes(title="ε (ℓ∞ radius, [0,1] pixel scale)")
    fig.update_yaxes(title="gradient alignment", range=[0.4, 1.02])
    return _finish(fig, theme, title, "Lemma 2 (Fig. 2.9): gradient alignment at initialisation")


_PANELS = [("accuracy: PGD solid, FGSM dashed, clean dotted", None), ("gradient alignment", "grad_alignment"),
           ("cos(δ_FGSM, δ_PGD)", "cos_fgsm_pgd"), ("FGSM / PGD loss", None)]


def fast_at_figure(data: Any, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig. 2.11 analogue: fast adversarial training on digits, accuracies and losses per epoch.

    ``data`` = ``{"history": DataFrame with columns method, epoch, clean_acc, fgsm_acc,
    pgd_acc, fgsm_loss, pgd_loss, grad_alignment, cos_fgsm_pgd}, "eps"}`` (or the DataFrame itself).

    Four panels vs epoch; colour = method; accuracy: clean dotted, FGSM dashed, PGD solid; loss: FGSM dashed,
    PGD solid.
    """
    h = _table(data, "history")
    eps = data.get("eps") if isinstance(data, dict) else None
    fig = make_subplots(rows=2, cols=2, subplot_titles=[p[0] for p in _PANELS], horizontal_spacing=0.1,
                        vertical_spacing=0.14)
    if len(h):
        for i, (meth, g) in enumerate(h.groupby("method", sort=False)):
            c, lab, ep = color_for(i), METHOD_LABELS.get(meth, meth), g["epoch"]
            first = dict(legendgroup=meth)
            fig.add_trace(go.Scatter(x=ep, y=g["pgd_acc"], name=lab, line=dict(color=c), **first), 1, 1)
            fig.add_trace(go.Scatter(x=ep, y=g["fgsm_acc"], name=lab + " FGSM acc", line=dict(color=c, dash="dash"),
                                     showlegend=False, **first), 1, 1)
            fig.add_trace(go.Scatter(x=ep, y=g["clean_acc"], name=lab + " clean acc", line=dict(color=c, dash="dot"),
                                     showlegend=False, **first), 1, 1)
            fig.add_trace(go.Scatter(x=ep, y=g["grad_alignment"], name=lab, line=dict(color=c), showlegend=False,
                                     **first), 1, 2)
            fig.add_trace(go.Scatter(x=ep, y=g["cos_fgsm_pgd"], name=lab, line=dict(color=c), showlegend=False,
                                     **first), 2, 1)
            fig.add_trace(go.Scatter(x=ep, y=g["pgd_loss"], name=lab + " PGD loss", line=dict(color=c),
                                     showlegend=False, **first), 2, 2)
            fig.add_trace(go.Scatter(x=ep, y=g["fgsm_loss"], name=lab + " FGSM loss", line=dict(color=c, dash="dash"),
                                     showlegend=False, **first), 2, 2)
    for r in (1, 2):
        for col in (1, 2):
            fig.update_xaxes(title="epoch", row=r, col=col)
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_yaxes(type="log", row=2, col=2)
    _finish(fig, theme, title, "Fast AT on digits (Fig. 2.11 analogue)"
            + (f", ε = {eps}" if eps is not None else ""))
    if theme == "screen":
        fig.update_layout(height=640)
    return fig
