"""Figures of the sharpness-aware poisoning studies, drawn from their results (``plot_*`` functions).

The studies (:func:`workbench.poisoning.study.compare_poison`, :func:`~workbench.poisoning.study.poison_search`)
return data: a :class:`~workbench.poisoning.study.PoisonComparison` and a search table. These
functions take that result and return a ``plotly.graph_objects.Figure`` (the figure builders
of :mod:`workbench.viz.poisoning`, :mod:`workbench.viz.curves` and :mod:`workbench.viz.results`
do the drawing), as optuna's ``plot_*`` functions take a study:

=========================  ============================================================
:func:`plot_curves`        train/validation curves per variant [Murphy 2025, Figs. 5.1, 5.3, 5.4]
:func:`plot_delta_norm`    ‖Δ‖_F per crafting epoch [Murphy 2025, Fig. 5.2]
:func:`plot_craft_loss`    crafting loss per batch, whole run or zoomed [Murphy 2025, Figs. 5.5, 5.6]
:func:`plot_drift`         mean 𝓑 at weights frozen after earlier epochs [Murphy 2025, Fig. 5.7]
:func:`plot_sam_cosine`    1 − cos(g, g′) per SAM step [Murphy 2025, Fig. 5.8]
:func:`plot_eigenvalues`   top-k Hessian eigenvalues of the minima [Murphy 2025, Fig. 5.9]
:func:`plot_interpolation` loss between the poison and baseline minima [Murphy 2025, Fig. 5.10]
:func:`plot_images`        x, Δ (or the matched noise) and x + Δ
:func:`plot_ratios`        poison / SAM validation-accuracy ratios of the search [Murphy 2025, Fig. 4.1]
=========================  ============================================================
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from ..poisoning.study import SEARCH_COLUMNS, VARIANTS, PoisonComparison, variant_key
from ..runs import load_run
from .curves import CurveData, training_curves
from .poisoning import craft_loss_figure, delta_norm_figure, drift_figure, image_grid_figure, sam_cosine_figure
from .results import result_figure
from .sweeps import ratio_histogram_figure
from .theme import apply_theme

__all__ = ["plot_curves", "plot_eigenvalues", "plot_interpolation", "plot_craft_loss", "plot_delta_norm",
           "plot_drift", "plot_sam_cosine", "plot_images", "plot_ratios"]


def plot_curves(comparison: PoisonComparison, seed: int = 0, *, variants: Sequence[str] | None = None,
                metrics: Sequence[str] = ("loss",), splits: Sequence[str] = ("train", "val"), theme: str = "screen",
                title: str | None = None) -> go.Figure:
    """Train/validation loss curves of the variants for one seed [Murphy 2025, Figs. 5.1, 5.3, 5.4].

    ``variants`` (keys or labels; default all four): ``("sgd_clean", "sgd_poison")`` is Fig. 5.1,
    ``("sgd_noise", "sgd_poison")`` Fig. 5.3, ``("sgd_poison", "sam_clean")`` Fig. 5.4. Variants
    without a run folder yet are left out.
    """
    keys = [variant_key(v) for v in (variants or list(VARIANTS))]
    runs = []
    for k in keys:
        try:
            rd = load_run(comparison.run_path(k, seed))
        except (KeyError, FileNotFoundError):
            continue
        runs.append(CurveData(name=VARIANTS[k], epochs=rd.epochs, steps=rd.steps, key=rd.id))
    if title is None and theme == "screen":
        title = f"{' vs '.join(VARIANTS[k] for k in keys)} (seed {seed})"
    return training_curves(runs, metrics=metrics, splits=splits, theme=theme, title=title)


def plot_eigenvalues(comparison: PoisonComparison, seed: int = 0, k: int = 5, *, count: int | None = -1,
                     split: str = "train", variants: Sequence[str] = ("sgd_clean", "sgd_poison"), device: str = "auto",
                     theme: str = "screen", log_y: bool = False) -> go.Figure:
    """Top-k Hessian eigenvalues of the minima, one line per variant [Murphy 2025, Fig. 5.9].

    Computed (or loaded from the run folders) by :meth:`PoisonComparison.hessians`; see
    :meth:`PoisonComparison.eigenvalues` for the numbers.
    """
    outs = comparison.hessians(seed, k, count=count, split=split, variants=variants, device=device)
    fig = result_figure("hessian", {label: o.result for label, o in outs.items()}, theme=theme, log_y=log_y)
    if theme == "screen":
        fig.update_layout(title=dict(text=f"Top-{k} Hessian eigenvalues of the minima (seed {seed}, "
                                          f"{split} split of each run's data)", x=0.01))
    return fig


def plot_interpolation(comparison: PoisonComparison, seed: int = 0, *, count: int | None = -1,
                       params: Mapping | None = None, device: str = "auto", theme: str = "screen",
                       log_y: bool = False) -> go.Figure:
    """Loss and accuracy from the poison minimum (α = 0) to the baseline (α = 1) [Murphy 2025, Fig. 5.10].

    The data is :meth:`PoisonComparison.interpolation`.
    """
    out = comparison.interpolation(seed, count=count, params=params, device=device)
    return result_figure("interpolate", {f"{VARIANTS['sgd_clean']} → {VARIANTS['sgd_poison']}": out.result},
                         theme=theme, log_y=log_y)


def plot_craft_loss(comparison: PoisonComparison, zoom: tuple[int, int] | None = None, *, theme: str = "screen",
                    title: str | None = None) -> go.Figure:
    """The crafting loss per batch: the whole run [Murphy 2025, Fig. 5.5] or ``zoom=(first, last step)`` (Fig. 5.6)."""
    return craft_loss_figure(comparison.craft_records(), zoom=zoom, theme=theme, title=title)


def plot_delta_norm(comparison: PoisonComparison, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """‖Δ‖_F after every epoch of the crafting run [Murphy 2025, Fig. 5.2]."""
    p = comparison.poison_probes()
    return delta_norm_figure([int(r["epoch"]) for r in p], [r.get("delta_frobenius") for r in p], theme=theme,
                             title=title)


def plot_drift(comparison: PoisonComparison, *, theme: str = "screen", title: str | None = None) -> go.Figure:
    """Mean 𝓑 of the current poisons at weights frozen after earlier epochs [Murphy 2025, Fig. 5.7]."""
    return drift_figure(comparison.poison_probes(), theme=theme, title=title)


def plot_sam_cosine(comparison: PoisonComparison, seed: int | None = None, *, theme: str = "screen",
                    title: str | None = None) -> go.Figure:
    """1 − cos(g, g′) per step on clean data while training with SAM [Murphy 2025, Fig. 5.8].

    ``seed=None``: the crafting run (SAM on the clean batches, the run that made the poison);
    a seed: that seed's ``SAM on S`` run.
    """
    return sam_cosine_figure(comparison.sam_steps(seed), theme=theme, title=title)


def plot_images(comparison: PoisonComparison, n: int = 8, *, noise: bool = False, theme: str = "screen",
                title: str | None = None) -> go.Figure:
    """x, Δ and x + Δ for the first ``n`` training examples (``noise=True``: the matched noise instead of Δ)."""
    im = comparison.images(n)
    d = im["noise"] if noise else im["delta"]
    if title is None and theme == "screen":
        title = (f"Clean images x, {'matched noise' if noise else 'poison perturbations Δ'} and the sum "
                 f"(first {len(im['labels'])} training examples)")
    return image_grid_figure(im["x"], d, n=n, labels=im["labels"], theme=theme, title=title)


def plot_ratios(df: pd.DataFrame, param: str, *, value: str = "final", bins: int = 10, barmode: str = "overlay",
                statuses: Sequence[str] | None = ("finished",), theme: str = "screen",
                title: str | None = None) -> go.Figure:
    """Histograms of poison-run / SAM-run validation-accuracy ratios per value of ``param`` [Murphy 2025, Fig. 4.1].

    Reuses :func:`workbench.viz.sweeps.ratio_histogram_figure`: every poison run is matched
    with the SAM crafting run that made its poison (same ``combo_id``). A ratio above 1
    (right of the dashed line) means the poison run beat its SAM run.

    Args:
        df: :func:`~workbench.poisoning.study.poison_search` output (or :func:`~workbench.poisoning.study.read_search`).
        param: a grid column (``lr``, ``epsilon``, ``iterations``, ``start_epoch``, ...).
        value: ``final`` (final validation accuracies, the ``ratio`` column) or ``best``
            (best epoch, ``best_ratio``; the report's choice).
        bins: histogram bins.
        barmode: ``overlay`` or ``group`` (clearer for a few runs); see :func:`ratio_histogram_figure`.
        statuses: rows used (default finished).
        theme: ``screen`` or ``paper``.
        title: the figure title (default: one for the screen theme, none for paper).

    Raises:
        ValueError: ``param`` is not a column of ``df``, or a bad ``value``.
    """
    if value not in ("final", "best"):
        raise ValueError(f"value={value!r} is invalid: choose 'final' or 'best'")
    if param not in df.columns:
        raise ValueError(f"param={param!r} is invalid: not a column of the search table "
                         f"(grid columns: {[c for c in df.columns if c not in SEARCH_COLUMNS]})")
    t = df if statuses is None else df[df["status"].isin(list(statuses))]
    pv, sv = ("poison_val_acc", "sam_val_acc") if value == "final" else ("poison_best_val_acc", "sam_best_val_acc")
    t = t[t[pv].notna() & t[sv].notna()]
    label = f"{'final' if value == 'final' else 'best'} validation accuracy: poison run / SAM run"
    if title is None and theme == "screen":
        title = f"Poison / SAM validation accuracy by {param} (Fig. 4.1 view; > 1: poison better)"
    if t.empty:
        fig = go.Figure()
        fig.update_xaxes(title_text=label)
        fig.update_yaxes(title_text="runs")
        apply_theme(fig, theme)
        if title:
            fig.update_layout(title=dict(text=title, x=0.01))
        return fig
    keep = ["combo_id", "seed", param]
    long = pd.concat([t[keep].assign(role="poison", val_acc=t[pv].to_numpy(), status="finished"),
                      t[keep].assign(role="sam", val_acc=t[sv].to_numpy(), status="finished")], ignore_index=True)
    fig = ratio_histogram_figure(long, param=param, metric="val_acc", baseline={"role": "sam"},
                                 match_on=("combo_id",), bins=bins, barmode=barmode, statuses=None, theme=theme,
                                 title=title)
    fig.update_xaxes(title_text=label)
    fig.update_yaxes(title_text="runs")
    return fig
