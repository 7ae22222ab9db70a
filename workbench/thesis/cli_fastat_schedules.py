"""``workbench thesis fastat`` and ``workbench thesis schedules``: the thesis commands beyond ``thesis repro``.

``add_commands(subparsers)`` adds two subcommands to the shared top-level ``thesis`` command
(:func:`workbench.thesis.cli_repro.thesis_subparsers`)::

    workbench thesis fastat --method fgsm_gradalign --eps 0.25 --epochs 30 --lam 1.0 --out runs/fastat
    workbench thesis schedules --T 100000 --kind piecewise --eta 0.24 --decay-at 0.5 --decay 1.5 --out runs/schedules

``fastat`` trains the single-layer CNN on the digits with one method (FGSM, FGSM-RS, PGD-k, FGSM + GradAlign,
standard) and writes ``history.csv`` (clean / FGSM / PGD accuracy, gradient alignment, cos(δ_FGSM, δ_PGD), filter
norms per measurement), ``summary.json`` (final clean and PGD-50-10 accuracy, alignment, settings) and the figure.
``schedules`` writes a step-size schedule of Ch. 6 as CSV and a figure. Heavy imports happen in the handlers.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["add_commands", "cmd_fastat", "cmd_schedules"]


def add_commands(subparsers) -> None:
    """Register ``thesis fastat`` and ``thesis schedules`` on the top-level ``subparsers`` of ``workbench``."""
    from .ch2 import METHODS
    from .cli_repro import thesis_subparsers

    sub = thesis_subparsers(subparsers)
    f = sub.add_parser("fastat", help="fast adversarial training of the single-layer CNN on digits (thesis Ch. 2)")
    f.add_argument("--method", choices=METHODS, default="fgsm")
    f.add_argument("--eps", type=float, default=0.25, help="l_inf radius on the [0, 1] pixel scale")
    f.add_argument("--alpha", type=float, default=None, help="attack step (default: eps, 1.25 eps for FGSM-RS)")
    f.add_argument("--pgd-steps", type=int, default=10, help="k of PGD-k training")
    f.add_argument("--lam", type=float, default=1.0, help="GradAlign lambda")
    f.add_argument("--detach-clean", action="store_true", help="public-code GradAlign (detached clean gradient)")
    f.add_argument("--epochs", type=int, default=30)
    f.add_argument("--lr-max", type=float, default=0.01, help="peak of the cyclic Adam schedule")
    f.add_argument("--filters", type=int, default=4)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--final-pgd-steps", type=int, default=50, help="final PGD evaluation steps (thesis: 50)")
    f.add_argument("--final-pgd-restarts", type=int, default=10, help="final PGD evaluation restarts (thesis: 10)")
    f.add_argument("--out", default="runs/fastat", help="output folder")
    f.add_argument("--format", nargs="+", default=["html"], help="figure formats (html, png, svg, pdf)")
    f.set_defaults(fn=cmd_fastat)
    s = sub.add_parser("schedules", help="write a Ch. 6 step-size schedule (CSV + figure)")
    s.add_argument("--kind", choices=("piecewise", "linear-warmup", "exponential-warmup"), default="piecewise")
    s.add_argument("--T", type=int, default=100_000)
    s.add_argument("--eta", type=float, default=0.2397)
    s.add_argument("--decay-at", type=float, default=0.5, help="fraction of T (p)")
    s.add_argument("--decay", type=float, default=1.5)
    s.add_argument("--factor", type=float, default=6.0, help="linear warm-up factor F")
    s.add_argument("--exponent", type=float, default=1.0, help="linear warm-up exponent e")
    s.add_argument("--out", default="runs/schedules")
    s.set_defaults(fn=cmd_schedules)


def _write_figure(fig, stem: Path, formats) -> list[str]:
    from ..viz.export import export_figure, static_export_available

    written = []
    for fmt in formats:
        if fmt != "html" and not static_export_available()[0]:
            print(f"{fmt} skipped: {static_export_available()[1]}")
            continue
        written.append(str(export_figure(fig, Path(f"{stem}.{fmt}"), format=fmt)))
    return written


def cmd_fastat(args) -> int:
    """``workbench thesis fastat``: fast adversarial training on digits (Ch. 2); writes history, summary, figure."""
    from ..viz.thesis_adv import fast_at_figure
    from .ch2 import FastATConfig, fast_adversarial_training

    cfg = FastATConfig(method=args.method, eps=args.eps, alpha=args.alpha, pgd_steps=args.pgd_steps, lam=args.lam,
                       detach_clean=args.detach_clean, epochs=args.epochs, lr_max=args.lr_max,
                       n_filters=args.filters, seed=args.seed, final_pgd_steps=args.final_pgd_steps,
                       final_pgd_restarts=args.final_pgd_restarts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = fast_adversarial_training(cfg, callback=lambda r: print(
        f"epoch {r['epoch']:6.2f}  clean {r['clean_acc']:.3f}  FGSM {r['fgsm_acc']:.3f}  PGD {r['pgd_acc']:.3f}  "
        f"alignment {r['grad_alignment']:.3f}", flush=True))
    res.history.assign(method=args.method).to_csv(out / "history.csv", index=False)
    summary = {"final": res.final, "config": res.config}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    files = _write_figure(fast_at_figure({"history": res.history.assign(method=args.method), "eps": args.eps}),
                          out / "fast_at", args.format)
    print(f"final: clean {res.final['clean_acc']:.3f}, {res.final['pgd']}: {res.final['pgd_acc']:.3f}, "
          f"alignment {res.final['grad_alignment']:.3f}")
    print("wrote", ", ".join([str(out / "history.csv"), str(out / "summary.json"), *files]))
    return 0


def cmd_schedules(args) -> int:
    """``workbench thesis schedules``: one step-size schedule of Ch. 6 as a CSV table and an HTML figure."""
    import pandas as pd
    import plotly.graph_objects as go

    from ..viz.theme import apply_theme
    from .ch6 import exponential_warmup, linear_warmup, piecewise_constant

    if args.kind == "piecewise":
        eta = piecewise_constant(args.T, args.eta, args.decay_at, args.decay)
    elif args.kind == "linear-warmup":
        eta = linear_warmup(args.T, args.eta, args.decay_at, args.factor, exponent=args.exponent, decay=args.decay)
    else:
        eta = exponential_warmup(args.T, args.eta, args.decay_at)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"iteration": range(args.T), "eta": eta}).to_csv(out / f"{args.kind}.csv", index=False)
    fig = apply_theme(go.Figure(go.Scatter(y=eta, name=args.kind)))
    fig.update_layout(title=f"{args.kind} schedule", xaxis_title="iteration", yaxis_title="η")
    files = _write_figure(fig, out / args.kind, ["html"])
    print(f"eta: first {eta[0]:.4g}, max {eta.max():.4g}, last {eta[-1]:.4g}; wrote {out / (args.kind + '.csv')}, "
          + ", ".join(files))
    return 0
