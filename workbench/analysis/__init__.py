"""Analysis suite: curvature, landscape, gradients, features, projections, sharpness, parameter corruption.

Pure functions on (model, data) returning frozen result records; no UI imports.
``analyze(what, run, ...)`` (:mod:`.tasks`) runs any of them on a stored run and
saves the result in the run folder.
"""
from . import corruption, curvature, features, gradients, landscape, projections, sharpness, tasks
from .common import (
    DEFAULT_COUNT,
    ExampleSet,
    ResultRecord,
    eval_mode,
    load_result,
    model_device,
    preserved_state,
    save_result,
)
from .corruption import CorruptionResult, parameter_corruption
from .curvature import (
    HessianOperator,
    TopEigenvalueProbe,
    eigenvalue_ratio,
    hutchinson_trace,
    hutchpp_trace,
    lanczos,
    layerwise,
    power_iteration,
    pyhessian_eigenvalues,
    pyhessian_trace,
    smallest_eigenvalues,
    spectral_density,
)
from .features import FeatureSparsityProbe, feature_sparsity
from .gradients import SamCosineTracker, last_layer_gradients, per_example_gradients
from .landscape import interpolate, plane_2d, random_direction, slice_1d, target_direction
from .projections import pca
from .sharpness import sharpness_curve
from .tasks import ANALYSES, analyze

__all__ = ["ExampleSet", "preserved_state", "eval_mode", "model_device", "ResultRecord", "save_result",
           "load_result", "DEFAULT_COUNT", "curvature", "features", "gradients", "landscape", "projections",
           "sharpness", "tasks", "HessianOperator", "lanczos", "power_iteration", "smallest_eigenvalues",
           "hutchinson_trace", "hutchpp_trace", "spectral_density", "layerwise", "eigenvalue_ratio",
           "pyhessian_eigenvalues", "pyhessian_trace", "TopEigenvalueProbe", "feature_sparsity",
           "FeatureSparsityProbe", "per_example_gradients", "last_layer_gradients", "SamCosineTracker",
           "interpolate", "slice_1d", "plane_2d", "random_direction", "target_direction", "pca",
           "sharpness_curve", "analyze", "ANALYSES", "corruption", "parameter_corruption", "CorruptionResult"]
