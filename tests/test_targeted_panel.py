"""TargetedPanel wiring, in-process: live crafting fills the loss figure, victims fill the table and the views."""
from __future__ import annotations

import pytest
import torch

from workbench.config import DataConfig
from workbench.data import load_data
from workbench.targeted import pretrain
from workbench.ui.targeted_panel import TargetedPanel


@pytest.fixture(scope="module")
def ready():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    data = load_data(DataConfig(name="digits", split="pooled"))
    yield data, pretrain(data, epochs=10, seed=0)
    torch.set_num_threads(n)


def test_craft_then_train_victims_with_and_without_defense(ready, tmp_path):
    data, model = ready
    panel = TargetedPanel(data, pretrained=model, root=tmp_path)
    panel.w_iterations.value = 25
    panel.w_epochs.value = 3
    panel.w_defense.value = "EPIC-0.2"
    assert panel.w_train.disabled
    assert panel.craft()
    assert not panel.craft() and "Busy" in panel.w_status.value
    assert panel.wait(120) and not panel.errors, panel.errors
    assert panel.poison is not None and panel.poison.index.tolist() == panel.setup.poison_indices
    assert sum(len(t.x) for t in panel.fig_loss.data) == 25           # one point per iteration
    assert len(panel.fig_hist.data) == 2 and "Crafted" in panel.w_status.value
    assert not panel.w_train.disabled and panel.w_progress.value == pytest.approx(1.0)
    assert panel.train()
    assert panel.wait(120) and not panel.errors, panel.errors
    assert set(panel.results) == {"clean", "undefended", "EPIC-0.2"}
    assert {t.name for t in panel.fig_prob.data} == {"clean", "undefended", "EPIC-0.2"}
    assert all(len(t.x) == 3 for t in panel.fig_prob.data)
    t = panel.table()
    assert list(t["victim"]) == ["clean", "undefended", "EPIC-0.2"]
    assert t.loc[t["victim"] == "EPIC-0.2", "dropped"].item() > 0        # a round ran after the 1-epoch warm-up
    assert "Undefended" in panel.w_status.value and "<table" in panel.w_table.value
    groups = {t.name.split(" (")[0] for t in panel.fig_pca.data}
    assert {"effective poison", "ineffective poison", "clean target class", "clean poison class", "target"} <= groups
    written = panel.export(tmp_path / "figs", formats=("html",))
    assert len(written) == 4 and all(p.is_file() for p in written)


def test_stop_ends_crafting_early(ready, tmp_path):
    data, model = ready
    panel = TargetedPanel(data, pretrained=model, root=tmp_path)
    panel.w_attack.value = "gradient_matching"
    panel.w_iterations.value = 5000
    assert panel.craft()
    import time

    t0 = time.monotonic()
    while not panel.fig_loss.data and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    panel.stop()
    assert panel.wait(60) and not panel.errors, panel.errors
    assert panel.poison.meta["stopped"] and panel.attack.iterations_done < 5000
    assert "stopped early" in panel.w_status.value


def test_train_needs_a_poison(ready, tmp_path):
    data, model = ready
    panel = TargetedPanel(data, pretrained=model, root=tmp_path)
    assert not panel.train() and "Craft a poison first" in panel.w_status.value


def test_panel_fits_a_1000_px_column_and_uses_the_workbench_theme(tmp_path):
    import ipywidgets as W
    import plotly.graph_objects as go
    import plotly.io as pio

    from workbench.viz.theme import THEMES

    panel = TargetedPanel(root=tmp_path)            # nothing is loaded or trained before Craft
    assert panel.widget.layout.max_width == "1000px"
    px = lambda w: float(w.layout.width[:-2]) if w.layout.width and w.layout.width.endswith("px") else 0.0  # noqa: E731
    rows = [w for w in panel.widget.children if isinstance(w, W.HBox)]
    assert len(rows) == 5
    for row in rows:
        assert row.layout.flex_flow == "row wrap"   # a narrower column wraps instead of scrolling sideways
        widths = [float(c.layout.width) if isinstance(c, go.FigureWidget) else px(c) for c in row.children]
        assert sum(widths) + 4 * len(widths) <= 1000, widths   # 2-px widget margins: one line at 1,000 px
    screen = THEMES["screen"]
    for f in (panel.fig_loss, panel.fig_prob, panel.fig_hist, panel.fig_pca):
        assert f.layout.width <= 500 and f.layout.title.text
        assert f.layout.font.family == screen["font"]["family"] and list(f.layout.colorway)
        assert f.layout.template.layout.plot_bgcolor == pio.templates[screen["template"]].layout.plot_bgcolor
