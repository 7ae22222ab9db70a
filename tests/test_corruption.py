"""Parameter corruption [Sun 2020]: the closed-form n-sparse corruption is the exact first-order maximiser,
gradient-based corruption raises the loss at least as much as random corruption at equal size and budget,
size 0 changes nothing, every applied corruption respects its budget, the model is restored exactly; the
analysis reaches the CLI, the panel, the tables and the figures through its one registry entry (and so does
an analysis registered at run time)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import workbench.analysis.corruption as C
from workbench.analysis.common import ExampleSet, ResultRecord
from workbench.analysis.tasks import analyze
from workbench.analysis_registry import AnalysisEntry, analysis_names, get_entry, register, unregister
from workbench.cli import build_parser, main
from workbench.presets import quickstart_config
from workbench.training import Trainer
from workbench.viz import progress_figure, result_figure, summary_rows

P = {"l2": 2.0, "linf": float("inf"), "l1": 1.0}
DUAL = {"l2": 2.0, "linf": 1.0, "l1": float("inf")}


def _norm(a: torch.Tensor, norm: str) -> float:
    return float(torch.linalg.vector_norm(a.double(), ord=P[norm]))


@pytest.mark.parametrize("norm", ["l2", "linf", "l1"])
def test_the_corruption_is_the_exact_first_order_maximiser_within_its_budget(norm):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(7, generator=g, dtype=torch.float64)
    eps = 0.3
    for n in range(0, 9):
        a = C.corruption(v, n, eps, norm)
        assert int((a != 0).sum()) <= min(n, 1 if norm == "l1" else n)
        if n == 0:
            assert not a.any()
            continue
        assert _norm(a, norm) == pytest.approx(eps, rel=1e-12)
        # brute force over every support of size min(n, k): max of eps * ||v_T||_q (Hölder)
        best = max(eps * float(torch.linalg.vector_norm(v[list(T)], ord=DUAL[norm]))
                   for T in itertools.combinations(range(7), min(n, 7)))
        assert float(a @ v) == pytest.approx(best, rel=1e-12)
        # and no random feasible corruption does better to first order
        for _ in range(200):
            b = torch.zeros(7, dtype=torch.float64)
            idx = torch.randperm(7, generator=g)[:min(n, 7)]
            b[idx] = torch.randn(len(idx), generator=g, dtype=torch.float64)
            b *= eps / _norm(b, norm)
            assert float(b @ v) <= float(a @ v) + 1e-12
    assert not C.corruption(v, 3, 0.0, norm).any()
    assert not C.corruption(torch.zeros(5), 3, eps, norm).any()  # v = 0: nothing to align with
    with pytest.raises(ValueError, match="n=-1"):
        C.corruption(v, -1, eps, norm)
    with pytest.raises(ValueError, match="epsilon"):
        C.corruption(v, 1, -0.1, norm)
    with pytest.raises(ValueError, match="norm"):
        C.corruption(v, 1, 0.1, "l3")


class Net(nn.Module):
    """A small MLP with BatchNorm and dropout (so eval mode and restored buffers/modes matter)."""

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))

    def forward(self, x):
        return self.f(x)


@pytest.fixture(scope="module")
def fitted():
    """A briefly trained Net on a 3-class Gaussian blob problem, and a 256-example set."""
    torch.manual_seed(0)
    x = torch.randn(256, 6)
    y = (x[:, 0] > 0.3).long() + (x[:, 1] > 0.0).long()
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    ex = ExampleSet(x=x, y=y, index=torch.arange(256), split="train", seed=None, count=256)
    return model.train(), ex


def test_gradient_corruption_beats_random_size_zero_changes_nothing_budgets_hold_weights_restored(fitted, monkeypatch):
    model, ex = fitted
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    grads = {n: p.grad for n, p in model.named_parameters()}
    applied = []
    write = C._write

    def spy(params, w0, a):
        applied.append(a.detach().clone())
        write(params, w0, a)

    monkeypatch.setattr(C, "_write", spy)
    eps, sizes = 0.05, [0, 1, 5, 20, 10_000]
    r = C.parameter_corruption(model, ex, sizes=sizes, epsilon=eps, norm="l2", n_random=8, seed=3)
    k = sum(p.numel() for p in model.parameters())
    assert list(r.sizes) == [0, 1, 5, 20, k] and r.n_params == k  # 10,000 > k: all weights
    # size 0 changes nothing: exactly the base loss, for every draw
    assert r.gradient_loss[0] == r.base_loss and np.all(r.random_loss[0] == r.base_loss)
    assert r.gradient_first_order[0] == 0 and np.all(r.random_first_order[0] == 0)
    # gradient-based >= random at equal size and budget: exactly to first order, and in the measured loss
    assert np.all(r.gradient_first_order[:, None] >= r.random_first_order - 1e-9)
    gi, ri = r.gradient_increase, r.random_increase
    assert np.all(gi[1:] > 0) and np.all(gi[1:, None] >= ri[1:]), (gi, ri)
    assert np.all(np.diff(r.gradient_first_order) >= -1e-9)  # more coordinates never help less
    # every applied corruption respects its budget: ||a||_0 <= n and ||a||_2 <= eps
    ns = [n for n in r.sizes for _ in range(1 + r.n_random)]
    corr = [a for i, a in enumerate(applied) if i % (2 + r.n_random) != 1 + r.n_random]  # skip the resets to w0
    assert len(corr) == len(ns)
    for n, a in zip(ns, corr):
        assert int((a != 0).sum()) <= n and float(a.norm()) <= eps * (1 + 1e-6)
        if n:
            assert float(a.norm()) == pytest.approx(eps, rel=1e-5)
    # the model is left exactly as it was: weights, BN buffers, train mode, .grad objects
    for key, v in model.state_dict().items():
        assert torch.equal(v, before[key]), key
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is grads[n] and bool((p.grad == 7.0).all()) for n, p in model.named_parameters())


def test_draws_are_seeded_per_size(fitted):
    model, ex = fitted
    a = C.parameter_corruption(model, ex, sizes=[5], epsilon=0.5, n_random=3, seed=1)
    b = C.parameter_corruption(model, ex, sizes=[0, 5, 20], epsilon=0.5, n_random=3, seed=1)
    c = C.parameter_corruption(model, ex, sizes=[5], epsilon=0.5, n_random=3, seed=2)
    np.testing.assert_array_equal(a.random_loss[0], b.random_loss[1])
    assert not np.array_equal(a.random_loss[0], c.random_loss[0])
    for bad, match in (({"sizes": [-1]}, "sizes"), ({"sizes": []}, "sizes"), ({"sizes": [1.5]}, "sizes"),
                       ({"n_random": 0}, "n_random"), ({"norm": "l0"}, "norm"), ({"epsilon": float("nan")}, "epsilon")):
        with pytest.raises(ValueError, match=match):
            C.parameter_corruption(model, ex, **{"sizes": [1], **bad})


# ------------------------------------------------------------------ the analysis through the registry
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = quickstart_config("sgd", epochs=2, root=str(root)).with_overrides({"data.max_train": 256})
    return root, Trainer(cfg, handle_sigint=False).run().run_path


def test_the_corruption_analysis_in_analyze_cli_panel_tables_and_figures(run, tmp_path, capsys):
    root, a = run
    assert "corruption" in analysis_names()
    reports = []
    out = analyze("corruption", a, count=128, params={"sizes": [0, 10, 100], "n_random": 2}, callback=reports.append)
    r = out.result
    assert list(r.sizes) == [0, 10, 100] and r.count == 128 and r.random_loss.shape == (3, 2)
    assert np.all(r.gradient_increase[1:] >= r.random_increase_mean[1:]) and r.gradient_increase[0] == 0
    assert analyze("corruption", a, count=128, params={"sizes": [0, 10, 100], "n_random": 2}).cached
    row, = summary_rows("corruption", [out])
    assert row["gradient n=100"] == pytest.approx(float(r.gradient_increase[2])) and "random n=10" in row
    fig = result_figure("corruption", [out])
    assert [t.name.split(" · ")[1] for t in fig.data] == ["gradient-based", "random"]
    assert list(fig.data[0].x) == ["0", "10", "100"] and "‖a‖₂ = 0.5" in fig.layout.title.text
    live = progress_figure("corruption", reports[-1].data)
    assert "computing" in live.layout.title.text and len(live.data) == 2
    with pytest.raises(ValueError, match="corruption.norm"):
        analyze("corruption", a, params={"norm": "l7"})
    # the CLI lists it (from the registry) and writes its figure
    action = next(x for x in build_parser()._subparsers._group_actions[0].choices["analyze"]._actions
                  if x.dest == "what")
    assert list(action.choices) == list(analysis_names())
    assert main(["analyze", str(a), "--what", "corruption", "--set", "sizes=[0, 10]", "n_random=1",
                 "--count", "64", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "gradient n=10" in capsys.readouterr().out and (tmp_path / "corruption.html").is_file()


def test_the_panel_offers_it_with_its_parameters(run, monkeypatch):
    from workbench.ui import AnalysisPanel

    root, a = run
    monkeypatch.setenv("WORKBENCH_ESTIMATE", "0")  # no timed-probe thread
    p = AnalysisPanel(root=root, what="corruption", interval=0.05)
    assert "corruption" in p.w_what.options and "Sun 2020" in p.w_desc.value
    assert set(p._param_widgets) == {"sizes", "epsilon", "norm", "n_random"}
    assert list(p._param_widgets["norm"].options) == ["l2", "linf", "l1"]
    p.select(a)
    p.w_count.value = 64
    p._param_widgets["sizes"].value = "[0, 10]"
    p._param_widgets["n_random"].value = 1
    assert p.start() and p.wait(120), p.w_status.value
    assert len(p.figure.data) == 2 and "gradient n=10" in p.w_table.value


# ------------------------------------------------------------------ an analysis added at run time
@dataclass(frozen=True, eq=False)
class WeightNormResult(ResultRecord):
    norm: float
    count: int


def _run_weight_norm(model, bundle, rd, p, *, split, count, seed, device, report, **_):
    report(1, 1)
    return WeightNormResult(norm=float(sum(float(q.detach().norm()) ** p["power"] for q in model.parameters())),
                            count=int(count)), []


def _figure_weight_norm(items, *, theme, **_):
    import plotly.graph_objects as go

    return go.Figure(go.Bar(x=[l for l, _, _ in items], y=[r.norm for _, r, _ in items]))


def test_one_entry_adds_an_analysis_everywhere(run, monkeypatch):
    from workbench.ui import AnalysisPanel

    root, a = run
    monkeypatch.setenv("WORKBENCH_ESTIMATE", "0")
    entry = register(AnalysisEntry("weight_norm", "Weight norm", "sum of parameter norms (a test analysis)",
                                   _run_weight_norm, lambda r, extra: {"norm": r.norm}, _figure_weight_norm,
                                   defaults={"power": 2, "kind": "l2"}, choices={"kind": ["l2"]}, count=16))
    try:
        assert get_entry("weight_norm") is entry and analysis_names()[-1] == "weight_norm"
        with pytest.raises(ValueError, match="already registered"):
            register(entry)
        out = analyze("weight_norm", a)
        assert out.result.count == 16 and out.result.norm > 0 and out.params == {"power": 2, "kind": "l2"}
        assert summary_rows("weight_norm", [out]) == [{"run": out.label, "norm": out.result.norm}]
        assert list(result_figure("weight_norm", [out]).data[0].y) == [out.result.norm]
        what = next(x for x in build_parser()._subparsers._group_actions[0].choices["analyze"]._actions
                    if x.dest == "what")
        assert "weight_norm" in what.choices
        p = AnalysisPanel(root=root, what="weight_norm")
        assert "weight_norm" in p.w_what.options and set(p._param_widgets) == {"power", "kind"}
    finally:
        unregister("weight_norm")
    with pytest.raises(ValueError, match="choose one of"):
        analyze("weight_norm", a)
    with pytest.raises(ValueError, match="not one of"):
        AnalysisEntry("bad", "t", "d", _run_weight_norm, "m:f", "m:f", defaults={"kind": "x"}, choices={"kind": ["l2"]})
