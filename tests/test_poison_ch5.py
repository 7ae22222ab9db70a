"""The Ch. 5 study of sharpness-aware poisoning: it runs, resumes, and its summary is read from the runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.data.poison import load_poison
from workbench.poisoning.ch5 import ch5_configs, paired_interval, run_ch5, save_ch5, summarize_ch5
from workbench.poisoning.study import PoisonStudyEvent
from workbench.reproduce.store import load_result

TINY = dict(data="digits", epochs=2, max_train=192, seeds=(0, 1))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("ch5")
    cmp = run_ch5(root, handle_sigint=False, **TINY)
    res = summarize_ch5(cmp, k=3, count=48)
    return root, cmp, {r.name: r for r in res}


def test_configs_are_the_reports():
    base, poison = ch5_configs(root="r")
    assert (base.optim.name, base.optim.lr, base.optim.momentum, base.optim.weight_decay) == ("sgd", 0.001, 0.9, 1e-4)
    assert (base.train.batch_size, base.train.epochs, base.optim.rho, base.model.name) == (64, 30, 0.05, "lenet5")
    assert (base.data.name, base.data.split, base.data.poison_from_epoch) == ("mnist-10k", "pooled", 1)
    assert (poison.lr, poison.optimizer, poison.iterations, poison.start_epoch, poison.epsilon) == \
        (0.01, "adam", 5, 1, 0.0)
    with pytest.raises(ValueError, match="lr="):
        ch5_configs(lr=0)


def test_runs_and_resumes_without_training(study):
    root, cmp, _ = study
    assert cmp.status == "finished" and cmp.protocol == "per_seed"
    assert set(cmp.crafts) == {0, 1}
    started = []
    again = run_ch5(root, handle_sigint=False, callbacks=[
        lambda ev: started.append(ev) if isinstance(ev, PoisonStudyEvent) and ev.kind == "run_started" else None],
        **TINY)
    assert started == [] and again.skipped == 8
    assert again.trials["test_acc"].tolist() == cmp.trials["test_acc"].tolist()


def test_summary_numbers_come_from_the_runs(study):
    _, cmp, res = study
    losses, crafting, sharp = res["ch5-losses"], res["ch5-crafting"], res["ch5-sharpness"]
    t = cmp.trials

    def acc(key):
        return t[t.key == key].sort_values("seed")["test_acc"].to_numpy(dtype=float)

    d = acc("sgd_poison") - acc("sgd_clean")
    assert losses.metrics["diff_acc_poison_clean"] == pytest.approx(d.mean())
    lo, hi = losses.metrics["diff_acc_poison_clean_lo"], losses.metrics["diff_acc_poison_clean_hi"]
    assert lo < d.mean() < hi or d[0] == d[1]
    assert losses.metrics["test_acc_sam"] == pytest.approx(acc("sam_clean").mean())
    # ||Delta||_F: the saved poisons' own norms (one per seed)
    frob = [load_poison(cmp.crafts[s]["poison_path"]).norms()["frobenius"] for s in (0, 1)]
    assert crafting.metrics["frob_saved"] == pytest.approx(np.mean(frob))
    assert crafting.metrics["frob_final"] == pytest.approx(np.mean(frob), rel=1e-4)   # the last probe = the file
    per = crafting.tables["per_seed"]
    assert per["crafted_batches"].tolist() == [2 * 3, 2 * 3]   # 192 images / batch 64, 2 epochs
    eig = sharp.tables["eigenvalues"]
    assert set(eig.split) == {"train", "test"} and len(eig) == 2 * 2 * 2
    ev = cmp.eigenvalues(seed=1, k=3, count=48, split="test")   # saved in the run folders: read back
    row = eig[(eig.seed == 1) & (eig.split == "test") & (eig.variant == "sgd_poison")].iloc[0]
    assert row["lambda_1"] == pytest.approx(float(ev[ev.variant == "SGD on S′"]["lambda_1"].iloc[0]))
    for r in res.values():
        assert r.verdict in ("partial", "not reproduced")   # a reduced scale is never "reproduced"
        assert "192 train images" in r.verdict_reason


def test_saved_results_load(study, tmp_path):
    _, _, res = study
    paths = save_ch5(list(res.values()), tmp_path, command="test")
    doc = load_result(paths[0])
    assert doc["name"] == "ch5-losses" and doc["scale"].startswith("digits (192 train), LeNet-5, 2 seeds")
    assert json.loads(paths[1].read_text())["tables"]["per_seed"][0]["seed"] == 0


def test_paired_interval():
    m, lo, hi = paired_interval([1.0, 2.0, 3.0], [0.0, 0.5, 1.0])
    assert m == pytest.approx(1.5) and lo < 1.5 < hi
    assert np.isnan(paired_interval([1.0], [0.0])[1])


def test_cli_resumes_and_stores(study, tmp_path, capsys):
    from workbench.cli import main

    root, _, _ = study
    rc = main(["poison-ch5", "--out", str(root), "--data", "digits", "--epochs", "2", "--max-train", "192",
               "--seeds", "0", "1", "--hessian-seeds", "0", "--count", "48", "--results", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and out.count("already finished") == 8
    assert sorted(p.name for p in (tmp_path / "murphy2025").iterdir()) == \
        ["ch5-crafting.json", "ch5-losses.json", "ch5-sharpness.json"]
    assert main(["poison-ch5", "--count", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --count 0 is invalid: give a positive integer"
