"""`workbench lab` (what `make lab` runs) serves the quickstart on 127.0.0.1 behind a token."""
from __future__ import annotations

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
