"""The paper-size MNIST 0-vs-8 preset of the bilevel study on ``mnist-10k`` [Carnerero-Cano 2021, Table 1]."""
from __future__ import annotations

import argparse
import json
import math

import pytest
import torch


def test_mnist10k_split_is_the_papers_test_set_512_171_and_1271_left_over():
    from workbench.bilevel.study import load_binary

    x, y, xt, yt, info = load_binary("mnist-10k", n_trainval=512 + 171, seed=0)
    # the 1,954 MNIST test images of 0 and 8 (Table 1), split 683 train+validation / 1,271 test
    assert (len(y), len(yt)) == (683, 1271) and info["n_test"] == 1271
    assert x.shape == (683, 784) and xt.shape == (1271, 784) and x.dtype == torch.float64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0            # [0, 1]^784 as the paper
    assert set(y.tolist()) == {0.0, 1.0} and set(yt.tolist()) == {0.0, 1.0}
    # 980 zeros and 974 eights in all; stratified: each part keeps the 50/50 balance within one image
    assert int((y == 0).sum() + (yt == 0).sum()) == 980 and int((y == 1).sum() + (yt == 1).sum()) == 974
    assert abs(float(y.mean()) - 974 / 1954) < 2 / 683
    # no test image is among the train/validation images
    pool = {tuple(r) for r in x.numpy().round(6)}
    assert not any(tuple(r) in pool for r in xt.numpy().round(6))


def test_preset_holds_the_papers_mnist_settings():
    from workbench.bilevel.mnist import preset_settings

    s = preset_settings("mnist-10k-0v8")
    assert (s.dataset, s.n_train, s.n_val, s.batch, s.n_batches, s.reps) == ("mnist-10k", 512, 171, 17, 5, 5)
    assert (s.steps_xp, s.steps_lambda, s.steps_mul, s.inner_steps) == (100, 50, 100, 150)       # Table 2
    assert (s.alpha, s.beta, s.eta) == (0.99, 0.8, 0.1)
    assert s.lam_range == (-8.0, pytest.approx(math.log(200.0))) and s.lam_init == pytest.approx(math.log(5.0))
    assert (s.eta_tr, s.batch_size, s.epochs) == (0.01, 64, 200)                                  # Table 3
    assert preset_settings("mnist-10k-0v8", reps=2).reps == 2
    with pytest.raises(ValueError, match="preset 'mnist' is unknown"):
        preset_settings("mnist")


def test_cli_runs_the_preset_at_a_tiny_size(tmp_path, capsys):
    from workbench.bilevel.cli import add_commands

    p = argparse.ArgumentParser()
    add_commands(p.add_subparsers(dest="command"))
    args = p.parse_args(["bilevel", "study", "--preset", "mnist-10k-0v8", "--reps", "1", "--out", str(tmp_path),
                         "--formats", "html", "--quiet", "--set", "n_batches=1", "steps_xp=2", "steps_mul=1",
                         "steps_lambda=1", "inner_steps=5", "epochs=1", 'strategies=["small","rmd"]'])
    assert args.fn(args) == 0
    meta = json.loads((tmp_path / "settings.json").read_text())
    assert meta["settings"]["dataset"] == "mnist-10k" and meta["settings"]["n_train"] == 512
    assert (meta["info"]["n_pool"], meta["info"]["n_test"]) == (683, 1271)
    recs = json.loads((tmp_path / "records.json").read_text())
    assert sorted({(r["strategy"], r["n_poison"]) for r in recs}) == [("rmd", 0), ("rmd", 17), ("small", 0),
                                                                      ("small", 17)]
    assert {r["fraction"] for r in recs} == {0.0, 17 / 512}
    out = capsys.readouterr().out
    assert "| λ small (fixed) |" in out and "3.3 %" in out
