"""The study engine: journal (torn lines, latest wins, bound definition) and the one callback error policy."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import warnings

import pytest

from workbench.engine import CallbackList, Journal, SpecMismatchError, StopSignal, bind_spec, spec_hash, train_run
from workbench.presets import quickstart_config


# ------------------------------------------------------------------ journal
def test_journal_tolerates_a_torn_line_and_repairs_it_before_the_next_record(tmp_path):
    j = Journal(tmp_path / "trials.jsonl", "trial_id")
    j.append({"trial_id": "a", "status": "finished", "value": 1.0})
    with open(j.path, "ab") as f:
        f.write(b'{"trial_id": "b", "status": "fini')  # a writer killed mid-record
    assert [r["trial_id"] for r in j.records()] == ["a"]
    j.append({"trial_id": "c", "status": "finished", "value": 3.0})
    lines = j.path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and json.loads(lines[-2])["trial_id"] == "c"  # not glued onto the fragment
    assert list(j.latest()) == ["a", "c"]


def test_journal_latest_record_per_key_wins_in_order_of_first_appearance(tmp_path):
    j = Journal(tmp_path / "log.jsonl", ("trial", "defense"))
    for rec in [{"trial": 0, "defense": "None", "status": "running"},
                {"trial": 1, "defense": "None", "status": "finished"},
                {"trial": 0, "defense": "None", "status": "finished", "value": 2},
                {"trial": 0, "defense": "EPIC-0.2", "status": "failed"}]:
        j.append(rec)
    latest = j.latest()
    assert list(latest) == [(0, "None"), (1, "None"), (0, "EPIC-0.2")]
    assert latest[(0, "None")] == {"trial": 0, "defense": "None", "status": "finished", "value": 2}
    assert len(j.records()) == 4  # nothing is rewritten


def test_journal_skips_records_without_their_key_with_a_warning(tmp_path):
    j = Journal(tmp_path / "log.jsonl", "trial_id")
    j.append({"trial_id": "a"})
    j.append({"other": 1})
    with pytest.warns(RuntimeWarning, match="without trial_id skipped"):
        assert list(j.latest()) == ["a"]


def test_journal_callable_key_and_missing_file(tmp_path):
    j = Journal(tmp_path / "log.jsonl", lambda r: (r.get("kind"), r.get("seed")))
    assert j.latest() == {} and j.records() == []
    j.append({"kind": "craft", "seed": 0, "status": "running"})
    j.append({"kind": "craft", "seed": 0, "status": "finished"})
    assert j.latest() == {("craft", 0): {"kind": "craft", "seed": 0, "status": "finished"}}


def test_changed_definition_is_refused_with_one_line(tmp_path):
    f = tmp_path / "study" / "spec.json"
    stored = bind_spec(f, {"lr": 0.1, "epochs": 3}, what="study", hint="base config", extra={"created": "now"})
    assert stored["hash"] == spec_hash({"epochs": 3, "lr": 0.1}) and stored["created"] == "now"
    assert bind_spec(f, {"epochs": 3, "lr": 0.1}, what="study", extra={"created": "later"})["created"] == "now"
    with pytest.raises(SpecMismatchError) as e:
        bind_spec(f, {"lr": 0.2, "epochs": 3}, what="study", hint="base config")
    msg = str(e.value)
    assert "\n" not in msg and "holds a different study" in msg and "spec.json differs: base config" in msg
    assert isinstance(e.value, ValueError)


def test_sweep_refuses_a_changed_base_config_on_resume(tmp_path):
    from workbench.sweeps import StudyConfig
    from workbench.sweeps.trials import bind_study

    base = quickstart_config("sgd", epochs=1)
    study = StudyConfig(name="s", base=base, root=str(tmp_path), params={"optim.lr": [0.1]}, seeds=[0])
    bind_study(study)
    more = StudyConfig(name="s", base=base, root=str(tmp_path), params={"optim.lr": [0.1, 0.2]}, seeds=[0, 1])
    bind_study(more)  # more values and seeds extend the study
    other = StudyConfig(name="s", base=base.with_overrides({"train.epochs": 2}), root=str(tmp_path),
                        params={"optim.lr": [0.1]}, seeds=[0])
    with pytest.raises(SpecMismatchError, match="holds a different study"):
        bind_study(other)


def test_targeted_study_refuses_a_changed_definition(tmp_path):
    from workbench.targeted.study import TrialStudy, _bind

    _bind(tmp_path, TrialStudy(trials=2))
    _bind(tmp_path, TrialStudy(trials=5, defenses=[{"name": "none"}, {"name": "epic"}]))  # extends
    with pytest.raises(SpecMismatchError, match="targeted-poisoning study"):
        _bind(tmp_path, TrialStudy(trials=2, budget=0.1))


# ------------------------------------------------------------------ callbacks
def test_a_raising_callback_is_disabled_with_a_warning_naming_it():
    seen = []

    def broken(ev):
        raise KeyError("boom")

    cbs = CallbackList([broken, seen.append, None], what="study")
    with pytest.warns(RuntimeWarning, match=r"study callback .*broken raised KeyError: 'boom'; it is disabled"):
        cbs(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once: the second event warns no more
        cbs(2)
    assert seen == [1, 2] and cbs.disabled == [broken] and len(cbs) == 1


def test_train_run_never_raises_and_a_broken_callback_does_not_stop_training(tmp_path):
    cfg = quickstart_config("sgd", epochs=1).with_overrides({"root": str(tmp_path), "data.max_train": 64})
    calls = []

    def broken(ev):
        calls.append(ev)
        raise RuntimeError("ui gone")

    cbs = CallbackList([broken], what="study")
    with pytest.warns(RuntimeWarning, match="broken raised RuntimeError"):
        rec, res = train_run(cfg, callbacks=[cbs])
    assert rec["status"] == "finished" and res.epochs_done == 1 and len(calls) == 1
    bad = cfg.with_overrides({"data.root": str(tmp_path / "none"), "data.name": "mnist"})
    rec, res = train_run(bad)
    assert rec["status"] == "failed" and "FileNotFoundError" in rec["error"] and res is None


def test_train_run_stops_on_the_study_signal_and_resumes(tmp_path):
    cfg = quickstart_config("sgd", epochs=2).with_overrides({"root": str(tmp_path), "data.max_train": 128})
    stop = threading.Event()
    stop.set()
    rec, _ = train_run(cfg, stop=StopSignal(stop))
    assert rec["status"] == "stopped"
    rec2, res = train_run(None, resume=rec["run_path"])
    assert rec2["status"] == "finished" and res.epochs_done == 2 and rec2["run_path"] == rec["run_path"]
    again, none = train_run(None, resume=rec["run_path"])  # finished: not trained again
    assert again["status"] == "finished" and none is None


def test_study_modules_import_no_viz_ui_or_plotting():
    # the study modules and the core (config, data, models, optim, training, runs, analysis) import no UI or figures
    mods = ["workbench.engine", "workbench.poisoning.study", "workbench.targeted.study", "workbench.bilevel.study",
            "workbench.sweeps.runner", "workbench.sweeps.ray_backend", "workbench.config", "workbench.data",
            "workbench.models", "workbench.optim", "workbench.training", "workbench.runs", "workbench.analysis",
            "workbench.analysis.tasks", "workbench.analysis.curvature", "workbench.analysis.corruption",
            "workbench.analysis_registry"]
    code = (f"import sys; import {', '.join(mods)}; bad = [m for m in sys.modules if m.startswith(("
            "'workbench.viz', 'workbench.ui', 'workbench.app', 'plotly', 'ipywidgets'))]; print(bad); "
            "sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ray_backend_imports_no_private_name_and_not_the_runner():
    """The Ray backend builds on the engine's public names; the runner imports it (no import cycle)."""
    import ast
    from pathlib import Path

    import workbench.sweeps.ray_backend as rb

    tree = ast.parse(Path(rb.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[-1] != "runner", ast.dump(node)
            assert not [a.name for a in node.names if a.name.startswith("_")], ast.dump(node)
