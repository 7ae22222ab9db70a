"""Figure builders for the analysis suite (plain data in, plotly Figure out).

Every builder takes plain arrays / dicts keyed by a run label, so the same
builder draws a live panel (partial data), a stored artifact and a paper
figure. Builders are pure: the same data gives the same figure.

* :func:`eigenvalues_figure`   top-k Hessian eigenvalues per run (and live Ritz values)
* :func:`density_figure`       eigenvalue spectral density, log-scale density axis
* :func:`interpolation_figure` 1-D linear interpolation: loss and accuracy, train and test
  ([Murphy 2025, Eq. 2.5, Figs. 2.2 and 5.10])
* :func:`slice_figure`         1-D slices along directions around a minimum
* :func:`plane_figure`         2-D plane as contour or surface
* :func:`cosine_histogram_figure` gradient-cosine histograms, several runs overlaid,
  an epoch slider ([Murphy 2025, Figs. 5.5-5.8])
* :func:`sparsity_figure`      feature sparsity coefficient per layer vs epoch ([Andriushchenko 2024, Ch. 6])
* :func:`pca_figure`           2-D PCA scatter coloured by class or any label ([Yang 2022, Fig. 1b])
* :func:`sharpness_figure`     sharpness vs rho
* :func:`corruption_figure`    loss increase vs corruption size n, gradient-based vs random parameter
  corruption ([Sun 2020, Fig. 3]); :func:`corruption_result_figure` / :func:`corruption_progress_figure`
  are the builders the analysis registry names for ``analyze("corruption", ...)``
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .theme import SPLIT_DASH, color_for
from .theme import finish_figure as _finish

__all__ = ["eigenvalues_figure", "density_figure", "interpolation_figure", "slice_figure", "plane_figure",
           "cosine_histogram_figure", "sparsity_figure", "pca_figure", "sharpness_figure", "metric_vs_epoch_figure",
           "corruption_figure", "corruption_result_figure", "corruption_progress_figure"]


def _arr(v) -> np.ndarray:
    if v is None:
        return np.array([])
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=float)




def eigenvalues_figure(runs: Mapping[str, Sequence[float]], *, log_y: bool = False, theme: str = "screen",
                       title: str | None = None, subtitle: Mapping[str, str] | None = None) -> go.Figure:
    """Top-k Hessian eigenvalues (sorted, largest first) of several runs as markers+lines.

    Args:
        runs: ``{label: eigenvalues}``; partial lists are fine (live Ritz values).
        log_y: logarithmic eigenvalue axis (only positive values are drawn then).
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).
        subtitle: optional per-run hover text (e.g. "2048 train examples, 31 HVPs").
    """
    fig = go.Figure()
    for i, (name, vals) in enumerate(runs.items()):
        v = np.sort(_arr(vals))[::-1]
        hover = (subtitle or {}).get(name, "")
        fig.add_trace(go.Scatter(x=np.arange(1, len(v) + 1), y=v, mode="lines+markers", name=name,
                                 line=dict(color=color_for(i)), marker=dict(size=8),
                                 hovertemplate="λ_%{x} = %{y:.5g}<extra>" + f"{name} {hover}</extra>"))
    fig.update_xaxes(title_text="index i (λ₁ ≥ λ₂ ≥ …)", dtick=1)
    fig.update_yaxes(title_text="Hessian eigenvalue λᵢ", type="log" if log_y else "linear")
    return _finish(fig, theme, title, "Top Hessian eigenvalues")


def density_figure(runs: Mapping[str, tuple], *, theme: str = "screen", title: str | None = None,
                   floor: float = 1e-8) -> go.Figure:
    """Eigenvalue spectral density (stochastic Lanczos quadrature), density on a log axis.

    Args:
        runs: ``{label: (grid, density)}`` with ``density`` integrating to 1 over ``grid``.
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).
        floor: densities below this are clipped for the log axis.
    """
    fig = go.Figure()
    for i, (name, (grid, dens)) in enumerate(runs.items()):
        fig.add_trace(go.Scatter(x=_arr(grid), y=np.maximum(_arr(dens), floor), mode="lines", name=name,
                                 line=dict(color=color_for(i))))
    fig.update_xaxes(title_text="eigenvalue λ")
    fig.update_yaxes(title_text="density (log scale)", type="log", exponentformat="power")
    return _finish(fig, theme, title, "Hessian eigenvalue spectral density")


def interpolation_figure(alphas, loss: Mapping[str, Sequence[float]], acc: Mapping[str, Sequence[float]] | None = None,
                         *, labels: tuple[str, str] = ("θ₁", "θ₂"), log_y: bool = False, theme: str = "screen",
                         title: str | None = None, n_total: int | None = None) -> go.Figure:
    """1-D linear interpolation θ(α) = αθ₁ + (1−α)θ₂ ([Murphy 2025, Eq. 2.5]): loss (and accuracy) vs α.

    Args:
        alphas: the α grid (points computed so far when drawn live).
        loss: ``{split: values}`` (train solid, validation dashed, test dotted).
        acc: same for accuracy (second subplot) or None.
        labels: names of θ₁ (at α = 1) and θ₂ (at α = 0), given in the title; the
            two points are marked by dotted lines.
        log_y: logarithmic loss axis.
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).
        n_total: total number of grid points (live progress in the title).
    """
    cols = 2 if acc else 1
    fig = make_subplots(rows=1, cols=cols, horizontal_spacing=0.1,
                        subplot_titles=["loss", "accuracy"][:cols] if theme == "screen" else None)
    a = _arr(alphas)
    for j, (_metric, data) in enumerate([("loss", loss), ("accuracy", acc)][:cols], start=1):
        for i, (split, vals) in enumerate(data.items()):
            v = _arr(vals)
            fig.add_trace(go.Scatter(x=a[:len(v)], y=v, mode="lines+markers", name=split, legendgroup=split,
                                     showlegend=j == 1, marker=dict(size=5),
                                     line=dict(color=color_for(i), dash=SPLIT_DASH.get(split, "solid"))),
                          row=1, col=j)
        for x0, lab in ((1.0, "θ₁"), (0.0, "θ₂")):
            fig.add_vline(x=x0, line=dict(color="#999", width=1, dash="dot"), row=1, col=j)
            fig.add_annotation(x=x0, y=0.0, yref=f"y{'' if j == 1 else j} domain", xref=f"x{'' if j == 1 else j}",
                               text=lab, showarrow=False, yanchor="bottom", xanchor="left", font=dict(size=12))
        fig.update_xaxes(title_text="α", row=1, col=j)
    fig.update_yaxes(type="log" if log_y else "linear", row=1, col=1)
    default = f"θ(α) = αθ₁ + (1−α)θ₂ with θ₁ = {labels[0]}, θ₂ = {labels[1]}"
    if n_total:
        default += f" ({len(a) if len(a) < n_total else n_total}/{n_total} points)"
    return _finish(fig, theme, title, default)


def slice_figure(alphas, runs: Mapping[str, Sequence[float]], *, metric: str = "loss", theme: str = "screen",
                 title: str | None = None, log_y: bool = False) -> go.Figure:
    """1-D slices L(θ + α d) around minima, several runs or directions overlaid."""
    fig = go.Figure()
    a = _arr(alphas)
    for i, (name, vals) in enumerate(runs.items()):
        v = _arr(vals)
        fig.add_trace(go.Scatter(x=a[:len(v)], y=v, mode="lines+markers", name=name, marker=dict(size=4),
                                 line=dict(color=color_for(i))))
    fig.update_xaxes(title_text="α (step along the direction)")
    fig.update_yaxes(title_text=metric, type="log" if log_y else "linear")
    return _finish(fig, theme, title, f"1-D {metric} slices")


def plane_figure(alphas, betas, z, *, kind: str = "contour", metric: str = "loss", theme: str = "screen",
                 title: str | None = None, log_z: bool = False) -> go.Figure:
    """2-D plane L(θ + α d₁ + β d₂) as a contour map or a 3-D surface.

    Args:
        alphas: coefficients of d₁ (x axis).
        betas: coefficients of d₂ (y axis).
        z: grid ``[len(betas), len(alphas)]``; NaN marks points not computed yet.
        kind: ``contour`` or ``surface``.
        metric: what ``z`` holds (colour-bar and axis title), e.g. ``"loss"``.
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).
        log_z: draw log10 of the values.
    """
    if kind not in ("contour", "surface"):
        raise ValueError(f"kind={kind!r} is invalid: choose 'contour' or 'surface'")
    Z = _arr(z)
    if log_z:
        Z = np.log10(np.maximum(Z, 1e-12))
    label = f"log10 {metric}" if log_z else metric
    if kind == "contour":
        fig = go.Figure(go.Contour(x=_arr(alphas), y=_arr(betas), z=Z, colorscale="Viridis", ncontours=30,
                                   colorbar=dict(title=label), contours=dict(showlabels=True)))
        fig.add_trace(go.Scatter(x=[0], y=[0], mode="markers", marker=dict(symbol="x", size=10, color="white"),
                                 name="θ", showlegend=False))
        fig.update_xaxes(title_text="α (direction 1)")
        fig.update_yaxes(title_text="β (direction 2)", scaleanchor="x", scaleratio=1)
    else:
        fig = go.Figure(go.Surface(x=_arr(alphas), y=_arr(betas), z=Z, colorscale="Viridis",
                                   colorbar=dict(title=label)))
        fig.update_layout(scene=dict(xaxis_title="α", yaxis_title="β", zaxis_title=label))
    fig = _finish(fig, theme, title, f"2-D {metric} landscape")
    if kind == "contour":
        fig.update_layout(height=520)
    return fig


def cosine_histogram_figure(runs: Mapping[str, Mapping[int, np.ndarray]], *, bins: int = 40,
                            value_range: tuple[float, float] = (-1.0, 1.0), xlabel: str = "cos(g, g′)",
                            epoch: int | None = None, slider: bool = True, theme: str = "screen",
                            title: str | None = None) -> go.Figure:
    """Histograms of cosine values, several runs overlaid, one frame per epoch with a slider.

    Args:
        runs: ``{label: {epoch: cosine values}}``.
        bins: number of equal histogram bins over ``value_range``.
        value_range: ``(low, high)`` of the histogram (and of the x axis).
        xlabel: what the cosines compare (e.g. ``cos(g, g′)`` for SAM vs SGD gradients,
            ``cos(∇ℓᵢ, class mean)`` for per-example gradients).
        epoch: the epoch shown (default the last one).
        slider: add animation frames and an epoch slider (static figures; a live
            ``FigureWidget`` cannot play frames, so live panels pass ``False`` and
            select ``epoch`` with their own widget).
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).
    """
    epochs = sorted({e for per in runs.values() for e in per})
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    centers = 0.5 * (edges[1:] + edges[:-1])

    def bars(epoch):
        out = []
        for i, (name, per) in enumerate(runs.items()):
            vals = _arr(per.get(epoch, []))
            counts, _ = np.histogram(vals, bins=edges)
            frac = counts / max(counts.sum(), 1)
            out.append(go.Bar(x=centers, y=frac, name=name, marker=dict(color=color_for(i)), opacity=0.6,
                              width=(edges[1] - edges[0]),
                              hovertemplate="%{x:.3f}: %{y:.3f}<extra>"
                              + f"{name}, epoch {epoch}, n={len(vals)}</extra>"))
        return out

    first = epoch if epoch is not None else (epochs[-1] if epochs else None)
    fig = go.Figure(data=bars(first) if first is not None else [])
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text=xlabel, range=list(value_range))
    fig.update_yaxes(title_text="fraction")
    if slider and len(epochs) > 1:
        fig.frames = [go.Frame(data=bars(e), name=str(e)) for e in epochs]
        fig.update_layout(sliders=[dict(active=epochs.index(first) if first in epochs else len(epochs) - 1,
                                        currentvalue=dict(prefix="epoch "), pad=dict(t=40),
                                        steps=[dict(label=str(e), method="animate",
                                                    args=[[str(e)], dict(mode="immediate", frame=dict(duration=0),
                                                                         transition=dict(duration=0))])
                                               for e in epochs])])
    return _finish(fig, theme, title, f"Histogram of {xlabel}" + (f" (epoch {first})" if first is not None else ""))


def sparsity_figure(runs: Mapping[str, Mapping[str, tuple]], *, metric: str = "feature sparsity coefficient",
                    theme: str = "screen", title: str | None = None) -> go.Figure:
    """A per-layer feature statistic vs epoch, several runs overlaid.

    Args:
        runs: ``{run label: {layer name: (epochs, values)}}``; colour = run, dash cycles over layers.
        metric: name of the statistic (y-axis title).
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).
    """
    dashes = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
    fig = go.Figure()
    for i, (name, layers) in enumerate(runs.items()):
        for j, (layer, (ep, vals)) in enumerate(layers.items()):
            fig.add_trace(go.Scatter(x=_arr(ep), y=_arr(vals), mode="lines+markers", name=f"{name} · {layer}",
                                     legendgroup=name, line=dict(color=color_for(i), dash=dashes[j % len(dashes)]),
                                     marker=dict(size=5)))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text=metric, rangemode="tozero")
    return _finish(fig, theme, title, f"{metric.capitalize()} per layer")


def pca_figure(coords, *, labels: Sequence | None = None, groups: Sequence | None = None,
               explained: Sequence[float] | None = None, index: Sequence[int] | None = None,
               theme: str = "screen", title: str | None = None, max_points: int = 20000) -> go.Figure:
    """2-D PCA scatter coloured by ``groups`` (e.g. clean / poison / effective poison) or by class ``labels``.

    Args:
        coords: ``[N, >=2]`` projected points.
        labels: class per point (colour when ``groups`` is None; shown on hover).
        groups: any user label per point (colour; legend entries).
        explained: explained-variance ratios (axis titles).
        index: dataset index per point (hover).
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).
        max_points: at most this many points are drawn (a seeded subsample beyond).
    """
    c = _arr(coords)
    if c.ndim != 2 or c.shape[1] < 2:
        raise ValueError(f"coords must have shape [N, >=2], got {c.shape}")
    n = c.shape[0]
    keep = np.arange(n) if n <= max_points else np.random.default_rng(0).choice(n, max_points, replace=False)
    colour_by = groups if groups is not None else labels
    cats = np.asarray(colour_by)[keep] if colour_by is not None else np.array(["all"] * len(keep))
    lab = np.asarray(labels)[keep] if labels is not None else None
    idx = np.asarray(index)[keep] if index is not None else keep
    fig = go.Figure()
    for i, cat in enumerate(dict.fromkeys(cats.tolist())):
        m = cats == cat
        hover = [f"index {int(k)}" + (f", class {l}" if lab is not None else "")
                 for k, l in zip(idx[m], lab[m] if lab is not None else [None] * int(m.sum()))]
        fig.add_trace(go.Scattergl(x=c[keep][m, 0], y=c[keep][m, 1], mode="markers", name=str(cat),
                                   marker=dict(size=5, color=color_for(i), opacity=0.75), text=hover,
                                   hovertemplate="%{text}<extra>" + str(cat) + "</extra>"))
    ev = list(explained) if explained is not None else []
    fig.update_xaxes(title_text="PC 1" + (f" ({100 * ev[0]:.1f} % var.)" if len(ev) > 0 else ""))
    fig.update_yaxes(title_text="PC 2" + (f" ({100 * ev[1]:.1f} % var.)" if len(ev) > 1 else ""))
    return _finish(fig, theme, title, "PCA projection")


def sharpness_figure(runs: Mapping[str, tuple], *, ylabel: str = "sharpness (loss increase)",
                     theme: str = "screen", title: str | None = None, log_x: bool = False) -> go.Figure:
    """Sharpness vs ρ, several runs overlaid.

    Args:
        runs: ``{label: (rhos, values)}`` or ``{label: (rhos, values, errors)}`` (error bars).
        ylabel: y-axis title.
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).
        log_x: logarithmic ρ axis.
    """
    fig = go.Figure()
    for i, (name, data) in enumerate(runs.items()):
        rhos, vals = _arr(data[0]), _arr(data[1])
        err = dict(type="data", array=_arr(data[2]), visible=True) if len(data) > 2 and data[2] is not None else None
        fig.add_trace(go.Scatter(x=rhos[:len(vals)], y=vals, mode="lines+markers", name=name, error_y=err,
                                 line=dict(color=color_for(i)), marker=dict(size=7)))
    fig.update_xaxes(title_text="ρ (radius)", type="log" if log_x else "linear")
    fig.update_yaxes(title_text=ylabel, rangemode="tozero")
    return _finish(fig, theme, title, "Sharpness vs ρ")


def metric_vs_epoch_figure(runs: Mapping[str, tuple], *, ylabel: str, theme: str = "screen",
                           title: str | None = None, log_y: bool = False) -> go.Figure:
    """A scalar tracked during training (e.g. λ_max from a probe) vs epoch, several runs overlaid.

    Args:
        runs: ``{label: (epochs, values)}``.
        ylabel: what the values are (y-axis title and default title).
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).
        log_y: logarithmic y axis.
    """
    fig = go.Figure()
    for i, (name, (ep, vals)) in enumerate(runs.items()):
        fig.add_trace(go.Scatter(x=_arr(ep), y=_arr(vals), mode="lines+markers", name=name,
                                 line=dict(color=color_for(i)), marker=dict(size=6)))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text=ylabel, type="log" if log_y else "linear")
    return _finish(fig, theme, title, f"{ylabel} during training")


def corruption_figure(runs: Mapping[str, tuple], *, budget: str = "", theme: str = "screen",
                      title: str | None = None, log_y: bool = False) -> go.Figure:
    """Loss increase vs corruption size ``n`` of the weights, several runs overlaid (one colour per run).

    Gradient-based n-sparse corruption is drawn solid, random corruption dashed (mean ± s.d. over draws).

    Args:
        runs: ``{label: (sizes, gradient_increase, random_mean, random_std)}``: ``sizes`` the numbers ``n``
            of corrupted weights, the others loss increases in nats (``random_std`` may be ``None``).
        budget: the budget in words for the title, e.g. ``"‖a‖₂ = 0.5"``.
        theme: ``"screen"`` or ``"paper"`` (:func:`~workbench.viz.theme.apply_theme`).
        title: figure title (default: a descriptive one).
        log_y: logarithmic loss-increase axis (non-positive values are not drawn).

    The x axis is categorical (one tick per size, ``0`` included, in ascending order), as the sizes are
    usually powers of ten.
    """
    fig = go.Figure()
    order: list[int] = sorted({int(n) for data in runs.values() for n in _arr(data[0])})
    for i, (name, data) in enumerate(runs.items()):
        sizes = [str(int(n)) for n in _arr(data[0])]
        grad, rmean = _arr(data[1]), _arr(data[2])
        rstd = _arr(data[3]) if len(data) > 3 and data[3] is not None else None
        c = color_for(i)
        fig.add_trace(go.Scatter(x=sizes[:len(grad)], y=grad, mode="lines+markers", name=f"{name} · gradient-based",
                                 legendgroup=name, line=dict(color=c), marker=dict(size=7)))
        err = dict(type="data", array=rstd, visible=True) if rstd is not None and len(rstd) else None
        fig.add_trace(go.Scatter(x=sizes[:len(rmean)], y=rmean, mode="lines+markers", name=f"{name} · random",
                                 legendgroup=name, error_y=err, line=dict(color=c, dash="dash"),
                                 marker=dict(size=7, symbol="circle-open")))
    fig.update_xaxes(title_text="corrupted weights n", type="category", categoryorder="array",
                     categoryarray=[str(n) for n in order])
    # a short axis title (a long one runs off the plot); the budget goes into the title
    fig.update_yaxes(title_text="loss increase (nats)",
                     type="log" if log_y else "linear")
    default = "Parameter corruption: loss increase L(w + a) − L(w)" + (f", {budget}" if budget else "")
    return _finish(fig, theme, title, default)


_NORM_TEXT = {"l2": "‖a‖₂", "linf": "‖a‖∞", "l1": "‖a‖₁"}


def _budget(norm, epsilon) -> str:
    return f"{_NORM_TEXT.get(norm, norm)} = {float(epsilon):g}"


def corruption_result_figure(items, *, theme: str = "screen", log_y: bool = False, **_) -> go.Figure:
    """Registry builder of ``corruption`` results: ``items`` ``[(label, CorruptionResult, extra)]``.

    Runs with different budgets are labelled with theirs.
    """
    budgets = {_budget(r.norm, r.epsilon) for _, r, _ in items}
    one = len(budgets) == 1
    runs = {(label if one else f"{label} ({_budget(r.norm, r.epsilon)})"):
            (r.sizes, r.gradient_increase, r.random_increase_mean, r.random_increase_std)
            for label, r, _ in items}
    return corruption_figure(runs, budget=next(iter(budgets)) if one else "", theme=theme, log_y=log_y)


def corruption_progress_figure(data, *, label: str = "", theme: str = "screen") -> go.Figure | None:
    """Registry builder of a running ``corruption`` analysis' ``Progress.data`` (None before the first size)."""
    if "gradient" not in data:
        return None
    return corruption_figure({label or "so far": (data["sizes"], data["gradient"], data["random_mean"],
                                                  data.get("random_std"))},
                             budget=_budget(data.get("norm"), data.get("epsilon", float("nan"))), theme=theme)
