"""``workbench poison-fairness``: the fairness protocol of [Murphy 2025, §4.2.1] from the command line.

Wire with ``workbench.poisoning.cli.add_commands(subparsers)`` (see ``workbench.cli.COMMAND_MODULES``).

``workbench poison-fairness CONFIG [--initial 8] [--budget 4] [--seeds 0 1 2 3 4] [--set KEY=VALUE ...]
[--poison KEY=VALUE ...] [--grid KEY=V1,V2 ...] [--out DIR]`` runs (or resumes) the 3-step
learning-rate/momentum search under a fixed budget and the final comparison
(:func:`~workbench.poisoning.fairness.run_fairness`), printing what each step chose and the
final test-accuracy table. A reduced size, e.g. ``--set train.epochs=3 data.max_train=512
--initial 3 --budget 2 --seeds 0 1``, runs in minutes on a CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["add_commands"]


def _value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def _pairs(items, flag: str) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise ValueError(f"{flag} {it!r} is invalid: use key=value")
        k, v = it.split("=", 1)
        out[k] = v
    return out


def cmd_fairness(args) -> int:
    from ..config import RunConfig
    from .fairness import FairnessSettings, run_fairness
    from .sharpness_aware import PoisonConfig

    cfg = RunConfig.load(args.config)
    if args.set:
        cfg = cfg.with_overrides(args.set)
    poison = PoisonConfig.from_dict({**PoisonConfig().to_dict(),
                                     **{k: _value(v) for k, v in _pairs(args.poison, "--poison").items()}})
    grid = {k: [_value(x) for x in v.split(",")] for k, v in _pairs(args.grid, "--grid").items()} or None
    s = FairnessSettings(initial_trials=args.initial, budget=args.budget, seeds=tuple(args.seeds),
                         poison_grid=grid)
    res = run_fairness(cfg, s, poison_cfg=poison, root=Path(args.out) if args.out else None)
    c = res.chosen
    print(f"step 1 (initial search, {s.initial_trials} trials): lr={c['step1']['lr']:.3g} "
          f"momentum={c['step1']['momentum']:.3f}")
    print(f"step 2 (poisoning search, budget {s.budget}): {c['poison']}")
    print(f"step 3 (baseline search, budget {s.budget} more): lr={c['step3']['lr']:.3g} "
          f"momentum={c['step3']['momentum']:.3f}")
    print("| variant | test accuracy (%) | seeds |\n|---|---|---|")
    for _, r in res.table.iterrows():
        print(f"| {r['variant']} | {100 * r['test_acc_mean']:.2f} ± {100 * r['test_acc_se']:.2f} | "
              f"{int(r['test_acc_n'])} |")
    print(f"wrote {res.path}")
    return 0


def add_commands(subparsers) -> None:
    """Add ``poison-fairness`` to an argparse subparsers object."""
    p = subparsers.add_parser("poison-fairness",
                              help="the fair-comparison protocol of sharpness-aware poisoning (Murphy 2025, §4.2.1)")
    p.add_argument("config", help="base run config (data, model, epochs; lr and momentum are searched)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="run config overrides")
    p.add_argument("--poison", nargs="*", default=[], metavar="KEY=VALUE", help="fixed poison settings")
    p.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2",
                   help="poisoning search space (default: Table 4.1 scaled to the epochs)")
    p.add_argument("--initial", type=int, default=8, help="trials of the initial lr/momentum search (step 1)")
    p.add_argument("--budget", type=int, default=4, help="budget B of steps 2 and 3")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds of the final comparison")
    p.add_argument("--out", help="output folder (default <root>/fairness/<data>-<model>)")
    p.set_defaults(fn=cmd_fairness)
