"""Thesis Ch. 6 (large-step SGD learns sparse features): schedules, SGD = label-noise GD, Jacobians and ranks,
the SDE recursion, and the reproductions' faithful-reproduction criteria at reduced size."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.models.teacher_student import ReLUNet, make_student, teacher_student_data
from workbench.thesis import registry
from workbench.thesis.ch6 import (
    _mlp_params,
    diag_sde,
    exponential_warmup,
    label_noise_targets,
    linear_warmup,
    mlp_jacobian,
    piecewise_constant,
    train_diag_net,
    train_relu_nets,
)
from workbench.thesis.metrics import (
    diag_net_jacobian_rank,
    fsc,
    functional_jacobian,
    l0_norm,
    l1_norm,
    singular_value_rank,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ schedules
def test_piecewise_constant_decays_after_the_fraction():
    e = piecewise_constant(100, 0.3, 0.3, 3.0)
    assert np.all(e[:31] == 0.3) and np.allclose(e[31:], 0.1)
    assert np.all(piecewise_constant(10, 0.2) == 0.2)
    with pytest.raises(ValueError):
        piecewise_constant(10, 0.2, 1.5, 2.0)


def test_linear_warmup_matches_public_code_formula():
    T, eta, p, F, dec = 1000, 2e-4, 0.5, 200.0, 3.0
    e = linear_warmup(T, eta, p, F, decay=dec)
    t = np.arange(T)
    stop = int(p * T)
    assert np.allclose(e[:stop + 1], eta + (F - 1) * eta * t[:stop + 1] / T)
    assert np.allclose(e[stop + 1:], e[stop] / dec)
    assert e[stop] == pytest.approx(eta * (1 + (F - 1) * 0.5))            # ~100 eta for the 50 % run
    e2 = linear_warmup(T, 0.04, 0.3, 6.0, exponent=0.5, decay=2.5)
    assert e2[300] == pytest.approx(0.04 * (1 + 5 * 0.3 ** 0.5))


def test_exponential_warmup():
    e = exponential_warmup(1000, 0.01, 0.3)
    assert e[0] == pytest.approx(0.01) and e[299] == pytest.approx(0.01 * 1.05 ** (100 * 0.299))
    assert e[500] == pytest.approx(0.01 * 1.05 ** 30 / 10) and e[950] == pytest.approx(0.01 * 1.05 ** 30 / 100)


# ------------------------------------------------------------------ Prop. 6.3.1
def test_sgd_equals_full_batch_gd_on_label_noise_targets():
    rng = np.random.default_rng(0)
    n, d, eta = 7, 5, 0.1
    X, y = rng.standard_normal((n, d)), rng.standard_normal(n)
    u, v = rng.standard_normal(d), rng.standard_normal(d)
    pred = X @ (u * v)
    for i_t in range(n):
        err = pred[i_t] - y[i_t]
        sgd = (u - eta * err * X[i_t] * v, v - eta * err * X[i_t] * u)
        yt = label_noise_targets(pred, y, i_t)
        g = X.T @ (pred - yt) / n
        gd = (u - eta * g * v, v - eta * g * u)
        assert np.allclose(sgd[0], gd[0], atol=1e-13) and np.allclose(sgd[1], gd[1], atol=1e-13)
    xis = np.stack([label_noise_targets(pred, y, i) - y for i in range(n)])
    L = ((pred - y) ** 2).sum() / (2 * n)
    assert np.allclose(xis.mean(0), 0, atol=1e-12)                          # E xi = 0
    assert (xis ** 2).sum(1).mean() / (n * (n - 1)) == pytest.approx(2 * L)  # E||xi||^2 / (n(n-1)) = 2 L


# ------------------------------------------------------------------ metrics
def test_diag_rank_equals_rank_of_explicit_jacobian():
    rng = np.random.default_rng(1)
    d, m = 12, 30
    u, v = rng.standard_normal(d), rng.standard_normal(d)
    u[:5] *= 1e-9
    v[:5] *= 1e-9
    X = rng.standard_normal((m, d))
    J = np.concatenate([X * v, X * u], axis=1)                              # rows [x * v, x * u]
    for thr in (1e-4, 1e-12):
        assert int(diag_net_jacobian_rank(u, v, X, thr)) == singular_value_rank(J, thr)
    assert int(diag_net_jacobian_rank(u, v, X, 1e-4)) == 7
    assert l0_norm(u * v, 1e-10) == 7 and l1_norm(np.array([1.0, -2.0])) == 3.0
    assert diag_net_jacobian_rank(np.full(d, np.nan), v, X).item() == -1


def test_mlp_jacobian_matches_torch_func():
    torch.manual_seed(0)
    net = ReLUNet(3, (4, 5), bias=True, init_scales=[1.0, 1.0, 1.0], generator=torch.Generator().manual_seed(0))
    X = torch.randn(9, 3, dtype=torch.float64)
    Ws, bs = _mlp_params(net)
    J = mlp_jacobian(Ws, bs, X.numpy())
    params = {k: v.detach() for k, v in net.named_parameters()}
    ref = functional_jacobian(lambda p, x: torch.func.functional_call(net, p, (x[None],))[0], params, X)
    assert J.shape == tuple(ref.shape) and np.allclose(J, ref.numpy(), atol=1e-12)


def test_fsc_wrapper_normalisation_keeps_nonzero_pattern():
    rng = np.random.default_rng(0)
    A = np.maximum(rng.standard_normal((40, 8)), 0)
    A[:, 3] = 2 * A[:, 2]                                                   # a duplicate unit
    A[:, 5] = 0                                                             # a dead unit
    r = fsc(A, 0.95)
    assert r["dead_units"] == 1 and r["n_merged"] == 1
    rn = fsc(A, 0.95, normalize_rows=True)
    assert rn["active_fraction"] == r["active_fraction"] and rn["normalize_rows"] is True


# ------------------------------------------------------------------ training loops
def test_train_relu_nets_one_step_equals_autograd_sgd():
    data = teacher_student_data(d=3, n=6, teacher_hidden=(2, 2), seed=1)
    st = make_student(3, (4, 3), scales=0.8, seed=1)
    ref = make_student(3, (4, 3), scales=0.8, seed=1)
    eta = 0.05
    train_relu_nets([st], data.x_train, data.y_train, data.x_test, data.y_test, np.array([[eta]]), names=["a"],
                    seed=4, checkpoints=2)
    i = int(np.random.default_rng(4).integers(0, 6, size=(1, 1))[0, 0])
    loss = (ref(data.x_train[i:i + 1])[0] - data.y_train[i]) ** 2
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    for p, q, g in zip(st.parameters(), ref.parameters(), grads):
        assert torch.allclose(p, q - eta * g, atol=1e-12)


def test_gradient_flow_recursion_equals_small_step_gd():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((10, 6)), rng.standard_normal(10)
    T, k, eta = 50, 5, 0.2
    gf = diag_sde(X, y, np.full((1, T), eta), np.zeros((1, T)), substeps=k, noise=True, checkpoints=2)
    gd = train_diag_net(X, y, np.full((1, T * k), eta / k), method="gd", checkpoints=2)
    assert np.allclose(gf.u[-1], gd.u[-1], atol=1e-12) and np.allclose(gf.v[-1], gd.v[-1], atol=1e-12)


def test_sde_noise_has_the_covariance_of_eq_6_58():
    """One SDE step from u = u0, v = 0 with y = 0 (zero gradient) is pure noise: dv = sqrt(gamma eta delta) u0 X^T Z,
    so over many independent rows Cov(dv) = gamma * eta * delta * u0^2 * X^T X and du = 0 (Eq. 6.58, 6.9)."""
    rng = np.random.default_rng(0)
    n, d, S, eta, delta, u0 = 6, 3, 20000, 0.3, 0.5, 0.7
    X = rng.standard_normal((n, d))
    out = diag_sde(X, np.zeros(n), np.full((S, 1), eta), np.full((S, 1), delta), substeps=1, noise=True, seed=2,
                   checkpoints=2, u0=u0)
    dv = out.v[-1]
    assert np.allclose(out.u[-1], u0)
    theory = eta * eta * delta * u0 ** 2 * X.T @ X
    assert np.allclose(np.cov(dv.T), theory, rtol=0.05, atol=0.03 * np.abs(theory).max())
    assert np.allclose(dv.mean(0), 0, atol=0.05 * np.sqrt(np.diag(theory)).max())


# ------------------------------------------------------------------ reproductions (faithful-reproduction criteria)
def test_fig6_2_large_step_sgd_sparsifies_and_gd_does_not():
    rep = registry.run("fig6.2", size="test", figure=True)
    m = rep.metrics
    assert m["final_test_loss_small"] > m["final_test_loss_10"] > m["final_test_loss_30"] > m["final_test_loss_50"]
    for k in ("30", "50"):                                                  # rank and l0 fall DURING the plateau
        assert m[f"rank_before_decay_{k}"] < m[f"rank_at_5pct_{k}"]
        assert m[f"l0_before_decay_{k}"] < m[f"l0_at_5pct_{k}"]
        assert -2.5 <= m[f"plateau_log10_loss_median_{k}"] <= -0.5
    assert m["rank_small_eta_final"] == 200 and m["l0_small_eta_final"] == 200
    assert m["gd_l0_before_decay_50"] >= 180 and m["gd_final_test_loss_50"] > 100 * m["final_test_loss_50"]
    assert -2.5 <= m["gd_plateau_log10_loss_median_50"] <= -0.5            # GD stabilises too (Fig. 6.11)
    assert rep.verdict == "reproduced"
    plane = rep.data["plane"]
    sgd_end = plane[plane["method"] == "SGD"].iloc[-1]
    w_star = rep.data["plane_refs"]["w_star"]
    gd_end = plane[plane["method"] == "GD"].iloc[-1]
    dist = lambda r: np.hypot(r["x"] - w_star[0], r["y"] - w_star[1])  # noqa: E731
    assert dist(sgd_end) < dist(gd_end)                                     # Fig. 6.3: SGD heads to w*


def test_prop_6_3_2_toy_stabilises_within_bounds():
    rep = registry.run("prop6.3.2", size="test", figure=False)
    assert rep.verdict == "reproduced", rep.measured
    assert 0.65 < rep.metrics["theta_low_min"] and rep.metrics["theta_high_max"] < 1.162
    bad = registry.get("prop6.3.2").fn(eta=0.9, T=500)                      # below the range: converges, no bounce
    assert bad.verdict == "not reproduced"


def test_fig6_4_long_warmup_gives_simpler_sparser_predictor():
    rep = registry.run("fig6.4", size="test", figure=True)
    m = rep.metrics
    assert m["final_kinks_50"] < 0.5 * m["final_kinks_2"]
    assert m["final_rank_50"] < 0.5 * m["final_rank_2"] and m["final_fsc_50"] < m["final_fsc_2"]
    assert m["rank_before_decay_50"] < m["rank_early_50"] and m["fsc_before_decay_50"] < m["fsc_early_50"]
    assert m["plateau_log10_loss_median_50"] > -1.5
    # Fig. 6.13: first simplified (during the high-loss plateau), then fitted (after the decay)
    assert np.log10(m["final_loss_50"]) < m["plateau_log10_loss_median_50"] - 2
    # reproduced only with the warm-up loss within half a decade of the thesis' 10^-0.5; above 10^-1.5: partial
    near = -1.0 <= m["plateau_log10_loss_median_50"] <= 0.0
    assert rep.verdict == ("reproduced" if near else "partial"), rep.verdict_reason
    assert set(rep.data["functions"]["iteration"].unique()) >= {0}


def test_fig6_12_larger_warmup_gets_runs_stuck_at_a_high_loss():
    rep = registry.run("fig6.12", size="test", figure=True)
    m, summ = rep.metrics, rep.data["summary"]
    assert m["stuck_fraction_400"] == 0.0                                       # 400x fits (Fig. 6.4)
    assert m["stuck_fraction_400"] <= m["stuck_fraction_500"] <= m["stuck_fraction_600"]
    assert m["stuck_fraction_600"] > 0
    stuck = summ[summ["stuck"]]
    assert (stuck["final_loss"] > 10 ** -1.5).all() and (stuck["factor"] > 400).all()
    fits = summ[summ["factor"] == 400]
    assert (fits["final_loss"] < 10 ** -1.5).all()
    # the stuck init fits with the 400x warm-up: same init, same example order, only the step sizes differ
    for init in stuck["init"]:
        assert summ[(summ.init == init) & (summ.factor == 400)]["final_loss"].iloc[0] < 1e-2
    # "500x gets stuck" needs most 500x inits stuck; "the stuck fraction grows" alone is a weaker criterion
    expected = "reproduced" if m["stuck_fraction_500"] > 0.5 else "partial"
    assert rep.verdict == expected, rep.verdict_reason
    if expected == "partial":
        assert "weaker than the claim" in rep.verdict_reason
    assert len(rep.figure.data) > 0


def test_fig6_5_teacher_student_ordering_and_sparsity_on_both_layers():
    rep = registry.run("fig6.5", size="test", figure=True)
    m = rep.metrics
    assert m["final_test_loss_small"] > m["final_test_loss_10"] > m["final_test_loss_30"] > m["final_test_loss_50"]
    for layer in (1, 2):
        assert m[f"final_fsc_layer{layer}_50"] < m[f"final_fsc_layer{layer}_small"]
        assert m[f"fsc_layer{layer}_before_decay_last"] < m[f"fsc_layer{layer}_small_eta_same_iteration"]
    assert m["rank_before_decay_last"] < m["rank_small_eta_same_iteration"]
    rank_falls = m["rank_before_decay_last"] < min(m["rank_init"], m["rank_small_eta_same_iteration"])
    assert rep.verdict == ("reproduced" if rank_falls else "partial"), rep.verdict_reason


def test_fig6_10_small_step_stays_lazy_large_step_clusters_on_teacher():
    rep = registry.run("fig6.10", size="test", figure=True)
    m = rep.metrics
    assert m["eta_large"] < m["largest_stable_step"] and m["eta_large"] > 2 * 0.13
    assert m["movement_deg_small"] < m["movement_deg_50"] / 3                  # small eta: lazy
    assert m["teacher_angle_deg_50"] < m["teacher_angle_deg_small"]              # large eta: on the teacher
    assert m["within_5deg_50"] > m["within_5deg_small"]
    assert m["final_fsc_layer1_50"] < m["final_fsc_layer1_small"]               # sparser features (Fig. 6.14)
    assert all(m[f"final_test_loss_{k}"] < m["final_test_loss_small"] for k in ("10", "30", "50"))
    assert rep.verdict == "reproduced"
    geo = rep.data["geometry"]
    assert list(geo["key"]) == ["small", "10", "30", "50"]


def test_largest_stable_step_brackets_divergence():
    from workbench.models.teacher_student import make_student, teacher_student_data
    from workbench.thesis.ch6 import largest_stable_step, piecewise_constant, train_relu_nets

    data = teacher_student_data(d=2, n=15, teacher_hidden=(3,), bias=False, chizat=True, seed=0)
    student = lambda: make_student(2, (20,), scales=(0.5, 0.0), bias=False, seed=0)  # noqa: E731
    sched = lambda e: piecewise_constant(2000, e, 0.5, 5.0)                          # noqa: E731
    edge = largest_stable_step(student, data, sched, lo=0.13, hi=1.0, iters=6)
    losses = []
    for eta in (edge, edge * 1.15):
        with np.errstate(all="ignore"):                                      # the second one overflows
            df, _ = train_relu_nets([student()], data.x_train, data.y_train, data.x_test, data.y_test,
                                    sched(eta)[None], names=["r"], checkpoints=2)
        losses.append(df["train_loss"].iloc[-1])
    assert np.isfinite(losses[0]) and losses[0] < 1e3
    assert not (np.isfinite(losses[1]) and losses[1] < 1e3)
    with pytest.raises(ValueError, match="lower end"):
        largest_stable_step(student, data, sched, lo=5.0, hi=10.0)


def test_fig6_9_sde_tracks_sgd_and_gradient_flow_does_not_sparsify():
    rep = registry.run("fig6.9", size="test", figure=True)
    m = rep.metrics
    d = 200
    assert m["rank_before_decay_SGD"] < 0.8 * d
    assert m["rank_before_decay_SDE"] <= d - 0.5 * (d - m["rank_before_decay_SGD"])
    assert m["rank_before_decay_gradient_flow"] >= 0.95 * d and m["l0_before_decay_gradient_flow"] >= 0.95 * d
    assert m["final_test_loss_SDE"] < m["final_test_loss_gradient_flow"]
    close = (m["rank_before_decay_SDE"] <= d - 0.8 * (d - m["rank_before_decay_SGD"])
             and m["l0_before_decay_SDE"] <= d - 0.8 * (d - m["l0_before_decay_SGD"]))
    assert rep.verdict == ("reproduced" if close else "partial"), rep.verdict_reason


def test_thesis_panel_lists_and_builds_chapter_6_and_2_reproductions():
    from workbench.ui.thesis_panel import ThesisPanel

    ch6 = registry.names(chapter=6)
    assert {"fig6.2", "prop6.3.2", "fig6.4", "fig6.12", "fig6.5", "fig6.10", "fig6.9"} <= set(ch6)
    assert {"fig2.2", "fig2.9", "fig2.11"} <= set(registry.names(chapter=2))
    for chapter, name in ((6, "fig6.2"), (2, "fig2.11")):
        panel = ThesisPanel(chapter=chapter, select=name, size="test")
        assert set(panel.params()) == {p.name for p in registry.get(name).params}
