"""The §4.2.1 fairness protocol [Murphy 2025, §4.2.1] at a tiny size (digits, MLP, one epoch)."""
from __future__ import annotations

import json

import pytest

from workbench.config import RunConfig
from workbench.poisoning import PoisonConfig
from workbench.poisoning.fairness import TUNED, FairnessSettings, run_fairness, sample_lr_momentum
from workbench.runs import load_run


def _base(root) -> RunConfig:
    return RunConfig().with_overrides({
        "root": str(root), "data.name": "digits", "data.split": "pooled", "data.max_train": 192,
        "model.name": "mlp", "optim.name": "sgd", "optim.lr": 0.5, "optim.momentum": 0.0, "optim.rho": 0.05,
        "train.epochs": 1, "train.batch_size": 64, "train.device": "cpu", "train.num_threads": 1})


def test_sampler_ranges_and_continuation():
    d = sample_lr_momentum(200, (1e-4, 0.1), (0.01, 0.99), seed=3)
    lrs = [x["lr"] for x in d]
    assert min(lrs) >= 1e-4 and max(lrs) <= 0.1 and min(lrs) < 1e-3 < max(lrs)   # log-uniform spans decades
    assert all(0.01 <= x["momentum"] <= 0.99 for x in d)
    assert sample_lr_momentum(3, (1e-4, 0.1), (0.01, 0.99), seed=3, skip=5) == d[5:8]   # step 3 continues step 1
    with pytest.raises(ValueError, match="budget"):
        FairnessSettings(budget=0)


def test_three_steps_under_a_fixed_budget(tmp_path, capsys):
    s = FairnessSettings(initial_trials=2, budget=2, seeds=(0, 1),
                         poison_grid={"lr": [0.01, 0.1], "iterations": [1, 2]})
    res = run_fairness(_base(tmp_path), s, poison_cfg=PoisonConfig(iterations=1), root=tmp_path / "f")
    # step 1: 2 trials; step 3: B = 2 more, different draws; the budgets are what was asked
    assert len(res.step1) == 2 and len(res.step3) == 2 and len(res.step2) == 2
    assert set(res.step1["lr"]).isdisjoint(res.step3["lr"])
    both = [*res.step1.to_dict("records"), *res.step3.to_dict("records")]
    best = max(both, key=lambda r: r["best_val_acc"])
    assert res.chosen["step3"] == {"lr": best["lr"], "momentum": best["momentum"]}
    b1 = max(res.step1.to_dict("records"), key=lambda r: r["best_val_acc"])
    assert res.chosen["step1"] == {"lr": b1["lr"], "momentum": b1["momentum"]}
    # step 2 ran at step 1's optimizer and picked its best poison run
    for _, r in res.step2.iterrows():
        cfg = load_run(r["poison_run"]).config
        assert (cfg.optim.lr, cfg.optim.momentum) == (b1["lr"], b1["momentum"])
    top = res.step2.loc[res.step2["poison_best_val_acc"].idxmax()]
    assert res.chosen["poison"] == {"lr": top["lr"], "iterations": int(top["iterations"])}
    # step 4: the poison/SAM side uses step 1's optimizer, the tuned baseline step 3's
    t = res.trials
    for _, r in t[t["variant"] == TUNED].iterrows():
        cfg = load_run(r["run_path"]).config
        assert (cfg.optim.lr, cfg.optim.momentum) == (res.chosen["step3"]["lr"], res.chosen["step3"]["momentum"])
    for _, r in t[t["key"] == "sgd_poison"].iterrows():
        cfg = load_run(r["run_path"]).config
        assert (cfg.optim.lr, cfg.optim.momentum) == (b1["lr"], b1["momentum"])
    assert list(res.table["variant"])[0] == TUNED and (res.table["test_acc_n"] == 2).all()
    saved = json.loads((tmp_path / "f" / "fairness.json").read_text())
    assert saved["chosen"] == res.chosen and len(saved["table"]) == len(res.table)
    # the outcome for the claims ledger: numbers from the per-seed trials
    from workbench.poisoning.fairness import fairness_result

    rep = fairness_result(res, data="digits", model="mlp", test_count=359)
    acc = res.trials[res.trials.status == "finished"].pivot_table(index="seed", columns="variant", values="test_acc")
    assert rep.metrics["diff_poison"] == pytest.approx(float((acc["SGD on S′"] - acc[TUNED]).mean()))
    assert rep.metrics["seeds"] == 2 and rep.verdict in ("reproduced", "not reproduced")
    assert (rep.verdict == "reproduced") == (rep.metrics["diff_poison_lo"] > 0) and "95% CI" in rep.verdict_reason
    # resume: nothing is trained again
    before = sorted(p.name for p in (tmp_path / "f" / "runs").iterdir())
    again = run_fairness(_base(tmp_path), s, poison_cfg=PoisonConfig(iterations=1), root=tmp_path / "f")
    assert again.chosen == res.chosen and sorted(p.name for p in (tmp_path / "f" / "runs").iterdir()) == before
    with pytest.raises(ValueError, match="other settings"):
        run_fairness(_base(tmp_path), FairnessSettings(initial_trials=3, budget=2, seeds=(0,)),
                     root=tmp_path / "f")
    # the CLI runs the same study (here: resumes it) and prints the choices and the table
    from workbench.cli import main

    cfg = tmp_path / "base.yaml"
    _base(tmp_path).save(cfg)
    assert main(["poison-fairness", str(cfg), "--initial", "2", "--budget", "2", "--seeds", "0", "1",
                 "--poison", "iterations=1", "--grid", "lr=0.01,0.1", "iterations=1,2",
                 "--out", str(tmp_path / "f")]) == 0
    out = capsys.readouterr().out
    assert f"lr={res.chosen['step3']['lr']:.3g}" in out and f"| {TUNED} |" in out and "| SGD on S′ |" in out
    assert sorted(p.name for p in (tmp_path / "f" / "runs").iterdir()) == before


def test_cli_prints_a_line_per_finished_run(tmp_path, capsys):
    from workbench.cli import main

    cfg = tmp_path / "base.yaml"
    _base(tmp_path).save(cfg)
    assert main(["poison-fairness", str(cfg), "--initial", "1", "--budget", "1", "--seeds", "0",
                 "--poison", "iterations=1", "--grid", "lr=0.01", "--out", str(tmp_path / "f")]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[run ")]
    # step 1 (1), step 2 (SAM crafting + SGD on its poison), step 3 (1), step 4 (craft, poison, noise, baseline)
    assert len(lines) >= 7 and lines[0].startswith("[run 1] step1-0: finished, val_acc ")
    assert all(": finished" in ln and ln.endswith(" s)") for ln in lines)
