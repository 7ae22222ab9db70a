"""PoisonPanel wiring, exercised in-process (no browser): crafting on digits fills the live figures."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from workbench.presets import quickstart_config
from workbench.ui.poison_panel import PoisonPanel


def _base(epochs: int, root: Path, optimizer: str = "sam"):
    """The SAM quickstart on a 384-example training split (6 batches of 64): quick crafting runs."""
    return quickstart_config(optimizer, epochs=epochs, root=str(root)).with_overrides({"data.max_train": 384})


def _records(run_path: Path, kind: str) -> list[dict]:
    lines = (Path(run_path) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, filter(None, lines)) if r.get("kind") == kind]


def _trace_with(fig, n: int):
    """The trace of ``fig`` with exactly ``n`` points (builders may add helper traces)."""
    hits = [t for t in fig.data if len(t.x if t.x is not None else ()) == n]
    assert hits, [(t.name, len(t.x if t.x is not None else ())) for t in fig.data]
    return hits[0]


def _points(fig) -> int:
    return max((len(t.x) for t in fig.data if t.x is not None), default=0)


def test_crafting_fills_the_figures_and_reports_the_poison(run_root):
    panel = PoisonPanel(root=run_root, base=_base(2, run_root), interval=0.1)
    assert "digits" in panel.w_base.value and "lenet5" in panel.w_base.value
    panel.w_iterations.value = 2
    panel.w_drift.value = "1"
    assert panel.start()
    assert not panel.start() and "already in progress" in panel.w_status.value
    assert panel.wait(120)
    assert not panel.errors, panel.errors
    res = panel.result
    assert res is not None and res.train.status == "finished"
    path = Path(res.poison_path)
    assert path.name == "poison.pt" and path.is_file() and panel.poison_path == path
    status = panel.w_status.value
    assert "Finished" in status and str(path) in status
    assert f"data.poison={path}" in panel.w_hint.value
    assert not panel.w_start.disabled and panel.w_stop.disabled
    assert panel.w_progress.value == pytest.approx(1.0)
    assert "epoch 2/2" in panel.w_progress_text.value

    # one point per inner iteration of every crafted batch, in order (Fig. 5.5)
    crafts = _records(res.run_path, "craft")
    assert len(crafts) == res.train.steps == res.poisoner.crafted_batches
    losses = [v for r in crafts for v in r["losses"]]
    assert len(losses) == sum(r["iterations"] for r in crafts) and all(r["iterations"] <= 2 for r in crafts)
    tr = _trace_with(panel.figure_loss, len(losses))
    assert list(tr.y) == pytest.approx(losses)
    assert 0 < _points(panel.figure_zoom) <= len(losses)  # the last batches only (Fig. 5.6)
    # ‖Δ‖_F per epoch (Fig. 5.2), the drift at the epoch-1 weights (Fig. 5.7)
    probes = _records(res.run_path, "probe")
    assert [p["epoch"] for p in probes] == [1, 2]
    tr = _trace_with(panel.figure_norm, 2)
    assert list(tr.x) == [1, 2]
    assert list(tr.y) == pytest.approx([p["delta_frobenius"] for p in probes])
    assert _points(panel.figure_drift) >= 2
    assert _points(panel.figure_cosine) >= 1
    # the image grid x / Δ / x + Δ was drawn from the poison file
    assert len(panel.figure_images.data) > 0
    # export writes every figure
    written = panel.export(run_root / "exports" / "poison", formats=("html",))
    assert {p.name for p in written} >= {"poison-craft-loss.html", "poison-delta-norm.html", "poison-drift.html"}


def test_stop_mid_run_and_stop_before_training(run_root):
    panel = PoisonPanel(root=run_root, base=_base(200, run_root), interval=0.1)
    panel.w_iterations.value = 2
    assert panel.start()
    deadline = time.monotonic() + 60
    while _points(panel.figure_loss) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _points(panel.figure_loss) >= 4
    panel.stop()
    assert panel.wait(60)
    res = panel.result
    assert res.train.status == "stopped" and res.train.epochs_done < 200
    status = panel.w_status.value
    assert "Stopped" in status and "poison.pt" in status and Path(res.poison_path).is_file()
    assert not panel.w_start.disabled and panel.w_stop.disabled
    # Stop pressed before the trainer exists (while data and model load) still stops the run
    assert panel.start()
    panel.stop()
    assert panel.wait(60)
    assert panel.result.train.status == "stopped" and panel.result.train.steps <= 1
    assert "Stopped" in panel.w_status.value


@pytest.mark.parametrize("widget,value,needle", [
    ("w_iterations", 0, "poison.iterations"),
    ("w_plr", 0.0, "poison.lr"),
    ("w_ensemble", 0, "poison.ensemble"),
    ("w_drift", "1, x", "poison.drift_epochs"),
    ("w_epochs", 0, "train.epochs"),
])
def test_bad_settings_are_reported_and_nothing_starts(run_root, widget, value, needle):
    panel = PoisonPanel(root=run_root, base=quickstart_config("sam", epochs=1, root=str(run_root)))
    getattr(panel, widget).value = value
    assert not panel.start()
    assert "Invalid setting" in panel.w_status.value and needle in panel.w_status.value
    assert not panel.running and not any(run_root.iterdir())


def test_sgd_base_is_refused(run_root):
    panel = PoisonPanel(root=run_root, base=quickstart_config("sgd", epochs=1, root=str(run_root)))
    assert "SAM" in panel.w_base.value
    assert not panel.start()
    assert "crafting run trains with SAM" in panel.w_status.value and not panel.running
    assert not any(run_root.iterdir())


def test_default_base_is_the_sam_quickstart(tmp_path):
    panel = PoisonPanel(root=tmp_path / "runs")
    run_cfg, poison_cfg = panel.configs()
    assert run_cfg.optim.name == "sam" and run_cfg.data.name == "digits" and run_cfg.train.epochs == 10
    assert run_cfg.root == str(tmp_path / "runs") and poison_cfg.iterations == 5
    assert "wb-poison-panel" in panel.widget._dom_classes
    assert "wb-po-craft-loss" in panel.figure_loss._dom_classes


def test_compare_crafts_then_trains_the_four_variants(run_root):
    panel = PoisonPanel(root=run_root, base=_base(1, run_root), interval=0.1)
    panel.w_iterations.value = 2
    panel.w_seeds.value = "x"
    assert not panel.compare() and "seeds" in panel.w_status.value
    panel.w_seeds.value = "0"
    assert panel.compare()
    assert not panel.start() and "already in progress" in panel.w_status.value
    assert panel.wait(120)
    assert not panel.errors, panel.errors
    comp = panel.comparison
    assert comp is not None and comp.status == "finished", panel.w_status.value
    assert "Comparison finished" in panel.w_status.value and str(comp.path) in panel.w_status.value
    assert comp.path.parent == run_root / "poison"
    assert sorted(comp.trials["variant"]) == sorted(["SGD on S", "SGD on S′", "SAM on S", "SGD on S + noise"])
    table = panel.w_table.value
    assert all(v in table for v in ("SGD on S′", "SAM on S", "SGD on S + noise"))
    # the live figures followed the crafting run only (not the four trainings)
    crafts = _records(comp.craft_run, "craft")
    _trace_with(panel.figure_loss, sum(r["iterations"] for r in crafts))
    assert list(_trace_with(panel.figure_norm, 1).x) == [1]
    assert len(panel.figure_compare.data) > 0 and len(panel.figure_images.data) > 0
    assert panel.poison_path == comp.poison_path and f"data.poison={comp.poison_path}" in panel.w_hint.value
    # Compare again: everything is found finished and skipped; the figures are read back from the records
    assert panel.compare() and panel.wait(240)
    # one seed: its crafting run (= SAM on S) and the three trained variants
    assert panel.comparison.status == "finished" and panel.comparison.skipped == 4
    _trace_with(panel.figure_loss, sum(r["iterations"] for r in crafts))
