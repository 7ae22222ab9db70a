"""Studies on the Ray Tune backend: run folders, resume, failures, ASHA / median pruning with Optuna, stop.

Ray's start-up takes ~7-10 s here and every ``Tuner.fit`` ~6 s more: the first test
lets ``run_study`` start and shut down its own Ray; the others share one Ray session
(a module fixture), which ``run_ray`` reuses and leaves running; the last checks that
no Ray process is left.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from workbench.presets import quickstart_config
from workbench.runs import list_runs, load_run
from workbench.sweeps import StudyConfig, read_trials, run_study

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray[tune]")


def _descendants(pid: int | None = None) -> set[int]:
    """Live (not zombie) Ray processes descending from this one: the GCS, raylet and workers of a Ray it started."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid or os.getpid()]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return {p for p in out if _is_ray(p)}


def _is_ray(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return "/ray/" in cmd or cmd.startswith("ray::")


def _gone(pids: set[int], timeout: float = 15.0) -> set[int]:
    """Those of ``pids`` still alive (not zombies) after waiting up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = set()
        for p in pids:
            try:
                state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.add(p)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def test_missing_ray_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    study = StudyConfig(name="noray", base=quickstart_config("sgd", epochs=1), backend="ray", root=str(tmp_path))
    with pytest.raises(ImportError, match=r"pip install 'ray\[tune\]'"):
        run_study(study)


@needs_ray
def test_grid_on_ray_gives_finished_runs_and_resumes(tmp_path):
    import ray

    own = not ray.is_initialized()  # True unless another test module left a Ray running
    study = StudyConfig(name="rg", base=quickstart_config("sgd", epochs=2), params={"optim.name": ["sgd", "sam"]},
                       seeds=[0], backend="ray", root=str(tmp_path))
    events, ray_pids = [], set()

    def record(ev):
        events.append(ev)
        if ev.kind == "epoch":
            ray_pids.update(_descendants())

    import signal

    before = signal.getsignal(signal.SIGINT)
    res = run_study(study, callbacks=[record])
    assert signal.getsignal(signal.SIGINT) is before  # Tune's own Ctrl-C handler is not left behind
    assert res.status == "finished" and res.counts() == {"finished": 2} and res.skipped == 0
    if own:  # run_study started Ray, so it shut it down
        assert len(ray_pids) >= 3  # GCS, raylet, workers
        assert not ray.is_initialized() and not _gone(ray_pids)
    assert {r["params"]["optim.name"] for r in res.records} == {"sgd", "sam"}
    runs = list_runs(study.path / "runs")
    assert len(runs) == 2 and set(runs["status"]) == {"finished"}
    for r in res.records:
        run = load_run(r["run_path"])
        assert r["value"] == pytest.approx(run.epochs["val_acc"].iloc[-1])
        assert r["final"]["val_acc"] == pytest.approx(r["value"]) and r["epochs"] == 2
    assert len(read_trials(study.path)) == 2 and (study.path / "ray" / "tune").is_dir()
    kinds = [e.kind for e in events]
    assert kinds[0] == "study_started" and kinds[-1] == "study_ended"
    assert kinds.count("trial_started") == 2 and kinds.count("trial_ended") == 2 and kinds.count("epoch") == 4
    # resume: both trials are done, so Ray is not even started
    again = run_study(study)
    assert again.skipped == 2 and again.status == "finished" and len(list_runs(study.path / "runs")) == 2


def test_asha_prunes_a_bad_trial_and_a_failing_trial_is_recorded(tmp_path, ray_session):
    # grid trials start in order on 2 CPUs: first one whose data is missing (it fails at run time: a config
    # with a missing dataset is valid), then two good ones; the bad one (lr 1e-6: val_acc stays at chance)
    # starts when a good one has ended, so it reaches ASHA's rung at epoch 1 after a good one set the cutoff
    base = quickstart_config("sgd", epochs=3).with_overrides({"data.root": str(tmp_path / "none")})
    study = StudyConfig(name="ra", base=base, params={"optim.lr": [0.05, 0.1, 1e-6], "data.name": ["digits"]},
                        enqueue=[{"optim.lr": 0.05, "data.name": "mnist"}], seeds=[0], backend="ray",
                        pruner="asha", grace_epochs=1, root=str(tmp_path))
    res = run_study(study)
    assert res.status == "finished" and len(res.records) == 4
    failed = [r for r in res.records if r["params"]["data.name"] == "mnist"]
    assert failed[0]["status"] == "failed" and "FileNotFoundError" in failed[0]["error"]
    by = {r["params"]["optim.lr"]: r for r in res.records if r["params"]["data.name"] == "digits"}
    assert by[1e-6]["status"] == "pruned" and by[1e-6]["epochs"] < 3 and by[1e-6]["run_path"]
    assert by[1e-6]["value"] == pytest.approx(load_run(by[1e-6]["run_path"]).epochs["val_acc"].iloc[0])
    # the first trial at the rung always goes on; the other good one ties with it (or loses and is pruned)
    goods = [by[0.05]["status"], by[0.1]["status"]]
    assert "finished" in goods and set(goods) <= {"finished", "pruned"}
    assert ray_session.is_initialized()  # a Ray that run_study did not start is left running
    again = run_study(study)  # pruned trials count as done; the failed one is tried again
    assert again.skipped == 3 and {r["status"] for r in again.records if r["params"]["data.name"] == "mnist"} == {
        "failed"}


def test_optuna_search_with_median_stopping(tmp_path, ray_session):
    study = StudyConfig(name="ro", base=quickstart_config("sgd", epochs=3), root=str(tmp_path), search="optuna",
                        backend="ray", params={"optim.lr": [0.05, 1e-6]}, n_trials=3, pruner="median",
                        grace_epochs=1, enqueue=[{"optim.lr": 0.05}, {"optim.lr": 0.05}, {"optim.lr": 1e-6}],
                        seeds=[0])
    res = run_study(study)
    by = {r["params"]["optim.lr"]: r for r in res.records}
    assert by[1e-6]["status"] == "pruned" and by[1e-6]["epochs"] < 3
    assert by[0.05]["status"] == "finished" and by[0.05]["value"] == pytest.approx(
        load_run(by[0.05]["run_path"]).epochs["val_acc"].iloc[-1])
    import optuna

    from workbench.sweeps.runner import open_optuna_study

    _, ostudy = open_optuna_study(study)  # the same optuna.db as the local backend
    states = [t.state for t in ostudy.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == 1 and states.count(optuna.trial.TrialState.COMPLETE) == 2
    assert run_study(study).skipped == 3


def test_stop_event_stops_the_study(tmp_path, ray_session):
    study = StudyConfig(name="rs", base=quickstart_config("sgd", epochs=40), root=str(tmp_path), backend="ray",
                        params={"optim.lr": [0.05, 0.1, 0.02]}, seeds=[0])
    stop = threading.Event()

    def on_event(ev):  # a closure over an Event: Tune must not need to pickle it
        if ev.kind == "epoch":
            stop.set()

    res = run_study(study, callbacks=[on_event], stop=stop)
    assert res.status == "stopped" and 1 <= len(res.records) <= 2  # the third trial never started
    assert {r["status"] for r in res.records} == {"stopped"} and all(r["epochs"] < 40 for r in res.records)
    assert not (study.path / "STOP").exists()


def test_no_ray_processes_are_left(ray_session):
    pids = _descendants()
    assert pids  # the module's Ray session
    ray_session.shutdown()
    assert not ray_session.is_initialized() and not _gone(pids)
