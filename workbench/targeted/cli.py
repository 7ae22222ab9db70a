"""``workbench targeted craft|evaluate``: targeted poisoning from the command line.

Registered by ``workbench.cli`` through :func:`add_commands` (heavy imports inside the handlers).

* ``workbench targeted craft OUT`` — pretrain the clean model, draw the setups, craft one poison
  per setup: ``OUT/setups.json`` and ``OUT/poisons/trial_XXX.pt`` (the study folder layout).
* ``workbench targeted evaluate OUT`` — run (or resume) the whole study: crafting (skipped where
  a poison exists), the clean run, the undefended victim and each ``--defense``; prints
  [Yang 2022, Tables 1–2] (Markdown) and writes ``OUT/trials.jsonl``, ``OUT/table1.csv``, ``OUT/table2.csv``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

__all__ = ["add_commands", "parse_defense"]


def parse_defense(text: str) -> dict:
    """Parse a ``--defense`` value into a defense spec dict (``name`` and the numeric fields given).

    Accepted: ``none`` | ``epic[:budget[:period[:warmup]]]`` | ``drop_highest_loss[:budget]`` |
    ``drop_lowest_confidence[:budget]``.

    Raises:
        ValueError: unknown name or non-numeric field.
    """
    parts = text.split(":")
    name = parts[0].strip().lower().replace("-", "_")
    try:
        nums = [float(p) for p in parts[1:]]
    except ValueError as e:
        raise ValueError(f"--defense {text!r} is invalid: fields after the name must be numbers ({e})") from None
    if name == "none":
        return {"name": "none"}
    if name == "epic":
        keys = ("budget", "period", "warmup")
    elif name in ("drop_highest_loss", "drop_lowest_confidence"):
        keys = ("budget", "period", "warmup")
    else:
        raise ValueError(f"--defense {text!r} is invalid: choose none, epic, drop_highest_loss or "
                         "drop_lowest_confidence")
    spec = {"name": name}
    for k, v in zip(keys, nums):
        spec[k] = int(v) if k in ("period", "warmup") else v
    return spec


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="study folder")
    p.add_argument("--dataset", default="digits", choices=("digits", "mnist"),
                   help="digits (bundled) or mnist (pooled t10k files under --data-root)")
    p.add_argument("--data-root", help="torchvision data root for mnist")
    p.add_argument("--attack", default="bullseye_polytope",
                   choices=("gradient_matching", "feature_collision", "bullseye_polytope"))
    p.add_argument("--iterations", type=int, help="attack iterations (default: the attack's)")
    p.add_argument("--restarts", type=int, help="gradient matching restarts")
    p.add_argument("--scenario", default="transfer", choices=("scratch", "transfer", "finetune"))
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--budget", type=float, default=0.04, help="poisons as a fraction of the training set")
    p.add_argument("--epsilon", type=float, default=64, help="l_inf bound in pixel levels out of 255 (64 = 64/255)")
    p.add_argument("--epochs", type=int, default=20, help="victim epochs")
    p.add_argument("--lr", type=float, default=0.01, help="victim learning rate")
    p.add_argument("--seed", type=int, default=0, help="setup seed")
    p.add_argument("--pretrain-epochs", type=int, default=30)


def _study(args, defenses):
    from .study import TrialStudy
    from .victim import VictimConfig

    kw = {}
    if args.iterations is not None:
        kw["iterations"] = args.iterations
    if args.restarts is not None:
        if args.attack != "gradient_matching":
            raise ValueError("--restarts applies to --attack gradient_matching only")
        kw["restarts"] = args.restarts
    return TrialStudy(attack=args.attack, attack_kwargs=kw,
                      victim=VictimConfig(scenario=args.scenario, epochs=args.epochs, lr=args.lr),
                      defenses=defenses, trials=args.trials, budget=args.budget, epsilon=args.epsilon / 255,
                      seed=args.seed, pretrain_epochs=args.pretrain_epochs)


def _data(args):
    from ..config import DataConfig
    from ..data import load_data

    if args.dataset == "mnist":
        return load_data(DataConfig(name="mnist", split="pooled", root=args.data_root))
    return load_data(DataConfig(name="digits", split="pooled"))


def cmd_craft(args) -> int:
    from tqdm.auto import tqdm

    from ..data.poison import save_poison
    from .setup import make_setups, save_setups
    from .study import make_attack
    from .victim import pretrain

    study = _study(args, [{"name": "none"}])
    data = _data(args)
    out = Path(args.out)
    model = pretrain(data, epochs=study.pretrain_epochs, seed=study.pretrain_seed, lr=study.pretrain_lr)
    setups = make_setups(data, study.trials, budget=study.budget, epsilon=study.epsilon, seed=study.seed)
    save_setups(setups, out / "setups.json", extra={"dataset": data.name, "study": study.to_dict()})
    (out / "study.json").write_text(json.dumps(study.to_dict(), indent=1) + "\n")
    for s in tqdm(setups, desc=f"crafting ({study.attack})", disable=args.no_progress):
        a = make_attack(study.attack, **study.attack_kwargs)
        p = a.craft(model, s, data)
        save_poison(p, out / "poisons" / f"trial_{s.trial:03d}.pt")
        print(f"trial {s.trial}: target {s.target_index} (class {s.target_class}) -> {s.poison_class}, "
              f"{s.num_poisons} poisons, {a.seconds:.1f} s")
    return 0


def cmd_evaluate(args) -> int:
    from tqdm.auto import tqdm

    from .study import run_trials, table1, table2

    defenses = [{"name": "none"}] + [parse_defense(d) for d in (args.defense or [])]
    study = _study(args, defenses)
    data = _data(args)
    bar = tqdm(total=study.trials * len(defenses), desc="victims", disable=args.no_progress)

    def cb(ev):
        if ev.record is not None:
            bar.update(1)
            bar.set_postfix(trial=ev.trial, defense=ev.defense, success=ev.record["success"])

    t0 = time.perf_counter()
    df = run_trials(data, study, args.out, callback=cb)
    bar.close()
    t1, t2 = table1(df), table2(df)
    out = Path(args.out)
    t1.to_csv(out / "table1.csv")
    t2.to_csv(out / "table2.csv")
    flat = t1.copy()
    flat.columns = [" ".join(c) for c in flat.columns]
    flat.index = [" / ".join(i) for i in flat.index]
    print(flat.to_markdown())
    print()
    print(t2.reset_index().to_markdown(index=False))
    print(f"\n{len(df)} victim runs, wall time {time.perf_counter() - t0:.0f} s; records in {out / 'trials.jsonl'}")
    return 0


def add_commands(subparsers) -> None:
    """Add ``targeted craft`` and ``targeted evaluate`` to the ``workbench`` CLI's subparsers."""
    t = subparsers.add_parser("targeted",
                              help="targeted clean-label poisoning (gradient matching, FC, BP) and defenses")
    ts = t.add_subparsers(dest="targeted_command", required=True)
    c = ts.add_parser("craft", help="pretrain, draw setups and craft one poison per setup")
    _common(c)
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(fn=cmd_craft)
    e = ts.add_parser("evaluate", help="run/resume the trials (undefended and with --defense) and print Tables 1-2")
    _common(e)
    e.add_argument("--defense", action="append", metavar="SPEC",
                   help="e.g. epic:0.2:1:1 (budget:period:warmup), drop_highest_loss:0.1; repeatable")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(fn=cmd_evaluate)
