"""Studies on the Ray Tune backend: run folders, resume, failures, ASHA / median pruning with Optuna, stop.

Ray's start-up takes ~7-10 s here and every ``Tuner.fit`` ~6 s more: the first test
lets ``run_study`` start and shut down its own Ray; the others share one Ray session
(a module fixture), which ``run_ray`` reuses and leaves running; the last checks that
no Ray process is left.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workbench.presets import quickstart_config
from workbench.runs import list_runs, load_run
from workbench.sweeps import StudyConfig, read_trials, run_study

REPO = Path(__file__).resolve().parents[1]
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


def _listening(pids: set[int]) -> list[tuple[str, str]]:
    """``(process name, local address)`` of the TCP sockets listening in ``pids`` (``ss -ltnpH``; [] without ss)."""
    if not shutil.which("ss"):
        return []
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=30).stdout
    found = []
    for line in out.splitlines():
        for name, pid in re.findall(r'\("([^"]*)",pid=(\d+),', line):
            if int(pid) in pids:
                found.append((name, line.split()[3]))
    return found


def _loopback(addr: str) -> bool:
    """``127.0.0.1:p``, ``[::ffff:127.0.0.1]:p``, ``[::1]:p``: yes; ``0.0.0.0:p``, ``*:p``, ``[::]:p``, others: no."""
    host = addr.rsplit(":", 1)[0].strip("[]")
    host = host.removeprefix("::ffff:")
    return host.startswith("127.") or host == "::1"


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
        from workbench.sweeps.ray_backend import init_local_ray

        init_local_ray(ray, num_cpus=2)  # like run_study's own: on 127.0.0.1 only
    yield ray
    if started:
        ray.shutdown()


def test_missing_ray_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    study = StudyConfig(name="noray", base=quickstart_config("sgd", epochs=1), backend="ray", root=str(tmp_path))
    with pytest.raises(ImportError, match=r"pip install 'ray\[tune\]'"):
        run_study(study)


def test_loopback_address_check():
    assert all(map(_loopback, ["127.0.0.1:1", "[::ffff:127.0.0.1]:2", "[::1]:3"]))
    assert not any(map(_loopback, ["0.0.0.0:1", "*:2", "[::]:3", "192.0.2.2:4", "[::ffff:10.0.0.1]:5"]))


@needs_ray
def test_a_local_ray_that_cannot_start_is_tried_twice_then_one_line_error(tmp_path, monkeypatch, capsys):
    import ray

    from workbench.cli import main
    from workbench.sweeps.ray_backend import LOCAL_RAY_ENV, RayStartError

    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    calls = []

    def fails(**kw):
        env = {k: os.environ.get(k) for k in [*LOCAL_RAY_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"]}
        calls.append(dict(kw, env=env))
        raise Exception("The current node timed out during startup. This could happen because some of the raylet "
                        "failed to startup or the GCS has become overloaded.")

    monkeypatch.setattr(ray, "init", fails)
    for k in [*LOCAL_RAY_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"]:
        monkeypatch.delenv(k, raising=False)
    study = tmp_path / "s.yaml"
    study.write_text(f"name: rf\nbase: {REPO / 'configs' / 'quickstart_sgd.yaml'}\nparams: {{optim.lr: [0.05]}}\n"
                     f"backend: ray\nroot: {tmp_path / 'sweeps'}\n")
    t0 = time.monotonic()
    assert main(["sweep", str(study), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(calls) == 2 and time.monotonic() - t0 < 30
    assert err.startswith("error: Ray could not start a local cluster (2 attempts; load average") and "\n" not in err
    assert "timed out during startup" in err and "backend: local" in err
    # each attempt: node address 127.0.0.1, no dashboard, Ray's start-up timeouts raised; all restored afterwards
    for c in calls:
        assert c["_node_ip_address"] == "127.0.0.1" and c["include_dashboard"] is False
        assert c["address"] == "local"  # never the cluster a `ray start` recorded in /tmp/ray, nor RAY_ADDRESS
        assert c["env"] == {**LOCAL_RAY_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    assert not {*LOCAL_RAY_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"} & set(os.environ)
    from ray._private import ray_constants

    assert ray_constants.ENABLE_RAY_CLUSTER is sys.platform.startswith("linux")
    with pytest.raises(RayStartError, match="Ray could not start"):
        run_study(StudyConfig.load(study))


@needs_ray
def test_grid_on_ray_gives_finished_runs_and_resumes(tmp_path):
    import ray

    own = not ray.is_initialized()  # True unless another test module left a Ray running
    study = StudyConfig(name="rg", base=quickstart_config("sgd", epochs=2), params={"optim.name": ["sgd", "sam"]},
                       seeds=[0], backend="ray", root=str(tmp_path))
    events, ray_pids, sockets = [], set(), []

    def record(ev):
        events.append(ev)
        if ev.kind == "epoch":
            ray_pids.update(_descendants())
            if not sockets:
                sockets.extend(_listening(ray_pids | {os.getpid()}))

    import signal

    before = signal.getsignal(signal.SIGINT)
    res = run_study(study, callbacks=[record])
    assert signal.getsignal(signal.SIGINT) is before  # Tune's own Ctrl-C handler is not left behind
    assert res.status == "finished" and res.counts() == {"finished": 2} and res.skipped == 0
    if own:  # run_study started Ray, so it shut it down
        assert len(ray_pids) >= 3  # GCS, raylet, workers
        # every Ray service (GCS, raylet, agents, workers, this driver's core worker) listens on loopback only
        if shutil.which("ss"):
            names = {name for name, _ in sockets}
            assert {"gcs_server", "raylet"} <= names, sockets
            assert all(_loopback(addr) for _, addr in sockets), sockets
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


def test_run_folders_come_back_through_tune_storage(tmp_path, ray_session):
    # ray_storage: trials train in their Tune working directory (node-local) and hand the run folder over as
    # their checkpoint; the driver copies it into the study (as on a cluster without a shared study folder;
    # the multi-node version is in test_sweeps_ray_cluster.py)
    from workbench.sweeps import trials_table

    base = quickstart_config("sgd", epochs=1).with_overrides({"model.name": "mlp", "data.max_train": 128})
    study = StudyConfig(name="rst", base=base, params={"optim.lr": [0.05, 0.1]}, seeds=[0], backend="ray",
                        ray_storage=str(tmp_path / "storage"), root=str(tmp_path / "driver"))
    res = run_study(study)
    assert res.status == "finished" and res.counts() == {"finished": 2}
    node = ray_session.get_runtime_context().get_node_id()
    for r in read_trials(study.path):
        assert r["node_id"] == node and r["node_ip"] == "127.0.0.1"
        assert "workbench-runs" in r["node_run_path"] and not Path(r["node_run_path"]).exists()  # handed over
        run = load_run(r["run_path"])
        assert run.path.parent == study.path / "runs" and run.config.root == str(study.path / "runs")
        assert run.config.train.device == "cpu"  # no GPU reserved (resources_per_trial gpu 0): never 'auto'
        assert run.checkpoints and r["value"] == pytest.approx(run.epochs["val_acc"].iloc[-1])
        assert list((tmp_path / "storage" / "rst").glob(f"trial_*/checkpoint_*/{run.path.name}/config.json"))
    assert trials_table(study.path, metrics=("test_acc",))["test_acc"].notna().all()


def test_resources_no_node_can_hold_are_refused_at_once(tmp_path, ray_session):
    from workbench.sweeps.ray_backend import RayClusterError

    study = StudyConfig(name="rgpu", base=quickstart_config("sgd", epochs=1), params={"optim.lr": [0.05]},
                        seeds=[0], backend="ray", resources_per_trial={"gpu": 1}, root=str(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(RayClusterError, match=r"resources_per_trial cpu: 1, gpu: 1 fits on no node of the local Ray"):
        run_study(study)
    assert time.monotonic() - t0 < 30 and not read_trials(study.path)


def test_a_study_joins_a_running_ray_by_its_loopback_address(tmp_path, ray_session):
    # the user's flow: a Ray is running (here this module's, on 127.0.0.1), `workbench sweep` joins it with
    # ray_address: 127.0.0.1:<port>; Ray used to swap in the machine's interface address and fail to connect
    address = ray_session.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:")
    import yaml

    base = quickstart_config("sgd", epochs=1).with_overrides({"model.name": "mlp", "data.max_train": 128})
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "join", "base": base.to_dict(), "params": {"optim.lr": [0.05]},
                                     "backend": "ray", "ray_address": address, "root": str(tmp_path / "sweeps")}))
    # a fresh shell: not told about Ray's token authentication (on for a local Ray); the driver asks the address
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    out = subprocess.run([sys.executable, "-m", "workbench", "sweep", str(study), "--no-progress"], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    recs = read_trials(tmp_path / "sweeps" / "join")
    assert [r["status"] for r in recs] == ["finished"]
    assert recs[0]["node_id"] == ray_session.get_runtime_context().get_node_id()  # ran on this module's Ray
    assert "Traceback" not in out.stderr


def test_no_ray_processes_are_left(ray_session):
    pids = _descendants()
    assert pids  # the module's Ray session
    ray_session.shutdown()
    assert not ray_session.is_initialized() and not _gone(pids)
