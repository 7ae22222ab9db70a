"""m-sharpness (workbench.analysis.sharpness): oracles, invariances, bookkeeping."""
from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench.analysis.common import ExampleSet, load_result, save_result
from workbench.analysis.sharpness import (
    SharpnessCurve,
    SharpnessResult,
    apgd_checkpoints,
    logit_normalize,
    sharpness,
    sharpness_curve,
)


def example_set(x, y, split="train") -> ExampleSet:
    n = len(y)
    return ExampleSet(x=x, y=y, index=torch.arange(n), split=split, seed=0, count=n)


def half_mse(out, t):
    return 0.5 * ((out.squeeze(-1) - t) ** 2).mean()


def logistic_margin(out, t):            # t in {-1, +1}: softplus(-t f(x)), decreasing in the margin
    return F.softplus(-t * out.squeeze(-1)).mean()


@pytest.fixture(scope="module")
def trained_mlp():
    """A small ReLU MLP fitted a little on random 3-class data, and 256 training examples."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=g)
    y = torch.randint(0, 3, (256,), generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return net, example_set(x, y)


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.fc(self.drop(h))


# ------------------------------------------------------------------ basic properties
@pytest.mark.parametrize("kind,norm,adaptive,method", [
    ("worst", "l2", False, "pgd"), ("worst", "linf", True, "pgd"), ("worst", "l2", True, "apgd"),
    ("average", "l2", False, "pgd"), ("average", "linf", True, "pgd")])
def test_zero_at_rho_zero(trained_mlp, kind, norm, adaptive, method):
    net, ex = trained_mlp
    r = sharpness(net, ex, 0.0, kind=kind, norm=norm, adaptive=adaptive, method=method, m=64, steps=5,
                  n_draws=3, rand_init=True)
    assert abs(r.value) < 1e-12 and np.all(np.abs(r.per_batch) < 1e-12)
    assert r.base_loss > 0


@pytest.mark.parametrize("norm,adaptive", list(itertools.product(["l2", "linf"], [False, True])))
def test_worst_case_monotone_in_rho(trained_mlp, norm, adaptive):
    net, ex = trained_mlp
    rhos = {"l2": [0.0, 0.05, 0.1, 0.2, 0.4], "linf": [0.0, 0.002, 0.005, 0.01, 0.02]}[norm]
    curve = sharpness_curve(net, ex, rhos[::-1], norm=norm, adaptive=adaptive, m=64, steps=10)
    assert isinstance(curve, SharpnessCurve) and list(curve.rhos) == rhos
    assert np.all(np.diff(curve.values) >= 0) and np.all(np.diff(curve.per_batch, axis=0) >= 0)
    assert curve.values[0] == 0 and curve.values[-1] > 0
    assert curve.per_batch.shape == (5, 4) and "warm start" in curve.monotone
    # warm-started values are at least the independent searches (within float noise)
    for k in (2, 4):
        single = sharpness(net, ex, rhos[k], norm=norm, adaptive=adaptive, m=64, steps=10)
        assert curve.values[k] >= single.value - 1e-6


@pytest.mark.parametrize("norm,rho", [("l2", 0.3), ("linf", 0.01)])
def test_worst_at_least_average(trained_mlp, norm, rho):
    net, ex = trained_mlp
    for adaptive in (False, True):
        w = sharpness(net, ex, rho, norm=norm, adaptive=adaptive, m=64, steps=20)
        # the sphere draw (norm exactly rho) lies in the worst case's ball; the default Gaussian draw does not
        a = sharpness(net, ex, rho, kind="average", norm=norm, adaptive=adaptive, m=64, n_draws=10, avg_dist="sphere")
        assert np.all(w.per_batch >= a.per_batch) and w.value > a.value
        assert a.kind == "average" and a.method is None and a.n_draws == 10
        assert np.all(a.std_per_batch > 0)
        assert a.delta_norm_per_batch == pytest.approx(np.full(4, rho), rel=1e-6 if norm == "l2" else 0.05)


def test_average_gaussian_is_eq71_literal(trained_mlp):
    net, ex = trained_mlp
    p = sum(q.numel() for q in net.parameters())
    a = sharpness(net, ex, 0.01, kind="average", avg_dist="gaussian", m=128, n_draws=4)
    assert a.avg_dist == "gaussian" and a.delta_norm_per_batch == pytest.approx(np.full(2, 0.01 * p ** 0.5), rel=0.1)


def test_average_case_defaults_are_eq71_gaussian_with_100_draws(trained_mlp):
    net, ex = trained_mlp
    a = sharpness(net, ex, 0.01, kind="average", adaptive=True, m=128)
    assert a.avg_dist == "gaussian" and a.n_draws == 100
    # delta = c * N(0, rho^2 I) with c = |w|: its adaptive-coordinate norm is about rho sqrt(p)
    p = sum(q.numel() for q in net.parameters())
    assert a.delta_norm_per_batch == pytest.approx(np.full(2, 0.01 * p ** 0.5), rel=0.1)
    s = sharpness(net, ex, 0.01, kind="average", adaptive=True, m=128, avg_dist="sphere", n_draws=3)
    assert s.avg_dist == "sphere" and s.delta_norm_per_batch == pytest.approx(np.full(2, 0.01), rel=1e-6)


def test_logit_normalisation_removes_the_scale_sensitivity(trained_mlp):
    """Scaling the last layer by a > 0 changes the plain cross-entropy sharpness but not the logit-normalised one
    (Eq. 7.5): the normalised logits, and adaptive perturbations of them, are identical."""
    net, ex = trained_mlp
    scaled = copy.deepcopy(net)
    last = [m for m in scaled.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(4.0)
        if last.bias is not None:
            last.bias.mul_(4.0)
    kw = dict(kind="average", adaptive=True, m=64, n_draws=8, seed=3)
    ln = [sharpness(model, ex, 0.05, **kw) for model in (net, scaled)]
    plain = [sharpness(model, ex, 0.05, logit_norm=False, **kw) for model in (net, scaled)]
    assert ln[0].logit_norm and ln[1].logit_norm and not plain[0].logit_norm
    assert ln[1].value == pytest.approx(ln[0].value, rel=1e-5, abs=1e-9)
    assert abs(plain[1].value - plain[0].value) > 0.1 * abs(plain[0].value)
    assert "logit-normalised" in ln[0].definition
    f = torch.randn(5, 10)
    assert torch.allclose(logit_normalize(3.0 * f), logit_normalize(f), atol=1e-6)
    assert torch.allclose(logit_normalize(f).std(dim=1, unbiased=False), torch.ones(5), atol=1e-5)


# ------------------------------------------------------------------ oracles
def _trust_region_max(g: np.ndarray, H: np.ndarray, rho: float) -> float:
    """max_{||d|| <= rho} g.d + d.H.d / 2 for PSD H (boundary solution d = (lam - H)^-1 g, lam > lambda_max)."""
    h, Q = np.linalg.eigh(H)
    gq = Q.T @ g
    lo, hi = h.max() + 1e-14, h.max() + np.linalg.norm(g) / rho + 1.0
    for _ in range(200):
        lam = (lo + hi) / 2
        if np.linalg.norm(gq / (lam - h)) > rho:
            lo = lam
        else:
            hi = lam
    d = Q @ (gq / (lam - h))
    return float(g @ d + 0.5 * d @ H @ d)


@pytest.fixture(scope="module")
def regression():
    """Least squares, L(w) = ||Xw - y||^2 / (2n): quadratic in w with Hessian X'X/n."""
    g = torch.Generator().manual_seed(0)
    n, d = 64, 5
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.5, 1.0, 0.5],
                                                                          dtype=torch.float64)
    y = X @ torch.randn(d, generator=g, dtype=torch.float64) + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    return model, X, y


@pytest.mark.parametrize("method", ["pgd", "apgd"])
def test_quadratic_oracle_l2(regression, method):
    model, X, y = regression
    ex = example_set(X, y)
    n = len(y)
    H = (X.T @ X / n).numpy()
    w = model.weight.detach().reshape(-1)
    g = (X.T @ (X @ w - y) / n).numpy()
    for rho in (0.01, 0.1, 1.0):
        r = sharpness(model, ex, rho, m=None, loss_fn=half_mse, method=method)
        assert r.value == pytest.approx(_trust_region_max(g, H, rho), rel=1e-5)
        assert r.delta_norm_per_batch[0] == pytest.approx(rho, rel=1e-9)
        assert r.value <= _trust_region_max(g, H, rho) * (1 + 1e-9)
    # at the minimiser the gradient vanishes: S = rho^2 lambda_max / 2
    at_min = copy.deepcopy(model)
    with torch.no_grad():
        at_min.weight.copy_(torch.linalg.lstsq(X, y.unsqueeze(1)).solution.T)
    lam = np.linalg.eigvalsh(H).max()
    for rho in (0.1, 1.0):
        r = sharpness(at_min, ex, rho, m=None, loss_fn=half_mse, method=method)
        assert r.value == pytest.approx(rho ** 2 * lam / 2, rel=1e-4)


def test_quadratic_oracle_linf(regression):
    """Maximising a convex quadratic over a box: the maximum is at a vertex (enumerate all 2^5)."""
    model, X, y = regression
    n = len(y)
    H = (X.T @ X / n).numpy()
    w = model.weight.detach().reshape(-1)
    g = (X.T @ (X @ w - y) / n).numpy()
    for rho in (0.01, 0.1):
        best = max(float(g @ v + 0.5 * v @ H @ v)
                   for v in (rho * np.array(s) for s in itertools.product([-1.0, 1.0], repeat=5)))
        for method in ("pgd", "apgd"):
            r = sharpness(model, example_set(X, y), rho, norm="linf", m=None, loss_fn=half_mse, method=method)
            assert r.value == pytest.approx(best, rel=1e-9)
            assert r.delta_norm_per_batch[0] == pytest.approx(rho)


def test_linear_classifier_one_sharpness_closed_form():
    """Linear model, decreasing margin loss, m = 1: S_i = l(margin_i - rho ||c x_i||_q) - l(margin_i)
    with q = 2 (l2) or 1 (linf), c = 1 (standard) or |w| (adaptive) ([Andriushchenko 2024, Ch. 5 / Ch. 7])."""
    gen = torch.Generator().manual_seed(1)
    d, n = 6, 8
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    t = torch.where(torch.rand(n, generator=gen) > 0.5, 1.0, -1.0).double()
    model = nn.Linear(d, 1).double()
    ex = example_set(x, t)
    wt = torch.cat([model.weight.detach().reshape(-1), model.bias.detach()])
    xt = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], dim=1)        # the bias sees input 1
    margin = t * (xt @ wt)
    for norm, adaptive in itertools.product(["l2", "linf"], [False, True]):
        c = wt.abs() if adaptive else torch.ones_like(wt)
        q = 2 if norm == "l2" else 1
        rho = 0.3 if norm == "l2" else 0.1
        expected = F.softplus(-(margin - rho * (xt * c).norm(p=q, dim=1))) - F.softplus(-margin)
        r = sharpness(model, ex, rho, norm=norm, adaptive=adaptive, m=1, loss_fn=logistic_margin, steps=20)
        np.testing.assert_allclose(r.per_batch, expected.numpy(), rtol=1e-9, atol=1e-14)
        assert r.n_batches == n


def test_adaptive_equals_standard_when_weights_are_unit(trained_mlp):
    net, ex = trained_mlp
    unit = copy.deepcopy(net)
    with torch.no_grad():
        for p in unit.parameters():
            p.copy_(torch.where(p >= 0, 1.0, -1.0))
    for kw in (dict(norm="l2"), dict(norm="linf"), dict(norm="l2", method="apgd"),
               dict(kind="average", norm="l2"), dict(kind="average", norm="linf")):
        rho = 0.05 if kw["norm"] == "l2" else 0.002
        std = sharpness(unit, ex, rho, adaptive=False, m=128, steps=10 if "method" not in kw else None,
                        n_draws=5, seed=3, **kw)
        ada = sharpness(unit, ex, rho, adaptive=True, m=128, steps=10 if "method" not in kw else None,
                        n_draws=5, seed=3, **kw)
        np.testing.assert_array_equal(std.per_batch, ada.per_batch)
        assert std.value > 0 and ada.adaptive and not std.adaptive


def test_apgd_vs_pgd(trained_mlp):
    net, ex = trained_mlp
    for norm, rho in (("l2", 0.5), ("linf", 0.01)):   # the plain cross-entropy landscape the 5% was set on
        one = sharpness(net, ex, rho, norm=norm, m=64, steps=1, logit_norm=False)
        hundred = sharpness(net, ex, rho, norm=norm, m=64, steps=100, logit_norm=False)
        apgd = sharpness(net, ex, rho, norm=norm, m=64, method="apgd", logit_norm=False)
        assert apgd.steps == 20 and apgd.step_size == 2.0 and hundred.steps == 100 and hundred.step_size == 0.1
        assert np.all(apgd.per_batch >= one.per_batch) and apgd.value > 2 * one.value
        assert apgd.value == pytest.approx(hundred.value, rel=0.05)


def test_apgd_checkpoints():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(20) == [5, 9, 12, 14, 16, 18, 19]
    assert apgd_checkpoints(1) == []


# ------------------------------------------------------------------ bookkeeping
def test_model_restored_exactly():
    torch.manual_seed(0)
    net = BNNet()
    net.train()
    with torch.no_grad():
        net(torch.randn(32, 1, 6, 6) + 1)      # non-trivial running statistics
    net.drop.eval()                              # mixed modes must come back as they were
    state = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    g = torch.Generator().manual_seed(0)
    ex = example_set(torch.randn(64, 1, 6, 6, generator=g), torch.randint(0, 3, (64,), generator=g))
    for kw in (dict(), dict(method="apgd", norm="linf", adaptive=True), dict(kind="average", n_draws=3),
               dict(rand_init=True, norm="linf")):
        r = sharpness(net, ex, 0.1, m=32, steps=5 if "method" not in kw else None, **kw)
        assert r.value >= 0 or kw.get("kind") == "average"
        assert any("BatchNorm" in s for s in r.notes)
        for k, v in net.state_dict().items():
            assert torch.equal(v, state[k]), k
        assert [m.training for m in net.modules()] == modes
        assert all(p.grad is None for p in net.parameters())
    calls = []

    def failing_loss(out, t):             # fails mid-search, with the weights perturbed
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return F.cross_entropy(out, t)

    with pytest.raises(RuntimeError, match="boom"):
        sharpness(net, ex, 0.1, m=32, steps=5, loss_fn=failing_loss)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_seeded_reproducibility(trained_mlp):
    net, ex = trained_mlp
    for kw in (dict(kind="worst", rand_init=True, steps=5), dict(kind="average", n_draws=5),
               dict(kind="worst", rand_init=True, method="apgd", norm="linf", steps=6)):
        a = sharpness(net, ex, 0.1 if kw.get("norm") != "linf" else 0.005, m=64, seed=5, **kw)
        b = sharpness(net, ex, 0.1 if kw.get("norm") != "linf" else 0.005, m=64, seed=5, **kw)
        np.testing.assert_array_equal(a.per_batch, b.per_batch)
        assert a.seed == 5
    a = sharpness(net, ex, 0.1, kind="average", m=64, n_draws=5, seed=5)
    c = sharpness(net, ex, 0.1, kind="average", m=64, n_draws=5, seed=6)
    assert not np.array_equal(a.per_batch, c.per_batch)


def test_batches_of_m(trained_mlp):
    net, ex = trained_mlp
    calls = []
    r = sharpness(net, ex, 0.1, m=32, steps=2, callback=lambda *a: calls.append(a))
    assert r.n_batches == 8 and r.per_batch.shape == (8,) and r.count == 256 and r.dropped == 0 and r.m == 32
    assert r.value == pytest.approx(float(np.mean(r.per_batch)))
    assert r.base_loss == pytest.approx(float(np.mean(r.base_loss_per_batch)))
    np.testing.assert_allclose(r.perturbed_loss_per_batch - r.base_loss_per_batch, r.per_batch, atol=1e-12)
    assert [c[0] for c in calls] == list(range(8)) and calls[3][2] == r.per_batch[3]
    # per-batch values are the sharpness of each batch on its own
    third = example_set(ex.x[64:96], ex.y[64:96])
    assert sharpness(net, third, 0.1, m=32, steps=2).value == pytest.approx(r.per_batch[2], abs=1e-12)
    odd = example_set(ex.x[:100], ex.y[:100])
    r2 = sharpness(net, odd, 0.1, m=32, steps=2)
    assert r2.n_batches == 3 and r2.count == 96 and r2.dropped == 4
    assert any("fewer than the 1024" in s for s in r2.notes)
    r3 = sharpness(net, odd, 0.1, m=None, steps=2)
    assert r3.n_batches == 1 and r3.m == 100
    with pytest.raises(ValueError, match="larger"):
        sharpness(net, odd, 0.1, m=128)
    with pytest.raises(ValueError, match="rho"):
        sharpness(net, odd, -0.1, m=10)
    with pytest.raises(ValueError, match="norm"):
        sharpness(net, odd, 0.1, m=10, norm="l1")


def test_results_save_load_round_trip(tmp_path, trained_mlp):
    net, ex = trained_mlp
    r = sharpness(net, ex, 0.1, m=64, steps=3)
    c = sharpness_curve(net, ex, [0.0, 0.1], kind="average", m=128, n_draws=2)
    assert isinstance(r, SharpnessResult)
    for name, res in (("s", r), ("c", c)):
        back = load_result(save_result(res, tmp_path, name))
        assert type(back) is type(res)
        for f in res.__dataclass_fields__:
            v1, v2 = getattr(res, f), getattr(back, f)
            if isinstance(v1, np.ndarray):
                np.testing.assert_array_equal(v1, v2)
            else:
                assert v1 == v2, f
    assert c.monotone == "" and not c.warm_start
