"""SweepPanel wiring, exercised in-process (no browser): tiny studies on digits into tmp_path."""
from __future__ import annotations

import time

import pytest

from workbench.config import RunConfig
from workbench.presets import quickstart_config
from workbench.sweeps import StudyConfig, read_trials
from workbench.ui.sweep_panel import DEFAULT_FIELDS, SweepPanel, parse_seeds

TINY = "optim.name: [sgd, sam]\noptim.lr: [0.05]"   # 2 optimizers x 1 learning rate (x 2 seeds)


def _classes(w) -> list[str]:
    return list(w._dom_classes)


def test_panel_runs_a_tiny_sweep_and_resumes(tmp_path):
    root = tmp_path / "sweeps"
    panel = SweepPanel(root=root, name="tiny", epochs=1, fields=TINY, seeds=(0, 1), interval=0.05)
    assert "wb-sweep-panel" in _classes(panel.widget)
    for w, cls in ((panel.w_launch, "wb-sw-launch"), (panel.w_stop, "wb-sw-stop"), (panel.w_fields, "wb-sw-fields"),
                   (panel.w_status, "wb-sw-status"), (panel.w_table, "wb-sw-table"),
                   (panel.figure_best, "wb-sw-best"), (panel.w_summary, "wb-sw-summary"),
                   (panel.figure_params, "wb-sw-params-figure"), (panel.w_seeds, "wb-sw-seeds")):
        assert cls in _classes(w)
    assert panel.start()
    assert not panel.start() and "already running" in panel.w_status.value
    assert panel.wait(120)
    study = panel.study
    assert study.path == (root / "tiny").resolve() and study.seeds == [0, 1]
    assert panel.result.status == "finished" and len(panel.result.records) == 4
    # the trials table lists every trial
    tbl = panel.w_table.value
    assert tbl.count(">finished<") == 4 and tbl.count(">sgd<") == 2 and tbl.count(">sam<") == 2
    # mean ± s.e. per configuration: 2 rows of 2 seeds
    assert list(panel.summary["optim.name"]) == ["sgd", "sam"] and list(panel.summary["val_acc_n"]) == [2, 2]
    assert panel.w_summary.value.count("±") >= 4 and "<b>" in panel.w_summary.value
    assert len(panel.table) == 4 and set(panel.table["status"]) == {"finished"}
    # best so far: one marker per trial, the running best
    trial, best = panel.figure_best.data
    values = [r["value"] for r in read_trials(study.path)]
    assert sorted(trial.y) == pytest.approx(sorted(values)) and best.y[-1] == pytest.approx(max(values))
    # metric vs hyperparameter: x = optim.lr (numeric), one line per optimizer, error bars = s.e.
    assert panel.w_params_box.layout.display != "none"
    assert [t.name for t in panel.figure_params.data] == ["sgd", "sam"]
    for t, (_, row) in zip(panel.figure_params.data, panel.summary.iterrows()):
        assert list(t.x) == [0.05]
        assert t.y[0] == pytest.approx(100 * row["val_acc_mean"])
        assert t.error_y.array[0] == pytest.approx(100 * row["val_acc_se"])
    panel.w_fig_metric.value = "test_acc"
    assert panel.figure_params.data[0].y[0] == pytest.approx(100 * panel.summary["test_acc_mean"][0])
    assert "Finished" in panel.w_status.value and not panel.w_launch.disabled and panel.w_stop.disabled
    # redraws are throttled (interval 0.05 s) and happen off the study thread
    assert panel.redraws >= 1
    # export: figures and tables
    written = panel.export(tmp_path / "out" / "tiny", formats=("html",))
    assert {p.name for p in written} == {"tiny-test_acc.html", "tiny-best.html", "tiny-summary.md",
                                         "tiny-summary.tex"}
    assert all(p.exists() for p in written)
    # Launch again: every trial is skipped
    assert panel.start() and panel.wait(60)
    assert panel.result.skipped == 4 and "4 from before" in panel.w_status.value
    assert panel.w_table.value.count("previous session") == 4


def test_stop_mid_study(tmp_path):
    fields = "optim.name: [sgd, sam]\noptim.lr: [0.01, 0.05, 0.1]"
    panel = SweepPanel(root=tmp_path, name="stop-me", epochs=300, fields=fields, seeds=(0, 1), interval=0.05)
    assert panel.start()
    deadline = time.time() + 60
    while time.time() < deadline and not any(r.get("epoch", 0) >= 2 for r in list(panel._running.values())):
        time.sleep(0.02)   # the first trial is training (epoch 2 of 300)
    assert "Trial 1/12" in panel.w_status.value
    t0 = time.time()
    panel.stop()
    assert "Stopping" in panel.w_status.value
    assert panel.wait(60)
    assert time.time() - t0 < 10   # the trainer checks the stop event about once a second
    res = panel.result
    assert res.status == "stopped"
    assert [r["status"] for r in res.records] == ["stopped"]   # 1 of 12 trials, stopped mid-training
    assert 2 <= res.records[0]["epochs"] < 300
    assert "Stopped" in panel.w_status.value and "resume" in panel.w_status.value
    assert ">stopped<" in panel.w_table.value
    assert panel.w_progress.bar_style == "warning" and not panel.w_launch.disabled and panel.w_stop.disabled
    assert panel.w_progress_text.value.startswith("1/12")
    panel.stop()
    assert "Nothing is running" in panel.w_status.value


@pytest.mark.parametrize("field, value, message", [
    ("w_fields", "optim.lr: [0.1", "not valid YAML"),
    ("w_fields", "optim.foo: [1, 2]", "optim.foo"),
    ("w_fields", "- optim.lr", "one 'field: [values]' per line"),
    ("w_fields", "optim.lr: [-1]", "optim.lr"),
    ("w_fields", "train.seed: [1, 2]", "seeds"),
    ("w_seeds", "0, x", "not an integer"),
    ("w_seeds", "1, 1", "repeats"),
    ("w_name", "  ", "name"),
    ("w_pruner", "median", "pruning needs"),
])
def test_bad_settings_go_to_the_status_line(tmp_path, field, value, message):
    panel = SweepPanel(root=tmp_path, name="bad", epochs=1)
    getattr(panel, field).value = value
    assert not panel.start()
    assert not panel.running and panel.study is None
    assert "Invalid study" in panel.w_status.value and message in panel.w_status.value.replace("&#x27;", "'")
    assert not list(tmp_path.iterdir())   # nothing was written


def test_prefilled_from_a_study_and_the_defaults(tmp_path):
    study = StudyConfig(name="lr-3ep", base=quickstart_config("sam", epochs=3, root=str(tmp_path)),
                        params={"optim.lr": [0.01, 0.1], "optim.rho": [0.05, 0.1]}, seeds=[0, 1, 2],
                        metric="val_loss", mode="min", root=str(tmp_path / "sweeps"), grace_epochs=2)
    panel = SweepPanel(study=study)
    assert panel.w_base.value == "quickstart" and panel.w_optimizer.value == "sam"
    assert panel.w_epochs.value == 3 and panel.w_seeds.value == "0, 1, 2" and panel.w_mode.value == "min"
    assert panel.build_study().to_dict() == study.to_dict()
    # a base that is not the quickstart preset is offered as 'given'
    other = RunConfig().with_overrides({"data.name": "moons", "model.name": "mlp", "train.epochs": 2})
    p2 = SweepPanel(study=StudyConfig(name="moons", base=other, params={"optim.lr": [0.1]}, root=str(tmp_path)))
    assert p2.w_base.value == "given" and p2.w_optimizer.disabled
    assert p2.build_study().base.to_dict() == other.to_dict()
    assert SweepPanel(root=tmp_path, base=other).w_epochs.value == 2
    assert SweepPanel(root=tmp_path, base=other, epochs=4).build_study().base.train.epochs == 4
    # the repository's config files are offered as bases
    p3 = SweepPanel(root=tmp_path, epochs=1)
    moons = [v for _, v in p3.w_base.options if v.endswith("moons_mlp_sam.yaml")]
    assert moons
    p3.w_base.value = moons[0]
    assert p3.w_optimizer.disabled
    b = p3.build_study().base
    assert b.data.name == "moons" and b.train.epochs == 1
    # defaults: the SGD-vs-SAM learning-rate grid with 5 seeds on the quickstart preset
    d = SweepPanel(root=tmp_path).build_study()
    assert d.search == "grid" and d.seeds == [0, 1, 2, 3, 4] and len(d.trials()) == 30
    assert {k: list(p.values) for k, p in d.params.items()} == {"optim.name": ["sgd", "sam"],
                                                                 "optim.lr": [0.01, 0.05, 0.1]}
    assert SweepPanel(root=tmp_path).w_fields.value == DEFAULT_FIELDS
    assert parse_seeds("0-2, 7") == [0, 1, 2, 7]
    # search and metric widgets keep dependent widgets consistent
    d2 = SweepPanel(root=tmp_path)
    assert d2.w_n_trials.disabled
    d2.w_search.value = "random"
    assert not d2.w_n_trials.disabled
    d2.w_metric.value = "train_loss"
    assert d2.w_mode.value == "min"
