"""The run store and the studies survive corrupt files, failed resumes, concurrent trainers,
torn log lines and killed sweeps."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.presets import quickstart_config
from workbench.runs import (
    CheckpointError,
    CorruptRunError,
    Run,
    RunLockedError,
    list_runs,
    load_run,
    load_runs,
    run_folders,
)
from workbench.runs import logs as L
from workbench.training import Trainer

REPO = Path(__file__).resolve().parents[1]
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray[tune]")


def tiny(root, **ov):
    """A fast run: MLP on digits, one epoch (20 steps)."""
    return quickstart_config("sgd", epochs=1, root=str(root)).with_overrides({"model.name": "mlp", **ov})


def snapshot(folder: Path) -> dict:
    """Every file of a run folder (but its lock file) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return Trainer(tiny(tmp_path_factory.mktemp("runs"))).run().run_path


# ------------------------------------------------------------------ 1. corrupt runs
CORRUPTIONS = {
    "metrics-not-an-object": (lambda p: _append_bytes(p / "metrics.jsonl", b"[1, 2, 3]\n"),
                              "metrics.jsonl line .*: a JSON list, expected an object"),
    "metrics-not-utf8": (lambda p: _append_bytes(p / "metrics.jsonl", b'{"kind": "step", "x": "\xff\xfe"}\n'),
                         "metrics.jsonl line .*: not UTF-8"),
    "config-not-utf8": (lambda p: (p / "config.json").write_bytes(b'{"name": "\xff"}'), "config.json is not UTF-8"),
    "status-not-utf8": (lambda p: (p / "status.json").write_bytes(b'{"status": "\xc3("}'),
                        "status.json is not UTF-8"),
    "config-is-a-folder": (lambda p: ((p / "config.json").unlink(), (p / "config.json").mkdir()),
                           "config.json is a folder"),
    "metrics-is-a-folder": (lambda p: ((p / "metrics.jsonl").unlink(), (p / "metrics.jsonl").mkdir()),
                            "metrics.jsonl is a folder"),
    "status-is-a-list": (lambda p: (p / "status.json").write_text('["finished"]'),
                         "status.json holds a JSON list, expected an object"),
    "config-missing": (lambda p: (p / "config.json").unlink(), "config.json is missing"),
    "config-truncated": (lambda p: (p / "config.json").write_bytes((p / "config.json").read_bytes()[:40]),
                         "config.json is not valid JSON"),
    "config-garbage": (lambda p: (p / "config.json").write_text("hello, world"), "config.json is not valid JSON"),
    "config-foreign": (lambda p: (p / "config.json").write_text('{"learning_rate": 0.1}'),
                       "config.json is not a valid run config"),
}


def _append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_corrupt_runs_never_hide_the_healthy_ones(finished_run, tmp_path, capsys):
    root = tmp_path / "runs"
    root.mkdir()
    healthy = [shutil.copytree(finished_run, root / f"20240101-00000{i}-healthy-00000{i}") for i in range(2)]
    _append_bytes(healthy[1] / "metrics.jsonl", b'{"kind": "step", "st')  # a torn last line is not corruption
    (root / "figures").mkdir()  # not runs: a figures folder, a study folder, a file
    (root / "study").mkdir()
    (root / "study" / "status.json").write_text('{"status": "finished"}')
    (root / "plotly.min.js").write_text("")
    broken = {}
    for i, (name, (corrupt, reason)) in enumerate(CORRUPTIONS.items()):
        p = shutil.copytree(finished_run, root / f"20240102-0000{i:02d}-{name}-abcdef")
        corrupt(p)
        broken[p] = reason
    assert set(run_folders(root)) == set(healthy) | set(broken)

    df = list_runs(root)
    assert len(df) == len(healthy) + len(broken)
    ok = df[df["status"] != "corrupt"]
    assert sorted(ok["path"]) == sorted(map(str, healthy)) and set(ok["status"]) == {"finished"}
    assert ok["reason"].isna().all() and (ok["epochs_done"] == 1).all()
    bad = df[df["status"] == "corrupt"].set_index("path")
    assert set(bad.index) == set(map(str, broken))
    for p, reason in broken.items():
        assert re.search(reason, bad.loc[str(p), "reason"]), (p.name, bad.loc[str(p), "reason"])
        with pytest.raises(CorruptRunError, match=re.escape(str(p)) + "' is corrupt: " + reason):
            load_run(p)
    assert len(load_run(healthy[1]).epochs) == 1

    # workbench runs ROOT: every run, each corrupt one with its folder and reason
    assert main(["runs", str(root)]) == 0
    out = capsys.readouterr().out
    for p in healthy:
        assert p.name in out
    for p in broken:
        line = next(l for l in out.splitlines() if l.startswith(f"corrupt: {p}: "))
        assert re.search(broken[p], line)
    assert main(["runs", str(root), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sum(r["status"] == "corrupt" for r in rows) == len(broken)

    # what `workbench figures ROOT` uses: corrupt runs skipped with one warning line each
    lines = []
    loaded = load_runs(run_folders(root), warn=lines.append)
    assert sorted(r.path for r in loaded) == sorted(healthy)
    assert len(lines) == len(broken) and all(l.startswith("warning: skipping run folder ") for l in lines)
    assert all("\n" not in l for l in lines)


def test_load_run_of_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        load_run(tmp_path)


# ------------------------------------------------------------------ 2. failed resumes, the lock
def test_a_failed_resume_changes_nothing(finished_run, tmp_path, monkeypatch):
    run = shutil.copytree(finished_run, tmp_path / finished_run.name)
    before = snapshot(run)
    with pytest.raises(ValueError, match="train.epochs"):
        Trainer.from_run(run)  # finished, no more epochs
    with pytest.raises(ValueError, match="train.epochs"):
        Trainer.from_run(run, epochs=1)  # used to rewrite config.json first
    import workbench.training.trainer as tr

    def broken_model(*a, **k):
        raise RuntimeError("simulated set-up failure")

    monkeypatch.setattr(tr, "build_model", broken_model)
    with pytest.raises(RuntimeError, match="simulated set-up failure"):
        Trainer.from_run(run, epochs=3).run()  # used to mark the finished run "failed"
    monkeypatch.undo()
    assert snapshot(run) == before
    assert Run(run).status()["status"] == "finished"

    # a corrupt checkpoint
    ck = run / "checkpoints" / "last.pt"
    ck.write_bytes(ck.read_bytes()[:1000])
    before = snapshot(run)
    with pytest.raises(CheckpointError):
        Trainer.from_run(run, epochs=3).run()
    assert snapshot(run) == before

    # a run that diverged in its first epoch (no checkpoint)
    div = Trainer(tiny(tmp_path / "div", **{"optim.lr": 1e8, "optim.momentum": 0.0, "train.epochs": 3})).run()
    assert div.status == "diverged" and div.epochs_done == 0
    before = snapshot(div.run_path)
    with pytest.raises(CheckpointError):
        Trainer.from_run(div.run_path, epochs=5).run()
    assert snapshot(div.run_path) == before and Run(div.run_path).status()["status"] == "diverged"

    # the CLI: one error line, nothing written
    assert main(["resume", str(div.run_path), "--no-progress"]) == 2
    assert snapshot(div.run_path) == before


_TRAIN_FOREVER = textwrap.dedent("""
    import sys
    from workbench.presets import quickstart_config
    from workbench.training import Trainer

    cfg = quickstart_config("sgd", epochs=100000, root=sys.argv[1]).with_overrides({"model.name": "mlp"})
    Trainer(cfg).run()
""")


def _wait_for(cond, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_two_processes_cannot_train_one_run_folder(tmp_path, capsys):
    root = tmp_path / "runs"
    child = subprocess.Popen([sys.executable, "-c", _TRAIN_FOREVER, str(root)], cwd=REPO)
    try:
        path = _wait_for(lambda: next(iter(run_folders(root)), None), 180, "the run folder")
        _wait_for(lambda: (path / "checkpoints" / "last.pt").is_file(), 180, "the first checkpoint")
        with pytest.raises(RunLockedError, match=rf"is being trained by process {child.pid} \(lock \.lock\)") as e:
            Trainer.from_run(path, epochs=10**6).run()
        assert e.value.pid == child.pid and "\n" not in str(e.value)
        assert main(["resume", str(path), "--epochs", "1000000", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"process {child.pid}" in err and err.startswith("error: ")
        assert child.poll() is None  # undisturbed
        assert Run(path).status()["status"] == "running"
    finally:
        child.kill()
        child.wait(30)
    # killed: the OS released the lock; the run resumes here
    assert list_runs(root).iloc[0]["status"] == "interrupted"
    done = load_run(path).epochs["epoch"].max()
    res = Trainer.from_run(path, epochs=int(done) + 1).run()
    assert res.status == "finished" and Run(path).status()["status"] == "finished"
    assert (path / ".lock").read_text() == ""  # released: no stale PID left behind


def test_two_trainers_in_one_process_exclude_each_other(finished_run, tmp_path):
    run = shutil.copytree(finished_run, tmp_path / finished_run.name)
    held = Run(run).lock()
    try:
        with pytest.raises(RunLockedError, match=f"process {os.getpid()}"):
            Trainer.from_run(run, epochs=2).run()
    finally:
        held.release()
    assert Trainer.from_run(run, epochs=2).run().status == "finished"


# ------------------------------------------------------------------ 3. append-only logs
def _writers(tmp_path):
    """Every append-only log of the workbench: (name, file, append(record), read() -> records)."""
    from workbench.engine import Journal
    from workbench.sweeps import runner
    from workbench.sweeps.trials import trials_journal
    from workbench.targeted import study as ts

    run = Run.create(tmp_path / "runs", tiny(tmp_path / "runs"))
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    targeted = tmp_path / "targeted"
    targeted.mkdir()
    return [
        ("metrics.jsonl", run.path / "metrics.jsonl", lambda r: (run.append(r), run.close()),
         lambda: run.read_metrics()),
        ("sweep trials.jsonl", sweep / "trials.jsonl", lambda r: trials_journal(sweep).append(r),
         lambda: runner.read_trials(sweep)),
        ("comparison.jsonl", tmp_path / "comparison.jsonl",
         lambda r: Journal(tmp_path / "comparison.jsonl", "kind").append(r),
         lambda: Journal(tmp_path / "comparison.jsonl", "kind").records()),
        ("search.jsonl", tmp_path / "search.jsonl", lambda r: Journal(tmp_path / "search.jsonl", "kind").append(r),
         lambda: Journal(tmp_path / "search.jsonl", "kind").records()),
        ("targeted trials.jsonl", targeted / "trials.jsonl", lambda r: ts.trials_journal(targeted).append(r),
         lambda: ts.read_trials(targeted).to_dict("records")),
    ]


def test_every_log_repairs_a_torn_last_line_with_one_function(tmp_path, monkeypatch):
    calls = []
    real = L.open_for_append
    monkeypatch.setattr(L, "open_for_append", lambda p: (calls.append(Path(p)), real(p))[1])
    for name, path, append, read in _writers(tmp_path):
        rec = {"trial_id": "a", "trial": 0, "defense": "none", "kind": "x", "value": 1.0}
        append(rec)
        _append_bytes(path, b'{"trial_id": "b", "trial": 1, "defense": "none", "va')  # killed mid-record
        assert len(read()) == 1, name  # a torn last line is tolerated when reading
        rec2 = dict(rec, trial_id="c", trial=2, value=2.0)
        append(rec2)
        lines = path.read_bytes().split(b"\n")
        assert lines[-1] == b"" and json.loads(lines[-2]) == rec2, name  # not glued onto the fragment
        got = read()
        assert len(got) == 2 and got[-1]["value"] == 2.0, name
        assert path in calls, f"{name} is not written through workbench.runs.logs.open_for_append"


def test_targeted_read_trials_tolerates_a_torn_last_line(tmp_path):
    from workbench.targeted.study import read_trials

    (tmp_path / "trials.jsonl").write_text('{"trial": 0, "defense": "none", "success": true}\n{"trial": 1, "def')
    df = read_trials(tmp_path)
    assert len(df) == 1 and bool(df["success"].iloc[0])


def test_read_jsonl_strict_and_lenient(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(b'{"a": 1}\n\n{"a": 2\n[1]\n{"a": 3}\n\xff\n{"a": NaN}\n{"torn')
    with pytest.raises(L.LogError, match=r"log.jsonl line 4: a JSON list"):
        L.read_jsonl(p, strict=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = L.read_jsonl(p)
    msgs = [str(x.message) for x in w]
    assert len(msgs) == 2 and "line 4 skipped: a JSON list" in msgs[0] and "line 6 skipped: not UTF-8" in msgs[1]
    assert [r["a"] for r in got[:2]] == [1, 3] and len(got) == 3
    assert L.read_jsonl(tmp_path / "missing.jsonl") == []


# ------------------------------------------------------------------ 4. killed sweeps
_SWEEP = textwrap.dedent("""
    import sys
    from workbench.presets import quickstart_config
    from workbench.sweeps import StudyConfig, run_study

    base = quickstart_config("sgd", epochs=100000).with_overrides({"model.name": "mlp"})
    study = StudyConfig(name="killed", base=base, root=sys.argv[1], params={"optim.lr": [0.05, 0.1]}, seeds=[0],
                        workers=2)
    run_study(study)
""")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_sweep_leaves_no_worker_processes(tmp_path, sig):
    import psutil

    parent = subprocess.Popen([sys.executable, "-c", _SWEEP, str(tmp_path)], cwd=REPO)
    workers: list = []
    try:
        deadline = time.time() + 180
        runs = tmp_path / "killed" / "runs"
        while time.time() < deadline:  # both workers are training (their run folders have metrics)
            if runs.is_dir() and sum((p / "metrics.jsonl").is_file() and (p / "metrics.jsonl").stat().st_size > 0
                                     for p in runs.iterdir()) >= 2:
                break
            time.sleep(0.3)
        else:
            pytest.fail("the sweep's workers did not start training")
        workers = psutil.Process(parent.pid).children(recursive=True)
        assert len(workers) >= 2
    finally:
        os.kill(parent.pid, sig)
    parent.wait(30)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [(p.pid, p.status()) for p in alive]


# ------------------------------------------------------------------ 4b. Ray records each trial as it ends
@needs_ray
def test_ray_records_each_trial_as_it_finishes_and_resume_skips_it(tmp_path):
    from workbench.sweeps import StudyConfig, read_trials, run_study

    study = StudyConfig(name="rayrec", base=tiny(tmp_path).with_overrides({"train.epochs": 1}), root=str(tmp_path),
                        params={"optim.lr": [0.05, 0.1, 0.2]}, seeds=[0], backend="ray")
    import inspect
    import threading

    seen = []
    stop = threading.Event()

    def on_event(ev):
        if ev.kind == "trial_ended" and ev.trial.get("status") == "finished" and not seen:
            # recorded while Tune is still running (inside Tuner.fit): a driver killed now keeps it
            in_fit = any(f.function == "fit" and f.filename.endswith(os.path.join("tune", "tuner.py"))
                         for f in inspect.stack())
            seen.append(in_fit and ev.trial["trial_id"] in {r["trial_id"] for r in read_trials(study.path)})
            stop.set()  # stop after the first finished trial: the others are stopped or never start

    run_study(study, callbacks=[on_event], stop=stop)
    assert seen and seen[0] is True
    done = {r["trial_id"]: r["run_path"] for r in read_trials(study.path) if r["status"] == "finished"}
    assert done
    again = run_study(study)
    assert again.status == "finished" and again.skipped == len(done)
    recs = {r["trial_id"]: r for r in read_trials(study.path)}
    assert len(recs) == 3 and {r["status"] for r in recs.values()} == {"finished"}
    assert all(recs[t]["run_path"] == p for t, p in done.items())  # finished trials were not run again
    runs = list_runs(study.path / "runs")
    # one finished folder per trial, plus at most one per trial that was not recorded finished before the stop:
    # a 1-epoch trial can finish its folder while its final report to the stopped Tune is lost (then it is
    # recorded ``stopped`` and trained again on resume); trials recorded finished are never trained again
    extra = 3 - len(done)
    assert 3 <= (runs["status"] == "finished").sum() <= 3 + extra
