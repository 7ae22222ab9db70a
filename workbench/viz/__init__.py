"""Figure builders (data -> plotly Figure), themes and export."""
from .analysis import (
    cosine_histogram_figure,
    density_figure,
    eigenvalues_figure,
    interpolation_figure,
    metric_vs_epoch_figure,
    pca_figure,
    plane_figure,
    sharpness_figure,
    slice_figure,
    sparsity_figure,
)
from .curves import CurveData, Series, curve_series, series_trace, training_curves
from .export import (
    FORMATS,
    ExportError,
    export_figure,
    export_many,
    find_chrome,
    static_export_available,
    static_export_session,
)
from .poisoning import (
    craft_loss_figure,
    craft_loss_points,
    delta_norm_figure,
    drift_figure,
    image_grid_figure,
    sam_cosine_figure,
)
from .results import progress_figure, result_figure, summary_rows
from .sweeps import (
    best_so_far_figure,
    matched_ratios,
    metric_vs_param_figure,
    parallel_coordinates_figure,
    ratio_histogram_figure,
)
from .theme import PALETTE, THEMES, apply_theme, color_for, finish_figure

__all__ = ["craft_loss_figure", "craft_loss_points", "delta_norm_figure", "drift_figure", "image_grid_figure",
           "sam_cosine_figure", "metric_vs_param_figure", "parallel_coordinates_figure", "ratio_histogram_figure",
           "best_so_far_figure", "matched_ratios", "result_figure", "progress_figure", "summary_rows",
           "eigenvalues_figure", "density_figure", "interpolation_figure", "slice_figure", "plane_figure",
           "cosine_histogram_figure", "sparsity_figure", "pca_figure", "sharpness_figure", "metric_vs_epoch_figure",
           "CurveData", "Series", "curve_series", "series_trace", "training_curves", "export_figure", "export_many",
           "ExportError", "FORMATS", "find_chrome", "static_export_available", "static_export_session", "PALETTE",
           "THEMES", "apply_theme", "color_for", "finish_figure"]
