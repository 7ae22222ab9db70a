"""Tests of workbench.analysis.gradients: per-example gradients, last-layer proxies, cosines, SAM cos(g, g′)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_unchanged, snapshot
from torch import nn

from workbench.analysis import ExampleSet, load_result, save_result
from workbench.analysis.gradients import (
    CosineHistory,
    GradientCosineResult,
    HistogramResult,
    SamCosineTracker,
    _triu_pairs,
    class_mean_cosines,
    cosine_histogram,
    cosine_to_reference,
    find_last_linear,
    gradient_cosines,
    last_layer_gradients,
    pairwise_within_class_cosines,
    per_example_gradients,
    sam_cosines_from_steps,
)


class Tiny(nn.Module):
    """conv - BN - ReLU - fc1 - ReLU - fc on 1x4x4 inputs (float64 in the tests)."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(3 * 4 * 4, 8)
        self.relu2 = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        h = self.relu(self.bn(self.conv(x))).flatten(1)
        return self.fc(self.relu2(self.fc1(h)))


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = Tiny().double()
    m.train()
    with torch.no_grad():  # non-trivial running statistics, so eval-mode BN differs from train mode
        for _ in range(3):
            m(torch.randn(16, 1, 4, 4, dtype=torch.float64) * 2 + 0.5)
    return m


def _examples(n: int = 10, seed: int = 1, classes: int = 4) -> ExampleSet:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    return ExampleSet(x=x, y=y, index=torch.arange(100, 100 + n), split="train", seed=None, count=n)






def _loop_gradients(m: nn.Module, ex: ExampleSet, names) -> torch.Tensor:
    """Reference: one autograd.grad call per example, eval mode."""
    import copy

    ref = copy.deepcopy(m).eval()
    params = dict(ref.named_parameters())
    rows = []
    for i in range(ex.count):
        loss = F.cross_entropy(ref(ex.x[i:i + 1]), ex.y[i:i + 1])
        gs = torch.autograd.grad(loss, [params[n] for n in names])
        rows.append(torch.cat([g.reshape(-1) for g in gs]))
    return torch.stack(rows)


# ------------------------------------------------------------- per-example gradients
def test_per_example_gradients_match_loop_all_params():
    m, ex = _tiny(), _examples()
    m.fc1.eval()  # mixed modes must be restored as they were
    snap = snapshot(m)
    G = per_example_gradients(m, ex, batch_size=4)
    names = [n for n, _ in m.named_parameters()]
    ref = _loop_gradients(m, ex, names)
    assert G.shape == (ex.count, sum(p.numel() for p in m.parameters()))
    assert G.dtype == torch.float64
    torch.testing.assert_close(G, ref, atol=1e-6, rtol=0)
    assert (G - ref).abs().max() < 1e-10
    assert_unchanged(m, snap)


def test_per_example_gradients_subset_prefix_and_dict():
    m, ex = _tiny(), _examples()
    snap = snapshot(m)
    G = per_example_gradients(m, ex, params=["fc1.weight", "conv.bias"])  # returned in model order
    ref = _loop_gradients(m, ex, ["conv.bias", "fc1.weight"])
    torch.testing.assert_close(G, ref, atol=1e-6, rtol=0)
    # a module prefix selects that module only ("fc" is not "fc1")
    Gfc = per_example_gradients(m, ex, params="fc")
    torch.testing.assert_close(Gfc, _loop_gradients(m, ex, ["fc.weight", "fc.bias"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(per_example_gradients(m, ex, params="last"), Gfc, atol=0, rtol=0)
    d = per_example_gradients(m, ex, params="fc", flatten=False)
    assert set(d) == {"fc.weight", "fc.bias"} and d["fc.weight"].shape == (ex.count, 4, 8)
    torch.testing.assert_close(torch.cat([d["fc.weight"].flatten(1), d["fc.bias"]], 1), Gfc, atol=0, rtol=0)
    assert_unchanged(m, snap)


def test_per_example_gradients_errors():
    m, ex = _tiny(), _examples()
    with pytest.raises(ValueError, match="params='last'"):
        per_example_gradients(m, ex, max_params=10)
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        per_example_gradients(m, ex, params="nope")
    with pytest.raises(ValueError, match="unknown or frozen"):
        per_example_gradients(m, ex, params=["fc.weight", "missing"])


# ------------------------------------------------------------------ last-layer proxies
def test_last_layer_logits_proxy():
    m, ex = _tiny(), _examples()
    snap = snapshot(m)
    P = last_layer_gradients(m, ex, "logits", batch_size=3)
    import copy

    ref = copy.deepcopy(m).eval()
    with torch.no_grad():
        z = ref(ex.x)
    by_hand = torch.softmax(z, 1) - F.one_hot(ex.y, 4).double()
    torch.testing.assert_close(P, by_hand, atol=1e-12, rtol=0)
    zz = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(zz, ex.y, reduction="sum"), zz)
    torch.testing.assert_close(P, g, atol=1e-12, rtol=0)
    assert_unchanged(m, snap)


def test_last_layer_input_proxy():
    m, ex = _tiny(), _examples()
    snap = snapshot(m)
    P = last_layer_gradients(m, ex, "last_input")
    import copy

    ref = copy.deepcopy(m).eval()
    store = {}

    def hook(mod, inp, out):
        inp[0].retain_grad()
        store["h"] = inp[0]

    ref.fc.register_forward_hook(hook)
    F.cross_entropy(ref(ex.x), ex.y, reduction="sum").backward()
    assert P.shape == (ex.count, 8)
    torch.testing.assert_close(P, store["h"].grad, atol=1e-12, rtol=0)
    assert_unchanged(m, snap)


def test_last_layer_weights_proxy_equals_per_example_gradients():
    m, ex = _tiny(), _examples()
    W = last_layer_gradients(m, ex, "weights")
    G = per_example_gradients(m, ex, params=["fc.weight", "fc.bias"])
    assert W.shape == (ex.count, 4 * 8 + 4)
    torch.testing.assert_close(W, G, atol=1e-10, rtol=0)


def test_find_last_linear_errors():
    x = torch.randn(2, 1, 4, 4)
    assert find_last_linear(_tiny().float(), x)[0] == "fc"
    with pytest.raises(ValueError, match="no nn.Linear"):
        find_last_linear(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), x)
    with pytest.raises(ValueError, match="does not produce the model output"):
        find_last_linear(nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Tanh()), x)
    with pytest.raises(ValueError, match="kind="):
        last_layer_gradients(_tiny(), _examples(), "penultimate")


# ---------------------------------------------------------------------- cosines
def test_cosine_helpers_identical_and_opposite():
    v = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    G = torch.stack([v, 2 * v, -v, -0.5 * v])
    np.testing.assert_allclose(cosine_to_reference(G, v), [1, 1, -1, -1], atol=1e-12)
    np.testing.assert_allclose(cosine_to_reference(G.numpy(), "mean"), [1, 1, -1, -1], atol=1e-12)  # mean = 0.625 v
    assert np.isnan(cosine_to_reference(torch.zeros(1, 3), v)[0])  # undefined for a zero gradient
    y = torch.tensor([0, 0, 1, 1])
    np.testing.assert_allclose(class_mean_cosines(G, y), [1, 1, 1, 1], atol=1e-12)
    np.testing.assert_allclose(class_mean_cosines(G, y, leave_one_out=True), [1, 1, 1, 1], atol=1e-12)
    pw = pairwise_within_class_cosines(torch.stack([v, v, 3 * v, -v]), torch.tensor([0, 0, 0, 1]))
    np.testing.assert_allclose(pw[0], [1, 1, 1], atol=1e-12)
    assert pw[1].size == 0


def test_pairwise_pairs_capped_distinct_and_decoded():
    for n in (2, 3, 7, 50):
        k = np.arange(n * (n - 1) // 2)
        i, j = _triu_pairs(n, k)
        ti, tj = np.triu_indices(n, 1)
        assert np.array_equal(i, ti) and np.array_equal(j, tj)
    g = torch.Generator().manual_seed(0)
    G = torch.randn(230, 5, generator=g, dtype=torch.float64)
    y = torch.cat([torch.zeros(200, dtype=torch.long), torch.ones(30, dtype=torch.long)])
    pw = pairwise_within_class_cosines(G, y, max_pairs_per_class=5000, seed=3)
    assert len(pw[0]) == 5000 and len(pw[1]) == 30 * 29 // 2
    assert np.all(np.abs(pw[0]) <= 1)
    Gn = G / G.norm(dim=1, keepdim=True)
    full = (Gn[200:] @ Gn[200:].T)[tuple(torch.triu_indices(30, 30, 1))]
    np.testing.assert_allclose(pw[1], full.numpy(), atol=1e-12)
    again = pairwise_within_class_cosines(G, y, max_pairs_per_class=5000, seed=3)
    assert np.array_equal(again[0], pw[0])


def test_cosine_histogram_counts():
    vals = np.array([-1.0, -0.2, 0.0, 0.3, 0.99, 1.0, 1.0 + 1e-9, np.nan])
    h = cosine_histogram(vals, bins=10)
    assert isinstance(h, HistogramResult)
    assert h.counts.sum() == 7 == h.count and h.n_nonfinite == 1 and h.n_clipped == 0
    assert len(h.edges) == 11 and h.edges[0] == -1 and h.edges[-1] == 1
    assert h.counts[-1] == 3 and h.counts[0] == 1
    np.testing.assert_allclose(h.fractions.sum(), 1.0)


def test_gradient_cosines_record_roundtrip(tmp_path):
    m, ex = _tiny(), _examples(n=12)
    r = gradient_cosines(m, ex, kind="weights")
    assert isinstance(r, GradientCosineResult) and r.values.shape == (12,) and r.count == 12
    assert np.all(np.abs(r.values) <= 1) and r.reference == "class_mean" and r.kind == "weights"
    r2 = load_result(save_result(r, tmp_path, "cos"))
    np.testing.assert_array_equal(r2.values, r.values)
    np.testing.assert_array_equal(r2.index, ex.index.numpy())
    assert r2.kind == "weights" and r2.seed is None
    assert r.histogram(20).counts.sum() == 12


# ----------------------------------------------------------- SAM cos(g, g') in training
def test_sam_cosine_tracker_in_training(tmp_path):
    from workbench.presets import quickstart_config
    from workbench.training import Trainer

    tracker = SamCosineTracker()
    res = Trainer(quickstart_config("sam", epochs=2, root=str(tmp_path)), callbacks=[tracker], store=False).run()
    assert res.status == "finished"
    h = tracker.result()
    assert isinstance(h, CosineHistory)
    assert len(tracker) == res.steps == len(h.cosines)
    assert np.array_equal(h.steps, np.arange(1, res.steps + 1))
    assert np.all(np.isfinite(h.cosines)) and np.all(np.abs(h.cosines) <= 1)
    spe = res.steps // 2
    assert set(h.epochs.tolist()) == {1, 2}
    assert (h.epochs == 1).sum() == spe and (h.epochs == 2).sum() == spe
    hists = tracker.histograms(bins=20)
    assert set(hists) == {1, 2} and all(hists[e].counts.sum() == spe for e in hists)
    e, means = h.epoch_means()
    assert e.tolist() == [1, 2] and np.all(np.abs(means) <= 1)
    np.testing.assert_allclose(h.losses(), 1 - h.cosines)
    h2 = load_result(save_result(h, tmp_path / "res", "sam_cos"))
    assert np.array_equal(h2.cosines, h.cosines) and np.array_equal(h2.epochs, h.epochs)


def test_sam_cosines_from_stored_run_match_tracker(tmp_path):
    from workbench.presets import quickstart_config
    from workbench.runs import load_run
    from workbench.training import Trainer

    tracker = SamCosineTracker()
    res = Trainer(quickstart_config("sam", epochs=2, root=str(tmp_path)), callbacks=[tracker], store=True).run()
    run = load_run(res.run_path)
    stored = sam_cosines_from_steps(run.steps)
    live = tracker.result()
    assert np.array_equal(stored.steps, live.steps)
    assert np.array_equal(stored.epochs, live.epochs)
    np.testing.assert_allclose(stored.cosines, live.cosines, rtol=0, atol=1e-12)
    assert np.array_equal(sam_cosines_from_steps(run).cosines, stored.cosines)
    with pytest.raises(ValueError, match="cosine"):
        sam_cosines_from_steps(run.steps.drop(columns=["cosine"]))
