"""Live views of training probes for the TrainingPanel.

Three tabs, filled from trainer events while runs train:

* λ_max vs epoch (``top_eigenvalue`` probe records);
* feature sparsity coefficient per layer vs epoch (``feature_sparsity`` probe records);
* histogram of cos(g, g′) between the SGD gradient and the SAM gradient of each
  step ([Murphy 2025, Figs. 5.5-5.8]), one histogram per epoch, chosen
  with a slider.

The data is buffered on the training thread and redrawn by the panel's
refresher thread with the static figure builders of :mod:`workbench.viz`.
"""
from __future__ import annotations

import math
import threading

import ipywidgets as W

from ..training.events import ProbeResult, RunStarted, StepEnd
from ..viz import cosine_histogram_figure, metric_vs_epoch_figure, sparsity_figure
from .base import figure_widget, guard
from .live import sync_figure

__all__ = ["ProbeViews"]


class ProbeViews:
    """Tabs with live probe figures; call the instance with trainer events."""

    def __init__(self):
        self._lock = threading.Lock()
        self._runs: dict[str, dict] = {}
        self._dirty = False
        self.fig_eig = figure_widget(metric_vs_epoch_figure({}, ylabel="λ_max (top Hessian eigenvalue)"))
        self.fig_fsc = figure_widget(sparsity_figure({}))
        self.fig_cos = figure_widget(cosine_histogram_figure({}, slider=False))
        self.w_epoch = W.IntSlider(value=1, min=1, max=1, description="epoch", continuous_update=False)
        self.w_epoch.observe(lambda _c: self._redraw_cos(), names="value")
        self.w_epoch.add_class("wb-cos-epoch")
        for name, f in (("eig", self.fig_eig), ("fsc", self.fig_fsc), ("cos", self.fig_cos)):
            f.add_class(f"wb-probe-{name}")
        self.widget = W.Tab(children=[guard(self.fig_eig), guard(self.fig_fsc),
                                      W.VBox([self.w_epoch, guard(self.fig_cos)])])
        for i, t in enumerate(["λ_max vs epoch", "feature sparsity", "cos(g, g′) histogram"]):
            self.widget.set_title(i, t)
        self.widget.add_class("wb-probe-views")

    # --------------------------------------------------------------- events
    def __call__(self, ev) -> None:
        """Trainer callback: record λ_max and feature-sparsity probe results and SAM's per-step cosines.

        Thread-safe; it only stores the values and marks the views dirty (:meth:`redraw` draws them).
        """
        if isinstance(ev, RunStarted):
            with self._lock:
                self._runs.setdefault(ev.run_id, {"name": ev.name, "eig": [], "fsc": {}, "cos": {}})
            return
        if isinstance(ev, ProbeResult):
            with self._lock:
                r = self._runs.get(ev.run_id)
                if r is None:
                    return
                v = ev.values
                if ev.name == "top_eigenvalue" and v.get("lambda_max") is not None:
                    r["eig"].append((ev.epoch, v["lambda_max"]))
                elif ev.name == "feature_sparsity":
                    for layer, val in zip(v.get("layers", []), v.get("fsc", [])):
                        r["fsc"].setdefault(layer, []).append((ev.epoch, val))
                self._dirty = True
        elif isinstance(ev, StepEnd) and "cosine" in ev.metrics:
            with self._lock:
                r = self._runs.get(ev.run_id)
                if r is not None:
                    e = max(1, math.ceil(ev.epoch - 1e-9))
                    r["cos"].setdefault(e, []).append(ev.metrics["cosine"])
                    self._dirty = True

    def clear(self) -> None:
        """Forget every run and redraw the empty views."""
        with self._lock:
            self._runs = {}
            self._dirty = True
        self.redraw()

    # -------------------------------------------------------------- drawing
    def _snapshot(self):
        with self._lock:
            return {k: {"name": v["name"], "eig": list(v["eig"]),
                        "fsc": {l: list(p) for l, p in v["fsc"].items()},
                        "cos": {e: list(c) for e, c in v["cos"].items()}} for k, v in self._runs.items()}

    def _redraw_cos(self) -> None:
        snap = self._snapshot()
        cos = {v["name"]: v["cos"] for v in snap.values() if v["cos"]}
        epochs = sorted({e for per in cos.values() for e in per})
        if epochs:
            at_end = self.w_epoch.value >= self.w_epoch.max
            self.w_epoch.max = max(epochs)
            self.w_epoch.min = min(epochs)
            if at_end:
                self.w_epoch.value = max(epochs)
        sync_figure(self.fig_cos, cosine_histogram_figure(cos, epoch=self.w_epoch.value if epochs else None,
                                                          slider=False))

    def redraw(self, force: bool = False) -> None:
        """Redraw the three views from the recorded values when something changed (always with ``force``)."""
        if not (self._dirty or force):
            return
        self._dirty = False
        snap = self._snapshot()
        eig = {v["name"]: ([e for e, _ in v["eig"]], [x for _, x in v["eig"]]) for v in snap.values() if v["eig"]}
        sync_figure(self.fig_eig, metric_vs_epoch_figure(eig, ylabel="λ_max (top Hessian eigenvalue)"))
        fsc = {v["name"]: {l: ([e for e, _ in p], [x for _, x in p]) for l, p in v["fsc"].items()}
               for v in snap.values() if v["fsc"]}
        sync_figure(self.fig_fsc, sparsity_figure(fsc))
        self._redraw_cos()
