"""ThesisPanel: pick a thesis reproduction, set its parameters, run it, and compare claim and outcome.

The thesis' claim is shown next to the measured outcome.

Generic over :mod:`workbench.thesis.registry`: the dropdown lists every registered reproduction (Ch. 5/7
and whatever other modules register), the parameter widgets are generated from each entry's
:class:`~workbench.thesis.registry.Param` list (int/float/bool/text; lists and ``None`` as JSON text;
``choices`` as a dropdown), *Run* computes on a background thread with a progress bar, and the result
shows the figure (the entry's builder in :mod:`workbench.viz`), the claim, the measured outcome with its
verdict, and the notes (ambiguities, code-only defaults). No science lives here.

    from workbench.ui.thesis_panel import ThesisPanel
    panel = ThesisPanel(chapter=5)              # or ThesisPanel(), ThesisPanel(select="fig7.7")
    panel                                       # displays the panel
    rep = panel.run(block=True)                 # headless use (notebooks, tests)
"""
from __future__ import annotations

import html
import json
import threading
import traceback
from pathlib import Path
from typing import Any

import ipywidgets as W
from IPython.display import display

from ..thesis import registry
from .base import PanelBase

__all__ = ["ThesisPanel", "show_reproduction"]

_ERR, _OK, _WARN = "#b00020", "#1b5e20", "#b35900"


def show_reproduction(rep: registry.Reproduction, figure: bool = True) -> None:
    """Display a reproduction in a notebook: the thesis' claim, the measured outcome with its verdict, notes, figure."""
    from IPython.display import Markdown

    verdict = rep.verdict.replace("not ", "**not** ") + (f": {rep.verdict_reason}" if rep.verdict_reason else "")
    notes = "".join(f"\n- {n}" for n in rep.notes)
    display(Markdown(f"**Thesis:** {rep.claim}\n\n**Measured** ({verdict}, {rep.seconds:.1f} s): {rep.measured}"
                     + (f"\n\n*Notes:*{notes}" if notes else "")))
    if figure and rep.figure is not None:
        display(rep.figure)


def _widget_for(p: registry.Param, value: Any) -> W.Widget:
    desc = dict(description=p.name, style={"description_width": "120px"}, layout=W.Layout(width="330px"))
    if p.choices:
        return W.Dropdown(options=list(p.choices), value=value, **desc)
    if isinstance(p.default, bool):
        return W.Checkbox(value=bool(value), indent=False, **desc)
    if isinstance(p.default, int):
        return W.IntText(value=int(value), **desc)
    if isinstance(p.default, float):
        return W.FloatText(value=float(value), **desc)
    if isinstance(p.default, str):
        return W.Text(value=str(value), **desc)
    return W.Text(value=json.dumps(value), **desc)          # lists, None: JSON


def _value_of(p: registry.Param, w: W.Widget) -> Any:
    if isinstance(w, W.Text) and not isinstance(p.default, str):
        try:
            return json.loads(w.value)
        except json.JSONDecodeError:
            raise ValueError(f"{p.name}: {w.value!r} is not valid JSON (e.g. [0.1, 0.2] or null)") from None
    return w.value


class ThesisPanel(PanelBase):
    """Reproduction panel over :data:`workbench.thesis.registry.REGISTRY`.

    Args:
        chapter: show only this chapter's reproductions (None: all).
        select: initially selected reproduction name.
        size: initial parameter set, ``"full"`` or ``"test"`` (reduced sizes).
        out_dir: folder for :meth:`export`.
    """

    def __init__(self, chapter: int | None = None, select: str | None = None, size: str = "full",
                 out_dir: str | Path = "runs/thesis"):
        names = registry.names(chapter)
        if not names:
            raise ValueError(f"no reproductions registered for chapter {chapter}")
        self.out_dir = Path(out_dir)
        self.result: registry.Reproduction | None = None
        self._thread: threading.Thread | None = None
        self._param_widgets: dict[str, W.Widget] = {}
        self.w_select = W.Dropdown(options=[(registry.get(n).title, n) for n in names],
                                   value=select if select in names else names[0], description="Reproduction",
                                   layout=W.Layout(width="640px"), style={"description_width": "100px"})
        self.w_size = W.ToggleButtons(options=["full", "test"], value=size, description="Size",
                                      tooltips=["thesis-like defaults", "reduced size (as in the tests)"])
        self.w_params = W.Box(layout=W.Layout(display="flex", flex_flow="row wrap"))
        self.w_run = W.Button(description="Run", button_style="primary", icon="play")
        self.w_export = W.Button(description="Export figure", icon="download", disabled=True)
        self.w_progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="300px"))
        self.w_status = W.HTML()
        self.w_claim = W.HTML()
        self.w_outcome = W.HTML()
        self.w_figure = W.Output()
        self.widget = W.VBox([self.w_select, self.w_size, self.w_params,
                              W.HBox([self.w_run, self.w_progress, self.w_export]), self.w_status,
                              self.w_claim, self.w_figure, self.w_outcome])
        self.w_select.observe(lambda _: self._build_params(), names="value")
        self.w_size.observe(lambda _: self._build_params(), names="value")
        self.w_run.on_click(lambda _: self.run())
        self.w_export.on_click(lambda _: self._export_clicked())
        self._build_params()
        errs = registry.LOAD_ERRORS
        if errs:
            self._say("Some reproduction modules could not be loaded: "
                      + "; ".join(f"{k}: {v}" for k, v in errs.items()), _WARN)

    # ------------------------------------------------------------ widgets
    @property
    def entry(self) -> registry.Entry:
        """The registry entry of the selected reproduction."""
        return registry.get(self.w_select.value)

    def _build_params(self) -> None:
        e = self.entry
        self._param_widgets = {p.name: _widget_for(p, p.value(self.w_size.value)) for p in e.params}
        self.w_params.children = list(self._param_widgets.values())
        self.w_claim.value = (f"<b>{html.escape(e.title)}</b><br><b>Thesis:</b> {html.escape(e.claim)}"
                              + (f"<br>{html.escape(e.description)}" if e.description else ""))

    def params(self) -> dict[str, Any]:
        """Current parameter values (raises ValueError for malformed JSON fields)."""
        return {p.name: _value_of(p, self._param_widgets[p.name]) for p in self.entry.params}

    def set(self, **values) -> "ThesisPanel":
        """Set parameter widgets by name (for scripted use)."""
        for k, v in values.items():
            if k not in self._param_widgets:
                raise ValueError(f"{self.entry.name} has no parameter {k!r}; it has {sorted(self._param_widgets)}")
            w = self._param_widgets[k]
            w.value = json.dumps(v) if isinstance(w, W.Text) and not isinstance(v, str) else v
        return self

    # ------------------------------------------------------------ running
    def _progress(self, frac: float, msg: str = "") -> None:
        self.w_progress.value = min(max(float(frac), 0.0), 1.0)
        if msg:
            self._say(f"Running {self.entry.name}: {msg}")

    def _work(self, name: str, params: dict) -> None:
        try:
            rep = registry.run(name, size="full", progress=self._progress, **params)
        except Exception as e:  # noqa: BLE001 - shown to the user
            self._say(f"{name} failed: {e}", _ERR)
            self.error = traceback.format_exc()
            return
        finally:
            self.w_run.disabled = False
        self.result = rep
        self._show(rep)

    def _show(self, rep: registry.Reproduction) -> None:
        color = {"reproduced": _OK, "partial": _WARN, "not reproduced": _ERR}.get(rep.verdict, "#333")
        verdict = rep.verdict + (f": {html.escape(rep.verdict_reason)}" if rep.verdict_reason else "")
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in rep.notes)
        self.w_outcome.value = (f'<b>Measured</b> <span style="color:{color}">({verdict}, {rep.seconds:.1f} s)</span>: '
                                f"{html.escape(rep.measured)}" + (f"<br><b>Notes</b><ul>{notes}</ul>" if notes else ""))
        self.w_figure.clear_output()
        if rep.figure is not None:
            with self.w_figure:
                display(rep.figure)
        self.w_progress.value = 1.0
        self.w_export.disabled = rep.figure is None
        self._say(f"{rep.name} finished in {rep.seconds:.1f} s: {rep.verdict}", color)

    def run(self, block: bool = False) -> registry.Reproduction | None:
        """Run the selected reproduction with the widget values (background thread unless ``block``).

        Returns:
            The :class:`~workbench.thesis.registry.Reproduction` when ``block``, else None (see ``self.result``).
        """
        if self._thread is not None and self._thread.is_alive():
            self._say("A reproduction is already running.", _WARN)
            return None
        try:
            params = self.params()
        except ValueError as e:
            self._say(str(e), _ERR)
            return None
        self.result = None
        self.w_run.disabled = True
        self.w_progress.value = 0.0
        self._say(f"Running {self.entry.name} ...")
        self._thread = threading.Thread(target=self._work, args=(self.entry.name, params), daemon=True)
        self._thread.start()
        if block:
            self._thread.join()
            return self.result
        return None

    def wait(self, timeout: float | None = None) -> registry.Reproduction | None:
        """Wait for a background run; returns its result (None if it failed or is still running)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

    def export(self, path=None, formats=("html", "png")) -> list[Path]:
        """Write the current figure to ``path`` (stem; default ``out_dir/<name>``)."""
        if self.result is None or self.result.figure is None:
            raise ValueError("nothing to export: run a reproduction first")
        stem = Path(path) if path is not None else self.out_dir / self.result.name
        stem.parent.mkdir(parents=True, exist_ok=True)
        return self._export(self.result.figure, stem, formats)
