"""Study figure builders on small synthetic tables: the figures carry exactly the numbers they are given."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workbench.sweeps import summarize
from workbench.viz.sweeps import (
    best_so_far_figure,
    matched_ratios,
    metric_vs_param_figure,
    parallel_coordinates_figure,
    ratio_histogram_figure,
)
from workbench.viz.theme import PAPER_WIDTHS_IN


def _summary() -> pd.DataFrame:
    # learning rates deliberately unsorted; sam at lr=0.1 has a single seed (se NaN)
    return pd.DataFrame({
        "optim.name": ["sgd", "sgd", "sgd", "sam", "sam", "sam"],
        "optim.lr": [0.1, 0.01, 0.05, 0.1, 0.01, 0.05],
        "test_acc_mean": [0.90, 0.80, 0.85, 0.93, 0.81, 0.88],
        "test_acc_se": [0.010, 0.020, 0.015, float("nan"), 0.012, 0.005],
        "test_acc_n": [5, 5, 5, 1, 5, 5],
    })


def _trials() -> pd.DataFrame:
    """2 optimizers x 2 learning rates x 3 seeds, one failed trial (NaN metric)."""
    rows = []
    acc = {("sgd", 0.01): [0.80, 0.82, 0.78], ("sgd", 0.1): [0.90, 0.88, 0.92],
           ("sam", 0.01): [0.84, 0.82, 0.80], ("sam", 0.1): [0.95, 0.88, float("nan")]}
    for (opt, lr), vals in acc.items():
        for seed, v in enumerate(vals):
            rows.append({"trial_id": f"{opt}-{lr}-{seed}", "status": "failed" if math.isnan(v) else "finished",
                         "seed": seed, "optim.name": opt, "optim.lr": lr, "test_acc": v})
    return pd.DataFrame(rows)


# ------------------------------------------------------------ mean ± s.e.
def test_error_bars_are_the_standard_errors_one_trace_per_group():
    s = _summary()
    fig = metric_vs_param_figure(s, "optim.lr", "test_acc", "optim.name", percent=False)
    assert [t.name for t in fig.data] == ["sgd", "sam"]
    for tr, opt in zip(fig.data, ["sgd", "sam"]):
        sub = s[s["optim.name"] == opt].sort_values("optim.lr")
        assert list(tr.x) == sub["optim.lr"].tolist()  # sorted by the numeric x
        np.testing.assert_allclose(tr.y, sub["test_acc_mean"])
        np.testing.assert_allclose(tr.error_y.array, sub["test_acc_se"].fillna(0.0))  # n = 1: no bar
        assert tr.error_y.visible and tr.error_y.type == "data"
        assert [int(n) for n in np.asarray(tr.customdata)[:, 1]] == sub["test_acc_n"].tolist()
        assert "seeds" in tr.hovertemplate
    # accuracies default to percent: means and errors both scaled
    pct = metric_vs_param_figure(s, "optim.lr", "test_acc", "optim.name", log_x=True)
    np.testing.assert_allclose(pct.data[0].error_y.array, [2.0, 1.5, 1.0])
    np.testing.assert_allclose(pct.data[0].y, [80.0, 85.0, 90.0])
    assert pct.layout.xaxis.type == "log" and list(pct.layout.xaxis.tickvals) == [0.01, 0.05, 0.1]
    assert "(%)" in pct.layout.yaxis.title.text


def test_metric_vs_param_groups_and_errors():
    s = _summary()
    one = metric_vs_param_figure(s[s["optim.name"] == "sgd"], "optim.lr", "test_acc")
    assert len(one.data) == 1
    s2 = s.assign(**{"optim.rho": [0.05, 0.05, 0.05, 0.1, 0.1, 0.1]})
    combo = metric_vs_param_figure(s2, "optim.lr", "test_acc", ["optim.name", "optim.rho"])
    assert [t.name for t in combo.data] == ["sgd · 0.05", "sam · 0.1"]
    cat = metric_vs_param_figure(s, "optim.name", "test_acc", "optim.lr")
    assert cat.layout.xaxis.type == "category" and len(cat.data) == 3
    with pytest.raises(ValueError, match="val_acc_mean"):
        metric_vs_param_figure(s, "optim.lr", "val_acc")
    # straight from summarize()
    t = _trials()
    summ = summarize(t, ["optim.name", "optim.lr"], ["test_acc"])
    fig = metric_vs_param_figure(summ, "optim.lr", "test_acc", "optim.name", percent=False)
    sgd = fig.data[0]
    np.testing.assert_allclose(sgd.error_y.array[0], np.std([0.80, 0.82, 0.78], ddof=1) / np.sqrt(3))


def test_builders_are_pure():
    s, t = _summary(), _trials()
    for build in (lambda: metric_vs_param_figure(s, "optim.lr", "test_acc", "optim.name"),
                  lambda: parallel_coordinates_figure(t, ["optim.name", "optim.lr"], "test_acc"),
                  lambda: ratio_histogram_figure(t, param="optim.lr", metric="test_acc",
                                                 baseline={"optim.name": "sgd"}, match_on=("seed", "optim.lr")),
                  lambda: best_so_far_figure([0.1, 0.3, 0.2])):
        assert build().to_json() == build().to_json()
    assert s.equals(_summary()) and t.equals(_trials())


# ------------------------------------------------------------ parallel coordinates
def test_parallel_coordinates_dimensions():
    t = _trials()
    fig = parallel_coordinates_figure(t, ["optim.name", "optim.lr", "seed"], "test_acc")
    (pc,) = fig.data
    assert pc.type == "parcoords"
    dims = pc.dimensions
    assert [d.label for d in dims] == ["optim.name", "optim.lr", "seed", "test_acc (%)"]
    ok = t[t["test_acc"].notna()]  # the failed trial is dropped
    assert len(dims[0].values) == len(ok) == 11
    # categorical: integer codes in order of appearance, labelled
    assert list(dims[0].ticktext) == ["sgd", "sam"] and list(dims[0].tickvals) == [0, 1]
    assert list(dims[0].values) == [0 if o == "sgd" else 1 for o in ok["optim.name"]]
    # numeric with few values: ticks at the values
    np.testing.assert_allclose(dims[1].values, ok["optim.lr"])
    assert list(dims[1].ticktext) == ["0.01", "0.1"]
    np.testing.assert_allclose(dims[3].values, ok["test_acc"] * 100)
    np.testing.assert_allclose(pc.line.color, ok["test_acc"] * 100)
    assert pc.line.showscale
    # log axis and all statuses
    lg = parallel_coordinates_figure(t.fillna({"test_acc": 0.5}), ["optim.lr"], "test_acc", log=["optim.lr"],
                                     statuses=None, percent=False)
    assert lg.data[0].dimensions[0].label == "optim.lr (log)"
    np.testing.assert_allclose(lg.data[0].dimensions[0].values, np.log10(t["optim.lr"]))
    assert len(lg.data[0].dimensions[1].values) == 12
    with pytest.raises(ValueError, match="momentum"):
        parallel_coordinates_figure(t, ["optim.momentum"], "test_acc")


# ------------------------------------------------------------ ratios ([Murphy 2025, Fig. 4.1])
def test_ratio_values_equal_hand_computed_ratios():
    t = _trials()
    fig = ratio_histogram_figure(t, param="optim.lr", metric="test_acc", baseline={"optim.name": "sgd"},
                                 match_on=("seed", "optim.lr"), bins=10)
    assert [tr.type for tr in fig.data] == ["histogram", "histogram"]
    assert [tr.meta["value"] for tr in fig.data] == [0.01, 0.1]
    # SAM / SGD with the same seed and learning rate, by hand; the failed SAM trial has no ratio
    np.testing.assert_allclose(sorted(fig.data[0].x), sorted([0.84 / 0.80, 0.82 / 0.82, 0.80 / 0.78]))
    np.testing.assert_allclose(sorted(fig.data[1].x), sorted([0.95 / 0.90, 0.88 / 0.88]))
    assert fig.data[0].name.startswith("0.01 (n=3")
    assert fig.layout.barmode == "overlay"
    # shared bins, and a vertical line at 1
    assert fig.data[0].xbins.size == fig.data[1].xbins.size
    assert any(sh.type == "line" and sh.x0 == 1.0 and sh.x1 == 1.0 for sh in fig.layout.shapes)

    grouped = ratio_histogram_figure(t, param="optim.lr", metric="test_acc", baseline={"optim.name": "sgd"},
                                     match_on=("seed", "optim.lr"), barmode="group")
    assert grouped.layout.barmode == "group" and list(grouped.data[1].x) == list(fig.data[1].x)
    with pytest.raises(ValueError, match="barmode"):
        ratio_histogram_figure(t, param="optim.lr", metric="test_acc", baseline={"optim.name": "sgd"},
                               match_on=("seed", "optim.lr"), barmode="stack")

    r = matched_ratios(t, "test_acc", {"optim.name": "sgd"}, ("seed", "optim.lr"))
    assert set(r["optim.name"]) == {"sam"} and len(r) == 5
    row = r[(r["seed"] == 2) & (r["optim.lr"] == 0.01)].iloc[0]
    assert row["baseline_test_acc"] == 0.78 and row["ratio"] == pytest.approx(0.80 / 0.78)


def test_ratio_baseline_must_be_unique_and_present():
    t = _trials()
    with pytest.raises(ValueError, match="optim.lr"):  # SGD has two learning rates per seed
        ratio_histogram_figure(t, param="optim.lr", metric="test_acc", baseline={"optim.name": "sgd"})
    with pytest.raises(ValueError, match="no trial matches"):
        matched_ratios(t, "test_acc", {"optim.name": "adam"})
    with pytest.raises(ValueError, match="optim.rho"):
        matched_ratios(t, "test_acc", {"optim.rho": 0.05})
    # a single baseline trial for everything (match_on=())
    one = matched_ratios(t, "test_acc", {"optim.name": "sgd", "optim.lr": 0.1, "seed": 0}, match_on=())
    assert len(one) == 10
    np.testing.assert_allclose(one["ratio"], one["test_acc"] / 0.90)


# ------------------------------------------------------------ best so far
def test_best_so_far_is_the_running_max_or_min():
    vals = [0.2, None, 0.5, 0.3, float("nan"), 0.7, 0.6]
    fig = best_so_far_figure(vals, metric="val_acc", total=10)
    trial, best = fig.data
    assert list(trial.x) == [1, 2, 3, 4, 5, 6, 7]
    np.testing.assert_allclose(best.y, [0.2, 0.2, 0.5, 0.5, 0.5, 0.7, 0.7])
    assert best.line.shape == "hv" and trial.mode == "markers"
    assert "0.7" in fig.layout.title.text and "trial 6" in fig.layout.title.text
    assert list(fig.layout.xaxis.range) == [0.5, 10.5]
    low = best_so_far_figure([0.9, 0.4, 0.6, 0.3], mode="min", metric="val_loss")
    np.testing.assert_allclose(low.data[1].y, [0.9, 0.4, 0.4, 0.3])
    empty = best_so_far_figure([])
    assert len(empty.data[0].x) == 0
    with pytest.raises(ValueError, match="mode"):
        best_so_far_figure([1.0], mode="up")


# ------------------------------------------------------------ paper theme
def test_paper_theme_widths():
    s, t = _summary(), _trials()
    width = int(PAPER_WIDTHS_IN["two-column"] * 96)
    figs = [metric_vs_param_figure(s, "optim.lr", "test_acc", "optim.name", theme="paper"),
            parallel_coordinates_figure(t, ["optim.name", "optim.lr"], "test_acc", theme="paper"),
            ratio_histogram_figure(t, param="optim.lr", metric="test_acc", baseline={"optim.name": "sgd"},
                                   match_on=("seed", "optim.lr"), theme="paper"),
            best_so_far_figure([0.1, 0.2], theme="paper")]
    for fig in figs:
        assert fig.layout.width == width
        assert "Times" in fig.layout.font.family and fig.layout.font.size == 9
        assert fig.layout.title.text is None  # no default title on paper figures
    screen = metric_vs_param_figure(s, "optim.lr", "test_acc", "optim.name")
    assert screen.layout.width is None and "standard error" in screen.layout.title.text
    with pytest.raises(ValueError, match="theme"):
        best_so_far_figure([0.1], theme="poster")
