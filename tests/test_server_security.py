"""Servers and names: app mode needs the token on every route and refuses foreign ``Host`` headers,
``workbench app`` stops its server when it is stopped or killed and writes only under ``--runs``, study names
are one plain folder name.

The Ray side (services bound to 127.0.0.1, start-up retried, one-line error) is in ``test_sweeps_ray.py``;
``workbench lab`` stopping with its wrapper in ``test_lab.py``.
"""
from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "workbench"


# ----------------------------------------------------------------------------- helpers
def _png() -> bytes:
    """A 1x1 PNG (a figure file as the runs hold them)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def _request(port: int, path: str, *, host: str | None = None, token: str | None = None,
             cookie: str | None = None, timeout: float = 120) -> tuple[int, dict, bytes]:
    """``GET path`` on 127.0.0.1:port with the given ``Host`` header, token and cookie: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Host": host or f"127.0.0.1:{port}"}
    if cookie:
        headers["Cookie"] = cookie
    if token:
        path += ("&" if "?" in path else "?") + f"token={token}"
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        headers = {k.lower(): v for k, v in r.getheaders()}
        headers["set-cookie"] = r.msg.get_all("Set-Cookie") or []
        return r.status, headers, r.read()
    finally:
        conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(pred, timeout: float, what: str, poll: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _alive(procs: list) -> list:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _project(tmp_path: Path, names=("00_quickstart.ipynb", "10_guided_tour.ipynb")) -> Path:
    """A project folder with a copy of some study notebooks (the package itself is not inside it)."""
    proj = tmp_path / "proj"
    (proj / "notebooks").mkdir(parents=True)
    for n in names:
        shutil.copyfile(REPO / "notebooks" / n, proj / "notebooks" / n)
    return proj


def _jupyter_env(tmp_path: Path) -> dict:
    return {"JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrt"),
            "IPYTHONDIR": str(tmp_path / "ipy"), "OMP_NUM_THREADS": "1", "WORKBENCH_ESTIMATE": "0"}


def _tree(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*")}


# ----------------------------------------------------------------------------- names
def test_study_names_that_are_not_one_plain_folder_are_refused(tmp_path):
    from workbench.sweeps import StudyConfig

    for bad in ["..", ".", ".hidden", "a/b", "../x", "a\\b", "a\x00b", "", "  ", "tab\there"]:
        with pytest.raises(ValueError, match=r"study\.name=") as e:
            StudyConfig(name=bad, root=str(tmp_path))
        assert "\n" not in str(e.value)
    ok = StudyConfig(name="sgd vs sam-lr_1", root=str(tmp_path))
    assert ok.path == (tmp_path / "sgd vs sam-lr_1").resolve()
    # the CLI: one line naming the field
    study = tmp_path / "s.yaml"
    study.write_text(f"name: '..'\nbase: {REPO / 'configs' / 'quickstart_sgd.yaml'}\nroot: {tmp_path}\n")
    r = subprocess.run([str(EXE), "sweep", str(study)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: study.name='..' is invalid"), r.stderr
    assert not any(tmp_path.parent.glob("runs")) and sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_host_header_check():
    from workbench.app.server import host_allowed

    for ok in ["127.0.0.1:8866", "localhost:8866", "LocalHost:8866", "[::1]:8866"]:
        assert host_allowed(ok, 8866), ok
    for bad in ["evil.example:8866", "evil.example", "127.0.0.1:8867", "127.0.0.1", "localhost.evil.example:8866",
                "127.0.0.1.nip.io:8866", "[::]:8866", "0.0.0.0:8866", "", None, "127.0.0.1:8866@evil.example"]:
        assert not host_allowed(bad, 8866), bad


# ----------------------------------------------------------------------------- every route, token and Host
#: Routes of app mode and what else a server might answer; {token} filled in below. "/login" is the only one
#: that may answer without the token (the form that asks for it).
ROUTES = ["/", "/voila/tree", "/voila/tree/notebooks", "/voila/render/notebooks/00_quickstart.ipynb",
          "/voila/render/runs/app/index.ipynb", "/voila/files/notebooks/figure.png", "/voila/files/runs/r1/figure.png",
          "{esm}", "/voila/files/notebooks/00_quickstart.ipynb", "/voila/static/voila.js",
          "/voila/templates/lab/static/index.css", "/voila/templates/workbench/static/index.css",
          "/voila/labextensions/@jupyter-widgets/jupyterlab-manager/package.json",
          "/voila/api/themes/@jupyterlab/theme-light-extension/index.css", "/voila/api/contents/notebooks",
          "/voila/api/shutdown/00000000-0000-0000-0000-000000000000", "/api/kernels",
          "/api/kernels/00000000-0000-0000-0000-000000000000",
          "/api/kernels/00000000-0000-0000-0000-000000000000/channels",
          "/api/status", "/api/contents", "/api/sessions", "/api/terminals", "/static/voila.js",
          "/files/notebooks/figure.png", "/login", "/logout", "/no/such/route"]


@pytest.mark.timeout(600)
def test_every_route_needs_the_token_and_a_local_host_header(tmp_path):
    from workbench.app.server import serve

    proj, runs = _project(tmp_path), tmp_path / "runs"
    (proj / "notebooks" / "figure.png").write_bytes(_png())
    (runs / "r1").mkdir(parents=True)
    (runs / "r1" / "figure.png").write_bytes(_png())
    before = _tree(proj)
    with serve(notebooks=proj / "notebooks", runs=runs, env=_jupyter_env(tmp_path), log=tmp_path / "voila.log") as srv:
        port, token = srv.port, srv.token
        esm = "/" + srv.plotly_esm.split("/", 3)[3]
        assert esm.startswith("/voila/files/runs/app/static/plotly-widgetbundle-")
        routes = [r.replace("{esm}", esm) for r in ROUTES]
        public, refused = [], []
        for r in routes:
            status, headers, body = _request(port, r)
            if status < 300 or (status < 400 and "/login" not in headers.get("location", "")):
                public.append((r, status))
            # a foreign Host header (DNS rebinding): refused even with the token, before anything is looked up
            for host in ("evil.example", f"evil.example:{port}", f"localhost:{port + 1}", f"127.0.0.1.nip.io:{port}"):
                s2, _, b2 = _request(port, r, host=host, token=token)
                if s2 != 403 or b"plotly" in b2 or b"PNG" in b2:
                    refused.append((r, host, s2))
        assert public == [("/login", 200)], public
        assert not refused, refused
        # with the token: the figure files, plotly's module and Voilà's own static files
        for r in ("/voila/files/notebooks/figure.png", "/voila/files/runs/r1/figure.png"):
            status, headers, body = _request(port, r, token=token)
            assert status == 200 and body == _png(), (r, status)
        status, headers, js = _request(port, esm, token=token)
        assert status == 200 and len(js) > 1_000_000 and b"export" in js
        status, headers, _ = _request(port, "/voila/static/voila.js", token=token)
        assert status == 200
        # ... and with the cookie the token URL set (what the browser sends for the page's other requests)
        status, headers, _ = _request(port, "/voila/tree", token=token)
        cookie = next((c.split(";", 1)[0] for c in headers["set-cookie"] if c.startswith("username-127-0-0-1-")), "")
        assert status == 200 and cookie, headers["set-cookie"]
        for r in ("/voila/files/runs/r1/figure.png", esm, "/voila/templates/lab/static/index.css"):
            assert _request(port, r, cookie=cookie)[0] == 200, r
            assert _request(port, r, cookie=cookie, host=f"evil.example:{port}")[0] == 403, r
        assert _request(port, "/voila/files/pyproject.toml", token=token)[0] in (403, 404)
        assert _request(port, "/voila/files/runs/../notebooks/00_quickstart.ipynb", token=token)[0] in (403, 404)
        # the landing page: a copy in the runs folder given (the package is not inside this project), served
        status, _, html = _request(port, "/voila/render/runs/app/index.ipynb", token=token, timeout=300)
        assert status == 200 and b"00_quickstart.ipynb" in html and b"10_guided_tour.ipynb" in html, srv.log_tail()
        assert srv.landing_url.startswith(srv.base + "voila/render/runs/app/index.ipynb?token=")
    assert _tree(proj) == before   # nothing written into the project: all under runs/
    assert (runs / "app" / "index.ipynb").is_file() and any((runs / "app" / "static").glob("plotly-widgetbundle-*.js"))


# ----------------------------------------------------------------------------- the wrapper stops its server
def _start_app(tmp_path: Path, proj: Path, runs: Path, port: int, token: str) -> subprocess.Popen:
    env = dict(os.environ, **_jupyter_env(tmp_path), WORKBENCH_EPOCHS="1", WORKBENCH_COUNT="64")
    env.pop("WORKBENCH_RUNS", None)
    return subprocess.Popen([str(EXE), "app", "--no-browser", "--port", str(port), "--token", token,
                             "--notebooks", str(proj / "notebooks"), "--runs", str(runs)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _tree_of(pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.timeout(600)
def test_app_writes_only_under_runs_and_stops_on_sigterm(tmp_path):
    proj, runs = _project(tmp_path), tmp_path / "out"
    port, token = _free_port(), "t" + os.urandom(8).hex()
    before, repo_runs = _tree(proj), _tree(REPO / "runs") if (REPO / "runs").is_dir() else {}
    t0 = time.time()
    proc = _start_app(tmp_path, proj, runs, port, token)
    try:
        _wait(lambda: _listening(port) or proc.poll() is not None, 120, "the app server")
        assert proc.poll() is None
        # the landing page (a kernel runs it) and plotly's module, both served from the runs folder given
        status, _, html = _request(port, "/voila/render/runs/app/index.ipynb", token=token, timeout=300)
        assert status == 200 and b"10_guided_tour.ipynb" in html
        module = next((runs / "app" / "static").glob("plotly-widgetbundle-*.js"))
        status, _, js = _request(port, f"/voila/files/runs/app/static/{module.name}", token=token)
        assert status == 200 and len(js) == module.stat().st_size
        # a kernel that writes where the notebooks write: WORKBENCH_RUNS is the runs folder given
        kernels = [c for c in _tree_of(proc.pid) if "ipykernel" in " ".join(c.cmdline())]
        assert kernels and all(c.environ().get("WORKBENCH_RUNS") == str(runs) for c in kernels)
        tree = [psutil.Process(proc.pid)] + _tree_of(proc.pid)
        assert len(tree) >= 3   # wrapper, server, kernel
        t1 = time.monotonic()
        proc.send_signal(signal.SIGTERM)   # the wrapper only, as a service manager or `kill` would
        out, _ = proc.communicate(timeout=30)
        _wait(lambda: not _listening(port) and not _alive(tree), 20, "the server and its kernel to stop")
        stopped_in = time.monotonic() - t1
    finally:
        if proc.poll() is None:
            proc.kill()
        for c in _alive(_tree_of(proc.pid)):
            c.kill()
    assert proc.returncode == 128 + signal.SIGTERM, out.decode(errors="replace")[-2000:]
    assert stopped_in < 20
    assert _tree(proj) == before                       # nothing written into the project ...
    new = {k for k, (size, mtime) in _tree(REPO / "runs").items() if mtime >= t0 * 1e9 and k not in repo_runs} \
        if (REPO / "runs").is_dir() else set()
    assert not {k for k in new if k.startswith("app/") and (str(port) in k or k.endswith("index.ipynb"))}, new
    assert (runs / "app" / "index.ipynb").is_file()    # ... everything under --runs


@pytest.mark.timeout(300)
def test_a_killed_app_wrapper_leaves_no_server(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    proj, runs = _project(tmp_path, names=("00_quickstart.ipynb",)), tmp_path / "out"
    port, token = _free_port(), "t" + os.urandom(8).hex()
    proc = _start_app(tmp_path, proj, runs, port, token)
    tree = []
    try:
        _wait(lambda: _listening(port) or proc.poll() is not None, 120, "the app server")
        tree = _tree_of(proc.pid)
        assert tree, "no server process"
        status, _, html = _request(port, "/voila/render/runs/app/index.ipynb", token=token, timeout=300)
        assert status == 200 and b"00_quickstart.ipynb" in html
        tree = _tree_of(proc.pid)
        assert any("ipykernel" in " ".join(c.cmdline()) for c in tree), "no kernel"
        proc.kill()                                   # SIGKILL: the wrapper cannot clean up
        proc.wait(timeout=10)
        _wait(lambda: not _listening(port) and not _alive(tree), 20, "the orphaned server to stop")
    finally:
        for c in _alive(tree):
            c.kill()


# ----------------------------------------------------------------------------- a browser still gets everything
@pytest.mark.browser
@pytest.mark.timeout(600)
def test_pages_still_load_in_a_browser_with_every_route_behind_the_token(tmp_path):
    """One token URL, then the cookie: Voilà's static files, themes, labextensions, the kernel's websocket and
    plotly's module (imported by the figures' shim) all load; nothing the page asks for is refused."""
    from browser_util import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found")
    from playwright.sync_api import sync_playwright

    from workbench.app.server import serve

    proj, runs = _project(tmp_path, names=("00_quickstart.ipynb",)), tmp_path / "runs"
    env = dict(_jupyter_env(tmp_path), WORKBENCH_EPOCHS="1", WORKBENCH_COUNT="64", WORKBENCH_SEEDS="1")
    with serve(notebooks=proj / "notebooks", runs=runs, env=env, log=tmp_path / "voila.log") as srv, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            answers: list[tuple[int, str]] = []
            page.on("response", lambda r: answers.append((r.status, r.url)))
            sockets: list[str] = []
            page.on("websocket", lambda ws: sockets.append(ws.url))
            page.goto(srv.landing_url, wait_until="networkidle", timeout=300_000)
            assert page.locator("a[href$='00_quickstart.ipynb']").count() >= 1, page.content()[:2000]
            page.goto(srv.notebook_url("00_quickstart.ipynb").split("?")[0], wait_until="domcontentloaded",
                      timeout=300_000)                  # the cookie alone
            # the training panel's live figure: a widget whose shim imports plotly's module from the server
            page.locator(".wb-training-panel .wb-figure-live .js-plotly-plot").first.wait_for(state="visible",
                                                                                            timeout=300_000)
            served = [(s, u) for s, u in answers if u.startswith(srv.base)]
            refused = [(s, u) for s, u in served if s >= 400 and not u.endswith("favicon.ico")]
            assert not refused, refused
            assert any(u.split("?")[0] == srv.plotly_esm and s == 200 for s, u in served), \
                [(s, u) for s, u in served if "/voila/files/" in u or "plotly" in u] or [u[:100] for s, u in served]
            assert any("/voila/static/" in u or "/voila/templates/" in u for s, u in served)
            assert any("/api/kernels/" in u for u in sockets), sockets
        finally:
            browser.close()
