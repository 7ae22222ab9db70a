"""What every notebook panel shares: display, a status line, and figure export."""
from __future__ import annotations

import html
import os
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as W
import plotly.graph_objects as go

from ..app.server import PLOTLY_ESM_ENV
from ..viz import export_figure, static_export_available

__all__ = ["PanelBase", "ClassroomControls", "classroom_mode", "estimates_enabled", "sync_figure_state",
           "figure_widget"]

_FIGURE_WIDGET_CLASSES: dict[str, type] = {}


def figure_widget(figure: Any = None) -> go.FigureWidget:
    """``go.FigureWidget(figure)``, loading plotly's front-end module from a URL when ``WORKBENCH_PLOTLY_ESM`` is set.

    A plotly ``FigureWidget`` is an anywidget whose state carries the whole 5 MB plotly.js bundle as its module
    source; the browser then parses one copy per figure, and anywidget gives each figure 2 s to initialise. A page
    with many figures on a slow machine (the app-mode tour has ~17) misses that deadline ("[anywidget] Failed to
    initialize model"): those figures render their first state but never receive later updates. With the
    variable set to an ``http(s)`` URL of the same file (app mode serves it, :func:`workbench.app.server.serve`),
    every figure imports that one URL, which the browser loads and parses once. Unset: plain ``go.FigureWidget``.
    """
    url = os.environ.get(PLOTLY_ESM_ENV, "").strip()
    if not url.startswith(("http://", "https://")):
        return go.FigureWidget(figure)
    cls = _FIGURE_WIDGET_CLASSES.get(url)
    if cls is None:
        cls = _FIGURE_WIDGET_CLASSES[url] = type("FigureWidget", (go.FigureWidget,),
                                                {"_esm": url, "__module__": __name__})
    return cls(figure)


def sync_figure_state(widget: W.Widget) -> None:
    """Copy every ``FigureWidget``'s current figure into its synced initial state, recursively.

    A ``FigureWidget`` sends later changes (new traces, restyles) as one-shot messages that
    only a live view applies; a view created afterwards starts from the widget's
    ``_widget_data``/``_widget_layout``, which plotly refreshes only when the
    ``FigureWidget`` itself is displayed. Panels display a box around their figures, so
    this does it for them: figures drawn before the panel is shown (stored runs, results
    packs), and every figure in Voilà, whose page connects after the notebook ran, appear.
    """
    import copy

    stack = [widget]
    while stack:
        w = stack.pop()
        if isinstance(w, go.FigureWidget):
            w._widget_layout = copy.deepcopy(w._layout_obj._props)
            w._widget_data = copy.deepcopy(w._data)
        stack.extend(getattr(w, "children", ()) or ())


class PanelBase:
    """Mixin for panels with ``self.widget`` (the root widget) and ``self.w_status`` (an ``HTML`` widget)."""

    def _repr_mimebundle_(self, **kw):  # JupyterLab displays the panel as its widget
        sync_figure_state(self.widget)
        return self.widget._repr_mimebundle_(**kw)

    @staticmethod
    def _html(text: str, color: str = "#333") -> str:
        return f'<span style="color:{color}">{html.escape(text)}</span>'

    def _say(self, text: str, color: str = "#333") -> None:
        self.w_status.value = self._html(text, color)

    def _export(self, fig: go.Figure, stem: Path, formats: Sequence[str]) -> list[Path]:
        """Write ``fig`` as ``<stem>.<fmt>``; static formats are skipped, with a note, without a Chromium."""
        written, notes = [], []
        for fmt in formats:
            if fmt != "html":
                ok, why = static_export_available()
                if not ok:
                    notes.append(f"{fmt.upper()} skipped: {why}")
                    continue
            written.append(export_figure(fig, Path(f"{stem}.{fmt}"), format=fmt))
        self._say("Exported " + ", ".join(map(str, written)) + (". " + " ".join(notes) if notes else ""), "#1b5e20")
        return written

    def export(self, path=None, formats=("html", "png")) -> list[Path]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _export_clicked(self) -> None:
        try:
            self.export()
        except Exception as e:
            self._say(f"Export failed: {e}", "#b00020")


# ----------------------------------------------------------------- classroom
def classroom_mode(value: bool | None = None) -> bool:
    """Whether panels start with classroom-safe settings: ``value``, else ``WORKBENCH_CLASSROOM=1`` (set by app mode)."""
    if value is not None:
        return bool(value)
    return os.environ.get("WORKBENCH_CLASSROOM", "").strip().lower() in ("1", "true", "yes", "on")


def estimates_enabled() -> bool:
    """Timed-probe estimates run unless ``WORKBENCH_ESTIMATE=0`` (e.g. in unit tests that count threads)."""
    return os.environ.get("WORKBENCH_ESTIMATE", "1").strip().lower() not in ("0", "false", "no", "off")


class ClassroomControls:
    """Reset and "heavier setting" buttons of a panel (classroom use).

    * **Reset** puts every registered widget back to the value it had when the
      panel was made (the panel's defaults).
    * **Heavier** (present when the panel has a heavier setting) applies it on top of the
      defaults and starts the panel's job: one click. Its label gives the estimated duration
      from a short timed probe (:mod:`workbench.app.estimate`), measured on a background
      thread when the panel is made; until then it says "estimating …".

    Args:
        panel: the panel (``start()``, ``running``, ``_say``).
        fields: ``{name: widget}`` of the settings Reset restores.
        heavier: ``{name: value}`` of the heavier setting (None: no Heavier button).
        describe: short text of the heavier setting, e.g. ``"100 epochs"``.
        estimate: ``fn(values) -> Estimate`` (values: the settings after applying
            ``heavier``); None for no estimate.
    """

    def __init__(self, panel, fields: Mapping[str, W.Widget], *, heavier: Mapping[str, Any] | None = None,
                 describe: str = "", estimate: Callable[[dict], Any] | None = None, prefix: str = "wb"):
        self.panel = panel
        self.fields = dict(fields)
        self.defaults = {k: w.value for k, w in self.fields.items()}
        unknown = sorted(set(heavier or {}) - set(self.fields))
        if unknown:
            raise ValueError(f"heavier setting names unknown field(s) {unknown}: choose from {sorted(self.fields)}")
        self.heavier = dict(heavier) if heavier else None
        self.describe = describe or (", ".join(f"{k} {v}" for k, v in (heavier or {}).items()))
        self.estimate = None
        self.estimate_error: str | None = None
        self._estimator = estimate
        self._estimated = threading.Event()
        self.w_reset = W.Button(description="Reset", icon="undo", tooltip="Restore this panel's default settings")
        self.w_reset.add_class(f"{prefix}-reset")
        self.w_reset.on_click(lambda _b: self.reset())
        self.w_heavier = W.Button(description=f"Heavier: {self.describe}", icon="rocket",
                                  layout=W.Layout(width="auto"),
                                  tooltip="Apply a heavier setting and start it (the estimate comes from a short "
                                          "timed probe on this computer)")
        self.w_heavier.add_class(f"{prefix}-heavier")
        self.w_heavier.on_click(lambda _b: self.run_heavier())
        if self.heavier is None:
            self.w_heavier.layout.display = "none"
        buttons = [self.w_reset, self.w_heavier]
        self.widget = W.HBox(buttons, layout=W.Layout(flex_flow="row wrap"))
        if self.heavier is not None and estimate is not None and estimates_enabled():
            self.w_heavier.description = f"Heavier: {self.describe} (estimating …)"
            threading.Thread(target=self._estimate_main, name="workbench-estimate", daemon=True).start()
        else:
            self._estimated.set()

    def values(self, heavier: bool = False) -> dict:
        v = dict(self.defaults)
        if heavier and self.heavier:
            v.update(self.heavier)
        return v

    def _estimate_main(self) -> None:
        try:
            self.estimate = self._estimator(self.values(heavier=True))
            self.w_heavier.description = f"Heavier: {self.describe} ({self.estimate.label})"
            self.w_heavier.tooltip = f"{self.estimate.detail}. Click to apply it and start."
        except Exception as e:  # an estimate must never break the panel
            self.estimate_error = f"{type(e).__name__}: {e}"
            self.w_heavier.description = f"Heavier: {self.describe}"
        finally:
            self._estimated.set()

    def wait_estimate(self, timeout: float | None = None) -> bool:
        return self._estimated.wait(timeout)

    def _apply(self, values: Mapping[str, Any]) -> None:
        for k, v in values.items():
            w = self.fields[k]
            if isinstance(w, W.Dropdown) and v not in [o[1] if isinstance(o, tuple) else o for o in w.options]:
                continue  # an option list changed since (e.g. runs refreshed)
            w.value = v

    def reset(self) -> bool:
        """Restore the defaults; refused (False, with a message) while the panel runs."""
        if self.panel.running:
            self.panel._say("Running: press Stop before resetting the settings.", "#b35900")
            return False
        self._apply(self.defaults)
        self.panel._say("Default settings restored.")
        return True

    def run_heavier(self) -> bool:
        """Apply the heavier setting and start the panel's job (False, with a message, when refused)."""
        if self.heavier is None:
            return False
        if self.panel.running:
            self.panel._say("A run is already in progress on this figure: press Stop first.", "#b35900")
            return False
        self._apply(self.values(heavier=True))
        return self.panel.start()
