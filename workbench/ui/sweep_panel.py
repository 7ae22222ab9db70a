"""SweepPanel: define a study from widgets, run it in the background, watch its trials fill in.

Over 700 lines, kept whole: the widgets of one panel and their callbacks share the panel's state; the figures
it shows are built in :mod:`workbench.viz.sweeps`.

Thin wiring over :mod:`workbench.sweeps`: the widgets build a
:class:`~workbench.sweeps.StudyConfig` (validation errors go to the status
line), :func:`~workbench.sweeps.run_study` runs it on a background thread and
reports :class:`~workbench.sweeps.SweepEvent` objects to :meth:`SweepPanel._on_event`,
which only records them under a lock. A separate thread redraws at most every
``interval`` seconds: progress, the trials table (newest first), the mean ±
standard error table per configuration ([Murphy 2025, Tables
4.3-4.4] report mean ± s.e. over 5 seeds) and the best-so-far figure. When the
study ends the metric-vs-hyperparameter figure with standard-error bars is
drawn too. Launching the same study again resumes it: finished trials are
skipped.
"""
from __future__ import annotations

import html
import importlib.util
import re
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

import ipywidgets as W
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import yaml

from ..app.estimate import estimate_study
from ..config import RunConfig, yaml_load
from ..presets import quickstart_config
from ..sweeps import (
    PRUNERS,
    SEARCHES,
    StudyConfig,
    StudyResult,
    SweepEvent,
    read_trials,
    run_study,
    summarize,
    trials_table,
)
from ..sweeps.results import to_latex, to_markdown
from ..viz.sweeps import best_so_far_figure, metric_vs_param_figure
from .base import ClassroomControls, PanelBase, classroom_mode, figure_widget, guard
from .live import sync_figure

__all__ = ["SweepPanel", "DEFAULT_FIELDS"]

DEFAULT_FIELDS = "optim.name: [sgd, sam]\noptim.lr: [0.01, 0.05, 0.1]"
METRICS = ("val_acc", "test_acc", "train_acc", "val_loss", "test_loss", "train_loss")
_OPTIMIZERS = ("sgd", "sam", "asam", "adam")
_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
_COLORS = {"finished": "#1b5e20", "running": "#0d47a1", "failed": "#b00020", "stopped": "#b35900",
           "pruned": "#6a1b9a", "diverged": "#b00020"}
_FIG_W, _FIG_H = 500, 340   # two figures side by side in a wide notebook, stacked in a narrow one
_EXTRA = ("grace_epochs", "ray_address", "ray_node_ip", "ray_storage", "resources_per_trial", "max_failures",
          "sampler_seed", "enqueue")  # study settings without a widget: kept from a loaded study file
CLASSROOM_EPOCHS = 5
"""Epochs per trial of the classroom-safe default (with the first two seeds: 12 trials of the default grid,
about 45 s on a busy 2-core CPU by the timed probe)."""
_ACTIVE: set = set()          # study folders being run by a panel of this kernel (two panels never share one)
_ACTIVE_LOCK = threading.Lock()


def ray_available() -> bool:
    """True when ``backend: ray`` can run here (Ray and the workbench's Ray backend are importable)."""
    try:
        return (importlib.util.find_spec("ray") is not None
                and importlib.util.find_spec("workbench.sweeps.ray_backend") is not None)
    except (ImportError, ValueError):
        return False


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2,3,4"``, ``"0 1 2"`` or ``"0-4"`` -> a list of distinct integers.

    Raises:
        ValueError: anything else (the message shows the accepted forms).
    """
    out: list[int] = []
    for part in [p for p in re.split(r"[,\s]+", str(text).strip()) if p]:
        m = re.fullmatch(r"(-?\d+)-(\d+)", part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise ValueError(f"seeds: range {part!r} goes backwards")
            out += list(range(a, b + 1))
        elif re.fullmatch(r"-?\d+", part):
            out.append(int(part))
        else:
            raise ValueError(f"seeds: {part!r} is not an integer; write e.g. '0,1,2,3,4' or '0-4'")
    if not out:
        raise ValueError("seeds: give at least one seed, e.g. '0,1,2,3,4' or '0-4'")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds: {out} repeats a seed")
    return out


def parse_fields(text: str) -> dict:
    """The swept fields from YAML (``field: [values]`` or ``field: {low: .., high: .., log: true}`` per line).

    Raises:
        ValueError: not YAML, or not a mapping of field names.
    """
    try:
        d = yaml_load(text) if str(text).strip() else {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"swept fields are not valid YAML: {what}{where}") from e
    if d is None:
        d = {}
    if not isinstance(d, dict) or not all(isinstance(k, str) for k in d):
        raise ValueError("swept fields: write one 'field: [values]' per line, e.g. 'optim.lr: [0.01, 0.1]'")
    return d


def _fields_text(study: StudyConfig) -> str:
    return yaml.safe_dump({k: p.to_spec() for k, p in study.params.items()}, default_flow_style=None,
                          sort_keys=False).strip()


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def _fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s}s"


def _mean_se(mean, se, percent: bool) -> str:
    if mean is None or pd.isna(mean):
        return "–"
    k = 100.0 if percent else 1.0
    if se is None or pd.isna(se):
        return f"{mean * k:.2f}" if percent else f"{mean:.4g}"
    return f"{mean * k:.2f} ± {se * k:.2f}" if percent else f"{mean:.4g} ± {se:.2g}"


_TD = "padding:2px 8px;text-align:right;white-space:nowrap"
_TH = "padding:2px 8px;text-align:right;border-bottom:1px solid #999;white-space:nowrap"


class SweepPanel(PanelBase):
    """Define, launch and watch a study (a sweep over config fields × seeds) in a notebook.

    Args:
        root: folder holding study folders (``<root>/<name>/``).
        study: fill every widget from this study (then the other arguments are ignored);
            Launch runs exactly this study unless a widget is changed.
        name: the study's name (its folder).
        base: the run config every trial starts from: None for the quickstart preset
            (LeNet-5 on digits, :func:`workbench.presets.quickstart_config` with ``optimizer``),
            a :class:`~workbench.config.RunConfig`, or a config file path. The dropdown also
            offers the repository's ``configs/*.yaml``.
        optimizer: the quickstart preset's optimizer (the swept ``optim.name`` overrides it).
        epochs: training epochs of every trial (default: the base config's, 20 for the quickstart preset).
        fields: the swept fields as YAML text or a mapping.
        seeds: training seeds (every configuration runs once per seed).
        search, n_trials, metric, mode, objective, pruner, backend, workers: as in
            :class:`~workbench.sweeps.StudyConfig`.
        interval: minimum seconds between redraws (the study never waits for them).

    Attributes:
        widget: the whole panel. study: the last launched :class:`StudyConfig`.
        result: its :class:`~workbench.sweeps.StudyResult` (None while it runs).
        table: :func:`~workbench.sweeps.trials_table` of the study's trials when it ended.
        summary: :func:`~workbench.sweeps.summarize` of ``table`` (mean, se, n per configuration).
        figure_best: live best-so-far ``FigureWidget``. figure_params: the metric vs
        hyperparameter ``FigureWidget`` (shown when the study ends).
        errors: tracebacks of failures of the study itself (failed trials are in ``table``).
    """

    def __init__(self, root: str | Path = "runs/sweeps", *, study: StudyConfig | None = None, name: str = "sweep",
                 base: RunConfig | str | Path | None = None, optimizer: str = "sgd", epochs: int | None = None,
                 fields: str | dict = DEFAULT_FIELDS, seeds: Sequence[int] = (0, 1, 2, 3, 4), search: str = "grid",
                 n_trials: int | None = None, metric: str = "val_acc", mode: str | None = None,
                 objective: str = "final", pruner: str = "none", backend: str = "local", workers: int = 1,
                 interval: float = 0.4, heavier: dict | None = None, classroom: bool | None = None):
        self.interval = float(interval)
        self._given: RunConfig | None = None
        self._base_root = "runs"
        self._base_seed = 0
        self._extra: dict = {}
        st = {"description_width": "initial"}
        # ---------------------------------------------------------- definition
        self.w_load = W.Dropdown(options=[("(open a study file …)", "")] + self._study_files(), value="",
                                 description="study file", style=st, layout=W.Layout(width="320px"))
        self.w_name = W.Text(value=name, description="study name", style=st, layout=W.Layout(width="300px"))
        self.w_root = W.Text(value=str(root), description="root", style=st, layout=W.Layout(width="360px"))
        self.w_base = W.Dropdown(options=self._base_options(), value="quickstart", description="base config",
                                 style=st, layout=W.Layout(width="360px"))
        self.w_optimizer = W.Dropdown(options=list(_OPTIMIZERS), value=optimizer if optimizer in _OPTIMIZERS else "sgd",
                                      description="base optimizer", style=st, layout=W.Layout(width="200px"))
        self.w_epochs = W.BoundedIntText(value=int(epochs or 20), min=1, max=100_000, description="epochs", style=st,
                                         layout=W.Layout(width="140px"))
        self.w_fields = W.Textarea(value=fields if isinstance(fields, str) else
                                   yaml.safe_dump(dict(fields), default_flow_style=None, sort_keys=False).strip(),
                                   description="swept fields", style=st,
                                   placeholder="optim.lr: [0.01, 0.05, 0.1]\n"
                                               "optim.rho: {low: 0.01, high: 0.5, log: true}",
                                   layout=W.Layout(width="520px", height="90px"))
        self.w_fields_help = W.HTML(
            "<div style='font-size:12px;color:#555;max-width:380px'>One run-config field per line: "
            "<code>field: [values]</code> (grid / random / optuna) or <code>field: {low: …, high: …, log: true}"
            "</code> (random / optuna). Every configuration runs once per seed; the table shows mean ± standard "
            "error over seeds.</div>")
        self.w_seeds = W.Text(value=", ".join(str(s) for s in seeds), description="seeds", style=st,
                              placeholder="0,1,2,3,4 or 0-4", layout=W.Layout(width="200px"))
        self.w_search = W.Dropdown(options=list(SEARCHES), value=search, description="search", style=st,
                                   layout=W.Layout(width="170px"))
        self.w_n_trials = W.BoundedIntText(value=int(n_trials or 10), min=1, max=100_000, description="configurations",
                                           style=st, layout=W.Layout(width="170px"),
                                           tooltip="number of configurations (random / optuna)")
        self.w_metric = W.Dropdown(options=list(dict.fromkeys(list(METRICS) + [metric])), value=metric,
                                   description="metric", style=st, layout=W.Layout(width="190px"))
        self.w_mode = W.Dropdown(options=["max", "min"], value=mode or ("min" if "loss" in metric else "max"),
                                 description="mode", style=st, layout=W.Layout(width="120px"))
        self.w_objective = W.Dropdown(options=[("final epoch", "final"), ("best epoch", "best")], value=objective,
                                      description="value", style=st, layout=W.Layout(width="180px"))
        self.w_pruner = W.Dropdown(options=list(PRUNERS), value=pruner, description="pruner", style=st,
                                   layout=W.Layout(width="160px"))
        backends = ["local"] + (["ray"] if ray_available() else [])
        self.w_backend = W.Dropdown(options=list(dict.fromkeys(backends + [backend])), value=backend,
                                    description="backend", style=st, layout=W.Layout(width="150px"))
        self.w_workers = W.BoundedIntText(value=int(workers), min=1, max=1024, description="workers", style=st,
                                          layout=W.Layout(width="130px"))
        # ----------------------------------------------------------- controls
        self.w_launch = W.Button(description="Launch", button_style="success", icon="play",
                                 tooltip="Run the study (finished trials of the same study are skipped)")
        self.w_stop = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True,
                               tooltip="Stop the running trial at its next step; no new trial starts")
        self.w_export = W.Button(description="Export", icon="download",
                                 tooltip="Save the figures (HTML, PNG) and the mean ± s.e. table (Markdown, LaTeX)")
        self.w_progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                          layout=W.Layout(width="260px"))
        self.w_progress_text = W.Label(value="idle")
        self.w_status = W.HTML(value=self._html("Define the study and press Launch."))
        # ------------------------------------------------------------ results
        self.w_summary = W.HTML()
        self.w_table = W.HTML()
        self.w_fig_metric = W.Dropdown(options=[], description="figure metric", style=st,
                                       layout=W.Layout(width="230px"))
        self.figure_best = figure_widget(best_so_far_figure([], metric=metric, title="Best so far: no trial yet"))
        self.figure_best.update_layout(height=_FIG_H, width=_FIG_W)
        # shown from the first Launch
        self.w_best_box = W.Box([guard(self.figure_best)], layout=W.Layout(display="none"))
        self.figure_params = figure_widget()
        self.figure_params.update_layout(height=_FIG_H, width=_FIG_W)
        self.w_params_box = W.VBox([self.w_fig_metric, guard(self.figure_params)], layout=W.Layout(display="none"))

        self.study: StudyConfig | None = None
        self.result: StudyResult | None = None
        self.table: pd.DataFrame | None = None
        self.summary: pd.DataFrame | None = None
        self.errors: list[str] = []
        self.redraws = 0
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._done = threading.Event()
        self._done.set()
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._reset_state()

        for key, w in {"load": self.w_load, "name": self.w_name, "root": self.w_root, "base": self.w_base,
                       "optimizer": self.w_optimizer, "epochs": self.w_epochs, "fields": self.w_fields,
                       "seeds": self.w_seeds, "search": self.w_search, "n-trials": self.w_n_trials,
                       "metric": self.w_metric, "mode": self.w_mode, "objective": self.w_objective,
                       "pruner": self.w_pruner, "backend": self.w_backend, "workers": self.w_workers,
                       "launch": self.w_launch, "stop": self.w_stop, "export": self.w_export,
                       "progress": self.w_progress, "progress-text": self.w_progress_text, "status": self.w_status,
                       "summary": self.w_summary, "table": self.w_table, "fig-metric": self.w_fig_metric}.items():
            w.add_class(f"wb-sw-{key}")
        self.figure_best.add_class("wb-sw-best")
        self.figure_params.add_class("wb-sw-params-figure")

        self.w_launch.on_click(lambda _b: self.start())
        self.w_stop.on_click(lambda _b: self.stop())
        self.w_export.on_click(lambda _b: self._export_clicked())
        self.w_base.observe(lambda _c: self._on_base(), names="value")
        self.w_search.observe(lambda _c: self._on_search(), names="value")
        self.w_metric.observe(lambda c: setattr(self.w_mode, "value", "min" if "loss" in c["new"] else "max"),
                              names="value")
        self.w_load.observe(lambda c: self._on_load(c["new"]), names="value")
        self.w_fig_metric.observe(lambda _c: self._draw_params(), names="value")

        if study is not None:
            self.load_study(study)
        elif base is not None:
            self._set_base(RunConfig.load(base) if isinstance(base, (str, Path)) else base)
            if epochs is not None:
                self.w_epochs.value = int(epochs)
        self._on_base()
        self._on_search()

        fields = {"name": self.w_name, "base": self.w_base, "optimizer": self.w_optimizer, "epochs": self.w_epochs,
                  "fields": self.w_fields, "seeds": self.w_seeds, "search": self.w_search,
                  "n_trials": self.w_n_trials, "metric": self.w_metric, "mode": self.w_mode,
                  "objective": self.w_objective, "pruner": self.w_pruner, "backend": self.w_backend,
                  "workers": self.w_workers}
        if classroom_mode(classroom):
            # classroom-safe default (< 1 min on a 2-core CPU with the digits data): the first two seeds and
            # at most CLASSROOM_EPOCHS epochs; the given study stays one click away (Heavier)
            given = {k: w.value for k, w in fields.items()}
            try:
                seeds = parse_seeds(self.w_seeds.value)
            except ValueError:
                seeds = []
            if len(seeds) > 2:
                self.w_seeds.value = ", ".join(str(x) for x in seeds[:2])
            self.w_epochs.value = min(int(self.w_epochs.value), CLASSROOM_EPOCHS)
            changed = {k: v for k, v in given.items() if fields[k].value != v}
            if heavier is None and changed:
                heavier = changed
        if heavier is None:
            heavier = {"seeds": "0-4", "epochs": max(20, int(self.w_epochs.value))}
        describe = " · ".join(f"{v} epochs" if k == "epochs" else f"seeds {v}" if k == "seeds" else f"{k} {v}"
                              for k, v in heavier.items())
        self.classroom = ClassroomControls(self, fields, heavier=heavier, describe=describe,
                                           estimate=lambda values: estimate_study(self.build_study(values)),
                                           prefix="wb-sw")

        self.widget = W.VBox([
            W.HBox([self.w_name, self.w_root, self.w_load], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.w_base, self.w_optimizer, self.w_epochs], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.w_fields, self.w_fields_help], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.w_seeds, self.w_search, self.w_n_trials, self.w_backend, self.w_workers],
                   layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.w_metric, self.w_mode, self.w_objective, self.w_pruner],
                   layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.w_launch, self.w_stop, self.w_export, self.classroom.widget, self.w_progress,
                    self.w_progress_text],
                   layout=W.Layout(flex_flow="row wrap", align_items="center")),
            self.w_status,
            self.w_summary,
            W.HBox([self.w_best_box, self.w_params_box], layout=W.Layout(flex_flow="row wrap")),
            self.w_table,
        ])
        self.widget.add_class("wb-sweep-panel")

    # ------------------------------------------------------------ widgets
    @staticmethod
    def _study_files() -> list[tuple[str, str]]:
        d = _CONFIGS / "studies"
        return [(f"configs/studies/{p.name}", str(p)) for p in sorted(d.glob("*.yaml"))] if d.is_dir() else []

    def _base_options(self) -> list[tuple[str, str]]:
        opts = [("quickstart: LeNet-5 on digits", "quickstart")]
        if self._given is not None:
            opts.append((f"given: {self._given.display_name}", "given"))
        if _CONFIGS.is_dir():
            opts += [(f"configs/{p.name}", str(p)) for p in sorted(_CONFIGS.glob("*.yaml"))]
        return opts

    def _set_base(self, base: RunConfig) -> None:
        """Select ``base``: the quickstart preset when it is one, else a 'given' entry."""
        self._base_root, self._base_seed = base.root, base.train.seed
        self.w_epochs.value = int(base.train.epochs)
        opt = base.optim.name
        if opt in _OPTIMIZERS and quickstart_config(opt, epochs=base.train.epochs, root=base.root,
                                                    seed=base.train.seed).to_dict() == base.to_dict():
            self.w_optimizer.value = opt
            self.w_base.value = "quickstart"
            return
        self._given = base
        self.w_base.options = self._base_options()
        self.w_base.value = "given"

    def _on_base(self) -> None:
        self.w_optimizer.disabled = self.w_base.value != "quickstart"

    def _on_search(self) -> None:
        self.w_n_trials.disabled = self.w_search.value == "grid"

    def _on_load(self, path: str) -> None:
        if not path:
            return
        try:
            self.load_study(StudyConfig.load(path))
            self._say(f"Loaded {path}: press Launch to run it (or edit it first).")
        except Exception as e:
            self._say(f"Cannot load {path}: {e}", "#b00020")

    def load_study(self, study: StudyConfig) -> None:
        """Fill the widgets from ``study`` (Launch then runs exactly this study)."""
        self._set_base(study.base)
        self.w_name.value = study.name
        self.w_root.value = str(study.root)
        self.w_fields.value = _fields_text(study)
        self.w_seeds.value = ", ".join(str(s) for s in study.seeds)
        self.w_search.value = study.search
        if study.n_trials:
            self.w_n_trials.value = int(study.n_trials)
        if study.metric not in self.w_metric.options:
            self.w_metric.options = list(self.w_metric.options) + [study.metric]
        self.w_metric.value = study.metric
        self.w_mode.value = study.mode
        self.w_objective.value = study.objective
        self.w_pruner.value = study.pruner
        if study.backend not in self.w_backend.options:
            self.w_backend.options = list(self.w_backend.options) + [study.backend]
        self.w_backend.value = study.backend
        self.w_workers.value = int(study.workers)
        self._extra = {k: getattr(study, k) for k in _EXTRA}

    def _base_config(self, values: dict | None = None) -> RunConfig:
        values = values or {}
        epochs = int(values.get("epochs", self.w_epochs.value))
        key = values.get("base", self.w_base.value)
        if key == "quickstart":
            return quickstart_config(values.get("optimizer", self.w_optimizer.value), epochs=epochs,
                                     root=self._base_root, seed=self._base_seed)
        base = self._given if key == "given" else RunConfig.load(key)
        return base.with_overrides({"train.epochs": epochs})

    def build_study(self, values: dict | None = None) -> StudyConfig:
        """The study Launch would run (validated).

        Args:
            values: settings by field name (``seeds``, ``epochs``, ``fields``, ...) used instead of
                the widgets' current values (the Heavier button's estimate uses this).

        Raises:
            ValueError: a widget value is invalid; the message names the field.
        """
        values = values or {}
        v = lambda key, w: values.get(key, w.value)  # noqa: E731
        search = v("search", self.w_search)
        return StudyConfig(
            name=v("name", self.w_name).strip(), base=self._base_config(values),
            params=parse_fields(v("fields", self.w_fields)),
            search=search, seeds=parse_seeds(v("seeds", self.w_seeds)),
            n_trials=None if search == "grid" else int(v("n_trials", self.w_n_trials)),
            metric=v("metric", self.w_metric),
            mode=v("mode", self.w_mode), objective=v("objective", self.w_objective), pruner=v("pruner", self.w_pruner),
            backend=v("backend", self.w_backend), workers=int(v("workers", self.w_workers)),
            root=self.w_root.value.strip(), **self._extra)

    # ------------------------------------------------------------ actions
    @property
    def running(self) -> bool:
        """Whether a study is running in the background."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Launch the study in the background; False (with a message in the status line) when refused."""
        if self.running:
            self._say("A study is already running: press Stop first.", "#b35900")
            return False
        try:
            study = self.build_study()
        except Exception as e:  # ValueError from validation; anything else is reported the same way
            self._say(f"Invalid study: {e}", "#b00020")
            return False
        with _ACTIVE_LOCK:
            if study.path in _ACTIVE:
                self._say(f"Study {study.name!r} ({study.path}) is already running in another panel of this "
                          "kernel: wait for it, or give this study another name.", "#b35900")
                return False
            _ACTIVE.add(study.path)
        self._active_path = study.path
        self.study, self.result, self.table, self.summary = study, None, None, None
        self.errors = []
        self._reset_state()
        self._stop_event = threading.Event()
        self._ended.clear()
        self._done.clear()
        self.w_launch.disabled, self.w_stop.disabled = True, False
        self.w_progress.value, self.w_progress.bar_style = 0.0, "info"
        self.w_params_box.layout.display = "none"
        self.w_best_box.layout.display = None
        self._say(f"Starting study {study.name!r} in {study.path} …")
        self._thread = threading.Thread(target=self._main, args=(study,), name="workbench-sweep", daemon=True)
        self._ticker = threading.Thread(target=self._tick, name="workbench-sweep-redraw", daemon=True)
        self._thread.start()
        self._ticker.start()
        return True

    def stop(self) -> None:
        """Stop the running trial at its next step (checked about once a second); no new trial starts."""
        if not self.running:
            self._say("Nothing is running.", "#b35900")
            return
        self._stop_event.set()
        self._say("Stopping: the running trial stops at its next step …", "#b35900")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the launched study has ended and the panel is redrawn (for scripts and tests)."""
        ok = self._done.wait(timeout)
        if ok and self._thread is not None:
            self._thread.join(timeout)
        return ok

    def export(self, path: str | Path | None = None, formats: Sequence[str] = ("html", "png")) -> list[Path]:
        """Write the metric-vs-hyperparameter figure, the best-so-far figure and the mean ± s.e. table.

        Files: ``<stem>-<metric>.<fmt>``, ``<stem>-best.<fmt>``, ``<stem>-summary.md`` and ``.tex``
        (default stem ``<study folder>/exports/<study name>``).
        """
        if self.study is None:
            raise ValueError("no study yet: press Launch first")
        stem = Path(path) if path else self.study.path / "exports" / self.study.name
        written: list[Path] = []
        metric = self.w_fig_metric.value or self.study.metric
        if self.summary is not None and len(self.summary) and self.w_params_box.layout.display != "none":
            written += self._export(go.Figure(self.figure_params), Path(f"{stem}-{metric}"), formats)
            by = list(self.study.params)
            stem.parent.mkdir(parents=True, exist_ok=True)
            for suffix, fn in ((".md", to_markdown), (".tex", to_latex)):
                p = Path(f"{stem}-summary{suffix}")
                p.write_text(fn(self.summary, by, metric, mode=self.study.mode) + "\n")
                written.append(p)
        written += self._export(go.Figure(self.figure_best), Path(f"{stem}-best"), formats)
        self._say("Exported " + ", ".join(str(p) for p in written), "#1b5e20")
        return written

    # ------------------------------------------------------------ the study thread
    def _reset_state(self) -> None:
        with self._lock:
            self._records: dict[str, dict] = {}   # trial_id -> latest record, oldest first
            self._values: list = []                # objective per ended trial, in order
            self._total: int | None = None
            self._done_n = 0
            self._skipped = 0
            self._running: dict[str, dict] = {}
            self._dirty = False
            self._drawn: tuple | None = None      # (ended trials, total) last drawn in the summary and figure
            self._t0 = time.monotonic()

    def _main(self, study: StudyConfig) -> None:
        error = None
        try:
            self._load_previous(study)
            self.result = run_study(study, callbacks=[self._on_event], stop=self._stop_event)
        except Exception as e:
            self.errors.append(traceback.format_exc())
            error = f"{type(e).__name__}: {e}"
        self._ended.set()
        if self._ticker is not None:
            self._ticker.join(timeout=10)
        try:
            self._final(study, error)
        except Exception as e:  # never leave the panel in a "running" state
            self.errors.append(traceback.format_exc())
            self._say(f"Drawing the results failed: {type(e).__name__}: {e}", "#b00020")
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.discard(study.path)
            self.w_launch.disabled, self.w_stop.disabled = False, True
            self._done.set()

    def _expected(self, study: StudyConfig) -> tuple[set | None, int | None]:
        if study.search == "optuna":
            return None, (study.n_trials or 0) * len(study.seeds)
        trials = study.trials()
        return {t.trial_id for t in trials}, len(trials)

    def _load_previous(self, study: StudyConfig) -> None:
        ids, total = self._expected(study)
        prev = [r for r in read_trials(study.path) if ids is None or r["trial_id"] in ids]
        with self._lock:
            self._total = total
            for r in prev:
                self._records[r["trial_id"]] = dict(r, previous=True)
                if r.get("status") == "finished":
                    self._values.append(r.get("value"))
            self._dirty = True

    def _on_event(self, ev: SweepEvent) -> None:
        """Record an event (runs on the study thread: no drawing here)."""
        t = dict(ev.trial)
        with self._lock:
            if ev.kind == "study_ended":  # its total/done count the records, not the planned trials
                self._dirty = True
                return
            if ev.total is not None:
                self._total = ev.total
            self._done_n = ev.done
            if ev.kind == "study_started":
                self._skipped = int(t.get("skipped", 0))
                # records of trials that will run again (failed / stopped before) stay until replaced
            elif ev.kind in ("trial_started", "epoch"):
                tid = t["trial_id"]
                if ev.kind == "trial_started":
                    self._records.pop(tid, None)
                self._records[tid] = t
                self._running[tid] = t
            elif ev.kind == "trial_ended":
                tid = t["trial_id"]
                self._records.pop(tid, None)
                self._records[tid] = t
                self._running.pop(tid, None)
                self._values.append(t.get("value"))
            self._dirty = True

    def _tick(self) -> None:
        while not self._ended.wait(self.interval):
            with self._lock:
                dirty, self._dirty = self._dirty, False
            if not dirty:
                continue
            try:
                self._redraw()
            except Exception:  # a drawing problem must never stop the study
                self.errors.append(traceback.format_exc())

    # ------------------------------------------------------------ drawing
    def _snapshot(self) -> dict:
        with self._lock:
            return dict(records=[dict(r) for r in self._records.values()], values=list(self._values),
                        total=self._total, done=self._done_n, skipped=self._skipped,
                        running=[dict(r) for r in self._running.values()])

    def _label(self, rec: dict) -> str:
        return ", ".join(f"{k}={_fmt(v)}" for k, v in rec.get("params", {}).items()) + \
            f", seed {rec.get('seed')}"

    def _redraw(self) -> None:
        study = self.study
        s = self._snapshot()
        self.redraws += 1
        total, done = s["total"], s["done"]
        epochs = study.base.train.epochs
        self.w_progress.value = min(done / total, 1.0) if total else 0.0
        elapsed = time.monotonic() - self._t0
        ran = done - s["skipped"]
        eta = ""
        if total and 0 < ran and done < total:
            eta = f" · ETA {_fmt_seconds(elapsed / ran * (total - done))}"
        self.w_progress_text.value = (f"{done}/{total if total else '?'} trials · {_fmt_seconds(elapsed)}{eta}"
                                      + (f" · {s['skipped']} skipped (finished before)" if s["skipped"] else ""))
        if s["running"] and not self._stop_event.is_set():
            parts = []
            for r in s["running"][:3]:
                last = r.get("last") or {}
                v = last.get(study.metric)
                parts.append(f"{self._label(r)}: epoch {r.get('epoch', 0)}/{epochs}"
                             + (f", {study.metric} {v:.4f}" if isinstance(v, (int, float)) else ""))
            more = f" (+{len(s['running']) - 3} more)" if len(s["running"]) > 3 else ""
            self._say(f"Trial {min(done + 1, total or done + 1)}/{total or '?'} · " + "; ".join(parts) + more)
        self.w_table.value = self._trials_html(s["records"])
        # the summary and the figure change only when a trial ends (epoch events update the table only)
        key = (len(s["values"]), total)
        if key != self._drawn:
            self._drawn = key
            self.w_summary.value = self._summary_html(self._summary_from_records(s["records"]), live=True)
            sync_figure(self.figure_best, self._best_figure(s["values"], total))

    def _best_figure(self, values: list, total: int | None) -> go.Figure:
        label = self.study.metric if self.study.objective == "final" else f"best-epoch {self.study.metric}"
        fig = best_so_far_figure(values, mode=self.study.mode, metric=label, total=total)
        vals = [v for v in values if v is not None and v == v]
        best = (max(vals) if self.study.mode == "max" else min(vals)) if vals else None
        # a short title: the modebar covers the right half of the top line
        fig.update_layout(title_text=f"best {label}: {best:.4g}" if best is not None else "best so far: no trial yet")
        fig.update_layout(height=_FIG_H, width=_FIG_W, margin=dict(t=40), title_font_size=14)
        return fig

    def _metrics(self) -> list[str]:
        m = self.study.metric
        out = [m] + (["test_acc"] if m != "test_acc" else [])
        if self.study.objective == "best":
            out.append("objective")
        return out

    def _by(self) -> list[str]:
        return list(self.study.params) or ["config"]

    def _summary_from_records(self, records: list[dict]) -> pd.DataFrame:
        rows = []
        for r in records:
            if r.get("status") != "finished":
                continue
            final = r.get("final") or {}
            row = {**r.get("params", {}), "seed": r.get("seed"), "status": "finished", "objective": r.get("value")}
            row.update({m: final.get(m, np.nan) for m in self._metrics() if m != "objective"})
            if not self.study.params:
                row["config"] = "all"
            rows.append(row)
        if not rows:
            return pd.DataFrame()
        return summarize(pd.DataFrame(rows), self._by(), self._metrics())

    def _summary_html(self, summary: pd.DataFrame | None, *, live: bool) -> str:
        if summary is None or summary.empty:
            return ""
        by, metrics, study = self._by(), self._metrics(), self.study
        key = f"{metrics[0]}_mean"
        best = summary[key].idxmax() if study.mode == "max" else summary[key].idxmin()
        head = "".join(f"<th style='{_TH}'>{html.escape(c)}</th>" for c in by)
        head += "".join(f"<th style='{_TH}'>{html.escape(m + (' (%)' if m.endswith('acc') else ''))}"
                        f"<br><span style='font-weight:normal'>mean ± s.e.</span></th>" for m in metrics)
        head += f"<th style='{_TH}'>n</th>"
        body = []
        for i, r in summary.iterrows():
            cells = "".join(f"<td style='{_TD}'>{html.escape(_fmt(r[c]))}</td>" for c in by)
            for m in metrics:
                txt = html.escape(_mean_se(r[f"{m}_mean"], r[f"{m}_se"], m.endswith("acc")))
                cells += f"<td style='{_TD}'>" + (f"<b>{txt}</b>" if i == best and m == metrics[0] else txt) + "</td>"
            cells += f"<td style='{_TD}'>{int(r[f'{metrics[0]}_n'])}</td>"
            body.append(f"<tr>{cells}</tr>")
        title = ("Mean ± standard error over seeds per configuration"
                 + (" (so far)" if live else "") + f"; best by {metrics[0]} in bold")
        return (f"<div style='font-size:12px'><b>{title}</b><table style='border-collapse:collapse'>"
                f"<tr>{head}</tr>{''.join(body)}</table></div>")

    def _trials_html(self, records: list[dict]) -> str:
        if not records:
            return ""
        study = self.study
        epochs = study.base.train.epochs
        names = list(study.params)
        label = study.metric if study.objective == "final" else f"best {study.metric}"
        cols = ["status"] + names + ["seed", label, "test_acc", "epochs", "time", "note"]
        head = "".join(f"<th style='{_TH}'>{html.escape(c)}</th>" for c in cols)
        rows = []
        shown = list(reversed(records))[:300]
        for r in shown:
            status = r.get("status", "?")
            color = _COLORS.get(status, "#333")
            final = r.get("final") or r.get("last") or {}
            value = r.get("value") if status != "running" else (r.get("last") or {}).get(study.metric)
            ep = r.get("epochs") if status != "running" else r.get("epoch", 0)
            note = "previous session" if r.get("previous") else ""
            if r.get("error"):
                err = str(r["error"]).splitlines()[0]
                note = f"<span title='{html.escape(str(r['error']))}'>{html.escape(err[:80])}</span>"
            else:
                note = html.escape(note)
            cells = [f"<span style='color:{color};font-weight:bold'>{html.escape(status)}</span>"]
            cells += [html.escape(_fmt(r.get("params", {}).get(n))) for n in names]
            cells += [html.escape(_fmt(r.get("seed"))), html.escape(_fmt(value)),
                      html.escape(_fmt(final.get("test_acc"))),
                      html.escape(f"{_fmt(ep)}/{epochs}" if ep is not None else "–"),
                      html.escape(f"{r['seconds']:.1f} s" if isinstance(r.get("seconds"), (int, float)) else "–"),
                      note]
            rows.append("<tr>" + "".join(f"<td style='{_TD}'>{c}</td>" for c in cells) + "</tr>")
        more = f" (newest 300 of {len(records)})" if len(records) > 300 else ""
        return (f"<div style='font-size:12px'><b>Trials, newest first{more}</b>"
                f"<div style='max-height:340px;overflow-y:auto'><table style='border-collapse:collapse'>"
                f"<tr>{head}</tr>{''.join(rows)}</table></div></div>")

    # ------------------------------------------------------------ the end
    def _final(self, study: StudyConfig, error: str | None) -> None:
        self._redraw()
        s = self._snapshot()
        ids, _ = self._expected(study)
        table = trials_table(study.path, metrics=[m for m in self._metrics() if m != "objective"]) \
            if (study.path / "trials.jsonl").exists() else pd.DataFrame()
        if ids is not None and not table.empty:
            table = table[table["trial_id"].isin(ids)].reset_index(drop=True)
        if not study.params and not table.empty:
            table["config"] = "all"
        self.table = table
        self.summary = summarize(table, self._by(), self._metrics()) if not table.empty else None
        self.w_summary.value = self._summary_html(self.summary, live=False)
        self._draw_params(init=True)
        res = self.result
        if error is not None:
            self.w_progress.bar_style = "danger"
            self._say(f"The study failed: {error}", "#b00020")
            return
        counts = res.counts() if res is not None else {}
        failed = [r for r in s["records"] if r.get("status") in ("failed", "diverged")]
        summary_txt = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        best = ""
        if self.summary is not None and not self.summary.empty:
            m = self._metrics()[0]
            col = self.summary[f"{m}_mean"]
            i = col.idxmax() if study.mode == "max" else col.idxmin()
            row = self.summary.loc[i]
            cfg = ", ".join(f"{k}={_fmt(row[k])}" for k in self._by())
            best = (f" Best configuration by mean {m}: {cfg} "
                    f"({_mean_se(row[f'{m}_mean'], row[f'{m}_se'], m.endswith('acc'))}"
                    f"{' %' if m.endswith('acc') else ''}, n={int(row[f'{m}_n'])}).")
        took = _fmt_seconds(time.monotonic() - self._t0)
        if res is not None and res.status == "stopped":
            self.w_progress.bar_style = "warning"
            self._say(f"Stopped after {took}: {summary_txt or 'no trial ended'}. Press Launch to resume "
                      f"(finished trials are skipped).{best}", "#b35900")
        elif failed:
            self.w_progress.bar_style = "danger"
            first = str(failed[0].get("error") or failed[0].get("status")).splitlines()[0]
            self._say(f"Done in {took} with failures: {summary_txt}. First error: {first}.{best} "
                      f"Launch again to retry failed trials.", "#b00020")
        else:
            self.w_progress.value, self.w_progress.bar_style = 1.0, "success"
            self._say(f"Finished in {took}: {summary_txt}"
                      + (f" ({res.skipped} from before)" if res is not None and res.skipped else "")
                      + f".{best} Study folder: {study.path}", "#1b5e20")

    def _axes(self) -> tuple[str | None, list[str]]:
        """X = the first swept field with numeric values; group = the other swept fields."""
        names = list(self.study.params)
        if not names:
            return None, []
        numeric = [n for n in names if (p := self.study.params[n]).is_range or all(_is_number(v) for v in p.values)]
        x = numeric[0] if numeric else names[0]
        return x, [n for n in names if n != x]

    def _draw_params(self, init: bool = False) -> None:
        summary = self.summary
        x, group = self._axes() if self.study is not None else (None, [])
        if summary is None or summary.empty or x is None:
            self.w_params_box.layout.display = "none"
            return
        if init:
            opts = self._metrics()
            self.w_fig_metric.options = opts
            if self.w_fig_metric.value not in opts:
                self.w_fig_metric.value = opts[0]
            self.w_params_box.layout.display = None
        metric = self.w_fig_metric.value or self._metrics()[0]
        xs = pd.to_numeric(summary[x], errors="coerce")
        log_x = bool(xs.notna().all() and (xs > 0).all() and xs.max() / xs.min() >= 10)
        fig = metric_vs_param_figure(summary, x, metric, group or None, log_x=log_x,
                                     title=f"{metric}: mean ± s.e. over seeds")
        fig.update_layout(height=_FIG_H, width=_FIG_W, margin=dict(t=40), title_font_size=14)
        sync_figure(self.figure_params, fig)
