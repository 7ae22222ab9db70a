"""Static export of plotly figures.

HTML always works (plotly.js is embedded, so the file opens offline). PNG, SVG
and PDF go through kaleido, which drives a Chrome/Chromium; when none is found
:class:`ExportError` says what to install instead of trying to download one.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from pathlib import Path
from typing import Iterable

import plotly.graph_objects as go

from .theme import apply_theme

__all__ = ["export_figure", "export_many", "ExportError", "FORMATS", "find_chrome", "static_export_available",
           "static_export_session"]

FORMATS = ("html", "png", "svg", "pdf")
_CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class ExportError(RuntimeError):
    """A figure cannot be exported in the requested format on this machine."""


def find_chrome() -> str | None:
    """Path of a Chrome/Chromium kaleido can use (``BROWSER_PATH`` first), or None."""
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).exists():
        return env
    for name in _CHROME_NAMES:
        p = shutil.which(name)
        if p:
            return p
    return None


def static_export_available() -> tuple[bool, str]:
    """``(True, "")`` when PNG/SVG/PDF export works here, else ``(False, reason)``."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False, "the 'kaleido' package is not installed: pip install 'kaleido>=1.0'"
    if find_chrome() is None:
        return False, ("no Chrome/Chromium found for kaleido: install one (Debian/Ubuntu: "
                       "'sudo apt-get install chromium'; macOS: install Google Chrome) or set BROWSER_PATH; "
                       "HTML export works without it")
    return True, ""


def export_figure(fig: go.Figure, path: str | Path, *, format: str | None = None, theme: str | None = None,
                  width: int | None = None, height: int | None = None, scale: float = 2.0,
                  width_in: float | None = None, height_in: float | None = None, dpi: float | None = None) -> Path:
    """Write ``fig`` to ``path``.

    Args:
        fig: the figure (not modified; a copy is themed when ``theme`` is given).
        path: output file; its suffix gives the format unless ``format`` is set
            (then the suffix is added when missing).
        format: ``html``, ``png``, ``svg`` or ``pdf``.
        theme: re-theme the copy (``paper`` for publication sizes and fonts).
        width, height: layout size in pixels (plotly units, 96 px per inch); default
            the figure's. A PNG is ``width*scale`` × ``height*scale`` pixels.
        scale: resolution multiplier for PNG.
        width_in, height_in, dpi: paper sizes instead: the layout is ``width_in``
            inches wide (e.g. 3.25 for one column, 6.75 for two, see
            ``PAPER_WIDTHS_IN``) and a PNG has ``width_in * dpi`` pixels (dpi
            default 300; SVG and PDF are vector and keep the size in points).

    Returns:
        The written path.

    Raises:
        ValueError: unknown format.
        ExportError: PNG/SVG/PDF requested but kaleido or a Chrome/Chromium is missing.
    """
    path = Path(path)
    if width_in is not None or height_in is not None:
        dpi = 300.0 if dpi is None else float(dpi)
        if width_in is not None:
            width = int(round(width_in * 96))
        if height_in is not None:
            height = int(round(height_in * 96))
        scale = dpi / 96.0
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is invalid: choose one of {FORMATS}")
    if path.suffix.lower() != f".{fmt}":
        path = path.with_name(path.name + f".{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    out = go.Figure(fig)
    if theme is not None:
        apply_theme(out, theme)
    if fmt == "html":
        out.write_html(str(path), include_plotlyjs=True, full_html=True)
        return path
    ok, why = static_export_available()
    if not ok:
        raise ExportError(f"cannot export {fmt.upper()} to {str(path)!r}: {why}")
    chrome = find_chrome()
    if chrome and not os.environ.get("BROWSER_PATH"):
        os.environ["BROWSER_PATH"] = chrome
    try:
        with warnings.catch_warnings():
            # plotly passes kaleido options that a running export session ignores; harmless
            warnings.filterwarnings("ignore", message="The kopts argument is ignored", category=UserWarning)
            out.write_image(str(path), format=fmt, width=width, height=height, scale=scale)
    except Exception as e:  # kaleido/choreographer errors are varied
        raise ExportError(f"kaleido failed to export {str(path)!r}: {type(e).__name__}: {e}") from e
    return path


def export_many(fig: go.Figure, stem: str | Path, formats: Iterable[str] = ("html",), **kw) -> list[Path]:
    """Export one figure in several formats (``stem`` without suffix)."""
    return [export_figure(fig, Path(f"{stem}.{f}"), format=f, **kw) for f in formats]


@contextlib.contextmanager
def static_export_session():
    """Keep one Chromium running for a batch of PNG/SVG/PDF exports.

    kaleido starts a browser per image (seconds each); inside this context the
    browser is started once and reused (a fraction of a second per image).
    A no-op when static export is not available.
    """
    started = False
    if static_export_available()[0]:
        chrome = find_chrome()
        if chrome and not os.environ.get("BROWSER_PATH"):
            os.environ["BROWSER_PATH"] = chrome
        try:
            import kaleido  # noqa: F401 (imported for start_sync_server below)

            kaleido.start_sync_server(silence_warnings=True)
            started = True
        except Exception:  # fall back to one browser per image
            started = False
    try:
        yield
    finally:
        if started:
            import kaleido  # noqa: F401 (imported for start_sync_server below)

            kaleido.stop_sync_server(silence_warnings=True)
