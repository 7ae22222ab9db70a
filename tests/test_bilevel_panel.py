"""BilevelPanel wiring: sliders retrain the models and move the boundary; the path animates; the study runs."""
from __future__ import annotations

import numpy as np
import pytest

from workbench.bilevel.illustration import IllustrationSettings, illustrate
from workbench.ui.bilevel_panel import BilevelPanel


@pytest.fixture(scope="module")
def ill():
    return illustrate(0, IllustrationSettings(grid=6, attack_steps=4, inner_steps=40, lam_grid=(-8.0, 4.0, 3)))


def _trace(fig, name):
    return next(t for t in fig.data if t.name and t.name.startswith(name))


def test_sliders_move_the_point_and_retrain(ill):
    p = BilevelPanel(ill, settings=IllustrationSettings(grid=6))
    assert all(len(p.figures[k].data) for k in ("no_reg", "reg", "lambda"))
    before = list(_trace(p.figures["no_reg"], "boundary, poisoned").x)
    out = p.place_poison(9.0, -7.0)
    pt = _trace(p.figures["no_reg"], "poisoning point")
    assert (pt.x[0], pt.y[0]) == (9.0, -7.0)
    assert list(_trace(p.figures["no_reg"], "boundary, poisoned").x) != before
    # the live readout equals the map's value at that cell when the point is on a grid node
    j = int(np.argmin(abs(ill.maps.xs - 9.5)))
    i = int(np.argmin(abs(ill.maps.ys - 9.5)))
    out = p.place_poison(float(ill.maps.xs[j]), float(ill.maps.ys[i]))
    assert out["no_reg"]["val_error"] == pytest.approx(ill.maps.error[0, i, j])
    assert out["reg"]["val_error"] == pytest.approx(ill.maps.error[1, i, j])
    assert "validation error" in p.w_readout.value


def test_attack_path_animation(ill):
    p = BilevelPanel(ill)
    p.show_attack_step(2)
    assert len(_trace(p.figures["reg"], "attack path").x) == 3
    p.animate(delay=0.0, wait=True)
    path = np.asarray(ill.attacks["no_reg"]["path"])
    assert p.w_px.value == pytest.approx(path[-1, 0], abs=0.051)
    assert len(_trace(p.figures["no_reg"], "attack path").x) == len(path)


def test_compute_and_study_runner(tmp_path):
    p = BilevelPanel(settings=IllustrationSettings(grid=5, attack_steps=2, inner_steps=20, lam_grid=(-8.0, 4.0, 2)),
                     study_root=tmp_path, study_defaults={"reps": 1, "steps": 2, "batches": 1})
    p.compute(wait=True)
    assert p.illustration is not None and not p.errors
    p.run_study(wait=True, inner_steps=10, epochs=2, strategies=("small", "rmd"))
    assert not p.errors, p.errors
    assert len(p.study.records) == 4 and "<table>" in p.w_table.value
    assert len(p.figures["study"].data) == 2
    assert (tmp_path / "digits" / "records.csv").exists()
    written = p.export(tmp_path / "fig", formats=("html",))
    assert len(written) == 4
