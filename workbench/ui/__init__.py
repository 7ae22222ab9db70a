"""Notebook UI: ipywidgets panels wired to the core through background runners."""
from .analysis_panel import AnalysisPanel
from .live import LiveCurves, sync_figure
from .poison_panel import PoisonPanel
from .runner import BackgroundRunner
from .sweep_panel import SweepPanel
from .training_panel import TrainingPanel

__all__ = ["TrainingPanel", "AnalysisPanel", "SweepPanel", "PoisonPanel", "LiveCurves", "BackgroundRunner",
           "sync_figure"]
