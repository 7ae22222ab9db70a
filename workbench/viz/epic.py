"""Figures of the EPIC defense ([Yang 2022, Figs. 2, 3b, 3c, 4–5]).

Pure builders: data (DataFrames from :mod:`workbench.defenses.analysis`) in,
``plotly.graph_objects.Figure`` out, styled by :mod:`workbench.viz.theme`.

* :func:`cluster_size_figure` — fraction of clean vs poison examples per gradient-cluster
  size, one panel per epoch (Figs. 4–5).
* :func:`cumulative_drops_figure` — cumulative fraction of poisons / clean examples dropped
  per round, with the test error (Fig. 3b).
* :func:`gradient_difference_figure` — ‖∇L_kept − ∇L_V‖ vs random subsets of the same
  size over epochs (Fig. 3c).
* :func:`drop_rates_figure` — fraction of (effective) poisons dropped vs fraction of all
  examples dropped, EPIC vs the loss / confidence baselines (Fig. 2).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .theme import color_for
from .theme import finish_figure as _finish

__all__ = ["cluster_size_figure", "cumulative_drops_figure", "gradient_difference_figure", "drop_rates_figure",
           "GROUP_COLORS"]

GROUP_COLORS = {"clean": color_for(0), "poison": color_for(1), "effective poison": color_for(1),
                "ineffective poison": color_for(3)}




def _frame(data, required: Sequence[str], what: str) -> pd.DataFrame:
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(list(data))
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {list(required)}; missing {missing}")
    return df


def cluster_size_figure(df, *, epochs: Sequence[int] | None = None, theme: str = "screen",
                        title: str | None = None) -> go.Figure:
    """Fraction of clean vs poison examples in gradient clusters of each size ([Yang 2022, Figs. 4–5]).

    Args:
        df: :func:`workbench.defenses.analysis.cluster_size_fractions` output.
        epochs: panels to show (default: every epoch in ``df``, at most 4 evenly spaced).
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).

    Returns:
        Figure with one bar panel per epoch: x = cluster size (bins), y = fraction of the
        group's kept examples, bars grouped by ``group``.
    """
    df = _frame(df, ("epoch", "group", "size_bin", "bin_order", "fraction"), "cluster_size_figure")
    all_ep = sorted(df["epoch"].unique())
    if epochs is None:
        epochs = all_ep if len(all_ep) <= 4 else [all_ep[i] for i in np.linspace(0, len(all_ep) - 1, 4).round()
                                                  .astype(int)]
    epochs = list(epochs)
    def _panel_title(e) -> str:
        tot = df[df["epoch"] == e].drop_duplicates("group").set_index("group")["group_total"]
        return f"epoch {e}<br><sup>" + ", ".join(f"{g} n={int(n)}" for g, n in tot.items()) + "</sup>"

    fig = make_subplots(rows=1, cols=max(len(epochs), 1), shared_yaxes=True,
                        subplot_titles=[_panel_title(e) for e in epochs], horizontal_spacing=0.04)
    shown = set()
    for col, e in enumerate(epochs, start=1):
        d = df[df["epoch"] == e].sort_values("bin_order")
        for gname, gd in d.groupby("group", sort=False):
            fig.add_trace(go.Bar(x=gd["size_bin"], y=gd["fraction"], name=gname, legendgroup=gname,
                                 showlegend=gname not in shown, marker_color=GROUP_COLORS.get(gname, color_for(4)),
                                 customdata=np.stack([gd["count"], gd["group_total"]], axis=1),
                                 hovertemplate="size %{x}<br>fraction %{y:.3f}<br>%{customdata[0]} of "
                                               "%{customdata[1]}<extra>" + gname + "</extra>"),
                          row=1, col=col)
            shown.add(gname)
        fig.update_xaxes(title_text="gradient-cluster size", type="category", row=1, col=col)
    fig.update_yaxes(title_text="fraction of group", range=[0, 1.02], row=1, col=1)
    fig.update_layout(barmode="group")
    fig.update_xaxes(tickangle=-45)
    _finish(fig, theme, title, "Clean vs poison examples per gradient-cluster size")
    fig.update_layout(margin=dict(t=100 if fig.layout.title.text else 60))  # room for the two-line panel titles
    return fig


def cumulative_drops_figure(df, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Cumulative fraction of poisons and clean examples dropped, and the test error ([Yang 2022, Fig. 3b]).

    Args:
        df: :func:`workbench.defenses.analysis.cumulative_drops` output (``epoch``,
            ``frac_poison``, ``frac_clean``, optional ``frac_effective``, ``frac_ineffective``,
            ``test_error``).
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).

    Returns:
        Figure: x = epoch; left axis the cumulative fractions (step lines); right axis the
        test error (dashed), when present.
    """
    df = _frame(df, ("epoch", "frac_poison", "frac_clean"), "cumulative_drops_figure")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    series = [("frac_poison", "poisons", GROUP_COLORS["poison"]), ("frac_clean", "clean", GROUP_COLORS["clean"])]
    if "frac_effective" in df.columns:
        series = [("frac_effective", "effective poisons", GROUP_COLORS["effective poison"]),
                  ("frac_ineffective", "ineffective poisons", GROUP_COLORS["ineffective poison"]),
                  ("frac_clean", "clean", GROUP_COLORS["clean"])]
    for col, name, color in series:
        fig.add_trace(go.Scatter(x=df["epoch"], y=df[col], name=name, mode="lines+markers", line_shape="hv",
                                 line_color=color, hovertemplate="epoch %{x}<br>%{y:.3f}<extra>" + name + "</extra>"),
                      secondary_y=False)
    if "test_error" in df.columns and df["test_error"].notna().any():
        d = df.dropna(subset=["test_error"])
        fig.add_trace(go.Scatter(x=d["epoch"], y=d["test_error"], name="test error", mode="lines+markers",
                                 line=dict(color=color_for(7), dash="dash"),
                                 hovertemplate="epoch %{x}<br>test error %{y:.3f}<extra></extra>"),
                      secondary_y=True)
        top = float(d["test_error"].max())
        fig.update_yaxes(title_text="test error", range=[0, max(top * 1.1, 1e-3)], tickmode="auto", nticks=6,
                         tickformat=".2f", showgrid=False, secondary_y=True)
    fig.update_yaxes(title_text="cumulative fraction dropped", range=[0, 1.02], secondary_y=False)
    fig.update_xaxes(title_text="epoch (round)")
    return _finish(fig, theme, title, "EPIC: cumulative fraction dropped vs test error")


def gradient_difference_figure(records, *, theme: str = "screen", title: str | None = None,
                               relative: bool = False) -> go.Figure:
    """Gradient error of the examples EPIC keeps vs random subsets of the same size ([Yang 2022, Fig. 3c]).

    Args:
        records: :class:`~workbench.defenses.analysis.GradientDifferenceProbe` records (dicts or a
            DataFrame with ``epoch, kept, random_mean, random_std``; ``relative_kept`` /
            ``relative_random`` for ``relative=True``).
        relative: plot ``‖∇L_S − ∇L_V‖ / ‖∇L_V‖`` instead of the absolute norm.
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).

    Returns:
        Figure: x = epoch, y = gradient difference; the random subsets as mean ± std band.
    """
    df = _frame(records, ("epoch", "kept", "random_mean", "random_std"), "gradient_difference_figure")
    df = df.dropna(subset=["kept"]).sort_values("epoch")
    k_col, r_col = ("relative_kept", "relative_random") if relative else ("kept", "random_mean")
    std = df["random_std"] * (df["relative_random"] / df["random_mean"] if relative else 1.0)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=np.concatenate([df["epoch"], df["epoch"][::-1]]),
                             y=np.concatenate([df[r_col] + std, (df[r_col] - std)[::-1]]),
                             mode="lines", fill="toself", fillcolor="rgba(213,94,0,0.18)", line=dict(width=0),
                             hoverinfo="skip",
                             showlegend=False))
    fig.add_trace(go.Scatter(x=df["epoch"], y=df[r_col], name="random subsets (mean ± std)", mode="lines+markers",
                             line_color=color_for(1)))
    fig.add_trace(go.Scatter(x=df["epoch"], y=df[k_col], name="kept by EPIC", mode="lines+markers",
                             line_color=color_for(0)))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="‖∇L(S) − ∇L(V)‖ / ‖∇L(V)‖" if relative else "‖∇L(S) − ∇L(V)‖",
                     rangemode="tozero")
    return _finish(fig, theme, title, "Gradient difference to the full data: EPIC subset vs random subsets")


def drop_rates_figure(df, *, theme: str = "screen", title: str | None = None,
                      target_label: str = "fraction of poisons dropped",
                      colors: Mapping[str, str] | None = None) -> go.Figure:
    """Fraction of (effective) poisons dropped vs fraction of all examples dropped ([Yang 2022, Fig. 2]).

    Args:
        df: :func:`workbench.defenses.analysis.drop_rates` output (``defense, frac_all,
            frac_target``; ``epoch`` in the hover).
        target_label: y-axis title (e.g. "fraction of effective poisons dropped").
        colors: optional colour per defense label.
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).

    Returns:
        Figure: one line per defense through its rounds (cumulative), and the diagonal
        ``y = x`` (what dropping at random achieves on average).
    """
    df = _frame(df, ("defense", "frac_all", "frac_target"), "drop_rates_figure")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#999999", dash="dot", width=1),
                             name="random dropping", hoverinfo="skip"))
    for i, (label, d) in enumerate(df.groupby("defense", sort=False)):
        c = (colors or {}).get(label, color_for(i))
        fig.add_trace(go.Scatter(x=d["frac_all"], y=d["frac_target"], name=str(label), mode="lines+markers",
                                 line_color=c, customdata=d[["epoch"]].to_numpy() if "epoch" in d else None,
                                 hovertemplate="after epoch %{customdata[0]}<br>all dropped %{x:.3f}<br>"
                                               "poisons dropped %{y:.3f}<extra>" + str(label) + "</extra>"))
    xmax = float(df["frac_all"].max()) if len(df) else 1.0
    fig.update_xaxes(title_text="fraction of all examples dropped", range=[0, min(1.0, max(0.05, xmax * 1.1))])
    fig.update_yaxes(title_text=target_label, range=[0, 1.02])
    return _finish(fig, theme, title, "Poisons dropped vs examples dropped: EPIC vs loss / confidence filters")
