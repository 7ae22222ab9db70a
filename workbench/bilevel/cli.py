"""``workbench bilevel ...``: the Fig. 1 illustration and the Fig. 2–3 study from the command line.

Wire with ``workbench.bilevel.cli.add_commands(subparsers)`` (see ``workbench.cli.COMMAND_MODULES``).

* ``workbench bilevel illustrate [--seed 0] [--grid 50] [--out DIR]`` — compute Fig. 1 (attack, maps,
  argmin-λ map), write ``illustration.json`` and the figures.
* ``workbench bilevel study [--dataset digits] [--reps 10] [--out DIR] [--set key=value ...]`` — run or
  resume the study (App. C settings via :func:`~workbench.bilevel.study.paper_settings`), write
  records/weights and the figures, print the test-error table. ``--preset mnist-10k-0v8`` runs the
  paper-size MNIST 0-vs-8 study on the shipped ``mnist-10k`` (:mod:`workbench.bilevel.mnist`).
* ``workbench bilevel figures DIR`` — (re)draw the figures of a study or illustration folder.
* ``workbench bilevel table DIR`` — mean ± s.e. test error per strategy and poisoning fraction (Markdown).
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["add_commands"]


def _parse_set(items: list[str]) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise ValueError(f"--set {it!r} is invalid: use key=value")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _write_figures(figs: dict, out: Path, formats: list[str]) -> list[Path]:
    from ..viz import export_figure, static_export_available

    written = []
    ok, why = static_export_available()
    for name, fig in figs.items():
        for fmt in formats:
            if fmt != "html" and not ok:
                print(f"note: {fmt} skipped ({why})")
                continue
            written.append(export_figure(fig, out / f"{name}.{fmt}", format=fmt))
    return written


def study_figures(res) -> dict:
    from ..viz.bilevel import error_vs_fraction_figure, lambda_norm_figure, weight_histogram_figure

    figs = {"test_error": error_vs_fraction_figure(res.records)}
    if "rmd" in set(res.records.get("strategy", [])):
        figs["lambda_norm"] = lambda_norm_figure(res.records)
    if res.weights:
        figs["weights"] = weight_histogram_figure(res.weights)
    return figs


def illustration_figures(ill) -> dict:
    from ..viz.bilevel import attack_curve_figure, illustration_figure

    return {"illustration": illustration_figure(ill), "attack_curve": attack_curve_figure(ill)}


def markdown_table(records) -> str:
    """Test error (mean ± s.e., %) per strategy (rows) and poisoning fraction (columns) as Markdown."""
    from .study import STRATEGIES, summary_table

    t = summary_table(records)
    fr = list(t["mean"].columns)
    lines = ["| strategy | " + " | ".join(f"{100 * f:.1f} %" for f in fr) + " |",
             "|---|" + "---|" * len(fr)]
    for k in t.index:
        cells = [f"{100 * t['mean'].loc[k, f]:.2f} ± {100 * t['se'].loc[k, f]:.2f}" for f in fr]
        lines.append(f"| {STRATEGIES[k]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_illustrate(args) -> int:
    from .illustration import IllustrationSettings, illustrate, save_illustration

    s = IllustrationSettings(grid=args.grid, attack_steps=args.steps, inner_steps=args.inner_steps)
    ill = illustrate(args.seed, s, lam_map=not args.no_lambda_map,
                     progress=(lambda st, f: print(f"{st}: {100 * f:.0f}%", flush=True)) if not args.quiet else None)
    out = Path(args.out)
    save_illustration(ill, out / "illustration.json")
    _write_figures(illustration_figures(ill), out, args.formats)
    for k, a in ill.attacks.items():
        print(f"{k}: validation error clean {a['val_error_clean']:.4f} -> poisoned {a['val_error_poisoned']:.4f}; "
              f"attack objective {a['val_loss'][0]:.4f} -> {a['final_val_loss']:.4f}")
    print(f"maps: {ill.seconds.get('maps', 0):.2f} s, λ map: {ill.seconds.get('lambda_map', 0):.2f} s; wrote {out}")
    return 0


def cmd_study(args) -> int:
    from .mnist import preset_settings
    from .study import paper_settings, run_study

    over = _parse_set(args.set)
    if args.reps is not None:
        over["reps"] = args.reps
    if args.root:
        over["root"] = args.root
    s = preset_settings(args.preset, **over) if args.preset else paper_settings(args.dataset, **over)
    out = Path(args.out if args.out else "bilevel_study")

    def progress(e):
        if args.quiet:
            return
        if e["kind"] == "record":
            print(f"rep {e['rep']} {e['strategy']:>5} n_p={e['n_poison']:3d} λ={e['log_lam']:+.3f} "
                  f"test error={e['test_error']:.4f}", flush=True)
        else:
            print(f"repetition {e['rep'] + 1}/{e['reps']} done in {e['seconds']:.1f} s", flush=True)

    res = run_study(s, out, progress=progress)
    _write_figures(study_figures(res), out, args.formats)
    print(markdown_table(res.records))
    return 0


def cmd_figures(args) -> int:
    from .illustration import load_illustration
    from .study import load_study

    d = Path(args.folder)
    if (d / "illustration.json").exists():
        _write_figures(illustration_figures(load_illustration(d / "illustration.json")), d, args.formats)
    if (d / "records.json").exists():
        _write_figures(study_figures(load_study(d)), d, args.formats)
    if not ((d / "illustration.json").exists() or (d / "records.json").exists()):
        raise FileNotFoundError(f"{d} holds neither illustration.json nor records.json")
    print(f"figures written to {d}")
    return 0


def cmd_table(args) -> int:
    from .study import load_study

    print(markdown_table(load_study(args.folder).records))
    return 0


def add_commands(subparsers) -> None:
    """Add ``bilevel`` (with ``illustrate``, ``study``, ``figures``, ``table``) to an argparse subparsers object."""
    p = subparsers.add_parser("bilevel",
                              help="optimal poisoning of L2-regularised LR (minimax bilevel; Carnerero-Cano 2021)")
    sub = p.add_subparsers(dest="bilevel_command", required=True)
    fmts = dict(nargs="*", default=["html", "png"], help="figure formats (html, png, svg, pdf)")

    i = sub.add_parser("illustrate", help="Fig. 1: 2-D Gaussians, one poisoning point, maps")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--grid", type=int, default=50, help="map resolution per axis")
    i.add_argument("--steps", type=int, default=50, help="attack hyperiterations T_Dp")
    i.add_argument("--inner-steps", type=int, default=500, help="inner GD steps T")
    i.add_argument("--no-lambda-map", action="store_true")
    i.add_argument("--out", default="bilevel_illustration")
    i.add_argument("--formats", **fmts)
    i.add_argument("--quiet", action="store_true")
    i.set_defaults(fn=cmd_illustrate)

    s = sub.add_parser("study", help="Fig. 2-3: test error vs poisoning fraction for four λ strategies")
    s.add_argument("--dataset", default="digits", choices=["digits", "mnist", "mnist-10k", "fashion-mnist"])
    s.add_argument("--preset", choices=["mnist-10k-0v8"],
                   help="a study preset (overrides --dataset): mnist-10k-0v8 = the paper's MNIST 0 vs 8 at "
                        "512/171/1,271 points, full hyperiteration counts, 5 repetitions (hours on 2 CPU cores)")
    s.add_argument("--reps", type=int, help="repetitions (default 10)")
    s.add_argument("--root", help="data root for MNIST / Fashion-MNIST")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="StudySettings overrides, e.g. steps_xp=20 strategies='[\"small\",\"rmd\"]'")
    s.add_argument("--out", help="study folder (default bilevel_study)")
    s.add_argument("--formats", **fmts)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_study)

    f = sub.add_parser("figures", help="redraw the figures of a study / illustration folder")
    f.add_argument("folder")
    f.add_argument("--formats", **fmts)
    f.set_defaults(fn=cmd_figures)

    t = sub.add_parser("table", help="Markdown table of test error vs poisoning fraction")
    t.add_argument("folder")
    t.set_defaults(fn=cmd_table)

