"""Loss and accuracy curves of one or several runs.

One pure builder serves the live panel, static export and the CLI:
:func:`curve_series` turns run data into named series (plain lists), and
:func:`training_curves` turns series into a ``plotly`` figure. The live
dashboard calls :func:`curve_series` on its growing buffers and copies the
series into its ``FigureWidget`` by ``uid``, so live and exported figures are
the same figure.

Legend labels come from the runs' optimizer and hyperparameters
(:func:`run_label`: "SGD", "SAM, ρ = 0.05", "ASAM, ρ = 0.5", "SAM, ρ = 0.05, m = 16"), and
:func:`curve_labels` makes them distinct (the config fields in which equally labelled runs
differ, such as "lr = 0.1" or "seed = 1", else the start time from the run id).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .theme import SPLIT_DASH, THEMES, apply_theme, color_for, compact_legend

__all__ = ["CurveData", "Series", "curve_series", "series_trace", "training_curves", "run_label", "curve_labels",
           "optimizer_label", "SPLITS", "METRICS"]

SPLITS = ("train", "val", "test")
METRICS = ("loss", "acc")
_METRIC_TITLE = {"loss": "loss (cross-entropy, nats)", "acc": "accuracy"}
_SPLIT_NAME = {"train": "train", "val": "validation", "test": "test"}


@dataclass
class CurveData:
    """What the curve builder needs from a run.

    Attributes:
        name: the run's name (``RunConfig.display_name``); the legend label is derived from it when
            there is no ``config`` (see :func:`run_label`).
        epochs: epoch records (columns ``epoch``, ``train_loss``, ``val_acc``, ...).
        steps: step records (columns ``step``, ``epoch`` (fractional), ``loss``, ``acc``, ...).
        key: stable identifier (run id); defaults to ``name``.
        config: the run's :class:`~workbench.config.RunConfig` (optional): legend labels from its
            optimizer and hyperparameters, and the fields that tell equally labelled runs apart.
        label: legend label to use as given (overrides ``config`` and ``name``; still made distinct).
    """

    name: str
    epochs: pd.DataFrame = field(default_factory=pd.DataFrame)
    steps: pd.DataFrame = field(default_factory=pd.DataFrame)
    key: str | None = None
    config: Any = None
    label: str | None = None

    @classmethod
    def from_run(cls, run) -> "CurveData":
        """From a :class:`~workbench.runs.RunData` (or anything with name, epochs, steps, id, config)."""
        return cls(name=run.name, epochs=run.epochs, steps=run.steps, key=getattr(run, "id", None),
                   config=getattr(run, "config", None))

    @classmethod
    def from_records(cls, name: str, epoch_records: Sequence[dict], step_records: Sequence[dict] = (),
                     key: str | None = None, config: Any = None) -> "CurveData":
        """Curves from a run's epoch and step records (lists of dicts, as in ``metrics.jsonl``)."""
        return cls(name=name, epochs=pd.DataFrame(list(epoch_records)), steps=pd.DataFrame(list(step_records)),
                   key=key, config=config)


# ------------------------------------------------------------------ labels
_OPT_NAME = {"sgd": "SGD", "adam": "Adam", "sam": "SAM", "asam": "ASAM"}
# RunConfig.display_name of an unnamed run, e.g. "SAM(rho=0.05, m=16)-lenet5-digits"
_AUTO_NAME = None
# config fields that never tell runs apart in a legend (paths, logging, devices)
_IGNORE = {"name", "root", "tags", "data.root", "data.download", "data.in_memory", "data.num_workers",
           "train.device", "train.num_threads", "train.deterministic", "train.log_every", "train.eval_every",
           "train.checkpoint_every", "train.keep_checkpoints", "train.eval_batch_size"}
# the order in which differing fields are tried; others follow alphabetically
_PRIORITY = ("optim.lr", "train.seed", "model.name", "data.name", "optim.base", "optim.momentum",
             "optim.weight_decay", "train.batch_size", "train.epochs", "schedule.name", "optim.nesterov",
             "optim.eta", "optim.bn_policy", "data.classes", "data.split_seed", "data.max_train")
_SHORT = {"optim.lr": "lr", "train.seed": "seed", "optim.weight_decay": "wd", "train.batch_size": "batch",
          "train.epochs": "epochs", "optim.eta": "η", "optim.bn_policy": "BN", "data.split_seed": "split seed",
          "data.max_train": "n train", "train.label_smoothing": "smoothing", "optim.betas": "β"}
_VALUE_ONLY = {"model.name", "data.name", "schedule.name", "optim.base"}


def _auto_name_re() -> re.Pattern:
    global _AUTO_NAME
    if _AUTO_NAME is None:
        from ..config import DATASET_CHOICES, MODEL_CHOICES

        alt = lambda xs: "|".join(re.escape(x) for x in sorted(xs, key=len, reverse=True))  # noqa: E731
        _AUTO_NAME = re.compile(r"^(SGD|ADAM|SAM|ASAM)(?:\(rho=([0-9.eE+-]+)(?:, m=(\d+))?\))?"
                                rf"-({alt(MODEL_CHOICES)})-({alt(DATASET_CHOICES)})$")
    return _AUTO_NAME


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    s = "none" if v is None else str(v)
    return s if len(s) <= 24 else s[:23] + "…"


def optimizer_label(name: str, rho: float | None = None, m: int | None = None, base: str = "sgd",
                    adaptive: bool = False) -> str:
    """A legend label for an optimizer.

    For example ``SGD``, ``Adam``, ``SAM, ρ = 0.05``, ``ASAM, ρ = 0.5``, ``SAM, ρ = 0.05, m = 16``,
    ``SAM (Adam), ρ = 0.05`` (a SAM with an Adam base).
    """
    n = str(name).lower()
    if n == "sam" and adaptive:
        n = "asam"
    s = _OPT_NAME.get(n, str(name))
    if n in ("sam", "asam"):
        if base and base != "sgd":
            s += f" ({_OPT_NAME.get(base, base)})"
        if rho is not None:
            s += f", ρ = {float(rho):g}"
        if m:
            s += f", m = {int(m)}"
    return s


def run_label(config: Any = None, name: str | None = None) -> str:
    """The legend label of one run (not yet made distinct from others, see :func:`curve_labels`).

    A config with an explicit ``name`` gives that name; otherwise the optimizer and its hyperparameters
    (:func:`optimizer_label`). Without a config, a ``name`` of the automatic form
    ``SAM(rho=0.05, m=16)-lenet5-digits`` is read the same way, and any other name is kept.
    """
    if config is not None:
        if getattr(config, "name", None):
            return str(config.name)
        o = config.optim
        return optimizer_label(o.name, o.rho, o.m, o.base, o.adaptive)
    mt = _auto_name_re().match(name or "")
    if mt:
        return optimizer_label(mt[1], float(mt[2]) if mt[2] else None, int(mt[3]) if mt[3] else None)
    return name or ""


def _flat(d: Any, prefix: str = "") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tuple(d) if isinstance(d, list) else d}


def _config_fields(config: Any) -> dict | None:
    if config is None:
        return None
    try:
        d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    except Exception:  # noqa: BLE001 - any config-like object; no fields then
        return None
    return {k: v for k, v in _flat(d).items() if k not in _IGNORE}


def _field_text(key: str, value: Any) -> str:
    if key in _VALUE_ONLY:
        return _fmt(value)
    short = _SHORT.get(key) or key.split(".")[-1].replace("_", " ")
    return f"{short} = {_fmt(value)}"


def _run_time(key: str | None) -> tuple[str, str] | None:
    """(date, time) from a run id ``YYYYMMDD-HHMMSS-...``."""
    mt = re.match(r"^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})", key or "")
    return (f"{mt[1]}-{mt[2]}-{mt[3]}", f"{mt[4]}:{mt[5]}:{mt[6]}") if mt else None


def _groups(labels: list[str]) -> list[list[int]]:
    seen: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        seen.setdefault(lab, []).append(i)
    return [g for g in seen.values() if len(g) > 1]


def curve_labels(runs: Sequence[CurveData]) -> list[str]:
    """Distinct legend labels of ``runs`` (in order).

    Each run gets ``run.label`` or :func:`run_label`. When model or dataset differ among the runs, unnamed
    runs also name them ("SGD, mlp, moons"). Runs that still share a label get the config fields in which
    they differ, most telling first (lr, seed, model, dataset, base optimizer, momentum, weight decay, batch
    size, epochs, ...), as many as it takes: "SAM, ρ = 0.05, lr = 0.1". Runs with equal (or no) configs get
    their start time from the run id ("SAM, ρ = 0.05 (12:42:19)", with the date when the dates differ), and
    a number as a last resort.
    """
    labels = [r.label or run_label(r.config, r.name) for r in runs]
    fields = [_config_fields(r.config) for r in runs]
    for key in ("model.name", "data.name"):
        have = [i for i, f in enumerate(fields) if f is not None and key in f]
        if len({fields[i][key] for i in have}) > 1:
            for i in have:
                if not runs[i].label and not getattr(runs[i].config, "name", None):
                    labels[i] += ", " + _fmt(fields[i][key])
    for group in _groups(labels):
        members = [i for i in group if fields[i] is not None]
        if len(members) < 2:
            continue
        keys = set().union(*(fields[i] for i in members))
        differing = [k for k in keys if len({repr(fields[i].get(k)) for i in members}) > 1]
        order = sorted(differing, key=lambda k: (_PRIORITY.index(k) if k in _PRIORITY else len(_PRIORITY), k))
        current = {i: labels[i] for i in members}
        for k in order:
            if len(set(current.values())) == len(members):
                break
            trial = {i: f"{current[i]}, {_field_text(k, fields[i].get(k))}" for i in members}
            if len(set(trial.values())) > len(set(current.values())):
                current = trial
        for i, lab in current.items():
            labels[i] = lab
    for group in _groups(labels):
        times = {i: _run_time(runs[i].key) for i in group}
        dated = len({t[0] for t in times.values() if t}) > 1
        for i in group:
            t = times[i]
            if t:
                labels[i] += f" ({t[0]} {t[1]})" if dated else f" ({t[1]})"
            elif runs[i].key and runs[i].key != runs[i].name:
                labels[i] += f" ({runs[i].key})"
    for group in _groups(labels):
        for n, i in enumerate(group[1:], start=2):
            labels[i] += f" #{n}"
    return labels


def _uid(*parts: str) -> str:
    """A CSS-safe, stable trace uid (plotly.js uses uids in selectors)."""
    return "s" + hashlib.sha1("|".join(parts).encode()).hexdigest()[:20]


@dataclass
class Series:
    """One trace: ``uid`` is stable across updates (hash of run key, metric, split, granularity).

    ``run_name`` is the run's legend label (distinct among the runs, see :func:`curve_labels`).
    """

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
    labels = curve_labels(runs)
    out: list[Series] = []
    keys: set[str] = set()
    for i, run in enumerate(runs):
        key = run.key or run.name
        if key in keys:  # two runs without distinct keys: keep their uids apart
            key = f"{key}#{i}"
        keys.add(key)
        label = labels[i]
        for m in metrics:
            if per_step and len(run.steps) and m in run.steps:
                st = run.steps.dropna(subset=[m])
                out.append(Series(_uid(key, m, "batch", "step"), key, i, label, m, "batch", True,
                                  st[x].tolist(), st[m].tolist()))
            for s in splits:
                col = f"{s}_{m}"
                ep = run.epochs
                if len(ep) and col in ep:
                    ep = ep.dropna(subset=[col])
                    out.append(Series(_uid(key, m, s, "epoch"), key, i, label, m, s, False,
                                      ep[x].tolist(), ep[col].tolist()))
                else:
                    out.append(Series(_uid(key, m, s, "epoch"), key, i, label, m, s, False, [], []))
    return out


def series_trace(s: Series, col: int, show_legend: bool = True) -> go.Scatter:
    """The scatter trace of one series in subplot column ``col`` (1-based)."""
    color = color_for(s.run_index)
    if s.per_step:
        return go.Scatter(x=s.x, y=s.y, uid=s.uid, meta={"run": s.key, "series": s.uid},
                          name=f"{s.run_name} (batches)", legendgroup=s.key,
                          mode="lines", line=dict(color=color, width=0.8), opacity=0.35,
                          showlegend=show_legend, xaxis=f"x{col if col > 1 else ''}",
                          yaxis=f"y{col if col > 1 else ''}",
                          hovertemplate="%{x:.2f}: %{y:.4f}<extra>" + s.run_name + " batch</extra>")
    return go.Scatter(x=s.x, y=s.y, uid=s.uid, meta={"run": s.key, "series": s.uid},
                      name=f"{s.run_name} · {_SPLIT_NAME[s.split]}",
                      legendgroup=s.key, mode="lines+markers" if len(s.x) <= 40 else "lines",
                      line=dict(color=color, dash=SPLIT_DASH[s.split]), marker=dict(size=4),
                      showlegend=show_legend, xaxis=f"x{col if col > 1 else ''}", yaxis=f"y{col if col > 1 else ''}",
                      hovertemplate="%{x}: %{y:.4f}<extra>" + f"{s.run_name} {_SPLIT_NAME[s.split]}</extra>")


# paper layout, px at 96 px/in: left margin (tick labels + axis title), right (half a tick label), bottom
# (ticks, tick labels, axis title), and the gap between subplots (the next one's tick labels and title)
_PAPER_MARGIN = dict(l=44, r=14, b=34)
_PAPER_GAP_PX = 50
# print dashes, in px at line width 1 (plotly's named dashes scale to at least 9 px, coarse on a 1 in wide plot)
_PAPER_DASH = {"train": "solid", "val": "4px,2px", "test": "1.5px,1.5px"}


def training_curves(runs: Sequence[CurveData], *, metrics: Iterable[str] = METRICS,
                    splits: Iterable[str] = SPLITS, per_step: bool = False, x: str = "epoch",
                    log_y: bool = False, theme: str = "screen", title: str | None = None,
                    width: int | None = None, height: int | None = None) -> go.Figure:
    """Loss and accuracy curves of several runs, overlaid (one subplot per metric).

    Colour identifies the run, dash the split (train solid, validation dashed,
    test dotted); per-step curves are thin and translucent. Legend labels come
    from :func:`curve_labels`.

    In the ``paper`` theme the legend is compact (:func:`~workbench.viz.theme.compact_legend`): one entry
    per run and one per split, flowed in rows above the plots, at 8 px (6 pt); margins and the gap between
    the subplots are fixed in px, so that axis titles and tick labels never overlap. Exporting at another
    size (``export_figure(..., width_in=3.25)``) lays the legend and gap out again for that size.

    Args:
        runs: :class:`CurveData` list (``CurveData.from_run(load_run(path))``).
        metrics: subset of ``("loss", "acc")`` (:func:`curve_series`).
        splits: subset of ``("train", "val", "test")`` for the per-epoch curves.
        per_step: add the per-step (mini-batch) training curves.
        x: ``epoch`` (fractional for steps) or ``step``.
        log_y: logarithmic loss axis.
        theme: ``screen`` or ``paper``.
        title: figure title (default none for paper, "Training curves" for screen).
        width: layout width in px (96 px per inch); default the theme's (paper: 6.75 in).
        height: layout height in px; default the theme's (paper: 2.2 in).

    Returns:
        A ``plotly.graph_objects.Figure``; every trace has a stable ``uid``.

    Raises:
        ValueError: unknown metric, split, x or theme.
    """
    metrics = tuple(metrics)
    splits = tuple(splits)
    paper = theme == "paper"
    n = max(len(metrics), 1)
    if paper:
        W = width or THEMES["paper"]["width"]
        spacing = min(0.4, _PAPER_GAP_PX / max(W - _PAPER_MARGIN["l"] - _PAPER_MARGIN["r"], 1)) if n > 1 else 0.1
    else:
        spacing = 0.1
    fig = make_subplots(rows=1, cols=n, horizontal_spacing=spacing,
                        subplot_titles=None if paper else [_METRIC_TITLE[m] for m in metrics])
    fig.update_layout(uirevision="curves")
    series = curve_series(runs, metrics=metrics, splits=splits, per_step=per_step, x=x)
    for s in series:
        col = metrics.index(s.metric) + 1
        tr = series_trace(s, col, show_legend=(col == 1) and not paper)
        if paper:  # print: thin lines, no markers; the legend is drawn separately below
            tr.update(mode="lines", line_width=1.0 if not s.per_step else 0.5)
            if not s.per_step:
                tr.update(line_dash=_PAPER_DASH[s.split])
        fig.add_trace(tr)
    for j, m in enumerate(metrics, start=1):
        fig.update_xaxes(title_text=x, row=1, col=j)
        fig.update_yaxes(title_text=("loss" if m == "loss" else "accuracy") if paper else None, row=1, col=j)
        if m == "loss" and log_y:
            fig.update_yaxes(type="log", row=1, col=j)
    apply_theme(fig, theme)
    if title is None and not paper:
        title = "Training curves"
    if title:
        fig.update_layout(title=dict(text=title, x=0.01))
    if paper:
        fs = THEMES["paper"]["font"]["size"]
        fig.update_layout(width=width or THEMES["paper"]["width"], height=height or THEMES["paper"]["height"],
                          margin=dict(_PAPER_MARGIN, pad=0))
        # fixed margins (the legend is placed in plot coordinates): no automargin; short ticks, titles close
        fig.update_xaxes(automargin=False, ticklen=3, title_standoff=2, nticks=5, ticks="outside")
        fig.update_yaxes(automargin=False, ticklen=3, title_standoff=3, nticks=5, ticks="outside")
        labels = curve_labels(runs)
        entries = [dict(label=lab, color=color_for(i), width=1.5) for i, lab in enumerate(labels)]
        key = [dict(label=_SPLIT_NAME[sp], color="#555", width=1.0, dash=_PAPER_DASH[sp]) for sp in splits]
        if per_step:
            key.append(dict(label="batches", color="#555", width=0.8, opacity=0.35))
        if key and (len(key) > 1 or runs):
            key[0]["break_before"] = True
        compact_legend(fig, entries + key, font_size=fs - 1, col_gap_px=_PAPER_GAP_PX if n > 1 else None)
    else:
        fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0,
                                      groupclick="togglegroup"), height=480, margin=dict(b=120))
    return fig
