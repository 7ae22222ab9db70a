"""Toy models and synthetic data of [Andriushchenko 2024] (workbench.models.toy, workbench.data.synthetic)."""
from __future__ import annotations

import pytest
import torch

from workbench.data.synthetic import RELU_1D_X, relu_1d_points, sparse_regression
from workbench.models.toy import DiagonalLinearNet, ReLU1D, square_loss, uv_to_w_pm, w_pm_to_uv


def test_sparse_regression_shapes_seed_and_support():
    p = sparse_regression(d=30, n=20, kappa=3, seed=4)
    assert p.x_train.shape == (20, 30) and p.x_test.shape == (1000, 30)
    assert int((p.beta_star != 0).sum()) == 3 and torch.equal(p.support, torch.arange(3))
    assert torch.isclose(p.beta_star.norm(), torch.tensor(1.0, dtype=p.beta_star.dtype))
    assert torch.allclose(p.y_train, p.x_train @ p.beta_star)
    q = sparse_regression(d=30, n=20, kappa=3, seed=4)
    assert torch.equal(p.x_train, q.x_train) and torch.equal(p.beta_star, q.beta_star)
    assert not torch.equal(p.x_train, sparse_regression(d=30, n=20, kappa=3, seed=5).x_train)
    noisy = sparse_regression(d=30, n=20, kappa=3, seed=4, noise=0.1, random_support=True)
    assert not torch.allclose(noisy.y_train, noisy.x_train @ noisy.beta_star)
    assert int((noisy.beta_star[noisy.support] != 0).sum()) == 3
    with pytest.raises(ValueError):
        sparse_regression(d=5, n=3, kappa=6)


def test_relu_points_match_thesis_data():
    x, y = relu_1d_points()
    assert x.shape == y.shape == (12,)
    assert x[0].item() == pytest.approx(-5.5 / 4 + 0.07) and y[0].item() == pytest.approx(0.345 - 2)
    assert len(RELU_1D_X) == 12 and torch.all(x[1:] > x[:-1])


def test_diag_net_parametrizations_are_explicit_and_convertible():
    with pytest.raises(ValueError, match="parametrization"):
        DiagonalLinearNet(5, "u*v")
    uv = DiagonalLinearNet(6, "uv", init_scale=0.1, n_models=2)
    assert torch.all(uv.beta() == 0) and torch.all(uv.u == 0.1) and torch.all(uv.v == 0)
    pm = DiagonalLinearNet(6, "w_pm", init_scale=0.05)
    assert torch.all(pm.w_plus == 0.05) and torch.all(pm.w_minus == 0.05)
    # u0 = 0.1 (code) is alpha = 0.05 (thesis): same weights after conversion
    conv = uv.to_parametrization("w_pm")
    assert torch.allclose(conv.w_plus[0], pm.w_plus[0]) and torch.allclose(conv.w_minus[0], pm.w_minus[0])
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(3, 6, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g, dtype=torch.float64)
    net = DiagonalLinearNet.from_weights(u, v, "uv")
    back = net.to_parametrization("w_pm").to_parametrization("uv")
    assert torch.allclose(back.u, u) and torch.allclose(back.v, v)
    wp, wm = uv_to_w_pm(u, v)
    assert torch.allclose(wp ** 2 - wm ** 2, u * v)
    assert torch.allclose(torch.stack(w_pm_to_uv(wp, wm)), torch.stack([u, v]))


def test_diag_net_loss_normalizations_and_jacobian():
    p = sparse_regression(d=8, n=5, kappa=2, seed=1)
    g = torch.Generator().manual_seed(1)
    net = DiagonalLinearNet.from_weights(torch.randn(2, 8, generator=g, dtype=torch.float64),
                                         torch.randn(2, 8, generator=g, dtype=torch.float64), "uv")
    r = net(p.x_train) - p.y_train
    assert torch.allclose(net.loss(p.x_train, p.y_train, "sum"), r.pow(2).sum(-1))
    assert torch.allclose(net.loss(p.x_train, p.y_train, "half_mean"), r.pow(2).sum(-1) / 10)
    assert torch.allclose(net.loss(p.x_train, p.y_train, "quarter_mean"), r.pow(2).sum(-1) / 20)
    with pytest.raises(ValueError):
        square_loss(r, p.y_train, "mean")
    for net_ in (net, net.to_parametrization("w_pm")):
        jac = net_.jacobian_features(p.x_train)
        out = net_(p.x_train)
        a, b = net_.weights()
        auto = torch.stack([torch.cat(torch.autograd.grad(out[0, i], (a, b), retain_graph=True), -1)[0]
                            for i in range(5)])
        assert torch.allclose(jac[0], auto)


def test_relu1d_batched_equals_single_and_forward():
    batched = ReLU1D(width=7, n_models=3, seeds=[10, 11, 12])
    single = ReLU1D(width=7, n_models=1, seeds=[11])
    assert torch.equal(batched.w[1], single.w[0]) and torch.equal(batched.a[1], single.a[0])
    assert set(batched.w.abs().unique().tolist()) == {2.5}
    x, _ = relu_1d_points()
    out = batched(x)
    manual = torch.relu(x[:, None] * batched.w[2] + batched.b[2]) @ batched.a[2]
    assert out.shape == (3, 12) and torch.allclose(out[2], manual)
    assert torch.allclose(batched.kinks(), -batched.b / batched.w)
    with pytest.raises(ValueError):
        ReLU1D(width=3, n_models=2, seeds=[1])
