"""``workbench defense-report RUN``: the rounds of a run's defense and its figures ([Yang 2022, Figs. 3b, 3c, 4–5]).

Reads the defense state from the run's checkpoint (``checkpoints/last.pt``, written by
``Trainer(..., defense=...)``), prints one line per selection round and writes the figures
(HTML by default; PNG/SVG/PDF with a static-export browser) into ``--out``
(default ``<run>/artifacts/defense``).

Heavy imports happen inside the handler so ``workbench --help`` stays fast.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["add_commands", "cmd_defense_report"]


def cmd_defense_report(args) -> int:
    """``workbench defense-report RUN``: print a defended run's rounds and write its figures; exit status."""
    import pandas as pd

    from ..runs import load_checkpoint, load_run
    from ..viz.epic import cluster_size_figure, cumulative_drops_figure, gradient_difference_figure
    from ..viz.export import export_figure
    from . import defense_from_state
    from .analysis import cluster_size_fractions, cumulative_drops

    run = Path(args.run)
    ck_path = run / "checkpoints" / args.checkpoint
    if not ck_path.is_file():
        raise FileNotFoundError(f"no checkpoint {str(ck_path)!r}: is {str(run)!r} a run folder?")
    state = load_checkpoint(ck_path).get("defense")
    if not state:
        raise ValueError(f"run {str(run)!r} was trained without a defense (no defense state in {ck_path.name})")
    defense = defense_from_state(state)
    rd = load_run(run)
    rounds = defense.rounds_frame()
    if rounds.empty:
        print(f"{defense!r}: no selection round yet")
        return 0
    print(repr(defense))
    print(rounds.to_string(index=False))
    out = Path(args.out) if args.out else run / "artifacts" / "defense"
    out.mkdir(parents=True, exist_ok=True)
    n_train = int(rounds["n_before"].iloc[0])
    written = []
    figs = {"cumulative_drops": cumulative_drops_figure(cumulative_drops(defense, n_train, metrics=rd.epochs))}
    if defense.clusters:
        epochs = [int(e) for e in args.epochs.split(",")] if args.epochs else None
        figs["cluster_sizes"] = cluster_size_figure(cluster_size_fractions(defense, epochs=epochs))
    probes = getattr(rd, "probes", None)
    if probes is not None and len(probes) and "name" in probes.columns:
        gd = probes[probes["name"] == "gradient_difference"]
        if len(gd) and "kept" in gd.columns:
            figs["gradient_difference"] = gradient_difference_figure(gd.dropna(subset=["kept"]))
    for name, fig in figs.items():
        for fmt in args.formats.split(","):
            written.append(export_figure(fig, out / f"{name}.{fmt}"))
    pd.DataFrame(defense.log).to_csv(out / "dropped.csv", index=False)
    print("\n".join(str(p) for p in written + [out / "dropped.csv"]))
    return 0


def add_commands(subparsers) -> None:
    """Add ``defense-report`` to the ``workbench`` CLI's subparsers."""
    p = subparsers.add_parser("defense-report", help="rounds and figures of a run trained with a defense (EPIC, ...)")
    p.add_argument("run", help="run folder")
    p.add_argument("--out", help="output folder (default <run>/artifacts/defense)")
    p.add_argument("--epochs", help="rounds (epochs) for the cluster-size panels, e.g. 10,20,80")
    p.add_argument("--formats", default="html", help="comma-separated: html, png, svg, pdf")
    p.add_argument("--checkpoint", default="last.pt")
    p.set_defaults(fn=cmd_defense_report)
