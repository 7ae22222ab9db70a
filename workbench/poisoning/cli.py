"""``workbench poison-fairness``: the fairness protocol of [Murphy 2025, §4.2.1] from the command line.

Wire with ``workbench.poisoning.cli.add_commands(subparsers)`` (see ``workbench.cli.COMMAND_MODULES``).

``workbench poison-fairness CONFIG [--initial 8] [--budget 4] [--seeds 0 1 2 3 4] [--set KEY=VALUE ...]
[--poison KEY=VALUE ...] [--grid KEY=V1,V2 ...] [--out DIR]`` runs (or resumes) the 3-step
learning-rate/momentum search under a fixed budget and the final comparison
(:func:`~workbench.poisoning.fairness.run_fairness`), printing what each step chose and the
final test-accuracy table. A reduced size, e.g. ``--set train.epochs=3 data.max_train=512
--initial 3 --budget 2 --seeds 0 1``, runs in minutes on a CPU.

``workbench poison-ch5 [--out DIR] [--results DIR] [--seeds 0 1 2 3 4] [--epochs 30] [--lr 0.001]
[--data mnist-10k] [--max-train N] [--hessian-seeds ...] [--count 1024] [--threads 1]`` runs (or resumes) the
LeNet-5 analysis of [Murphy 2025, Ch. 5] (:func:`~workbench.poisoning.ch5.run_ch5`, per-seed protocol), printing
a line per run, then stores its three results (:func:`~workbench.poisoning.ch5.summarize_ch5`) as
``<results>/murphy2025/ch5-losses.json``, ``ch5-crafting.json`` and ``ch5-sharpness.json`` for the claims ledger.
At the report's size (5 seeds × 30 epochs on mnist-10k) it takes about an hour on one CPU core.
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


def _fairness_progress():
    """A callback printing one line per finished run of the protocol (name, status, accuracy, time)."""
    import time

    from ..training.events import RunEnded, RunStarted

    t0, names, count = time.perf_counter(), {}, [0]

    def report(ev):
        if isinstance(ev, RunStarted):
            names[ev.run_id] = ev.name
        elif isinstance(ev, RunEnded):
            count[0] += 1
            m = ev.final_metrics or {}
            acc = "".join(f", {k} {m[k]:.4f}" for k in ("val_acc", "test_acc") if isinstance(m.get(k), float))
            print(f"[run {count[0]}] {names.get(ev.run_id, ev.run_id)}: {ev.status}{acc} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    return report


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
    res = run_fairness(cfg, s, poison_cfg=poison, root=Path(args.out) if args.out else None,
                       callbacks=[_fairness_progress()])
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
    if args.results:
        from ..data import load_data
        from ..reproduce.store import save_result
        from .fairness import fairness_result

        test_count = len(load_data(cfg.data).test)
        rep = fairness_result(res, data=cfg.data.name, model=cfg.model.name, test_count=test_count)
        path = Path(args.results) / "murphy2025" / f"fairness-{cfg.data.name}-{cfg.model.name}.json"
        cmd = (f"workbench poison-fairness {args.config} --initial {s.initial_trials} --budget {s.budget} --seeds "
               + " ".join(map(str, s.seeds)) + (" --set " + " ".join(args.set) if args.set else "")
               + (" --poison " + " ".join(args.poison) if args.poison else "")
               + (" --grid " + " ".join(args.grid) if args.grid else ""))
        save_result(rep, path, command=cmd, tables={"trials": res.trials.drop(
            columns=[c for c in res.trials.columns if c.endswith("path")]), "table": res.table})
        print(f"{rep.verdict}: {rep.verdict_reason}")
        print(f"stored {path}")
    return 0


def cmd_ch5(args) -> int:
    import time

    import torch

    from .ch5 import run_ch5, save_ch5, summarize_ch5
    from .study import PoisonStudyEvent

    if args.threads < 1:
        raise ValueError(f"--threads {args.threads} is invalid: give a positive integer")
    if args.count is not None and args.count < 1:
        raise ValueError(f"--count {args.count} is invalid: give a positive integer")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    def report(ev):
        if isinstance(ev, PoisonStudyEvent) and ev.kind in ("run_ended", "skipped"):
            r = ev.record
            what = f"crafting run (SAM) seed {r.get('seed')}" if r.get("kind") == "craft" else \
                f"{r.get('label')} seed {r.get('seed')}"
            acc = f", test acc {r['test_acc']:.4f}" if r.get("test_acc") is not None else ""
            print(f"[{ev.done}/{ev.total}] {what}: {'already finished' if ev.kind == 'skipped' else r['status']}"
                  f"{acc} ({time.perf_counter() - t0:.0f} s)", flush=True)

    out = Path(args.out) if args.out else Path("runs") / "poison"
    cmp = run_ch5(out, seeds=args.seeds, data=args.data, lr=args.lr, epochs=args.epochs, max_train=args.max_train,
                  callbacks=[report])
    print(f"study {cmp.status}: {cmp.path}", flush=True)
    if cmp.status != "finished":
        print("not all runs finished: run the same command again to resume; nothing stored", flush=True)
        return 130 if cmp.status == "stopped" else 1
    results = summarize_ch5(cmp, hessian_seeds=args.hessian_seeds, count=args.count,
                             progress=lambda m: print(f"analysis: {m}", flush=True))
    cmd = (f"workbench poison-ch5 --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs} --lr {args.lr:g} "
           f"--data {args.data} --count {args.count}"
           + (f" --max-train {args.max_train}" if args.max_train is not None else "")
           + (f" --hessian-seeds {' '.join(map(str, args.hessian_seeds))}" if args.hessian_seeds else ""))
    for p in save_ch5(results, Path(args.results) / "murphy2025", command=cmd):
        print(f"stored {p}")
    for r in results:
        print(f"{r.name}: {r.verdict} ({r.verdict_reason})")
    return 0


def add_commands(subparsers) -> None:
    """Add ``poison-fairness`` and ``poison-ch5`` to an argparse subparsers object."""
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
    p.add_argument("--results", help="also store the outcome for the claims ledger in this results folder "
                   "(<results>/murphy2025/fairness-<data>-<model>.json)")
    p.set_defaults(fn=cmd_fairness)

    from .ch5 import CH5_EPOCHS, CH5_LR, CH5_SEEDS

    c = subparsers.add_parser("poison-ch5", help="the LeNet-5 analysis of sharpness-aware poisoning (Murphy 2025, "
                              "Ch. 5, Figs. 5.1-5.10), stored for the claims ledger")
    c.add_argument("--out", help="parent of the study folder (default runs/poison)")
    c.add_argument("--results", default="results", help="folder of stored results (default results/)")
    c.add_argument("--seeds", type=int, nargs="+", default=list(CH5_SEEDS), help="seeds (default 0 1 2 3 4)")
    c.add_argument("--epochs", type=int, default=CH5_EPOCHS, help="epochs of every run (default 30)")
    c.add_argument("--lr", type=float, default=CH5_LR, help="SGD/SAM learning rate (default 0.001, the report's)")
    c.add_argument("--data", default="mnist-10k", help="dataset (default mnist-10k)")
    c.add_argument("--max-train", type=int, default=None, help="keep only this many training images")
    c.add_argument("--hessian-seeds", type=int, nargs="+", default=None,
                   help="seeds of the Hessian and interpolation analyses (default: all)")
    c.add_argument("--count", type=int, default=1024, help="examples per Hessian / interpolation (default 1024)")
    c.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    c.set_defaults(fn=cmd_ch5)
