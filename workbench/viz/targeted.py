"""Figures of targeted poisoning ([Yang 2022]): gradient PCA, cosines over epochs, histograms.

Builders take plain data (DataFrames from :mod:`workbench.targeted`) and return
``plotly.graph_objects.Figure`` objects themed with :mod:`workbench.viz.theme`:

* :func:`gradient_pca_figure` — [Yang 2022, Fig. 1b]: last-layer gradients of effective (red) and
  ineffective (purple) poisons and clean examples of the target (blue) and poison (green)
  class on their first two principal components (frame of
  :func:`workbench.targeted.effective.gradient_pca_frame`);
* :func:`cosine_over_epochs_figure` — [Yang 2022, Fig. 3a]: cosine similarity of effective /
  ineffective poisons to the target and to each other per epoch (frame of
  :class:`workbench.targeted.effective.CosineTracker`), mean ± s.e.;
* :func:`cosine_histogram_figure` — histograms of poison→target gradient cosines (crafted
  poisons vs their clean bases, or effective vs ineffective);
* :func:`proxy_agreement_figure` — the cheap proxy (cosine) against the retraining result
  (effective or not), per poison;
* :func:`craft_loss_figure` — the attack objective per iteration and restart;
* :func:`adv_prob_figure` — the target's adversarial-label probability per epoch for victim runs;
* :func:`trials_figure` — attack success and test accuracy per defense over trials.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .theme import apply_theme, color_for

__all__ = ["GROUP_COLORS", "gradient_pca_figure", "cosine_over_epochs_figure", "cosine_histogram_figure",
           "proxy_agreement_figure", "craft_loss_figure", "adv_prob_figure", "trials_figure", "poison_images_figure"]

#: The colours of [Yang 2022, Fig. 1]: effective red, ineffective purple, target class blue, poison class green.
GROUP_COLORS = {"effective poison": "#D55E00", "ineffective poison": "#CC79A7", "poison": "#CC79A7",
                "clean target class": "#0072B2", "clean poison class": "#009E73", "target": "#000000",
                "clean bases": "#009E73"}
_ORDER = ["clean target class", "clean poison class", "ineffective poison", "poison", "effective poison", "target"]


def gradient_pca_figure(frame: pd.DataFrame, explained: Sequence[float] | None = None, *, title: str | None = None,
                        theme: str = "screen") -> go.Figure:
    """[Yang 2022, Fig. 1b] from a frame with columns ``pc1, pc2, group`` (and optionally ``index``).

    Raises:
        ValueError: a required column is missing.
    """
    missing = {"pc1", "pc2", "group"} - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks column(s) {sorted(missing)}")
    fig = go.Figure()
    groups = [g for g in _ORDER if g in set(frame["group"])] + sorted(set(frame["group"]) - set(_ORDER))
    for i, g in enumerate(groups):
        d = frame[frame["group"] == g]
        marker = dict(color=GROUP_COLORS.get(g, color_for(i)), size=12 if g == "target" else 7,
                      symbol="star" if g == "target" else ("diamond" if "poison" in g and "clean" not in g
                                                           else "circle"),
                      opacity=0.55 if g.startswith("clean") else 0.95, line=dict(width=0.5, color="white"))
        text = [f"index {int(i)}" for i in d["index"]] if "index" in d else None
        fig.add_trace(go.Scatter(x=d["pc1"], y=d["pc2"], mode="markers", name=f"{g} ({len(d)})", marker=marker,
                                 text=text, hovertemplate="%{text}<br>PC1 %{x:.3g}<br>PC2 %{y:.3g}<extra>" + g
                                 + "</extra>"))
    ev = list(explained) if explained is not None else None
    fig.update_layout(title=title or "Last-layer gradients, first two principal components (Yang 2022, Fig. 1b)",
                      xaxis_title="PC1" + (f" ({100 * ev[0]:.0f}% var.)" if ev else ""),
                      yaxis_title="PC2" + (f" ({100 * ev[1]:.0f}% var.)" if ev and len(ev) > 1 else ""))
    return apply_theme(fig, theme)


def cosine_over_epochs_figure(frame: pd.DataFrame, *, warmup: int | None = None, title: str | None = None,
                              theme: str = "screen") -> go.Figure:
    """[Yang 2022, Fig. 3a]: ``mean`` ± ``se`` per ``series`` over ``epoch`` (frame of ``CosineTracker.frame()``).

    ``warmup`` draws a vertical line at the end of EPIC's warm-up.
    """
    missing = {"epoch", "series", "mean"} - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks column(s) {sorted(missing)}")
    fig = go.Figure()
    styles = {"effective → target": ("#D55E00", "solid"), "ineffective → target": ("#CC79A7", "solid"),
              "effective ↔ effective": ("#D55E00", "dash"), "ineffective ↔ ineffective": ("#CC79A7", "dash")}
    for i, (name, d) in enumerate(frame.groupby("series", sort=False)):
        d = d.sort_values("epoch")
        color, dash = styles.get(name, (color_for(i), "solid"))
        err = dict(type="data", array=d["se"].fillna(0).to_numpy(), visible=True, thickness=1) if "se" in d else None
        fig.add_trace(go.Scatter(x=d["epoch"], y=d["mean"], mode="lines+markers", name=name, error_y=err,
                                 line=dict(color=color, dash=dash)))
    if warmup is not None:
        fig.add_vline(x=warmup, line=dict(color="#888", dash="dot"), annotation_text="warm-up ends")
    fig.update_layout(title=title or "Gradient cosine of poisons to the target and to each other (Yang 2022, Fig. 3a)",
                      xaxis_title="epoch", yaxis_title="cosine similarity")
    return apply_theme(fig, theme)


def cosine_histogram_figure(values: Mapping[str, Sequence[float]], *, bins: int = 30, title: str | None = None,
                            theme: str = "screen") -> go.Figure:
    """Overlaid histograms of poison→target gradient cosines, one per named series (e.g. crafted vs clean bases)."""
    if not values:
        raise ValueError("values is empty: pass at least one named series of cosines")
    fig = go.Figure()
    for i, (name, v) in enumerate(values.items()):
        v = np.asarray(v, dtype=float)
        v = v[np.isfinite(v)]
        fig.add_trace(go.Histogram(x=v, name=f"{name} (n={len(v)})", opacity=0.6,
                                   xbins=dict(start=-1, end=1, size=2 / bins),
                                   marker_color=GROUP_COLORS.get(name, color_for(i))))
    fig.update_layout(barmode="overlay", title=title or "Poison → target gradient cosine",
                      xaxis_title="cos(∇θ ℓ(x_i + Δ_i, y_i), ∇θ ℓ(x_t, y_adv))", yaxis_title="poisons",
                      xaxis_range=[-1, 1])
    return apply_theme(fig, theme)


def proxy_agreement_figure(cosines: pd.DataFrame, effective: Sequence[int], *, agreement: Mapping | None = None,
                           theme: str = "screen") -> go.Figure:
    """Per poison: proxy cosine (y) by retraining verdict (x: effective / ineffective), jittered strip + box."""
    eff = np.isin(cosines["index"].to_numpy(), np.asarray(list(effective), dtype=np.int64))
    fig = go.Figure()
    for name, m in (("ineffective poison", ~eff), ("effective poison", eff)):
        d = cosines[m]
        fig.add_trace(go.Box(y=d["cosine"], name=f"{name} ({int(m.sum())})", boxpoints="all", jitter=0.4,
                             pointpos=0, marker_color=GROUP_COLORS[name], text=[f"index {i}" for i in d["index"]]))
    sub = ""
    if agreement:
        sub = (f" — ROC AUC {agreement.get('auc', float('nan')):.2f}, "
               f"precision@k {agreement.get('precision_at_k', float('nan')):.2f}")
    fig.update_layout(title="Cheap proxy (poison→target cosine) vs retraining (Yang 2022, §3.2)" + sub,
                      yaxis_title="poison→target gradient cosine", showlegend=False)
    return apply_theme(fig, theme)


def craft_loss_figure(history: pd.DataFrame | Sequence[Mapping], *, title: str | None = None,
                      theme: str = "screen") -> go.Figure:
    """The attack objective per iteration, one line per restart (history of ``attack.history``)."""
    df = pd.DataFrame(history)
    fig = go.Figure()
    if not df.empty:
        for r, d in df.groupby("restart"):
            fig.add_trace(go.Scatter(x=d["iteration"], y=d["loss"], mode="lines", name=f"restart {int(r)}",
                                     line=dict(color=color_for(int(r)))))
    fig.update_layout(title=title or "Crafting objective", xaxis_title="iteration", yaxis_title="objective")
    return apply_theme(fig, theme)


def adv_prob_figure(histories: Mapping[str, pd.DataFrame], *, title: str | None = None,
                    theme: str = "screen") -> go.Figure:
    """Target's p(y_adv) per epoch for named victim runs (``VictimResult.history`` frames)."""
    fig = go.Figure()
    for i, (name, h) in enumerate(histories.items()):
        if h is None or h.empty or "target_adv_prob" not in h:
            continue
        fig.add_trace(go.Scatter(x=h["epoch"], y=h["target_adv_prob"], mode="lines+markers", name=name,
                                 line=dict(color=color_for(i))))
    fig.add_hline(y=0.5, line=dict(color="#888", dash="dot"))
    fig.update_layout(title=title or "Target: probability of the adversarial label", xaxis_title="epoch",
                      yaxis_title="p(y_adv | x_t)", yaxis_range=[0, 1])
    return apply_theme(fig, theme)


def trials_figure(df: pd.DataFrame, *, theme: str = "screen") -> go.Figure:
    """Attack success rate and test accuracy (mean ± s.e. over trials) per defense (trial records)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("attack success rate", "test accuracy"))
    if not df.empty:
        g = df.groupby("defense", sort=False)
        n = g.size()
        for col, (metric, scale) in enumerate((("success", 1.0), ("test_acc", 1.0)), start=1):
            m = g[metric].apply(lambda s: s.astype(float).mean())
            se = g[metric].apply(lambda s: s.astype(float).std(ddof=1) / np.sqrt(len(s)) if len(s) > 1 else 0.0)
            fig.add_trace(go.Bar(x=list(m.index), y=m.to_numpy() * scale,
                                 error_y=dict(type="data", array=se.to_numpy()),
                                 marker_color=[color_for(i) for i in range(len(m))], showlegend=False,
                                 text=[f"n={int(n[k])}" for k in m.index]), row=1, col=col)
    fig.update_yaxes(range=[0, 1])
    fig.update_layout(title="Targeted poisoning over trials")
    return apply_theme(fig, theme)


def poison_images_figure(x: np.ndarray, delta: np.ndarray, *, n: int = 6, titles: Sequence[str] | None = None,
                         theme: str = "screen") -> go.Figure:
    """Bases, Δ (rescaled) and poisons side by side, pixel scale ``[N, H, W]`` grey images (first ``n``)."""
    from plotly.subplots import make_subplots

    n = min(n, len(x))
    fig = make_subplots(rows=3, cols=n, vertical_spacing=0.04, horizontal_spacing=0.01,
                        row_titles=["base", "Δ", "poison"])
    m = float(np.abs(delta[:n]).max()) or 1.0
    for j in range(n):
        for r, img, lo, hi in ((1, x[j], 0, 1), (2, delta[j], -m, m), (3, np.clip(x[j] + delta[j], 0, 1), 0, 1)):
            fig.add_trace(go.Heatmap(z=img[::-1], zmin=lo, zmax=hi, colorscale="gray" if r != 2 else "RdBu",
                                     showscale=False), row=r, col=j + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(title="Poisons: base, perturbation Δ, base + Δ (pixel scale)", height=420)
    return apply_theme(fig, theme)
