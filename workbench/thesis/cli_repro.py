"""The ``workbench thesis`` command group and its ``repro`` subcommand: ``workbench thesis repro --figure NAME``.

``add_commands(subparsers)`` adds (or reuses) the top-level ``thesis`` command and its ``repro`` subcommand,
which runs **any** reproduction of :mod:`workbench.thesis.registry` (Ch. 5/7 here, and those other modules
register), prints the thesis' claim next to the measured outcome, and writes the figure, the data (CSV) and
a ``summary.json``::

    workbench thesis repro --list
    workbench thesis repro --figure fig5.6 --size test --out runs/thesis
    workbench thesis repro --figure fig5.15 --set rho_switch=3 --set n_steps=30000 --format html png

Other modules adding ``thesis`` subcommands should call :func:`thesis_subparsers` to share the parser.
Heavy imports happen inside the handler.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_commands", "thesis_subparsers", "cmd_repro", "parse_set"]


def thesis_subparsers(subparsers) -> argparse._SubParsersAction:
    """The sub-subparsers of the top-level ``thesis`` command (created on first use, then shared).

    A later call, from another module that adds ``thesis`` subcommands, finds the same ``thesis`` parser in
    ``subparsers.choices`` and its subparsers action among that parser's actions, so every module adds to one
    ``thesis`` command (argparse allows one subparsers action per parser).
    """
    parser = subparsers.choices.get("thesis")
    if parser is None:
        parser = subparsers.add_parser("thesis", help="reproductions of Andriushchenko's PhD thesis (2024)")
    existing = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if existing:
        return existing[0]
    return parser.add_subparsers(dest="thesis_command", required=True)


def add_commands(subparsers) -> None:
    """Register ``thesis repro`` on the top-level ``subparsers`` of ``workbench``."""
    sub = thesis_subparsers(subparsers)
    r = sub.add_parser("repro", help="run a registered thesis reproduction (claim vs measured outcome, figure, data)")
    r.add_argument("--figure", help="reproduction name (see --list), e.g. fig5.6, fig5.15, fig7.7, ch7.mini")
    r.add_argument("--list", action="store_true", help="list the registered reproductions and their parameters")
    r.add_argument("--size", choices=("full", "test"), default="full",
                   help="full: thesis-like defaults (seconds to minutes); test: the reduced size the tests use")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter (JSON value, e.g. --set rho=0.1 --set seeds=[0,1])")
    r.add_argument("--out", default="runs/thesis", help="output folder (a sub-folder per reproduction)")
    r.add_argument("--format", nargs="+", default=["html"], help="figure formats (html, png, svg, pdf)")
    r.set_defaults(fn=cmd_repro)


def parse_set(items: list[str]) -> dict:
    """``["rho=0.1", "seeds=[0,1]", "name=abc"]`` -> dict (JSON values, plain strings otherwise).

    Raises:
        ValueError: an item without ``=``.
    """
    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--set expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def cmd_repro(args) -> int:
    """``workbench thesis repro``: list the reproductions, or run one and write its outcome and figure.

    Returns the exit status: 0, or 2 when no reproduction was named (the list is printed).
    """
    from . import registry

    if args.list or not args.figure:
        for name in registry.names():
            e = registry.get(name)
            print(f"{name:12s} {e.title}")
            for p in e.params:
                print(f"    {p.name} = {p.default!r}" + (f" (test: {p.test!r})" if p.test is not None else "")
                      + (f"  {p.help}" if p.help else ""))
        for mod, err in registry.LOAD_ERRORS.items():
            print(f"(could not load {mod}: {err})")
        return 0 if args.list else 2
    from tqdm.auto import tqdm

    bar = tqdm(total=100, desc=args.figure, unit="%")

    def progress(frac, msg=""):
        bar.n = int(100 * min(max(frac, 0.0), 1.0))
        bar.set_postfix_str(str(msg)[:60], refresh=False)
        bar.refresh()

    try:
        rep = registry.run(args.figure, size=args.size, progress=progress, **parse_set(args.set))
    finally:
        bar.close()
    print(rep.summary())
    out = Path(args.out) / args.figure.replace("/", "_")
    out.mkdir(parents=True, exist_ok=True)
    _write_data(rep.data, out)
    (out / "summary.json").write_text(json.dumps(
        {"name": rep.name, "claim": rep.claim, "measured": rep.measured, "verdict": rep.verdict,
         "verdict_reason": rep.verdict_reason,
         "metrics": rep.metrics, "settings": rep.settings, "notes": rep.notes, "seconds": rep.seconds},
        indent=2, default=str))
    if rep.figure is not None:
        from ..viz import export_figure

        for fmt in args.format:
            try:
                export_figure(rep.figure, out / f"{args.figure}.{fmt}", format=fmt)
            except Exception as e:  # noqa: BLE001 - static export needs a browser; HTML always works
                print(f"could not write {fmt}: {e}")
    print(f"wrote {out}")
    return 0


def _write_data(data, out: Path) -> None:
    import pandas as pd

    items = data.items() if isinstance(data, dict) else [("data", data)]
    for k, v in items:
        if isinstance(v, pd.DataFrame):
            v.to_csv(out / f"{k}.csv", index=False)
