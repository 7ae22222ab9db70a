"""Targeted clean-label poisoning: setups, gradient matching, feature collision, Bullseye Polytope, victims, studies.

A clean LeNet-5 on the bundled 8x8 digits is pretrained once per module (a second or two).
"""
from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import assert_unchanged, snapshot

from workbench.config import DataConfig
from workbench.data import load_data
from workbench.data.poison import apply_poison, load_poison, save_poison
from workbench.targeted import (
    GradientMatching,
    PixelBox,
    ThreatSetup,
    VictimConfig,
    alignment_loss,
    load_setups,
    make_setups,
    penultimate,
    pretrain,
    save_setups,
    target_gradient,
    train_victim,
)
from workbench.targeted.common import frozen
from workbench.targeted.effective import (
    CosineTracker,
    find_effective_poisons,
    gradient_pca_frame,
    poison_target_cosines,
    proxy_agreement,
    subset_poison,
)
from workbench.targeted.feature_collision import BullseyePolytope, FeatureCollision, feature_distances
from workbench.targeted.study import TrialStudy, defense_label, read_trials, run_trials, table1, table2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these tiny models gain nothing from two, and lose a lot on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(name="digits", split="pooled"))


@pytest.fixture(scope="module")
def base(data):
    torch.manual_seed(0)
    return pretrain(data, epochs=15, seed=0)


@pytest.fixture(scope="module")
def setup64(data):
    # trial 0 of the seeded draw: target 8 -> adversarial 5, 50 poisons (4 %), eps 64/255
    return make_setups(data, 1, budget=0.04, epsilon=64 / 255, seed=0)[0]


# ------------------------------------------------------------------ setups
def test_setups_are_seeded_clean_label_and_round_trip(data, tmp_path):
    a = make_setups(data, 5, budget=0.02, epsilon=8 / 255, seed=3)
    b = make_setups(data, 5, budget=0.02, epsilon=8 / 255, seed=3)
    assert [s.to_dict() for s in a] == [s.to_dict() for s in b]
    assert [s.to_dict() for s in a] != [s.to_dict() for s in make_setups(data, 5, budget=0.02, seed=4)]
    k = round(0.02 * len(data.train))
    for s in a:
        assert s.num_poisons == k and s.target_class != s.poison_class
        rows = s.poison_rows(data.train)
        assert (data.train.y[rows] == s.poison_class).all()          # clean label
        x_t, y_adv = s.target(data)
        assert x_t.shape == (1, 1, 8, 8) and y_adv == s.poison_class
        assert int(data.test.y[data.test.index == s.target_index]) == s.target_class
    p = save_setups(a, tmp_path / "setups.json", extra={"dataset": "digits"})
    doc = json.loads(p.read_text())
    assert doc["benchmark"][0].keys() == {"target class", "target index", "base class", "base indices"}
    assert [s.to_dict() for s in load_setups(p)] == [s.to_dict() for s in a]
    assert ThreatSetup.from_dict(dict(doc["benchmark"][0], budget=0.02, epsilon=8 / 255)).poison_indices \
        == a[0].poison_indices


def test_setup_validation(data):
    with pytest.raises(ValueError, match="adversarial label"):
        ThreatSetup(1, 5, 1, [3], 0.01, 8 / 255)
    with pytest.raises(ValueError, match="epsilon"):
        ThreatSetup(1, 5, 2, [3], 0.01, 8)
    s = make_setups(data, 1, seed=0)[0]
    wrong = ThreatSetup(s.target_class, s.target_index, s.poison_class,
                        [int(data.train.index[data.train.y != s.poison_class][0])], 0.01, 8 / 255)
    with pytest.raises(ValueError, match="clean-label"):
        wrong.poison_rows(data.train)
    with pytest.raises(ValueError, match="budget"):
        make_setups(data, 2, budget=0.5)


def test_pixel_box_projects_per_channel_in_pixel_space():
    box = PixelBox(0.1, mean=[0.5, 0.2], std=[0.25, 0.5])
    mean, std = torch.tensor([0.5, 0.2]).view(1, 2, 1, 1), torch.tensor([0.25, 0.5]).view(1, 2, 1, 1)
    x = (torch.rand(4, 2, 3, 3) - mean) / std
    d = box.project(torch.randn(4, 2, 3, 3) * 3, x)
    pix = box.pixel_delta(d)
    assert pix.abs().max() <= 0.1 + 1e-6
    assert box.to_pixels(x + d).min() >= -1e-6 and box.to_pixels(x + d).max() <= 1 + 1e-6
    # the bound is reached on some coordinates of each channel (not over-clipped in normalised units)
    assert all(float(pix[:, c].abs().max()) > 0.09 for c in range(2))
    assert box.check(d, x)["ok"]


# ------------------------------------------------------- gradient matching
def _cos(model, setup, data, delta):
    """cos(∇ℓ(x_t, y_adv), Σ∇ℓ(x_i + Δ_i, y_i)) computed afresh (an oracle independent of the attack's loop)."""
    rows = setup.poison_rows(data.train)
    x, y = data.train.x[rows], data.train.y[rows]
    x_t, y_adv = setup.target(data)
    with frozen(model) as params:
        gt = target_gradient(model, x_t, y_adv, params)
        loss = torch.nn.functional.cross_entropy(model(x + delta), y, reduction="sum")
        g = torch.autograd.grad(loss, params)
    return 1 - float(alignment_loss(list(g), gt))


def test_gradient_matching_raises_the_alignment_within_the_ball_and_box(data, base):
    s = make_setups(data, 1, budget=0.02, epsilon=32 / 255, seed=1)[0]
    snap = snapshot(base)
    events = []
    gm = GradientMatching(iterations=40, lr=0.01, restarts=2, seed=0)
    p = gm.craft(base, s, data, callback=events.append)
    assert_unchanged(base, snap, "gradient matching")
    assert p.index.tolist() == s.poison_indices and p.delta.shape == (s.num_poisons, 1, 8, 8)
    before, after = _cos(base, s, data, torch.zeros_like(p.delta)), _cos(base, s, data, p.delta)
    assert after > before + 0.2, (before, after)
    assert after == pytest.approx(1 - p.meta["final_loss"], abs=1e-4)
    assert p.meta["final_loss"] == min(p.meta["restart_losses"]) and len(p.meta["restart_losses"]) == 2
    box = PixelBox.for_bundle(data, s.epsilon)
    x = data.train.x[s.poison_rows(data.train)]
    chk = box.check(p.delta, x)
    assert chk["ok"], chk
    assert chk["max_linf_pixels"] > 0.9 * s.epsilon          # Δ actually moved to the boundary
    assert len(events) == 80 and events[-1].restart == 1 and events[-1].iteration == 40


def test_gradient_matching_with_differentiable_augmentation(data, base):
    s = make_setups(data, 1, budget=0.02, epsilon=32 / 255, seed=1)[0]
    gm = GradientMatching(iterations=30, lr=0.01, restarts=1, augment=True, padding=1, seed=0)
    p = gm.craft(base, s, data)
    losses = [h["loss"] for h in gm.history]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05        # the augmented objective decreases
    assert _cos(base, s, data, p.delta) > _cos(base, s, data, torch.zeros_like(p.delta))
    assert PixelBox.for_bundle(data, s.epsilon).check(p.delta, data.train.x[s.poison_rows(data.train)])["ok"]


def test_gradient_matching_stops_on_request(data, base, setup64):
    stop = threading.Event()
    gm = GradientMatching(iterations=500, restarts=3)

    def cb(p):
        if p.iteration == 3:
            stop.set()

    p = gm.craft(base, setup64, data, callback=cb, stop=stop)
    assert p.meta["stopped"] and gm.iterations_done == 3 and len(p.meta["restart_losses"]) == 1


def test_gradient_matching_rejects_bad_settings():
    for kw in ({"iterations": 0}, {"lr": -1.0}, {"restarts": 0}, {"batch_size": 0}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            GradientMatching(**kw)


# --------------------------------------------------------- feature space
def test_feature_collision_moves_poison_features_toward_the_target(data, base, setup64):
    s = setup64
    rows = s.poison_rows(data.train)
    x = data.train.x[rows]
    x_t, _ = s.target(data)
    snap = snapshot(base)
    fc = FeatureCollision(iterations=60, lr=0.01, beta=0.1, hard_bound=True)
    p = fc.craft(base, s, data)
    assert_unchanged(base, snap, "feature collision")
    d0 = feature_distances(base, x, x_t)
    d1 = feature_distances(base, apply_poison(data.train, p).x[rows], x_t)
    assert float(d1.mean()) < 0.8 * float(d0.mean())
    assert (d1 <= d0 + 1e-4).float().mean() > 0.9                 # (almost) every poison moved closer
    box = PixelBox.for_bundle(data, s.epsilon)
    assert box.check(p.delta, x)["ok"]
    # the default, as [Yang 2022, §4.1.2] runs FC: the soft beta-penalty only, no l_inf projection
    soft = FeatureCollision(iterations=60, lr=0.01, beta=0.1)
    assert not soft.hard_bound and soft.config()["hard_bound"] is False
    ps = soft.craft(base, s, data)
    chk = box.check(ps.delta, x)
    assert chk["box_excess"] < 1e-5 and chk["linf_excess"] > 0     # in the pixel box, beyond epsilon
    d2 = feature_distances(base, apply_poison(data.train, ps).x[rows], x_t)
    assert float(d2.mean()) < float(d1.mean())                     # the unbounded poisons collide better
    with pytest.raises(ValueError, match="hard_bound"):
        FeatureCollision(hard_bound="yes")


def test_bullseye_polytope_centres_the_poisons_on_the_target(data, base, setup64):
    s = setup64
    rows = s.poison_rows(data.train)
    x = data.train.x[rows]
    x_t, _ = s.target(data)
    bp = BullseyePolytope(iterations=100, lr=0.01)
    p = bp.craft(base, s, data)
    assert bp.final_loss < 0.3 * bp.initial_loss
    with torch.no_grad():
        centre = penultimate(base.eval(), apply_poison(data.train, p).x[rows]).mean(0)
        ft = penultimate(base, x_t)[0]
        centre0 = penultimate(base, x).mean(0)
    assert (centre - ft).norm() < 0.6 * (centre0 - ft).norm()
    assert PixelBox.for_bundle(data, s.epsilon).check(p.delta, x)["ok"]


# ------------------------------------------------------------------ victims
def test_undefended_victim_moves_the_target_to_the_adversarial_label(data, base, setup64):
    bp = BullseyePolytope(iterations=150, lr=0.01)
    p = bp.craft(base, setup64, data)
    cfg = VictimConfig(scenario="transfer", epochs=10, lr=0.01, seed=0)
    clean = train_victim(data, None, cfg, setup=setup64, pretrained=base)
    pois = train_victim(data, p, cfg, setup=setup64, pretrained=base)
    assert clean.adv_prob < 0.05 and not clean.success
    assert pois.adv_prob > clean.adv_prob + 0.4 and pois.success
    assert pois.test_acc > 0.9 and len(pois.history) == 10 and "target_adv_prob" in pois.history
    # transfer: the feature extractor is unchanged, the head is not
    sd0, sd1 = base.state_dict(), pois.model.state_dict()
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0 if k.startswith("features"))
    assert not torch.equal(sd0["classifier.4.weight"], sd1["classifier.4.weight"])


def test_gradient_matching_finetune_raises_the_adversarial_probability(data, base):
    s = make_setups(data, 3, budget=0.04, epsilon=64 / 255, seed=0)[1]  # target 5 -> 9
    p = GradientMatching(iterations=100, lr=0.01, restarts=1).craft(base, s, data)
    cfg = VictimConfig(scenario="finetune", epochs=10, lr=0.05, seed=1)
    clean = train_victim(data, None, cfg, setup=s, pretrained=base)
    pois = train_victim(data, p, cfg, setup=s, pretrained=base)
    assert pois.adv_prob > 5 * clean.adv_prob + 1e-3, (clean.adv_prob, pois.adv_prob)


class _DropPoisonsAt:
    """A stand-in defense with the agreed surface: drops the poisons at ``epoch``, records what it saw."""

    def __init__(self, epoch: int):
        self.epoch, self.seen, self.poisons = epoch, [], None
        self.log = pd.DataFrame(columns=["round", "epoch", "index", "label", "is_poison"])

    def set_poison_indices(self, idx):
        self.poisons = torch.as_tensor(idx)

    def maybe_select(self, model, train, epoch):
        self.seen.append(epoch)
        if epoch != self.epoch:
            return None
        keep = train.index[~torch.isin(train.index, self.poisons)]
        self.log = pd.DataFrame({"round": 0, "epoch": epoch, "index": self.poisons.tolist(), "label": 0,
                                 "is_poison": True})
        return keep


def test_victim_trains_only_on_what_the_defense_keeps(data, base, setup64):
    p = BullseyePolytope(iterations=60).craft(base, setup64, data)
    d = _DropPoisonsAt(epoch=0)
    res = train_victim(data, p, VictimConfig(scenario="transfer", epochs=4, lr=0.01), setup=setup64,
                       pretrained=base, defense=d)
    assert d.seen == [0, 1, 2, 3]
    assert set(res.kept.tolist()).isdisjoint(setup64.poison_indices)
    assert (res.history["kept"] == len(data.train) - setup64.num_poisons).all()
    assert res.adv_prob < 0.2            # the poisons were never trained on


def test_victim_config_validation():
    with pytest.raises(ValueError, match="scenario"):
        VictimConfig(scenario="bogus")
    with pytest.raises(ValueError, match="pretrained"):
        train_victim(load_data(DataConfig(name="digits", split="pooled")), None, VictimConfig(scenario="transfer"))


# ------------------------------------------------------------------ studies
def test_trials_study_tables_and_resume(data, base, tmp_path):
    st = TrialStudy(attack="bullseye_polytope", attack_kwargs={"iterations": 60}, trials=2,
                    victim=VictimConfig(scenario="transfer", epochs=3, lr=0.01),
                    defenses=[{"name": "none"}], pretrain_epochs=3)
    df = run_trials(data, st, tmp_path / "s", pretrained=base)
    assert len(df) == 2 and set(df["defense"]) == {"None"}
    assert {"success", "adv_prob", "clean_adv_prob", "test_acc", "train_seconds", "craft_seconds"} <= set(df.columns)
    assert (tmp_path / "s" / "setups.json").is_file() and len(list((tmp_path / "s" / "poisons").glob("*.pt"))) == 2
    lines = (tmp_path / "s" / "trials.jsonl").read_text().splitlines()
    again = run_trials(data, st, tmp_path / "s", pretrained=base)           # resumed: nothing retrained
    assert (tmp_path / "s" / "trials.jsonl").read_text().splitlines() == lines
    assert again["adv_prob"].tolist() == df["adv_prob"].tolist()
    t1, t2 = table1(df, formatted=False), table2(df, formatted=False)
    assert t1.loc[("Bullseye Polytope", "Transfer"), ("Undefended", "Att. succ. ↑")] == pytest.approx(
        df["success"].mean())
    assert list(t2.columns) == ["Attack succ. ↓", "Test acc. ↑", "Time", "Trials"] and t2["Trials"].iloc[0] == 2
    assert read_trials(tmp_path / "s").shape[0] == 2
    assert defense_label({"name": "epic", "budget": 0.1}) == "EPIC-0.1"


def _fake_trials():
    rows = []
    for t in range(4):
        rows.append({"trial": t, "attack": "gradient_matching", "scenario": "scratch", "defense": "None",
                     "success": t < 3, "test_acc": 0.9, "train_seconds": 60.0, "epochs": 40})
        rows.append({"trial": t, "attack": "gradient_matching", "scenario": "scratch", "defense": "EPIC-0.2",
                     "success": t < 1, "test_acc": 0.8, "train_seconds": 90.0, "epochs": 40})
    return pd.DataFrame(rows)


def test_tables_have_the_papers_layout():
    df = _fake_trials()
    t1 = table1(df)
    assert t1.index.tolist() == [("Gradient Matching", "From-scratch")]
    assert t1.loc[("Gradient Matching", "From-scratch"), ("Undefended", "Att. succ. ↑")] == "75.0%"
    assert t1.loc[("Gradient Matching", "From-scratch"), ("Defended (EPIC-0.2)", "Att. succ. ↓")] == "25.0%"
    t2 = table2(df)
    assert t2.loc[(40, "EPIC-0.2"), "Time"] == "00:01:30"
    assert t2.loc[(40, "None"), "Attack succ. ↓"] == "75.0% ± 25.0%"


# --------------------------------------------------------- effective poisons
def test_effective_poisons_by_retraining_and_the_proxy(data, base):
    s = make_setups(data, 1, budget=0.016, epsilon=64 / 255, seed=0)[0]   # 20 poisons, target 8 -> 5
    p = BullseyePolytope(iterations=150).craft(base, s, data)
    cfg = VictimConfig(scenario="transfer", epochs=5, lr=0.02, seed=0)
    rows = []
    r = find_effective_poisons(data, p, s, cfg, pretrained=base, max_retrains=80, callback=rows.append)
    assert r.full_success and r.effective and r.minimal, r.log
    # [Yang 2022, §3.2]: the effective poisons alone succeed, the other poisons alone do not
    assert r.effective_only_success is True and r.complement_success is False
    assert rows == r.log.to_dict("records")
    assert sorted(r.effective + r.ineffective) == sorted(s.poison_indices)
    assert r.retrains == len(r.log) and r.log["size"].iloc[0] == s.num_poisons
    sub = subset_poison(p, r.effective)
    assert sorted(sub.index.tolist()) == r.effective
    cos = poison_target_cosines(base, data, p, s, space="last")
    assert len(cos) == s.num_poisons and cos["cosine"].between(-1, 1).all()
    assert (cos["cosine"] > cos["clean_cosine"]).mean() > 0.8                 # crafting raised the alignment
    ag = proxy_agreement(cos, r.effective)
    assert ag["k"] == len(r.effective) and ag["n"] == s.num_poisons


def test_proxy_agreement_on_a_hand_made_ranking():
    cos = pd.DataFrame({"index": [1, 2, 3, 4, 5], "cosine": [0.9, 0.8, 0.1, 0.2, 0.0]})
    ag = proxy_agreement(cos, [1, 2])
    assert ag["auc"] == 1.0 and ag["precision_at_k"] == 1.0
    ag = proxy_agreement(cos, [3, 5])
    assert ag["auc"] < 0.2 and ag["precision_at_k"] == 0.0


def test_gradient_views(data, base, setup64):
    p = BullseyePolytope(iterations=40).craft(base, setup64, data)
    eff = setup64.poison_indices[:5]
    frame, ev = gradient_pca_frame(base, data, p, setup64, effective=eff, n_clean=30)
    counts = frame["group"].value_counts()
    assert counts["effective poison"] == 5 and counts["ineffective poison"] == setup64.num_poisons - 5
    assert counts["clean target class"] == 30 and counts["clean poison class"] == 30 and counts["target"] == 1
    assert len(ev) == 2 and ev[0] >= ev[1] > 0
    tr = CosineTracker(data, p, setup64, eff, space="last", every=2)
    res = train_victim(data, p, VictimConfig(scenario="transfer", epochs=4, lr=0.01), setup=setup64,
                       pretrained=base, on_epoch_end=tr)
    f = tr.frame()
    assert sorted(f["epoch"].unique()) == [1, 2, 4]
    assert set(f["series"]) == {"effective → target", "ineffective → target", "effective ↔ effective",
                                "ineffective ↔ ineffective"}
    assert f["mean"].between(-1, 1).all()
    from workbench.viz.targeted import (
        cosine_histogram_figure,
        cosine_over_epochs_figure,
        gradient_pca_figure,
        proxy_agreement_figure,
        trials_figure,
    )
    fig = gradient_pca_figure(frame, ev)
    assert sum(len(t.x) for t in fig.data) == len(frame)
    assert len(cosine_over_epochs_figure(f, warmup=1).data) == 4
    c = poison_target_cosines(res.model, data, p, setup64, space="last")
    h = cosine_histogram_figure({"poison": c["cosine"], "clean": c["clean_cosine"]})
    assert len(h.data) == 2 and len(h.data[0].x) == setup64.num_poisons
    assert len(proxy_agreement_figure(c, eff).data) == 2
    assert len(trials_figure(_fake_trials()).data) == 2


def test_poison_round_trips_through_the_file_format(data, base, setup64, tmp_path):
    p = BullseyePolytope(iterations=5).craft(base, setup64, data)
    q = load_poison(save_poison(p, tmp_path / "poison.pt"))
    assert torch.equal(p.delta, q.delta) and q.meta["kind"] == "bullseye_polytope"
    assert q.meta["setup"]["poison_indices"] == setup64.poison_indices


def test_cli_commands_parse():
    import argparse

    from workbench.targeted.cli import add_commands, parse_defense

    p = argparse.ArgumentParser()
    add_commands(p.add_subparsers(dest="command"))
    a = p.parse_args(["targeted", "evaluate", "out", "--defense", "epic:0.2:1:1", "--trials", "3"])
    assert a.trials == 3 and a.defense == ["epic:0.2:1:1"]
    assert parse_defense("epic:0.2:1:1") == {"name": "epic", "budget": 0.2, "period": 1, "warmup": 1}
    with pytest.raises(ValueError, match="defense"):
        parse_defense("nope")


def test_crafting_uses_batchnorm_running_statistics_and_leaves_them(data):
    """BatchNorm in eval mode while crafting: the poison does not depend on the mode the model was left in."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    with torch.no_grad():                      # non-trivial running statistics
        net.train()
        net(data.train.x[:256])
    s = make_setups(data, 1, budget=0.01, epsilon=16 / 255, seed=2)[0]
    net.train()
    snap = snapshot(net)
    p_train = GradientMatching(iterations=5, restarts=1).craft(net, s, data)
    assert_unchanged(net, snap, "crafting from train mode")
    net.eval()
    p_eval = GradientMatching(iterations=5, restarts=1).craft(net, s, data)
    assert torch.allclose(p_train.delta, p_eval.delta)
    for attack in (FeatureCollision(iterations=3), BullseyePolytope(iterations=3)):
        net.train()
        snap = snapshot(net)
        attack.craft(net, s, data)
        assert_unchanged(net, snap, attack.name)
