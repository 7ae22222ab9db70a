"""One entry per analysis: what the CLI, the analysis panel, the result tables and the figures all read.

An :class:`AnalysisEntry` holds everything that is specific to one analysis of a stored run:

* ``runner``: computes the result from a loaded model (see :data:`Runner`);
* ``defaults`` and ``choices``: its parameters, their default values and the allowed values of the
  string-valued ones (the CLI's ``--set`` validation and the panel's widgets come from them);
* ``count``: the default number of examples; ``needs_other``: it compares two runs (θ₁ → θ₂);
* ``headline``: the headline numbers of a result (one table row: ``workbench analyze``'s output, the
  panel's table, sweep summaries);
* ``figure`` (and optionally ``progress``): the plotly builders of the finished result and of the partial
  data reported while it runs;
* ``title`` and ``description``: plain words for figure titles and the panel.

The registry is data, not code: callables may be given as ``"package.module:function"`` strings, imported
on first use (:func:`resolve`). That is how the core stays free of plotly: an entry *names* its figure
builder, which lives in :mod:`workbench.viz` and is imported by viz only (:func:`workbench.viz.result_figure`),
and ``workbench --help`` lists the analyses without importing torch.

Adding an analysis is one new module (the science, its result record, its runner and headline numbers) plus
its entry in :data:`BUILTIN` below (its figure builder sits in :mod:`workbench.viz.analysis` with the other
analysis figures, because core modules import no plotly). :func:`register` adds an analysis at run time
(a notebook's or a package's own), which every consumer then lists too.

It lives beside, not inside, :mod:`workbench.analysis`: importing it must not import that package (and torch),
so that the CLI's parser can list the analyses in a few milliseconds. No UI imports, no torch at import time.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["AnalysisEntry", "BUILTIN", "register", "unregister", "get_entry", "analysis_names", "entries",
           "resolve", "Runner", "Headline"]

Runner = Callable[..., tuple]
"""``runner(model, bundle, run_data, params, *, split, count, seed, device, report, other, other_checkpoint)
-> (result, extra)``: ``model`` in eval mode on ``device``; ``bundle`` the run's data; ``params`` the full
parameter dict (defaults filled in, choices checked); ``report(done, total, data=None, message="")`` gives
progress (and raises when the user pressed Stop); ``result`` a :class:`~workbench.analysis.common.ResultRecord`,
``extra`` a list of further records (e.g. one slice per direction)."""

Headline = Callable[[Any, list], dict]
"""``headline(result, extra) -> {column: number or text}``: the result's headline numbers, one table row."""


@dataclass(frozen=True)
class AnalysisEntry:
    """Everything specific to one analysis of a stored run (see the module docstring).

    Attributes:
        name: the analysis' name (``workbench analyze --what NAME``, ``analyze(NAME, run)``).
        title: plain-words name, the figure title before a result exists (e.g. "Top Hessian eigenvalues").
        description: one line for the panel, with the source (e.g. "(Sun 2020, Alg. 1-2)").
        runner: :data:`Runner` or its ``"module:function"`` name.
        headline: :data:`Headline` or its ``"module:function"`` name.
        figure: ``"module:function"`` name (or callable) of the builder ``figure(items, *, theme, metric,
            split, kind, log_y) -> plotly Figure``, ``items`` a list of ``(label, result, extra)``.
        progress: optional ``"module:function"`` (or callable) ``progress(data, *, label, theme) -> Figure |
            None`` drawing a running analysis' ``Progress.data``; ``None`` draws an empty titled figure.
        defaults: parameter name -> default value (JSON-able).
        choices: parameter name -> allowed values (string parameters).
        count: default number of examples (``count=-1``).
        needs_other: the analysis compares two runs (``other=`` / a second run in the CLI and the panel).
        overlay: the panel overlays results of several runs (else it shows the latest one).
        estimate: the panel may time a small probe to estimate the "heavier" setting's duration.
    """

    name: str
    title: str
    description: str
    runner: Runner | str
    headline: Headline | str
    figure: Callable | str
    progress: Callable | str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    choices: Mapping[str, list] = field(default_factory=dict)
    count: int = 2048
    needs_other: bool = False
    overlay: bool = True
    estimate: bool = True

    def __post_init__(self):
        if not self.name or not self.name.isidentifier():
            raise ValueError(f"name={self.name!r} is invalid: an analysis name is a plain identifier")
        unknown = sorted(set(self.choices) - set(self.defaults))
        if unknown:
            raise ValueError(f"{self.name}: choices for unknown parameter(s) {unknown}")
        for k, allowed in self.choices.items():
            if self.defaults[k] not in allowed:
                raise ValueError(f"{self.name}.{k}: default {self.defaults[k]!r} is not one of {allowed}")
        if int(self.count) <= 0:
            raise ValueError(f"{self.name}: count={self.count!r} must be a positive number of examples")

    def run(self, *args, **kwargs):
        """Call the runner (imported on first use)."""
        return resolve(self.runner)(*args, **kwargs)

    def headline_row(self, result, extra=()) -> dict:
        """The headline numbers of ``result`` (see :data:`Headline`)."""
        return dict(resolve(self.headline)(result, list(extra)))


_CACHE: dict[str, Any] = {}


def resolve(obj: Callable | str | None):
    """``"package.module:attribute"`` -> the object (imported once); callables and ``None`` pass through.

    Raises:
        ValueError: not of the form ``module:attribute``; ImportError / AttributeError: it does not exist.
    """
    if obj is None or callable(obj):
        return obj
    if not isinstance(obj, str) or obj.count(":") != 1:
        raise ValueError(f"{obj!r} is invalid: name a callable as 'package.module:function'")
    if obj not in _CACHE:
        mod, attr = obj.split(":")
        target = importlib.import_module(mod)
        for part in attr.split("."):
            target = getattr(target, part)
        _CACHE[obj] = target
    return _CACHE[obj]


_T = "workbench.analysis.tasks"
_V = "workbench.viz.results"

BUILTIN: tuple[AnalysisEntry, ...] = (
    AnalysisEntry(
        "hessian", "Top Hessian eigenvalues",
        "top-k Hessian eigenvalues (Lanczos; PyHessian's power iteration for comparison)",
        f"{_T}:_run_hessian", f"{_T}:_headline_hessian", f"{_V}:_figure_hessian", f"{_V}:_progress_hessian",
        defaults={"k": 5, "method": "lanczos", "which": "LA", "tol": 1e-3},
        choices={"method": ["lanczos", "eigsh", "power", "pyhessian"], "which": ["LA", "SA", "both"]}),
    AnalysisEntry(
        "trace", "Hessian trace", "Hessian trace (Hutch++ / Hutchinson, with standard error)",
        f"{_T}:_run_trace", f"{_T}:_headline_trace", f"{_V}:_figure_trace",
        defaults={"method": "hutchpp", "n_probes": 100},
        choices={"method": ["hutchpp", "hutchinson", "pyhessian"]}),
    AnalysisEntry(
        "density", "Hessian eigenvalue spectral density",
        "eigenvalue spectral density (stochastic Lanczos quadrature), log scale",
        f"{_T}:_run_density", f"{_T}:_headline_density", f"{_V}:_figure_density", f"{_V}:_progress_density",
        defaults={"steps": 80, "n_probes": 1}),
    AnalysisEntry(
        "layerwise", "Per-layer curvature", "top eigenvalue and trace of each layer's Hessian block",
        f"{_T}:_run_layerwise", f"{_T}:_headline_layerwise", f"{_V}:_figure_layerwise",
        defaults={"what": "both", "n_probes": 30}, choices={"what": ["both", "top", "trace"]}),
    AnalysisEntry(
        "interpolate", "Linear interpolation θ(α) = αθ₁ + (1−α)θ₂",
        "1-D linear interpolation θ(α) = αθ₁ + (1−α)θ₂ between two runs (Murphy 2025, Eq. 2.5)",
        f"{_T}:_run_interpolate", f"{_T}:_headline_interpolate", f"{_V}:_figure_interpolate",
        f"{_V}:_progress_interpolate",
        defaults={"alphas": [-0.5, 1.5, 41], "bn": "recompute", "splits": ["train", "test"]},
        choices={"bn": ["recompute", "keep"]}, needs_other=True, overlay=False),
    AnalysisEntry(
        "slice", "1-D loss slices",
        "1-D loss slices along filter-normalised random directions (or the top eigenvector)",
        f"{_T}:_run_slice", f"{_T}:_headline_slice", f"{_V}:_figure_slice", f"{_V}:_progress_slice",
        defaults={"direction": "random", "n_directions": 3, "alphas": [-1.0, 1.0, 41], "bn": "keep",
                  "normalization": "filter", "bias_bn": "zero", "splits": ["train", "test"]},
        choices={"direction": ["random", "eigenvector"], "bn": ["keep", "recompute"],
                 "normalization": ["filter", "layer", "none"], "bias_bn": ["zero", "keep", "normalize"]}),
    AnalysisEntry(
        "plane", "2-D loss landscape", "2-D loss surface on a plane of two filter-normalised random directions",
        f"{_T}:_run_plane", f"{_T}:_headline_plane", f"{_V}:_figure_plane", f"{_V}:_progress_plane",
        defaults={"grid": 21, "span": 1.0, "bn": "keep", "normalization": "filter", "bias_bn": "zero",
                  "splits": ["train"]},
        choices={"bn": ["keep", "recompute"], "normalization": ["filter", "layer", "none"],
                 "bias_bn": ["zero", "keep", "normalize"]},
        count=1024, overlay=False),
    AnalysisEntry(
        "sparsity", "Feature sparsity per layer",
        "feature sparsity coefficient per ReLU layer (Andriushchenko 2024, Ch. 6)",
        f"{_T}:_run_sparsity", f"{_T}:_headline_sparsity", f"{_V}:_figure_sparsity",
        defaults={"tau": 0.95, "max_units": 1000}, count=1024),
    AnalysisEntry(
        "sharpness", "Sharpness vs ρ", "worst-/average-case m-sharpness vs ρ (Andriushchenko 2024, Eq. 5.1, 7.1)",
        f"{_T}:_run_sharpness", f"{_T}:_headline_sharpness", f"{_V}:_figure_sharpness",
        f"{_V}:_progress_sharpness",
        defaults={"rhos": [0.0, 0.025, 0.05, 0.1, 0.2], "kind": "worst", "norm": "l2", "adaptive": False,
                  "m": 128, "method": "pgd", "steps": None},
        choices={"kind": ["worst", "average"], "norm": ["l2", "linf"], "method": ["pgd", "apgd"]}, count=1024),
    AnalysisEntry(
        "pca", "PCA projection", "PCA of per-example (last-layer) gradients, coloured by class",
        f"{_T}:_run_pca", f"{_T}:_headline_pca", f"{_V}:_figure_pca",
        defaults={"kind": "logits"}, choices={"kind": ["logits", "last_input", "weights", "full"]}, overlay=False),
    AnalysisEntry(
        "cosine", "Histogram of gradient cosines",
        "histogram of gradient cosines (SAM's cos(g, g′) per step, or per-example vs class mean)",
        f"{_T}:_run_cosine", f"{_T}:_headline_cosine", f"{_V}:_figure_cosine",
        defaults={"source": "sam", "kind": "logits", "target": None},
        choices={"source": ["sam", "class_mean", "target", "pairwise"],
                 "kind": ["logits", "last_input", "weights", "full"]}, estimate=False),
    AnalysisEntry(
        "corruption", "Parameter corruption: loss increase vs corruption size",
        "random vs gradient-based n-sparse corruption of the weights, loss increase vs n (Sun 2020, Alg. 1-2)",
        "workbench.analysis.corruption:run_analysis", "workbench.analysis.corruption:headline",
        "workbench.viz.analysis:corruption_result_figure", "workbench.viz.analysis:corruption_progress_figure",
        defaults={"sizes": [0, 1, 10, 100, 1000, 10000], "epsilon": 0.5, "norm": "l2", "n_random": 5},
        choices={"norm": ["l2", "linf", "l1"]}, count=1024),
)
"""The analyses shipped with the workbench, in the order the CLI and the panel list them."""

_REGISTRY: dict[str, AnalysisEntry] = {e.name: e for e in BUILTIN}


def register(entry: AnalysisEntry, *, replace: bool = False) -> AnalysisEntry:
    """Add an analysis (the CLI, the panel, the tables and the figures list it from now on).

    Raises:
        TypeError: not an :class:`AnalysisEntry`; ValueError: the name is taken (unless ``replace``).
    """
    if not isinstance(entry, AnalysisEntry):
        raise TypeError(f"entry must be an AnalysisEntry, got {type(entry).__name__}")
    if entry.name in _REGISTRY and not replace:
        raise ValueError(f"analysis {entry.name!r} is already registered (pass replace=True to replace it)")
    _REGISTRY[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a registered analysis (a built-in one comes back only by registering it again)."""
    _REGISTRY.pop(name, None)


def get_entry(name: str) -> AnalysisEntry:
    """The entry of analysis ``name``.

    Raises:
        ValueError: ``what=<name> is invalid: choose one of ...``.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"what={name!r} is invalid: choose one of {', '.join(_REGISTRY)}") from None


def analysis_names() -> tuple[str, ...]:
    """The registered analyses' names, in listing order."""
    return tuple(_REGISTRY)


def entries() -> tuple[AnalysisEntry, ...]:
    """The registered entries, in listing order."""
    return tuple(_REGISTRY.values())
