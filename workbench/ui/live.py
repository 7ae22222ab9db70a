"""Live figure updates: trainer events -> buffers -> throttled FigureWidget redraws.

The training thread only appends to buffers under a lock (microseconds per
event); a separate refresher thread redraws at most every ``interval`` seconds
with the same series the static builder uses (:func:`workbench.viz.curve_series`),
so live and exported figures are identical.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import plotly.graph_objects as go

from ..training.events import EpochEnd, RunStarted, StepEnd
from ..viz.curves import METRICS, CurveData, curve_series, series_trace

__all__ = ["LiveCurves"]


class LiveCurves:
    """Collects events of any number of runs and redraws a ``FigureWidget``.

    Args:
        figure: a ``plotly.graph_objects.FigureWidget`` built by
            :func:`workbench.viz.training_curves` (its subplot layout is reused).
        per_step: also draw per-step (mini-batch) training curves.
        interval: minimum seconds between redraws.
        on_refresh: optional ``fn()`` called by the refresher after each redraw
            (the panel uses it to update its progress bar).
    """

    def __init__(self, figure: go.FigureWidget, *, per_step: bool = True, interval: float = 0.5,
                 metrics=METRICS, on_refresh: Callable[[], None] | None = None):
        self.figure = figure
        self.per_step = per_step
        self.interval = interval
        self.metrics = tuple(metrics)
        self.on_refresh = on_refresh
        self._runs: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._alive = False
        self._thread: threading.Thread | None = None
        self.redraws = 0

    # -------------------------------------------------------------- events
    def __call__(self, ev) -> None:
        """Trainer callback: record a ``RunStarted``, ``StepEnd`` (when ``per_step``) or ``EpochEnd`` event.

        Thread-safe and cheap: it only stores the metrics and marks the figure dirty; the refresher thread redraws.
        Other events are ignored.
        """
        if isinstance(ev, RunStarted):
            with self._lock:
                self._runs.setdefault(ev.run_id, {"name": ev.name, "epochs": [], "steps": []})
        elif isinstance(ev, StepEnd):
            if self.per_step:
                with self._lock:
                    r = self._runs.get(ev.run_id)
                    if r is not None:
                        r["steps"].append({"step": ev.step, "epoch": ev.epoch, **ev.metrics})
        elif isinstance(ev, EpochEnd):
            with self._lock:
                r = self._runs.get(ev.run_id)
                if r is not None:
                    r["epochs"].append(dict(ev.metrics))
        else:
            return
        self._dirty.set()

    def add_history(self, key: str, name: str, epochs: list[dict], steps: list[dict] = ()) -> None:
        """Show an already finished run (e.g. loaded from disk)."""
        with self._lock:
            self._runs[key] = {"name": name, "epochs": list(epochs), "steps": list(steps)}
        self._dirty.set()

    def clear(self, keep: set[str] | None = None) -> None:
        """Forget all runs except ``keep`` and remove their traces."""
        keep = keep or set()
        with self._lock:
            self._runs = {k: v for k, v in self._runs.items() if k in keep}
        with self.figure.batch_update():
            self.figure.data = [t for t in self.figure.data if (t.meta or {}).get("run") in keep]
        self._dirty.set()

    @property
    def run_keys(self) -> list[str]:
        """Keys (run ids) of the runs shown, in the order they were added."""
        with self._lock:
            return list(self._runs)

    # ------------------------------------------------------------- drawing
    def curves(self) -> list[CurveData]:
        """A snapshot of every run's recorded epochs and steps as :class:`CurveData`."""
        with self._lock:
            snap = [(k, v["name"], list(v["epochs"]), list(v["steps"])) for k, v in self._runs.items()]
        return [CurveData.from_records(name, ep, st, key=k) for k, name, ep, st in snap]

    def redraw(self) -> None:
        """Copy the current series into the figure (adds traces for new runs)."""
        self._dirty.clear()
        series = curve_series(self.curves(), metrics=self.metrics, per_step=self.per_step)
        # FigureWidget assigns its own trace uids; the series id travels in ``meta``.
        existing = {(t.meta or {}).get("series"): t for t in self.figure.data}
        new = []
        with self.figure.batch_update():
            for s in series:
                tr = existing.get(s.uid)
                if tr is None:
                    col = self.metrics.index(s.metric) + 1
                    new.append(series_trace(s, col, show_legend=(col == 1)))
                elif len(tr.x or ()) != len(s.x):
                    tr.x, tr.y = s.x, s.y
        if new:
            self.figure.add_traces(new)
        self.redraws += 1
        if self.on_refresh is not None:
            self.on_refresh()

    # ------------------------------------------------------- refresher loop
    def start(self) -> None:
        """Start the refresher thread (redraws at most every ``interval`` seconds while dirty); no-op if running."""
        if self._alive:
            return
        self._alive = True
        self._thread = threading.Thread(target=self._loop, name="workbench-live", daemon=True)
        self._thread.start()

    def stop(self, final: bool = True) -> None:
        """Stop the refresher thread (waits up to 5 s) and, with ``final``, draw the last state once more."""
        self._alive = False
        self._dirty.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if final:
            self.redraw()

    def _loop(self) -> None:
        last = 0.0
        while self._alive:
            self._dirty.wait(timeout=self.interval)
            if not self._alive:
                break
            wait = self.interval - (time.monotonic() - last)
            if wait > 0:
                time.sleep(wait)
            try:
                if self._dirty.is_set():
                    self.redraw()
                elif self.on_refresh is not None:  # keep the ETA ticking while idle
                    self.on_refresh()
            except Exception:  # a redraw problem must never kill the loop
                pass
            last = time.monotonic()


_UI_STATE = ("dragmode", "selections")
"""Layout keys a user sets from the browser (toolbar mode, box selections) that :func:`sync_figure` keeps when
the new figure does not set them."""


def _trace_keys(trace) -> set[str]:
    return set(trace.to_plotly_json()) - {"uid"}


def _drop_layout_keys(widget: go.FigureWidget, keys) -> None:
    """Remove top-level layout ``keys`` from ``widget`` and its browser views.

    Call it outside a batch: inside one plotly keeps an empty array. Arrays (annotations, shapes, sliders, ...)
    are removed by assigning None, which also empties plotly's cached element objects; other containers (xaxis2,
    ...) by a relayout with null, which removes the key.
    """
    containers = []
    for k in keys:
        if isinstance(widget.layout[k], tuple):
            widget.layout[k] = None
        else:
            containers.append(k)
    if containers:
        widget.plotly_relayout({k: None for k in containers})


def sync_figure(widget: go.FigureWidget, fig: go.Figure) -> None:
    """Make ``widget`` show ``fig`` (built by a pure builder), updating traces in place when possible.

    Live panels rebuild their figure from the data collected so far with the
    same builder the static export uses and call this to copy it over. Afterwards
    the widget's layout is exactly ``fig``'s: top-level layout keys ``fig`` does
    not set (another analysis' subplot titles and lines in ``annotations`` /
    ``shapes``, ``xaxis2``/``yaxis2``, ``sliders``, ``updatemenus``, ``barmode``,
    ...) are removed, in Python and (relayout with null or an empty array) in the
    browser view; only the user's toolbar state (:data:`_UI_STATE`) is kept. A merge
    (``layout.update``) alone would keep them. Traces are updated in place when
    their number, types and set of properties match (the same builder drawing
    more data: cheap live redraws), else replaced.

    Args:
        widget: the ``FigureWidget`` shown in the panel (modified in place).
        fig: the figure to show; not modified.
    """
    new_layout = fig.layout.to_plotly_json()
    stale = [k for k in widget.layout.to_plotly_json() if k not in new_layout and k not in _UI_STATE]
    same = len(widget.data) == len(fig.data) and all(
        a.type == b.type and _trace_keys(a) == _trace_keys(b) for a, b in zip(widget.data, fig.data))
    if same:
        _drop_layout_keys(widget, stale)
        with widget.batch_update():
            for a, b in zip(widget.data, fig.data):
                a.update(b.to_plotly_json(), overwrite=True)
            widget.layout.update(new_layout, overwrite=True)
        return
    with widget.batch_update():
        widget.data = []
    _drop_layout_keys(widget, stale)
    widget.add_traces(list(fig.data))
    with widget.batch_update():
        widget.layout.update(new_layout, overwrite=True)
