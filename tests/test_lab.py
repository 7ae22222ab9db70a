"""`workbench lab` (what `make lab` runs) serves the quickstart on 127.0.0.1 behind a token."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None  # not listening yet


def test_lab_listens_on_loopback_with_token(tmp_path):
    port, token = free_port(), "t0k3n" + os.urandom(4).hex()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"))
    exe = Path(sys.executable).parent / "workbench"
    proc = subprocess.Popen([str(exe), "lab", "--no-browser", "--port", str(port), "--token", token,
                             "--root-dir", str(REPO)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            if get(f"{base}/api/status?token={token}") == 200:
                break
            time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer")
        assert get(f"{base}/api/status") == 403  # no token, no access
        assert get(f"{base}/api/status?token=wrong") == 403
        assert get(f"{base}/api/contents/notebooks/00_quickstart.ipynb?token={token}") == 200
        # a foreign Host header (DNS rebinding) is refused even with the token
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/api/status?token={token}", headers={"Host": f"evil.example:{port}"})
        assert conn.getresponse().status == 403
        conn.close()
        procs = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
        listening = {c.laddr.ip for p in procs for c in p.net_connections(kind="inet") if c.status == "LISTEN"}
        assert listening == {"127.0.0.1"}, listening
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    text = out.decode(errors="replace")
    assert f"http://127.0.0.1:{port}/lab?token={token}" in text
    assert "notebooks/00_quickstart.ipynb" in text


def _start_lab(tmp_path, port, token):
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"), IPYTHONDIR=str(tmp_path / "ipy"))
    exe = Path(sys.executable).parent / "workbench"
    root = tmp_path / "root"
    root.mkdir()
    proc = subprocess.Popen([str(exe), "lab", "--no-browser", "--port", str(port), "--token", token,
                             "--root-dir", str(root)], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while get(f"{base}/api/status?token={token}") != 200:
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("JupyterLab did not answer")
        time.sleep(0.5)
    # a kernel, as an open notebook has
    req = urllib.request.Request(f"{base}/api/kernels", data=b"{}", method="POST",
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 201
    tree = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)

    def cmd(c):  # a short-lived helper may already have exited (a zombie or gone): it is not the kernel
        try:
            return " ".join(c.cmdline())
        except psutil.Error:
            return ""

    assert any("ipykernel" in cmd(c) for c in tree), [cmd(c) for c in tree]
    return proc, tree


def _stopped(port, tree, timeout=20.0):
    """Waits until nothing listens on ``port`` and no process of ``tree`` is alive; the survivors (killed)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in tree:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        with socket.socket() as s:
            listening = s.connect_ex(("127.0.0.1", port)) == 0
        if (not alive and not listening) or time.monotonic() > deadline:
            for p in alive:
                p.kill()
            return alive, listening
        time.sleep(0.25)


@pytest.mark.timeout(300)
def test_lab_stops_with_its_wrapper_on_sigterm(tmp_path):
    port, token = free_port(), "t0k3n" + os.urandom(4).hex()
    proc, tree = _start_lab(tmp_path, port, token)
    proc.send_signal(signal.SIGTERM)   # the wrapper only (a service manager, `kill PID`), not its group
    try:
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        alive, listening = _stopped(port, tree)
    assert not alive and not listening, (alive, listening)


@pytest.mark.timeout(300)
def test_a_killed_lab_wrapper_leaves_no_server(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    port, token = free_port(), "t0k3n" + os.urandom(4).hex()
    proc, tree = _start_lab(tmp_path, port, token)
    proc.kill()                        # SIGKILL: the wrapper cannot stop anything itself
    proc.wait(timeout=10)
    alive, listening = _stopped(port, tree[1:])
    assert not alive and not listening, (alive, listening)
