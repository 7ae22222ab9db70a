"""Tests of sharpness-aware data poisoning (workbench.poisoning, workbench.data.poison).

Source: [Murphy 2025, Ch. 3] (Eq. 3.6 and the two pseudocode blocks of §3.2)
and Ch. 6 (§6.1 ensembles, §6.2 augmentation, Eq. 6.1).

The crafting step itself is checked on tiny smooth models (float64, finite differences);
the run-level behaviour with 1-2 epoch crafting runs of LeNet-5 on the 8x8 digits
(640 examples: 10 batches of 64 per epoch). Those runs use rho = 0.5 so that g′ differs clearly from
the plain gradient (with rho = 0.05 at initialisation 𝓑 ≈ 0.01 and its decrease is
within the noise of the rugged ReLU/max-pool objective).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench.data import IndexedTensorDataset, load_data
from workbench.data.poison import Poison, apply_poison, load_poison, save_poison
from workbench.optim import build_optimizer, sam_step
from workbench.poisoning import sharpness_aware as sa
from workbench.poisoning.sharpness_aware import (
    POISON_FILE,
    PoisonConfig,
    SharpnessAwarePoisoner,
    _Augment,
    cosine_loss,
    craft_poison,
    matched_noise,
    project,
)
from workbench.presets import quickstart_config
from workbench.runs import load_checkpoint
from workbench.training import Trainer
from workbench.training.events import StepEnd

ITERS = 4  # inner iterations of the digits crafting runs
RHO = 0.5
MAX_TRAIN = 640  # digits training examples used by the crafting runs
SPE = MAX_TRAIN // 64  # steps per epoch


# ------------------------------------------------------------------ helpers
class Tiny(nn.Module):
    """A smooth conv net (tanh, no pooling) so that 𝓑(Δ) is differentiable everywhere."""

    def __init__(self, bn: bool = False, c: int = 3, side: int = 6, classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c) if bn else nn.Identity()
        self.fc = nn.Linear(c * side * side, classes)

    def forward(self, x):
        return self.fc(torch.tanh(self.bn(self.conv(x))).flatten(1))


def tiny_problem(seed: int = 0, n: int = 8, bn: bool = False, dtype=torch.float64):
    """A tiny model, a batch and a hand-made reference gradient g′ (the gradient on another batch)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Tiny(bn=bn).to(dtype).train()
    x = torch.randn(n, 1, 6, 6, generator=g, dtype=dtype)
    y = torch.randint(0, 4, (n,), generator=g)
    params = [p for p in model.parameters()]
    x_ref = torch.randn(n, 1, 6, 6, generator=g, dtype=dtype)
    y_ref = torch.randint(0, 4, (n,), generator=g)
    gp = [a.detach() for a in torch.autograd.grad(F.cross_entropy(model(x_ref), y_ref), params)]
    return model, params, gp, x, y


def objective(model, params, gp, x, y, d, mode: str = "global") -> float:
    """𝓑 = 1 − cos(g′, ∇θ L(B+Δ)) evaluated from scratch (fresh autograd, no create_graph)."""
    g = torch.autograd.grad(F.cross_entropy(model(x + d), y), params)
    if mode == "global":
        a = torch.cat([t.reshape(-1) for t in g])
        b = torch.cat([t.reshape(-1) for t in gp])
        return float(1 - F.cosine_similarity(a, b, dim=0))
    return float(1 - torch.stack([F.cosine_similarity(s.reshape(-1), t.reshape(-1), dim=0)
                                  for s, t in zip(g, gp)]).mean())


def craft(cfg: PoisonConfig, model, params, gp, x, y, d0, aug=None):
    p = SharpnessAwarePoisoner(cfg)
    return p._craft([(model, params, gp)], F.cross_entropy, x, y, d0, aug or (lambda t: t))


class FakeTrainer:
    """What SharpnessAwarePoisoner.setup/step read from a Trainer, around any model."""

    def __init__(self, model, n: int, shape, *, seed: int = 0, **ov):
        self.config = quickstart_config("sam", epochs=1, root="unused").with_overrides(
            {"optim.rho": RHO, "train.seed": seed, **ov})
        self.model = model
        self.optimizer = build_optimizer(self.config.optim, model.parameters())
        g = torch.Generator().manual_seed(1)
        self._splits = {"train": IndexedTensorDataset(torch.randn(n, *shape, generator=g),
                                                      torch.randint(0, 4, (n,), generator=g),
                                                      torch.arange(n) * 3 + 1)}
        self.splits = self._splits
        self.device = torch.device("cpu")
        self.attempt, self.step, self.run_id, self.artifact_dir = 1, 0, "fake", None
        self.events = []

    # the Trainer's public plugin API (the poisoner uses nothing else)
    loss_fn = staticmethod(F.cross_entropy)

    def log(self, record):
        pass

    def emit(self, ev):
        self.events.append(ev)


def digits_cfg(root, epochs: int = 1, **ov):
    return quickstart_config("sam", epochs=epochs, root=str(root)).with_overrides(
        {"optim.rho": RHO, "data.max_train": MAX_TRAIN, **ov})


def pcfg(**kw) -> PoisonConfig:
    base = dict(iterations=ITERS, lr=0.03, drift_epochs=[])
    base.update(kw)
    return PoisonConfig(**base)


class SpyPoisoner(SharpnessAwarePoisoner):
    """Records, per step, the batch's dataset indices and inputs and the Δ rows crafted for it."""

    def __init__(self, cfg=None):
        super().__init__(cfg)
        self.batches: list[dict] = []

    def step(self, trainer, x, y, index, epoch):
        self.batches.append({"index": index.detach().cpu().clone(), "x": x.detach().cpu().clone()})
        return super().step(trainer, x, y, index, epoch)

    def _craft(self, grads, loss_fn, x, y, d0, aug):
        new, losses, change = super()._craft(grads, loss_fn, x, y, d0, aug)
        self.batches[-1]["new"] = new.detach().cpu().clone()
        return new, losses, change


def records(run_path: Path, kind: str) -> list[dict]:
    with open(run_path / "metrics.jsonl") as f:
        return [r for r in (json.loads(line) for line in f if line.strip()) if r.get("kind") == kind]


def craft_loss_drop(run_path: Path) -> tuple[float, float, int]:
    """Mean over batches of (first − last) inner-loop loss, the fraction of batches that decreased, batches."""
    cr = records(run_path, "craft")
    drops = torch.tensor([c["losses"][0] - c["losses"][-1] for c in cr])
    return float(drops.mean()), float((drops > 0).float().mean()), len(cr)


# ---------------------------------------------------------- shared crafting runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """1-epoch crafting runs on digits shared by several tests (each ~1 s on 2 cores)."""
    root = tmp_path_factory.mktemp("poison_runs")
    out = {}
    spy = SpyPoisoner(pcfg(drift_epochs=[1], drift_batches=1))
    # craft_poison builds its own poisoner; drive the Trainer with the spy instead
    ta = Trainer(digits_cfg(root), stepper=spy, handle_sigint=False)
    out["a"] = (ta.run(), spy, ta)
    spy_b = SpyPoisoner(pcfg())
    tb = Trainer(digits_cfg(root, **{"train.seed": 1}), stepper=spy_b, handle_sigint=False)
    out["b"] = (tb.run(), spy_b, tb)
    out["plain"] = Trainer(digits_cfg(root), store=False, handle_sigint=False).run()
    return out


# ------------------------------------------------------- crafting objective
def test_craft_gradient_is_the_double_backward_of_eq_3_6():
    """One SGD step of _craft moves Δ by −lr ∇Δ𝓑, and ∇Δ𝓑 matches finite differences (a cut graph: 0)."""
    model, params, gp, x, y = tiny_problem()
    d0 = 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    lr = 1e-3
    d1, losses, _ = craft(PoisonConfig(lr=lr, optimizer="sgd", iterations=1, tol=0.0), model, params, gp, x, y, d0)
    grad = (d0 - d1) / lr
    assert grad.abs().max() > 1e-6, "no gradient reached Δ: the double-backward graph is cut"
    assert losses[0] == pytest.approx(objective(model, params, gp, x, y, d0), abs=1e-12)
    g = torch.Generator().manual_seed(7)
    for _ in range(3):
        v = torch.randn(x.shape, generator=g, dtype=x.dtype)
        h = 1e-5
        fd = (objective(model, params, gp, x, y, d0 + h * v) - objective(model, params, gp, x, y, d0 - h * v)) / (2 * h)
        assert float((grad * v).sum()) == pytest.approx(fd, rel=1e-4, abs=1e-9)


@pytest.mark.parametrize("mode", ["global", "per_tensor"])
def test_craft_decreases_objective_and_moves_delta(mode):
    model, params, gp, x, y = tiny_problem(seed=1)
    d0 = torch.zeros_like(x)
    before = objective(model, params, gp, x, y, d0, mode)
    d, losses, change = craft(PoisonConfig(lr=0.05, iterations=30, cosine=mode, tol=0.0),
                              model, params, gp, x, y, d0)
    after = objective(model, params, gp, x, y, d, mode)  # re-evaluated independently
    assert len(losses) == 30 and losses[0] == pytest.approx(before, abs=1e-12)
    assert after < 0.5 * before, (before, after)
    assert not torch.equal(d, d0) and d.abs().max() > 1e-3 and change > 0
    assert not d.requires_grad and torch.equal(d0, torch.zeros_like(x))  # input untouched


def test_cosine_loss_modes():
    g = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])]
    assert float(cosine_loss(g, [t.clone() * 3 for t in g])) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_loss(g, [-t for t in g])) == pytest.approx(2.0, abs=1e-6)
    ref = [torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0, 0.0])]  # tensor 1 aligned, tensor 2 orthogonal
    assert float(cosine_loss(g, ref, "per_tensor")) == pytest.approx(0.5, abs=1e-6)
    assert float(cosine_loss(g, ref, "global")) == pytest.approx(1 - 1 / (5 ** 0.5 * 5 ** 0.5), abs=1e-6)


def test_craft_stops_early_when_delta_stops_changing():
    model, params, gp, x, y = tiny_problem(seed=2)
    d, losses, change = craft(PoisonConfig(lr=1e-9, optimizer="sgd", iterations=10, tol=1e-6),
                              model, params, gp, x, y, torch.zeros_like(x))
    assert len(losses) == 1 and change < 1e-6


# -------------------------------------------------------------- projection
def _bounds(x, eps, norm, relative):
    n = x.shape[0]
    if not relative:
        return torch.full((n,), eps, dtype=x.dtype)
    xf = x.reshape(n, -1)
    return eps * (xf.abs().amax(1) if norm == "linf" else xf.norm(dim=1))


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("relative", [True, False])
def test_projection_holds_exactly(norm, relative):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 6, 6, generator=g)
    delta = torch.randn(16, 1, 6, 6, generator=g) * torch.linspace(0.01, 3.0, 16)[:, None, None, None]
    keep = delta.clone()
    eps = 0.2 if relative else 0.5
    out = project(delta, x, eps, norm, relative)
    assert torch.equal(delta, keep), "project must not modify its input"
    b = _bounds(x, eps, norm, relative)
    flat, dflat = out.reshape(16, -1), delta.reshape(16, -1)
    if norm == "linf":
        assert (flat.abs().amax(1) <= b * (1 + 1e-6)).all()
        inside = dflat.abs() <= b[:, None]
        assert torch.equal(flat[inside], dflat[inside])  # unconstrained entries untouched
        assert torch.allclose(flat[~inside], dflat[~inside].sign() * b[:, None].expand_as(dflat)[~inside])
    else:
        nrm = flat.norm(dim=1)
        assert (nrm <= b * (1 + 1e-6)).all()
        inside = dflat.norm(dim=1) <= b
        assert inside.any() and (~inside).any()
        assert torch.equal(flat[inside], dflat[inside])
        torch.testing.assert_close(nrm[~inside], b[~inside])
        cos = F.cosine_similarity(flat[~inside], dflat[~inside], dim=1)
        torch.testing.assert_close(cos, torch.ones_like(cos))  # radial projection keeps the direction


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_holds_after_crafting(norm):
    model, params, gp, x, y = tiny_problem(seed=3)
    eps = 0.05
    d, _, _ = craft(PoisonConfig(lr=0.5, iterations=5, epsilon=eps, norm=norm, tol=0.0),
                    model, params, gp, x, y, torch.zeros_like(x))
    n = x.shape[0]
    b = _bounds(x, eps, norm, True)
    size = d.reshape(n, -1).abs().amax(1) if norm == "linf" else d.reshape(n, -1).norm(dim=1)
    assert (size <= b * (1 + 1e-6) + 1e-12).all()
    assert torch.isclose(size, b, rtol=1e-6).any(), "the constraint never bound: the test is vacuous"
    # ε = 0: the same crafting leaves Δ unconstrained and goes far past that ball
    d0, _, _ = craft(PoisonConfig(lr=0.5, iterations=5, epsilon=0.0, norm=norm, tol=0.0),
                     model, params, gp, x, y, torch.zeros_like(x))
    size0 = d0.reshape(n, -1).abs().amax(1) if norm == "linf" else d0.reshape(n, -1).norm(dim=1)
    assert (size0 > 2 * b).all()


def test_epsilon_zero_is_unconstrained():
    g = torch.Generator().manual_seed(0)
    x, delta = torch.randn(4, 1, 6, 6, generator=g), 100 * torch.randn(4, 1, 6, 6, generator=g)
    for norm in ("linf", "l2"):
        for relative in (True, False):
            out = project(delta, x, 0.0, norm, relative)
            assert torch.equal(out, delta)


def test_projection_in_a_crafting_run(tmp_path):
    eps = 0.02
    res = craft_poison(digits_cfg(tmp_path), pcfg(epsilon=eps, lr=0.5, iterations=2), handle_sigint=False)
    p = load_poison(res.poison_path)
    train = load_data(digits_cfg(tmp_path).data).train
    mask, rows = p.rows_for(train.index)
    assert mask.all()
    b = _bounds(train.x, eps, "linf", True)
    size = rows.reshape(len(rows), -1).abs().amax(1)
    assert (size <= b * (1 + 1e-6)).all() and torch.isclose(size, b, rtol=1e-5).float().mean() > 0.5


# ----------------------------------------------------------- keyed by index
def test_rows_for_a_permuted_index():
    idx = torch.tensor([10, 3, 7, 42])
    delta = torch.arange(4, dtype=torch.float32)[:, None].repeat(1, 5) + 0.5
    p = Poison(delta, idx)
    query = torch.tensor([42, 5, 3, 10, 7, 99])
    mask, rows = p.rows_for(query)
    assert mask.tolist() == [True, False, True, True, True, False]
    assert rows[:, 0].tolist() == [3.5, 1.5, 0.5, 2.5]
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(0))
    mask2, rows2 = Poison(delta[perm], idx[perm]).rows_for(query)
    assert torch.equal(mask2, mask) and torch.equal(rows2, rows)  # row order of the poison is irrelevant
    ds = IndexedTensorDataset(torch.zeros(3, 5), torch.zeros(3), torch.tensor([7, 8, 42]))
    out = apply_poison(ds, Poison(delta[perm], idx[perm]))
    assert out.x[:, 0].tolist() == [2.5, 0.0, 3.5] and torch.equal(out.index, ds.index)


def test_poison_rows_match_examples_despite_shuffling(runs):
    (res, spy, tr) = runs["a"]
    train = tr._splits["train"]
    p = spy.poison()
    assert torch.equal(p.index, train.index) and p.delta.shape == train.x.shape
    seen = torch.cat([b["index"] for b in spy.batches])
    assert torch.equal(seen.sort().values, train.index)  # one epoch: every example crafted exactly once
    assert not torch.equal(seen, train.index), "the loader did not shuffle: the test proves nothing"
    for b in spy.batches:
        pos = torch.searchsorted(train.index, b["index"])
        assert torch.equal(train.x[pos], b["x"])  # the batch the crafter saw is those examples
        mask, rows = p.rows_for(b["index"])
        assert mask.all() and torch.equal(rows, b["new"])  # and their Δ rows are the ones crafted for it


def test_two_seeds_two_orders_same_keys(runs):
    (_, spy_a, tr_a), (_, spy_b, tr_b) = runs["a"], runs["b"]
    assert not torch.equal(spy_a.batches[0]["index"], spy_b.batches[0]["index"])
    for spy, tr in ((spy_a, tr_a), (spy_b, tr_b)):
        assert torch.equal(spy.poison().index, tr._splits["train"].index)
    assert not torch.equal(spy_a.delta, spy_b.delta)


def test_load_data_adds_the_crafted_delta_by_index(runs, tmp_path):
    (res, spy, tr) = runs["a"]
    path = res.run_path / "artifacts" / POISON_FILE
    cfg = tr.config.data
    clean = load_data(cfg)
    pois = load_data(cfg.__class__(**{**cfg.to_dict(), "poison": str(path)}))
    p = load_poison(path)
    pos = torch.searchsorted(p.index, clean.train.index)
    assert torch.equal(pois.train.index, clean.train.index)
    assert torch.equal(pois.train.x, clean.train.x + p.delta[pos])
    assert torch.equal(pois.val.x, clean.val.x) and torch.equal(pois.test.x, clean.test.x)
    # the same poison stored in another row order gives the same data
    perm = torch.randperm(len(p.index), generator=torch.Generator().manual_seed(3))
    save_poison(Poison(p.delta[perm], p.index[perm], p.meta), tmp_path / "shuffled.pt")
    again = load_data(cfg.__class__(**{**cfg.to_dict(), "poison": str(tmp_path / "shuffled.pt")}))
    assert torch.equal(again.train.x, pois.train.x)


# ------------------------------------------------------------ saving/loading
def test_save_load_roundtrip_is_bitwise(tmp_path):
    g = torch.Generator().manual_seed(0)
    p = Poison(torch.randn(5, 1, 4, 4, generator=g), torch.tensor([9, 2, 4, 0, 7]), {"kind": "test", "x": [1, 2]})
    path = save_poison(p, tmp_path / "sub" / "poison.pt")
    q = load_poison(path)
    assert torch.equal(q.delta, p.delta) and q.delta.dtype == torch.float32
    assert torch.equal(q.index, p.index) and q.index.dtype == torch.int64
    assert q.meta["kind"] == "test" and q.meta["x"] == [1, 2] and q.meta["norms"]["count"] == 5
    raw = torch.load(path, weights_only=True)  # nothing pickled
    assert raw["format"] == 1 and torch.equal(raw["delta"], p.delta)
    assert json.loads(path.with_suffix(".json").read_text())["kind"] == "test"
    r = load_poison(save_poison(q, tmp_path / "again.pt"))
    assert torch.equal(r.delta, p.delta) and torch.equal(r.index, p.index)
    with pytest.raises(FileNotFoundError):
        load_poison(tmp_path / "missing.pt")


def test_artifact_of_a_crafting_run_is_the_poisoners_delta(runs):
    (res, spy, tr) = runs["a"]
    path = res.run_path / "artifacts" / POISON_FILE
    assert spy.poison_path == path and path.is_file()
    p = load_poison(path)
    assert torch.equal(p.delta, spy.delta.cpu()) and torch.equal(p.index, spy.index)
    assert p.meta["kind"] == "sharpness_aware" and p.meta["status"] == "finished"
    assert p.meta["poison_config"]["iterations"] == ITERS and p.meta["crafted_batches"] == SPE
    assert p.meta["data"]["name"] == "digits" and p.meta["source_run"] == str(res.run_path)
    assert p.meta["norms"]["frobenius"] == pytest.approx(float(spy.delta.double().norm()), rel=1e-6)


# ---------------------------------------------------- ensembles, augmentation
def test_ensemble_crafting_run_decreases_its_objective(tmp_path, runs):
    cr = craft_poison(digits_cfg(tmp_path), pcfg(ensemble=2), handle_sigint=False)
    drop, frac, n = craft_loss_drop(cr.run_path)
    assert n == SPE and drop > 0 and frac >= 0.6, (drop, frac)
    (m2, _), = cr.poisoner.extra
    main = cr.train.model
    assert any(not torch.equal(a, b) for a, b in zip(m2.parameters(), main.parameters()))
    # the extra model does not disturb the main one: it trains exactly like the plain SAM run
    for a, b in zip(main.state_dict().values(), runs["plain"].model.state_dict().values()):
        assert torch.equal(a, b)


def test_augmented_crafting_run_decreases_its_objective(tmp_path):
    cr = craft_poison(digits_cfg(tmp_path), pcfg(augment=True), handle_sigint=False)
    drop, frac, n = craft_loss_drop(cr.run_path)
    assert n == SPE and drop > 0 and frac >= 0.6, (drop, frac)


def test_augment_is_one_fixed_differentiable_draw():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 2, 6, 5, generator=g, dtype=torch.float64)
    aug = _Augment(32, x.shape, torch.Generator().manual_seed(1), "cpu", padding=2)
    a1, a2 = aug(x), aug(x.clone())
    assert torch.equal(a1, a2) and a1.shape == x.shape
    assert not torch.equal(a1, x)  # some crop/flip happened
    d = torch.randn(x.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(aug(x + d), aug(x) + aug(d))  # linear: same draw for B and for Δ
    # identity draw: offset = padding, no flip
    ident = _Augment(1, x.shape, torch.Generator(), "cpu", padding=2)
    ident.oy[:], ident.ox[:], ident.flip[:] = 2, 2, False
    assert torch.equal(ident(x[:1]), x[:1])
    ident.flip[:] = True
    assert torch.equal(ident(x[:1]), x[:1].flip(-1))
    # differentiable: gradient flows to the input (each input pixel used at most once)
    xs = x[:3].clone().requires_grad_(True)
    aug3 = _Augment(3, xs.shape, torch.Generator().manual_seed(2), "cpu", padding=2)
    (gx,) = torch.autograd.grad(aug3(xs).sum(), xs)
    assert gx.abs().sum() > 0 and set(gx.unique().tolist()) <= {0.0, 1.0}
    assert torch.autograd.gradcheck(aug3, (xs,))


def test_step_uses_the_same_augmentation_draw_for_g_prime_and_crafting(monkeypatch):
    calls, draws = [], []

    class Recording(_Augment):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            draws.append(self)
            self.number = len(draws)

        def __call__(self, x):
            calls.append((self.number, x.detach().clone()))
            return super().__call__(x)

    monkeypatch.setattr(sa, "_Augment", Recording)
    torch.manual_seed(0)
    model = Tiny().float().train()
    ft = FakeTrainer(model, 16, (1, 6, 6))
    p = SharpnessAwarePoisoner(PoisonConfig(augment=True, ensemble=2, iterations=3, tol=0.0, lr=0.1,
                                            init_noise=0.1, drift_epochs=[]))
    p.setup(ft)
    train = ft._splits["train"]
    rows = torch.tensor([3, 0, 9, 5])
    x, y, idx = train.x[rows], train.y[rows], train.index[rows]
    d0 = p.delta[rows].clone()
    p.step(ft, x, y, idx, 1)
    assert len({c[0] for c in calls}) == 1  # one draw per batch
    assert len(calls) == 2 + 2 * 3  # g′ for 2 models, then 2 models x 3 iterations
    assert all(torch.equal(c[1], x) for c in calls[:2])  # g′ on the clean batch B
    torch.testing.assert_close(calls[2][1], x + d0)  # crafting on B + Δ, same draw
    assert not torch.equal(calls[-1][1], calls[2][1])
    p.step(ft, x, y, idx, 1)
    assert len(draws) == 2 and {c[0] for c in calls} == {1, 2}  # a new draw for the next batch
    assert not (torch.equal(draws[0].oy, draws[1].oy) and torch.equal(draws[0].ox, draws[1].ox))


# ------------------------------------------------------------ matched noise
def test_matched_noise_has_the_poisons_norms(runs):
    p = runs["a"][1].poison()
    p = Poison(p.delta.clone(), p.index, p.meta)  # poison() shares memory with the crafter's live Δ
    p.delta[:3] = 0  # zero rows stay zero
    noise = matched_noise(p, seed=1)
    n = len(p.index)
    a, b = p.delta.reshape(n, -1).double(), noise.delta.reshape(n, -1).double()
    torch.testing.assert_close(b.norm(dim=1), a.norm(dim=1), rtol=1e-5, atol=1e-7)
    assert float(b.norm()) == pytest.approx(float(a.norm()), rel=1e-5)
    assert noise.norms()["frobenius"] == pytest.approx(p.norms()["frobenius"], rel=1e-5)
    assert not torch.equal(noise.delta, p.delta)
    assert abs(float(F.cosine_similarity(a.reshape(-1), b.reshape(-1), dim=0))) < 0.1
    assert torch.equal(noise.index, p.index) and noise.delta.shape == p.delta.shape
    assert noise.meta["kind"] == "noise" and noise.meta["matched_to"] == "sharpness_aware"
    assert torch.equal(matched_noise(p, seed=1).delta, noise.delta)
    assert not torch.equal(matched_noise(p, seed=2).delta, noise.delta)


# --------------------------------------------------------- the run itself
def test_crafting_run_is_otherwise_a_valid_sam_run(runs):
    (res, spy, tr) = runs["a"]
    assert res.status == "finished" and res.steps == SPE
    steps, epochs = records(res.run_path, "step"), records(res.run_path, "epoch")
    assert len(steps) == SPE and len(epochs) == 1 and "test_acc" in epochs[0]
    crafts = records(res.run_path, "craft")
    assert [c["step"] for c in crafts] == list(range(1, SPE + 1))
    assert all(c["iterations"] == len(c["losses"]) == ITERS for c in crafts)
    probe, = [r for r in records(res.run_path, "probe") if r["name"] == "poison"]
    assert set(probe["drift"]) == {"1"} and probe["crafted_batches"] == SPE
    assert probe["delta_frobenius"] == pytest.approx(float(spy.delta.double().norm()), rel=1e-6)
    assert probe["poison_cos_loss"] < probe["clean_cos_loss"]
    st = json.loads((res.run_path / "status.json").read_text())
    assert st["status"] == "finished"
    ck = load_checkpoint(res.run_path / "checkpoints" / "last.pt")
    assert torch.equal(ck["stepper"]["delta"], spy.delta.cpu()) and ck["stepper"]["crafted_batches"] == SPE
    # crafting only reads g′ and never touches the weights, .grad or BN statistics:
    # the model is bitwise the one of a plain SAM run
    for a, b in zip(res.model.state_dict().values(), runs["plain"].model.state_dict().values()):
        assert torch.equal(a, b)
    assert res.final_metrics["test_acc"] == runs["plain"].final_metrics["test_acc"]


def test_crafting_run_resumes_exactly(tmp_path):
    """Stop mid-epoch, resume with Trainer.from_run(..., stepper=...): same poison and weights as one run.

    MLP with dropout, augmentation and an ensemble: the global RNG, the augmentation stream and the
    extra model's state all have to survive the checkpoint.
    """
    ov = {"model.name": "mlp", "model.hidden_sizes": [32], "model.dropout": 0.2}
    pc = lambda: pcfg(iterations=2, augment=True, ensemble=2, drift_epochs=[1], drift_batches=1)  # noqa: E731
    full = craft_poison(digits_cfg(tmp_path / "full", epochs=2, **ov), pc(), handle_sigint=False)
    holder = {}

    def stopper(ev):
        if isinstance(ev, StepEnd) and ev.step == SPE + SPE // 2:
            holder["t"].stop()

    t = Trainer(digits_cfg(tmp_path / "part", epochs=2, **ov), stepper=SharpnessAwarePoisoner(pc()),
                callbacks=[stopper], handle_sigint=False)
    holder["t"] = t
    part = t.run()
    assert part.status == "stopped" and part.steps == SPE + SPE // 2
    with pytest.raises(ValueError, match="stepper"):
        Trainer.from_run(part.run_path)
    p2 = SharpnessAwarePoisoner(pc())
    rest = Trainer.from_run(part.run_path, stepper=p2, handle_sigint=False).run()
    assert rest.status == "finished" and rest.steps == 2 * SPE
    assert torch.equal(p2.delta, full.poisoner.delta)
    for a, b in zip(rest.model.state_dict().values(), full.train.model.state_dict().values()):
        assert torch.equal(a, b)
    for (ma, _), (mb, _) in zip(p2.extra, full.poisoner.extra):
        for a, b in zip(ma.state_dict().values(), mb.state_dict().values()):
            assert torch.equal(a, b)
    assert torch.equal(load_poison(part.run_path / "artifacts" / POISON_FILE).delta, full.poisoner.delta)
    assert len(records(part.run_path, "craft")) == 2 * SPE


# --------------------------------------------------------------- refusals
def test_crafting_refuses_sgd(tmp_path):
    with pytest.raises(ValueError, match=r"optim\.name='sgd'"):
        craft_poison(quickstart_config("sgd", epochs=1, root=str(tmp_path)), PoisonConfig())
    cfg = quickstart_config("sgd", epochs=1, root=str(tmp_path))
    with pytest.raises(ValueError, match=r"optim\.name='sgd'"):
        Trainer(cfg, store=False, stepper=SharpnessAwarePoisoner(), handle_sigint=False).run()
    with pytest.raises(ValueError, match=r"data\.poison"):
        craft_poison(digits_cfg(tmp_path, **{"data.poison": str(tmp_path / "p.pt")}), PoisonConfig())


@pytest.mark.parametrize("field,value", [
    ("lr", 0), ("lr", -0.1), ("lr", float("nan")), ("lr", "0.1"), ("optimizer", "rmsprop"),
    ("iterations", 0), ("iterations", 2.5), ("epsilon", -0.1), ("epsilon", float("inf")),
    ("norm", "l1"), ("start_epoch", 0), ("init_noise", -1.0), ("cosine", "euclid"), ("bn", "update"),
    ("ensemble", 0), ("drift_batches", -1), ("save_every", 0),
])
def test_bad_poison_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"poison\.{field}="):
        PoisonConfig(**{field: value})


def test_poison_config_dict_roundtrip_and_unknown_keys():
    c = PoisonConfig(lr=0.1, ensemble=3, drift_epochs=[5, 1])
    assert c.drift_epochs == [1, 5] and PoisonConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown poison key"):
        PoisonConfig.from_dict({"lr": 0.1, "iters": 3})


# --------------------------------------------------------------- BatchNorm
@pytest.mark.parametrize("bn", ["train", "eval"])
def test_crafting_passes_leave_batchnorm_statistics_and_grads(bn):
    model, params, gp, x, y = tiny_problem(seed=4, bn=True)
    with torch.no_grad():  # non-trivial running statistics
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.num_batches_tracked.fill_(7)
    sentinels = [torch.full_like(p, 0.25) for p in params]
    for p, s in zip(params, sentinels):
        p.grad = s
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    d, losses, _ = craft(PoisonConfig(lr=0.05, iterations=3, bn=bn, tol=0.0), model, params, gp, x, y,
                         torch.zeros_like(x))
    assert losses[-1] < losses[0] + 1e-3 and not torch.equal(d, torch.zeros_like(x))
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert model.training and model.bn.training  # modes restored
    assert all(p.grad is s and torch.equal(s, torch.full_like(s, 0.25)) for p, s in zip(params, sentinels))


def test_crafting_step_equals_a_plain_sam_step_with_batchnorm():
    """bn='train': the step's weights and BN statistics are exactly those of sam_step on the clean batch."""
    torch.manual_seed(0)
    model = Tiny(bn=True).float().train()
    twin = copy.deepcopy(model)
    ft = FakeTrainer(model, 16, (1, 6, 6))
    opt_twin = build_optimizer(ft.config.optim, twin.parameters())
    p = SharpnessAwarePoisoner(PoisonConfig(iterations=3, tol=0.0, lr=0.1, drift_epochs=[]))
    p.setup(ft)
    train = ft._splits["train"]
    for rows in (torch.tensor([3, 0, 9, 5, 1, 2]), torch.tensor([4, 8, 7, 6, 10, 11])):
        x, y, idx = train.x[rows], train.y[rows], train.index[rows]
        p.step(ft, x, y, idx, 1)
        sam_step(twin, F.cross_entropy, x, y, opt_twin, bn=ft.config.optim.bn_policy)
    assert p.crafted_batches == 2 and len(ft.events) == 2
    assert float(p.delta.abs().sum()) > 0
    for (k, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), k
    assert int(model.bn.num_batches_tracked) == 2  # one update per step (SAM's first pass), none from crafting


def test_crafting_run_with_a_batchnorm_model(tmp_path):
    """ResNet-18 (BatchNorm) crafts in bn='train' mode and trains exactly like plain SAM (BN statistics included)."""
    ov = {"model.name": "resnet18", "model.width": 0.125, "data.max_train": 128}
    res = craft_poison(digits_cfg(tmp_path, **ov), pcfg(iterations=2), handle_sigint=False)
    assert res.train.status == "finished" and res.poisoner.crafted_batches == 2
    assert float(res.poisoner.delta.abs().sum()) > 0
    plain = Trainer(digits_cfg(tmp_path, **ov), store=False, handle_sigint=False).run()
    for (k, a), b in zip(res.train.model.state_dict().items(), plain.model.state_dict().values()):
        assert torch.equal(a, b), k
