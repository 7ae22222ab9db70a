"""Figure builders for the Ch. 5 and Ch. 7 reproductions of [Andriushchenko 2024].

Ch. 5 is understanding SAM (:mod:`workbench.thesis.ch5`), Ch. 7 sharpness vs generalization
(:mod:`workbench.thesis.ch7`).

Pure builders: a reproduction's ``data`` in, a ``plotly.graph_objects.Figure`` out (``theme`` ``screen`` or
``paper``). Registered by name in :mod:`workbench.thesis.registry`:

* :func:`fig_diag_sam`          Figs 5.6/5.14: train/test loss vs iteration (log-log) at one ρ; final test loss vs ρ
* :func:`fig_switching`         Fig 5.15: test/train loss vs iteration with the switch, and loss along the interpolation
* :func:`fig_stochastic`        Fig 5.13: test/train loss vs iteration, full batch (dashed) vs stochastic (solid)
* :func:`fig_relu1d`            Fig 5.7: learned 1-D functions per seed, GD vs SAM, with the 12 points
* :func:`fig_digits_sam`        Figs 5.1/5.16 (+5.12): final test error per method (mean ± 95 % bootstrap CI over
                                seeds), test error and error on the noisy labels vs epoch
* :func:`fig_scale_sensitivity` Fig 7.1: adaptive sharpness vs weight scale (log-log), per ρ
* :func:`fig_diag_measures`     Fig 7.7: test loss vs each sharpness measure, τ in the subplot titles
* :func:`fig_mini_study`        mini Ch. 7 study: test error vs sharpness and sharpness vs learning rate

No UI imports.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..thesis.metrics import bootstrap_ci
from .theme import PALETTE, color_for
from .theme import finish_figure as _finish

__all__ = ["fig_diag_sam", "fig_switching", "fig_stochastic", "fig_relu1d", "fig_digits_sam",
           "fig_scale_sensitivity", "fig_diag_measures", "fig_mini_study", "bootstrap_ci"]

_METHOD_NAMES = {"erm": "ERM (GD)", "nsam": "n-SAM", "1sam": "1-SAM", "nsam_stoch": "stochastic n-SAM",
                 "random": "random perturbation"}
_METHOD_COLOR = {"erm": 0, "nsam": 1, "1sam": 2, "nsam_stoch": 3, "random": 4}




def _clip_log(v):
    return np.maximum(np.asarray(v, dtype=float), 1e-300)


def fig_diag_sam(data: dict, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Figs 5.6 + 5.14 from ``data = {"history", "final", "rho_curves", "beta_star_l1"}`` of ``fig5.6``."""
    h, final, rho = data["history"], data["final"], data["rho_curves"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=(f"Train loss (rho = {rho:g})", f"Test loss (rho = {rho:g})",
                                                         "Final test loss vs rho (Fig. 5.14)"))
    for m in ("erm", "nsam", "1sam"):
        sel = h[(h.method == m) & ((m == "erm") | np.isclose(h.rho, rho))]
        for col, key in ((1, "train_loss"), (2, "test_loss")):
            it = np.maximum(sel.iteration.to_numpy(), 1)
            fig.add_trace(go.Scatter(x=it, y=_clip_log(sel[key]), mode="lines", name=_METHOD_NAMES[m],
                                     legendgroup=m, showlegend=col == 1,
                                     line=dict(color=color_for(_METHOD_COLOR[m]))), row=1, col=col)
    for m in ("nsam", "1sam"):
        sel = final[final.method == m].sort_values("rho")
        fig.add_trace(go.Scatter(x=sel.rho, y=_clip_log(sel.test_loss), mode="lines+markers", name=_METHOD_NAMES[m],
                                 legendgroup=m, showlegend=False, line=dict(color=color_for(_METHOD_COLOR[m]))),
                      row=1, col=3)
    erm = float(final[final.method == "erm"].test_loss.iloc[0])
    fig.add_hline(y=erm, line=dict(color=color_for(0), dash="dash"), row=1, col=3)
    for c in (1, 2):
        fig.update_xaxes(type="log", title_text="iteration", row=1, col=c)
        fig.update_yaxes(type="log", row=1, col=c)
    fig.update_xaxes(type="log", title_text="rho", row=1, col=3)
    fig.update_yaxes(type="log", row=1, col=3)
    return _finish(fig, theme, title, "Diagonal linear nets: ERM vs n-SAM vs 1-SAM (Figs. 5.6, 5.14)")


def fig_switching(data: dict, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig 5.15 from ``data = {"history", "interpolation", "switch_at"}`` of ``fig5.15``."""
    h, interp, sw = data["history"], data["interpolation"], data["switch_at"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Test loss", "Train loss",
                                                         "Along (1-a) w_SAM + a w_GD"))
    for i, (name, sel) in enumerate(h.groupby("run", sort=False)):
        for col, key in ((1, "test_loss"), (2, "train_loss")):
            fig.add_trace(go.Scatter(x=np.maximum(sel.iteration, 1), y=_clip_log(sel[key]), mode="lines", name=name,
                                     legendgroup=name, showlegend=col == 1, line=dict(color=color_for(i))),
                          row=1, col=col)
    for col in (1, 2):
        fig.add_vline(x=sw, line=dict(color="gray", dash="dot"), row=1, col=col)
        fig.update_yaxes(type="log", row=1, col=col)
        fig.update_xaxes(title_text="iteration", row=1, col=col)
    if len(interp):
        for key, dash in (("train_loss", "solid"), ("test_loss", "dash")):
            fig.add_trace(go.Scatter(x=interp.a, y=_clip_log(interp[key]), mode="lines", name=f"interp. {key[:-5]}",
                                     line=dict(color=color_for(5), dash=dash)), row=1, col=3)
    fig.update_yaxes(type="log", row=1, col=3)
    fig.update_xaxes(title_text="a", row=1, col=3)
    return _finish(fig, theme, title, "Switching GD <-> 1-SAM and linear connectivity (Fig. 5.15)")


def fig_stochastic(data: dict, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig 5.13 from ``data = {"history"}`` of ``fig5.13`` (mean over seeds)."""
    h = data["history"]
    g = (h.groupby(["variant", "method", "stochastic", "iteration"], sort=False)[["train_loss", "test_loss"]]
         .mean().reset_index())
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Test loss", "Train loss"))
    for (variant, method, stoch), sel in g.groupby(["variant", "method", "stochastic"], sort=False):
        base = "nsam" if method == "nsam_stoch" else method
        for col, key in ((1, "test_loss"), (2, "train_loss")):
            fig.add_trace(go.Scatter(x=np.maximum(sel.iteration, 1), y=_clip_log(sel[key]), mode="lines", name=variant,
                                     legendgroup=variant, showlegend=col == 1,
                                     line=dict(color=color_for(_METHOD_COLOR[base]),
                                               dash="solid" if stoch else "dash")),
                          row=1, col=col)
    for col in (1, 2):
        fig.update_xaxes(type="log", title_text="iteration", row=1, col=col)
        fig.update_yaxes(type="log", row=1, col=col)
    return _finish(fig, theme, title, "Stochastic (solid) vs full-batch (dashed) ERM / n-SAM / 1-SAM (Fig. 5.13)")


def fig_relu1d(data: dict, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig 5.7 from ``data = {"curves", "points", "summary"}`` of ``fig5.7``."""
    curves, (px, py), summ = data["curves"], data["points"], data["summary"]
    methods = list(dict.fromkeys(curves.method))
    fig = make_subplots(rows=1, cols=len(methods), shared_yaxes=True, subplot_titles=[
        f"{m}: mean kinks {summ[summ.method == m].kinks.mean():.1f}" for m in methods])
    for c, m in enumerate(methods, start=1):
        for i, (seed, sel) in enumerate(curves[curves.method == m].groupby("seed")):
            fig.add_trace(go.Scatter(x=sel.x, y=sel.y_hat, mode="lines", name=f"seed {seed}", legendgroup=f"s{seed}",
                                     showlegend=c == 1, line=dict(color=color_for(i))), row=1, col=c)
        fig.add_trace(go.Scatter(x=px, y=py, mode="markers", name="data", showlegend=c == 1,
                                 marker=dict(color="black", size=8)), row=1, col=c)
        fig.update_xaxes(title_text="x", row=1, col=c)
    lo, hi = float(np.min(py)), float(np.max(py))
    fig.update_yaxes(range=[lo - 0.6 * (hi - lo), hi + 0.6 * (hi - lo)])
    return _finish(fig, theme, title, "1-D ReLU nets: GD vs SAM interpolants over seeds (Fig. 5.7)")


def _digits_colors(runs, labels) -> tuple[dict, dict]:
    """Colours and line dashes of the ``fig5.1`` / ``fig5.12`` methods.

    Baselines get distinct colours (dashed curves), m-SAM a blue scale, darkest for the smallest m (solid curves).
    """
    from plotly.colors import sample_colorscale

    base = {"erm": "#555555", "random": "#D55E00", "nsam": "#009E73"}
    kinds = runs.drop_duplicates("label").set_index("label").method
    sam = [lab for lab in labels if kinds.get(lab) == "msam"]
    shades = sample_colorscale("Blues", list(np.linspace(0.95, 0.45, len(sam)))) if len(sam) > 1 else [PALETTE[0]]
    colors = {lab: base.get(kinds.get(lab), color_for(i)) for i, lab in enumerate(labels)}
    colors.update(zip(sam, shades))
    dash = {lab: "solid" if lab in sam else "dash" for lab in labels}
    return colors, dash


def fig_digits_sam(data: dict, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Figs 5.1/5.16 (+ 5.12) analogue: m-SAM vs baselines on digits, final test error and curves.

    ``data`` of ``fig5.1`` or ``fig5.12``: ``runs`` (label, method, m, seed, test_error, ...) gives (a) final
    test error per method (mean, 95 % bootstrap CI, one dot per seed); ``curves`` (label, seed, epoch,
    test_error, train_error_noisy), when present, gives (b) test error vs epoch and, with label noise,
    (c) training error on the noisy labels vs epoch (means over seeds).
    """
    runs = data["runs"]
    curves = data.get("curves")
    has_curves = curves is not None and len(curves) > 0
    has_noisy = has_curves and bool(curves.train_error_noisy.notna().any())
    titles = ["(a) final test error (mean, 95% CI, seeds)"]
    if has_curves:
        titles.append("(b) test error vs epoch")
    if has_noisy:
        titles.append("(c) training error on the noisy labels")
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.08,
                        column_widths=[1.3] + [1.0] * (len(titles) - 1))
    labels, means, lo, hi = [], [], [], []
    for lab, sel in runs.groupby("label", sort=False):
        mu, a, b = bootstrap_ci(sel.test_error)
        labels.append(lab)
        means.append(mu)
        lo.append(mu - a)
        hi.append(b - mu)
    colors, dash = _digits_colors(runs, labels)
    fig.add_trace(go.Bar(x=labels, y=means, error_y=dict(type="data", array=hi, arrayminus=lo),
                         marker_color=[colors[lab] for lab in labels], name="mean test error", showlegend=False),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=runs.label, y=runs.test_error, mode="markers", name="seeds", showlegend=False,
                             marker=dict(color="white", size=6, line=dict(color="black", width=1))), row=1, col=1)
    fig.update_yaxes(title_text="test error", tickformat=".0%", rangemode="tozero", row=1, col=1)
    fig.update_xaxes(tickangle=-40, row=1, col=1)
    if has_curves:
        mean_curves = curves.groupby(["label", "epoch"], sort=False)[["test_error", "train_error_noisy"]].mean()
        for lab in labels:
            if lab not in mean_curves.index.get_level_values(0):
                continue
            c = mean_curves.loc[lab]
            for col, key in ((2, "test_error"), (3, "train_error_noisy")):
                if col == 3 and not has_noisy:
                    continue
                fig.add_trace(go.Scatter(x=c.index, y=c[key], mode="lines", name=lab, legendgroup=lab,
                                         showlegend=col == 2, line=dict(color=colors[lab], dash=dash[lab])),
                              row=1, col=col)
        fig.update_xaxes(title_text="epoch", row=1, col=2)
        fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=1, col=2)
        if has_noisy:
            fig.update_xaxes(title_text="epoch", row=1, col=3)
            fig.update_yaxes(tickformat=".0%", range=[0, 1.02], row=1, col=3)
    _finish(fig, theme, title, f"ERM vs random perturbation vs n-SAM vs m-SAM on {data.get('dataset', 'digits')}"
            + (f" ({data.get('label_noise', 0):.0%} label noise)" if has_noisy else ""), height=460)
    fig.update_layout(legend=dict(tracegroupgap=2))
    if theme == "paper":  # subplot titles at the paper font size; room for the nine legend entries
        fig.update_annotations(font_size=fig.layout.font.size + 1)
        fig.update_layout(height=300)
    return fig


def fig_scale_sensitivity(data: dict, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig 7.1 from ``data = {"curves": DataFrame(scale, rho, sharpness)}`` of ``fig7.1``."""
    c = data["curves"]
    fig = go.Figure()
    for i, (rho, sel) in enumerate(c.groupby("rho")):
        sel = sel[sel.sharpness > 0]  # exactly 0 = below float64 range (margins of hundreds of nats)
        fig.add_trace(go.Scatter(x=sel.scale, y=sel.sharpness, mode="lines+markers", name=f"rho = {rho:g}",
                                 line=dict(color=color_for(i))))
    fig.update_xaxes(type="log", title_text="weight scaling factor a")
    fig.update_yaxes(type="log", title_text="adaptive 1-sharpness")
    return _finish(fig, theme, title, "Adaptive sharpness vs weight scale, linear model at zero error (Fig. 7.1)")


def fig_diag_measures(data: dict, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Fig 7.7 from ``data = {"nets", "tau"}`` of ``fig7.7`` (colour = log10 learning rate)."""
    nets, tau = data["nets"], data["tau"]
    keys = ["l1", "trace", "trace_adaptive", "lmax_adaptive"]
    names = {"l1": "||u*v||_1", "trace": "tr Hessian", "trace_adaptive": "tr adaptive Hessian",
             "lmax_adaptive": "lambda_max adaptive Hessian"}
    tt = dict(zip(tau.measure, tau.tau)) if len(tau) else {}
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.16, horizontal_spacing=0.1,
                        subplot_titles=[f"{names[k]}: tau = {tt.get(k, float('nan')):+.2f}" for k in keys])
    for i, k in enumerate(keys):
        r, c = divmod(i, 2)
        fig.add_trace(go.Scatter(x=nets[k], y=nets.test_loss, mode="markers", showlegend=False,
                                 marker=dict(size=5, color=np.log10(nets.lr), colorscale="Viridis",
                                             showscale=i == 0, colorbar=dict(title="log10 lr"))), row=r + 1, col=c + 1)
        fig.update_xaxes(type="log", row=r + 1, col=c + 1)   # the subplot title names the measure
        fig.update_yaxes(type="log", title_text="test loss" if c == 0 else None, row=r + 1, col=c + 1)
    return _finish(fig, theme, title, "Diagonal linear nets: test loss vs sharpness measures (Fig. 7.7)")


def fig_mini_study(data: dict, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Mini Ch. 7 study from ``data = {"models", "tau"}`` of ``ch7.mini`` (colour = batch size)."""
    models, tau = data["models"], data["tau"]

    def t(pair):
        sel = tau[(tau.group == "all") & (tau.pair == pair)] if len(tau) else tau
        return float(sel.tau.iloc[0]) if len(sel) else float("nan")

    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        f"Test error vs sharpness (tau = {t('sharpness vs test error'):+.2f})",
        f"Sharpness vs learning rate (tau = {t('sharpness vs learning rate'):+.2f})"))
    for i, (bs, sel) in enumerate(models.groupby("batch_size")):
        fig.add_trace(go.Scatter(x=sel.sharpness, y=sel.test_error, mode="markers", name=f"batch {bs}",
                                 legendgroup=str(bs), marker=dict(color=color_for(i), size=8)), row=1, col=1)
        fig.add_trace(go.Scatter(x=sel.lr, y=sel.sharpness, mode="markers", name=f"batch {bs}", legendgroup=str(bs),
                                 showlegend=False, marker=dict(color=color_for(i), size=8)), row=1, col=2)
    fig.update_xaxes(type="log", title_text="adaptive worst-case l-inf sharpness", row=1, col=1)
    fig.update_yaxes(title_text="test error", tickformat=".1%", row=1, col=1)
    fig.update_xaxes(type="log", title_text="learning rate", row=1, col=2)
    fig.update_yaxes(type="log", title_text="sharpness", row=1, col=2)
    return _finish(fig, theme, title, "Mini Ch. 7 study on digits: sharpness vs test error and learning rate")
