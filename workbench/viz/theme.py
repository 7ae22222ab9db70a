"""Figure themes: ``screen`` for notebooks and dashboards, ``paper`` for publications.

Both use the Okabe-Ito palette (colour-blind safe). The paper theme sets a
serif font at print sizes and a one-column width; static export converts
inches to pixels at 96 px/in (plotly's layout unit), scaled for resolution.
"""
from __future__ import annotations

import plotly.graph_objects as go

__all__ = ["PALETTE", "THEMES", "apply_theme", "color_for", "finish_figure", "PAPER_WIDTHS_IN"]

# Okabe & Ito (2008), without black and yellow first (poor on white).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
SPLIT_DASH = {"train": "solid", "val": "dash", "test": "dot"}
PAPER_WIDTHS_IN = {"one-column": 3.25, "two-column": 6.75}

THEMES = {
    "screen": dict(template="plotly_white", font=dict(family="Arial, sans-serif", size=13), height=420,
                   line_width=2.0, margin=dict(l=60, r=20, t=50, b=50)),
    "paper": dict(template="simple_white", font=dict(family="Times New Roman, Times, serif", size=9),
                  height=int(2.2 * 96), width=int(PAPER_WIDTHS_IN["two-column"] * 96), line_width=1.2,
                  margin=dict(l=45, r=10, t=25, b=35)),
}


def color_for(i: int) -> str:
    """The i-th colour of the palette (cycling)."""
    return PALETTE[i % len(PALETTE)]


def apply_theme(fig: go.Figure, theme: str = "screen") -> go.Figure:
    """Apply a theme to ``fig`` in place and return it.

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
