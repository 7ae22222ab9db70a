"""Figure builders (data -> plotly Figure), themes and export."""
from .curves import CurveData, Series, curve_series, series_trace, training_curves
from .export import (ExportError, FORMATS, export_figure, export_many, find_chrome, static_export_available,
                     static_export_session)
from .theme import PALETTE, THEMES, apply_theme, color_for

__all__ = ["CurveData", "Series", "curve_series", "series_trace", "training_curves", "export_figure", "export_many",
           "ExportError", "FORMATS", "find_chrome", "static_export_available", "static_export_session", "PALETTE", "THEMES",
           "apply_theme", "color_for"]
