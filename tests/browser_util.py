"""Helpers for the real-browser tests: a throwaway JupyterLab server and a few
JupyterLab page actions for Playwright (sync API).

Nothing here touches the user's Jupyter configuration: the server gets fresh
config/workspace/runtime folders under the test's temporary directory and its
root is a temporary copy of the notebooks. The server and every process it
started (kernels) are ended by PID when the context manager exits.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from workbench.app.server import _children, lab_plotly_env, stop_process_tree

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """A running ``jupyter lab`` (see :func:`jupyter_lab`)."""

    def __init__(self, proc: subprocess.Popen, port: int, token: str, root: Path, log: Path):
        self.proc, self.port, self.token, self.root, self.log = proc, port, token, root, log

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 5.0):
        req = urllib.request.Request(self.url(f"api/{path.lstrip('/')}"), method=method)
        if method != "GET":
            req.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def wait_for(pred, timeout: float, what: str, poll: float = 0.25):
    """Poll ``pred()`` until it returns something truthy (returned) or ``timeout`` s pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@contextmanager
def jupyter_lab(root: Path, tmp: Path, env: Mapping[str, str] | None = None, *,
                start_timeout: float = 60.0, plotly_module: bool = True) -> Iterator[LabServer]:
    """Start ``jupyter lab`` on a free port serving ``root``; yield a :class:`LabServer`.

    ``env`` is added to the server's environment (kernels inherit it). ``plotly_module``: publish plotly's widget
    module under ``root`` and tell the kernels where it is, as ``workbench lab`` does
    (:func:`workbench.app.server.lab_plotly_env`); False gives a plain ``jupyter lab`` (figures carry the module).
    """
    bindir = Path(sys.executable).parent
    jupyter = bindir / "jupyter"
    port, token = free_port(), secrets.token_hex(16)
    e = dict(os.environ)
    e.update({
        "PATH": f"{bindir}{os.pathsep}{e.get('PATH', '')}",
        "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "jupyter-workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter-runtime"),
        "IPYTHONDIR": str(tmp / "ipython"),
        "PYTHONUNBUFFERED": "1",
    })
    e.pop("WORKBENCH_PLOTLY_ESM", None)
    if plotly_module:
        e.update(lab_plotly_env(root))
    e.update(env or {})
    for k in ("JUPYTER_CONFIG_DIR", "JUPYTERLAB_WORKSPACES_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        Path(e[k]).mkdir(parents=True, exist_ok=True)
    # JupyterLab user settings live under the (fresh) config dir: no news or update pop-ups
    notif = Path(e["JUPYTER_CONFIG_DIR"]) / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True, exist_ok=True)
    (notif / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # render every cell (JupyterLab 4 virtualises off-screen cells, whose prompts then read empty)
    nbset = Path(e["JUPYTER_CONFIG_DIR"]) / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    nbset.mkdir(parents=True, exist_ok=True)
    (nbset / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    log = tmp / "jupyter-lab.log"
    cmd = [str(jupyter), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--allow-root", "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=root, env=e, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LabServer(proc, port, token, root, log)
    known: dict[int, object] = {}
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                server.api("status", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"jupyter lab did not answer in {start_timeout:.0f} s:\n{server.log_tail()}")
            time.sleep(0.25)
        yield server
    finally:
        # Remember the kernels (children) before asking the server to stop, so
        # that none survives a server that has to be killed.
        for c in _children(proc.pid):
            known[c.pid] = c
        if proc.poll() is None:
            try:  # graceful: the server shuts its kernels down
                server.api("shutdown", method="POST", timeout=5)
                proc.wait(timeout=15)
            except Exception:
                pass
        stop_process_tree(proc, known, term_timeout=10)


# --------------------------------------------------------------- page actions
def dismiss_dialogs(page) -> None:
    """Accept any modal JupyterLab dialog (kernel choice, ...) that is open."""
    dlg = page.locator(".jp-Dialog")
    for _ in range(3):
        if dlg.count() == 0:
            return
        btn = dlg.locator("button.jp-mod-accept").first
        if btn.count():
            btn.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(300)


_KERNEL_STATUS = '#jp-main-statusbar .jp-StatusBar-TextItem[title^="Change kernel"]'
_IDLE = re.compile(r"\|\s*Idle\s*$")


def kernel_idle(page) -> bool:
    """True when the notebook's kernel is started and idle.

    Both the status bar ("Python 3 (ipykernel) | Idle") and the toolbar's
    execution indicator must say so: the indicator alone reads "idle" for a
    moment before the kernel has even started (status bar: "No Kernel |
    Initializing"), and a Run All clicked then is lost.
    """
    st = page.locator(_KERNEL_STATUS)
    if not st.count() or not _IDLE.search(st.first.inner_text()):
        return False
    return page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').count() > 0


def open_notebook(page, server: LabServer, name: str, timeout_ms: float = 90_000) -> None:
    page.goto(server.url(f"lab/tree/{name}"), wait_until="domcontentloaded", timeout=timeout_ms)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:  # a kernel-choice dialog may pop up while the kernel starts
        dismiss_dialogs(page)
        if kernel_idle(page):
            return
        page.wait_for_timeout(250)
    raise TimeoutError("the notebook's kernel did not become idle")


def menu(page, top: str, item: str) -> None:
    """Click ``top`` in the main menu bar, then ``item`` in the opened menu."""
    page.locator(f'.lm-MenuBar-itemLabel:text-is("{top}")').click()
    entry = page.locator(".lm-Menu-item", has=page.locator(f'.lm-Menu-itemLabel:text-is("{item}")'))
    entry.wait_for(state="visible")
    if "lm-mod-disabled" in (entry.get_attribute("class") or ""):
        page.keyboard.press("Escape")
        raise RuntimeError(f"menu item {top} > {item} is disabled")
    entry.click()


def run_all_cells(page, started_within_ms: float = 20_000) -> None:
    """Run > Run All Cells; check that the first code cell got queued ("[*]:" or "[n]:")."""
    menu(page, "Run", "Run All Cells")
    deadline = time.monotonic() + started_within_ms / 1000
    while time.monotonic() < deadline:
        prompts = code_prompts(page)
        if prompts and prompts[0] != "[ ]:":
            return
        page.wait_for_timeout(200)
    raise TimeoutError(f"Run All Cells did not start the cells; prompts: {code_prompts(page)}")


_PROMPT_DONE = re.compile(r"^\[\d+\]:$")


def code_prompts(page) -> list[str]:
    return [t.strip() for t in page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt").all_inner_texts()]


def wait_all_cells_done(page, timeout_ms: float = 120_000) -> list[str]:
    """Wait until every code cell shows an execution count (``[n]:``) and the kernel is idle."""
    deadline = time.monotonic() + timeout_ms / 1000
    prompts: list[str] = []
    while time.monotonic() < deadline:
        prompts = code_prompts(page)
        if prompts and all(_PROMPT_DONE.match(p) for p in prompts) and kernel_idle(page):
            return prompts
        page.wait_for_timeout(250)
    raise TimeoutError(f"cells did not finish; prompts: {prompts}")


def error_outputs(page) -> list[str]:
    """Texts of error outputs (tracebacks) in the open notebook."""
    texts = page.locator(".jp-NotebookPanel .jp-OutputArea-output").all_inner_texts()
    return [t for t in texts if "Traceback" in t or re.search(r"^\w+Error\b", t, re.M)]
