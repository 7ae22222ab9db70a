"""Export of plotly figures to HTML, PNG, SVG and PDF.

HTML needs no browser. By default an HTML file loads ``plotly.min.js`` from its
own folder (or from a given shared file), written there once (4.8 MB) and shared
by every figure in the folder; ``self_contained=True`` embeds plotly.js in the
file instead. Neither loads anything from the network (no CDN). PNG, SVG and PDF go through kaleido, which drives a
Chrome/Chromium; when none is found :class:`ExportError` says what to install
instead of trying to download one.

Sizes: plotly lays figures out in CSS pixels, 96 px per inch. A PNG is
``width*scale`` × ``height*scale`` pixels; SVG and PDF are vector, and a PDF page
is ``width/96`` × ``height/96`` inches (kaleido prints a page of
``width*scale`` CSS px, so PDFs are printed at scale 1).
"""
from __future__ import annotations

import contextlib
import inspect
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Iterable

import plotly.graph_objects as go

from .theme import PX_PER_IN, apply_theme, layout_compact_legend

__all__ = ["export_figure", "export_many", "ExportError", "FORMATS", "find_chrome", "static_export_available",
           "static_export_session"]

FORMATS = ("html", "png", "svg", "pdf")
_CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_SESSION = {"depth": 0, "started": False}


class ExportError(RuntimeError):
    """A figure cannot be exported in the requested format on this machine (one-line message)."""


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


def _one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or "(no message)"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(e).__name__}: {text}"


def _write_image(fig: go.Figure, path: Path, fmt: str, width: int | None, height: int | None,
                 scale: float) -> None:
    """The kaleido call (one attempt)."""
    with warnings.catch_warnings():
        # plotly passes kaleido options that a running export session ignores; harmless
        warnings.filterwarnings("ignore", message="The kopts argument is ignored", category=UserWarning)
        with _pdf_page_without_margins() if fmt == "pdf" else contextlib.nullcontext():
            fig.write_image(str(path), format=fmt, width=width, height=height, scale=scale)


@contextlib.contextmanager
def _pdf_page_without_margins():
    """Make kaleido print PDFs without page margins while inside.

    kaleido (1.x) prints a page of exactly the figure's size but with 0.1 in
    margins, so Chromium shrinks the figure to fit and cuts its bottom off
    (page 3.25 in wide: content 6% smaller, offset 0.1 in, the x-axis titles
    clipped). Its ``print_pdf`` helper is swapped for one with zero margins;
    if that helper is not found (another kaleido), nothing changes.
    """
    try:
        from kaleido._kaleido_tab import _devtools_utils as dt
    except Exception:  # noqa: BLE001 - another kaleido layout
        dt = None
    orig = getattr(dt, "print_pdf", None)
    if dt is None or not inspect.iscoroutinefunction(orig) or not hasattr(dt, "_raise_error"):
        yield
        return

    async def print_pdf(tab):
        params = {"printBackground": True, "marginTop": 0, "marginBottom": 0, "marginLeft": 0, "marginRight": 0,
                  "preferCSSPageSize": True, "pageRanges": "1"}
        response = await tab.send_command("Page.printToPDF", params=params)
        dt._raise_error(response)
        return response.get("result", {}).get("data")

    dt.print_pdf = print_pdf
    try:
        yield
    finally:
        dt.print_pdf = orig


def _restart_session() -> None:
    """Restart the shared browser of a :func:`static_export_session` (after a failed export)."""
    if not _SESSION["started"]:
        return
    try:
        import kaleido

        kaleido.stop_sync_server(silence_warnings=True)
        kaleido.start_sync_server(silence_warnings=True)
    except Exception:  # noqa: BLE001 - the retry then starts its own browser
        _SESSION["started"] = False


def _ensure_bundle(bundle: Path) -> None:
    """Write plotly's ``plotly.min.js`` to ``bundle`` unless a copy of the same plotly.js version is there."""
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    if bundle.is_file():
        with open(bundle, "rb") as fh:
            head = fh.read(300).decode("utf-8", "replace")
        m = re.search(r"plotly\.js v(\S+)", head)
        if m is not None and m.group(1) == get_plotlyjs_version():
            return
    bundle.parent.mkdir(parents=True, exist_ok=True)
    tmp = bundle.with_name(f".{bundle.name}.{os.getpid()}.tmp")
    tmp.write_text(get_plotlyjs(), encoding="utf-8")
    os.replace(tmp, bundle)


def _write_html(fig: go.Figure, path: Path, self_contained: bool, plotlyjs: str | Path | None) -> None:
    if self_contained:
        fig.write_html(str(path), include_plotlyjs=True, full_html=True)
        return
    bundle = Path(plotlyjs) if plotlyjs is not None else path.parent / "plotly.min.js"
    _ensure_bundle(bundle)
    src = Path(os.path.relpath(bundle.resolve(), path.parent.resolve())).as_posix()
    fig.write_html(str(path), include_plotlyjs=src, full_html=True)


def export_figure(fig: go.Figure, path: str | Path, *, format: str | None = None, theme: str | None = None,
                  width: int | None = None, height: int | None = None, scale: float = 2.0,
                  width_in: float | None = None, height_in: float | None = None, dpi: float | None = None,
                  self_contained: bool = False, plotlyjs: str | Path | None = None) -> Path:
    """Write ``fig`` to ``path``.

    Args:
        fig: the figure (not modified; a copy is themed and sized).
        path: output file; its suffix gives the format unless ``format`` is set
            (then the suffix is added when missing).
        format: ``html``, ``png``, ``svg`` or ``pdf``.
        theme: re-theme the copy (``paper`` for publication sizes and fonts).
        width: layout width in px (plotly units, 96 px per inch); default the figure's.
            A PNG is ``width*scale`` pixels wide; a PDF page is ``width/96`` inches wide.
        height: layout height in px; default the figure's (PNG ``height*scale`` pixels, PDF ``height/96`` in).
        scale: resolution multiplier for PNG (SVG and PDF are vector and ignore it).
        width_in: paper width instead, in inches: the layout is ``width_in * 96`` px wide
            (e.g. 3.25 in for one column, 6.75 in for two, see ``PAPER_WIDTHS_IN``), a PDF
            page is ``width_in`` inches wide, and a PNG has ``width_in * dpi`` pixels. A figure
            with a compact legend (paper training curves) lays it out again for the new size.
        height_in: paper height in inches; without it the height is the figure's (the paper
            theme's 2.2 in).
        dpi: dots per inch of a PNG with paper sizes (default 300).
        self_contained: HTML only: embed plotly.js (4.8 MB) in the file. Default:
            the file loads ``plotly.min.js`` from its folder, written there once
            (keep the two together when moving the file).
        plotlyjs: HTML only: the shared ``plotly.min.js`` to load instead (e.g. one
            at the root of a runs folder for the figures of all its runs); written
            when missing or of another plotly.js version, and referenced by a
            relative path.

    Returns:
        The written path.

    Raises:
        ValueError: unknown format or theme.
        ExportError: PNG/SVG/PDF requested but kaleido or a Chrome/Chromium is
            missing, or kaleido failed twice (it is retried once: its browser
            sometimes fails transiently, e.g. "kaleido_scopes is not defined").
            The message is one line.
    """
    path = Path(path)
    if width_in is not None or height_in is not None:
        dpi = 300.0 if dpi is None else float(dpi)
        if dpi <= 0:
            raise ValueError(f"dpi={dpi!r} is invalid: must be > 0")
        if width_in is not None:
            width = int(round(width_in * PX_PER_IN))
        if height_in is not None:
            height = int(round(height_in * PX_PER_IN))
        scale = dpi / PX_PER_IN
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is invalid: choose one of {FORMATS}")
    if path.suffix.lower() != f".{fmt}":
        path = path.with_name(path.name + f".{fmt}")
    out = go.Figure(fig)
    if theme is not None:
        apply_theme(out, theme)
    if width is not None or height is not None:
        out.update_layout(width=width or out.layout.width, height=height or out.layout.height)
        layout_compact_legend(out)
    width, height = width or out.layout.width, height or out.layout.height
    if fmt == "html":
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_html(out, path, self_contained, plotlyjs)
        return path
    ok, why = static_export_available()
    if not ok:
        raise ExportError(f"cannot export {fmt.upper()} to {str(path)!r}: {why}")
    chrome = find_chrome()
    if chrome and not os.environ.get("BROWSER_PATH"):
        os.environ["BROWSER_PATH"] = chrome
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = scale if fmt == "png" else 1.0
    first: Exception | None = None
    for _attempt in range(2):
        try:
            _write_image(out, path, fmt, width, height, scale)
            return path
        except Exception as e:  # noqa: BLE001 - kaleido/choreographer errors are varied
            if first is None:
                first = e
                _restart_session()
                continue
            raise ExportError(f"kaleido failed twice to export {fmt.upper()} to {str(path)!r}: {_one_line(e)}"
                              + ("" if str(e) == str(first) else f" (first: {_one_line(first, 100)})")) from e
    raise AssertionError("unreachable")  # pragma: no cover


def export_many(fig: go.Figure, stem: str | Path, formats: Iterable[str] = ("html",), **kw) -> list[Path]:
    """Export one figure in several formats (``stem`` without suffix); ``kw`` as :func:`export_figure`."""
    return [export_figure(fig, Path(f"{stem}.{f}"), format=f, **kw) for f in formats]


@contextlib.contextmanager
def static_export_session():
    """Keep one Chromium running for a batch of PNG/SVG/PDF exports.

    kaleido starts a browser per image (seconds each); inside this context the
    browser is started once and reused (a fraction of a second per image).
    A no-op when static export is not available.
    """
    started = False
    if _SESSION["depth"] == 0 and static_export_available()[0]:
        chrome = find_chrome()
        if chrome and not os.environ.get("BROWSER_PATH"):
            os.environ["BROWSER_PATH"] = chrome
        try:
            import kaleido

            kaleido.start_sync_server(silence_warnings=True)
            started = True
        except Exception:  # noqa: BLE001 - fall back to one browser per image
            started = False
    _SESSION["depth"] += 1
    if started:
        _SESSION["started"] = True
    try:
        yield
    finally:
        _SESSION["depth"] -= 1
        if started:
            _SESSION["started"] = False
            import kaleido

            with contextlib.suppress(Exception):
                kaleido.stop_sync_server(silence_warnings=True)
