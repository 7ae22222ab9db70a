"""``workbench reproduce``: the claims ledger and the paper-scale configurations.

workbench reproduce --report                      # docs/reproductions.md from results/
workbench reproduce --report --results R --out F
workbench reproduce --list                        # the paper-scale configurations
workbench reproduce --paper-scale NAME [--plan] [--tiny]
workbench reproduce --store NAME [--size test|full] [--set k=v ...]   # run a thesis reproduction, store it
workbench reproduce --corruption [--tiny]          # parameter corruption [Sun 2020, Alg. 1-2], LeNet-5 / MNIST
"""
from __future__ import annotations

__all__ = ["add_commands", "cmd_reproduce"]


def add_commands(subparsers) -> None:
    """Add ``reproduce`` to the ``workbench`` CLI's subparsers."""
    p = subparsers.add_parser("reproduce", help="claims ledger (docs/reproductions.md) and paper-scale runs")
    p.add_argument("--report", action="store_true", help="write the claims ledger from the stored results")
    p.add_argument("--results", default="results", help="folder of stored results (default results/)")
    p.add_argument("--out", default="docs/reproductions.md", help="ledger page to write")
    p.add_argument("--import-studies", action="store_true",
                   help="with --report: first store the other studies' saved results (EPIC efficacy, bilevel) "
                        "in --results")
    p.add_argument("--list", action="store_true", help="list the paper-scale configurations with their time")
    p.add_argument("--paper-scale", metavar="NAME", help="run a paper-scale configuration (GPU) and store it")
    p.add_argument("--plan", action="store_true", help="with --paper-scale: print the plan and expected time only")
    p.add_argument("--tiny", action="store_true",
                   help="with --paper-scale or --corruption: a tiny CPU check of the same pipeline")
    p.add_argument("--corruption", action="store_true",
                   help="random vs gradient-based parameter corruption of LeNet-5 trained with SGD and SAM on MNIST "
                        "(one torch thread, minutes on a CPU); stored in --results")
    p.add_argument("--store", metavar="NAME", help="run thesis reproduction NAME and store its result")
    p.add_argument("--size", default="full", choices=("full", "test"), help="with --store: the size")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="with --store: parameter values")
    p.set_defaults(fn=cmd_reproduce)


def cmd_reproduce(args) -> int:
    """Run ``workbench reproduce`` with the parsed ``args``; returns the exit status (0)."""
    from pathlib import Path

    from . import paper_scale
    from .ledger import ledger_rows, verdict_counts, write_ledger

    if not (args.report or args.list or args.paper_scale or args.store or args.corruption):
        raise SystemExit("error: say what to do: --report, --list, --paper-scale NAME, --store NAME or --corruption")
    if args.list:
        for name in paper_scale.CONFIGS:
            print(paper_scale.plan(name))
    if args.store:
        from ..thesis import registry
        from ..thesis.cli_repro import parse_set
        from .store import save_result

        rep = registry.run(args.store, size=args.size, figure=False, **parse_set(args.set))
        print(rep.summary())
        tables = {"runs": rep.data["runs"]} if isinstance(rep.data, dict) and "runs" in rep.data else None
        path = Path(args.results) / "thesis" / f"{args.store}.json"
        rep.settings.setdefault("size", args.size)
        save_result(rep, path, command=f"workbench reproduce --store {args.store} --size {args.size}"
                    + "".join(f" --set {s}" for s in args.set), tables=tables)
        print(f"stored {path}")
    if args.paper_scale:
        if args.plan:
            print(paper_scale.plan(args.paper_scale, tiny=args.tiny))
        else:
            paper_scale.run_paper_scale(args.paper_scale, tiny=args.tiny, results=args.results)
    if args.corruption:
        from .corruption import run_and_store

        run_and_store(args.results, tiny=args.tiny)
    if args.report:
        if args.import_studies:
            from .ledger import import_bilevel_results, import_epic_results

            import_epic_results(args.results)
            import_bilevel_results(args.results)
        out = write_ledger(args.results, args.out)
        counts = verdict_counts(ledger_rows(args.results))
        print(f"wrote {out}: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return 0
