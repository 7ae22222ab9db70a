"""Command-line entry points of app mode and results packs: ``workbench app`` and ``workbench pack build|load``.

Wire with ``add_commands(subparsers)`` (an ``argparse`` subparsers object); each
command sets ``fn`` to its handler, which returns an exit status.
"""
from __future__ import annotations

import os

__all__ = ["add_commands", "cmd_app", "cmd_pack_build", "cmd_pack_load"]


def cmd_app(args) -> int:
    """Serve the study notebooks as Voilà dashboards on 127.0.0.1 (classroom-safe panel defaults).

    With ``--runs DIR`` everything app mode writes goes under ``DIR`` (the kernels get ``WORKBENCH_RUNS=DIR``).
    The server and its kernels stop with this command (SIGTERM, SIGHUP, Ctrl-C; on Linux even when it is killed).
    """
    from .server import run_app

    if not args.full:
        os.environ["WORKBENCH_CLASSROOM"] = "1"  # inherited by the kernels: panels start classroom-safe
    runs = os.path.abspath(args.runs) if args.runs else None
    if runs:
        if os.path.exists(runs) and not os.path.isdir(runs):
            raise SystemExit(f"error: --runs {args.runs!r} is not a folder")
        os.makedirs(runs, exist_ok=True)
    try:
        return run_app(args.notebook, notebooks=args.notebooks, port=args.port, token=args.token,
                       open_browser=not args.no_browser, runs=runs)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from e


def cmd_pack_build(args) -> int:
    """Train and analyse everything the guided tour shows into a results pack (every file fingerprinted)."""
    from .pack import PackError, build_pack
    from .tour import TourSettings

    d = TourSettings.from_env()
    settings = TourSettings(epochs=args.epochs or d.epochs, craft_epochs=args.craft_epochs or d.craft_epochs,
                            count=args.count or d.count)
    try:
        build_pack(args.out, settings)
    except PackError as e:
        raise SystemExit(f"error: {e}") from e
    return 0


def cmd_pack_load(args) -> int:
    """Copy a results pack into the runs folder (untrusted input: checked file by file, no links, nothing unpickled).

    A refused pack is reported as one line ``error: ...`` (exit status 2) and leaves nothing behind.
    """
    from .pack import PackError, load_pack

    try:
        load_pack(args.pack, args.runs, max_bytes=int(args.max_gb * 1e9), max_files=args.max_files)
    except PackError as e:
        raise SystemExit(f"error: {e}") from e
    except OSError as e:  # e.g. the runs folder is not writable, or the disk is full
        raise SystemExit(f"error: loading the pack failed: {e.strerror or e}"
                         f"{f': {str(e.filename)!r}' if e.filename else ''} (nothing was loaded)") from e
    return 0


def add_commands(subparsers) -> None:
    """Add ``app`` and ``pack`` (``build``, ``load``) to an argparse subparsers object."""
    app = subparsers.add_parser("app", help="serve the study notebooks as Voilà dashboards on 127.0.0.1",
                                description="Serve every study notebook as a dashboard (widgets and figures, code "
                                            "hidden) with Voilà on 127.0.0.1 with a token, and open the landing "
                                            "page (or NOTEBOOK). Panels start with classroom-safe settings "
                                            "(WORKBENCH_CLASSROOM=1) unless --full is given.")
    app.add_argument("notebook", nargs="?", help="a study notebook to open, e.g. 10_guided_tour.ipynb")
    app.add_argument("--port", type=int, default=8866)
    app.add_argument("--token", help="access token (default: random; or WORKBENCH_APP_TOKEN)")
    app.add_argument("--notebooks", help="the study notebooks folder (default: ./notebooks)")
    app.add_argument("--runs", help="runs folder the notebooks use (sets WORKBENCH_RUNS; default: their own); "
                                    "app mode then writes only there")
    app.add_argument("--full", action="store_true", help="the notebooks' own settings, not classroom-safe ones")
    app.add_argument("--no-browser", action="store_true")
    app.set_defaults(fn=cmd_app)

    pack = subparsers.add_parser("pack", help="results packs for the guided tour (build, load)")
    psub = pack.add_subparsers(dest="pack_command", required=True)
    b = psub.add_parser("build", help="train and analyse everything the guided tour shows into a pack folder")
    b.add_argument("out", nargs="?", default="tour-pack", help="pack folder (default: tour-pack)")
    b.add_argument("--epochs", type=int, help="epochs of the SGD, SAM and poisoned runs (default 30)")
    b.add_argument("--craft-epochs", type=int, help="epochs of the poison-crafting SAM run (default 3)")
    b.add_argument("--count", type=int, help="training examples per analysis (default 512)")
    b.set_defaults(fn=cmd_pack_build)
    ld = psub.add_parser("load", help="copy a pack's runs into the runs folder (verified; nothing unpickled)",
                         description="Copy a results pack's runs into the runs folder. The pack is untrusted: "
                                     "links, special files, unsafe names and any modified, missing or unlisted "
                                     "file refuse it (one line 'error: ...', exit status 2) and nothing is "
                                     "written.")
    ld.add_argument("pack", help="pack folder (with index.json)")
    ld.add_argument("--runs", default=os.environ.get("WORKBENCH_RUNS", "runs"),
                    help="runs folder (default: $WORKBENCH_RUNS or ./runs; the notebooks use ../runs from notebooks/)")
    ld.add_argument("--max-gb", type=float, default=2.0, help="refuse packs larger than this (default 2 GB)")
    ld.add_argument("--max-files", type=int, default=100_000,
                    help="refuse packs with more files and folders than this (default 100000)")
    ld.set_defaults(fn=cmd_pack_load)
