"""Figure builders for studies (sweeps): plain data / pandas in, plotly Figure out.

The inputs are the tables of :mod:`workbench.sweeps.results`: ``trials_table``
(one row per trial: ``status``, ``seed``, one column per swept field, metrics)
and ``summarize`` (one row per configuration: ``<metric>_mean``, ``<metric>_se``,
``<metric>_n``). Builders are pure, so the live sweep panel, the notebook and a
paper figure draw the same thing.

* :func:`metric_vs_param_figure`     mean ± standard error over seeds vs a hyperparameter, one line per
  group ([Murphy 2025, Tables 4.3-4.4] report mean ± s.e. over 5 seeds)
* :func:`parallel_coordinates_figure` every trial as a line through its hyperparameters, coloured by a metric
* :func:`ratio_histogram_figure`     ratios of a metric to a matched baseline trial, one histogram per
  hyperparameter value (the general form of [Murphy 2025, Fig. 4.1]: poison / SAM validation accuracy
  per value of each poisoning hyperparameter)
* :func:`best_so_far_figure`         objective per finished trial and the running best
* :func:`matched_ratios`             the ratios behind :func:`ratio_histogram_figure`, as a table

No UI imports.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .theme import color_for
from .theme import finish_figure as _finish

__all__ = ["metric_vs_param_figure", "parallel_coordinates_figure", "ratio_histogram_figure", "best_so_far_figure",
           "matched_ratios"]




def _need(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: column(s) {missing} not in the table; it has {list(df.columns)}")


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _percent(metric: str, percent: bool | None) -> bool:
    return metric.endswith("acc") if percent is None else bool(percent)


def _label(metric: str, percent: bool) -> str:
    return metric + (" (%)" if percent else "")


def _fmt_value(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def _by_status(table: pd.DataFrame, statuses: Sequence[str] | None) -> pd.DataFrame:
    if statuses is not None and "status" in table.columns:
        return table[table["status"].isin(list(statuses))]
    return table


# ------------------------------------------------------------------ mean ± s.e.
def metric_vs_param_figure(summary: pd.DataFrame, x: str, metric: str, group: str | Sequence[str] | None = None, *,
                           percent: bool | None = None, log_x: bool = False, theme: str = "screen",
                           title: str | None = None) -> go.Figure:
    """Mean of ``metric`` over seeds vs the hyperparameter ``x``, error bars = standard error.

    Args:
        summary: :func:`workbench.sweeps.summarize` output: one row per configuration with
            the columns ``x``, ``group`` (if given), ``<metric>_mean``, ``<metric>_se`` and
            optionally ``<metric>_n`` (seeds per configuration, shown on hover). ``se`` is NaN
            for a single seed; it is drawn as no bar.
        x: the swept field on the x axis (numbers are sorted; text values keep their order
            and give a categorical axis).
        metric: the summarized metric (``test_acc`` reads ``test_acc_mean``/``test_acc_se``).
        group: column(s) giving one line per value (e.g. ``optim.name``); several columns are
            combined into one label (``sam · 0.9``). None: one line.
        percent: multiply by 100 (default: True for ``*acc`` metrics).
        log_x: logarithmic x axis (learning rates, ρ).
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).

    Returns:
        A figure with one ``Scatter`` (lines+markers, ``error_y``) per group value.
    """
    mean_c, se_c, n_c = f"{metric}_mean", f"{metric}_se", f"{metric}_n"
    groups = [] if group is None else ([group] if isinstance(group, str) else list(group))
    _need(summary, [x, mean_c, se_c] + groups, "metric_vs_param_figure")
    pct = _percent(metric, percent)
    k = 100.0 if pct else 1.0
    df = summary.reset_index(drop=True)
    numeric_x = _is_numeric(df[x])
    if groups:
        keys = df[groups].astype(str).agg(" · ".join, axis=1)
    else:
        keys = pd.Series([metric] * len(df), index=df.index)
    fig = go.Figure()
    for i, key in enumerate(dict.fromkeys(keys.tolist())):
        sub = df[keys == key]
        if numeric_x:
            sub = sub.sort_values(x)
        mean = sub[mean_c].astype(float).to_numpy() * k
        se = sub[se_c].astype(float).to_numpy() * k
        n = sub[n_c].to_numpy() if n_c in sub else np.full(len(sub), np.nan)
        custom = np.column_stack([np.nan_to_num(se, nan=0.0), n])
        gname = " · ".join(groups) if groups else ""
        fig.add_trace(go.Scatter(
            x=sub[x].to_numpy() if numeric_x else sub[x].astype(str).to_numpy(), y=mean, mode="lines+markers",
            name=str(key), line=dict(color=color_for(i)), marker=dict(size=8),
            error_y=dict(type="data", array=np.nan_to_num(se, nan=0.0), visible=True, thickness=1.5, width=5),
            customdata=custom,
            hovertemplate=(f"{x} = %{{x}}<br>{metric}: %{{y:.4g}} ± %{{customdata[0]:.2g}} (s.e.)"
                           f"<br>n = %{{customdata[1]}} seeds<extra>{gname + ' = ' if gname else ''}{key}</extra>")))
    fig.update_xaxes(title_text=x, type="log" if log_x else ("linear" if numeric_x else "category"))
    if numeric_x:
        uniq = np.unique(df[x].astype(float).dropna().to_numpy())
        if log_x:
            uniq = uniq[uniq > 0]
        if 0 < len(uniq) <= 12:  # ticks at the swept values (no minor log ticks)
            fig.update_xaxes(tickvals=uniq, ticktext=[_fmt_value(u) for u in uniq])
    fig.update_yaxes(title_text=f"{_label(metric, pct)}, mean ± s.e.")
    if groups:
        fig.update_layout(legend_title_text=" · ".join(groups))
    return _finish(fig, theme, title, f"{metric} vs {x} (mean ± standard error over seeds)")


# ------------------------------------------------------------ parallel coordinates
def parallel_coordinates_figure(table: pd.DataFrame, params: Sequence[str], metric: str, *,
                                statuses: Sequence[str] | None = ("finished",), percent: bool | None = None,
                                log: Sequence[str] = (), colorscale: str = "Viridis", theme: str = "screen",
                                title: str | None = None) -> go.Figure:
    """Every trial as a line through its hyperparameters and ``metric``, coloured by the metric.

    Args:
        table: :func:`workbench.sweeps.trials_table` output (one row per trial) or any frame
            with the ``params`` and ``metric`` columns. Rows with a NaN metric are dropped.
        params: the axes, in order (swept fields; ``seed`` works too).
            Numeric columns are drawn on a numeric axis (ticks at the values when there are
            at most 12 distinct ones); other columns are mapped to integer positions
            0, 1, ... in order of appearance, labelled with their values.
        metric: the last axis and the line colour.
        statuses: trial statuses drawn (None: all rows).
        percent: metric in % (default: True for ``*acc``).
        log: numeric params drawn as log10 (ticks labelled with the values).
        colorscale: plotly colour scale of the metric (default ``"Viridis"``).
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).

    Returns:
        A figure with one ``Parcoords`` trace: ``len(params) + 1`` dimensions.
    """
    params = list(params)
    _need(table, params + [metric], "parallel_coordinates_figure")
    pct = _percent(metric, percent)
    t = _by_status(table, statuses)
    t = t[t[metric].notna()].reset_index(drop=True)
    dims = []
    for p in params:
        s = t[p]
        if _is_numeric(s) and s.notna().all():
            vals = s.astype(float).to_numpy()
            uniq = np.unique(vals)
            is_log = p in log
            if is_log and (vals <= 0).any():
                raise ValueError(f"parallel_coordinates_figure: {p} has values <= 0; it cannot be drawn as log10")
            shown = np.log10(vals) if is_log else vals
            d = dict(label=f"{p} (log)" if is_log else p, values=shown)
            if len(uniq) <= 12:
                d.update(tickvals=np.log10(uniq) if is_log else uniq, ticktext=[_fmt_value(u) for u in uniq])
            if len(uniq) == 1:
                c = float(shown[0])
                d["range"] = [c - 0.5, c + 0.5] if not is_log else [c - 0.1, c + 0.1]
            dims.append(d)
        else:
            labels = s.astype(str)
            cats = list(dict.fromkeys(labels.tolist()))
            code = {c: i for i, c in enumerate(cats)}
            dims.append(dict(label=p, values=[code[c] for c in labels], tickvals=list(range(len(cats))),
                             ticktext=cats, range=[-0.25, len(cats) - 0.75] if len(cats) > 1 else [-0.5, 0.5]))
    m = t[metric].astype(float).to_numpy() * (100.0 if pct else 1.0)
    dims.append(dict(label=_label(metric, pct), values=m, tickformat=".4~g"))
    fig = go.Figure(go.Parcoords(
        dimensions=dims,
        line=dict(color=m, colorscale=colorscale, showscale=True,
                  colorbar=dict(title=dict(text=_label(metric, pct)), thickness=12))))
    fig = _finish(fig, theme, title, f"{metric} of {len(t)} trials by hyperparameter")
    # the axis labels sit above the plot: leave room for them under the title
    top = 90 if (title or theme == "screen") else 45
    fig.update_layout(margin=dict(t=top, l=max(fig.layout.margin.l or 0, 70), r=max(fig.layout.margin.r or 0, 40)))
    return fig


# ------------------------------------------------------------------ ratios
def _matches(s: pd.Series, v: Any) -> pd.Series:
    if isinstance(v, float) and _is_numeric(s):
        return pd.Series(np.isclose(s.astype(float), v, rtol=1e-9, atol=0.0), index=s.index)
    return s == v


def matched_ratios(table: pd.DataFrame, metric: str, baseline: Mapping[str, Any],
                   match_on: Sequence[str] = ("seed",), *,
                   statuses: Sequence[str] | None = ("finished",)) -> pd.DataFrame:
    """Each non-baseline trial's ``metric`` divided by that of the baseline trial with the same ``match_on`` values.

    Args:
        table: one row per trial (:func:`workbench.sweeps.trials_table`).
        metric: the metric compared.
        baseline: ``{column: value}`` selecting the baseline trials (e.g. ``{"optim.name": "sgd"}``).
        match_on: columns a trial and its baseline share (``seed``; add swept fields the
            baseline also varies, e.g. ``("seed", "optim.lr")``). ``()``: one baseline trial for all.
        statuses: trial statuses used (None: all rows).

    Returns:
        The non-baseline rows that have a baseline, with ``baseline_<metric>`` and ``ratio`` columns.

    Raises:
        ValueError: a column is missing, no trial matches ``baseline``, or several baseline
            trials share the same ``match_on`` values (the message says which columns to add).
    """
    match_on = list(match_on)
    _need(table, list(baseline) + match_on + [metric], "matched_ratios")
    t = _by_status(table, statuses).reset_index(drop=True)
    is_base = pd.Series(True, index=t.index)
    for k, v in baseline.items():
        is_base &= _matches(t[k], v)
    base, rest = t[is_base], t[~is_base]
    if base.empty:
        raise ValueError(f"no trial matches the baseline {dict(baseline)}")
    dup = base.duplicated(subset=match_on, keep=False) if match_on else pd.Series(len(base) > 1, index=base.index)
    if dup.any():
        varying = [c for c in t.columns if c not in match_on and c not in baseline and c not in
                   ("trial_id", "status", "run_path", "error", "objective") and c in base and
                   base[c].nunique(dropna=False) > 1 and not c.endswith(("_acc", "_loss"))]
        raise ValueError(f"the baseline {dict(baseline)} matches several trials with the same {match_on} values; "
                         f"add the fields that tell them apart to match_on (e.g. {varying[:3]})")
    col = f"baseline_{metric}"
    if match_on:
        b = base[match_on + [metric]].rename(columns={metric: col})
        out = rest.merge(b, on=match_on, how="inner")
    else:
        out = rest.assign(**{col: float(base[metric].iloc[0])})
    out["ratio"] = out[metric].astype(float) / out[col].astype(float)
    return out


def ratio_histogram_figure(table: pd.DataFrame, *, param: str, metric: str, baseline: Mapping[str, Any],
                           match_on: Sequence[str] = ("seed",), bins: int = 20,
                           statuses: Sequence[str] | None = ("finished",), barmode: str = "overlay",
                           theme: str = "screen", title: str | None = None) -> go.Figure:
    """Histograms of metric ratios to a matched baseline, one per value of ``param`` (overlaid).

    The general form of [Murphy 2025, Fig. 4.1] (ratios of a poison run's
    validation accuracy to that of the SAM run it was made from, one histogram per
    value of each poisoning hyperparameter; > 1: the poison run is better). Here
    every trial is divided by the baseline trial with the same ``match_on`` values
    (:func:`matched_ratios`), e.g. SAM / SGD test accuracy per seed and learning rate.

    Args:
        table: one row per trial (:func:`workbench.sweeps.trials_table`).
        param: the column whose values get one histogram each.
        metric: the metric compared.
        baseline: ``{column: value}`` selecting the baseline trials.
        match_on: columns a trial shares with its baseline (see :func:`matched_ratios`).
        bins: number of equal-width bins over the range of all ratios (and 1).
        statuses: trial statuses used (None: all rows).
        barmode: ``overlay`` (translucent histograms on top of each other, as in Fig. 4.1) or
            ``group`` (the values' bars side by side within each bin: clearer for a few trials).
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).

    Returns:
        One ``Histogram`` per value of ``param`` (its ``x`` are the ratios; shared bins,
        overlaid) and a dashed vertical line at ratio 1.
    """
    if barmode not in ("overlay", "group"):
        raise ValueError(f"barmode={barmode!r} is invalid: choose 'overlay' or 'group'")
    _need(table, [param], "ratio_histogram_figure")
    r = matched_ratios(table, metric, baseline, match_on, statuses=statuses)
    ratios = r["ratio"].to_numpy(dtype=float)
    finite = ratios[np.isfinite(ratios)]
    lo = min(float(finite.min()), 1.0) if finite.size else 0.9
    hi = max(float(finite.max()), 1.0) if finite.size else 1.1
    if hi - lo < 1e-9:
        lo, hi = lo - 0.01, hi + 0.01
    size = (hi - lo) / max(int(bins), 1)
    values = list(dict.fromkeys(r[param].tolist()))
    if _is_numeric(r[param]):
        values = sorted(values)
    fig = go.Figure()
    for i, v in enumerate(values):
        x = r.loc[_matches(r[param], v), "ratio"].to_numpy(dtype=float)
        mean = float(np.nanmean(x)) if x.size else float("nan")
        fig.add_trace(go.Histogram(x=x, name=f"{_fmt_value(v)} (n={x.size}, mean {mean:.3f})",
                                   xbins=dict(start=lo, end=hi + size * 1e-6, size=size), autobinx=False,
                                   marker=dict(color=color_for(i), line=dict(width=0.5, color="white")),
                                   opacity=0.6 if barmode == "overlay" else 0.9,
                                   meta={"value": v},
                                   hovertemplate=f"{param} = {_fmt_value(v)}<br>ratio %{{x}}: %{{y}} trial(s)"
                                                 "<extra></extra>"))
    fig.update_layout(barmode=barmode, bargroupgap=0.05, legend_title_text=param)
    fig.add_vline(x=1.0, line=dict(color="#444", width=1.2, dash="dash"))
    base_txt = ", ".join(f"{k}={_fmt_value(v)}" for k, v in baseline.items())
    fig.update_xaxes(title_text=f"{metric} / {metric} of the baseline trial")
    fig.update_xaxes(range=[lo - size, hi + size])
    edges = np.linspace(lo, hi, max(int(bins), 1) + 1)
    top = max([int(np.histogram(np.asarray(tr.x, dtype=float), bins=edges)[0].max(initial=0)) for tr in fig.data],
              default=0)
    fig.update_yaxes(title_text="trials", rangemode="tozero", dtick=1 if top <= 10 else None)
    matched = f"; matched on {', '.join(match_on)}" if match_on else ""
    return _finish(fig, theme, title, f"{metric} / baseline ({base_txt}{matched}), by {param}")


# ------------------------------------------------------------------ progress
def best_so_far_figure(values: Sequence[float | None], *, mode: str = "max", metric: str = "objective",
                       total: int | None = None, theme: str = "screen", title: str | None = None) -> go.Figure:
    """The objective of each finished trial (markers) and the best so far (step line).

    Args:
        values: objective per finished trial, in the order they ended; None/NaN (failed
            trials) are drawn as gaps and ignored by the running best.
        mode: ``max`` or ``min`` (which value is "best").
        metric: axis label.
        total: expected number of trials (fixes the x range while a study runs).
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).

    Returns:
        Two ``Scatter`` traces: ``trial`` (markers, x = 1..n) and ``best so far``
        (the running max or min).
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode={mode!r} is invalid: choose 'max' or 'min'")
    y = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    x = np.arange(1, len(y) + 1)
    acc = np.fmax.accumulate if mode == "max" else np.fmin.accumulate
    best = acc(y) if len(y) else y
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name="trial", marker=dict(size=7, color=color_for(0)),
                             hovertemplate=f"trial %{{x}}: {metric} %{{y:.4g}}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=best, mode="lines", name="best so far", line=dict(color=color_for(1), shape="hv"),
                             hovertemplate="best after %{x} trials: %{y:.4g}<extra></extra>"))
    fig.update_xaxes(title_text="finished trial", rangemode="tozero")
    if total:
        fig.update_xaxes(range=[0.5, max(int(total), len(y)) + 0.5])
    fig.update_yaxes(title_text=metric)
    finite = np.isfinite(best)
    default = f"{metric}: best so far"
    if finite.any():
        b = best[finite][-1]
        at = int(np.nanargmax(y) if mode == "max" else np.nanargmin(y)) + 1
        default += f" {b:.4g} (trial {at}; {len(y)}" + (f"/{total}" if total else "") + " done)"
    return _finish(fig, theme, title, default)
