"""Figure themes: ``screen`` for notebooks and dashboards, ``paper`` for publications.

Both use the Okabe-Ito palette (colour-blind safe). The paper theme sets a
serif font at print sizes (plotly sizes are CSS pixels, 96 px per inch, so 9 px
is 6.75 pt) and a two-column width; static export converts inches to pixels at
96 px/in (plotly's layout unit), scaled for resolution.

:func:`compact_legend` draws a legend for print: rows of short line samples and
labels in the top margin, flowed to the figure's width, at about 1.35 font
heights per row (plotly's own legend needs at least 19 px per row, which at a
one-column width eats half of a 2.2 in figure). It is laid out again by
:func:`layout_compact_legend` when the figure is exported at another size.
"""
from __future__ import annotations

import re

import plotly.graph_objects as go

__all__ = ["PALETTE", "THEMES", "apply_theme", "color_for", "finish_figure", "PAPER_WIDTHS_IN", "PAPER_HEIGHT_IN",
           "PX_PER_IN", "PAPER_FONT", "compact_legend", "layout_compact_legend", "text_width_px"]

# Okabe & Ito (2008), without black and yellow first (poor on white).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
SPLIT_DASH = {"train": "solid", "val": "dash", "test": "dot"}
PX_PER_IN = 96  # plotly/CSS pixels per inch
PAPER_WIDTHS_IN = {"one-column": 3.25, "two-column": 6.75}
PAPER_HEIGHT_IN = 2.2
# Times on most machines (Windows/macOS: Times New Roman; Linux: Liberation Serif or Nimbus Roman, metric
# clones), DejaVu Serif where none is installed. Chromium embeds (subsets) whichever it uses in PDFs.
PAPER_FONT = "Times New Roman, Times, Liberation Serif, Nimbus Roman, Tinos, DejaVu Serif, serif"

THEMES = {
    "screen": dict(template="plotly_white", font=dict(family="Arial, sans-serif", size=13), height=420,
                   line_width=2.0, margin=dict(l=60, r=20, t=50, b=50)),
    "paper": dict(template="simple_white", font=dict(family=PAPER_FONT, size=9),
                  height=int(PAPER_HEIGHT_IN * PX_PER_IN), width=int(PAPER_WIDTHS_IN["two-column"] * PX_PER_IN),
                  line_width=1.2, margin=dict(l=45, r=10, t=25, b=35)),
}

_LEGEND_KEY = "compact_legend"
_LEGEND_NAME = "compact-legend"


def color_for(i: int) -> str:
    """The i-th colour of the palette (cycling)."""
    return PALETTE[i % len(PALETTE)]


def apply_theme(fig: go.Figure, theme: str = "screen") -> go.Figure:
    """Apply a theme to ``fig`` in place and return it.

    A :func:`compact_legend` on ``fig`` is laid out again for the themed size and margins.

    Raises:
        ValueError: unknown theme (lists the choices).
    """
    if theme not in THEMES:
        raise ValueError(f"theme={theme!r} is invalid: choose one of {sorted(THEMES)}")
    t = THEMES[theme]
    layout = dict(template=t["template"], font=t["font"], margin=t["margin"], height=t["height"],
                  colorway=PALETTE, legend=dict(font=dict(size=t["font"]["size"] - 1)))
    if "width" in t:
        layout["width"] = t["width"]
    fig.update_layout(**layout)
    for tr in fig.data:
        if tr.type == "scatter" and tr.line.width is None:
            tr.line.width = t["line_width"]
    fig.update_xaxes(showgrid=theme == "screen", zeroline=False)
    fig.update_yaxes(showgrid=theme == "screen", zeroline=False)
    if _legend_spec(fig) is not None:
        layout_compact_legend(fig)
    return fig


def finish_figure(fig: go.Figure, theme: str, title: str | None, default_title: str, *,
                  height: int | None = None) -> go.Figure:
    """Apply ``theme`` and the title every figure builder ends with; return ``fig``.

    ``title=None`` gives ``default_title`` on screen and no title in the paper theme (a paper figure's caption
    carries it); an explicit ``title`` is always drawn. ``height`` (px) overrides the screen theme's height.

    Raises:
        ValueError: unknown theme.
    """
    apply_theme(fig, theme)
    if title is None and theme == "screen":
        title = default_title
    if title:
        fig.update_layout(title=dict(text=title, x=0.01))
    if height and theme == "screen":
        fig.update_layout(height=height)
    return fig


# ---------------------------------------------------------------- compact legend
# Advance widths in em, rounded up over Times New Roman, Liberation Serif and DejaVu Serif (the widest of
# the three), so that estimated label widths are never short.
_NARROW = set("ijlt.,:;'!|()[] ")
_WIDE = set("mwMW=+<>~%@&")


def text_width_px(text: str, size: float) -> float:
    """Estimated width in px of ``text`` at font size ``size`` px (a safe upper bound for the paper fonts)."""
    w = 0.0
    for ch in text:
        if ch in _NARROW:
            w += 0.36
        elif ch in _WIDE:
            w += 0.86
        elif ch.isupper():
            w += 0.74
        elif ch.isdigit():
            w += 0.64
        else:
            w += 0.6
    return w * size


def _legend_spec(fig: go.Figure) -> dict | None:
    meta = fig.layout.meta
    return meta.get(_LEGEND_KEY) if isinstance(meta, dict) else None


def compact_legend(fig: go.Figure, entries: list[dict], *, font_size: float | None = None,
                   sample_px: float = 16.0, top_pad: float = 6.0, col_gap_px: float | None = None) -> go.Figure:
    """Replace plotly's legend of ``fig`` by a compact one in the top margin; return ``fig``.

    Args:
        fig: the figure (modified in place).
        entries: one dict per entry: ``label`` (text), ``color``, and optionally ``dash`` (plotly dash name),
            ``width`` (line width, px), ``opacity``, and ``break_before`` (start a group: a wider gap, and a
            new row unless the whole group fits in the current one).
        font_size: label size in px (default the figure's font size minus 1).
        sample_px: length of the line sample in px.
        top_pad: px between the last legend row and the top of the plot area.
        col_gap_px: for a one-row grid of subplots (``xaxis``, ``xaxis2``, ...): the gap between them in px,
            kept at any export width (room for the tick labels and title of the next y axis).

    The entries flow left to right and wrap at the figure's width; the top margin is set to the legend's
    height plus ``top_pad``. The layout is stored in ``layout.meta["compact_legend"]``, so that
    :func:`layout_compact_legend` (called by :func:`apply_theme` and by export at another size) can redo it.
    """
    meta = dict(fig.layout.meta) if isinstance(fig.layout.meta, dict) else {}
    meta[_LEGEND_KEY] = {"entries": [dict(e) for e in entries], "font_size": font_size, "sample_px": sample_px,
                         "top_pad": top_pad, "col_gap_px": col_gap_px}
    fig.update_layout(meta=meta, showlegend=False)
    return layout_compact_legend(fig)


def layout_compact_legend(fig: go.Figure, width: float | None = None, height: float | None = None) -> go.Figure:
    """Lay out ``fig``'s :func:`compact_legend` for a figure ``width`` × ``height`` px (default the layout's).

    Sets ``layout.margin.t``; the left, right and bottom margins must be fixed (set ``automargin=False`` on the
    axes) because the entries are placed in plot-area ("paper") coordinates. A no-op without a compact legend.
    """
    spec = _legend_spec(fig)
    if spec is None:
        return fig
    W = float(width or fig.layout.width or 700)
    H = float(height or fig.layout.height or 450)
    m = fig.layout.margin
    l, r, b = (m.l if m.l is not None else 80), (m.r if m.r is not None else 80), (m.b if m.b is not None else 80)
    fs = spec["font_size"] or max(6.0, (fig.layout.font.size or 12) - 1)
    sample, gap, sep = spec["sample_px"], 3.0, max(8.0, fs)
    row_h = round(1.35 * fs, 1)
    x0, avail = 2.0, W - 4.0
    rows: list[list[tuple[float, dict]]] = [[]]
    x = x0
    entries = spec["entries"]
    widths = [sample + gap + text_width_px(str(e["label"]), fs) for e in entries]
    for k, (e, w) in enumerate(zip(entries, widths)):
        lead = (sep * 1.5 if e.get("break_before") else sep) if rows[-1] else 0.0
        need = w
        if e.get("break_before"):  # a group (e.g. the line-style key) starts a new row unless it fits whole
            end = next((j for j in range(k + 1, len(entries)) if entries[j].get("break_before")), len(entries))
            need = sum(widths[k:end]) + sep * (end - k - 1)
            if need > avail:
                need = w
        if rows[-1] and x + lead + need > x0 + avail:
            rows.append([])
            x, lead = x0, 0.0
        rows[-1].append((x + lead, e))
        x += lead + w
    if not rows[-1]:
        rows.pop()
    legend_h = len(rows) * row_h + 2.0
    t = legend_h + spec["top_pad"]
    pw, ph = max(W - l - r, 1.0), max(H - t - b, 1.0)
    shapes = [s for s in (fig.layout.shapes or ()) if s.name != _LEGEND_NAME]
    notes = [a for a in (fig.layout.annotations or ()) if a.name != _LEGEND_NAME]
    for i, row in enumerate(rows):
        y_px = 2.0 + (i + 0.5) * row_h  # from the top of the figure
        y = (H - b - y_px) / ph
        for xs, e in row:
            shapes.append(go.layout.Shape(
                type="line", xref="paper", yref="paper", x0=(xs - l) / pw, x1=(xs + sample - l) / pw, y0=y, y1=y,
                line=dict(color=e.get("color", "#444"), width=e.get("width", 1.5), dash=e.get("dash", "solid")),
                opacity=e.get("opacity", 1.0), name=_LEGEND_NAME, layer="above"))
            notes.append(go.layout.Annotation(
                text=str(e["label"]), xref="paper", yref="paper", x=(xs + sample + gap - l) / pw, y=y,
                xanchor="left", yanchor="middle", showarrow=False, borderpad=0, font=dict(size=fs),
                name=_LEGEND_NAME))
    fig.update_layout(margin=dict(t=round(t, 1)), shapes=shapes, annotations=notes)
    gap = spec.get("col_gap_px")
    xaxes = sorted((k for k in fig.layout.to_plotly_json() if re.fullmatch(r"xaxis\d*", k)),
                   key=lambda k: int(k[5:] or 1))
    if gap and len(xaxes) > 1:
        g = min(gap / pw, 0.4)
        w = (1.0 - g * (len(xaxes) - 1)) / len(xaxes)
        for j, k in enumerate(xaxes):
            fig.layout[k].domain = [j * (w + g), j * (w + g) + w]
    return fig
