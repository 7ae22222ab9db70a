"""EPIC ([Yang 2022, Alg. 1]), its facility-location medoids, the loss/confidence baselines and the trainer hook."""
from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_unchanged, snapshot
from torch import nn

from workbench.data import IndexedTensorDataset
from workbench.defenses import (
    EPIC,
    DropHighestLoss,
    DropLowestConfidence,
    class_medoid_clusters,
    facility_location_similarity,
    greedy_facility_location,
    medoid_budget,
)
from workbench.presets import quickstart_config
from workbench.runs import load_checkpoint
from workbench.training import Trainer
from workbench.training.trainer import Stepper, load_data_cached


# ----------------------------------------------------------------- point sets
def _clustered_classes(seed: int = 0, C: int = 3, per_cluster: int = 15):
    """Per class: two tight clusters and ONE isolated point; returns (points [n, 2], labels, isolated positions)."""
    g = torch.Generator().manual_seed(seed)
    pts, ys, iso = [], [], []
    n = 0
    for c in range(C):
        for center in (torch.tensor([10.0 * c, 0.0]), torch.tensor([10.0 * c, 5.0])):
            pts.append(center + 0.1 * torch.randn(per_cluster, 2, generator=g))
            ys += [c] * per_cluster
            n += per_cluster
        pts.append(torch.tensor([[10.0 * c + 3.0, 2.5]]))  # far from both clusters of its class
        ys.append(c)
        iso.append(n)
        n += 1
    return torch.cat(pts).double(), torch.tensor(ys), torch.tensor(iso)


def test_medoids_of_hand_made_classes_drop_exactly_the_isolated_points():
    X, y, iso = _clustered_classes()
    budget = 0.09  # ceil(0.09 * 31) = 3 medoids per class: one per cluster + the isolated point
    dropped = []
    for c in range(3):
        pos = torch.nonzero(y == c).squeeze(1)
        cl = class_medoid_clusters(X[pos], budget)
        assert len(cl.medoids) == 3
        assert sorted(cl.gamma.tolist()) == [1, 15, 15]
        assert int(cl.gamma.sum()) == len(pos) and cl.cluster_size.shape == pos.shape
        dropped += pos[cl.isolated].tolist()
    assert sorted(dropped) == iso.tolist()


def test_larger_budget_keeps_cluster_medoids_and_still_drops_isolated_points():
    X, y, iso = _clustered_classes(seed=1)
    pos = torch.nonzero(y == 0).squeeze(1)
    cl = class_medoid_clusters(X[pos], 0.2)  # 7 medoids: extra ones inside the clusters
    assert int(iso[0]) in pos[cl.isolated].tolist()
    # every point is assigned to its nearest medoid
    D, _ = facility_location_similarity(X[pos])
    nearest = D[:, cl.medoids].min(dim=1).values
    assert torch.allclose(D[torch.arange(len(pos)), cl.medoids[cl.assignment]], nearest)


def _assert_is_greedy_path(S, order, tol=1e-9):
    """Every pick maximises the marginal gain F(e | S_t) of Eq. 5 (up to numerically tied candidates)."""
    cur = torch.zeros(S.shape[0], dtype=S.dtype)
    for t, j in enumerate(order.tolist()):
        gains = (S - cur[:, None]).clamp_min(0).sum(0)
        gains[order[:t]] = -float("inf")
        assert gains[j] >= gains.max() - tol, (t, j, float(gains[j]), float(gains.max()))
        cur = torch.maximum(cur, S[:, j])


@pytest.mark.parametrize("method", ["lazy", "incremental"])
def test_own_greedy_equals_naive_greedy_and_objective_is_monotone(method):
    X = torch.randn(200, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    _, S = facility_location_similarity(X)
    a = greedy_facility_location(None, 50, method=method, similarity=S)
    b = greedy_facility_location(None, 50, method="naive", similarity=S)
    assert len(set(a.tolist())) == 50 and torch.equal(a[:10], b[:10])
    _assert_is_greedy_path(S, a)  # later picks may differ from naive only between tied candidates (1e-15 apart)
    # F(S_t) increases with diminishing gains (submodularity of Eq. 5 along the greedy path)
    F_t = [float(S[:, a[:t]].max(dim=1).values.sum()) for t in range(1, 51)]
    gains = np.diff(F_t)
    assert (gains >= -1e-9).all() and (np.diff(gains) <= 1e-9).all()


@pytest.mark.parametrize("lib", ["submodlib", "apricot"])
def test_library_greedy_agrees_with_own(lib):
    if importlib.util.find_spec(lib) is None:
        pytest.skip(f"{lib} is not installed")
    X = torch.randn(400, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    _, S = facility_location_similarity(X)
    own = greedy_facility_location(None, 80, method="lazy", similarity=S)
    other = greedy_facility_location(None, 80, method=lib, similarity=S)
    assert torch.equal(own[:10], other[:10])
    _assert_is_greedy_path(S, other, tol=1e-6)  # the library's lazy greedy follows the same greedy path
    F_own, F_lib = (float(S[:, o].max(dim=1).values.sum()) for o in (own, other))
    assert F_lib == pytest.approx(F_own, rel=1e-9)


def test_exponential_kernel_is_the_authors_submodlib_kernel_and_both_kernels_drop_isolated_points():
    """``kernel="exponential"`` is exp(−d/dim), what submodlib builds from points (the EPIC code's call)."""
    X, y, iso = _clustered_classes(seed=2)
    D, S = facility_location_similarity(X, kernel="exponential")
    assert torch.allclose(S, torch.exp(-D / X.shape[1])) and float(S.min()) > 0
    assert torch.allclose(S.diagonal(), torch.ones(len(X), dtype=S.dtype))
    _, S5 = facility_location_similarity(X, kernel="exponential", length_scale=5.0)
    assert torch.allclose(S5, torch.exp(-D / 5.0))
    _, Sc = facility_location_similarity(X)
    assert torch.allclose(Sc, D.max() - D)                   # the paper's c0 − d, c0 = max d
    if importlib.util.find_spec("submodlib") is not None:
        from submodlib import FacilityLocationFunction

        Xn = X.numpy()
        f = FacilityLocationFunction(n=len(Xn), data=Xn, metric="euclidean", mode="dense")
        assert np.allclose(f.sijs, S.numpy(), atol=1e-6)     # submodlib computes its kernel in float32
        lib = [i for i, _ in f.maximize(budget=9, optimizer="LazyGreedy", stopIfZeroGain=False,
                                        stopIfNegativeGain=False, verbose=False, show_progress=False)]
        own = greedy_facility_location(X, 9, kernel="exponential")
        assert lib[:3] == own[:3].tolist()
    for kernel in ("shifted_distance", "exponential"):
        dropped = []
        for c in range(3):
            pos = torch.nonzero(y == c).squeeze(1)
            dropped += pos[class_medoid_clusters(X[pos], 0.09, kernel=kernel).isolated].tolist()
        assert sorted(dropped) == iso.tolist(), kernel
    # the kernels weigh distances differently, so the greedy medoids differ on spread-out points
    Z = torch.randn(300, 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64) ** 3
    a = greedy_facility_location(Z, 30, kernel="shifted_distance")
    b = greedy_facility_location(Z, 30, kernel="exponential", length_scale=0.5)
    assert set(a.tolist()) != set(b.tolist())
    with pytest.raises(ValueError, match="kernel"):
        facility_location_similarity(X, kernel="gaussian")
    with pytest.raises(ValueError, match="length_scale"):
        EPIC(kernel="exponential", length_scale=0.0)
    assert EPIC(kernel="exponential").config()["kernel"] == "exponential" and "kernel" not in EPIC().config()


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="budget"):
        EPIC(budget=0.0)
    with pytest.raises(ValueError, match="proxy"):
        EPIC(proxy="hessian")
    with pytest.raises(ValueError, match="period"):
        EPIC(period=0)
    with pytest.raises(ValueError, match="k="):
        greedy_facility_location(torch.randn(5, 2), 6)
    with pytest.raises(ValueError, match="method"):
        greedy_facility_location(torch.randn(5, 2), 2, method="magic")
    with pytest.raises(ValueError, match="budget"):
        DropHighestLoss(budget=1.5)
    assert medoid_budget(0.2, 31) == 7 and medoid_budget(0.2, 1) == 1 and medoid_budget(0.2, 0) == 0


# ------------------------------------------------------------ EPIC on a model
class _LogitsAreInputs(nn.Module):
    """A classifier whose logits are its inputs (identity last linear layer), plus a BatchNorm to check modes."""

    def __init__(self, C: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(C, affine=False, momentum=None)
        self.fc = nn.Linear(C, C)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(C))
            self.fc.bias.zero_()
        self.bn.running_mean.zero_()
        self.bn.running_var.fill_(1.0 - self.bn.eps)  # eval-mode BN is the identity

    def forward(self, x):
        return self.fc(self.bn(x))


def _logit_dataset(seed: int = 0, C: int = 3, per_cluster: int = 15):
    """Logits whose softmax − onehot proxies form two tight clusters + one isolated example per class."""
    g = torch.Generator().manual_seed(seed)
    xs, ys, iso = [], [], []
    n = 0
    for c in range(C):
        for margin in (6.0, 2.0):
            z = 0.05 * torch.randn(per_cluster, C, generator=g)
            z[:, c] += margin
            xs.append(z)
            ys += [c] * per_cluster
            n += per_cluster
        z = torch.zeros(1, C)
        z[0, (c + 1) % C] = 5.0  # confidently wrong: far from its class in gradient space
        xs.append(z)
        ys.append(c)
        iso.append(n)
        n += 1
    x = torch.cat(xs)
    index = torch.arange(n) * 7 + 100  # dataset indices differ from positions
    return IndexedTensorDataset(x, torch.tensor(ys), index), index[torch.tensor(iso)]


def test_epic_round_reports_dropped_examples_by_index_and_leaves_model_unchanged():
    ds, iso_index = _logit_dataset()
    model = _LogitsAreInputs(3).train()
    snap = snapshot(model)
    epic = EPIC(budget=0.09, period=2, warmup=1)
    epic.set_poison_indices(iso_index[:2])
    assert epic.maybe_select(model, ds, 0) is None  # warm-up
    kept = epic.maybe_select(model, ds, 1)
    assert_unchanged(model, snap, "EPIC round")
    assert model.training and model.bn.training
    assert set(kept.tolist()) == set(ds.index.tolist()) - set(iso_index.tolist())
    log = epic.log
    assert list(log.columns) == ["round", "epoch", "index", "label", "is_poison", "cluster_size", "score"]
    assert sorted(log["index"]) == sorted(iso_index.tolist())
    assert (log["cluster_size"] == 1).all() and (log["epoch"] == 1).all()
    assert log.set_index("index").loc[iso_index.tolist(), "is_poison"].tolist() == [True, True, False]
    r = epic.rounds[-1]
    assert (r["round"], r["epoch"], r["n_kept"], r["n_dropped"], r["n_poison_dropped"]) == (0, 1, 90, 3, 2)
    assert epic.maybe_select(model, ds, 1) is None  # same epoch again (e.g. after a resume): no second round
    assert epic.maybe_select(model, ds, 2) is None  # not a round epoch (period 2)
    kept2 = epic.maybe_select(model, ds, 3)  # second round selects among the kept examples only
    assert set(kept2.tolist()) <= set(kept.tolist())
    assert epic.clusters[-1]["index"].numel() == 90


def test_last_input_proxy_runs_and_state_round_trips():
    ds, iso_index = _logit_dataset(seed=2)
    model = _LogitsAreInputs(3)
    epic = EPIC(budget=0.09, period=1, warmup=0, proxy="last_input")
    kept = epic.maybe_select(model, ds, 0)  # identity last layer: last_input proxy == softmax proxy
    assert set(iso_index.tolist()).isdisjoint(kept.tolist())
    state = epic.state_dict()
    other = EPIC(budget=0.09, period=1, warmup=0, proxy="last_input")
    other.load_state_dict(state)
    pd.testing.assert_frame_equal(other.log, epic.log)
    assert torch.equal(other.kept_indices, epic.kept_indices) and other.rounds == epic.rounds
    with pytest.raises(ValueError, match="settings"):
        EPIC(budget=0.3, period=1, warmup=0, proxy="last_input").load_state_dict(state)


# -------------------------------------------------------------- baselines
def test_baselines_drop_highest_loss_and_lowest_confidence_per_class():
    g = torch.Generator().manual_seed(5)
    C, n = 4, 200
    x = 3 * torch.randn(n, C, generator=g)
    y = torch.randint(0, C, (n,), generator=g)
    ds = IndexedTensorDataset(x, y, torch.arange(n) + 1000)
    model = _LogitsAreInputs(C)
    loss = F.cross_entropy(x.double(), y, reduction="none")
    conf = torch.softmax(x.double(), 1).max(1).values
    for defense, score in ((DropHighestLoss(budget=0.1, period=1, warmup=0), loss),
                           (DropLowestConfidence(budget=0.1, period=1, warmup=0), -conf)):
        kept = defense.maybe_select(model, ds, 0)
        want = []
        for c in range(C):
            pos = torch.nonzero(y == c).squeeze(1)
            k = int(np.ceil(0.1 * len(pos)))
            want += (pos[torch.argsort(score[pos], descending=True)[:k]] + 1000).tolist()
        assert sorted(defense.log["index"]) == sorted(want), defense.name
        assert len(kept) == n - len(want)
    t = DropHighestLoss(threshold=2.0, period=1, warmup=0)
    t.maybe_select(model, ds, 0)
    assert sorted(t.log["index"]) == (torch.nonzero(loss > 2.0).squeeze(1) + 1000).tolist()
    t = DropLowestConfidence(threshold=0.5, period=1, warmup=0)
    t.maybe_select(model, ds, 0)
    assert sorted(t.log["index"]) == (torch.nonzero(conf < 0.5).squeeze(1) + 1000).tolist()


# ---------------------------------------------------------- trainer hook
class _Recorder(Stepper):
    """Plain SGD step that records the dataset indices of every batch fed to the model, per epoch."""

    name = "recorder"

    def __init__(self):
        self.seen: dict[int, list[int]] = {}

    def step(self, trainer, x, y, index, epoch):
        self.seen.setdefault(epoch, []).extend(index.tolist())
        return super().step(trainer, x, y, index, epoch)


def _poisoned_digits(cfg, n_flip: int = 30, seed: int = 0):
    """Digits with ``n_flip`` mislabeled training examples (the 'poisons'); returns (bundle, poison indices)."""
    b = load_data_cached(cfg.data)
    g = torch.Generator().manual_seed(seed)
    pos = torch.randperm(len(b.train), generator=g)[:n_flip]
    y = b.train.y.clone()
    y[pos] = (y[pos] + 1 + torch.randint(0, b.num_classes - 1, (n_flip,), generator=g)) % b.num_classes
    train = IndexedTensorDataset(b.train.x, y, b.train.index)
    return dataclasses.replace(b, train=train), b.train.index[pos]


def _cfg(root, epochs=4):
    return quickstart_config("sgd", epochs=epochs, root=str(root)).with_overrides(
        {"model.width": 0.5, "train.eval_every": 100})


def test_trainer_with_epic_never_feeds_dropped_examples_and_logs_rounds(run_root):
    cfg = _cfg(run_root)
    bundle, poison = _poisoned_digits(cfg)
    epic = EPIC(budget=0.3, period=1, warmup=1)
    epic.set_poison_indices(poison)
    rec = _Recorder()
    res = Trainer(cfg, data=bundle, defense=epic, stepper=rec).run()
    assert res.status == "finished"
    log = epic.log
    assert len(log) > 0 and [r["epoch"] for r in epic.rounds] == [1, 2, 3]
    all_idx = set(bundle.train.index.tolist())
    assert sorted(rec.seen[1]) == sorted(all_idx)  # warm-up epoch: all data
    for r in epic.rounds:
        dropped_so_far = set(log.loc[log["epoch"] <= r["epoch"], "index"])
        fed_after = set().union(*(rec.seen[e] for e in rec.seen if e > r["epoch"]))
        assert fed_after.isdisjoint(dropped_so_far)
        assert len(rec.seen[r["epoch"] + 1]) == r["n_kept"]  # each kept example exactly once per epoch
    assert set(rec.seen[4]) == all_idx - set(log["index"]) == set(epic.kept_indices.tolist())
    assert log["is_poison"].sum() == sum(r["n_poison_dropped"] for r in epic.rounds)
    # run folder: defense records and the dropped-index artifact
    lines = [json.loads(l) for l in (res.run_path / "metrics.jsonl").read_text().splitlines()]
    drec = [l for l in lines if l["kind"] == "defense"]
    assert [d["epoch"] for d in drec] == [1, 2, 3] and [d["n_dropped"] for d in drec] == \
        [r["n_dropped"] for r in epic.rounds]
    art = pd.read_csv(res.run_path / "artifacts" / "epic_dropped.csv")
    assert art["index"].tolist() == log["index"].tolist()
    # LR schedule stays on epoch boundaries: steps per epoch shrink
    steps = [l for l in lines if l["kind"] == "step"]
    assert steps[-1]["epoch"] == pytest.approx(4.0)
    # the CLI report rebuilds the defense from the checkpoint and writes its figures
    from workbench.cli import main as defense_cli
    from workbench.defenses import defense_from_state

    again = defense_from_state(load_checkpoint(res.run_path / "checkpoints" / "last.pt")["defense"])
    pd.testing.assert_frame_equal(again.log, log)
    assert defense_cli(["defense-report", str(res.run_path), "--out", str(run_root / "rep")]) == 0
    assert {p.name for p in (run_root / "rep").iterdir()} == {"cumulative_drops.html", "cluster_sizes.html",
                                                              "dropped.csv", "plotly.min.js"}


def test_resume_with_defense_is_exact(run_root):
    cfg = _cfg(run_root / "a")
    bundle, poison = _poisoned_digits(cfg, seed=1)

    def make():
        d = EPIC(budget=0.3, period=1, warmup=1)
        d.set_poison_indices(poison)
        return d

    full_def = make()
    full = Trainer(cfg, data=bundle, defense=full_def).run()
    holder = {}

    def stopper(ev):
        if getattr(ev, "step", 0) == 45 and type(ev).__name__ == "StepEnd":  # mid-epoch 3, after 2 rounds
            holder["t"].stop()

    part_def = make()
    t = Trainer(_cfg(run_root / "b"), data=bundle, defense=part_def, callbacks=[stopper], handle_sigint=False)
    holder["t"] = t
    part = t.run()
    assert part.status == "stopped"
    ck = load_checkpoint(part.run_path / "checkpoints" / "last.pt")
    assert ck["defense"]["name"] == "epic" and len(ck["defense"]["rounds"]) == 2
    with pytest.raises(ValueError, match="defense"):
        Trainer.from_run(part.run_path, data=bundle)
    rest_def = make()
    rest = Trainer.from_run(part.run_path, data=bundle, defense=rest_def, handle_sigint=False).run()
    assert rest.status == "finished"
    for a, b in zip(full.model.state_dict().values(), rest.model.state_dict().values()):
        assert torch.equal(a, b)
    pd.testing.assert_frame_equal(rest_def.log, full_def.log)
    assert [dict(r, seconds=0) for r in rest_def.rounds] == [dict(r, seconds=0) for r in full_def.rounds]


# ---------------------------------------------------------- views' data and figures
def _epic_two_rounds():
    ds, iso_index = _logit_dataset(seed=3)
    model = _LogitsAreInputs(3)
    epic = EPIC(budget=0.09, period=1, warmup=0)
    epic.set_poison_indices(torch.cat([iso_index[:2], ds.index[:3]]))  # 2 isolated + 3 clustered "poisons"
    epic.maybe_select(model, ds, 0)
    epic.maybe_select(model, ds, 1)
    return ds, model, epic, iso_index


def test_cluster_size_fractions_and_cumulative_drops():
    from workbench.defenses.analysis import cluster_size_fractions, cumulative_drops, drop_rates

    ds, model, epic, iso_index = _epic_two_rounds()
    cs = cluster_size_fractions(epic, epochs=[0])
    sums = cs.groupby("group")["fraction"].sum()
    assert sums.to_dict() == pytest.approx({"clean": 1.0, "poison": 1.0})
    pois = cs[(cs["group"] == "poison")].set_index("size_bin")["count"]
    assert pois["1"] == 2 and pois["9–16"] == 3  # isolated poisons in size-1 clusters, the others in clusters of 15
    cs_e = cluster_size_fractions(epic, epochs=[0], effective=iso_index[:2])
    assert set(cs_e["group"]) == {"clean", "effective poison", "ineffective poison"}
    with pytest.raises(ValueError, match="no EPIC round"):
        cluster_size_fractions(epic, epochs=[7])
    cd = cumulative_drops(epic, len(ds), effective=iso_index[:2],
                          metrics=[{"epoch": 0, "test_acc": 0.9}, {"epoch": 1, "test_acc": None}])
    assert cd["frac_poison"].iloc[0] == pytest.approx(2 / 5) and cd["frac_effective"].iloc[0] == 1.0
    assert cd["frac_ineffective"].iloc[0] == 0.0 and cd["frac_clean"].iloc[0] == pytest.approx(1 / 88)
    assert cd["test_error"].iloc[0] == pytest.approx(0.1) and np.isnan(cd["test_error"].iloc[1])
    dr = drop_rates({"EPIC": epic}, len(ds))
    assert dr["frac_all"].tolist()[:2] == [0.0, pytest.approx(3 / 93)]
    assert dr["frac_target"].tolist()[:2] == [0.0, pytest.approx(2 / 5)]


def test_gradient_difference_full_and_last_layer_agree_and_vanish_on_full_set():
    from workbench.defenses.analysis import kept_vs_random_gradient_difference

    ds, model, epic, _ = _epic_two_rounds()
    snap = snapshot(model)
    # the model's only parameters are its last linear layer: both gradient spaces coincide
    a = kept_vs_random_gradient_difference(model, ds, epic.kept_indices, n_random=3, space="last_layer")
    b = kept_vs_random_gradient_difference(model, ds, epic.kept_indices, n_random=3, space="full")
    assert_unchanged(model, snap, "gradient difference")
    np.testing.assert_allclose(a["grad_diff"], b["grad_diff"], rtol=1e-5, atol=1e-6)
    assert list(a["subset"]) == ["kept", "random", "random", "random"] and (a["size"] == len(epic.kept_indices)).all()
    # sum reduction: kept − full = −(sum of the dropped examples' gradients)
    x, y = ds.x.double(), ds.y
    G = torch.softmax(x, 1) - F.one_hot(y, 3).double()
    drop = ~torch.isin(ds.index, epic.kept_indices)
    want = (G[drop][:, :, None] * x[drop][:, None, :]).sum(0)
    want = torch.cat([want.reshape(-1), G[drop].sum(0)]).norm()
    assert a["grad_diff"].iloc[0] == pytest.approx(float(want), rel=1e-5)
    full = kept_vs_random_gradient_difference(model, ds, ds.index, n_random=2, reduction="mean")
    assert full["grad_diff"].abs().max() < 1e-6


def test_epic_figures_render_the_data():
    from workbench.defenses.analysis import cluster_size_fractions, cumulative_drops, drop_rates
    from workbench.viz.epic import (
        cluster_size_figure,
        cumulative_drops_figure,
        drop_rates_figure,
        gradient_difference_figure,
    )

    ds, model, epic, iso_index = _epic_two_rounds()
    fig = cluster_size_figure(cluster_size_fractions(epic))
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 4 and {t.name for t in bars} == {"clean", "poison"}
    assert "epoch 0" in fig.layout.annotations[0].text
    cd = cumulative_drops(epic, len(ds), metrics=[{"epoch": 0, "test_acc": 0.8}, {"epoch": 1, "test_acc": 0.85}])
    fig = cumulative_drops_figure(cd)
    assert [t.name for t in fig.data] == ["poisons", "clean", "test error"]
    assert list(fig.data[0].y) == pytest.approx(cd["frac_poison"].tolist())
    recs = [{"epoch": 1, "kept": 0.5, "random_mean": 0.8, "random_std": 0.1, "relative_kept": 0.1,
             "relative_random": 0.16}, {"epoch": 2, "kept": 0.4, "random_mean": 0.9, "random_std": 0.2,
                                        "relative_kept": 0.1, "relative_random": 0.2}]
    fig = gradient_difference_figure(recs)
    assert list(fig.data[-1].y) == [0.5, 0.4] and list(fig.data[0].y) == pytest.approx([0.9, 1.1, 0.7, 0.7])
    fig = drop_rates_figure(drop_rates({"EPIC": epic}, len(ds)))
    assert fig.data[1].name == "EPIC" and len(fig.data[1].x) == 3
    with pytest.raises(ValueError, match="missing"):
        drop_rates_figure(pd.DataFrame({"defense": ["a"]}))
