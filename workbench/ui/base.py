"""What every notebook panel shares: display, a status line, and figure export."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import plotly.graph_objects as go

from ..viz import export_figure, static_export_available

__all__ = ["PanelBase"]


class PanelBase:
    """Mixin for panels with ``self.widget`` (the root widget) and ``self.w_status`` (an ``HTML`` widget)."""

    def _repr_mimebundle_(self, **kw):  # JupyterLab displays the panel as its widget
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
