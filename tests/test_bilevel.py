"""Bilevel poisoning of L2-regularised logistic regression [Carnerero-Cano 2021].

Oracles: central finite differences of the unrolled objective (secml's gradient-check
pattern), the implicit-function hypergradient at the Newton optimum, scikit-learn's
logistic regression optimum, a loop of single trainings for the batched maps.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.bilevel import (
    AttackConfig,
    BilevelProblem,
    central_difference,
    gaussian_2d,
    grad_vjp,
    implicit_hypergradient,
    init_poison,
    poison_maps,
    project_box,
    reverse_hypergradient,
    run_attack,
    solve_inner,
    train_gd,
    train_gd_batched,
    train_loss,
    unrolled_objective,
)
from workbench.bilevel.illustration import IllustrationSettings, PoisonMaps, argmin_lambda, illustrate
from workbench.bilevel.model import train_grad

D = torch.float64


def small_problem(steps=40, eta=0.5, n_p=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(20, 3, generator=g, dtype=D)
    y = (x[:, 0] + 0.5 * torch.randn(20, generator=g, dtype=D) > 0).to(D)
    xv = torch.randn(15, 3, generator=g, dtype=D)
    yv = (xv[:, 0] > 0).to(D)
    xp = torch.randn(n_p, 3, generator=g, dtype=D)
    yp = torch.tensor([1.0, 0.0][:n_p] + [1.0] * max(0, n_p - 2), dtype=D)
    return BilevelProblem(x, y, xv, yv, yp, eta=eta, steps=steps), xp


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


# ------------------------------------------------------------------ hypergradients
@pytest.mark.parametrize("method", ["analytic", "autograd"])
@pytest.mark.parametrize("log_lam", [-1.0, 1.5])
def test_rmd_hypergradient_matches_central_differences(method, log_lam):
    P, xp = small_problem()
    h = reverse_hypergradient(P, xp, log_lam, method=method)
    fd_x = central_difference(lambda z: unrolled_objective(P, z, log_lam), xp, eps=1e-5)
    fd_l = central_difference(lambda l: unrolled_objective(P, xp, l), torch.tensor(log_lam, dtype=D), eps=1e-5)
    assert rel(h.grad_xp, fd_x) < 1e-3
    assert abs(float(h.grad_log_lam) - float(fd_l)) < 1e-3 * abs(float(fd_l))
    assert h.val_loss == pytest.approx(unrolled_objective(P, xp, log_lam), rel=1e-12)
    assert float(h.grad_xp.abs().max()) > 1e-4 and abs(float(fd_l)) > 1e-5  # a non-trivial check


def test_eq3_products_autograd_equal_closed_form():
    P, xp = small_problem()
    theta = torch.randn(4, dtype=D)
    v = torch.randn(4, dtype=D)
    a = grad_vjp(theta, P, xp, 0.3, v, "analytic")
    b = grad_vjp(theta, P, xp, 0.3, v, "autograd")
    for u, w in zip(a, b):
        assert torch.allclose(u, w, rtol=1e-10, atol=1e-12)
    # Hessian-vector product against the dense Hessian of the training loss
    x, y = P.training_set(xp)
    H = torch.autograd.functional.hessian(lambda t: train_loss(t, x, y, torch.tensor(0.3, dtype=D)), theta)
    assert torch.allclose(a[0], H @ v, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="method"):
        grad_vjp(theta, P, xp, 0.3, v, "forward")


@pytest.mark.parametrize("solver", ["cg", "direct"])
def test_implicit_and_unrolled_hypergradients_agree_at_convergence(solver):
    P, xp = small_problem(steps=3000, eta=1.0)
    h_rmd = reverse_hypergradient(P, xp, 1.5)
    h_imp = implicit_hypergradient(P, xp, 1.5, solver=solver)
    assert torch.allclose(h_rmd.theta, h_imp.theta, atol=1e-9)  # RMD's forward pass has converged
    assert rel(h_rmd.grad_xp, h_imp.grad_xp) < 1e-6
    assert float(h_rmd.grad_log_lam) == pytest.approx(float(h_imp.grad_log_lam), rel=1e-6)
    # and a short unroll does not agree (so the comparison can fail)
    P_short, _ = small_problem(steps=3, eta=1.0)
    assert rel(reverse_hypergradient(P_short, xp, 1.5).grad_xp, h_imp.grad_xp) > 1e-2


def test_implicit_hypergradient_matches_finite_differences_of_the_optimum():
    P, xp = small_problem()

    def at_opt(z, ll=0.5):
        x, y = P.training_set(z)
        from workbench.bilevel.model import val_loss
        return float(val_loss(solve_inner(x, y, ll), P.x_val, P.y_val))

    h = implicit_hypergradient(P, xp, 0.5)
    assert rel(h.grad_xp, central_difference(at_opt, xp)) < 1e-5
    fd_l = central_difference(lambda l: at_opt(xp, l), torch.tensor(0.5, dtype=D))
    assert float(h.grad_log_lam) == pytest.approx(float(fd_l), rel=1e-5)


def test_inner_optimum_is_scikit_learns_logistic_regression():
    """(Σℓ + e^λ/2‖w‖²)/n is scikit-learn's CΣℓ + ½‖w‖² with C = e^{−λ} (used for λ_CLEAN)."""
    from sklearn.linear_model import LogisticRegression

    P, _ = small_problem()
    theta = solve_inner(P.x_tr, P.y_tr, 1.0)
    sk = LogisticRegression(C=math.exp(-1.0), tol=1e-12, max_iter=10000).fit(P.x_tr.numpy(), P.y_tr.numpy())
    assert np.allclose(theta[:-1].numpy(), sk.coef_[0], atol=1e-5)
    assert float(theta[-1]) == pytest.approx(float(sk.intercept_[0]), abs=1e-5)
    assert float(train_grad(theta, P.x_tr, P.y_tr, 1.0).norm()) < 1e-8


def test_validation_of_problem_inputs():
    P, xp = small_problem()
    with pytest.raises(ValueError, match="x_p must have shape"):
        P.training_set(xp[:, :2])
    with pytest.raises(ValueError, match="eta"):
        BilevelProblem(P.x_tr, P.y_tr, P.x_val, P.y_val, P.y_p, eta=0.0)
    with pytest.raises(ValueError, match="solver"):
        implicit_hypergradient(P, xp, 0.0, solver="lu")


# ------------------------------------------------------------------ attack
def _toy_attack(seed, steps=12, inner=100):
    toy = gaussian_2d(seed)
    x0, yp, _ = init_poison(toy.x_val, toy.y_val, 1, generator=torch.Generator().manual_seed(seed))
    P = BilevelProblem(toy.x_tr, toy.y_tr, toy.x_val, toy.y_val, yp, eta=0.2, steps=inner)
    return run_attack(P, x0, -math.inf, AttackConfig(alpha=0.4, steps=steps, box=(-9.5, 9.5)), record_path=True)


def test_attack_increases_validation_loss_monotonically_in_expectation_2d():
    curves = []
    for seed in range(5):
        r = _toy_attack(seed)
        curves.append([h.val_loss for h in r.history] + [r.val_loss])
    mean = np.mean(curves, axis=0)
    assert np.all(np.diff(mean) > 0), np.diff(mean)  # monotone on average over seeds
    assert mean[-1] > 1.3 * mean[0]
    assert all(c[-1] > c[0] for c in curves)


def test_projection_keeps_points_in_the_box():
    x = torch.tensor([[-20.0, 0.3], [5.0, 99.0]], dtype=D)
    assert torch.equal(project_box(x, (-1.0, 1.0)), torch.tensor([[-1.0, 0.3], [1.0, 1.0]], dtype=D))
    toy = gaussian_2d(1)
    x0, yp, _ = init_poison(toy.x_val, toy.y_val, 3, generator=torch.Generator().manual_seed(0))
    P = BilevelProblem(toy.x_tr, toy.y_tr, toy.x_val, toy.y_val, yp, eta=0.2, steps=50)
    box = (-2.0, 2.0)
    r = run_attack(P, x0, -math.inf, AttackConfig(alpha=3.0, steps=6, box=box), record_path=True)
    assert r.path.shape == (7, 3, 2)
    assert float(r.path.min()) >= box[0] and float(r.path.max()) <= box[1]
    assert (r.path == box[0]).any() or (r.path == box[1]).any()  # the box was active
    assert not torch.equal(r.path[0], r.path[-1])  # the points moved


@pytest.mark.parametrize("learn_xp", [False, True])
def test_lambda_stays_in_its_range(learn_xp):
    P, xp = small_problem(steps=30)
    lo, hi = -2.0, 0.5
    cfg = AttackConfig(alpha=0.5, beta=500.0, steps=8, box=(-3.0, 3.0), lam_range=(lo, hi))
    r = run_attack(P, xp, 3.0, cfg, learn_xp=learn_xp, learn_lambda=True)
    assert r.lam_path[0] == hi  # the initial value is projected
    assert all(lo <= v <= hi for v in r.lam_path)
    assert len(set(r.lam_path)) > 1  # λ moved
    assert lo <= r.log_lam <= hi


def test_learning_lambda_lowers_validation_loss():
    P, _ = small_problem(steps=60)
    P0 = BilevelProblem(P.x_tr, P.y_tr, P.x_val, P.y_val, P.y_p[:0], eta=0.5, steps=60)
    r = run_attack(P0, P.x_tr[:0], 3.0, AttackConfig(beta=5.0, steps=15, lam_range=(-8, 5)), learn_xp=False,
                   learn_lambda=True)
    assert r.val_loss < r.history[0].val_loss
    assert r.log_lam < 3.0


def test_restarts_keep_labels_and_return_the_best_iterate():
    toy = gaussian_2d(3)
    x0, yp, _ = init_poison(toy.x_val, toy.y_val, 2, generator=torch.Generator().manual_seed(1))
    P = BilevelProblem(toy.x_tr, toy.y_tr, toy.x_val, toy.y_val, yp, eta=0.2, steps=40)
    cfg = AttackConfig(alpha=0.05, steps=8, box=(-9.5, 9.5), restarts=2, patience=1, min_improvement=10.0, seed=4)
    r = run_attack(P, x0, -math.inf, cfg, record_path=True)
    assert r.restarts == 2
    assert torch.equal(P.y_p, yp)
    assert r.val_loss == max(h.val_loss for h in r.history) or r.val_loss > max(h.val_loss for h in r.history)
    # a restart re-draws from validation points of the class opposite to the (fixed) poisoning label
    jumps = [i for i in range(1, len(r.path)) if (r.path[i] - r.path[i - 1]).norm() > 0.2]
    assert jumps
    for row in r.path[jumps[0]]:
        hit = (toy.x_val - row).norm(dim=1) < 1e-12
        assert hit.any()
    with pytest.raises(ValueError, match="learn_xp"):
        run_attack(P, x0, 0.0, cfg, learn_xp=False, learn_lambda=False)


def test_init_poison_flips_labels_without_duplicates():
    toy = gaussian_2d(0)
    x, y, idx = init_poison(toy.x_val, toy.y_val, 10, generator=torch.Generator().manual_seed(0))
    assert len(set(idx.tolist())) == 10
    assert torch.equal(y, 1 - toy.y_val[idx]) and torch.equal(x, toy.x_val[idx])
    _, _, idx2 = init_poison(toy.x_val, toy.y_val, 10, generator=torch.Generator().manual_seed(0), exclude=idx)
    assert not set(idx2.tolist()) & set(idx.tolist())
    with pytest.raises(ValueError, match="without duplicates"):
        init_poison(toy.x_val, toy.y_val, 65, generator=torch.Generator())


def test_attack_config_validation():
    with pytest.raises(ValueError, match="box"):
        AttackConfig(box=(1.0, 0.0))
    with pytest.raises(ValueError, match="lam_range"):
        AttackConfig(lam_range=(2.0, 1.0))


# ------------------------------------------------------------------ 2-D maps
def test_batched_training_equals_one_model_at_a_time():
    toy = gaussian_2d(2)
    pts = torch.tensor([[0.0, 0.0], [9.0, -7.0], [-5.0, 3.0]], dtype=D)
    lams = torch.tensor([-math.inf, 0.0, math.log(20.0)], dtype=D)
    x = torch.cat([toy.x_tr.expand(3, -1, -1), pts[:, None]], dim=1)
    y = torch.cat([toy.y_tr, toy.y_tr.new_zeros(1)])
    th = train_gd_batched(x, y, lams, eta=0.2, steps=60)
    for i in range(3):
        assert torch.allclose(th[i], train_gd(x[i], y, lams[i], eta=0.2, steps=60), atol=1e-12)


def test_poison_maps_match_single_trainings_and_argmin_lambda():
    toy = gaussian_2d(0)
    maps = poison_maps(toy, [-math.inf, math.log(20.0)], grid=6, box=(-9.5, 9.5), y_p=0, eta=0.2, steps=100)
    assert maps.error.shape == (2, 6, 6) and maps.loss.shape == (2, 6, 6)
    from workbench.bilevel.model import error_rate
    i, j = 1, 5  # y = ys[1], x = xs[5]
    x = torch.cat([toy.x_tr, torch.tensor([[maps.xs[j], maps.ys[i]]], dtype=D)])
    y = torch.cat([toy.y_tr, toy.y_tr.new_zeros(1)])
    th = train_gd(x, y, math.log(20.0), eta=0.2, steps=100)
    assert maps.error[1, i, j] == pytest.approx(float(error_rate(th, toy.x_val, toy.y_val)))
    # round trip and argmin: ties go to the smallest λ, diverged models are excluded
    back = PoisonMaps.from_dict(json.loads(json.dumps(maps.to_dict())))
    assert back.log_lams[0] == -math.inf and np.array_equal(back.error, maps.error)
    fake = PoisonMaps(np.arange(2.0), np.arange(2.0), np.array([-1.0, 0.0, 6.0]),
                      np.array([[[0.1, 0.2]] * 2, [[0.1, 0.1]] * 2, [[0.0, 0.0]] * 2]),
                      np.array([[[0.3, 0.3]] * 2, [[0.2, 0.2]] * 2, [[1e9, np.nan]] * 2]), 0)
    assert np.array_equal(argmin_lambda(fake), np.array([[-1.0, 0.0]] * 2))


def test_illustration_small_grid_shows_regularisation_dampens_the_attack():
    s = IllustrationSettings(grid=8, attack_steps=10, inner_steps=100, lam_grid=(-8.0, 4.0, 4))
    ill = illustrate(0, s)
    a, b = ill.attacks["no_reg"], ill.attacks["reg"]
    assert a["final_val_loss"] > a["val_loss"][0] and b["final_val_loss"] > b["val_loss"][0]
    # the regularised model is less affected: smaller worst-case validation error over the map
    assert ill.maps.error[1].max() < ill.maps.error[0].max()
    assert ill.lam_map.shape == (8, 8) and set(np.unique(ill.lam_map)) <= {-8.0, -4.0, 0.0, 4.0}
    import pathlib
    import tempfile

    from workbench.bilevel import load_illustration, save_illustration
    with tempfile.TemporaryDirectory() as d:
        p = save_illustration(ill, pathlib.Path(d) / "ill.json")
        back = load_illustration(p)
    assert back.attacks == json.loads(json.dumps(ill.attacks))
    assert np.array_equal(back.lam_map, ill.lam_map)


# ------------------------------------------------------------------ study
def test_lambda_cv_picks_a_grid_value():
    from workbench.bilevel.study import lambda_cv

    P, _ = small_problem()
    lam = lambda_cv(P.x_tr, P.y_tr, (-8.0, 1.0, 4), seed=0)
    assert min(abs(lam - g) for g in (-8.0, -5.0, -2.0, 1.0)) < 1e-9


def test_study_digits_small_runs_saves_and_resumes(tmp_path):
    from workbench.bilevel.study import load_study, paper_settings, run_study, summary_table

    s = paper_settings("digits", reps=1, n_batches=2, steps_xp=3, steps_mul=2, steps_lambda=3, inner_steps=20,
                       epochs=3)
    events = []
    res = run_study(s, tmp_path, progress=events.append)
    df = res.records
    assert len(df) == 4 * 3  # strategies x (0, 1, 2 batches)
    assert set(df["strategy"]) == {"small", "large", "clean", "rmd"}
    assert sorted(df["n_poison"].unique()) == [0, 6, 12]
    assert df["in_box"].all()
    assert (df.loc[df.strategy == "small", "log_lam"] == -8.0).all()
    assert (df["log_lam"].between(-8.0, math.log(200.0))).all()
    assert df["test_error"].between(0, 1).all()
    assert any(e["kind"] == "rep" for e in events)
    back = load_study(tmp_path)
    pd.testing.assert_frame_equal(back.records, df)
    assert pd.read_csv(tmp_path / "records.csv").shape == df.shape
    assert {"0/small/0", "0/small/12", "0/rmd/0", "0/rmd/12"} <= set(back.weights)
    t = summary_table(df)
    assert list(t.index) == ["small", "large", "clean", "rmd"]
    # resume: a finished repetition is not recomputed
    events2 = []
    run_study(s, tmp_path, progress=events2.append)
    assert events2 == []


def test_study_settings_validation():
    from workbench.bilevel.study import StudySettings, paper_settings

    with pytest.raises(ValueError, match="dataset"):
        StudySettings(dataset="cifar10")
    with pytest.raises(ValueError, match="strategies"):
        StudySettings(strategies=("huge",))
    with pytest.raises(ValueError, match="n_val"):
        paper_settings("digits", batch=20)


# ------------------------------------------------------------------ figures and CLI
def test_figures_build_from_data():
    from workbench.viz.bilevel import (
        boundary_xy,
        error_vs_fraction_figure,
        illustration_figure,
        lambda_norm_figure,
        poison_map_figure,
        weight_histogram_figure,
    )

    ill = illustrate(0, IllustrationSettings(grid=5, attack_steps=3, inner_steps=30, lam_grid=(-8.0, 4.0, 3)))
    fig = illustration_figure(ill)
    assert sum(t.type == "heatmap" for t in fig.data) == 3
    f1 = poison_map_figure(ill, "reg", path_upto=1)
    path = [t for t in f1.data if t.name == "attack path"][0]
    assert len(path.x) == 2
    with pytest.raises(ValueError, match="which"):
        poison_map_figure(ill, "l1")
    bx, by = boundary_xy([1.0, 0.0, -2.0], (-5, 5))
    assert np.allclose(bx, 2.0) and min(by) == -5
    rec = pd.DataFrame({"strategy": ["small", "small", "rmd", "rmd"], "fraction": [0, 0, 0.1, 0.1],
                        "test_error": [0.1, 0.2, 0.3, 0.5], "log_lam": [-8, -8, 1, 2], "w_norm2": [1, 2, 3, 4]})
    f2 = error_vs_fraction_figure(rec)
    assert [t.name for t in f2.data] == ["λ small (fixed)", "λ_RMD (learned)"]
    assert f2.data[1].y[0] == pytest.approx(0.4) and f2.data[1].error_y.array[0] == pytest.approx(0.1)
    assert len(lambda_norm_figure(rec).data) == 2
    f3 = weight_histogram_figure({"0/small/0": [0.1, 0.2], "0/small/6": [0.3], "0/rmd/0": [0.0], "0/rmd/6": [0.0]})
    assert len(f3.data) == 4


def test_cli_illustrate_and_table(tmp_path, capsys):
    import argparse

    from workbench.bilevel.cli import add_commands, markdown_table

    p = argparse.ArgumentParser()
    add_commands(p.add_subparsers(dest="command"))
    args = p.parse_args(["bilevel", "illustrate", "--grid", "4", "--steps", "2", "--inner-steps", "20",
                         "--no-lambda-map", "--out", str(tmp_path), "--formats", "html", "--quiet"])
    assert args.fn(args) == 0
    assert (tmp_path / "illustration.json").exists() and (tmp_path / "illustration.html").exists()
    assert "no_reg: validation error clean" in capsys.readouterr().out
    rec = pd.DataFrame({"strategy": ["small", "rmd"], "fraction": [0.0, 0.0], "test_error": [0.01, 0.02]})
    md = markdown_table(rec)
    assert "| λ small (fixed) | 1.00 ± 0.00 |" in md and "λ_RMD" in md
