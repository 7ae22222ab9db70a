"""Notebook UI: ipywidgets panels wired to the core through a background runner."""
from .live import LiveCurves
from .runner import BackgroundRunner
from .training_panel import TrainingPanel

__all__ = ["TrainingPanel", "LiveCurves", "BackgroundRunner"]
