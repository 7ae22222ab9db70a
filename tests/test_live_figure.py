"""The panels' live figures (workbench.ui.figure): one module URL, fresh state on reconnect, watchdog and fallback.

The browser side is covered by tests/test_browser.py (busy CPU, reload, reopen); these tests drive the kernel side
the way the browser does: a view acknowledges an update by sending ``_js2py_traceDeltas`` with its edit id.
"""
from __future__ import annotations

import time

import plotly.graph_objects as go
import pytest

from workbench.ui import figure as F


@pytest.fixture()
def fast_watchdog(monkeypatch):
    """Guards made in the test are checked by the test itself (no waiting for the thread's tick)."""
    monkeypatch.setattr(F._WATCH, "add", lambda g: None)
    monkeypatch.setattr(F.ACTIVITY, "_hooked", False)
    monkeypatch.setattr(F.ACTIVITY, "busy_since", None)


def _ack(fig, eid=None):
    """What a working browser view does after applying an update."""
    fig._js2py_traceDeltas = {"trace_deltas": [], "trace_edit_id": fig._last_trace_edit_id if eid is None else eid}


def test_module_source_shim_or_inline(monkeypatch):
    monkeypatch.delenv(F.PLOTLY_ESM_ENV, raising=False)
    plain = F.figure_widget(go.Figure(go.Scatter(y=[1, 2])))
    assert isinstance(plain, go.FigureWidget) and isinstance(plain, F.LiveFigure)
    assert len(plain._esm) > 1_000_000 and len(plain.data) == 1           # plotly's bundle, as without app mode
    monkeypatch.setenv(F.PLOTLY_ESM_ENV, "files/runs/app/static/plotly-widgetbundle-x.js")
    a, b = F.figure_widget(go.Figure(go.Scatter(y=[1]))), F.figure_widget()
    assert a._esm == b._esm and len(a._esm) < 3000
    assert '"files/runs/app/static/plotly-widgetbundle-x.js"' in a._esm
    assert "jupyter-config-data" in a._esm and "fetch(" in a._esm and "export default" in a._esm
    # an absolute URL goes through the same shim (same-origin fetch, one import per page)
    monkeypatch.setenv(F.PLOTLY_ESM_ENV, "http://127.0.0.1:8866/voila/files/x.js")
    c = F.figure_widget()
    assert '"http://127.0.0.1:8866/voila/files/x.js"' in c._esm and len(c._esm) < 3000


def test_full_state_is_refreshed_without_sending_on_every_update(monkeypatch):
    monkeypatch.delenv(F.PLOTLY_ESM_ENV, raising=False)
    fig = F.figure_widget(go.Figure(layout=dict(title="t")))
    sent: list = []
    monkeypatch.setattr(fig, "send_state", lambda key=None: sent.append(key))
    fig.add_scatter(x=[0, 1], y=[1, 2], name="a")
    with fig.batch_update():
        fig.data[0].x, fig.data[0].y = [0, 1, 2], [1, 2, 3]
    fig.layout.title.text = "new"
    assert fig._widget_data == []                       # plotly keeps the initial state: a reload would start here
    state = fig.get_state()                             # what a (re)connecting page receives
    assert [len(t["x"]) for t in state["_widget_data"]] == [3]
    assert state["_widget_layout"]["title"]["text"] == "new"
    assert "_widget_data" not in sent and None not in sent   # the refresh itself sent nothing


def test_health_from_acknowledgements(fast_watchdog):
    fig = F.figure_widget()
    fig.add_scatter(y=[1, 2])
    assert fig.health() == ("no view", 0.0)             # never displayed: nobody to hear from
    fig._view_count = 1                                  # the front end counted a view
    state, age = fig.health()
    assert state == "pending" and 0 <= age < 5
    _ack(fig)
    assert fig.health()[0] == "ok"
    _ack(fig, eid=0)                                     # a stale reply changes nothing
    assert fig.health()[0] == "ok"


def test_guard_falls_back_to_a_static_copy_and_recovers(fast_watchdog):
    fig = F.figure_widget(go.Figure(go.Scatter(x=[0], y=[1], name="loss")))
    g = F.FigureGuard(fig, stall_after=0.2, mirror_every=0.0)
    assert F.guard(fig) is g.widget and fig.guarded is g
    fig._wb_displayed = True
    g.check()
    assert not g.fallback and g.w_mirror.layout.display == "none"
    with fig.batch_update():                             # updates that no view acknowledges (a dead view)
        fig.data[0].x, fig.data[0].y = [0, 1, 2], [1, 0.5, 0.2]
    g.check()
    assert not g.fallback                                # not yet: a slow view gets stall_after seconds
    time.sleep(0.25)
    g.check()
    assert g.fallback and g.fallbacks == 1
    assert g.w_notice.layout.display is None and "did not start" in g.w_notice.value
    assert g.w_live.layout.display == "none" and g.w_mirror.layout.display is None
    (out,) = g.w_mirror.outputs
    spec = out["data"]["application/vnd.plotly.v1+json"]
    assert spec["data"][0]["y"] == [1, 0.5, 0.2]         # the copy shows the current curve
    draws = g.mirror_draws
    g.check()
    assert g.mirror_draws == draws                       # unchanged figure: not redrawn
    with fig.batch_update():
        fig.data[0].x, fig.data[0].y = [0, 1, 2, 3], [1, 0.5, 0.2, 0.1]
    g.check()
    assert g.mirror_draws == draws + 1
    assert len(g.w_mirror.outputs[0]["data"]["application/vnd.plotly.v1+json"]["data"][0]["y"]) == 4
    _ack(fig)                                            # a working view again (e.g. after a reload)
    assert not g.fallback and g.w_live.layout.display is None and g.w_mirror.layout.display == "none"
    assert g.w_notice.layout.display == "none"


def test_reconnect_gives_new_views_a_fresh_chance(fast_watchdog):
    fig = F.figure_widget()
    g = fig.guarded
    fig._wb_displayed = True
    g.stall_after = 0.0
    fig.add_scatter(y=[1])
    g.check()
    assert g.fallback
    fig.get_state()                                      # a page reconnects and builds its views from the state
    assert not g.fallback and fig.health()[0] == "ok"


def test_no_fallback_while_the_kernel_runs_a_cell(fast_watchdog, monkeypatch):
    fig = F.figure_widget()
    g = F.FigureGuard(fig, stall_after=0.0)
    fig._wb_displayed = True
    monkeypatch.setattr(F.ACTIVITY, "_hooked", True)
    F.ACTIVITY._pre()                                    # replies wait while a cell runs: silence is not a failure
    try:
        fig.add_scatter(y=[1, 2])
        g.check()
        assert fig.health()[0] == "busy" and not g.fallback
    finally:
        F.ACTIVITY._post()
    assert fig.health()[0] == "pending" and fig.health()[1] == 0.0   # right after the cell: a grace period
    g.check()
    assert not g.fallback


def test_static_output_is_a_plotly_display_bundle():
    out = F.static_output(go.Figure(go.Scatter(x=[1, 2], y=[3, 4])))
    assert out["output_type"] == "display_data"
    assert out["data"]["application/vnd.plotly.v1+json"]["data"][0]["x"] == [1, 2]
    assert "1 traces, 2 points" in out["data"]["text/plain"]


def test_panels_put_their_figures_in_guards(run_root=None):
    from workbench.ui import TrainingPanel

    p = TrainingPanel(root="/tmp/unused-runs", epochs=1, heavier={})
    boxes = [c for c in p.widget.children if "wb-figure-guard" in c._dom_classes]
    assert boxes and boxes[0].children[1].children[0] is p.figure


def test_busy_kernel_notice_on_an_idle_panel(fast_watchdog, monkeypatch, tmp_path):
    from workbench.ui import TrainingPanel
    from workbench.ui.base import _BusyNotice

    p = TrainingPanel(root=tmp_path, epochs=1, heavier={})
    ready = p.w_status.value
    n = _BusyNotice(p, after=0.0)
    n.check()
    assert not n.shown                                   # no cell running
    F.ACTIVITY._pre()                                    # a long cell below the panel starts
    try:
        time.sleep(0.01)
        n.check()
        assert n.shown and "busy running another cell" in p.w_status.value and "Ready" not in p.w_status.value
        assert p.w_start.disabled                        # a click would only queue: refused visibly instead
    finally:
        F.ACTIVITY._post()
    n.check()
    assert not n.shown and p.w_status.value == ready and not p.w_start.disabled and p.w_stop.disabled


def test_export_of_an_empty_figure_is_refused(tmp_path):
    from workbench.ui import TrainingPanel
    from workbench.ui.base import figure_has_data

    p = TrainingPanel(root=tmp_path, epochs=1, heavier={})
    assert p.export(tmp_path / "empty", formats=("html",)) == []
    assert "Nothing to export" in p.w_status.value and not list(tmp_path.glob("empty*"))
    assert not figure_has_data(go.Figure(go.Scatter(x=[], y=[])))
    assert figure_has_data(go.Figure(go.Heatmap(z=[[1]]))) and figure_has_data(go.Figure(go.Scatter(y=[0])))
