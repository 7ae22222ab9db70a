"""Loss and accuracy curves of one or several runs.

One pure builder serves the live panel, static export and the CLI:
:func:`curve_series` turns run data into named series (plain lists), and
:func:`training_curves` turns series into a ``plotly`` figure. The live
dashboard calls :func:`curve_series` on its growing buffers and copies the
series into its ``FigureWidget`` by ``uid``, so live and exported figures are
the same figure.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .theme import SPLIT_DASH, apply_theme, color_for

__all__ = ["CurveData", "Series", "curve_series", "series_trace", "training_curves", "SPLITS", "METRICS"]

SPLITS = ("train", "val", "test")
METRICS = ("loss", "acc")
_METRIC_TITLE = {"loss": "loss (cross-entropy, nats)", "acc": "accuracy"}
_SPLIT_NAME = {"train": "train", "val": "validation", "test": "test"}


@dataclass
class CurveData:
    """What the curve builder needs from a run.

    Attributes:
        name: legend label.
        epochs: epoch records (columns ``epoch``, ``train_loss``, ``val_acc``, ...).
        steps: step records (columns ``step``, ``epoch`` (fractional), ``loss``, ``acc``, ...).
        key: stable identifier (run id); defaults to ``name``.
    """

    name: str
    epochs: pd.DataFrame = field(default_factory=pd.DataFrame)
    steps: pd.DataFrame = field(default_factory=pd.DataFrame)
    key: str | None = None

    @classmethod
    def from_run(cls, run) -> "CurveData":
        """From a :class:`~workbench.runs.RunData` (or anything with name, epochs, steps, id)."""
        return cls(name=run.name, epochs=run.epochs, steps=run.steps, key=getattr(run, "id", None))

    @classmethod
    def from_records(cls, name: str, epoch_records: Sequence[dict], step_records: Sequence[dict] = (),
                     key: str | None = None) -> "CurveData":
        return cls(name=name, epochs=pd.DataFrame(list(epoch_records)), steps=pd.DataFrame(list(step_records)),
                   key=key)


def _uid(*parts: str) -> str:
    """A CSS-safe, stable trace uid (plotly.js uses uids in selectors)."""
    return "s" + hashlib.sha1("|".join(parts).encode()).hexdigest()[:20]


@dataclass
class Series:
    """One trace: ``uid`` is stable across updates (hash of run key, metric, split, granularity)."""

    uid: str
    key: str
    run_index: int
    run_name: str
    metric: str
    split: str
    per_step: bool
    x: list
    y: list


def curve_series(runs: Sequence[CurveData], *, metrics: Iterable[str] = METRICS, splits: Iterable[str] = SPLITS,
                 per_step: bool = False, x: str = "epoch") -> list[Series]:
    """Named series for each run × metric × split (plus per-step training series).

    Args:
        runs: the runs, in legend order.
        metrics: subset of ``("loss", "acc")``.
        splits: subset of ``("train", "val", "test")`` for the per-epoch curves.
        per_step: add the per-step (mini-batch) training curves.
        x: ``epoch`` (fractional for steps) or ``step``.

    Raises:
        ValueError: unknown metric, split or x.
    """
    metrics, splits = tuple(metrics), tuple(splits)
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"metric {m!r} is invalid: choose from {METRICS}")
    for s in splits:
        if s not in SPLITS:
            raise ValueError(f"split {s!r} is invalid: choose from {SPLITS}")
    if x not in ("epoch", "step"):
        raise ValueError(f"x={x!r} is invalid: choose 'epoch' or 'step'")
    out: list[Series] = []
    for i, run in enumerate(runs):
        key = run.key or run.name
        for m in metrics:
            if per_step and len(run.steps) and m in run.steps:
                st = run.steps.dropna(subset=[m])
                out.append(Series(_uid(key, m, "batch", "step"), key, i, run.name, m, "batch", True,
                                  st[x].tolist(), st[m].tolist()))
            for s in splits:
                col = f"{s}_{m}"
                ep = run.epochs
                if len(ep) and col in ep:
                    ep = ep.dropna(subset=[col])
                    out.append(Series(_uid(key, m, s, "epoch"), key, i, run.name, m, s, False,
                                      ep[x].tolist(), ep[col].tolist()))
                else:
                    out.append(Series(_uid(key, m, s, "epoch"), key, i, run.name, m, s, False, [], []))
    return out


def series_trace(s: Series, col: int, show_legend: bool = True) -> go.Scatter:
    """The scatter trace of one series in subplot column ``col`` (1-based)."""
    color = color_for(s.run_index)
    if s.per_step:
        return go.Scatter(x=s.x, y=s.y, uid=s.uid, meta={"run": s.key, "series": s.uid}, name=f"{s.run_name} (batches)", legendgroup=s.run_name,
                          mode="lines", line=dict(color=color, width=0.8), opacity=0.35,
                          showlegend=show_legend, xaxis=f"x{col if col > 1 else ''}",
                          yaxis=f"y{col if col > 1 else ''}",
                          hovertemplate="%{x:.2f}: %{y:.4f}<extra>" + s.run_name + " batch</extra>")
    return go.Scatter(x=s.x, y=s.y, uid=s.uid, meta={"run": s.key, "series": s.uid}, name=f"{s.run_name} · {_SPLIT_NAME[s.split]}",
                      legendgroup=s.run_name, mode="lines+markers" if len(s.x) <= 40 else "lines",
                      line=dict(color=color, dash=SPLIT_DASH[s.split]), marker=dict(size=4),
                      showlegend=show_legend, xaxis=f"x{col if col > 1 else ''}", yaxis=f"y{col if col > 1 else ''}",
                      hovertemplate="%{x}: %{y:.4f}<extra>" + f"{s.run_name} {_SPLIT_NAME[s.split]}</extra>")


def training_curves(runs: Sequence[CurveData], *, metrics: Iterable[str] = METRICS,
                    splits: Iterable[str] = SPLITS, per_step: bool = False, x: str = "epoch",
                    log_y: bool = False, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Loss and accuracy curves of several runs, overlaid (one subplot per metric).

    Colour identifies the run, dash the split (train solid, validation dashed,
    test dotted); per-step curves are thin and translucent.

    Args:
        runs: :class:`CurveData` list (``CurveData.from_run(load_run(path))``).
        metrics, splits, per_step, x: see :func:`curve_series`.
        log_y: logarithmic loss axis.
        theme: ``screen`` or ``paper``.
        title: figure title (default none for paper, "Training curves" for screen).

    Returns:
        A ``plotly.graph_objects.Figure``; every trace has a stable ``uid``.
    """
    metrics = tuple(metrics)
    paper = theme == "paper"
    fig = make_subplots(rows=1, cols=len(metrics), horizontal_spacing=0.12 if paper else 0.1,
                        subplot_titles=None if paper else [_METRIC_TITLE[m] for m in metrics])
    fig.update_layout(uirevision="curves")
    series = curve_series(runs, metrics=metrics, splits=splits, per_step=per_step, x=x)
    for s in series:
        col = metrics.index(s.metric) + 1
        tr = series_trace(s, col, show_legend=(col == 1) and not paper)
        if paper:  # print: thin lines, no markers; the legend is built separately below
            tr.update(mode="lines", line_width=1.0 if not s.per_step else 0.5, legendgroup=None)
        fig.add_trace(tr)
    if paper:
        # compact legend: one entry per run (colour) and one per split (dash), not runs × splits
        for i, run in enumerate(runs):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=run.name, showlegend=True,
                                     line=dict(color=color_for(i), width=1.5), hoverinfo="skip"))
        for sp in splits:
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=_SPLIT_NAME[sp], showlegend=True,
                                     line=dict(color="#555", width=1.0, dash=SPLIT_DASH[sp]), hoverinfo="skip"))
    for j, m in enumerate(metrics, start=1):
        fig.update_xaxes(title_text=x, row=1, col=j, title_standoff=2 if paper else None)
        fig.update_yaxes(title_text=("loss" if m == "loss" else "accuracy") if paper else None, row=1, col=j,
                         title_standoff=2 if paper else None)
        if m == "loss" and log_y:
            fig.update_yaxes(type="log", row=1, col=j)
    apply_theme(fig, theme)
    if title is None and not paper:
        title = "Training curves"
    if title:
        fig.update_layout(title=dict(text=title, x=0.01))
    if paper:
        fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0,
                                      font=dict(size=8), itemwidth=30),
                          margin=dict(l=40, r=8, t=44, b=36))
    else:
        fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0,
                                      groupclick="togglegroup"), height=480, margin=dict(b=120))
    return fig
