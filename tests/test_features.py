"""Tests of workbench.analysis.features (feature sparsity, hooks, probe) and workbench.analysis.projections (PCA)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_unchanged, snapshot
from torch import nn

from workbench.analysis import ExampleSet, load_result, save_result
from workbench.analysis.features import (
    FeatureSparsityProbe,
    FeatureSparsityResult,
    collect_activations,
    feature_rank,
    feature_sparsity,
    relu_layers,
    sparsity_of_activation_matrix,
)
from workbench.analysis.projections import ProjectionResult, feature_pca, gradient_pca, groups_from_indices, pca
from workbench.models import DenseNet, LeNet5, ResNet18, WideResNet

# 6 examples x 5 units: u0 and u1 = 2*u0 perfectly correlated, u2 dead, u3/u4 distinct.
HAND = np.array([
    # u0 u1 u2 u3 u4
    [1, 2, 0, 0, 5],
    [0, 0, 0, 1, 5],
    [2, 4, 0, 0, 0],
    [0, 0, 0, 1, 1],
    [3, 6, 0, 1, 0],
    [0, 0, 0, 0, 2],
], dtype=float)


def _examples(x: torch.Tensor, seed: int = 0) -> ExampleSet:
    n = x.shape[0]
    y = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed))
    return ExampleSet(x=x, y=y, index=torch.arange(n) * 3, split="train", seed=None, count=n)






# ------------------------------------------------------------ hand-counted matrix
def test_sparsity_of_hand_built_matrix():
    corr = np.corrcoef(HAND[:, [0, 3, 4]], rowvar=False)
    assert np.max(np.abs(corr - np.eye(3))) < 0.9  # only u0/u1 are highly correlated
    s = sparsity_of_activation_matrix(HAND, tau=0.95)
    assert s["n_examples"] == 6 and s["n_units"] == 5
    assert s["active_fraction"] == pytest.approx(13 / 30)  # non-zeros: 3 + 3 + 0 + 3 + 4
    assert s["dead_units"] == 1
    assert s["n_merged"] == 1 and s["n_distinct"] == 3  # u0 deleted (u1 remains), u1, u3, u4 kept
    assert s["feature_sparsity_coefficient"] == pytest.approx((3 + 3 + 4) / 30)  # denominator: all 5 units
    assert s["tau"] == 0.95
    # a Tensor gives the same
    assert sparsity_of_activation_matrix(torch.tensor(HAND), tau=0.95) == s


def test_tau_changes_the_merge():
    a = HAND[:, 4]
    b = a + np.array([0, 0, 0, 0, 1, 0.0])
    c = np.corrcoef(a, b)[0, 1]
    assert 0.9 < c < 0.99
    A = np.stack([a, b], 1)
    lo = sparsity_of_activation_matrix(A, tau=0.9)
    hi = sparsity_of_activation_matrix(A, tau=0.99)
    assert lo["n_merged"] == 1 and hi["n_merged"] == 0
    assert lo["feature_sparsity_coefficient"] == pytest.approx(5 / 12)  # only b kept (5 non-zeros)
    assert hi["feature_sparsity_coefficient"] == pytest.approx(9 / 12) == hi["active_fraction"]
    # anti-correlated units merge only with absolute=True (reference code compares |corr|)
    x = np.array([1.0, 2, 3, 0])
    B = np.stack([x, 4 - x], 1)
    assert sparsity_of_activation_matrix(B)["n_merged"] == 0
    assert sparsity_of_activation_matrix(B, absolute=True)["n_merged"] == 1
    # a constant (zero-variance) active unit has no correlation and is never merged
    C = np.stack([np.ones(4), np.ones(4), x], 1)
    assert sparsity_of_activation_matrix(C)["n_merged"] == 0


def test_feature_rank_99_known_spectrum_and_centring():
    rng = np.random.default_rng(0)
    n, k = 40, 12
    Q1, _ = np.linalg.qr(np.column_stack([np.ones(n), rng.standard_normal((n, 3))]))
    Q2, _ = np.linalg.qr(rng.standard_normal((k, 3)))
    A = Q1[:, 1:4] @ np.diag([10.0, 1.0, 0.5]) @ Q2.T + 50.0  # column offsets vanish after centring over examples
    # energies 100, 1, 0.25: 98.8 % with one component, 99.75 % with two
    assert feature_rank(A, 0.99) == 2
    assert feature_rank(A, 0.98) == 1
    assert feature_rank(A, 0.999) == 3
    assert sparsity_of_activation_matrix(A)["feature_rank_99"] == 2
    assert feature_rank(A, 0.99, center=False) == 1  # the offset dominates uncentred
    assert feature_rank(np.ones((5, 3))) == 0


# ----------------------------------------------------------------------- hooks
class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc = nn.Linear(3, 5), nn.Linear(5, 4), nn.Linear(4, 2)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.fc(self.relu(self.fc2(self.relu(self.fc1(x)))))


def test_hooks_see_both_calls_of_a_module_used_twice():
    torch.manual_seed(0)
    m = Twice()
    x = torch.randn(7, 3)
    layers = relu_layers(m, x[:1])
    assert [(L.name, L.module, L.call, L.shape) for L in layers] == [("relu#1", "relu", 1, (5,)),
                                                                     ("relu#2", "relu", 2, (4,))]
    acts = collect_activations(m, _examples(x), batch_size=3)
    with torch.no_grad():
        h1 = torch.relu(m.fc1(x))
        h2 = torch.relu(m.fc2(h1))
    torch.testing.assert_close(acts.values["relu#1"], h1, atol=1e-6, rtol=0)  # batch sizes differ
    torch.testing.assert_close(acts.values["relu#2"], h2, atol=1e-6, rtol=0)
    only = collect_activations(m, _examples(x), layers="relu#2")
    assert list(only.values) == ["relu#2"]
    with pytest.raises(ValueError, match="unknown layers"):
        collect_activations(m, _examples(x), layers=["relu"])
    # torchvision BasicBlock reuses its ReLU: two layers per block
    names = [L.name for L in relu_layers(ResNet18(1, 10, width=0.125), torch.randn(1, 1, 8, 8))]
    assert "layer1.0.relu#1" in names and "layer1.0.relu#2" in names and len(names) == 17


def test_wide_resnet_and_densenet_expose_every_relu():
    x = torch.randn(1, 3, 8, 8)
    wrn = [L.name for L in relu_layers(WideResNet(3, 10, depth=10, widen_factor=1), x)]
    assert len(wrn) == 3 * 2 + 1 and wrn[-1] == "relu" and "block2.0.relu2" in wrn
    dn = [L.name for L in relu_layers(DenseNet(3, 10, depth=10, growth_rate=4), x)]
    assert len(dn) == 3 * 2 + 2 + 1  # 2 layers per block, 2 transitions, final
    dnbc = relu_layers(DenseNet(3, 10, depth=10, growth_rate=4, bottleneck=True), x)
    assert len(dnbc) == 3 * 2 + 2 + 1
    with pytest.raises(ValueError, match="no nn.ReLU"):
        relu_layers(nn.Sequential(nn.Flatten(), nn.Linear(192, 2)), x)


# ------------------------------------------------------------- model-level result
def test_feature_sparsity_lenet5(tmp_path):
    torch.manual_seed(0)
    m = LeNet5(1, 8, 10)
    m.train()
    snap = snapshot(m)
    ex = _examples(torch.randn(48, 1, 8, 8))
    r = feature_sparsity(m, ex, batch_size=20, max_units=100, seed=1)
    assert isinstance(r, FeatureSparsityResult)
    assert r.layers == [L.name for L in relu_layers(m, ex.x[:1])] and len(r.layers) == 4
    for arr in (r.feature_sparsity_coefficient, r.active_fraction):
        assert arr.shape == (4,) and np.all((arr >= 0) & (arr <= 1))
    assert np.all(r.feature_sparsity_coefficient <= r.active_fraction + 1e-12)
    assert np.all(r.n_units == np.minimum(r.total_units, 100))
    assert np.all(r.n_distinct + r.n_merged + r.dead_units == r.n_units)
    assert np.all((r.feature_rank_99 >= 0) & (r.feature_rank_99 <= np.minimum(r.n_units, 48)))
    assert r.count == 48 and r.tau == 0.95 and r.seed == 1
    assert_unchanged(m, snap)
    # same numbers as the low-level function on the collected activations
    acts = collect_activations(m, ex, max_units=100, seed=1)
    s = sparsity_of_activation_matrix(acts.values[r.layers[1]])
    assert r.layer(r.layers[1])["feature_sparsity_coefficient"] == pytest.approx(s["feature_sparsity_coefficient"])
    r2 = load_result(save_result(r, tmp_path, "fs"))
    assert r2.layers == r.layers and r2.max_units == 100
    np.testing.assert_array_equal(r2.feature_sparsity_coefficient, r.feature_sparsity_coefficient)
    np.testing.assert_array_equal(r2.dead_units, r.dead_units)
    assert r2.rows() == r.rows()


def test_feature_sparsity_probe_in_training_does_not_disturb_it():
    from workbench.presets import quickstart_config
    from workbench.training import ProbeResult, Trainer

    cfg = quickstart_config("sgd", epochs=2, root="unused")
    events = []
    probe = FeatureSparsityProbe(every=1, count=256, max_units=200)
    with_probe = Trainer(cfg, probes=[probe], callbacks=[events.append], store=False).run()
    without = Trainer(cfg, store=False).run()
    results = [e for e in events if isinstance(e, ProbeResult)]
    assert [e.epoch for e in results] == [1, 2] and all(e.name == "feature_sparsity" for e in results)
    for e in results:
        v = e.values
        assert len(v["layers"]) == 4 and v["count"] == 256
        assert all(len(v[k]) == 4 for k in ("fsc", "active_fraction", "dead_units", "rank_99"))
        assert all(0 <= f <= a <= 1 for f, a in zip(v["fsc"], v["active_fraction"]))
        import json

        json.dumps(v)  # JSON-able
    a, b = with_probe.model.state_dict(), without.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert with_probe.final_metrics["train_loss"] == without.final_metrics["train_loss"]


# ------------------------------------------------------------------------ PCA
def _matrix(n=60, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * np.linspace(3, 0.5, d) + 4.0


def test_pca_matches_sklearn_and_is_centred():
    from sklearn.decomposition import PCA

    X = _matrix()
    r = pca(X, 3)
    assert isinstance(r, ProjectionResult) and r.method == "pca/full" and r.center and r.n_features == 8
    evr = r.explained_variance_ratio
    assert np.all(np.diff(evr) <= 0) and np.all(evr <= 1) and evr.sum() <= 1
    np.testing.assert_allclose(r.coords.mean(axis=0), 0, atol=1e-10)
    ref = PCA(n_components=3).fit(X)
    np.testing.assert_allclose(r.coords, ref.transform(X), atol=1e-10)
    np.testing.assert_allclose(evr, ref.explained_variance_ratio_, atol=1e-12)
    np.testing.assert_allclose(r.components, ref.components_, atol=1e-12)
    # a Tensor gives the same projection
    np.testing.assert_allclose(pca(torch.tensor(X), 3).coords, r.coords, atol=1e-12)
    # large D: randomized solver, same as sklearn's
    Y = np.random.default_rng(1).standard_normal((40, 1500))
    ry = pca(Y, 2, seed=0)
    assert ry.method == "pca/randomized"
    np.testing.assert_allclose(ry.coords, PCA(2, svd_solver="randomized", random_state=0).fit_transform(Y),
                               atol=1e-8)
    with pytest.raises(ValueError, match="n_components"):
        pca(X, 9)


def test_uncentred_svd_energy_ratio():
    X = _matrix()
    r = pca(X, 2, center=False)
    U, S, Vt = np.linalg.svd(X, full_matrices=False)
    np.testing.assert_allclose(np.abs(r.coords), np.abs(U[:, :2] * S[:2]), atol=1e-10)
    np.testing.assert_allclose(r.explained_variance_ratio, S[:2] ** 2 / (S ** 2).sum(), atol=1e-12)
    assert r.method == "svd/full" and not r.center


def test_pca_groups_labels_index_and_roundtrip(tmp_path):
    X = _matrix(n=10)
    index = np.arange(10) + 500
    groups = groups_from_indices(index, {"poison": [502, 503, 507], "effective poison": [503]})
    assert groups == ["clean", "clean", "poison", "effective poison", "clean", "clean", "clean", "poison",
                      "clean", "clean"]
    labels = np.arange(10) % 3
    r = pca(X, 2, labels=labels, groups=groups, index=index)
    assert r.groups == groups and np.array_equal(r.labels, labels) and np.array_equal(r.index, index)
    r2 = load_result(save_result(r, tmp_path, "pca"))
    assert isinstance(r2, ProjectionResult)
    np.testing.assert_array_equal(r2.coords, r.coords)
    np.testing.assert_array_equal(r2.explained_variance_ratio, r.explained_variance_ratio)
    np.testing.assert_array_equal(r2.components, r.components)
    np.testing.assert_array_equal(r2.labels, labels)
    np.testing.assert_array_equal(r2.index, index)
    assert r2.groups == groups and r2.method == r.method and r2.source == "matrix"
    r3 = load_result(save_result(pca(X, 2, keep_components=False), tmp_path, "nocomp"))
    assert r3.components is None and r3.labels is None and r3.groups is None
    with pytest.raises(ValueError, match="groups has"):
        pca(X, 2, groups=groups[:3])


def test_gradient_and_feature_pca_on_lenet():
    torch.manual_seed(0)
    m = LeNet5(1, 8, 10)
    snap = snapshot(m)
    ex = _examples(torch.randn(30, 1, 8, 8))
    groups = groups_from_indices(ex.index, {"poison": [0, 3]})
    for kind, d in (("logits", 10), ("last_input", 84), ("weights", 850)):
        r = gradient_pca(m, ex, kind, groups=groups)
        assert r.coords.shape == (30, 2) and r.n_features == d and r.source == f"gradients:{kind}"
        assert r.groups == groups and np.array_equal(r.labels, ex.y.numpy())
        assert np.array_equal(r.index, ex.index.numpy())
    rf = gradient_pca(m, ex, "full", params="classifier")
    assert rf.n_features == sum(p.numel() for p in m.classifier.parameters())
    fp = feature_pca(m, ex, "classifier.3", n_components=3)
    assert fp.coords.shape == (30, 3) and fp.n_features == 84 and fp.source == "features:classifier.3"
    assert_unchanged(m, snap)
