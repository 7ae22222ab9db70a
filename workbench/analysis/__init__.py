"""Analysis suite: curvature, landscape, gradients, features, projections, sharpness.

Pure functions on (model, data) returning frozen result records; no UI imports.
"""
from .common import (DEFAULT_COUNT, ExampleSet, ResultRecord, eval_mode, load_result, model_device,
                     preserved_state, save_result)

__all__ = ["ExampleSet", "preserved_state", "eval_mode", "model_device", "ResultRecord", "save_result",
           "load_result", "DEFAULT_COUNT"]
