"""`workbench lab` turns JupyterLab's news pop-up off through setting defaults, without touching the user's settings."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from workbench.cli import LAB_SETTING_DEFAULTS, lab_app_settings

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "@jupyterlab/apputils-extension:notification"


def test_app_settings_folder_keeps_the_installation_overrides_and_adds_ours(tmp_path, monkeypatch):
    app = tmp_path / "app"
    (app / "settings" / "overrides.d").mkdir(parents=True)
    (app / "settings" / "overrides.json").write_text(json.dumps({"@jupyterlab/apputils-extension:themes":
                                                                {"theme": "JupyterLab Dark"}}))
    (app / "settings" / "page_config.json").write_text("{}")
    monkeypatch.setenv("JUPYTERLAB_DIR", str(app))
    out = lab_app_settings(tmp_path / "out")
    assert json.loads((out / "overrides.d" / "workbench.json").read_text()) == LAB_SETTING_DEFAULTS
    assert LAB_SETTING_DEFAULTS[PLUGIN]["fetchNews"] == "false"
    assert (out / "overrides.json").is_file() and (out / "page_config.json").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_served_notification_settings_never_ask_about_news_and_keep_user_settings(tmp_path):
    user = tmp_path / "user-settings"
    (user / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (user / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"doNotDisturbMode": True}))
    port, token = _free_port(), "t" + os.urandom(6).hex()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"), JUPYTERLAB_SETTINGS_DIR=str(user))
    exe = Path(sys.executable).parent / "workbench"
    proc = subprocess.Popen([str(exe), "lab", "--no-browser", "--port", str(port), "--token", token,
                             "--root-dir", str(REPO)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/lab/api/settings/{PLUGIN}?token={token}"
        deadline, got = time.time() + 120, None
        while time.time() < deadline and got is None:
            if proc.poll() is not None:
                pytest.fail(f"workbench lab exited with {proc.returncode}")
            got = _get_json(url)
            time.sleep(0.5)
        assert got is not None, "JupyterLab did not answer"
        assert got["schema"]["properties"]["fetchNews"]["default"] == "false"   # our default: never ask
        assert got["settings"] == {"doNotDisturbMode": True}                       # the user's own, untouched
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
