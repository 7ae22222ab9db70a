"""App mode and classroom safety: Voilà serves every study, the landing page lists them, panels never collide."""
from __future__ import annotations

import argparse
import http.client
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import psutil
import pytest

from workbench.app.estimate import estimate_training, format_duration, probe_training
from workbench.app.studies import landing_markdown, list_studies
from workbench.presets import quickstart_config

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


# ----------------------------------------------------------------------------- landing page
def test_landing_describes_every_notebook_for_a_person_and_picks_up_new_ones(tmp_path):
    studies = list_studies(REPO / "notebooks")
    assert [s.name for s in studies] == [p.name for p in NOTEBOOKS]
    for s in studies:
        # a title, one sentence and what you will see: plain text, complete, without file names, hashes or LaTeX
        assert s.title and s.summary and s.you_will_see, s
        assert len(s.summary) <= 200 and len(s.you_will_see) <= 300 and "…" not in s.summary + s.you_will_see, s
        text = " ".join((s.title, s.summary, s.you_will_see))
        assert not re.search(r"[#$\\`*\n]|\.txt|\.ipynb|\.md\b|[0-9a-f]{12}|shared/", text), text
        assert s.summary[0].isupper() and s.summary.endswith((".", "?", "!")), s.summary
    tour = next(s for s in studies if s.name == "10_guided_tour.ipynb")
    assert tour.title.startswith("Guided tour") and "60-minute" in tour.summary
    quick = next(s for s in studies if s.name == "00_quickstart.ipynb")
    assert quick.summary.startswith("Train a small network") and "curves" in quick.you_will_see

    d = tmp_path / "notebooks"
    d.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(
        "# A *new* study of $\\min_w \\max_{\\|\\epsilon\\|_2 \\le \\rho} L$\n\n"
        "It measures [something](http://x) new (`000_a2438a0e2dba8132.txt`). More text.\n\n"
        "**You will see:** one figure.")]
    nbformat.write(nb, d / "42_new.ipynb")
    (new,) = list_studies(d)
    assert (new.title, new.summary, new.you_will_see) == (
        "A new study of min w max ‖ε‖ 2 ≤ ρ L", "It measures something new.", "One figure.")
    table = landing_markdown([new], href="/voila/render/notebooks/{name}")
    assert "| [**A new study of min w max ‖ε‖ 2 ≤ ρ L**](/voila/render/notebooks/42_new.ipynb) | It measures " \
           "something new. | One figure. |" in table


# ----------------------------------------------------------------------------- Voilà
def _get(url: str, timeout: float = 300.0, final: list | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            if final is not None:
                final.append(r.geturl())
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""


def _head_of_page(url: str) -> tuple[int, str]:
    """Status and the first bytes of a page (Voilà streams the page head before the kernel has finished)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    try:
        conn.request("GET", f"{u.path}?{u.query}")
        r = conn.getresponse()
        return r.status, r.read(2000).decode("utf-8", "replace")
    finally:
        conn.close()


def test_voila_serves_every_study_on_localhost_with_a_token(tmp_path):
    from workbench.app.server import serve

    env = {"WORKBENCH_EPOCHS": "2", "WORKBENCH_COUNT": "64", "WORKBENCH_SEEDS": "2", "OMP_NUM_THREADS": "1",
           "WORKBENCH_RUNS": str(tmp_path / "runs"), "JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrt"), "IPYTHONDIR": str(tmp_path / "ipy")}
    with serve(env=env, log=tmp_path / "voila.log") as srv:
        assert "--Voila.ip=127.0.0.1" in srv.argv and f"--token={srv.token}" in srv.argv
        assert "--template=workbench" in srv.argv
        # no token, no page
        final: list = []
        status, page = _get(srv.landing_url.split("?")[0], timeout=30, final=final)
        assert status in (401, 403) or "/login" in final[0], (status, final)
        assert "Sharpness & Poisoning Workbench" not in page and "widget-view" not in page
        # the landing page executes and lists every study, linked to its dashboard
        status, html = _get(srv.landing_url)
        assert status == 200, srv.log_tail()
        html = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), html)  # JSON-escaped output
        for s in list_studies(REPO / "notebooks"):
            assert f"/voila/render/notebooks/{s.name}" in html, s.name
            assert s.title in html
        assert "cdn.jsdelivr.net" not in html  # the offline template dropped Voilà's CDN links
        # one small study rendered fully: its kernel ran the code (two runs trained), the code is hidden
        status, html = _get(srv.notebook_url("00_quickstart.ipynb"))
        assert status == 200, srv.log_tail()
        assert "application/vnd.jupyter.widget-view+json" in html
        assert html.count("finished") >= 2 and "test acc" in html
        assert "quickstart_configs(epochs=EPOCHS" not in html and "from workbench.presets import" not in html
        assert len([p for p in (tmp_path / "runs").iterdir() if p.is_dir()]) >= 2
        # plotly's widget module is served once, at the URL the kernels were given, and nothing else is opened up
        esm_url = srv.plotly_esm
        assert esm_url.startswith(srv.base + "voila/files/runs/app/static/plotly-widgetbundle-")
        status, js = _get(srv.url(esm_url[len(srv.base):]))
        assert status == 200 and len(js) > 1_000_000 and "export" in js
        assert _get(srv.url("voila/files/pyproject.toml"))[0] in (403, 404)
        # every other study is served (page head streamed with its title; its kernel is not awaited)
        for p in NOTEBOOKS:
            if p.name == "00_quickstart.ipynb":
                continue
            status, head = _head_of_page(srv.notebook_url(p.name))
            assert status == 200 and "<title>" in head and "voila" in head.lower(), (p.name, status, head[:300])


def test_voila_command_culls_idle_kernels_of_closed_pages():
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
    from voila.app import Voila

    from workbench.app.server import CULL_IDLE_TIMEOUT_S, cull_options, voila_command

    _, argv, _ = voila_command(port=9, token="t")
    assert cull_options() == [o for o in argv if o.startswith("--MappingKernelManager.")]
    assert f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_TIMEOUT_S}" in argv and CULL_IDLE_TIMEOUT_S >= 60
    # Voilà 0.5 accepts them, and its kernel manager (jupyter-server's, with Voilà as parent) receives them
    app = Voila()
    app.parse_command_line([o for o in argv if o.startswith("--MappingKernelManager.")])
    km = AsyncMappingKernelManager(config=app.config)
    assert (km.cull_idle_timeout, km.cull_interval, km.cull_connected, km.cull_busy) == (CULL_IDLE_TIMEOUT_S, 60,
                                                                                        False, False)
    # extra options of the same name replace the defaults (traitlets refuses an option given twice)
    _, argv, _ = voila_command(port=9, token="t", extra=["--MappingKernelManager.cull_idle_timeout=5"])
    assert [o for o in argv if "cull_idle_timeout" in o] == ["--MappingKernelManager.cull_idle_timeout=5"]
    with pytest.raises(ValueError, match="positive"):
        cull_options(0)


def test_the_kernel_of_a_closed_page_is_shut_down(tmp_path):
    import time

    from workbench.app.server import _children, serve

    env = {"WORKBENCH_RUNS": str(tmp_path / "runs"), "JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrt"), "IPYTHONDIR": str(tmp_path / "ipy")}
    extra = ["--MappingKernelManager.cull_idle_timeout=2", "--MappingKernelManager.cull_interval=1"]
    with serve(env=env, log=tmp_path / "voila.log", extra=extra) as srv:
        def kernels():
            out = []
            for c in _children(srv.proc.pid):
                try:
                    if c.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(c.cmdline()):
                        out.append(c)
                except psutil.Error:  # it ended (or is a zombie) between listing and reading: not a live kernel
                    pass
            return out

        status, _ = _get(srv.landing_url)   # the page is read and closed: no browser keeps its kernel connected
        assert status == 200 and len(kernels()) == 1, srv.log_tail()
        deadline = time.monotonic() + 60
        while kernels() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not kernels(), srv.log_tail()
        assert "Culling 'idle' kernel" in srv.log_tail(200)


# ----------------------------------------------------------------------------- classroom safety
def test_two_panels_started_at_once_write_two_distinct_run_folders(run_root):
    from workbench.ui import TrainingPanel

    base = quickstart_config("sgd", epochs=1, root=str(run_root)).with_overrides({"data.max_train": 128})
    panels = [TrainingPanel(root=run_root, base=base, compare=("sgd",), per_step=False, interval=0.05,
                            heavier={}) for _ in range(2)]
    assert panels[0].configs()[0].to_dict() == panels[1].configs()[0].to_dict()  # same name, same second
    gate = threading.Barrier(2)
    started = []

    def go(p):
        gate.wait()
        started.append(p.start())

    threads = [threading.Thread(target=go, args=(p,)) for p in panels]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert started == [True, True]
    for p in panels:
        assert p.wait(120)
    paths = [r.run_path for p in panels for r in p.results]
    assert len(paths) == 2 and len(set(paths)) == 2 and all(Path(q).is_dir() for q in paths)
    assert sorted(q.name for q in run_root.iterdir()) == sorted(Path(q).name for q in paths)
    for q in paths:
        assert json.loads((Path(q) / "status.json").read_text())["status"] == "finished"


def test_a_panel_refuses_a_second_concurrent_start_reset_and_heavier(run_root):
    from workbench.ui import TrainingPanel

    base = quickstart_config("sgd", epochs=500, root=str(run_root)).with_overrides({"data.max_train": 128})
    p = TrainingPanel(root=run_root, base=base, compare=("sgd",), per_step=False, interval=0.05,
                      heavier={"epochs": 1000})
    p.w_lr.value = 0.01
    assert p.start()
    try:
        assert not p.start()
        assert "already in progress on this figure" in p.w_status.value
        assert not p.classroom.run_heavier() and "already in progress" in p.w_status.value
        assert not p.classroom.reset() and p.w_lr.value == 0.01
        assert len(p.runner.configs) == 1
    finally:
        p.stop()
        assert p.wait(60)
    assert len(list(run_root.iterdir())) == 1
    assert p.classroom.reset() and p.w_lr.value == base.optim.lr and "restored" in p.w_status.value


def test_two_sweep_panels_never_share_a_study_folder(tmp_path):
    from workbench.ui import SweepPanel

    kw = dict(root=tmp_path, name="same", epochs=300, fields="optim.lr: [0.05]", seeds=(0,), interval=0.05,
              heavier={})
    a, b = SweepPanel(**kw), SweepPanel(**kw)
    assert a.start()
    try:
        assert not b.start() and "already running in another panel" in b.w_status.value
    finally:
        a.stop()
        assert a.wait(120)
    assert b.start()  # free again once the first one ended
    b.stop()
    assert b.wait(120)


def test_heavier_settings_are_labelled_with_a_timed_probe_estimate(run_root):
    from workbench.ui import TrainingPanel

    base = quickstart_config("sam", epochs=2, root=str(run_root))
    probe = probe_training(base)
    assert probe.steps_per_epoch == 20 and probe.steps == 4 and 0 < probe.step_seconds < 5
    est = estimate_training(base.with_overrides({"train.epochs": 40}))
    assert est.seconds == pytest.approx(probe.predict(40) + probe.setup_seconds)
    assert est.parts["runs"][0]["step_seconds"] == probe.step_seconds and est.label.startswith("≈ ")
    assert format_duration(42) == "42 s" and format_duration(185) == "3:05 min"

    p = TrainingPanel(root=run_root, base=base, compare=("sam",), heavier={"epochs": 40})
    assert p.classroom.wait_estimate(120) and p.classroom.estimate_error is None
    assert p.classroom.w_heavier.description == f"Heavier: 40 epochs ({est.label})"  # cached probe: same numbers
    p.w_epochs.value, p.w_seed.value = 7, 3
    p.classroom.reset()
    assert (p.w_epochs.value, p.w_seed.value) == (2, 0)


def test_classroom_mode_shrinks_defaults_and_keeps_the_given_setting_one_click_away(tmp_path, monkeypatch):
    from workbench.ui import PoisonPanel, SweepPanel, TrainingPanel

    monkeypatch.setenv("WORKBENCH_CLASSROOM", "1")
    monkeypatch.setenv("WORKBENCH_ESTIMATE", "0")
    t = TrainingPanel(root=tmp_path, epochs=200)
    assert t.w_epochs.value == 30 and t.classroom.heavier == {"epochs": 200}
    s = SweepPanel(root=tmp_path)
    study = s.build_study()
    assert study.seeds == [0, 1] and study.base.train.epochs == 5 and len(study.trials()) == 12
    assert s.classroom.heavier == {"epochs": 20, "seeds": "0, 1, 2, 3, 4"}
    assert s.build_study(s.classroom.values(heavier=True)).seeds == [0, 1, 2, 3, 4]
    po = PoisonPanel(root=tmp_path)
    assert po.configs()[0].train.epochs == 3 and po.classroom.heavier == {"epochs": 10}
    monkeypatch.setenv("WORKBENCH_CLASSROOM", "0")
    assert TrainingPanel(root=tmp_path, epochs=200).w_epochs.value == 200


# ----------------------------------------------------------------------------- CLI
def test_figure_widgets_load_plotly_from_the_served_url_in_app_mode(tmp_path, monkeypatch):
    import plotly.graph_objects as go

    from workbench.app.server import PLOTLY_ESM_ENV, publish_plotly_module
    from workbench.ui.base import figure_widget

    monkeypatch.delenv(PLOTLY_ESM_ENV, raising=False)
    plain = figure_widget(go.Figure(go.Scatter(y=[1, 2])))
    assert isinstance(plain, go.FigureWidget) and len(plain._esm) > 1_000_000   # the bundle inline, per figure
    path = "voila/files/runs/app/static/plotly-widgetbundle.js"   # as app mode gives it to the kernels
    monkeypatch.setenv(PLOTLY_ESM_ENV, path)
    a, b = figure_widget(go.Figure(go.Scatter(y=[1, 2]))), figure_widget()
    assert isinstance(a, go.FigureWidget) and a._esm == b._esm and len(a.data) == 1
    assert len(a._esm) < 3000 and f'"{path}"' in a._esm    # a small shim that imports the served file once
    copy = publish_plotly_module(tmp_path)
    import plotly
    src = Path(plotly.__file__).parent / "package_data" / "widgetbundle.js"
    assert copy.read_bytes() == src.read_bytes() and plotly.__version__ in copy.name
    assert publish_plotly_module(tmp_path) == copy                                 # idempotent
    # an unwritable folder: a warning, and app mode falls back to figures that carry the module
    import shutil

    def refuse(*a, **k):
        raise PermissionError("read-only")

    monkeypatch.setattr(shutil, "copyfile", refuse)
    with pytest.warns(RuntimeWarning, match="could not publish"):
        assert publish_plotly_module(tmp_path / "elsewhere") is None


def test_cli_commands_parse(tmp_path):
    from workbench.app.cli import add_commands, cmd_app, cmd_pack_build, cmd_pack_load

    parser = argparse.ArgumentParser(prog="workbench")
    add_commands(parser.add_subparsers(dest="command", required=True))
    a = parser.parse_args(["app", "10_guided_tour.ipynb", "--no-browser", "--port", "9999"])
    assert (a.fn, a.notebook, a.port, a.no_browser, a.full) == (cmd_app, "10_guided_tour.ipynb", 9999, True, False)
    b = parser.parse_args(["pack", "build", str(tmp_path / "p"), "--epochs", "3", "--count", "64"])
    assert (b.fn, b.epochs, b.count, b.craft_epochs) == (cmd_pack_build, 3, 64, None)
    c = parser.parse_args(["pack", "load", str(tmp_path / "p"), "--runs", str(tmp_path / "r")])
    assert c.fn is cmd_pack_load and c.runs == str(tmp_path / "r")
    with pytest.raises(SystemExit, match="no index.json"):
        c.fn(c)
