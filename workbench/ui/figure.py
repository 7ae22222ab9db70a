"""Live plotly figures for the panels: one shared front-end module, fresh state on reconnect, and a watchdog.

Why a live figure could stay blank
----------------------------------
A plotly ``FigureWidget`` is an anywidget. Its synced state carries plotly's whole front-end module (~5 MB of
JavaScript) as the string ``_esm``; the browser turns that string into a ``blob:`` URL and parses it once *per
figure*. anywidget gives every model **2 s** to load its module and initialise; after that it rejects the model's
``ready`` promise for good and drops every later message ("[anywidget] Failed to initialize model." in the browser
console). On a loaded machine, after a kernel restart or a page reload, parsing 5 MB takes longer than that: the
figure then renders its first state (empty axes) and ignores every update while training goes on.

A second cause shows up after reloading a tab or reopening a notebook: the browser rebuilds each figure from the
kernel's ``_widget_data``/``_widget_layout``, which plotly only refreshes when the figure itself is displayed, so a
re-created view started from a stale state and the next in-place update addressed traces it did not have.

What this module does about it
------------------------------
1. **One module URL.** :func:`figure_widget` gives each figure a ~1 kB module (a *shim*) that imports plotly's
   module from one URL on the page's own server (``WORKBENCH_PLOTLY_ESM``: app mode and ``workbench lab`` publish
   the file and set it, :func:`workbench.app.server.publish_plotly_module`). The browser fetches and parses the
   5 MB once per page; every other figure finds it in the module map and initialises in milliseconds.
   The variable may be a server-relative path (``files/runs/app/static/…``, resolved in the browser against the
   page's Jupyter base URL, so it works whatever host name the user typed) or an absolute ``http(s)`` URL.
2. **Fresh state on reconnect.** :class:`LiveFigure` refreshes its synced figure state whenever the front end asks
   for the full state (page load, reload, Voilà connecting), so a new view starts from what the kernel holds now.
3. **A watchdog.** Each update plotly sends carries an edit id that a working view acknowledges (its
   ``_js2py_traceDeltas`` reply). :class:`FigureGuard` watches for updates that stay unacknowledged for
   ``stall_after`` seconds while the figure is displayed and the kernel is free to hear the reply. Then it shows a
   visible notice and keeps drawing by another route: a static copy of the figure (plotly's MIME bundle in an
   ``Output`` widget, rendered by JupyterLab's/Voilà's plotly renderer, which has no such deadline), redrawn every
   ``mirror_every`` seconds while the figure changes. When a view acknowledges again (e.g. after a reload), the
   live figure comes back and the copy goes away.

No science here.
"""
from __future__ import annotations

import copy
import json
import os
import threading
import time
import weakref
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go
import plotly.io as pio

from ..app.server import PLOTLY_ESM_ENV

__all__ = ["LiveFigure", "FigureGuard", "figure_widget", "guard", "kernel_busy_for", "esm_shim",
           "PLOTLY_ESM_ENV", "STALL_AFTER", "MIRROR_EVERY"]

#: Seconds an update may stay unacknowledged by a displayed figure before the watchdog falls back.
STALL_AFTER = 6.0
#: Seconds between redraws of the static copy while the fallback is on.
MIRROR_EVERY = 3.0
_GRACE_AFTER_BUSY = 2.0   # replies queued while a cell ran are handled right after it: wait that long

_SHIM = """// workbench: load plotly's widget module once per page from the server (see workbench/ui/figure.py)
const SPEC = %(spec)s;
const KEY = "__workbenchPlotlyModule:" + SPEC;
function resolveSpec(spec) {
  if (/^https?:\\/\\//.test(spec)) return spec;
  let base = "/";
  try {
    const el = document.getElementById("jupyter-config-data");
    if (el) base = JSON.parse(el.textContent).baseUrl || "/";
  } catch (e) { /* not a Jupyter page: the server root */ }
  if (!base.endsWith("/")) base += "/";
  return new URL(base + spec.replace(/^\\/+/, ""), window.location.origin).href;
}
// fetch() (a same-origin GET carries the login cookie and no Origin header, which Jupyter's origin check would
// refuse for a module script), then import the text once; every figure of the page shares the promise
async function load(url) {
  const r = await fetch(url, {credentials: "same-origin"});
  if (!r.ok) throw new Error("[workbench] plotly's widget module: HTTP " + r.status + " from " + url);
  const blob = URL.createObjectURL(new Blob([await r.text()], {type: "text/javascript"}));
  try { return await import(blob); } finally { URL.revokeObjectURL(blob); }
}
if (!globalThis[KEY]) {
  const p = load(resolveSpec(SPEC));
  globalThis[KEY] = p;
  p.catch(() => { if (globalThis[KEY] === p) delete globalThis[KEY]; });   // let the next figure try again
}
const mod = await globalThis[KEY];
export default mod.default;
"""


def esm_shim(spec: str) -> str:
    """The small ES module each figure carries: it imports plotly's module from ``spec``.

    ``spec`` is a URL, or a path relative to the Jupyter server's base URL such as
    ``files/runs/app/static/plotly-widgetbundle-7.1.0.js``.
    """
    return _SHIM % {"spec": json.dumps(spec)}


# ----------------------------------------------------------------- kernel activity
class _KernelActivity:
    """When the kernel's main thread runs a cell (IPython ``pre_run_cell``/``post_run_cell``).

    Replies from the browser (button clicks, a figure's acknowledgements) are handled on that thread, so while a cell
    runs they wait; panels and the watchdog must not read that silence as a broken view.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.busy_since: float | None = None
        self.idle_since: float = time.monotonic()
        self._hooked = False

    def hook(self) -> bool:
        """Register the IPython callbacks once; False outside IPython."""
        if self._hooked:
            return True
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython is a dependency
            return False
        ip = get_ipython()
        if ip is None or not hasattr(ip, "events"):
            return False
        ip.events.register("pre_run_cell", self._pre)
        ip.events.register("post_run_cell", self._post)
        self._hooked = True
        return True

    def _pre(self, *_a) -> None:
        with self._lock:
            self.busy_since = time.monotonic()

    def _post(self, *_a) -> None:
        with self._lock:
            self.busy_since = None
            self.idle_since = time.monotonic()

    def busy_for(self) -> float:
        """Seconds the current cell has been running (0 when none is)."""
        with self._lock:
            return 0.0 if self.busy_since is None else time.monotonic() - self.busy_since

    def quiet_for(self) -> float:
        """Seconds since the kernel last finished a cell while no cell runs (0 while one runs)."""
        with self._lock:
            return 0.0 if self.busy_since is not None else time.monotonic() - self.idle_since


ACTIVITY = _KernelActivity()


def kernel_busy_for() -> float:
    """Seconds the kernel's main thread has been running the current cell (0 when idle or outside IPython)."""
    ACTIVITY.hook()
    return ACTIVITY.busy_for()


# ----------------------------------------------------------------- the figure
class LiveFigure(go.FigureWidget):
    """A ``plotly.graph_objects.FigureWidget`` that reports whether a browser view applies its updates.

    Use :func:`figure_widget` to make one (it picks the module source). Everything plotly's ``FigureWidget`` does
    works unchanged; in addition:

    * ``get_state()`` for the full state (a page connecting or reloading) first copies the current figure into the
      synced ``_widget_data``/``_widget_layout``, so new views start from the present figure;
    * :meth:`health` tells whether updates are acknowledged: ``"ok"``, ``"pending"`` (sent, not yet acknowledged,
      with the age of the oldest), ``"no view"`` (never displayed) or ``"busy"`` (the kernel is running a cell, so
      replies cannot arrive yet);
    * :attr:`guarded` is the figure inside a :class:`FigureGuard` (notice + figure + static fallback) for panels.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._wb_lock = threading.Lock()
        self._wb_pending: dict[int, float] = {}   # trace edit id -> monotonic time it was sent
        self._wb_acked = 0
        self._wb_last_ack: float | None = None
        self._wb_displayed = False
        self._wb_reconnects = 0
        self._wb_guard: FigureGuard | None = None
        self.observe(self._wb_on_sent, names="_last_trace_edit_id")
        self.observe(self._wb_on_ack, names="_js2py_traceDeltas")
        self._view_count = 0   # ask the front end to count views (ipywidgets' experimental view counter)

    # ------------------------------------------------------------- state
    def snapshot_state(self) -> None:
        """Copy the current figure into the synced initial state *without* sending it.

        The value is what a view created later (reload, second display, Voilà) starts from; views that already
        exist keep applying the one-shot update messages. Writing the stored values directly (not through the
        trait setters) keeps every redraw from re-sending the whole figure.
        """
        layout = copy.deepcopy(self._layout_obj._props)
        data = copy.deepcopy(self._data)
        tv = self._trait_values
        tv["_widget_layout"] = layout
        tv["_widget_data"] = data

    def get_state(self, key=None, drop_defaults=False):
        """The widget's state (ipywidgets); a full-state request also snapshots it and notes a reconnecting view."""
        if key is None and getattr(self, "_wb_lock", None) is not None:
            # the full state, after construction: a front end (re)connecting (page load, reload, Voilà)
            self.snapshot_state()
            self._wb_reconnected()
        return super().get_state(key, drop_defaults)

    def _repr_mimebundle_(self, **kwargs):
        self._wb_displayed = True
        return super()._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------- acknowledgements
    def _wb_on_sent(self, change) -> None:
        new = change.get("new")
        if isinstance(new, int) and new > self._wb_acked:
            with self._wb_lock:
                self._wb_pending.setdefault(new, time.monotonic())

    def _wb_on_ack(self, change) -> None:
        msg = change.get("new")
        if not isinstance(msg, dict) or "trace_edit_id" not in msg:
            return
        try:
            eid = int(msg["trace_edit_id"])
        except (TypeError, ValueError):
            return
        with self._wb_lock:
            self._wb_acked = max(self._wb_acked, eid)
            self._wb_pending = {k: t for k, t in self._wb_pending.items() if k > self._wb_acked}
            self._wb_last_ack = time.monotonic()
        g = self._wb_guard
        if g is not None:
            g._acknowledged()

    def _wb_reconnected(self) -> None:
        # a page (re)connected and will build new views from the fresh state: judge them afresh
        with self._wb_lock:
            self._wb_pending.clear()
            self._wb_reconnects += 1
        g = getattr(self, "_wb_guard", None)
        if g is not None:
            g._reconnected()

    @property
    def displayed(self) -> bool:
        """Whether the figure (or a panel holding it) was displayed, or the front end counted a view."""
        vc = self._view_count
        return self._wb_displayed or (isinstance(vc, int) and vc > 0)

    def health(self) -> tuple[str, float]:
        """Whether the browser keeps up with the figure's updates, as ``(state, seconds)``.

        ``("ok", s since the last acknowledgement or 0)``, ``("pending", age of the oldest unacknowledged
        update)``, ``("no view", 0)`` or ``("busy", s the current cell has run)``.
        """
        if not self.displayed:
            return "no view", 0.0
        busy = kernel_busy_for()
        with self._wb_lock:
            oldest = min(self._wb_pending.values()) if self._wb_pending else None
            last = self._wb_last_ack
        if oldest is None:
            return "ok", (time.monotonic() - last) if last is not None else 0.0
        if busy > 0:
            return "busy", busy
        quiet = ACTIVITY.quiet_for() if ACTIVITY._hooked else float("inf")
        age = time.monotonic() - oldest
        # replies queued during a cell arrive right after it: count the age from then at the earliest
        return "pending", min(age, max(quiet - _GRACE_AFTER_BUSY, 0.0)) if quiet != float("inf") else age

    @property
    def guarded(self) -> "FigureGuard":
        """This figure inside a :class:`FigureGuard` (made once); put ``fig.guarded.widget`` in a panel."""
        if self._wb_guard is None:
            self._wb_guard = FigureGuard(self)
        return self._wb_guard


_FIGURE_CLASSES: dict[str, type] = {}


def figure_widget(figure: Any = None) -> go.FigureWidget:
    """A :class:`LiveFigure` showing ``figure`` (a ``go.Figure``, a dict, or None for an empty one).

    Module source: with ``WORKBENCH_PLOTLY_ESM`` set (app mode and ``workbench lab`` set it) the figure carries a
    ~1 kB shim that imports plotly's module from that one URL or server path (see the module docstring); without it,
    plotly's own ~5 MB module as usual. A panel adds ``figure_widget(...).guarded.widget`` to its layout.
    """
    spec = os.environ.get(PLOTLY_ESM_ENV, "").strip()
    cls = _FIGURE_CLASSES.get(spec)
    if cls is None:
        attrs: dict[str, Any] = {"__module__": __name__}
        if spec:
            attrs["_esm"] = esm_shim(spec)
        cls = _FIGURE_CLASSES[spec] = type("LiveFigure", (LiveFigure,), attrs)
    return cls(figure)


# ----------------------------------------------------------------- the guard
_NOTICE = ("The live figure did not start in this browser tab (its plotly module did not load in time, e.g. on a "
           "busy computer), so a copy redrawn every {every:g} s is shown below; it follows the run. Reload the page "
           "to get the interactive figure back.")


class FigureGuard:
    """A live figure with a visible notice and a static fallback, watched by one background thread.

    ``widget`` is a ``VBox`` of (notice, the live figure, the static copy). While the live figure works only the
    figure shows. When updates stay unacknowledged for ``stall_after`` s (see :meth:`LiveFigure.health`), the notice
    appears, the live figure is hidden and the copy (plotly's MIME bundle in an ``Output``) is redrawn every
    ``mirror_every`` s while the figure changes. An acknowledgement or a page reconnecting restores the live figure.

    Args:
        figure: the :class:`LiveFigure`.
        stall_after: seconds without acknowledgement before falling back.
        mirror_every: seconds between redraws of the copy.
    """

    def __init__(self, figure: LiveFigure, *, stall_after: float = STALL_AFTER, mirror_every: float = MIRROR_EVERY):
        self.figure = figure
        self.stall_after = float(stall_after)
        self.mirror_every = float(mirror_every)
        self.fallback = False
        self.fallbacks = 0          # how many times the fallback was switched on
        self.mirror_draws = 0       # how many static copies were sent
        self._mirrored_at = 0.0
        self._mirrored_id: tuple[int, int] | None = None
        self.w_notice = W.HTML(value="", layout=W.Layout(display="none"))
        self.w_notice.add_class("wb-figure-notice")
        self.w_live = W.Box([figure])
        self.w_live.add_class("wb-figure-live")
        self.w_mirror = W.Output(layout=W.Layout(display="none"))
        self.w_mirror.add_class("wb-figure-mirror")
        self.widget = W.VBox([self.w_notice, self.w_live, self.w_mirror])
        self.widget.add_class("wb-figure-guard")
        figure._wb_guard = self
        _WATCH.add(self)

    # ------------------------------------------------------------- checks (watchdog thread)
    def check(self) -> None:
        """One watchdog tick: switch the fallback on when updates stall; redraw the copy while it is on."""
        state, age = self.figure.health()
        if not self.fallback and state == "pending" and age > self.stall_after:
            self._fallback_on()
        if self.fallback:
            self._mirror()

    def _fallback_on(self) -> None:
        self.fallback = True
        self.fallbacks += 1
        self.w_notice.value = ('<div style="background:#fff4e5;border-left:4px solid #b35900;padding:6px 10px;'
                               'color:#5f3b00">&#9888; ' + _NOTICE.format(every=self.mirror_every) + "</div>")
        self.w_notice.layout.display = None
        self._mirrored_id = None
        self._mirror(force=True)
        self.w_mirror.layout.display = None
        self.w_live.layout.display = "none"

    def _fallback_off(self) -> None:
        if not self.fallback:
            return
        self.fallback = False
        self.w_live.layout.display = None
        self.w_mirror.layout.display = "none"
        self.w_notice.layout.display = "none"

    def _acknowledged(self) -> None:
        with self.figure._wb_lock:
            caught_up = not self.figure._wb_pending
        if caught_up:
            self._fallback_off()

    def _reconnected(self) -> None:
        self._fallback_off()

    def _mirror(self, force: bool = False) -> None:
        f = self.figure
        ids = (f._last_trace_edit_id, f._last_layout_edit_id)
        now = time.monotonic()
        if not force and (ids == self._mirrored_id or now - self._mirrored_at < self.mirror_every):
            return
        self._mirrored_id, self._mirrored_at = ids, now
        self.w_mirror.outputs = (static_output(f),)
        self.mirror_draws += 1


def static_output(fig: go.Figure) -> dict:
    """``fig`` as one Jupyter ``display_data`` output (plotly's MIME type + a text line), for an ``Output`` widget."""
    spec = json.loads(pio.to_json(fig, validate=False))
    spec.setdefault("config", {})["responsive"] = True
    n = sum(len(t.get("x") or t.get("y") or ()) for t in spec.get("data", []) if isinstance(t, dict))
    return {"output_type": "display_data", "metadata": {},
            "data": {"application/vnd.plotly.v1+json": spec,
                     "text/plain": f"<static copy of a plotly figure: {len(spec.get('data', []))} traces, {n} points>"}}


def guard(figure: go.FigureWidget) -> W.Widget:
    """The widget a panel shows for ``figure``: its :class:`FigureGuard` box for a :class:`LiveFigure`, else itself."""
    return figure.guarded.widget if isinstance(figure, LiveFigure) else figure


class _Watchdog:
    """One daemon thread ticking every guard (weakly referenced) twice a second."""

    def __init__(self, tick: float = 0.5):
        self.tick = tick
        self._guards: "weakref.WeakSet[FigureGuard]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, g: FigureGuard) -> None:
        ACTIVITY.hook()
        with self._lock:
            self._guards.add(g)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="workbench-figure-watchdog", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(self.tick)
            with self._lock:
                guards = list(self._guards)
            for g in guards:
                try:
                    g.check()
                except Exception:  # a broken figure must never stop the watchdog
                    pass


_WATCH = _Watchdog()
