"""Figure builders of sharpness-aware poisoning (workbench.viz.poisoning) on small synthetic data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from workbench.viz.poisoning import (
    craft_loss_figure,
    craft_loss_points,
    delta_norm_figure,
    drift_figure,
    image_grid_figure,
    sam_cosine_figure,
)


def _craft(n_steps=12, per_epoch=4, iters=5):
    return [{"kind": "craft", "epoch": 1 + i // per_epoch, "step": i + 1, "iterations": iters,
             "losses": list(np.linspace(0.5, 0.1, iters) + 0.01 * i), "delta_change": 0.01} for i in range(n_steps)]


# ------------------------------------------------------------------ craft loss
def test_craft_loss_full_run():
    recs = _craft()
    fig = craft_loss_figure(recs)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 2
    raw, mean = fig.data
    assert list(raw.x) == list(range(60))  # running inner-iteration index over the whole run
    assert np.allclose(raw.y[:5], recs[0]["losses"]) and np.allclose(raw.y[-5:], recs[-1]["losses"])
    # one horizontal segment per epoch at that epoch's mean, spanning its x range
    assert list(mean.x) == [0, 19, None, 20, 39, None, 40, 59, None]
    e1 = np.mean([v for r in recs[:4] for v in r["losses"]])
    assert mean.y[0] == pytest.approx(e1) and mean.y[1] == pytest.approx(e1)
    assert not fig.layout.shapes
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text


def test_craft_loss_zoom_has_batch_separators():
    recs = _craft()
    fig = craft_loss_figure(recs, zoom=(3, 5))
    assert len(fig.data) == 1
    # steps 3..5 keep their global x coordinates
    assert list(fig.data[0].x) == list(range(10, 25))
    shapes = fig.layout.shapes
    assert len(shapes) == 3
    assert sorted(s.x0 for s in shapes) == [9.5, 14.5, 19.5]
    assert all(s.yref == "paper" and s.x0 == s.x1 for s in shapes)


def test_craft_loss_partial_and_varied_iterations():
    recs = _craft(3)
    recs[1]["losses"] = recs[1]["losses"][:2]  # early stop after 2 inner iterations
    recs.append({"epoch": 1, "step": 4, "losses": []})  # nothing crafted: skipped
    pts = craft_loss_points(recs)
    assert list(pts["batch_start"]) == [0, 5, 7]
    assert list(pts["iteration"][5:7]) == [1, 2]
    fig = craft_loss_figure(recs, zoom=(1, 10))
    assert len(fig.data[0].x) == 12 and len(fig.layout.shapes) == 3


def test_craft_loss_empty_and_bad_zoom():
    for fig in (craft_loss_figure([]), craft_loss_figure([], zoom=(1, 3))):
        assert all(len(t.x) == 0 for t in fig.data if t.x is not None)
        assert "iteration" in fig.layout.xaxis.title.text
        assert "𝓑" in fig.layout.yaxis.title.text
    with pytest.raises(ValueError, match="zoom"):
        craft_loss_figure(_craft(), zoom=(5, 3))


def test_craft_loss_paper_theme_has_no_default_title():
    assert not craft_loss_figure(_craft(), theme="paper").layout.title.text
    assert craft_loss_figure(_craft(), title="T").layout.title.text == "T"


# ------------------------------------------------------------------ ‖Δ‖
def test_delta_norm_figure():
    fig = delta_norm_figure([1, 2, 3], [300.0, 650.0, 1063.0])
    assert len(fig.data) == 1
    assert list(fig.data[0].x) == [1, 2, 3] and list(fig.data[0].y) == [300.0, 650.0, 1063.0]
    assert "‖Δ‖" in fig.layout.yaxis.title.text
    empty = delta_norm_figure([], [])
    assert len(empty.data) == 1 and len(empty.data[0].x) == 0 and empty.layout.xaxis.title.text == "epoch"
    with pytest.raises(ValueError, match="length|values"):
        delta_norm_figure([1, 2], [1.0])


# ------------------------------------------------------------------ drift
def _probes(n=8, ks=(1, 5)):
    return [{"kind": "probe", "name": "poison", "epoch": e,
             "drift": {str(k): 0.01 * e + k * 1e-3 for k in ks if k <= e},
             "poison_cos_loss": 0.05, "clean_cos_loss": 0.02, "delta_frobenius": 10.0 * e} for e in range(1, n + 1)]


def test_drift_figure_lines_per_frozen_epoch():
    fig = drift_figure(_probes())
    names = [t.name for t in fig.data]
    assert names == ["weights after epoch 1", "weights after epoch 5", "current weights, poisons",
                     "current weights, clean data (no poison)"]
    assert list(fig.data[0].x) == list(range(1, 9))
    assert list(fig.data[1].x) == [5, 6, 7, 8]
    assert fig.data[1].y[0] == pytest.approx(0.055)
    assert list(fig.data[3].y) == [0.02] * 8


def test_drift_figure_accepts_probe_dataframe_and_ignores_other_probes():
    recs = _probes(6) + [{"kind": "probe", "name": "top_eigenvalue", "epoch": 3, "lambda_max": 4.0}]
    df = pd.DataFrame(recs)
    a, b = drift_figure(recs), drift_figure(df)
    assert [t.name for t in a.data] == [t.name for t in b.data]
    assert [list(t.x) for t in a.data] == [list(t.x) for t in b.data]


def test_drift_figure_empty():
    fig = drift_figure([])
    assert len(fig.data) == 2 and all(len(t.x) == 0 for t in fig.data)
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text


# ------------------------------------------------------------------ images
def test_image_grid_grey_symmetric_delta():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 1, 8, 8, generator=g)
    d = 0.1 * torch.randn(10, 1, 8, 8, generator=g)
    fig = image_grid_figure(x, d, n=4, labels=list(range(10)))
    assert len(fig.data) == 12  # 3 rows x 4 examples
    ca, cb = fig.layout.coloraxis, fig.layout.coloraxis2
    dmax = float(d[:4].abs().max())
    assert cb.cmin == pytest.approx(-dmax) and cb.cmax == pytest.approx(dmax) and cb.cmin == -cb.cmax
    assert cb.colorscale[0][1].lower() != cb.colorscale[-1][1].lower()  # diverging
    assert ca.cmin <= float(torch.minimum(x[:4], x[:4] + d[:4]).min()) + 1e-6
    assert ca.cmax >= float(torch.maximum(x[:4], x[:4] + d[:4]).max()) - 1e-6
    deltas = [t for t in fig.data if t.coloraxis == "coloraxis2"]
    assert len(deltas) == 4
    assert np.allclose(np.asarray(deltas[0].z), d[0, 0].numpy())
    sums = [t for t in fig.data if t.coloraxis == "coloraxis" and t.name == "x + Δ"]
    assert np.allclose(np.asarray(sums[1].z), (x[1, 0] + d[1, 0]).numpy(), atol=1e-6)
    assert [a.text for a in fig.layout.annotations][:4] == ["0", "1", "2", "3"]


def test_image_grid_rgb_and_three_dim_inputs():
    x = np.random.default_rng(0).normal(size=(5, 3, 6, 6))
    d = 0.05 * np.random.default_rng(1).normal(size=(5, 3, 6, 6))
    fig = image_grid_figure(x, d, n=3)
    assert len(fig.data) == 9
    assert sum(t.type == "image" for t in fig.data) == 6
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert np.allclose(np.asarray(heat[0].z), d[0].mean(axis=0))  # Δ of colour images: channel mean
    assert fig.layout.coloraxis2.cmin == -fig.layout.coloraxis2.cmax
    fig2 = image_grid_figure(x[:, 0], d[:, 0], n=20)  # [N, H, W], n capped by N
    assert len(fig2.data) == 15


def test_image_grid_rejects_mismatch():
    with pytest.raises(ValueError, match="shape"):
        image_grid_figure(np.zeros((2, 1, 4, 4)), np.zeros((2, 1, 4, 5)))
    with pytest.raises(ValueError, match="images"):
        image_grid_figure(np.zeros((2, 4)), np.zeros((2, 4)))


# ------------------------------------------------------------------ SAM cosine
def test_sam_cosine_figure_per_step_and_epoch_mean():
    steps = [{"kind": "step", "step": s, "epoch": s / 10, "cosine": 0.99 - 0.001 * s} for s in range(1, 31)]
    fig = sam_cosine_figure(steps)
    assert len(fig.data) == 2
    per_step, mean = fig.data
    assert len(per_step.x) == 30 and per_step.y[0] == pytest.approx(1 - 0.989)
    assert list(mean.x) == [1, 2, 3]
    assert mean.y[0] == pytest.approx(np.mean([1 - (0.99 - 0.001 * s) for s in range(1, 11)]))
    df_fig = sam_cosine_figure(pd.DataFrame(steps))
    assert np.allclose(df_fig.data[1].y, mean.y)


def test_sam_cosine_figure_without_cosines():
    steps = [{"step": 1, "epoch": 0.5, "loss": 1.0}]  # an SGD run: no cosine
    for fig in (sam_cosine_figure(steps), sam_cosine_figure(pd.DataFrame()), sam_cosine_figure([])):
        assert len(fig.data) == 2 and all(len(t.x) == 0 for t in fig.data)
        assert fig.layout.yaxis.title.text


def test_figures_take_both_themes():
    for fig in (craft_loss_figure(_craft(), theme="paper"), delta_norm_figure([1], [1.0], theme="paper"),
                drift_figure(_probes(), theme="paper"), sam_cosine_figure([], theme="paper"),
                image_grid_figure(np.zeros((2, 1, 4, 4)), np.ones((2, 1, 4, 4)), theme="paper")):
        assert fig.layout.font.family.startswith("Times")
    with pytest.raises(ValueError, match="theme"):
        delta_norm_figure([1], [1.0], theme="poster")
