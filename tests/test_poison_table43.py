"""The older shared-poison protocol of the comparison study (kept behind ``shared_poison=True``).

The Table 4.3 protocol (one crafting run per seed, SAM column = the crafting runs) is tested in
``test_poison_study.py``; this checks that the flag still crafts once and trains SAM separately.
"""
from __future__ import annotations

from workbench.config import RunConfig
from workbench.poisoning import PoisonConfig
from workbench.poisoning.study import compare_poison, open_comparison
from workbench.runs import load_run


def test_shared_poison_crafts_once_and_trains_sam_per_seed(tmp_path):
    base = RunConfig().with_overrides({
        "root": str(tmp_path), "data.name": "digits", "data.split": "pooled", "data.max_train": 256,
        "model.name": "mlp", "optim.name": "sgd", "optim.lr": 0.05, "optim.rho": 0.05, "train.epochs": 1,
        "train.batch_size": 64, "train.device": "cpu", "train.num_threads": 1})
    c = compare_poison(base, PoisonConfig(lr=0.01, iterations=1), seeds=(0, 1), root=tmp_path / "s",
                       craft_seed=5, shared_poison=True)
    assert c.status == "finished" and c.protocol == "shared" and list(c.crafts) == [5]
    runs = [p for p in (c.path / "runs").iterdir() if (p / "config.json").is_file()]
    assert len(runs) == 1 + 4 * 2
    t = c.trials.set_index(["key", "seed"])
    for seed in (0, 1):
        assert load_run(t.loc[("sgd_poison", seed), "run_path"]).config.data.poison == str(c.poison_path)
        sam = t.loc[("sam_clean", seed), "run_path"]
        assert sam != str(c.craft_run) and load_run(sam).config.optim.name == "sam"
    assert load_run(c.craft_run).config.train.seed == 5
    opened = open_comparison(c.path)
    assert opened.protocol == "shared" and opened.craft_seed == 5 and opened.poison_path == c.poison_path
