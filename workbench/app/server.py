"""App mode: the study notebooks as Voilà dashboards on 127.0.0.1 (widgets and figures, code hidden).

:func:`voila_command` builds the command line and environment, :func:`serve`
starts a server (a context manager for scripts and tests) and
:func:`run_app` is ``workbench app``: it starts Voilà in the foreground and
opens the landing page.

What the server does:

* listens on ``127.0.0.1`` only and requires a token (random unless given);
  the URLs printed carry it (``?token=...``), after which the browser keeps a cookie;
* serves the project folder, so every notebook in ``notebooks/`` is one URL
  ``/voila/render/notebooks/<name>`` and its kernel runs in ``notebooks/``
  like in JupyterLab (relative paths such as ``../runs`` keep working);
* uses the ``workbench`` Voilà template (``share/voila/templates/workbench``):
  Voilà's ``lab`` template without its two CDN links, so the page loads
  nothing from outside the server (Font Awesome is bundled by Voilà; plotly.js
  comes with plotly's FigureWidget / JupyterLab extension);
* serves one copy of plotly's widget module (``runs/app/static/``, :func:`publish_plotly_module`) and tells
  the kernels its URL (``WORKBENCH_PLOTLY_ESM``), so a page's figures load it once instead of once each;
* the landing page is ``workbench/app/index.ipynb``: it lists the notebooks of
  ``notebooks/`` with one line each (:func:`workbench.app.studies.list_studies`).
  When the package is not inside the served folder (a non-editable install), a
  copy of it is written to ``<root>/runs/app/index.ipynb``.

No science here; no UI imports.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from .studies import find_notebooks_dir

__all__ = ["AppServer", "voila_command", "cull_options", "lab_plotly_env", "serve", "run_app", "landing_notebook", "publish_plotly_module",
           "PLOTLY_ESM_ENV", "TEMPLATE", "SHARE"]

HERE = Path(__file__).resolve().parent
SHARE = HERE / "share"
TEMPLATE = "workbench"
LANDING = HERE / "index.ipynb"
#: Environment variable with plotly's widget module, a URL or a path on the server (read by
#: :func:`workbench.ui.figure.figure_widget`).
PLOTLY_ESM_ENV = "WORKBENCH_PLOTLY_ESM"


def _voila_executable() -> str:
    exe = Path(sys.executable).with_name("voila")
    if exe.exists():
        return str(exe)
    found = shutil.which("voila")
    if not found:
        raise FileNotFoundError("'voila' is not installed: pip install 'voila>=0.5' (a dependency of the workbench)")
    return found


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def landing_notebook(root: Path) -> Path:
    """The landing notebook inside ``root``: the package's own, or a copy under ``root/runs/app/``."""
    try:
        LANDING.relative_to(root)
        return LANDING
    except ValueError:
        dst = root / "runs" / "app" / "index.ipynb"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(LANDING, dst)
        return dst


def _rel_url(path: Path, root: Path) -> str:
    return "voila/render/" + urllib.parse.quote(path.resolve().relative_to(root).as_posix())


@dataclass
class AppServer:
    """A Voilà server (see :func:`serve`): ``url(path)`` adds the token."""

    port: int
    token: str
    root: Path
    notebooks: Path
    landing: Path
    proc: subprocess.Popen | None = None
    log: Path | None = None
    argv: list[str] = field(default_factory=list)
    plotly_esm: str = ""   # URL of plotly's widget module, as given to the kernels (WORKBENCH_PLOTLY_ESM)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str = "") -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}{path.lstrip('/')}{sep}token={self.token}"

    def notebook_url(self, notebook: str | Path) -> str:
        """URL of a study notebook (a name in the notebooks folder or a path)."""
        p = Path(notebook)
        if not p.is_absolute():
            p = self.notebooks / p.name if not p.exists() else p.resolve()
        return self.url(_rel_url(p, self.root))

    @property
    def landing_url(self) -> str:
        return self.url(_rel_url(self.landing, self.root))

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log else ""
        except OSError:
            return ""


def publish_plotly_module(root: Path) -> Path | None:
    """Copy plotly's front-end widget module (``plotly/package_data/widgetbundle.js``, ~5 MB) to
    ``<root>/runs/app/static/plotly-widgetbundle-<version>.js`` (atomically, once per plotly version), where Voilà
    serves it under ``/voila/files/`` so that all figures of a page load it from one URL
    (:func:`workbench.ui.base.figure_widget`).

    Returns:
        The copy's path, or ``None`` (with a warning) when it cannot be written, e.g. a read-only folder: the
        figures then carry the module themselves, as without app mode.
    """
    import plotly

    src = Path(plotly.__file__).parent / "package_data" / "widgetbundle.js"
    dst = root / "runs" / "app" / "static" / f"plotly-widgetbundle-{plotly.__version__}.js"
    try:
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
    except OSError as exc:
        warnings.warn(f"could not publish plotly's widget module to {dst} ({exc}); every figure will carry its "
                      f"own copy, and pages with many figures may load slowly", RuntimeWarning, stacklevel=2)
        return None
    return dst


def lab_plotly_env(root: str | Path) -> dict[str, str]:
    """Environment for a JupyterLab server with root folder ``root``, so that its kernels' figures load plotly's
    widget module once per page (:mod:`workbench.ui.figure`).

    Publishes the module under ``root`` (:func:`publish_plotly_module`) and returns ``{WORKBENCH_PLOTLY_ESM:
    "files/<path>"}``: JupyterLab serves it at ``<base_url>files/<path>`` to the logged-in browser only (token or
    cookie), like any file of the root. Returns ``{}`` when the module cannot be published (figures then carry it).
    """
    root = Path(root).resolve()
    esm = publish_plotly_module(root)
    if esm is None:
        return {}
    return {PLOTLY_ESM_ENV: "files/" + urllib.parse.quote(esm.relative_to(root).as_posix())}


#: Kernels of closed pages: shut down after this many seconds without activity and without a browser connected.
CULL_IDLE_TIMEOUT_S = 600
#: How often (s) the server looks for such kernels.
CULL_INTERVAL_S = 60


def cull_options(idle_timeout_s: int = CULL_IDLE_TIMEOUT_S, interval_s: int = CULL_INTERVAL_S) -> list[str]:
    """Voilà options that shut down the kernels of closed pages.

    Voilà 0.5 creates its kernel manager (jupyter-server's ``AsyncMappingKernelManager``) with the Voilà app as
    parent, so the ``MappingKernelManager`` options of jupyter-server apply: every ``interval_s`` seconds, a kernel
    that has had no activity for ``idle_timeout_s`` seconds, is not busy and has no browser connection is shut down
    (``cull_connected=False``: a kernel whose page is still open is never culled; ``cull_busy=False``: neither is one
    that is computing). Options of the same name in :func:`voila_command`'s ``extra`` replace these.

    Raises:
        ValueError: a non-positive number of seconds.
    """
    if int(idle_timeout_s) <= 0 or int(interval_s) <= 0:
        raise ValueError(f"idle_timeout_s={idle_timeout_s!r}, interval_s={interval_s!r} are invalid: "
                         "both must be positive numbers of seconds")
    return [f"--MappingKernelManager.cull_idle_timeout={int(idle_timeout_s)}",
            f"--MappingKernelManager.cull_interval={int(interval_s)}",
            "--MappingKernelManager.cull_connected=False", "--MappingKernelManager.cull_busy=False"]


def voila_command(*, notebooks: str | Path | None = None, port: int | None = None, token: str | None = None,
                  env: Mapping[str, str] | None = None, extra: list[str] | None = None) -> tuple[AppServer, list[str], dict]:
    """The Voilà command line and environment for app mode.

    Args:
        notebooks: the study notebooks folder (default ``./notebooks`` or the checkout's).
        port: TCP port on 127.0.0.1 (default: a free one). token: access token (default: random).
        env: added to the server's environment (kernels inherit it).
        extra: further Voilà options; a ``--MappingKernelManager.*`` option here replaces the kernel culling
            default of :func:`cull_options`.

    Returns:
        ``(server description, argv, environment)``.

    Raises:
        FileNotFoundError: no notebooks folder, or Voilà is not installed.
    """
    nbdir = find_notebooks_dir(notebooks)
    root = nbdir.parent
    port = int(port) if port else free_port()
    token = token or secrets.token_hex(24)
    landing = landing_notebook(root)
    esm = publish_plotly_module(root)
    allow = [r".*\.(png|jpg|gif|svg)"] + ([re.escape(esm.relative_to(root).as_posix())] if esm else [])
    given = {o.split("=")[0] for o in extra or []}  # traitlets refuses an option given twice: extra wins
    argv = [_voila_executable(), "--no-browser", f"--port={port}", "--Voila.port_retries=0", "--Voila.ip=127.0.0.1",
            f"--token={token}", f"--Voila.root_dir={root}", f"--template={TEMPLATE}",
            "--VoilaConfiguration.show_tracebacks=True", f"--VoilaConfiguration.file_allowlist={allow!r}",
            *[o for o in cull_options() if o.split("=")[0] not in given], *(extra or [])]
    e = dict(os.environ)
    e["JUPYTER_PATH"] = os.pathsep.join([str(SHARE)] + [p for p in e.get("JUPYTER_PATH", "").split(os.pathsep) if p])
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e["WORKBENCH_NOTEBOOKS"] = str(nbdir)
    e["WORKBENCH_APP_HREF"] = "/" + _rel_url(nbdir / "NAME", root).rsplit("/", 1)[0] + "/{name}"
    # every figure imports plotly's widget module from this one file (see workbench.ui.figure): the kernels get its
    # path relative to the server, which the browser resolves against the page's own address (127.0.0.1 or localhost)
    esm_path = ("voila/files/" + urllib.parse.quote(esm.relative_to(root).as_posix())) if esm else ""
    esm_url = f"http://127.0.0.1:{port}/{esm_path}" if esm else ""
    if esm_path:
        e[PLOTLY_ESM_ENV] = esm_path
    else:
        e.pop(PLOTLY_ESM_ENV, None)
    e.update(env or {})
    return (AppServer(port=port, token=token, root=root, notebooks=nbdir, landing=landing, argv=argv,
                      plotly_esm=esm_url), argv, e)


def _children(pid: int) -> list:
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:
        return []


def stop_process_tree(proc: subprocess.Popen, known: dict | None = None, *, term_timeout: float = 15) -> None:
    """Stop a server process and every child it started (its kernels), killing what does not stop.

    ``known`` maps pid → ``psutil.Process`` of children recorded earlier (the current children are
    added before the server is signalled, so none outlives a server that has to be killed).
    SIGTERM first, SIGKILL after ``term_timeout`` s (server) or 5 s (each child).
    """
    known = {} if known is None else known
    for c in _children(proc.pid):
        known[c.pid] = c
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=term_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for c in known.values():
        try:
            if c.is_running():
                c.terminate()
                c.wait(timeout=5)
        except Exception:
            try:
                c.kill()
            except Exception:
                pass


@contextmanager
def serve(*, notebooks: str | Path | None = None, port: int | None = None, token: str | None = None,
          env: Mapping[str, str] | None = None, log: str | Path | None = None, start_timeout: float = 60.0,
          extra: list[str] | None = None) -> Iterator[AppServer]:
    """Start Voilà in the background, wait until it answers, yield the :class:`AppServer`, then stop it.

    The server and the kernels it started are ended by PID on exit.

    Raises:
        RuntimeError: Voilà exited early; TimeoutError: it did not answer in ``start_timeout`` seconds.
    """
    server, argv, e = voila_command(notebooks=notebooks, port=port, token=token, env=env, extra=extra)
    logpath = Path(log) if log else server.root / "runs" / "app" / f"voila-{server.port}.log"
    logpath.parent.mkdir(parents=True, exist_ok=True)
    with open(logpath, "wb") as fh:
        proc = subprocess.Popen(argv, cwd=server.root, env=e, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    server.proc, server.log, server.argv = proc, logpath, argv
    known: dict = {}  # kernels seen while serving: none survives a server that has to be killed
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"voila exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(server.url(""), timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"voila did not answer in {start_timeout:.0f} s:\n{server.log_tail()}")
            time.sleep(0.25)
        yield server
    finally:
        stop_process_tree(proc, known)


def run_app(notebook: str | None = None, *, notebooks: str | Path | None = None, port: int = 8866,
            token: str | None = None, open_browser: bool = True) -> int:
    """``workbench app``: serve the studies with Voilà in the foreground until Ctrl-C.

    Opens ``notebook`` (a name in the notebooks folder) or the landing page.
    Returns Voilà's exit status.
    """
    token = token or os.environ.get("WORKBENCH_APP_TOKEN")
    server, argv, e = voila_command(notebooks=notebooks, port=port, token=token)
    if notebook:
        p = Path(notebook)
        if not (p.exists() or (server.notebooks / p.name).exists()):
            raise FileNotFoundError(f"notebook {notebook!r} not found (looked in {str(server.notebooks)!r}); "
                                    "choose one of: " + ", ".join(q.name for q in sorted(server.notebooks.glob('*.ipynb'))))
        url = server.notebook_url(p)
    else:
        url = server.landing_url
    print(f"Workbench app (Voilà) on {url}", flush=True)
    print("(listening on 127.0.0.1 only; the token is required; Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(argv, cwd=server.root, env=e)
    if open_browser:
        import threading
        import webbrowser

        def _open():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    urllib.request.urlopen(server.url(""), timeout=2).close()
                    webbrowser.open(url)
                    return
                except Exception:
                    time.sleep(0.5)

        threading.Thread(target=_open, daemon=True).start()
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.terminate()
            return proc.wait()
