"""AnalysisPanel: pick a run (two for interpolation), an analysis and its parameters; watch it fill in.

Thin wiring over :func:`workbench.analysis.tasks.analyze`: the analysis runs
on a background thread, its progress reports (Ritz values as Lanczos
iterates, interpolation points as they are computed, plane rows, running
sharpness means) are drawn with :func:`workbench.viz.progress_figure` at most a
few times per second, and the finished result is drawn with
:func:`workbench.viz.result_figure`, overlaid with earlier results of the same
analysis (e.g. the top eigenvalues of the SGD and the SAM run). Results are
saved in the run folder; asking again loads them instead of recomputing.

All of this is drawn on one ``FigureWidget``; each drawing replaces the
previous figure's layout (:func:`workbench.ui.live.sync_figure`), so switching
analyses (or runs) never keeps another analysis' subplot titles, lines, second
axes or sliders. While an analysis runs, the title ends in "— computing…".
Slice and plane figures state the settings of the result they show (directions,
normalisation, α range / span and points, BatchNorm mode, examples, seed) under
the title, read from the result itself, not from the widgets.

The analyses, their descriptions, parameters (defaults and choices), whether they need a second run,
overlay several runs or can be timed for an estimate all come from the analysis registry
(:mod:`workbench.analysis_registry`): an analysis registered there is listed here without an edit.
"""
from __future__ import annotations

import html
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

import ipywidgets as W

from ..analysis.tasks import AnalysisOutput, AnalysisStopped, Progress, analyze
from ..analysis_registry import analysis_names, get_entry
from ..config import yaml_load
from ..runs import list_runs
from ..viz import progress_figure, result_figure
from ..viz.results import ANALYSIS_TITLES, COMPUTING
from .base import ClassroomControls, PanelBase, estimates_enabled, figure_widget, guard
from .live import sync_figure

__all__ = ["AnalysisPanel"]


def _widget_for(name: str, value: Any, choices: list | None) -> W.Widget:
    st = {"description_width": "initial"}
    if choices:
        return W.Dropdown(options=choices, value=value, description=name, style=st, layout=W.Layout(width="auto"))
    if isinstance(value, bool):
        return W.Checkbox(value=value, description=name, indent=False, layout=W.Layout(width="auto"))
    if isinstance(value, int):
        return W.IntText(value=value, description=name, style=st, layout=W.Layout(width="150px"))
    if isinstance(value, float):
        return W.FloatText(value=value, description=name, style=st, layout=W.Layout(width="170px"))
    text = "null" if value is None else (str(value) if not isinstance(value, (list, tuple)) else
                                         "[" + ", ".join(str(v) for v in value) + "]")
    return W.Text(value=text, description=name, style=st, layout=W.Layout(width="230px"))


def _read(widget: W.Widget, default: Any) -> Any:
    v = widget.value
    if isinstance(widget, W.Text) and not isinstance(default, str):
        return yaml_load(v)
    return v


class AnalysisPanel(PanelBase):
    """Run analyses on stored runs, live, from a notebook.

    Args:
        root: runs root folder (the same as the training panel's).
        what: analysis selected at start.
        interval: minimum seconds between live figure redraws.

    Attributes:
        figure: the ``FigureWidget``; outputs: ``{what: [AnalysisOutput, ...]}``
        of this session; widget: the whole panel.
    """

    def __init__(self, root: str | Path = "runs", *, what: str = "hessian", interval: float = 0.3):
        self.root = Path(root)
        self.interval = interval
        st = {"description_width": "initial"}
        self.w_run = W.Dropdown(options=[], description="run (θ₁)", style=st, layout=W.Layout(width="480px"))
        self.w_other = W.Dropdown(options=[], description="second run (θ₂)", style=st,
                                  layout=W.Layout(width="480px"))
        self.w_checkpoint = W.Dropdown(options=["last.pt"], value="last.pt", description="checkpoint", style=st)
        self.w_refresh = W.Button(description="Refresh runs", icon="refresh")
        self.w_what = W.Dropdown(options=list(analysis_names()), value=what, description="analysis", style=st)
        self.w_desc = W.HTML()
        self.w_split = W.Dropdown(options=["train", "val", "test"], value="train", description="split", style=st)
        self.w_count = W.IntText(value=-1, description="examples (-1 default, 0 all)", style=st,
                                 layout=W.Layout(width="260px"))
        self.w_seed = W.IntText(value=0, description="seed", style=st, layout=W.Layout(width="120px"))
        self.w_force = W.Checkbox(value=False, description="recompute", indent=False)
        self.w_params = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self._param_widgets: dict[str, W.Widget] = {}
        self.w_start = W.Button(description="Run", button_style="success", icon="play")
        self.w_stop = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.w_clear = W.Button(description="Clear", icon="trash", tooltip="Forget the results shown for this analysis")
        self.w_export = W.Button(description="Export", icon="download")
        self.w_progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="320px"))
        self.w_progress_text = W.Label(value="idle")
        self.w_status = W.HTML(value=self._html("Pick a run and an analysis, then press Run."))
        self.w_table = W.HTML()
        # how finished results are drawn (no recomputation)
        self.w_view = W.Dropdown(options=["contour", "surface"], value="contour", description="plane view",
                                 style=st, layout=W.Layout(width="200px"))
        self.w_metric = W.Dropdown(options=[("loss", "loss"), ("accuracy", "acc")], value="loss",
                                   description="metric", style=st, layout=W.Layout(width="180px"))
        self.w_log = W.Checkbox(value=False, description="log scale", indent=False, layout=W.Layout(width="100px"))
        for w in (self.w_view, self.w_metric, self.w_log):
            w.observe(lambda _c: self._draw_results(), names="value")
        self.figure = figure_widget(progress_figure(what, {}))
        self.outputs: dict[str, list[AnalysisOutput]] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._done.set()
        self._latest: Progress | None = None
        self._lock = threading.Lock()
        self._draw_lock = threading.RLock()  # one figure update at a time (UI thread, ticker, worker)
        self._finishing = False

        for name, w in {"run": self.w_run, "other": self.w_other, "checkpoint": self.w_checkpoint,
                        "what": self.w_what, "split": self.w_split, "count": self.w_count, "seed": self.w_seed,
                        "start": self.w_start, "stop": self.w_stop, "export": self.w_export, "clear": self.w_clear,
                        "progress-text": self.w_progress_text, "status": self.w_status,
                        "params": self.w_params, "table": self.w_table, "view": self.w_view,
                        "metric": self.w_metric, "log": self.w_log}.items():
            w.add_class(f"wb-an-{name}")
        self.figure.add_class("wb-an-figure")
        self.w_refresh.on_click(lambda _b: self.refresh_runs())
        self.w_what.observe(lambda _c: self._on_what(), names="value")
        self.w_run.observe(lambda _c: self._on_run(), names="value")
        self.w_start.on_click(lambda _b: self.start())
        self.w_stop.on_click(lambda _b: self.stop())
        self.w_clear.on_click(lambda _b: self.clear())
        self.w_export.on_click(lambda _b: self._export_clicked())
        self.classroom = ClassroomControls(
            self, {"what": self.w_what, "split": self.w_split, "count": self.w_count, "seed": self.w_seed,
                   "force": self.w_force},
            heavier={"count": 0}, describe="all examples of the split", estimate=None)
        self.w_heavier_note = W.HTML()
        self.widget = W.VBox([
            W.HBox([self.w_run, self.w_checkpoint, self.w_refresh], layout=W.Layout(flex_flow="row wrap")),
            self.w_other,
            W.HBox([self.w_what, self.w_desc]),
            W.HBox([self.w_split, self.w_count, self.w_seed, self.w_force], layout=W.Layout(flex_flow="row wrap")),
            self.w_params,
            W.HBox([self.w_start, self.w_stop, self.w_clear, self.w_export, self.classroom.widget, self.w_progress,
                    self.w_progress_text], layout=W.Layout(flex_flow="row wrap")),
            self.w_status, W.HBox([self.w_metric, self.w_view, self.w_log]), guard(self.figure), self.w_table,
        ])
        self.widget.add_class("wb-analysis-panel")
        self._estimate_key = None
        self.refresh_runs()
        self._on_what()

    # ------------------------------------------------------------- widgets
    def refresh_runs(self) -> None:
        """Re-read the runs under ``root`` (finished and stopped runs with a checkpoint)."""
        df = list_runs(self.root)
        opts = []
        for row in df.itertuples():
            if (Path(row.path) / "checkpoints" / "last.pt").is_file():
                opts.append((f"{row.name} · {row.status} · {row.run_id[:15]}", row.path))
        cur, cur_o = self.w_run.value, self.w_other.value
        self.w_run.options = opts
        self.w_other.options = [("(none)", None)] + opts
        if cur in [o[1] for o in opts]:
            self.w_run.value = cur
        elif opts:
            self.w_run.value = opts[0][1]
        if cur_o in [o[1] for o in opts]:
            self.w_other.value = cur_o
        elif len(opts) > 1:
            self.w_other.value = opts[1][1]
        self._on_run()

    def select(self, run: str | Path | None = None, other: str | Path | None = None) -> None:
        """Select runs by folder (e.g. from a ``TrainResult.run_path``)."""
        self.refresh_runs()
        if run is not None:
            self.w_run.value = str(run)
        if other is not None:
            self.w_other.value = str(other)

    def heavier_estimate(self, wait: float | None = None):
        """Estimate (timed probe) of the selected analysis on all examples of the split; starts it if needed.

        Returns the :class:`~workbench.app.estimate.Estimate` (None while it is being measured, or when no
        run is selected); ``wait`` seconds to block for it.
        """
        run, what = self.w_run.value, self.w_what.value
        if not run or not get_entry(what).estimate or not estimates_enabled():
            self.classroom.w_heavier.description = f"Heavier: {self.classroom.describe}"
            return None
        key = (run, what, self.w_split.value, self.w_other.value if get_entry(what).needs_other else None)
        if key != self._estimate_key:
            self._estimate_key = key
            self.classroom.estimate = None
            self.classroom.w_heavier.description = f"Heavier: {self.classroom.describe} (estimating …)"
            done = threading.Event()
            self._estimate_done = done
            try:
                params = self.params()
            except Exception:
                params = None

            def main():
                try:
                    from ..app.estimate import estimate_analysis
                    from ..runs import load_run

                    n = {"train": "train", "val": "val", "test": "test"}[key[2]]
                    size = int(load_run(run).status.get("split_sizes", {}).get(n, 0) or 0)
                    est = estimate_analysis(what, run, size or 2048, split=key[2], other=key[3], params=params)
                    if self._estimate_key == key:
                        self.classroom.estimate = est
                        self.classroom.w_heavier.description = (f"Heavier: {self.classroom.describe} "
                                                                f"({size} · {est.label})")
                        self.classroom.w_heavier.tooltip = est.detail
                except Exception as e:  # an estimate must never break the panel
                    self.classroom.estimate_error = f"{type(e).__name__}: {e}"
                    self.classroom.w_heavier.description = f"Heavier: {self.classroom.describe}"
                finally:
                    done.set()

            threading.Thread(target=main, name="workbench-estimate", daemon=True).start()
        if wait:
            self._estimate_done.wait(wait)
        return self.classroom.estimate

    def _on_run(self) -> None:
        run = self.w_run.value
        cks = sorted(p.name for p in (Path(run) / "checkpoints").glob("*.pt")) if run else []
        self.w_checkpoint.options = cks or ["last.pt"]
        self.w_checkpoint.value = "last.pt" if "last.pt" in self.w_checkpoint.options else self.w_checkpoint.options[0]
        if hasattr(self, "classroom") and not self.running:
            self.heavier_estimate()

    def _on_what(self) -> None:
        what = self.w_what.value
        entry = get_entry(what)
        self.w_desc.value = self._html(entry.description, "#555")
        self._param_widgets = {k: _widget_for(k, v, list(entry.choices[k]) if k in entry.choices else None)
                               for k, v in entry.defaults.items()}
        for k, w in self._param_widgets.items():
            w.add_class(f"wb-an-param-{k}")
        self.w_params.children = list(self._param_widgets.values())
        self.w_other.layout.display = None if entry.needs_other else "none"
        self._draw_results()
        if hasattr(self, "classroom") and not self.running:
            self.heavier_estimate()

    def params(self) -> dict:
        """The parameter values currently in the widgets."""
        defaults = get_entry(self.w_what.value).defaults
        return {k: _read(w, defaults[k]) for k, w in self._param_widgets.items()}

    # ------------------------------------------------------------- actions
    @property
    def running(self) -> bool:
        """Whether an analysis is being computed in the background."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Run the selected analysis in the background; False (with a message) when refused."""
        if self.running:
            self._say("An analysis is already in progress on this figure: press Stop first (or wait for it).",
                      "#b35900")
            return False
        what = self.w_what.value
        if not self.w_run.value:
            self._say(f"No run with a checkpoint under {self.root}/: train one first (TrainingPanel).", "#b00020")
            return False
        needs_other = get_entry(what).needs_other
        if needs_other and not self.w_other.value:
            self._say(f"{get_entry(what).title} needs a second run (θ₂).", "#b00020")
            return False
        try:
            params = self.params()
        except Exception as e:
            self._say(f"Invalid parameter: {e}", "#b00020")
            return False
        kwargs = dict(other=self.w_other.value if needs_other else None,
                      checkpoint=self.w_checkpoint.value, split=self.w_split.value,
                      count=None if self.w_count.value == 0 else int(self.w_count.value), seed=int(self.w_seed.value),
                      params=params, force=bool(self.w_force.value))
        self._stop.clear()
        self._done.clear()
        self._finishing = False
        self._latest = None
        # the previous analysis' figure goes at once: an empty figure titled "<analysis> — computing…"
        self._draw(progress_figure(what, {}))
        self.w_start.disabled, self.w_stop.disabled = True, False
        self.w_progress.value, self.w_progress.bar_style = 0.0, "info"
        self._say(f"Running {what} ...")
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._main, args=(what, self.w_run.value, kwargs),
                                        name="workbench-analysis", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """Ask the running analysis to stop at its next progress point."""
        self._stop.set()
        self._say("Stopping at the next progress point ...", "#b35900")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running analysis has finished (for scripts and tests)."""
        ok = self._done.wait(timeout)
        if ok and self._thread is not None:
            self._thread.join(timeout)
        return ok

    def show(self, outputs: Sequence[AnalysisOutput]) -> None:
        """Draw finished results (e.g. :func:`~workbench.analysis.tasks.analyze` outputs from a results pack).

        All outputs must be of one analysis; it is selected, and the run of the first one too.

        Raises:
            ValueError: no outputs, or outputs of different analyses.
        """
        outputs = list(outputs)
        kinds = {o.what for o in outputs}
        if len(kinds) != 1:
            raise ValueError(f"show() needs outputs of one analysis, got {sorted(kinds) or 'none'}")
        what = kinds.pop()
        self.outputs[what] = outputs
        run = outputs[0].path.parents[2] if outputs[0].path is not None else None
        if run is not None and str(run) in [o[1] for o in self.w_run.options]:
            self.w_run.value = str(run)
        if self.w_what.value != what:
            self.w_what.value = what  # draws
        else:
            self._draw_results()
        self._say(f"Showing {len(outputs)} saved {what} result(s): press Run to compute with other settings.")

    def clear(self) -> None:
        """Forget the selected analysis's results and redraw."""
        self.outputs.pop(self.w_what.value, None)
        self._draw_results()

    def export(self, path: str | Path | None = None, formats=("html", "png")) -> list[Path]:
        """Write the selected analysis's figure to ``path`` (default ``<root>/exports/<what>-<time>``) per format.

        Raises:
            ValueError: no results of the selected analysis yet.
        """
        what = self.w_what.value
        outs = self._shown(what)
        if not outs:
            raise ValueError(f"no {what} results to export yet")
        fig = result_figure(what, outs, kind=self.w_view.value, metric=self.w_metric.value, log_y=self.w_log.value)
        stem = Path(path) if path else self.root / "exports" / time.strftime(f"{what}-%Y%m%d-%H%M%S")
        return self._export(fig, stem, formats)

    # ------------------------------------------------------------ worker
    def _main(self, what: str, run: str, kwargs: dict) -> None:
        ticker = threading.Thread(target=self._tick, daemon=True)
        ticker.start()
        try:
            out = analyze(what, run, callback=self._on_progress, stop=self._stop, **kwargs)
            keep = [o for o in self.outputs.get(what, []) if o.path != out.path] if get_entry(what).overlay else []
            self.outputs[what] = keep + [out]
            self._finish(out)
        except AnalysisStopped as e:
            self._finish(None, stopped=str(e))
        except Exception as e:
            self.errors.append(traceback.format_exc())
            self._finish(None, error=f"{type(e).__name__}: {e}")

    def _on_progress(self, p: Progress) -> None:
        with self._lock:
            self._latest = p

    def _tick(self) -> None:
        drawn = None
        while not self._done.is_set():
            time.sleep(self.interval)
            with self._lock:
                p = self._latest
            if p is None or p is drawn or self._done.is_set() or self._finishing:
                continue
            drawn = p
            try:
                self.w_progress.value = min(p.done / max(p.total, 1), 1.0)
                self.w_progress_text.value = (f"{p.done}/{p.total} · {time.monotonic() - self._t0:.1f} s"
                                              + (f" · {p.message}" if p.message else ""))
                if p.data and p.what == self.w_what.value:  # not over another analysis the user looks at
                    fig = progress_figure(p.what, p.data, label="")
                    with self._draw_lock:
                        if not self._finishing:  # never over the final figure
                            self._draw(fig)
            except Exception:
                pass

    def _finish(self, out: AnalysisOutput | None, *, stopped: str | None = None, error: str | None = None) -> None:
        with self._draw_lock:
            self._finishing = True
        self.w_start.disabled, self.w_stop.disabled = False, True
        if out is not None:
            self.w_progress.value, self.w_progress.bar_style = 1.0, "success"
            self.w_progress_text.value = f"done in {out.seconds:.1f} s" + (" (saved result)" if out.cached else "")
            self._draw_results()
            self._say(("Loaded the saved result: " if out.cached else "Saved: ") + str(out.path), "#1b5e20")
        elif stopped:
            self.w_progress.bar_style = "warning"
            self._retitle(" — stopped")  # the partial figure stays, no longer "computing…"
            self._say(f"Stopped: {stopped}. Nothing was saved.", "#b35900")
        else:
            self.w_progress.bar_style = "danger"
            self._retitle(" — failed")
            self._say(f"Failed: {error}", "#b00020")
        self._done.set()

    def _shown(self, what: str) -> list[AnalysisOutput]:
        return list(self.outputs.get(what, []))

    def _draw(self, fig) -> None:
        """Show ``fig`` on the panel's figure: its layout replaces the previous one.

        No annotations, shapes, second axes or sliders of another analysis survive; traces are updated in place
        when only the data changed (:func:`~workbench.ui.live.sync_figure`).
        """
        with self._draw_lock:
            sync_figure(self.figure, fig)

    def _retitle(self, suffix: str) -> None:
        with self._draw_lock:
            text = self.figure.layout.title.text or ""
            if text.endswith(COMPUTING):
                self.figure.layout.title.text = text[: -len(COMPUTING)] + suffix

    def _draw_results(self) -> None:
        from ..viz import summary_rows

        what = self.w_what.value
        outs = self._shown(what)
        if not outs:
            fig = progress_figure(what, {})
            fig.layout.title.text = f"{ANALYSIS_TITLES.get(what, what)}: no result yet: press Run"
            self._draw(fig)
            self.w_table.value = ""
            return
        self._draw(result_figure(what, outs, kind=self.w_view.value, metric=self.w_metric.value,
                                 log_y=self.w_log.value))
        rows = summary_rows(what, outs)
        cols = list(dict.fromkeys(k for r in rows for k in r))
        cell = lambda v: f"{v:.5g}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
        head = "".join(f"<th style='padding:2px 8px'>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{cell(r.get(c, ''))}</td>" for c in cols)
                       + "</tr>" for r in rows)
        self.w_table.value = f"<table style='font-size:12px'><tr>{head}</tr>{body}</table>"
