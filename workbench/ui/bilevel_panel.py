"""BilevelPanel: the Fig. 1 illustration and the Fig. 2 study of [Carnerero-Cano 2021], live.

Thin wiring over :mod:`workbench.bilevel` and :mod:`workbench.viz.bilevel`:

* **2-D illustration** — Compute runs :func:`~workbench.bilevel.illustrate` (attack without
  regularisation and with λ = log 20, the vectorised validation-error maps and the argmin-λ map)
  on a background thread. Two sliders place the poisoning point anywhere in the box; every move
  retrains both logistic regressions on ``D_tr ∪ {(x_p, y_p)}`` (100 full-batch steps, a few
  milliseconds) and redraws the poisoned boundaries and the point's validation error.
  Animate plays the attack's path (projected hypergradient ascent) step by step.
* **Study** — Run starts :func:`~workbench.bilevel.study.run_study` on a background thread
  (dataset, repetitions, hyperiterations as widgets), with a progress bar; the test-error figure
  and the table update after every repetition; Stop ends it after the current hyperiteration.

No science lives here.
"""
from __future__ import annotations

import html
import math
import threading
import time
import traceback
from pathlib import Path

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import torch

from ..bilevel.illustration import Illustration, IllustrationSettings, fit_eval, illustrate
from ..bilevel.model import error_rate, val_loss
from ..viz.bilevel import PANEL_TITLES, boundary_xy, error_vs_fraction_figure, lambda_map_figure, poison_map_figure
from .base import PanelBase, figure_widget, guard

__all__ = ["BilevelPanel"]

_PANELS = ("no_reg", "reg")


class BilevelPanel(PanelBase):
    """Interactive Fig. 1 (drag the poisoning point, animate the attack) and a Fig. 2 study runner.

    Args:
        illustration: a precomputed :class:`~workbench.bilevel.Illustration` (else press Compute).
        settings: :class:`~workbench.bilevel.IllustrationSettings` for Compute (grid size, steps).
        seed: data seed of the 2-D example.
        study_root: folder the study runner writes to (``<study_root>/<dataset>``).
        study_defaults: initial study widget values (``dataset``, ``reps``, ``steps``, ``batches``).

    Attributes:
        widget: the root widget. figures: ``{"no_reg", "reg", "lambda", "study"}`` → ``FigureWidget``.
        illustration: the current illustration. study: the last :class:`~workbench.bilevel.study.StudyResult`.
        errors: tracebacks of failed background work.
    """

    def __init__(self, illustration: Illustration | None = None, *, settings: IllustrationSettings | None = None,
                 seed: int = 0, study_root: str | Path = "bilevel_runs", study_defaults: dict | None = None):
        self.settings = settings or IllustrationSettings()
        self.illustration: Illustration | None = None
        self.study = None
        self.errors: list[str] = []
        self.study_root = Path(study_root)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        lo, hi = self.settings.box
        st = {"description_width": "initial"}
        self.w_seed = W.IntText(value=seed, description="seed", layout=W.Layout(width="110px"), style=st)
        self.w_grid = W.IntSlider(value=self.settings.grid, min=10, max=100, step=5, description="map grid",
                                  style=st, layout=W.Layout(width="260px"))
        self.w_compute = W.Button(description="Compute", icon="play", button_style="success",
                                  tooltip="attack + validation-error maps + argmin-λ map")
        self.w_px = W.FloatSlider(value=0.0, min=lo, max=hi, step=0.1, description="poison x₁",
                                  continuous_update=True, style=st, layout=W.Layout(width="330px"))
        self.w_py = W.FloatSlider(value=0.0, min=lo, max=hi, step=0.1, description="poison x₂",
                                  continuous_update=True, style=st, layout=W.Layout(width="330px"))
        self.w_play = W.Play(value=0, min=0, max=max(1, self.settings.attack_steps), step=1, interval=120)
        self.w_step = W.IntSlider(value=0, min=0, max=max(1, self.settings.attack_steps), description="attack step",
                                  style=st, layout=W.Layout(width="330px"))
        W.jslink((self.w_play, "value"), (self.w_step, "value"))
        self.w_animate = W.Button(description="Animate path", icon="film",
                                  tooltip="play the attack's hyperiterations (server-side, works without a browser)")
        self.w_readout = W.HTML()
        self.w_status = W.HTML(value=self._html("Press Compute (or pass a precomputed illustration)."))
        self.w_progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="240px"))
        self.figures = {"no_reg": figure_widget(), "reg": figure_widget(), "lambda": figure_widget(),
                        "study": figure_widget(error_vs_fraction_figure(_empty_records()))}
        # ------------------------------------------------------------- study
        sd = {"dataset": "digits", "reps": 2, "steps": 20, "batches": 5, **(study_defaults or {})}
        self.w_dataset = W.Dropdown(options=["digits", "mnist", "fashion-mnist"], value=sd["dataset"],
                                    description="dataset", style=st, layout=W.Layout(width="200px"))
        self.w_reps = W.IntText(value=sd["reps"], description="repetitions", style=st, layout=W.Layout(width="150px"))
        self.w_steps = W.IntText(value=sd["steps"], description="hyperiterations", style=st,
                                 layout=W.Layout(width="170px"), tooltip="T_Dp = T_mul (paper: 100), T_λ = half")
        self.w_batches = W.IntText(value=sd["batches"], description="batches", style=st,
                                   layout=W.Layout(width="130px"))
        self.w_run = W.Button(description="Run study", icon="play", button_style="success")
        self.w_stop = W.Button(description="Stop", icon="stop", button_style="danger", disabled=True)
        self.w_study_progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="240px"))
        self.w_table = W.HTML()
        self.w_export = W.Button(description="Export", icon="download")

        self.w_compute.on_click(lambda _: self.compute())
        self.w_animate.on_click(lambda _: self.animate())
        self.w_run.on_click(lambda _: self.run_study())
        self.w_stop.on_click(lambda _: self._stop.set())
        self.w_export.on_click(lambda _: self._export_clicked())
        self.w_px.observe(lambda _: self.place_poison(), names="value")
        self.w_py.observe(lambda _: self.place_poison(), names="value")
        self.w_step.observe(lambda ch: self.show_attack_step(ch["new"]), names="value")

        two_d = W.VBox([
            W.HBox([self.w_seed, self.w_grid, self.w_compute, self.w_progress]),
            W.HBox([guard(self.figures["no_reg"]), guard(self.figures["reg"])]),
            W.HBox([W.VBox([self.w_px, self.w_py, self.w_readout]),
                    W.VBox([W.HBox([self.w_play, self.w_animate]), self.w_step])]),
            guard(self.figures["lambda"]),
        ])
        study = W.VBox([W.HBox([self.w_dataset, self.w_reps, self.w_steps, self.w_batches]),
                        W.HBox([self.w_run, self.w_stop, self.w_study_progress]), guard(self.figures["study"]),
                        self.w_table])
        self.w_tabs = W.Tab(children=[two_d, study])
        self.w_tabs.set_title(0, "2-D illustration (Fig. 1)")
        self.w_tabs.set_title(1, "study (Fig. 2)")
        self.widget = W.VBox([self.w_tabs, W.HBox([self.w_export, self.w_status])])
        if illustration is not None:
            self.set_illustration(illustration)

    # ----------------------------------------------------------------- 2-D
    def compute(self, wait: bool = False) -> None:
        """Compute the illustration for the seed and grid in the widgets (background thread unless ``wait``)."""
        s = IllustrationSettings(**{**self.settings.__dict__, "grid": int(self.w_grid.value)})

        def work():
            try:
                self._say("Computing the attack and the maps ...")
                t0 = time.perf_counter()
                ill = illustrate(int(self.w_seed.value), s,
                                 progress=lambda stage, f: setattr(
                                     self.w_progress, "value",
                                     {"attack": 0.6, "maps": 0.1, "lambda": 0.3}[stage] * f
                                     + {"attack": 0, "maps": 0.6, "lambda": 0.7}[stage]))
                self.settings = s
                self.set_illustration(ill)
                self._say(f"Done in {time.perf_counter() - t0:.1f} s (maps {ill.seconds.get('maps', 0):.2f} s, "
                          f"λ map {ill.seconds.get('lambda_map', 0):.2f} s). Move the sliders.", "#1b5e20")
            except Exception as e:  # pragma: no cover - reported in the status line
                self.errors.append(traceback.format_exc())
                self._say(f"Compute failed: {e}", "#b00020")

        self._run(work, wait)

    def set_illustration(self, ill: Illustration) -> None:
        """Show ``ill``: both map panels, the λ map, sliders at the attack's final point."""
        self.illustration = ill
        for which in _PANELS:
            f = poison_map_figure(ill, which)
            f.update_layout(width=560, height=520)
            _replace(self.figures[which], f)
        f = lambda_map_figure(ill)
        f.update_layout(width=560, height=520)
        _replace(self.figures["lambda"], f)
        self.figures["lambda"].add_scatter(x=[0], y=[0], mode="markers", name="poisoning point",
                                           marker=dict(color="#D62728", size=12, symbol="star"))
        n = len(ill.attacks["no_reg"]["path"]) - 1
        self.w_step.max = self.w_play.max = max(1, n)
        end = ill.attacks["no_reg"]["path"][-1]
        with self.w_px.hold_trait_notifications(), self.w_py.hold_trait_notifications():
            self.w_px.value, self.w_py.value = float(end[0]), float(end[1])
        self.place_poison()

    def place_poison(self, x: float | None = None, y: float | None = None) -> dict:
        """Put the poisoning point at ``(x, y)`` (default: the sliders), retrain both models, redraw.

        Returns:
            ``{which: {"val_error", "val_loss", "theta"}}`` for ``no_reg`` and ``reg``.
        """
        ill = self.illustration
        if ill is None:
            return {}
        if x is not None:
            self.w_px.value = x
        if y is not None:
            self.w_py.value = y
        p = (float(self.w_px.value), float(self.w_py.value))
        d = ill.data
        x_tr = torch.tensor(d["x_tr"], dtype=torch.float64)
        y_tr = torch.tensor(d["y_tr"], dtype=torch.float64)
        xv = torch.tensor(d["x_val"], dtype=torch.float64)
        yv = torch.tensor(d["y_val"], dtype=torch.float64)
        xs = torch.cat([x_tr, torch.tensor([p], dtype=torch.float64)])
        ys = torch.cat([y_tr, y_tr.new_tensor([float(ill.maps.y_p)])])
        s = IllustrationSettings(**ill.settings)
        out, parts = {}, []
        for which in _PANELS:
            ll = -math.inf if which == "no_reg" else s.log_lam_reg
            th = fit_eval(xs, ys, ll, s)
            out[which] = {"val_error": float(error_rate(th, xv, yv)), "val_loss": float(val_loss(th, xv, yv)),
                          "theta": th.tolist()}
            fig = self.figures[which]
            bx, by = boundary_xy(th.tolist(), s.box)
            with fig.batch_update():
                for tr in fig.data:
                    if tr.name == "boundary, poisoned":
                        tr.x, tr.y = bx, by
                    elif tr.name and tr.name.startswith("poisoning point"):
                        tr.x, tr.y = [p[0]], [p[1]]
            parts.append(f"{PANEL_TITLES[which]}: validation error {out[which]['val_error']:.3f} "
                         f"(clean {ill.attacks[which]['val_error_clean']:.3f})")
        lam_fig = self.figures["lambda"]
        if lam_fig.data:
            lam_fig.data[-1].x, lam_fig.data[-1].y = [p[0]], [p[1]]
        self.w_readout.value = "<br>".join(html.escape(t) for t in parts)
        return out

    def show_attack_step(self, k: int) -> None:
        """Draw the attack path up to hyperiteration ``k`` and put the point there (both panels)."""
        ill = self.illustration
        if ill is None:
            return
        for which in _PANELS:
            path = np.asarray(ill.attacks[which]["path"])
            k_ = int(min(max(k, 0), len(path) - 1))
            fig = self.figures[which]
            with fig.batch_update():
                for tr in fig.data:
                    if tr.name == "attack path":
                        tr.x, tr.y = path[: k_ + 1, 0], path[: k_ + 1, 1]
        pk = np.asarray(ill.attacks["no_reg"]["path"])[int(min(k, len(ill.attacks["no_reg"]["path"]) - 1))]
        with self.w_px.hold_trait_notifications(), self.w_py.hold_trait_notifications():
            self.w_px.value, self.w_py.value = float(pk[0]), float(pk[1])
        self.place_poison()

    def animate(self, delay: float = 0.08, wait: bool = False) -> None:
        """Step through the attack path server-side (``delay`` seconds per hyperiteration)."""
        ill = self.illustration
        if ill is None:
            self._say("Compute the illustration first.", "#b00020")
            return

        def work():
            for k in range(len(ill.attacks["no_reg"]["path"])):
                self.w_step.value = k
                time.sleep(delay)

        self._run(work, wait)

    # ----------------------------------------------------------------- study
    def run_study(self, wait: bool = False, **overrides) -> None:
        """Run the study with the widget settings (``overrides``: more :class:`StudySettings` fields)."""
        from ..bilevel.cli import markdown_table
        from ..bilevel.study import paper_settings, run_study, study_folder

        steps = int(self.w_steps.value)
        try:
            s = paper_settings(self.w_dataset.value, reps=int(self.w_reps.value), n_batches=int(self.w_batches.value),
                               steps_xp=steps, steps_mul=steps, steps_lambda=max(1, steps // 2), **overrides)
        except ValueError as e:
            self._say(str(e), "#b00020")
            return
        self._stop.clear()
        total = s.reps * len(s.strategies) * (s.n_batches + 1)
        self.w_study_progress.max, self.w_study_progress.value = total, 0
        records: list[dict] = []

        def progress(e):
            if e["kind"] == "record":
                records.append(e)
                self.w_study_progress.value = min(total, self.w_study_progress.value + 1)
                self._say(f"rep {e['rep'] + 1}/{s.reps} · {e['label']} · {e['n_poison']} poisoning points · "
                          f"test error {e['test_error']:.4f}")
            else:
                import pandas as pd
                _replace(self.figures["study"], error_vs_fraction_figure(pd.DataFrame(records)))

        def work():
            self.w_run.disabled, self.w_stop.disabled = True, False
            try:
                self.study = run_study(s, study_folder(self.study_root, s), progress=progress,
                                       should_stop=self._stop.is_set)
                if len(self.study.records):
                    _replace(self.figures["study"], error_vs_fraction_figure(self.study.records))
                    self.w_table.value = _md_to_html(markdown_table(self.study.records))
                self._say(("Stopped" if self._stop.is_set() else "Finished") +
                          f": results in {study_folder(self.study_root, s)}", "#1b5e20")
            except Exception as e:  # pragma: no cover - reported in the status line
                self.errors.append(traceback.format_exc())
                self._say(f"Study failed: {e}", "#b00020")
            finally:
                self.w_run.disabled, self.w_stop.disabled = False, True

        self._run(work, wait)

    # ----------------------------------------------------------------- misc
    def export(self, path=None, formats=("html", "png")) -> list[Path]:
        """Write the map panels, the λ map and the study figure to ``path`` (a folder; default ``study_root``)."""
        out = Path(path) if path is not None else self.study_root
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, fig in self.figures.items():
            if fig.data:
                written += self._export(go.Figure(fig), out / f"bilevel_{name}", formats)
        return written

    def _run(self, fn, wait: bool) -> None:
        if wait:
            fn()
            return
        self._thread = threading.Thread(target=fn, daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background work (Compute / Animate / Run study) ends."""
        if self._thread is not None:
            self._thread.join(timeout)


def _replace(target: go.FigureWidget, fig: go.Figure) -> None:
    with target.batch_update():
        target.data = []
        target.add_traces(list(fig.data))
        target.layout = fig.layout


def _empty_records():
    import pandas as pd

    return pd.DataFrame(columns=["strategy", "fraction", "test_error"])


def _md_to_html(md: str) -> str:
    rows = [r.strip("|").split("|") for r in md.splitlines() if not set(r) <= set("|-")]
    head, body = rows[0], rows[1:]
    th = "".join(f"<th style='padding:2px 8px'>{html.escape(c.strip())}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{html.escape(c.strip())}</td>" for c in r) + "</tr>"
                  for r in body)
    return f"<table><tr>{th}</tr>{trs}</table>"
