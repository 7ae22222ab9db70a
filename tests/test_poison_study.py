"""The poisoning studies (workbench.poisoning.study): four-way comparison and the Table 4.1 search, on digits."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from workbench.config import RunConfig
from workbench.data.poison import load_poison
from workbench.poisoning import PoisonConfig
from workbench.poisoning.study import (
    VARIANTS,
    PoisonStudyEvent,
    compare_poison,
    open_comparison,
    poison_search,
    read_search,
    table41_grid,
    variant_configs,
)
from workbench.runs import load_run
from workbench.viz.poison_study import (
    plot_craft_loss,
    plot_curves,
    plot_delta_norm,
    plot_drift,
    plot_eigenvalues,
    plot_images,
    plot_interpolation,
    plot_ratios,
    plot_sam_cosine,
)


def _base(root, epochs=2) -> RunConfig:
    return RunConfig().with_overrides({
        "root": str(root), "data.name": "digits", "data.split": "pooled", "model.name": "lenet5",
        "optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9, "optim.weight_decay": 1e-4, "optim.rho": 0.05,
        "train.epochs": epochs, "train.batch_size": 64, "train.device": "cpu", "train.num_threads": 1})


POISON = PoisonConfig(lr=0.01, iterations=2, drift_epochs=[1], drift_batches=1)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    events = []
    c = compare_poison(_base(root), POISON, seeds=(0, 1), root=root / "studies", callbacks=[events.append])
    return c, events, root


def test_compare_crafts_once_per_seed_and_trains_six_trials(comparison):
    c, events, root = comparison
    assert c.status == "finished" and c.skipped == 0 and c.protocol == "per_seed"
    runs = sorted(p for p in (c.path / "runs").iterdir() if (p / "config.json").is_file())
    assert len(runs) == 8  # per seed: 1 crafting run (= SAM on S) + 3 trained variants; 2 seeds
    # Table 4.3 protocol: one crafting run per seed, trained with that seed, each with its own poison
    assert sorted(c.crafts) == [0, 1]
    for seed, cr in c.crafts.items():
        craft = load_run(cr["craft_run"]).config
        assert craft.optim.name == "sam" and craft.optim.rho == 0.05 and craft.train.seed == seed
        assert cr["poison_path"] == cr["craft_run"] / "artifacts" / "poison.pt" and cr["noise_path"].is_file()
    assert not torch.equal(load_poison(c.crafts[0]["poison_path"]).delta, load_poison(c.crafts[1]["poison_path"]).delta)
    assert c.craft_run == c.crafts[0]["craft_run"] and c.poison_path == c.crafts[0]["poison_path"]
    t = c.trials
    assert len(t) == 8 and set(t["variant"]) == set(VARIANTS.values()) and (t["status"] == "finished").all()
    assert t["test_acc"].between(0, 1).all() and t["train_loss"].notna().all()
    # what each run trained with; SAM on S is the seed's crafting run itself, with its own accuracy
    for _, row in t.iterrows():
        seed = int(row["seed"])
        if row["key"] == "sam_clean":
            assert Path(row["run_path"]) == c.crafts[seed]["craft_run"]
            ep = load_run(row["run_path"]).epochs
            assert row["test_acc"] == pytest.approx(ep["test_acc"].iloc[-1])
            continue
        cfg = load_run(row["run_path"]).config
        assert cfg.train.seed == seed and cfg.optim.name == "sgd"
        want = {"sgd_poison": str(c.crafts[seed]["poison_path"]), "sgd_noise": str(c.crafts[seed]["noise_path"])}
        assert cfg.data.poison == want.get(row["key"])
    ends = [e for e in events if isinstance(e, PoisonStudyEvent) and e.kind == "run_ended"]
    assert len(ends) == 8 and ends[-1].done == ends[-1].total == 8
    assert any(type(e).__name__ == "CraftStep" for e in events)  # trainer events are forwarded


def test_table_has_four_variants_with_two_seeds(comparison):
    c, _, _ = comparison
    tab = c.table("test_acc")
    assert list(tab["variant"]) == list(VARIANTS.values())
    assert (tab["test_acc_n"] == 2).all()
    t = c.trials
    sub = t[t["key"] == "sgd_poison"]["test_acc"]
    assert tab.loc[1, "test_acc_mean"] == pytest.approx(sub.mean())
    assert tab.loc[1, "test_acc_se"] == pytest.approx(sub.std(ddof=1) / np.sqrt(2))
    md = c.to_markdown()
    assert md.count("\n") == 5 and "SGD on S′" in md and "±" in md
    assert "\\begin{tabular}" in c.to_latex(caption="x")
    with pytest.raises(ValueError, match="metric"):
        c.table("nope")


def test_noise_matches_poison_norms(comparison):
    c, _, _ = comparison
    p, n = load_poison(c.poison_path), load_poison(c.noise_path)
    assert torch.equal(p.index, n.index) and p.delta.shape == n.delta.shape
    pn = p.delta.reshape(len(p.index), -1).double().norm(dim=1)
    nn_ = n.delta.reshape(len(n.index), -1).double().norm(dim=1)
    assert torch.allclose(pn, nn_, rtol=1e-5, atol=1e-6)
    assert p.norms()["frobenius"] == pytest.approx(n.norms()["frobenius"], rel=1e-5)
    assert float(p.delta.abs().max()) > 0 and not torch.allclose(p.delta, n.delta)
    norms = c.norms()
    assert list(norms["what"]) == ["poison", "noise"]


def test_resume_skips_everything(comparison):
    c, _, root = comparison
    before = sorted((c.path / "runs").iterdir())
    lines = (c.path / "comparison.jsonl").read_text().count("\n")
    again = compare_poison(_base(root), POISON, seeds=(0, 1), root=root / "studies")
    assert again.skipped == 8 and again.status == "finished"
    assert sorted((c.path / "runs").iterdir()) == before
    assert (c.path / "comparison.jsonl").read_text().count("\n") == lines
    pd.testing.assert_frame_equal(again.trials.drop(columns="seconds"), c.trials.drop(columns="seconds"))
    opened = open_comparison(c.path)
    assert opened.seeds == [0, 1] and opened.status == "finished" and opened.poison_path == c.poison_path
    assert opened.protocol == "per_seed" and opened.crafts == c.crafts
    with pytest.raises(ValueError, match="different"):  # same folder, other poison settings
        compare_poison(_base(root), PoisonConfig(iterations=3), seeds=(0,), root=root / "studies", name=c.path.name)


def test_comparison_figures(comparison):
    c, _, _ = comparison
    fig = plot_curves(c, seed=0)
    assert len(fig.data) == 8  # 4 variants x (train, val) loss
    names = {t.name.split(" · ")[0] for t in fig.data}
    assert names == set(VARIANTS.values())
    assert len(plot_curves(c, seed=1, variants=("sgd_clean", "SGD on S′")).data) == 4
    recs = c.craft_records()
    assert len(recs) == 2 * 20 and all(len(r["losses"]) <= 2 for r in recs)  # 1258 examples / 64 = 20 batches
    assert len(plot_craft_loss(c).data[0].x) == sum(len(r["losses"]) for r in recs)
    assert len(plot_craft_loss(c, zoom=(3, 6)).layout.shapes) == 4
    assert list(plot_delta_norm(c).data[0].x) == [1, 2]
    assert [t.name for t in plot_drift(c).data][0] == "weights after epoch 1"
    cos = plot_sam_cosine(c)
    assert len(cos.data[0].x) == 40 and list(cos.data[1].x) == [1, 2]
    assert len(plot_sam_cosine(c, seed=1).data[0].x) == 40
    grid = plot_images(c, n=3)
    assert len(grid.data) == 9
    im = c.images(3)
    assert im["x"].shape == im["delta"].shape == (3, 1, 8, 8) and len(im["labels"]) == 3
    assert isinstance(plot_images(c, n=2, noise=True), go.Figure)


def test_eigenvalues_and_interpolation(comparison):
    c, _, _ = comparison
    eig = c.eigenvalues(k=3, count=64)
    assert list(eig["variant"]) == ["SGD on S", "SGD on S′"]
    assert (eig["lambda_1"] >= eig["lambda_2"]).all() and (eig["count"] == 64).all()
    fig = plot_eigenvalues(c, k=3, count=64)
    assert len(fig.data) == 2 and len(fig.data[0].y) == 3
    out = c.interpolation(count=64, params={"alphas": [-0.25, 1.25, 7]})
    a = np.asarray(out.result.alphas)
    assert len(a) == 7 and a[0] == pytest.approx(-0.25)
    # θ1 = baseline at α = 1, θ2 = poison at α = 0: the end points are the runs' own losses
    i1, i0 = int(np.argmin(np.abs(a - 1.0))), int(np.argmin(np.abs(a)))
    assert np.isfinite(out.result.loss["train"][i1]) and np.isfinite(out.result.loss["train"][i0])
    assert "SGD on S" in plot_interpolation(c, count=64, params={"alphas": [-0.25, 1.25, 7]}).layout.title.text


def test_variant_configs_and_validation(tmp_path):
    base = _base(tmp_path)
    cfgs = variant_configs(base, 3, poison_path="p.pt", noise_path="n.pt")
    assert list(cfgs) == list(VARIANTS)
    assert [c.optim.name for c in cfgs.values()] == ["sgd", "sgd", "sam", "sgd"]
    assert [c.data.poison for c in cfgs.values()] == [None, "p.pt", None, "n.pt"]
    assert all(c.train.seed == 3 and c.optim.lr == 0.05 for c in cfgs.values())
    assert list(variant_configs(base, 0)) == ["sgd_clean", "sam_clean"]
    with pytest.raises(ValueError, match="data.poison"):
        compare_poison(base.with_overrides({"data.poison": "x.pt"}), POISON, root=tmp_path)
    with pytest.raises(ValueError, match="seeds"):
        compare_poison(base, POISON, seeds=(1, 1), root=tmp_path)


def test_stop_then_resume_from_checkpoint(tmp_path):
    base = _base(tmp_path, epochs=2)
    stop = threading.Event()

    def stopper(ev):  # stop during the first trial, after its first epoch
        if type(ev).__name__ == "EpochEnd" and ev.epoch == 1 and stopper.started:
            stop.set()
        if isinstance(ev, PoisonStudyEvent) and ev.kind == "run_started" and ev.record.get("kind") == "trial":
            stopper.started = True
    stopper.started = False
    c = compare_poison(base, POISON, seeds=(0,), root=tmp_path / "s", callbacks=[stopper], stop=stop)
    assert c.status == "stopped"
    stopped = c.trials[c.trials["status"] == "stopped"]
    # SAM on S is the finished crafting run; SGD on S stopped; the poison and noise runs pending
    assert len(stopped) == 1 and (c.trials["status"] == "pending").sum() == 2
    path = stopped.iloc[0]["run_path"]
    again = compare_poison(base, POISON, seeds=(0,), root=tmp_path / "s")
    assert again.status == "finished" and again.skipped == 1  # the crafting run
    row = again.trials[again.trials["key"] == stopped.iloc[0]["key"]].iloc[0]
    assert row["run_path"] == path and row["epochs_done"] == 2  # resumed in the same folder
    assert load_run(path).status["attempt"] == 2


def test_poison_search_two_combinations(tmp_path):
    base = _base(tmp_path, epochs=1)
    grid = {"lr": [0.01, 0.1]}
    df = poison_search(base, grid, poison_cfg=POISON, root=tmp_path / "s")
    assert len(df) == 2 and list(df["lr"]) == [0.01, 0.1] and (df["status"] == "finished").all()
    assert np.allclose(df["ratio"], df["poison_val_acc"] / df["sam_val_acc"])
    assert np.allclose(df["best_ratio"], df["poison_best_val_acc"] / df["sam_best_val_acc"])
    for _, r in df.iterrows():
        craft = load_run(r["craft_run"])
        assert craft.config.optim.name == "sam"
        assert json.loads(Path(r["poison_path"]).with_suffix(".json").read_text())["poison_config"]["lr"] == r["lr"]
        assert load_run(r["poison_run"]).config.data.poison == r["poison_path"]
        assert r["sam_val_acc"] == pytest.approx(craft.epochs["val_acc"].iloc[-1])
    n_runs = len(list((Path(df.attrs["path"]) / "runs").iterdir()))
    assert n_runs == 4
    again = poison_search(base, grid, poison_cfg=POISON, root=tmp_path / "s")  # resume: nothing new
    assert len(list((Path(df.attrs["path"]) / "runs").iterdir())) == 4
    pd.testing.assert_frame_equal(again, df)
    assert len(read_search(df.attrs["path"])) == 2
    fig = plot_ratios(df, "lr", barmode="group")
    assert len(fig.data) == 2 and np.allclose(sorted(np.concatenate([t.x for t in fig.data])), sorted(df["ratio"]))
    assert len(plot_ratios(df.iloc[:0], "lr").data) == 0
    with pytest.raises(ValueError, match="param"):
        plot_ratios(df, "iterations")
    with pytest.raises(ValueError, match="grid key"):
        poison_search(base, {"learning_rate": [0.1]}, root=tmp_path / "s")


def test_table41_grid():
    g = table41_grid(30)
    assert g == {"lr": [0.01, 0.1], "epsilon": [0.0, 0.1], "iterations": [5, 10], "start_epoch": [1, 10]}
    assert table41_grid(2)["start_epoch"] == [1]


def test_study_module_imports_no_ui_or_plotting():
    import subprocess
    import sys

    code = ("import sys, workbench.poisoning.study; "
            "bad=[m for m in sys.modules if m.split('.')[0] in ('ipywidgets','plotly','IPython')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
