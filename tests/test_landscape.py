"""Loss-landscape analysis: directions, interpolation, slices, planes (workbench.analysis.landscape)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import assert_unchanged, snapshot
from torch import nn

from workbench.analysis.common import ExampleSet, load_result, save_result
from workbench.analysis.landscape import (
    Direction,
    InterpolationResult,
    PlaneResult,
    SliceResult,
    cache_key,
    eigenvector_direction,
    interpolate,
    interpolated_model,
    model_fingerprint,
    perturbed_model,
    plane_2d,
    random_direction,
    recompute_bn_stats,
    slice_1d,
    target_direction,
)
from workbench.training.evaluate import evaluate


# ------------------------------------------------------------------ fixtures
class BNNet(nn.Module):
    """conv-BN-ReLU-conv-BN-ReLU-pool-linear on 1x8x8 images."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.features(x))


def mlp(seed: int, dtype=torch.float32) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)


def examples(n: int, shape, seed: int, split: str = "train", dtype=torch.float32) -> ExampleSet:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, 3, (n,), generator=g)
    return ExampleSet(x=x, y=y, index=torch.arange(n), split=split, seed=seed, count=n)


def bn_net(seed: int) -> BNNet:
    torch.manual_seed(seed)
    net = BNNet()
    # non-trivial running statistics: a few train-mode passes on shifted data
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, 1, 8, 8) * (1 + seed) + 0.5 * seed)
    net.eval()
    return net






@pytest.fixture(scope="module")
def img_data():
    return {"train": examples(64, (1, 8, 8), 1, "train"), "test": examples(48, (1, 8, 8), 2, "test")}


@pytest.fixture(scope="module")
def vec_data():
    return {"train": examples(64, (6,), 3, "train"), "test": examples(40, (6,), 4, "test")}


# ------------------------------------------------------------------ interpolation
def test_interpolation_endpoints_keep_bn(img_data):
    a, b = bn_net(0), bn_net(1)
    res = interpolate(a, b, img_data, alphas=[0.0, 0.5, 1.0], bn="keep")
    assert isinstance(res, InterpolationResult) and res.bn == "keep"
    for split, es in img_data.items():
        la, aa = evaluate(a, es.x, es.y)
        lb, ab = evaluate(b, es.x, es.y)
        assert res.loss[split][2] == pytest.approx(la, abs=1e-12) and res.acc[split][2] == aa  # alpha = 1: model_a
        assert res.loss[split][0] == pytest.approx(lb, abs=1e-12) and res.acc[split][0] == ab  # alpha = 0: model_b
    assert res.examples["train"] == img_data["train"].describe()
    assert "Eq. 2.5" in res.convention


def test_interpolation_endpoints_recompute_without_bn(vec_data):
    a, b = mlp(0), mlp(1)
    res = interpolate(a, b, vec_data, alphas=[1.0, 0.0, 0.3], bn="recompute")  # no BN: nothing to recompute
    for split, es in vec_data.items():
        assert res.loss[split][0] == pytest.approx(evaluate(a, es.x, es.y)[0], abs=1e-12)
        assert res.loss[split][1] == pytest.approx(evaluate(b, es.x, es.y)[0], abs=1e-12)
        assert res.acc[split][0] == evaluate(a, es.x, es.y)[1]
    # default grid: [-0.5, 1.5] in steps of 0.05
    full = interpolate(a, b, vec_data["test"], bn="keep")
    assert len(full.alphas) == 41 and full.alphas[0] == -0.5 and full.alphas[-1] == 1.5
    assert list(full.loss) == ["test"]


def test_interpolation_is_linear_in_weights(vec_data):
    a, b = mlp(0), mlp(1)
    m = interpolated_model(a, b, 0.25, bn="keep")
    for (k, pa), pb, pm in zip(a.named_parameters(), b.parameters(), m.parameters()):
        assert torch.allclose(pm, 0.25 * pa + 0.75 * pb), k


def test_models_unchanged_by_all_evaluations(img_data):
    a, b = bn_net(0), bn_net(1)
    a.train()               # odd modes on purpose: they must come back as they were
    a.features[1].eval()
    sa, sb = snapshot(a), snapshot(b)
    interpolate(a, b, img_data, alphas=[0.0, 0.5, 1.0], bn="recompute", bn_data=img_data["train"])
    interpolate(a, b, img_data, alphas=[0.0, 0.5], bn="keep")
    d1, d2 = random_direction(a, seed=0), random_direction(a, seed=1, dir_type="states", bias_bn="keep")
    slice_1d(a, d1, img_data, alphas=[-1.0, 0.0, 1.0])
    slice_1d(a, d2, img_data, alphas=[-1.0, 1.0], bn="recompute")
    plane_2d(a, d1, d2, img_data, alphas=[-1.0, 1.0], betas=[0.0, 1.0])
    interpolated_model(a, b, 0.5, bn="recompute", bn_data=img_data["train"])
    perturbed_model(a, [d1], [0.5], bn="recompute", bn_data=img_data["train"])
    assert_unchanged(a, sa)
    assert_unchanged(b, sb)


def test_recompute_bn_changes_scratch_stats_only(img_data):
    a, b = bn_net(0), bn_net(2)
    sa, sb = snapshot(a), snapshot(b)
    train = img_data["train"]
    mid = interpolated_model(a, b, 0.5, bn="recompute", bn_data=train, batch_size=1024)
    kept = interpolated_model(a, b, 0.5, bn="keep")
    bn_mid, bn_kept = mid.features[1], kept.features[1]
    assert torch.allclose(bn_kept.running_mean, 0.5 * a.features[1].running_mean + 0.5 * b.features[1].running_mean)
    assert not torch.allclose(bn_mid.running_mean, bn_kept.running_mean, atol=1e-3)
    # one batch of all examples: the running statistics are that batch's statistics
    with torch.no_grad():
        h = mid.features[0](train.x)
    assert torch.allclose(bn_mid.running_mean, h.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn_mid.running_var, h.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4)
    assert bn_mid.momentum == a.features[1].momentum and not mid.training
    # recompute vs keep really differ along the path; originals untouched
    r = interpolate(a, b, img_data, alphas=[0.5, 1.0], bn="recompute", bn_data=train)
    k = interpolate(a, b, img_data, alphas=[0.5, 1.0], bn="keep")
    assert abs(r.loss["test"][0] - k.loss["test"][0]) > 1e-4
    assert r.bn_data == train.describe() and k.bn_data is None
    # alpha = 1 with recompute = model_a with statistics re-estimated on the same data
    a2 = copy.deepcopy(a)
    assert recompute_bn_stats(a2, train) == 2
    assert r.loss["test"][1] == pytest.approx(evaluate(a2, img_data["test"].x, img_data["test"].y)[0], abs=1e-6)
    assert_unchanged(a, sa)
    assert_unchanged(b, sb)
    with pytest.raises(ValueError, match="bn_data"):
        interpolate(a, b, {"test": img_data["test"]}, alphas=[0.5], bn="recompute")


# ------------------------------------------------------------------ directions
def test_filter_normalization_invariance():
    """Rescaling a ReLU layer by c and the next layer's inputs by 1/c keeps the function; the
    filter-normalised slice is the same, the un-normalised one is not (Li et al. 2018)."""
    data = examples(64, (6,), 5, "train", dtype=torch.float64)
    net = mlp(3, torch.float64)
    scaled = copy.deepcopy(net)
    c = 3.0
    with torch.no_grad():
        scaled[0].weight.mul_(c)
        scaled[0].bias.mul_(c)
        scaled[2].weight.div_(c)      # the input columns of the next layer (all of them: every filter scaled)
    assert torch.allclose(net(data.x), scaled(data.x), atol=1e-12)
    alphas = np.linspace(-1, 1, 9)
    for normalization, bias_bn in [("filter", "zero"), ("filter", "normalize"), ("layer", "zero")]:
        r1 = slice_1d(net, random_direction(net, seed=7, normalization=normalization, bias_bn=bias_bn), data, alphas)
        r2 = slice_1d(scaled, random_direction(scaled, seed=7, normalization=normalization, bias_bn=bias_bn),
                      data, alphas)
        np.testing.assert_allclose(r1.loss["train"], r2.loss["train"], atol=1e-6, rtol=0)
        assert np.ptp(r1.loss["train"]) > 1e-2          # the slice is not flat
    r1 = slice_1d(net, random_direction(net, seed=7, normalization="none"), data, alphas)
    r2 = slice_1d(scaled, random_direction(scaled, seed=7, normalization="none"), data, alphas)
    assert np.max(np.abs(r1.loss["train"] - r2.loss["train"])) > 1e-3


def test_filter_norms_match_model():
    net = bn_net(0)
    d = random_direction(net, seed=0)
    for name, p in net.named_parameters():
        t = d.tensors[name]
        if p.dim() > 1:
            torch.testing.assert_close(t.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))
        else:
            assert torch.count_nonzero(t) == 0, name          # bias_bn="zero": biases and BN weight/bias zeroed
    assert d.meta["normalization"] == "filter" and d.meta["bias_bn"] == "zero" and d.meta["seed"] == 0
    layer = random_direction(net, seed=0, normalization="layer", bias_bn="normalize")
    for name, p in net.named_parameters():
        assert float(layer.tensors[name].norm()) == pytest.approx(float(p.detach().norm()), rel=1e-5), name
    keep = random_direction(net, seed=0, bias_bn="keep")
    assert torch.count_nonzero(keep.tensors["fc.bias"]) == 3
    assert "features.1.running_mean" not in d.tensors
    assert "features.1.running_mean" in random_direction(net, dir_type="states", bias_bn="keep").tensors


def test_random_direction_gaussian_and_seeded():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(60, 50), nn.ReLU(), nn.Linear(50, 3))
    d = random_direction(net, seed=11, normalization="none", bias_bn="keep")
    v = torch.cat([t.reshape(-1) for t in d.tensors.values()]).double()
    assert v.numel() == sum(p.numel() for p in net.parameters()) > 3000
    assert abs(float(v.mean())) < 0.06 and 0.95 < float(v.std()) < 1.05
    assert 0.4 < float((v > 0).double().mean()) < 0.6          # not uniform [0, 1): signs are mixed
    kurt = float(((v - v.mean()) ** 4).mean() / v.var(unbiased=False) ** 2) - 3
    assert abs(kurt) < 0.3                                     # Gaussian (uniform would be -1.2)
    same = random_direction(net, seed=11, normalization="none", bias_bn="keep")
    other = random_direction(net, seed=12, normalization="none", bias_bn="keep")
    assert all(torch.equal(d.tensors[k], same.tensors[k]) for k in d.tensors)
    assert not torch.equal(d.tensors["0.weight"], other.tensors["0.weight"])
    assert not torch.equal(d.tensors["0.weight"].flatten()[:50], d.tensors["2.weight"].flatten()[:50])
    assert d.kind == "random" and d.meta["distribution"] == "gaussian"
    assert d.scaled(2.0).norm() == pytest.approx(2 * d.norm()) and d.scaled(2.0).meta["scale"] == 2.0


def test_target_direction(img_data):
    a, b = bn_net(0), bn_net(1)
    d = target_direction(a, b)
    assert d.kind == "target" and set(d.tensors) == {k for k, _ in a.named_parameters()}
    torch.testing.assert_close(d.tensors["fc.weight"], b.fc.weight - a.fc.weight)
    ds = target_direction(a, b, dir_type="states")
    res = slice_1d(a, ds, img_data, alphas=[0.0, 1.0])
    for split, es in img_data.items():
        assert res.loss[split][0] == pytest.approx(evaluate(a, es.x, es.y)[0], abs=1e-12)
        assert res.loss[split][1] == pytest.approx(evaluate(b, es.x, es.y)[0], abs=1e-5)
    with pytest.raises(ValueError, match="same parameters"):
        target_direction(a, mlp(0))
    wide = BNNet()
    wide.fc = nn.Linear(6, 4)
    with pytest.raises(ValueError, match="shape"):
        target_direction(a, wide)
    with pytest.raises(ValueError):
        interpolate(a, wide, img_data, alphas=[0.5])


def test_eigenvector_direction_round_trip():
    net = bn_net(0)
    net.features[1].weight.requires_grad_(False)        # frozen: not in the default flat vector
    names = [k for k, p in net.named_parameters() if p.requires_grad]
    n = sum(p.numel() for p in net.parameters() if p.requires_grad)
    v = torch.randn(n, generator=torch.Generator().manual_seed(0))
    d = eigenvector_direction(net, v)
    assert d.kind == "eigenvector" and list(d.tensors) == names
    assert "features.1.weight" not in d.tensors
    assert torch.equal(d.to_vector(names), v)
    assert d.norm() == pytest.approx(float(v.double().norm()))
    sub = ["fc.weight", "fc.bias"]
    d2 = eigenvector_direction(net, np.arange(21.0), param_names=sub)
    assert torch.equal(d2.tensors["fc.bias"], torch.tensor([18.0, 19.0, 20.0]))
    with pytest.raises(ValueError, match="entries"):
        eigenvector_direction(net, v[:-1])
    with pytest.raises(ValueError, match="unknown"):
        eigenvector_direction(net, v, param_names=["nope"])


# ------------------------------------------------------------------ slices, planes, results
def test_plane_grid_and_center(img_data):
    net = bn_net(0)
    d1, d2 = random_direction(net, seed=0), random_direction(net, seed=1)
    calls = []
    alphas, betas = [-1.0, 0.0, 0.5], [-0.5, 0.0, 0.5, 1.0]
    res = plane_2d(net, d1, d2, img_data, alphas=alphas, betas=betas, callback=lambda *a: calls.append(a))
    assert isinstance(res, PlaneResult) and res.bn == "keep"
    assert res.loss["train"].shape == (4, 3) and res.acc["test"].shape == (4, 3)
    for split, es in img_data.items():
        assert res.loss[split][1, 1] == pytest.approx(evaluate(net, es.x, es.y)[0], abs=1e-12)
    assert len(calls) == 12 and [c[0] for c in calls] == list(range(12))
    k, (a, b), vals = calls[7]
    j, i = divmod(k, len(alphas))
    assert (a, b) == (alphas[i], betas[j]) and vals["train"][0] == res.loss["train"][j, i]
    assert -1 <= res.cosine <= 1 and len(res.directions) == 2


def test_callback_once_per_point(vec_data):
    a, b = mlp(0), mlp(1)
    calls = []
    interpolate(a, b, vec_data, alphas=np.linspace(0, 1, 5), callback=lambda *x: calls.append(x))
    assert [c[0] for c in calls] == list(range(5)) and [c[1] for c in calls] == list(np.linspace(0, 1, 5))
    assert set(calls[0][2]) == {"train", "test"} and len(calls[0][2]["train"]) == 2
    calls.clear()
    res = slice_1d(a, random_direction(a), vec_data, alphas=[-0.5, 0.0, 0.5], callback=lambda *x: calls.append(x))
    assert len(calls) == 3 and calls[2][2]["test"][0] == res.loss["test"][2]
    assert res.loss["test"][1] == pytest.approx(evaluate(a, vec_data["test"].x, vec_data["test"].y)[0], abs=1e-12)


def _same(r1, r2):
    assert type(r1) is type(r2)
    for f in r1.__dataclass_fields__:
        v1, v2 = getattr(r1, f), getattr(r2, f)
        if isinstance(v1, dict) and v1 and isinstance(next(iter(v1.values())), np.ndarray):
            assert list(v1) == list(v2)
            for k in v1:
                np.testing.assert_array_equal(v1[k], v2[k])
        elif isinstance(v1, np.ndarray):
            np.testing.assert_array_equal(v1, v2)
        elif isinstance(v1, float):
            assert v1 == v2 or (np.isnan(v1) and np.isnan(v2))
        else:
            assert v1 == v2 or (isinstance(v1, tuple) and list(v1) == v2), f


def test_results_save_load_round_trip(tmp_path, vec_data):
    a, b = mlp(0), mlp(1)
    d1, d2 = random_direction(a, seed=0), random_direction(a, seed=1)
    results = {
        "interp": interpolate(a, b, vec_data, alphas=[0.0, 0.5, 1.0]),
        "slice": slice_1d(a, d1, vec_data, alphas=[-1.0, 0.0, 1.0]),
        "plane": plane_2d(a, d1, d2, vec_data, alphas=[-1.0, 1.0], betas=[-1.0, 0.0, 1.0]),
    }
    for name, r in results.items():
        path = save_result(r, tmp_path, name)
        back = load_result(path)
        _same(r, back)
        assert isinstance(back.loss["train"], np.ndarray)
    assert isinstance(results["slice"], SliceResult)
    assert load_result(tmp_path / "plane.json").loss["test"].shape == (3, 2)


def test_cache_key_stable_and_sensitive(vec_data):
    a = mlp(0)
    d = random_direction(a, seed=0)
    alphas = np.linspace(-1, 1, 5)
    k1 = cache_key(fn="slice_1d", model=a, direction=d, examples=vec_data, alphas=alphas, bn="keep")
    k2 = cache_key(bn="keep", alphas=alphas.copy(), examples=dict(reversed(list(vec_data.items()))),
                   direction=random_direction(copy.deepcopy(a), seed=0), model=copy.deepcopy(a), fn="slice_1d")
    assert k1 == k2 and isinstance(k1, str) and len(k1) >= 32
    assert k1 != cache_key(fn="slice_1d", model=a, direction=d, examples=vec_data, alphas=alphas, bn="recompute")
    assert k1 != cache_key(fn="slice_1d", model=a, direction=random_direction(a, seed=1), examples=vec_data,
                           alphas=alphas, bn="keep")
    b = copy.deepcopy(a)
    with torch.no_grad():
        b[0].weight[0, 0] += 1e-6
    assert model_fingerprint(a) != model_fingerprint(b)
    assert k1 != cache_key(fn="slice_1d", model=b, direction=d, examples=vec_data, alphas=alphas, bn="keep")
    with pytest.raises(TypeError):
        cache_key(x=object())


def test_direction_validation(vec_data):
    a = mlp(0)
    with pytest.raises(ValueError, match="kind"):
        Direction({"0.weight": torch.zeros(10, 6)}, kind="weird")
    bad = Direction({"0.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="shape"):
        slice_1d(a, bad, vec_data, alphas=[0.0])
    with pytest.raises(ValueError, match="normalization"):
        random_direction(a, normalization="filterwise")
    with pytest.raises(ValueError, match="bn"):
        slice_1d(a, random_direction(a), vec_data, alphas=[0.0], bn="train")
