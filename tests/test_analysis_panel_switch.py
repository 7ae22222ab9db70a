"""Switching analyses on the AnalysisPanel's one live FigureWidget.

After analysis A, analysis B must draw on a clean layout: the widget holds exactly
what the pure builder (:func:`workbench.viz.result_figure`) makes for B, none of A's
subplot titles, lines, second axes or sliders; exports carry only B; the title says
"computing…" while an analysis runs; slice and plane figures state the settings of
the result they show.

Two tiny runs (LeNet-5 on digits: SGD 1 epoch, SAM 2 epochs so that the SAM cosine
histogram has an epoch slider) and every analysis once on 64 examples, through the
panel itself, are made once per module (about 30 s on 2 CPU cores); the 110 ordered
switches take about 20 s more (building a figure costs ~0.1 s, mostly plotly validating the theme's template).
"""
from __future__ import annotations

import itertools
import json
import os

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import pytest

from workbench.analysis.tasks import ANALYSES, analyze
from workbench.presets import quickstart_config
from workbench.training import Trainer
from workbench.ui.live import sync_figure
from workbench.viz import result_figure
from workbench.viz.analysis import cosine_histogram_figure, density_figure, interpolation_figure

FAST = {"hessian": {"k": 2}, "trace": {"n_probes": 6}, "density": {"steps": 10}, "layerwise": {"n_probes": 3},
        "interpolate": {"alphas": [-0.5, 1.5, 5]}, "slice": {"n_directions": 2, "alphas": [-1.0, 1.0, 5]},
        "plane": {"grid": 5}, "sharpness": {"steps": 3, "rhos": [0.0, 0.05], "m": 32}}
COUNT = 64


def _set_params(panel, what: str) -> None:
    for k, v in FAST.get(what, {}).items():
        w = panel._param_widgets[k]
        if isinstance(v, list):
            v = "[" + ", ".join(map(str, v)) + "]"
        w.value = str(v) if isinstance(w, W.Text) else v


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    """An AnalysisPanel that has run every analysis once (cosine on the SAM run, interpolate SGD → SAM)."""
    from workbench.ui import AnalysisPanel

    before = os.environ.get("WORKBENCH_ESTIMATE")
    os.environ["WORKBENCH_ESTIMATE"] = "0"  # no timed-probe estimate thread on every switch
    try:
        root = tmp_path_factory.mktemp("runs")
        a = Trainer(quickstart_config("sgd", epochs=1, root=str(root))).run().run_path
        b = Trainer(quickstart_config("sam", epochs=2, root=str(root))).run().run_path
        p = AnalysisPanel(root=root, interval=0.05)
        p.w_count.value = COUNT
        for what in ANALYSES:
            p.select(b if what == "cosine" else a, b)
            p.w_what.value = what
            _set_params(p, what)
            assert p.start(), p.w_status.value
            assert p.wait(120) and what in p.outputs, (what, p.w_status.value, p.errors)
        p.runs = (a, b)
        yield p
    finally:
        if before is None:
            os.environ.pop("WORKBENCH_ESTIMATE", None)
        else:
            os.environ["WORKBENCH_ESTIMATE"] = before


def _json(obj) -> dict:
    """Plain JSON of a layout or trace (numpy arrays as lists), without the widget's trace uid."""
    d = json.loads(json.dumps(obj.to_plotly_json(), cls=_Enc))
    d.pop("uid", None)
    return d


class _Enc(json.JSONEncoder):
    def default(self, o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        return super().default(o)


def _builder(p, what: str) -> go.Figure:
    return result_figure(what, p.outputs[what], kind=p.w_view.value, metric=p.w_metric.value, log_y=p.w_log.value)


def _mismatch(widget: go.FigureWidget, fig: go.Figure) -> list[str]:
    """What differs between the widget and the builder's figure (empty when they are the same)."""
    wl, fl = _json(widget.layout), _json(fig.layout)
    out = []
    extra, missing = sorted(set(wl) - set(fl)), sorted(set(fl) - set(wl))
    if extra:
        out.append(f"left-over layout keys {extra}")
    if missing:
        out.append(f"missing layout keys {missing}")
    out += [f"layout.{k} differs" for k in sorted(set(wl) & set(fl)) if wl[k] != fl[k]]
    ann = lambda lay: [a.get("text") for a in lay.get("annotations", [])]  # noqa: E731
    if ann(wl) != ann(fl):
        out.append(f"annotations {ann(wl)} != {ann(fl)}")
    if len(wl.get("shapes", [])) != len(fl.get("shapes", [])):
        out.append(f"{len(wl.get('shapes', []))} shapes != {len(fl.get('shapes', []))}")
    if [t.type for t in widget.data] != [t.type for t in fig.data]:
        out.append(f"traces {[t.type for t in widget.data]} != {[t.type for t in fig.data]}")
    else:
        out += [f"trace {i} ({t.type}) differs" for i, (t, u) in enumerate(zip(widget.data, fig.data))
                if _json(t) != _json(u)]
    return out


def _every_ordered_pair_once(nodes) -> list:
    """A walk through ``nodes`` in which every ordered pair (a, b), a ≠ b, is one step exactly once (an Euler circuit
    of the complete directed graph, Hierholzer's algorithm): 110 switches for 11 analyses instead of 220."""
    out_edges = {a: [b for b in reversed(nodes) if b != a] for a in nodes}
    stack, walk = [nodes[0]], []
    while stack:
        if out_edges[stack[-1]]:
            stack.append(out_edges[stack[-1]].pop())
        else:
            walk.append(stack.pop())
    return walk[::-1]


def test_every_switch_leaves_only_the_current_analysis_on_the_figure(panel):
    p = panel
    walk = _every_ordered_pair_once(list(ANALYSES))
    pairs = list(zip(walk, walk[1:]))
    assert sorted(pairs) == sorted(itertools.permutations(ANALYSES, 2))
    expected = {what: _builder(p, what) for what in ANALYSES}  # builders are pure: build each once
    bad = {}
    p.w_what.value = walk[0]
    for a, b in pairs:
        assert p.w_what.value == a
        p.w_what.value = b
        diff = _mismatch(p.figure, expected[b])
        if diff:
            bad[f"{a} → {b}"] = diff
    assert not bad, f"{len(bad)} of {len(pairs)} switches leave a wrong figure: " + \
        "; ".join(f"{k}: {', '.join(v[:3])}" for k, v in list(bad.items())[:8])


def test_the_reported_leftovers_are_gone(panel):
    """The report: after interpolate, cosine / pca / sparsity / density kept its subplot titles, θ lines, x2 axis
    and cosine's epoch slider (density cut at λ ≈ 1 by cosine's x range)."""
    p = panel
    assert _builder(p, "cosine").layout.sliders, "the SAM run's cosine histogram should have an epoch slider"
    for b in ("cosine", "pca", "sparsity", "density"):
        p.w_what.value = "interpolate"
        assert p.figure.layout.xaxis2.domain and len(p.figure.layout.shapes) == 4
        p.w_what.value = "cosine"
        p.w_what.value = b
        lay = p.figure.layout
        assert not lay.annotations and not lay.shapes and lay.xaxis2.domain is None and lay.yaxis2.domain is None
        assert bool(lay.sliders) == (b == "cosine")
        if b != "cosine":
            assert lay.xaxis.range is None  # density is not cut at cosine's [-1, 1]


def test_live_runs_after_another_analysis_draw_on_a_clean_layout(panel, monkeypatch):
    """The user's path through Run: the placeholder and progress figures say "computing…", the final one does
    not, and each of them replaces the previous analysis' layout."""
    import workbench.ui.analysis_panel as ap

    p = panel
    drawn = []
    draw = ap.sync_figure

    def spy(widget, fig):
        draw(widget, fig)
        drawn.append((fig.layout.title.text, _mismatch(widget, fig)))

    monkeypatch.setattr(ap, "sync_figure", spy)
    p.w_force.value = True
    try:
        for before, what in (("interpolate", "density"), ("cosine", "interpolate"), ("plane", "slice")):
            p.select(p.runs[0], p.runs[1])
            p.w_what.value = before
            p.w_what.value = what
            _set_params(p, what)
            drawn.clear()
            assert p.start() and p.wait(120), p.w_status.value
            assert drawn and all(not d for _, d in drawn), drawn
            titles = [t for t, _ in drawn]
            assert "computing…" in titles[0] and all("computing…" in t for t in titles[:-1]), titles
            assert "computing" not in titles[-1] and titles[-1] == _builder(p, what).layout.title.text
            assert not _mismatch(p.figure, _builder(p, what))
    finally:
        p.w_force.value = False


def test_export_carries_only_the_current_analysis(panel, tmp_path, monkeypatch):
    p = panel
    seen = []
    monkeypatch.setattr(type(p), "_export", lambda self, fig, stem, formats: seen.append(fig) or [])
    p.w_what.value = "interpolate"
    p.w_what.value = "cosine"
    p.export(tmp_path / "cos", formats=("html",))
    fig = seen[-1]
    assert not fig.layout.annotations and not fig.layout.shapes and "xaxis2" not in fig.layout.to_plotly_json()
    assert _json(fig.layout) == _json(p.figure.layout) and [t.type for t in fig.data] == ["bar"]
    # and the written HTML holds no θ₁/θ₂ markers
    monkeypatch.undo()
    path, = p.export(tmp_path / "cos", formats=("html",))
    page = path.read_text()
    assert "cos(g, g" in page and "θ₁" not in page and '"x2"' not in page


def test_slice_and_plane_titles_state_the_settings_of_the_shown_result(panel):
    p = panel
    p.select(p.runs[0])
    p.w_what.value = "slice"
    _set_params(p, "slice")
    sub = p.figure.layout.title.subtitle.text
    for s in ("random", "filter", "5 points", "BN keep", f"{COUNT} train", "seed 0", "2 random directions"):
        assert s in sub, (s, sub)
    # the widgets now ask for other settings: the figure still describes the result it shows
    p._param_widgets["bn"].value = "recompute"
    p._param_widgets["alphas"].value = "[-2.0, 2.0, 11]"
    p._param_widgets["n_directions"].value = 3
    p.w_seed.value = 7
    p.w_log.value = True  # redraws
    p.w_log.value = False
    assert p.figure.layout.title.subtitle.text == sub
    p.w_seed.value = 0
    p.w_what.value = "plane"
    sub = p.figure.layout.title.subtitle.text
    for s in ("random", "filter", "span 1", "5×5", "BN keep", f"{COUNT} train", "seed 0"):
        assert s in sub, (s, sub)
    assert "filter-normalised" in p.figure.layout.title.text


def test_slice_settings_come_from_the_result_itself(panel):
    a = panel.runs[0]
    out = analyze("slice", a, count=32, seed=3, params={"n_directions": 1, "alphas": [-0.5, 0.5, 3], "bn": "keep",
                                                        "normalization": "layer", "splits": ["test"]})
    sub = result_figure("slice", {"x": out.result}).layout.title.subtitle.text  # a bare result, no AnalysisOutput
    for s in ("layer", "α ∈ [-0.5, 0.5]", "3 points", "32 test", "seed 3", "BN keep"):
        assert s in sub, (s, sub)
    assert not result_figure("slice", [out], theme="paper").layout.title.subtitle.text


def test_sync_figure_replaces_stale_layout_but_updates_the_same_figure_in_place():
    w = go.FigureWidget()
    relayouts = []  # what the browser view is sent
    send, update = w._send_relayout_msg, w._send_update_msg
    w._send_relayout_msg = lambda data, *a, **k: (relayouts.append(data), send(data, *a, **k))[1]
    w._send_update_msg = lambda *a, **k: (relayouts.append(k.get("relayout_data") or {}), update(*a, **k))[1]
    x = np.linspace(0, 1, 5)
    sync_figure(w, interpolation_figure(x, {"train": x}, {"train": x}))
    assert w.layout.xaxis2.domain and len(w.layout.annotations) == 6
    cos = cosine_histogram_figure({"a": {0: x, 1: x}})
    sync_figure(w, cos)
    assert _json(w.layout) == _json(cos.layout)
    # the browser view is told to drop them too (relayout with null / an empty array)
    assert any(d.get("xaxis2", 0) is None for d in relayouts)
    for k in ("annotations", "shapes"):
        assert any(d.get(k, 0) in ([], None) for d in relayouts), k
    assert not w.layout.annotations and not w.layout.shapes
    dens = density_figure({"a": (x, x + 1)})
    sync_figure(w, dens)
    assert _json(w.layout) == _json(dens.layout) and w.layout.xaxis.range is None and not w.layout.sliders
    # same figure with more data: the trace object is kept and updated in place
    tr = w.data[0]
    sync_figure(w, density_figure({"a": (np.r_[x, 2.0], np.r_[x, 2.0] + 1)}))
    assert w.data[0] is tr and len(tr.x) == 6
    # a user's pan mode survives redraws
    w.layout.dragmode = "pan"
    sync_figure(w, dens)
    assert w.layout.dragmode == "pan"
