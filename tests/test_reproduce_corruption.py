"""The parameter-corruption reproduction [Sun 2020, Alg. 1-2]: stored result, ledger row, verdict logic.

Tiny sizes (256 training images, one epoch, 200 test images): the point is the pipeline and the logic, not the
numbers (the measurement is ``workbench reproduce --corruption``).
"""
from __future__ import annotations

import numpy as np
import pytest

from workbench.reproduce import ledger_rows, load_result, save_result
from workbench.reproduce.corruption import RESULT, corruption_study, corruption_verdict

ITEM = "Parameter corruption (Sun 2020)"
TINY = dict(max_train=256, seeds=(0,), epochs=1, sizes=(1, 10, "all"), epsilons=(0.5,), n_random=3, count=200,
            headline_n=10, threads=1)


@pytest.fixture(scope="module")
def study():
    return corruption_study(**TINY)


def test_numbers_come_from_parameter_corruption(study):
    """Every cell equals a direct parameter_corruption call on the same trained network and test images."""
    from workbench.analysis.common import ExampleSet
    from workbench.analysis.corruption import parameter_corruption
    from workbench.config import DataConfig
    from workbench.training import load_data_cached

    bundle = load_data_cached(DataConfig(name="mnist-10k", max_train=256, split="pooled"))
    assert len(bundle.train) == 256
    cells = study.data["cells"]
    assert set(cells.method) == {"sgd", "sam"} and len(cells) == 2 * 3
    for method in ("sgd", "sam"):
        net = study.data["models"][(method, 0)]
        ex = ExampleSet.from_dataset(bundle.test, count=200, seed=0, split="test")
        k = sum(p.numel() for p in net.parameters())
        direct = parameter_corruption(net, ex, sizes=[1, 10, k], epsilon=0.5, n_random=3, seed=0)
        mine = cells[cells.method == method].sort_values("n")
        assert mine.n.tolist() == [1, 10, k]
        np.testing.assert_allclose(mine.gradient_increase, direct.gradient_increase, rtol=0, atol=1e-9)
        np.testing.assert_allclose(mine.random_mean, direct.random_increase_mean, rtol=0, atol=1e-9)
        np.testing.assert_allclose(mine.random_max, direct.random_increase.max(axis=1), rtol=0, atol=1e-9)
        if method == "sgd":  # the headline is the first method's at n = headline_n, eps = headline_epsilon
            assert study.metrics["loss_change_gradient"] == pytest.approx(direct.gradient_increase[1], abs=1e-9)
            assert study.metrics["loss_change_random"] == pytest.approx(direct.random_increase_mean[1], abs=1e-9)
    g, r = study.metrics["loss_change_gradient"], study.metrics["loss_change_random"]
    if r > 0:
        assert study.metrics["ratio"] == pytest.approx(g / r)
    else:  # random draws that lower the loss on average: no meaningful quotient
        assert np.isnan(study.metrics["ratio"])
    # the stored verdict is the verdict function's on the stored cells
    assert study.verdict == corruption_verdict(cells)[0]
    assert "LeNet-5 on 256 mnist-10k training images" in study.verdict_reason and "ResNet-34" in study.verdict_reason


def test_stored_result_feeds_the_ledger_row(study, tmp_path):
    """The stored JSON holds the metrics the ledger row reads, and the row shows them with the stored verdict."""
    save_result(study, tmp_path / RESULT, tables={k: study.data[k] for k in ("runs", "cells", "sam_vs_sgd")})
    doc = load_result(tmp_path / RESULT)
    assert doc["verdict"] == study.verdict
    for key in ("loss_change_gradient", "loss_change_random", "loss_change_gradient_sam", "loss_change_random_sam",
                "cells_holding", "cells_tested", "headline_n", "headline_epsilon"):
        assert isinstance(doc["metrics"][key], float), key
    assert doc["metrics"]["loss_change_gradient"] == study.metrics["loss_change_gradient"]
    assert len(doc["tables"]["cells"]) == 6
    row = next(r for r in ledger_rows(tmp_path) if r["item"] == ITEM)
    assert row["verdict"] == study.verdict and row["reason"] == study.verdict_reason
    assert "metric missing" not in row["measured"]
    for key in ("loss_change_gradient", "loss_change_random", "loss_change_gradient_sam"):
        assert format(doc["metrics"][key], ".3g") in row["measured"], key
    assert "LeNet-5" in row["scale"]


def test_cli_stores_a_tiny_check_apart(tmp_path, capsys):
    from workbench.cli import main

    assert main(["reproduce", "--corruption", "--tiny", "--results", str(tmp_path)]) == 0
    assert not (tmp_path / RESULT).exists()
    doc = load_result(tmp_path / "tiny" / RESULT)
    assert doc["command"] == "workbench reproduce --corruption --tiny"
    assert "corruption:" in capsys.readouterr().out


def _cells(pairs, n=(10, 100), eps=(0.1, 1.0)):
    """Rows with (gradient increase, largest random increase) taken from ``pairs`` in order."""
    it = iter(pairs)
    return [{"method": "sgd", "seed": 0, "n": a, "epsilon": e, **dict(zip(("gradient_increase", "random_max"),
                                                                        next(it)))} for e in eps for a in n]


@pytest.mark.parametrize("pairs, verdict", [
    ([(1.0, 0.01)] * 4, "reproduced"),
    ([(1.0, -0.002)] * 4, "reproduced"),                         # random draws that lower the loss
    ([(1.0, 0.01)] * 3 + [(1.0, 0.2)], "partial"),               # 5x only in one cell
    ([(1.0, 0.01)] * 3 + [(-0.1, -0.2)], "partial"),             # gradient lowering the loss does not hold
    ([(0.5, 0.1)] * 4, "not reproduced"),
    ([(0.0, 0.0)] * 4, "not reproduced"),
])
def test_verdict_on_constructed_cells(pairs, verdict):
    got, reason = corruption_verdict(_cells(pairs))
    assert got == verdict
    assert "cells" in reason and "weakest cell" in reason


def test_verdict_ignores_small_sizes_and_needs_judged_cells():
    rows = _cells([(1.0, 0.01)] * 4) + [{"n": 1, "epsilon": 0.1, "gradient_increase": 0.0, "random_max": 1.0}]
    assert corruption_verdict(rows)[0] == "reproduced"
    assert corruption_verdict(rows, factor=200)[0] == "not reproduced"
    with pytest.raises(ValueError, match="n >= 10"):
        corruption_verdict([{"n": 1, "epsilon": 0.1, "gradient_increase": 1.0, "random_max": 0.0}])
    with pytest.raises(ValueError, match="factor"):
        corruption_verdict(rows, factor=0)
