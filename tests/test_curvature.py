"""Hessian curvature (workbench.analysis.curvature) against dense oracles on tiny float64 models."""
from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_unchanged, snapshot
from torch import nn
from torch.func import functional_call

from workbench.analysis import curvature as cv
from workbench.analysis.common import ExampleSet, load_result, preserved_state, save_result

pytestmark = [
    pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning"),  # PyHessian's
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),  # torch.func jvp internals
]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models: one intra-op thread. With two OpenMP threads on this 2-core box, any foreign load makes
    every parallel region wait for a descheduled thread (measured: 60x slower), one thread is immune."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _examples(x, y) -> ExampleSet:
    return ExampleSet(x=x, y=y, index=torch.arange(len(y)), split="train", seed=0, count=len(y))


def dense_hessian(model: nn.Module, examples: ExampleSet, names=None, eval_mode=True) -> torch.Tensor:
    """The exact Hessian of the mean cross-entropy over the selected parameters (model order)."""
    named = [(n, p) for n, p in model.named_parameters() if names is None or n in names]
    shapes = [p.shape for _, p in named]
    numels = [p.numel() for _, p in named]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    modes = [(m, m.training) for m in model.modules()]
    if eval_mode:
        model.eval()

    def f(theta):
        parts = dict(zip([n for n, _ in named], [t.view(s) for t, s in zip(theta.split(numels), shapes)]))
        return F.cross_entropy(functional_call(model, {**buffers, **parts}, (examples.x,)), examples.y)

    try:
        return torch.autograd.functional.hessian(f, flat)
    finally:
        for m, mode in modes:
            m.training = mode


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    ex = _examples(x, y)
    H = dense_hessian(model, ex)
    return model, ex, H, torch.linalg.eigvalsh(H)


def rel(a, b) -> float:
    a, b = torch.as_tensor(np.asarray(a), dtype=torch.float64), torch.as_tensor(np.asarray(b), dtype=torch.float64)
    return float(((a - b).abs() / b.abs()).max())


class SmallBNNet(nn.Module):
    """conv - BatchNorm - tanh - dropout - linear: exercises eval mode and buffers."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Tanh(), nn.Dropout(0.3),
                                      nn.Flatten())
        self.classifier = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.fixture
def bn_net():
    torch.manual_seed(0)
    model = SmallBNNet().double()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(32, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (32,), generator=g)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # non-trivial running statistics
            model(x * 2 + 0.5)
    return model, _examples(x, y)






# ------------------------------------------------------------------ operator
def test_hvp_matches_dense_hessian_all_engines(mlp):
    model, ex, H, _ = mlp
    v = torch.randn(H.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    want = H @ v
    ops = [cv.HessianOperator(model, ex), cv.HessianOperator(model, ex, batch_size=10),
           cv.HessianOperator(model, ex, method="func"), cv.HessianOperator(model, ex, method="func", batch_size=7)]
    for op in ops:
        assert op.size == H.shape[0] and op.dtype == torch.float64
        got = op.matvec(v)
        assert float((got - want).abs().max()) <= 1e-10, op
        assert float(((op @ v) - want).abs().max()) <= 1e-10
        assert op.n_matvecs == 2
    assert ops[0].cached and ops[0].setup_seconds > 0
    ops[0].release()
    assert not ops[0].cached
    assert float((ops[0].matvec(v) - want).abs().max()) <= 1e-10


def test_batched_operator_equals_single_batch(mlp):
    model, ex, H, _ = mlp
    single = cv.HessianOperator(model, ex)
    batched = cv.HessianOperator(model, ex, batch_size=20)  # 20, 20, 20 and 4 examples: the weights matter
    assert batched.batch_size == 20 and cv.HessianOperator(model, ex, batch_size=64).batch_size is None
    for s in range(3):
        v = torch.randn(single.size, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
        assert float((single @ v - batched @ v).abs().max()) <= 1e-12
    a = cv.lanczos(single, k=3, tol=1e-8).values
    b = cv.lanczos(batched, k=3, tol=1e-8).values
    assert rel(a, b) <= 1e-10


def test_operator_works_under_no_grad_and_rebuilds_after_parameter_change(mlp):
    model, ex, H, _ = mlp
    model = copy.deepcopy(model)
    op = cv.HessianOperator(model, ex)
    v = torch.ones(op.size, dtype=torch.float64)
    with torch.no_grad():
        before = op @ v
    assert float((before - H @ v).abs().max()) <= 1e-10
    with torch.no_grad():
        model[0].weight.add_(0.1)  # the cached graph is now stale
    after = op @ v
    fresh = cv.HessianOperator(model, ex) @ v
    assert float((after - fresh).abs().max()) <= 1e-12 and float((after - before).abs().max()) > 1e-6


@pytest.mark.parametrize("engine", [{}, {"batch_size": 10}, {"method": "func"}])
def test_operator_sees_writes_through_data_and_replaced_parameters(mlp, bn_net, engine):
    """``p.data.mul_`` bypasses autograd's version counters and a replaced parameter is another
    tensor: either way the next product is the Hessian of the model as it is now (dense oracle, 1e-10)."""
    model, ex, _, _ = mlp
    model = copy.deepcopy(model)
    op = cv.HessianOperator(model, ex, **engine)
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    before = op @ v
    model[0].weight.data.mul_(1.2)  # no version bump
    after = op @ v
    want = dense_hessian(model, ex) @ v
    assert float((after - want).abs().max()) <= 1e-10
    assert float((after - (cv.HessianOperator(model, ex) @ v)).abs().max()) <= 1e-10
    assert float((before - want).abs().max()) > 1e-3  # the change matters
    model[2].weight = nn.Parameter(model[2].weight.detach() * 0.5)  # replaced
    got = op @ v
    want = dense_hessian(model, ex) @ v
    assert float((got - want).abs().max()) <= 1e-10
    assert op.params[-2] is model[2].weight
    model[2].bias.data[0] += 0.3  # one element through .data
    assert float(((op @ v) - dense_hessian(model, ex) @ v).abs().max()) <= 1e-10
    model[2].weight = nn.Parameter(torch.zeros(2, 6, dtype=torch.float64))  # another shape
    with pytest.raises(ValueError, match="build a new HessianOperator"):
        op @ v
    # a frozen parameter (not selected) replaced, and a buffer written through .data (BatchNorm statistics)
    net, bex = bn_net
    net = copy.deepcopy(net)
    op = cv.HessianOperator(net, bex, params="classifier", **engine)
    u = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    op @ u
    net.features[1].running_mean.data.add_(0.5)
    net.features[0].weight = nn.Parameter(net.features[0].weight.detach() * 1.5)
    names = [n for n, _ in net.named_parameters() if n.startswith("classifier")]
    want = dense_hessian(net, bex, names=names) @ u
    assert float(((op @ u) - want).abs().max()) <= 1e-10


def test_as_linear_operator_is_float64(mlp):
    model, ex, H, _ = mlp
    lin = cv.HessianOperator(model, ex).as_linear_operator()
    x = np.linspace(-1, 1, H.shape[0])
    y = lin.matvec(x)
    assert lin.dtype == np.float64 and y.dtype == np.float64 and lin.shape == tuple(H.shape)
    assert np.abs(y - (H.numpy() @ x)).max() <= 1e-10


def test_parameter_subset_equals_dense_block(mlp):
    model, ex, H, _ = mlp
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    offsets = np.cumsum([0] + sizes)
    for sel, chosen in [("2", ["2.weight", "2.bias"]), (["0.bias"], ["0.bias"]),
                        (["2.bias", "0.weight"], ["0.weight", "2.bias"])]:
        op = cv.HessianOperator(model, ex, params=sel)
        assert op.param_names == chosen  # model order, whatever the request order
        idx = torch.cat([torch.arange(offsets[names.index(n)], offsets[names.index(n) + 1]) for n in chosen])
        block = H[idx][:, idx]
        v = torch.randn(len(idx), dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        assert op.size == len(idx)
        assert float((op @ v - block @ v).abs().max()) <= 1e-10
        assert rel(cv.lanczos(op, k=1, tol=1e-8).values, torch.linalg.eigvalsh(block)[-1:]) <= 1e-8
    with pytest.raises(ValueError, match="available parameters: 0.weight, 0.bias, 2.weight, 2.bias"):
        cv.HessianOperator(model, ex, params="classifier.4")
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        cv.HessianOperator(model, ex, params=["0.weight", "nope"])


# ------------------------------------------------------------------ eigenvalues
def test_top_eigenvalues_lanczos_eigsh_power_match_dense(mlp):
    model, ex, H, ev = mlp
    top5 = ev.flip(0)[:5]
    op = cv.HessianOperator(model, ex)
    r = cv.lanczos(op, k=5, tol=1e-6, return_vectors=True)
    assert r.converged and r.which == "LA" and r.method == "lanczos"
    assert rel(r.values, top5) <= 1e-4
    assert torch.all(r.values[:-1] >= r.values[1:])
    assert r.n_matvecs == r.iterations > 0 and r.count == 64 and r.split == "train" and r.n_params == op.size
    assert r.vectors.shape == (5, op.size) and r.residuals.shape == (5,)
    for lam, vec, res in zip(r.values, r.vectors, r.residuals):  # reported residual = true residual (exact arithmetic)
        true = float(torch.linalg.vector_norm(H @ vec - lam * vec))
        assert true <= 1e-6 * abs(float(lam)) and abs(true - float(res)) <= 1e-8
    e = cv.eigsh_eigenvalues(op, k=5, tol=1e-8, return_vectors=True)
    assert e.converged and rel(e.values, top5) <= 1e-6 and e.vectors.shape == (5, op.size)
    p = cv.power_iteration(op, k=3, tol=1e-10, max_iter=2000)
    assert rel(p.values, top5[:3]) <= 1e-3
    assert p.method == "power_iteration" and p.n_matvecs == p.iterations


def test_smallest_eigenvalues_of_the_network_hessian(mlp):
    model, ex, H, ev = mlp
    op = cv.HessianOperator(model, ex)
    assert ev[0] < 0  # the tiny network's Hessian is indefinite
    r = cv.smallest_eigenvalues(op, k=3, tol=1e-6)
    assert r.which == "SA" and rel(r.values, ev[:3]) <= 1e-4
    assert rel(cv.smallest_eigenvalues(op, k=2, tol=1e-8, method="eigsh").values, ev[:2]) <= 1e-6
    both = cv.lanczos(op, k=2, which="both", tol=1e-6)
    assert rel(both.top, ev.flip(0)[:2]) <= 1e-4 and rel(both.bottom, ev[:2]) <= 1e-4


def test_indefinite_quadratic_dense_operator():
    g = torch.Generator().manual_seed(7)
    lam = torch.tensor([-3.0, -1.0, -0.2, 0.0, 0.1, 0.5, 1.0, 1.5, 2.0, 2.5] + [0.3] * 20, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(lam) @ Q.T
    A = (A + A.T) / 2
    op = cv.DenseOperator(A)
    assert float(cv.smallest_eigenvalues(op, k=1, tol=1e-8).values[0]) == pytest.approx(-3.0, rel=1e-8)
    assert float(cv.lanczos(A, k=1, tol=1e-8).values[0]) == pytest.approx(2.5, rel=1e-8)  # plain tensor accepted
    # power iteration targets the largest |λ|: here the most negative one, not λmax
    assert float(cv.power_iteration(op, k=1, tol=1e-10, max_iter=1000).values[0]) == pytest.approx(-3.0, rel=1e-4)
    with pytest.raises(ValueError, match="not symmetric"):
        cv.DenseOperator(torch.triu(torch.ones(3, 3)))
    with pytest.raises(ValueError, match="need 0 < k < size"):
        cv.eigsh_eigenvalues(op, k=30)
    with pytest.raises(ValueError, match="which"):
        cv.lanczos(op, which="LM")


def test_lanczos_restarts_after_an_invariant_subspace():
    # start vector in a 2-dimensional invariant subspace would stall plain Lanczos
    A = torch.diag(torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64))
    r = cv.lanczos(cv.DenseOperator(A), k=5, tol=1e-10)
    assert rel(r.values, [5, 4, 3, 2, 1]) <= 1e-12 and r.converged and r.iterations == 5
    # rank-one matrix: breakdown after one step, the rest of the spectrum is 0
    u = torch.ones(20, dtype=torch.float64)
    r = cv.lanczos(cv.DenseOperator(torch.outer(u, u)), k=3, tol=1e-8)
    assert float(r.values[0]) == pytest.approx(20.0) and float(r.values[1:].abs().max()) <= 1e-12


def test_lanczos_callback_reports_ritz_values_and_can_stop(mlp):
    model, ex, H, ev = mlp
    seen = []

    def cb(it, ritz):
        seen.append((it, ritz.clone()))
        return it >= 6

    r = cv.lanczos(cv.HessianOperator(model, ex), k=2, tol=1e-12, callback=cb)
    assert [s[0] for s in seen] == list(range(1, 7)) and r.iterations == 6 and not r.converged
    assert all(len(s[1]) == s[0] and torch.all(s[1][:-1] >= s[1][1:]) for s in seen)
    assert float(seen[-1][1][0]) <= float(ev[-1]) + 1e-12  # Ritz values are interlaced inside the spectrum


def test_eigenvalue_ratio():
    assert cv.eigenvalue_ratio([0.5, 4.0, 2.0, 3.0, 1.0]) == pytest.approx(8.0)
    assert cv.eigenvalue_ratio(torch.tensor([4.0, 2.0]), i=2) == pytest.approx(2.0)
    r = cv.EigenResult(values=torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0], dtype=torch.float64), k=5)
    assert cv.eigenvalue_ratio(r) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="at least 5"):
        cv.eigenvalue_ratio([3.0, 2.0])
    with pytest.raises(ValueError, match="smallest"):
        cv.eigenvalue_ratio(cv.EigenResult(values=torch.ones(5), which="SA", k=5))


# ------------------------------------------------------------------ trace and density
def test_hutchinson_and_hutchpp_trace(mlp):
    model, ex, H, _ = mlp
    exact = float(torch.trace(H))
    op = cv.HessianOperator(model, ex)
    h = cv.hutchinson_trace(op, n_probes=102, seed=0)
    assert h.n_matvecs == 102 and h.samples.shape == (102,) and h.method == "hutchinson"
    assert abs(h.estimate - exact) <= 3 * h.std_error
    hg = cv.hutchinson_trace(op, n_probes=102, seed=1, distribution="gaussian")
    assert abs(hg.estimate - exact) <= 3 * hg.std_error
    pp = cv.hutchpp_trace(op, n_matvecs=102, seed=0)
    assert pp.n_matvecs == 102 and pp.method == "hutch++" and pp.low_rank_trace is not None
    assert abs(pp.estimate - exact) <= 3 * pp.std_error + 1e-9
    assert pp.std_error < h.std_error and abs(pp.estimate - exact) < abs(h.estimate - exact)


def test_spectral_density_slq(mlp):
    model, ex, H, ev = mlp
    op = cv.HessianOperator(model, ex)
    n = op.size
    d = cv.spectral_density(op, n_probes=8, steps=20, seed=0)
    grid, dens = d.grid, d.density
    assert float(torch.trapezoid(dens, grid)) == pytest.approx(1.0, abs=1e-10)
    assert bool((dens > 0).all()) and d.density_floor > 0 and 0.99 < d.mass_in_grid <= 1.0 + 1e-9
    assert len(d.nodes) == len(d.weights) == 8 and d.n_matvecs == 8 * 20
    assert d.sigma == pytest.approx((max(float(t.max()) for t in d.nodes) - min(float(t.min()) for t in d.nodes)) / 20)
    for t, w in zip(d.nodes, d.weights):
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)
        assert float(t.min()) >= float(ev[0]) - 1e-10 and float(t.max()) <= float(ev[-1]) + 1e-10
    # node/weight first moment = Hutchinson sample vᵀHv / n with the same Rademacher probes
    hut = cv.hutchinson_trace(op, n_probes=8, seed=0)
    assert d.trace_estimate == pytest.approx(hut.estimate, rel=1e-10)
    node_moment = float(np.mean([float((w * t).sum()) for t, w in zip(d.nodes, d.weights)]))
    grid_moment = float(torch.trapezoid(grid * dens, grid))
    assert grid_moment == pytest.approx(node_moment, abs=1e-6 * float(ev.abs().max()))
    exact = float(torch.trace(H)) / n
    assert abs(node_moment - exact) <= 3 * d.trace_std_error / n
    # steps >= size: the Krylov space is exhausted (breakdown) and the nodes are eigenvalues themselves.
    # Softmax is invariant to a shift of all logits, so the 7 directions (1,1,1) in the last bias/weight
    # columns are an eigenvalue 0 of multiplicity 7: the Krylov space has 51 - 6 = 45 dimensions.
    full = cv.spectral_density(op, n_probes=1, steps=200, seed=3)
    nodes = full.nodes[0]
    assert len(nodes) == n - 6 and full.n_matvecs == n - 6
    assert float((nodes[:, None] - ev[None, :]).abs().min(1).values.max()) <= 1e-9
    assert int((ev.abs() < 1e-12).sum()) == 7


def test_spectral_density_of_a_known_matrix_has_the_right_mass():
    lam = torch.cat([torch.full((50,), 1.0), torch.full((50,), 5.0)]).double()
    d = cv.spectral_density(cv.DenseOperator(torch.diag(lam)), n_probes=4, steps=10, sigma=0.1)
    g, p = d.grid, d.density
    left = float(torch.trapezoid(p[g < 3], g[g < 3]))
    assert left == pytest.approx(0.5, abs=1e-6)


# ------------------------------------------------------------------ model state
def test_bn_model_unchanged_by_every_algorithm(bn_net):
    model, ex = bn_net
    assert model.training
    snap = snapshot(model)
    H = dense_hessian(model, ex)  # eval-mode Hessian (running statistics, no dropout)
    assert_unchanged(model, snap, "oracle")
    v = torch.randn(H.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for kw in [{}, {"batch_size": 5}, {"method": "func"}]:
        op = cv.HessianOperator(model, ex, **kw)
        assert float((op @ v - H @ v).abs().max()) <= 1e-10, kw
        assert_unchanged(model, snap, f"matvec {kw}")
    op = cv.HessianOperator(model, ex)
    runs = {
        "lanczos": lambda: cv.lanczos(op, k=2, return_vectors=True),
        "lanczos SA": lambda: cv.lanczos(op, k=1, which="SA"),
        "lanczos both": lambda: cv.lanczos(op, k=1, which="both"),
        "eigsh": lambda: cv.eigsh_eigenvalues(op, k=2),
        "power": lambda: cv.power_iteration(op, k=2, max_iter=20),
        "smallest": lambda: cv.smallest_eigenvalues(op),
        "hutchinson": lambda: cv.hutchinson_trace(op, n_probes=5),
        "hutch++": lambda: cv.hutchpp_trace(op, n_matvecs=9),
        "density": lambda: cv.spectral_density(op, steps=10),
        "layerwise": lambda: cv.layerwise(model, ex, what="both", n_probes=6),
        "pyhessian eig": lambda: cv.pyhessian_eigenvalues(model, ex, k=2, max_iter=20),
        "pyhessian trace": lambda: cv.pyhessian_trace(model, ex, max_iter=5),
        "pyhessian batched": lambda: cv.pyhessian_eigenvalues(model, ex, k=1, max_iter=10, batch_size=10),
    }
    for name, fn in runs.items():
        fn()
        assert_unchanged(model, snap, name)
    with pytest.raises(RuntimeError):
        cv.pyhessian_density(model, ex, steps=5)
    assert_unchanged(model, snap, "pyhessian density (raised)")
    op.release()


def test_model_restored_when_an_analysis_raises(bn_net):
    model, ex = bn_net
    snap = snapshot(model)

    def bad_loss(out, y):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        cv.lanczos(cv.HessianOperator(model, ex, bad_loss), k=1)
    assert_unchanged(model, snap, "raising loss")
    with pytest.raises(KeyError), preserved_state(model):
        with torch.no_grad():
            model.features[1].running_mean.add_(1.0)
            model.classifier.weight.mul_(2.0)
        model.eval()
        model.classifier.weight.grad = torch.ones_like(model.classifier.weight)
        raise KeyError("boom")
    assert_unchanged(model, snap, "preserved_state")


def test_pyhessian_keeps_existing_gradients(bn_net):
    model, ex = bn_net
    g0 = torch.full_like(model.classifier.weight, 0.25)
    model.classifier.weight.grad = g0
    cv.pyhessian_eigenvalues(model, ex, k=1, max_iter=5)
    assert model.classifier.weight.grad is g0 and bool((g0 == 0.25).all())
    assert all(p.grad is None for n, p in model.named_parameters() if n != "classifier.weight")


# ------------------------------------------------------------------ PyHessian backend
def test_pyhessian_agrees_with_lanczos_at_convergence(mlp, monkeypatch):
    model, ex, H, ev = mlp
    calls = {"n": 0}
    orig = torch.autograd.grad

    def counting(*a, **k):
        calls["n"] += 1
        return orig(*a, **k)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    p = cv.pyhessian_eigenvalues(model, ex, k=5, tol=1e-9, max_iter=3000, seed=0)
    monkeypatch.undo()
    assert p.n_matvecs == calls["n"] > 0 and p.method == "pyhessian_power_iteration"
    own = cv.lanczos(cv.HessianOperator(model, ex), k=5, tol=1e-6)
    assert rel(p.values, own.values) <= 1e-3 and rel(own.values, ev.flip(0)[:5]) <= 1e-6
    assert p.n_matvecs > 3 * own.n_matvecs
    # the seed makes PyHessian reproducible; the global RNG is left alone
    state = torch.get_rng_state()
    q = cv.pyhessian_eigenvalues(model, ex, k=2, tol=1e-3, seed=4)
    q2 = cv.pyhessian_eigenvalues(model, ex, k=2, tol=1e-3, seed=4)
    assert torch.equal(q.values, q2.values) and q.n_matvecs == q2.n_matvecs
    assert torch.equal(torch.get_rng_state(), state)


def test_pyhessian_trace_within_statistical_error(mlp):
    model, ex, H, _ = mlp
    t = cv.pyhessian_trace(model, ex, max_iter=100, tol=0.0, seed=0)
    assert t.n_probes == t.n_matvecs == 100
    assert abs(t.estimate - float(torch.trace(H))) <= 3 * t.std_error


def test_pyhessian_density_fails_on_current_torch(mlp):
    """PyHessian 0.1 calls the removed torch.eig; when this starts failing, the peer got fixed.

    https://github.com/amirgholami/PyHessian/issues/17
    """
    model, ex, _, _ = mlp
    with pytest.raises(RuntimeError, match="torch.eig|removed"):
        cv.pyhessian_density(model, ex, steps=10)


# ------------------------------------------------------------------ layerwise, persistence
def test_layerwise_matches_dense_blocks(mlp):
    model, ex, H, _ = mlp
    res = cv.layerwise(model, ex, what="both", tol=1e-8, n_probes=300)
    assert res.names == ["0", "2"] and res.n_params == [30, 21]
    sizes = [p.numel() for p in model.parameters()]
    off = np.cumsum([0] + sizes)
    blocks = {"0": slice(off[0], off[2]), "2": slice(off[2], off[4])}
    for i, name in enumerate(res.names):
        B = H[blocks[name], blocks[name]]
        assert float(res.top_eigenvalues[i]) == pytest.approx(float(torch.linalg.eigvalsh(B)[-1]), rel=1e-8)
        # Hutch++ with 100 sketch vectors spans each (<= 30-dim) block: the trace is exact
        assert float(res.traces[i]) == pytest.approx(float(torch.trace(B)), rel=1e-8)
    assert all(res.converged) and res.count == 64
    per_param = cv.layerwise(model, ex, what="top", by="parameter")
    assert per_param.names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert bool(torch.isnan(per_param.traces).all())


def test_results_round_trip(mlp, tmp_path):
    model, ex, _, _ = mlp
    op = cv.HessianOperator(model, ex)
    results = {
        "eig": cv.lanczos(op, k=3, return_vectors=True),
        "eigsh": cv.eigsh_eigenvalues(op, k=2),
        "trace": cv.hutchpp_trace(op, n_matvecs=12),
        "density": cv.spectral_density(op, n_probes=2, steps=8),
        "layers": cv.layerwise(model, ex, what="both", n_probes=6),
    }
    for name, r in results.items():
        back = load_result(save_result(r, tmp_path, name))
        assert type(back) is type(r)
        for f in r.__dataclass_fields__:
            a, b = getattr(r, f), getattr(back, f)
            if a is None:
                assert b is None, f
            elif isinstance(a, list) and a and isinstance(a[0], torch.Tensor):
                assert len(a) == len(b) and all(np.array_equal(x.numpy(), y) for x, y in zip(a, b)), f
            elif isinstance(a, torch.Tensor):
                assert np.array_equal(a.numpy(), b, equal_nan=True), f
            elif isinstance(a, float) and math.isnan(a):
                assert math.isnan(b), f
            else:
                assert a == b, f
    assert cv.eigenvalue_ratio(load_result(tmp_path / "eig.json"), i=3) == pytest.approx(
        cv.eigenvalue_ratio(results["eig"], i=3))


# ------------------------------------------------------------------ training probe
def test_top_eigenvalue_probe_does_not_disturb_training(tmp_path):
    from workbench.presets import quickstart_config
    from workbench.training import ProbeResult, Trainer

    cfg = quickstart_config("sgd", epochs=2, root=str(tmp_path))
    probe = cv.TopEigenvalueProbe(every=1, k=2, count=256, trace=True, n_probes=9)
    events = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failing callback would only warn
        with_probe = Trainer(cfg, probes=[probe], store=False, callbacks=[events.append]).run()
    plain = Trainer(cfg, store=False).run()
    assert with_probe.status == plain.status == "finished"
    recs = [e for e in events if isinstance(e, ProbeResult)]
    assert [r.epoch for r in recs] == [1, 2] and all(r.name == "top_eigenvalue" for r in recs)
    for r in recs:
        v = r.values
        assert math.isfinite(v["lambda_max"]) and v["lambda_max"] > 0 and len(v["eigenvalues"]) == 2
        assert v["eigenvalues"][0] >= v["eigenvalues"][1] and v["n_matvecs"] > 0 and v["count"] == 256
        assert math.isfinite(v["trace"]) and math.isfinite(v["trace_std_error"])
    assert probe.examples.count == 256 and probe.examples.seed == 0
    a, b = with_probe.model.state_dict(), plain.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert with_probe.final_metrics["train_loss"] == plain.final_metrics["train_loss"]
