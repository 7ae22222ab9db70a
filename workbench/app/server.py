"""App mode: the study notebooks as Voilà dashboards on 127.0.0.1 (widgets and figures, code hidden).

:func:`voila_command` builds the command line and environment, :func:`serve`
starts a server (a context manager for scripts and tests) and
:func:`run_app` is ``workbench app``: it starts Voilà in the foreground and
opens the landing page.

What the server does:

* listens on ``127.0.0.1`` only and requires a token (random unless given) on *every* route: pages, the
  kernels' API and websockets, figure files under ``/voila/files/``, and Voilà's own static files, themes and
  labextensions (only the login form is open); the URLs printed carry it (``?token=...``), after which the
  browser keeps a cookie;
* refuses (403) a request whose ``Host`` header is not ``127.0.0.1``, ``localhost`` or ``[::1]`` with the
  server's port, as JupyterLab does (a page of another site whose name was re-bound to 127.0.0.1, "DNS
  rebinding", never gets an answer). Voilà 0.5 itself serves its static handlers without either check, so
  the server is Voilà with every handler wrapped (:func:`voila_main`, run as ``python -m workbench.app.server``);
* stops with the process that started it: ``workbench app`` stops the server and its kernels on SIGTERM,
  SIGHUP and Ctrl-C (:func:`run_foreground`), and on Linux the server gets SIGTERM when its parent dies
  (``PR_SET_PDEATHSIG``), so even a killed wrapper leaves no server behind;
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
  copy of it is written to ``<runs>/app/index.ipynb``;
* with a runs folder given (``workbench app --runs DIR``), everything it writes goes under ``DIR`` (plotly's
  module, the landing copy, the log of :func:`serve`) and the kernels get ``WORKBENCH_RUNS=DIR``; the server
  serves ``DIR`` in place of ``<root>/runs`` (``/voila/files/runs/...`` and the landing copy at
  ``/voila/render/runs/app/index.ipynb``), so the URLs stay the same.

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
import threading
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

__all__ = ["AppServer", "voila_command", "cull_options", "lab_plotly_env", "serve", "run_app", "landing_notebook",
           "publish_plotly_module", "run_foreground", "stop_process_tree", "voila_main", "host_allowed",
           "PLOTLY_ESM_ENV", "TEMPLATE", "SHARE"]

HERE = Path(__file__).resolve().parent
SHARE = HERE / "share"
TEMPLATE = "workbench"
LANDING = HERE / "index.ipynb"
#: Environment variable with plotly's widget module, a URL or a path on the server (read by
#: :func:`workbench.ui.figure.figure_widget`).
PLOTLY_ESM_ENV = "WORKBENCH_PLOTLY_ESM"


def _voila_launcher() -> list[str]:
    """The command that starts Voilà with the workbench's guarded handlers (:func:`voila_main`)."""
    import importlib.util

    if importlib.util.find_spec("voila") is None:
        raise FileNotFoundError("'voila' is not installed: pip install 'voila>=0.5' (a dependency of the workbench)")
    return [sys.executable, "-m", "workbench.app.server"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def landing_notebook(root: Path, runs: Path | None = None) -> Path:
    """The landing notebook: the package's own when it is inside ``root``, else a copy in the runs folder.

    The copy is ``<runs>/app/index.ipynb`` (``runs`` default ``<root>/runs``; the server serves it as
    ``runs/app/index.ipynb``).

    Args:
        root: the server's root folder.
        runs: the runs folder given, or ``None`` for ``<root>/runs``.

    Returns:
        The path of the notebook to serve as the landing page.
    """
    try:
        LANDING.relative_to(root)
        return LANDING
    except ValueError:
        dst = Path(runs or root / "runs") / "app" / "index.ipynb"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(LANDING, dst)
        return dst


def _served_path(path: Path, root: Path, runs: Path | None = None) -> str:
    """``path`` as the server names it: relative to ``root``, with the runs folder ``runs`` served as ``runs/``."""
    path = path.resolve()
    if runs is not None:
        try:
            return ("runs" / path.relative_to(Path(runs).resolve())).as_posix()
        except ValueError:
            pass
    return path.relative_to(root).as_posix()


def _rel_url(path: Path, root: Path, runs: Path | None = None) -> str:
    return "voila/render/" + urllib.parse.quote(_served_path(path, root, runs))


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
    runs: Path | None = None  # the runs folder given (served as runs/), or None: <root>/runs

    @property
    def base(self) -> str:
        """The server's base URL, ``http://127.0.0.1:<port>/``."""
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str = "") -> str:
        """Absolute URL of ``path`` (relative to the server's root) with the access token as a query parameter."""
        sep = "&" if "?" in path else "?"
        return f"{self.base}{path.lstrip('/')}{sep}token={self.token}"

    def notebook_url(self, notebook: str | Path) -> str:
        """URL of a study notebook (a name in the notebooks folder or a path)."""
        p = Path(notebook)
        if not p.is_absolute():
            p = self.notebooks / p.name if not p.exists() else p.resolve()
        return self.url(_rel_url(p, self.root, self.runs))

    @property
    def landing_url(self) -> str:
        """URL (with token) of the landing notebook (:func:`landing_notebook`)."""
        return self.url(_rel_url(self.landing, self.root, self.runs))

    def log_tail(self, n: int = 60) -> str:
        """The last ``n`` lines of the server's log file, or ``""`` when there is none or it cannot be read."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log else ""
        except OSError:
            return ""


def publish_plotly_module(root: Path, *, runs: Path | None = None) -> Path | None:
    """Copy plotly's front-end widget module to the runs folder, where the server serves it.

    The module (``plotly/package_data/widgetbundle.js``, ~5 MB) is copied to
    ``<runs>/app/static/plotly-widgetbundle-<version>.js`` (atomically, once per plotly version), where Voilà serves
    it under ``/voila/files/runs/`` so that all figures of a page load it from one URL
    (:func:`workbench.ui.base.figure_widget`).

    Args:
        root: the server's root folder.
        runs: the runs folder, or ``None`` for ``<root>/runs``.

    Returns:
        The copy's path, or ``None`` (with a warning) when it cannot be written, e.g. a read-only folder: the
        figures then carry the module themselves, as without app mode.
    """
    import plotly

    src = Path(plotly.__file__).parent / "package_data" / "widgetbundle.js"
    dst = Path(runs or Path(root) / "runs") / "app" / "static" / f"plotly-widgetbundle-{plotly.__version__}.js"
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
    """Environment for a JupyterLab server with root folder ``root``: figures load plotly's module once per page.

    With it, its kernels' figures share one copy of plotly's widget module (:mod:`workbench.ui.figure`).
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
                  env: Mapping[str, str] | None = None, extra: list[str] | None = None,
                  runs: str | Path | None = None) -> tuple[AppServer, list[str], dict]:
    """The Voilà command line and environment for app mode.

    Args:
        notebooks: the study notebooks folder (default ``./notebooks`` or the checkout's).
        port: TCP port on 127.0.0.1 (default: a free one).
        token: access token (default: random).
        env: added to the server's environment (kernels inherit it).
        extra: further Voilà options; a ``--MappingKernelManager.*`` option here replaces the kernel culling
            default of :func:`cull_options`.
        runs: the runs folder (``workbench app --runs``): the kernels get ``WORKBENCH_RUNS``, plotly's module and
            the landing copy are written there, and the server serves it as ``runs/`` (nothing is written under
            ``<root>/runs``). Default: ``<root>/runs``.

    Returns:
        ``(server description, argv, environment)``.

    Raises:
        FileNotFoundError: no notebooks folder, or Voilà is not installed.
    """
    nbdir = find_notebooks_dir(notebooks)
    root = nbdir.parent.resolve()
    runs_dir = Path(runs).expanduser().resolve() if runs else None
    port = int(port) if port else free_port()
    token = token or secrets.token_hex(24)
    launcher = _voila_launcher()
    landing = landing_notebook(root, runs_dir)
    esm = publish_plotly_module(root, runs=runs_dir)
    esm_rel = _served_path(esm, root, runs_dir) if esm else ""
    allow = [r".*\.(png|jpg|gif|svg)"] + ([re.escape(esm_rel)] if esm else [])
    given = {o.split("=")[0] for o in extra or []}  # traitlets refuses an option given twice: extra wins
    argv = [*launcher, "--no-browser", f"--port={port}", "--Voila.port_retries=0", "--Voila.ip=127.0.0.1",
            f"--token={token}", f"--Voila.root_dir={root}", f"--template={TEMPLATE}",
            "--VoilaConfiguration.show_tracebacks=True", *[f"--VoilaConfiguration.file_allowlist={a}" for a in allow],
            *([f"--WorkbenchVoila.runs_dir={runs_dir}"] if runs_dir else []),
            *[o for o in cull_options() if o.split("=")[0] not in given], *(extra or [])]
    e = dict(os.environ)
    e["JUPYTER_PATH"] = os.pathsep.join([str(SHARE)] + [p for p in e.get("JUPYTER_PATH", "").split(os.pathsep) if p])
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e["WORKBENCH_NOTEBOOKS"] = str(nbdir)
    e["WORKBENCH_APP_HREF"] = "/" + _rel_url(nbdir / "NAME", root).rsplit("/", 1)[0] + "/{name}"
    if runs_dir:
        e["WORKBENCH_RUNS"] = str(runs_dir)
    # every figure imports plotly's widget module from this one file (see workbench.ui.figure): the kernels get its
    # path relative to the server, which the browser resolves against the page's own address (127.0.0.1 or localhost)
    esm_path = ("voila/files/" + urllib.parse.quote(esm_rel)) if esm else ""
    esm_url = f"http://127.0.0.1:{port}/{esm_path}" if esm else ""
    if esm_path:
        e[PLOTLY_ESM_ENV] = esm_path
    else:
        e.pop(PLOTLY_ESM_ENV, None)
    e.update(env or {})
    return (AppServer(port=port, token=token, root=root, notebooks=nbdir, landing=landing, argv=argv,
                      plotly_esm=esm_url, runs=runs_dir), argv, e)


def _children(pid: int) -> list:
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:
        return []


def _running(p) -> bool:
    try:
        return p.is_running()
    except Exception:
        return False


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


def _die_with_parent():
    """A ``preexec_fn`` (Linux; ``None`` elsewhere) after which the child gets SIGTERM when its parent dies.

    ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: a server started by a wrapper that is killed (even by SIGKILL, which
    the wrapper cannot handle) stops and shuts its kernels down. The signal comes when the *thread* that started
    the child ends, so this is only used from the main thread. A child whose parent died before the call
    (its parent pid changed) stops at once.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class _Stop(Exception):
    """Raised in the main thread by the signal handlers of :func:`run_foreground`."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


#: Signals after which ``workbench app`` / ``workbench lab`` stop the server they started.
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, n))


def run_foreground(argv: list[str], *, cwd: str | Path | None = None, env: Mapping[str, str] | None = None,
                   on_start=None, term_timeout: float = 15) -> int:
    """Run a server (``argv``) until it exits or this process gets SIGTERM, SIGHUP or SIGINT (Ctrl-C).

    On one of those signals the server and every process it started (its kernels) are stopped
    (:func:`stop_process_tree`: SIGTERM, then SIGKILL after ``term_timeout`` s); on Linux the server also gets
    SIGTERM when this process dies without a chance to do so (:func:`_die_with_parent`). ``on_start(proc)`` is
    called once the server is started (e.g. to open a browser).

    Returns:
        The server's exit status when it exits by itself, 0 after Ctrl-C, ``128 + signal`` after SIGTERM/SIGHUP.
    """
    main = threading.current_thread() is threading.main_thread()
    saved: dict = {}

    def handler(signum, frame):
        raise _Stop(signum)

    if main:
        for sig in STOP_SIGNALS:
            saved[sig] = signal.signal(sig, handler)
    proc = None
    known: dict = {}
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=None if env is None else dict(env),
                                preexec_fn=_die_with_parent() if main else None)
        if on_start is not None:
            on_start(proc)
        while True:
            try:
                return proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                # its kernels (those still running), so that none outlives a server that must be killed
                known = {**{pid: c for pid, c in known.items() if _running(c)},
                         **{c.pid: c for c in _children(proc.pid)}}
    except _Stop as stop:
        if main:  # a second signal while stopping must not interrupt the stop
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
        if proc is not None:
            print(f"stopping the server ({signal.Signals(stop.signum).name})", file=sys.stderr, flush=True)
        return 0 if stop.signum == signal.SIGINT else 128 + stop.signum
    finally:
        if proc is not None and proc.poll() is None or known:
            if main:
                for sig in STOP_SIGNALS:
                    signal.signal(sig, signal.SIG_IGN)
            if proc is not None:
                stop_process_tree(proc, known, term_timeout=term_timeout)
        for sig, h in saved.items():
            signal.signal(sig, h if h is not None else signal.SIG_DFL)


@contextmanager
def serve(*, notebooks: str | Path | None = None, port: int | None = None, token: str | None = None,
          env: Mapping[str, str] | None = None, log: str | Path | None = None, start_timeout: float = 60.0,
          extra: list[str] | None = None, runs: str | Path | None = None) -> Iterator[AppServer]:
    """Start Voilà in the background, wait until it answers, yield the :class:`AppServer`, then stop it.

    The server and the kernels it started are ended by PID on exit (and, on Linux, when this process dies).
    ``runs``: see :func:`voila_command`; the log goes to ``log`` (default ``<runs>/app/voila-<port>.log``).

    Raises:
        RuntimeError: Voilà exited early; TimeoutError: it did not answer in ``start_timeout`` seconds.
    """
    server, argv, e = voila_command(notebooks=notebooks, port=port, token=token, env=env, extra=extra, runs=runs)
    logpath = Path(log) if log else (server.runs or server.root / "runs") / "app" / f"voila-{server.port}.log"
    logpath.parent.mkdir(parents=True, exist_ok=True)
    with open(logpath, "wb") as fh:
        proc = subprocess.Popen(argv, cwd=server.root, env=e, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent())
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
            token: str | None = None, open_browser: bool = True, runs: str | Path | None = None) -> int:
    """``workbench app``: serve the studies with Voilà in the foreground until Ctrl-C, SIGTERM or SIGHUP.

    Opens ``notebook`` (a name in the notebooks folder) or the landing page. ``runs``: the runs folder the
    notebooks use (see :func:`voila_command`). The server and its kernels stop with this process
    (:func:`run_foreground`). Returns Voilà's exit status (0 after Ctrl-C, 128 + signal after SIGTERM/SIGHUP).
    """
    token = token or os.environ.get("WORKBENCH_APP_TOKEN")
    server, argv, e = voila_command(notebooks=notebooks, port=port, token=token, runs=runs)
    if notebook:
        p = Path(notebook)
        if not (p.exists() or (server.notebooks / p.name).exists()):
            raise FileNotFoundError(f"notebook {notebook!r} not found (looked in {str(server.notebooks)!r}); "
                                    "choose one of: "
                                    + ", ".join(q.name for q in sorted(server.notebooks.glob('*.ipynb'))))
        url = server.notebook_url(p)
    else:
        url = server.landing_url
    print(f"Workbench app (Voilà) on {url}", flush=True)
    print("(listening on 127.0.0.1 only; the token is required; Ctrl-C stops it)", flush=True)

    def started(proc):
        if not open_browser:
            return
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

    return run_foreground(argv, cwd=server.root, env=e, on_start=started)


# ----------------------------------------------------------------------------- the server process
#: Host names a request may carry (with the server's port): anything else is refused (DNS rebinding).
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def host_allowed(host: str | None, port: int | None) -> bool:
    """Whether a request's ``Host`` header names this server.

    Allowed: ``127.0.0.1``, ``localhost`` or ``[::1]`` with ``port`` (a missing port only for port 80; ``port``
    ``None`` accepts any). Everything else, e.g. ``evil.example:<port>`` (a site whose
    name was re-bound to 127.0.0.1) or ``127.0.0.1.nip.io``, is refused.
    """
    m = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+)(?::(\d+))?", (host or "").strip())
    if not m or m.group(1).lower() not in LOCAL_HOSTS:
        return False
    given = int(m.group(2)) if m.group(2) else 80
    return port is None or given == int(port)


def _voila_classes():
    """The guarded Voilà application class (imports Voilà: only in the server process)."""
    import inspect

    from jupyter_server.base.handlers import JupyterHandler
    from jupyter_server.services.contents.largefilemanager import LargeFileManager
    from tornado import web
    from traitlets import Unicode
    from voila.app import Voila
    from voila.static_file_handler import AllowListFileHandler
    from voila.tornado.handler import TornadoVoilaHandler
    from voila.tornado.treehandler import TornadoVoilaTreeHandler

    class Guard:
        """Mixed into every handler: a foreign ``Host`` is refused (403), then the token is required.

        The login form is excepted from the token: a page without it redirects to the login form, anything else
        answers 403.
        """

        wb_public = False   # the login form
        wb_page = False     # an HTML page: redirect to the login form instead of 403

        def wb_port(self):
            app = self.settings.get("voila")
            return getattr(app, "port", None)

        async def prepare(self, *args, **kwargs):
            if not host_allowed(self.request.host, self.wb_port()):
                self.log.warning("Blocking request with non-local Host %r (only 127.0.0.1, localhost or [::1] with "
                                 "port %s are served)", self.request.host, self.wb_port())
                self.current_user = self._jupyter_current_user = None
                raise web.HTTPError(403, "Host not allowed")
            result = super().prepare(*args, **kwargs)
            if inspect.isawaitable(result):
                await result
            if self._finished or self.wb_public:
                return
            if not self.current_user:
                if self.wb_page and self.request.method in ("GET", "HEAD"):
                    self.redirect(url_concat_login(self))
                    return
                raise web.HTTPError(403, "the token is required")
            if self.wb_page:
                # sets the _xsrf cookie, which a page sends with the request that shuts its kernel down when it
                # is closed (Voilà's pages read it from document.cookie but never get it: a 403 and a kernel left
                # to the idle culling)
                self.xsrf_token  # noqa: B018

        def get_login_url(self):
            if not self.wb_page:
                raise web.HTTPError(403, "the token is required")
            return super().get_login_url()

    def url_concat_login(handler) -> str:
        from tornado.httputil import url_concat

        return url_concat(handler.get_login_url(), {"next": handler.request.uri})

    class NotFound(Guard, JupyterHandler):
        """Unknown routes: the same checks, then 404."""

        async def prepare(self, *args, **kwargs):
            await super().prepare(*args, **kwargs)
            if not self._finished:
                raise web.HTTPError(404)

    class RunsFileHandler(AllowListFileHandler):
        """``/voila/files/runs/<path>`` from the runs folder given (``--WorkbenchVoila.runs_dir``).

        Files are filtered by the allowlist of the served tree (whose paths start with ``runs/``).
        """

        def get_absolute_path(self, root, path):
            if not any(re.fullmatch(p, "runs/" + path, re.IGNORECASE) for p in self.allowlist) or any(
                    re.fullmatch(p, "runs/" + path, re.IGNORECASE) for p in self.denylist):
                raise web.HTTPError(403, "File not allowlisted")
            return web.StaticFileHandler.get_absolute_path(root, path)

    class RunsLandingHandler(TornadoVoilaHandler):
        """``/voila/render/runs/app/index.ipynb``: the landing copy in the runs folder given."""

        wb_contents = None

        @property
        def contents_manager(self):
            return self.wb_contents

    cache: dict = {}

    class WorkbenchVoila(Voila):
        """Voilà whose every handler is guarded (:class:`Guard`), on 127.0.0.1 only.

        It serves ``runs_dir`` as ``runs/`` when given.
        """

        runs_dir = Unicode("", help="a runs folder served as runs/ (files and the landing copy)").tag(config=True)

        def guarded(self, cls):
            if cls not in cache:
                bases = (Guard, cls) if issubclass(cls, JupyterHandler) else (Guard, JupyterHandler, cls)
                public = cls is getattr(self.identity_provider, "login_handler_class", None)
                page = issubclass(cls, (TornadoVoilaHandler, TornadoVoilaTreeHandler))
                cache[cls] = type(f"Guarded{cls.__name__}", bases, {"wb_public": public, "wb_page": page})
            return cache[cls]

        def init_settings(self):
            settings = super().init_settings()
            # jupyter-server's own Host check (Voilà sets allow_remote_access=True), and the guarded 404
            settings.update(allow_remote_access=False, local_hostnames=["localhost"], default_handler_class=NotFound)
            return settings

        def init_handlers(self):
            from jupyter_server.utils import url_path_join

            handlers = list(super().init_handlers())
            if self.runs_dir:
                runs = os.path.abspath(self.runs_dir)
                contents = LargeFileManager(parent=self, root_dir=runs)
                landing = type("RunsLanding", (RunsLandingHandler,), {"wb_contents": contents})
                render = next((h[2] for h in handlers if len(h) > 2 and h[1] is TornadoVoilaHandler), None)
                own = [(url_path_join(self.server_url, r"/voila/files/runs/(.*)"), RunsFileHandler,
                        {"allowlist": self.voila_configuration.file_allowlist,
                         "denylist": self.voila_configuration.file_denylist, "path": runs})]
                if render is not None:
                    own.append((url_path_join(self.server_url, r"/voila/render/runs/(app/index\.ipynb)"), landing,
                                render))
                handlers = own + handlers   # tornado takes the first route that matches
            out = []
            for h in handlers:
                h = tuple(h)
                out.append((h[0], self.guarded(h[1]), *h[2:]))
            return out

    return WorkbenchVoila


def voila_main(argv: list[str] | None = None) -> None:
    """The server process of app mode: Voilà (same options) with every handler guarded.

    A foreign ``Host`` is refused, the token required on every route but the login form; the option
    ``--WorkbenchVoila.runs_dir`` serves a runs folder as ``runs/``.

    Args:
        argv: Voilà's command-line options (default: ``sys.argv[1:]``).
    """
    _voila_classes().launch_instance(argv)


if __name__ == "__main__":  # python -m workbench.app.server <voila options>
    voila_main()
