"""What every notebook panel shares: display, a status line, and figure export."""
from __future__ import annotations

import html
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as W
import plotly.graph_objects as go

from ..viz import export_figure, static_export_available
from .figure import _WATCH, ACTIVITY, LiveFigure, figure_widget, guard

__all__ = ["PanelBase", "ClassroomControls", "classroom_mode", "estimates_enabled", "sync_figure_state",
           "figure_widget", "guard"]


def sync_figure_state(widget: W.Widget) -> None:
    """Copy every ``FigureWidget``'s current figure into its synced initial state, recursively, and mark it shown.

    A ``FigureWidget`` sends later changes (new traces, restyles) as one-shot messages that
    only an existing front-end model applies; a view created afterwards starts from the widget's
    ``_widget_data``/``_widget_layout``. Panels display a box around their figures, so
    this does it for them: figures drawn before the panel is shown (stored runs, results
    packs) appear. :class:`~workbench.ui.figure.LiveFigure` also refreshes that state whenever a
    page (re)connects, and is marked as displayed so that its watchdog may act.
    """
    import copy

    stack = [widget]
    while stack:
        w = stack.pop()
        if isinstance(w, LiveFigure):
            w._wb_displayed = True
        if isinstance(w, go.FigureWidget):  # assigned (sent): the page's model may predate these traces
            w._widget_layout = copy.deepcopy(w._layout_obj._props)
            w._widget_data = copy.deepcopy(w._data)
        stack.extend(getattr(w, "children", ()) or ())


_DATA_KEYS = ("x", "y", "z", "values", "r", "dimensions", "cells", "source")


def figure_has_data(fig: go.Figure) -> bool:
    """Whether any trace of ``fig`` holds data (points, a heatmap, an image, table cells, ...)."""
    for tr in fig.data:
        for k in _DATA_KEYS:
            v = getattr(tr, k, None) if k in tr else None
            if v is None:
                continue
            try:
                if len(v) > 0:
                    return True
            except TypeError:  # a scalar-like value (an image source string is caught by len)
                return True
    return False


class _BusyNotice:
    """Tells a displayed, idle panel's user when the kernel is running another cell.

    So the panel never says "Ready" while its buttons cannot work: after ``after`` s of a running cell its status
    line says so and its enabled buttons are disabled (clicks would only queue); when the cell ends both are
    restored. Checked by the figure watchdog thread (:mod:`workbench.ui.figure`).
    """

    TEXT = ("The kernel is busy running another cell; this panel's buttons will work again when it finishes "
            "(or interrupt the kernel).")

    def __init__(self, panel: "PanelBase", after: float = 1.5):
        self.panel = panel
        self.after = float(after)
        self.registered = time.monotonic()
        self.shown = False
        self._saved_status: str | None = None
        self._disabled: list[W.Button] = []

    def check(self) -> None:
        busy_since = ACTIVITY.busy_since
        p = self.panel
        if busy_since is not None and not self.shown and not getattr(p, "running", False):
            if time.monotonic() - max(busy_since, self.registered) >= self.after:
                self._show()
        elif busy_since is None and self.shown:
            self._hide()

    def _show(self) -> None:
        p = self.panel
        self._saved_status = p.w_status.value
        self._disabled = [b for b in _buttons(p.widget) if not b.disabled]
        for b in self._disabled:
            b.disabled = True
        p._say(self.TEXT, "#b35900")
        self.shown = True

    def _hide(self) -> None:
        p = self.panel
        for b in self._disabled:
            b.disabled = False
        if p.w_status.value == p._html(self.TEXT, "#b35900") and self._saved_status is not None:
            p.w_status.value = self._saved_status
        self._disabled, self._saved_status, self.shown = [], None, False


def _buttons(widget: W.Widget) -> list[W.Button]:
    out, stack = [], [widget]
    while stack:
        w = stack.pop()
        if isinstance(w, W.Button):
            out.append(w)
        stack.extend(getattr(w, "children", ()) or ())
    return out


def watch_kernel_busy(panel: "PanelBase") -> None:
    """Start :class:`_BusyNotice` for ``panel`` (once; when it is displayed in a kernel)."""
    if getattr(panel, "_busy_notice", None) is None and hasattr(panel, "w_status") and ACTIVITY.hook():
        panel._busy_notice = _BusyNotice(panel)
        _WATCH.add(panel._busy_notice)


class PanelBase:
    """Mixin for panels with ``self.widget`` (the root widget) and ``self.w_status`` (an ``HTML`` widget)."""

    def _repr_mimebundle_(self, **kw):  # JupyterLab displays the panel as its widget
        sync_figure_state(self.widget)
        watch_kernel_busy(self)
        return self.widget._repr_mimebundle_(**kw)

    @staticmethod
    def _html(text: str, color: str = "#333") -> str:
        return f'<span style="color:{color}">{html.escape(text)}</span>'

    def _say(self, text: str, color: str = "#333") -> None:
        self.w_status.value = self._html(text, color)

    def _export(self, fig: go.Figure, stem: Path, formats: Sequence[str]) -> list[Path]:
        """Write ``fig`` as ``<stem>.<fmt>``; static formats are skipped, with a note, without a Chromium.

        A figure without data (nothing run yet) is refused with a message and nothing is written (returns ``[]``).
        """
        if not figure_has_data(fig):
            self._say("Nothing to export yet: the figure has no data (run something first).", "#b35900")
            return []
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
        """Write the panel's figures under ``path`` in ``formats``; returns the files written (each panel's own)."""
        raise NotImplementedError

    def _export_clicked(self) -> None:
        try:
            self.export()
        except Exception as e:
            self._say(f"Export failed: {e}", "#b00020")


# ----------------------------------------------------------------- classroom
def classroom_mode(value: bool | None = None) -> bool:
    """Whether panels start with classroom-safe settings.

    ``value`` when given, else whether ``WORKBENCH_CLASSROOM=1`` (set by app mode).
    """
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
        """The default settings, updated with the heavier preset's when ``heavier`` (and there is one)."""
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
        """Wait up to ``timeout`` s (``None``: forever) for the heavier preset's estimate; whether it is done."""
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
