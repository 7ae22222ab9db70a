"""The Ray Tune backend of :func:`workbench.sweeps.run_study` (``backend: ray``).

Over 700 lines, kept whole: Tune's trial function, driver callbacks and per-trial recording share one study's
state; joining an existing cluster lives in :mod:`workbench.sweeps.ray_cluster`.

Every Ray trial trains through the workbench's own code (:func:`workbench.engine.execute_trial`,
i.e. :class:`workbench.training.Trainer` on ``study.config_for(params, seed)``)
with one torch thread and writes an ordinary run folder under
``<study>/runs/``. After every epoch it calls ``tune.report({metric: value,
"epoch": e, ...})``, so Ray's schedulers can stop it early:

* ``pruner: asha``   -> ``ASHAScheduler(time_attr="epoch", grace_period=grace_epochs or 1, max_t=epochs)``
* ``pruner: median`` -> ``MedianStoppingRule(time_attr="epoch", grace_period=grace_epochs)``

The report of the last epoch is held back until the trainer has finished
(checkpoint and ``status.json`` written); that final report carries the trial's
records, so a trial Ray would stop at ``max_t`` still ends cleanly. A trial the
scheduler stops earlier is recorded as ``pruned`` from its last report (its run
folder may be left ``stopped`` or ``running``: the trial record is what counts).

* ``search: grid`` / ``random``: one Ray trial per not-yet-done
  :class:`~workbench.sweeps.study.Trial` (a ``tune.grid_search`` over their indices).
* ``search: optuna``: ``OptunaSearch`` (TPE seeded with ``sampler_seed``, the
  space asked define-by-run from the :class:`ParamSpec` objects, stored in
  ``<study>/optuna.db`` like the local backend so a stopped search resumes);
  ``num_samples`` = the configurations still missing of ``n_trials``. A Ray
  trial runs the study's seeds one after the other; its objective is their mean
  and the first seed's epochs are reported for pruning.

Ray's own files go to ``<study>/ray/tune/``. Ray is started locally by :func:`init_local_ray`
(``num_cpus=os.cpu_count()``, no dashboard, worker output not forwarded, every service listening on
127.0.0.1 only, generous start-up timeouts and one retry, else :class:`RayStartError`) unless
``study.ray_address`` names a cluster or Ray is already initialized; it is shut
down at the end only if this module started it. Joining a cluster (``ray_address``, ``ray_node_ip``), where
run folders are written (``ray_storage``), GPUs per trial (``resources_per_trial``) and retries of trials whose
node died (``max_failures``): :mod:`workbench.sweeps.ray_cluster`. Each trial reserves
``resources_per_trial`` (one CPU by default); actors are reused between trials (``reuse_actors``:
a fresh actor costs seconds, the trials of a CPU sweep often less).

Each trial's records are appended to ``trials.jsonl`` (and emitted as
``trial_ended`` events) as soon as the trial ends, by a Tune callback on the
driver (``on_trial_complete`` / ``on_trial_error``, on the calling thread): a
study killed or interrupted mid-``fit`` keeps every trial that ended, and a
resume skips the finished ones. A trial that Tune ends without telling its
callbacks is recorded when ``Tuner.fit()`` returns (never twice).
``trial_started`` and ``epoch`` events are emitted live (on the calling thread). ``stop`` (or the STOP file of
:func:`~workbench.sweeps.stop_study`) stops launching trials and stops running
ones (recorded ``stopped``, tried again on resume); Ctrl-C in the main thread too.

No UI imports.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..engine import execute_trial, objective_value
from .ray_cluster import RayClusterError, check_resources, fetch_runs, join_cluster
from .study import StudyConfig, Trial, trial_id
from .trials import (
    DONE_STATUSES,
    SweepEvent,
    read_trials,
    resume_optuna,
    stop_study,
    study_stop,
    trial_meta,
    trials_journal,
)

__all__ = ["run_ray", "init_local_ray", "RayStartError", "RayClusterError", "LOCAL_RAY_ENV", "RAY_START_ATTEMPTS"]

# keys Ray fills into every result; never forwarded as metrics
_RAY_KEYS = {"done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s", "time_total_s",
             "pid", "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore",
             "checkpoint_dir_name", "should_checkpoint", "experiment_tag", "__duplicate__"}


def _import_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no experiment tables on stdout
    try:
        import ray
        from ray import tune
    except ImportError as e:
        raise ImportError("backend: ray needs Ray Tune: pip install 'ray[tune]'") from e
    return ray, tune


# ------------------------------------------------------------ a local Ray, on 127.0.0.1
class RayStartError(OSError):
    """A local Ray could not be started; the message is one line (the CLI prints it as ``error: ...``)."""


#: Attempts at starting a local Ray (the second after stopping what the first left behind).
RAY_START_ATTEMPTS = 2
#: Seconds a local Ray's node may take to register (Ray's own wait, hard-coded in ``ray._private.node``, is 30 s).
RAY_NODE_WAIT_S = 150
#: Ray's start-up timeouts during a local ``ray.init`` (a value already in the environment wins). Ray's defaults
#: are too short on a loaded 2-core machine, where its Python agents take tens of seconds to import.
LOCAL_RAY_ENV = {
    "RAY_agent_register_timeout_ms": "150000",    # raylet: wait for the dashboard/metrics and runtime-env agents
    "RAY_raylet_start_wait_time_s": "150",        # raylet: wait for its registration with the GCS
    "RAY_gcs_server_port_wait_time_s": "150",     # driver: wait for the GCS port file, and GCS connect retries
    "RAY_worker_register_timeout_seconds": "150",  # raylet: a worker process may take this long to register
}


def _is_ray_process(p) -> bool:
    try:
        cmd = " ".join(p.cmdline())
    except Exception:
        return False
    return "/ray/" in cmd or cmd.startswith("ray::") or p.name() in ("gcs_server", "raylet")


def _own_ray_processes(before: set[int]) -> list:
    """Ray processes descending from this one that were not there in ``before`` (pids): what a failed start left."""
    try:
        import psutil

        return [c for c in psutil.Process().children(recursive=True) if c.pid not in before and _is_ray_process(c)]
    except Exception:  # pragma: no cover - psutil missing
        return []


def _descendant_pids() -> set[int]:
    try:
        import psutil

        return {c.pid for c in psutil.Process().children(recursive=True)}
    except Exception:  # pragma: no cover
        return set()


def _kill(procs: list) -> None:
    for c in procs:
        try:
            c.kill()
        except Exception:
            pass
    for c in procs:
        try:
            c.wait(timeout=5)
        except Exception:
            pass


class _LoopbackStart:
    """During a local ``ray.init``: Ray's node address is 127.0.0.1 and its start-up timeouts are generous.

    Ray 2.x on Linux resolves a node address of ``127.0.0.1`` to the machine's interface address (its
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` switch, on by default outside Windows and macOS) and its gRPC servers then
    listen on every interface. With the switch off, the node address stays 127.0.0.1 and the GCS, raylet, agents
    and workers listen on 127.0.0.1 only. The switch is read from the environment when Ray is imported
    (``ray._private.ray_constants.ENABLE_RAY_CLUSTER``) and by the processes Ray starts: both are set for the
    duration of ``ray.init`` (the processes keep the environment they were started with) and restored afterwards.

    Start-up on a loaded machine (Ray 2.60's waits, read in its source): the timeouts of :data:`LOCAL_RAY_ENV` are
    set (the raylet's processes read them from the environment), and Ray's own 30 s wait for the node to register
    (hard-coded in ``ray._private.node``) is stretched to ``node_wait_s`` while the raylet runs, by making its
    polls (``ray._private.services.get_node``) wait on. All restored on exit. One wait has no setting: the raylet
    gives its dashboard agent 15 s to report its ports (``WaitForPersistedPort``) and aborts otherwise; on a
    heavily loaded machine the agent's imports can take longer, which :func:`init_local_ray`'s retry covers.
    """

    def __init__(self, node_wait_s: float = RAY_NODE_WAIT_S):
        self.node_wait_s = node_wait_s

    def __enter__(self):
        self.env = {k: os.environ.get(k) for k in [*LOCAL_RAY_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"]}
        for k, v in LOCAL_RAY_ENV.items():
            os.environ.setdefault(k, v)
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        self.constants = self.services = None
        try:
            from ray._private import ray_constants

            self.constants, self.saved = ray_constants, ray_constants.ENABLE_RAY_CLUSTER
            ray_constants.ENABLE_RAY_CLUSTER = False
        except (ImportError, AttributeError):  # pragma: no cover - another Ray version: the environment still applies
            self.constants = None
        try:
            # Ray waits 30 s (hard-coded) for the node to register, polling services.get_node: make each poll
            # that fails wait on for up to node_wait_s in all
            from ray._private import services

            self.services, self.get_node = services, services.get_node
            deadline = time.monotonic() + self.node_wait_s
            get_node = self.get_node

            def patient_get_node(*args, **kwargs):
                while True:
                    try:
                        return get_node(*args, **kwargs)
                    except RuntimeError:
                        if time.monotonic() > deadline or not _raylet_running():  # a dead raylet never registers
                            raise
                        time.sleep(0.5)

            services.get_node = patient_get_node
        except (ImportError, AttributeError):  # pragma: no cover - another Ray version
            self.services = None
        return self

    def __exit__(self, *exc):
        for k, v in self.env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if self.constants is not None:
            self.constants.ENABLE_RAY_CLUSTER = self.saved
        if self.services is not None:
            self.services.get_node = self.get_node
        return False


def _raylet_running() -> bool:
    """Whether a raylet started by this process is running (not a zombie); True when that cannot be told."""
    try:
        import psutil

        for c in psutil.Process().children(recursive=True):
            try:
                if c.name() == "raylet" and c.status() != psutil.STATUS_ZOMBIE:
                    return True
            except psutil.Error:
                continue
        return False
    except Exception:  # pragma: no cover - psutil missing
        return True


def init_local_ray(ray=None, *, num_cpus: int | None = None, attempts: int = RAY_START_ATTEMPTS, **kwargs) -> None:
    """Start a local Ray whose services listen on 127.0.0.1 only (see :class:`_LoopbackStart`).

    Always a new Ray (``address="local"``: a cluster another ``ray start`` recorded on this machine, or
    ``RAY_ADDRESS``, is not joined; a study joins one with ``ray_address``).
    No dashboard (``include_dashboard=False``; its host would be 127.0.0.1 too), worker output not forwarded, Ray's
    start-up timeouts raised (:data:`LOCAL_RAY_ENV`). A start that fails (on a loaded machine: "The current node
    timed out during startup") is tried once more after the processes it left are stopped.

    Raises:
        RayStartError: Ray did not start in ``attempts`` tries (one line: what Ray said, and the load average).
    """
    if ray is None:
        ray, _ = _import_ray()
    # address "local": always a new Ray of this process's own, never the cluster a `ray start` or a test's
    # ray.cluster_utils.Cluster recorded in /tmp/ray/ray_current_cluster (or RAY_ADDRESS): use ray_address for that
    opts = dict(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                dashboard_host="127.0.0.1",
                _node_ip_address="127.0.0.1", log_to_driver=False, ignore_reinit_error=True,
                logging_level=logging.WARNING)
    opts.update(kwargs)
    last: BaseException | None = None
    for attempt in range(max(1, int(attempts))):
        before = _descendant_pids()
        try:
            with _LoopbackStart():
                ray.init(**opts)
            return
        except Exception as e:  # Ray raises plain Exception / RuntimeError / ConnectionError here
            last = e
            try:
                ray.shutdown()
            except Exception:
                pass
            _kill(_own_ray_processes(before))  # a GCS or raylet the failed start left running
            if attempt + 1 < attempts:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                logging.getLogger(__name__).warning("Ray did not start (%s); trying once more", first)
    try:
        load = "load average %.1f on %d CPUs" % (os.getloadavg()[0], os.cpu_count() or 1)
    except OSError:  # pragma: no cover
        load = f"{os.cpu_count() or 1} CPUs"
    said = " ".join(str(last).split()) or type(last).__name__
    raise RayStartError(f"Ray could not start a local cluster ({attempts} attempts; {load}): {said[:300]} "
                        f"-- try again when the machine is less busy, or use backend: local")


# ------------------------------------------------------------ in the Ray worker
def _absolute_paths(cfg: dict, cwd: str) -> dict:
    """Ray workers run in other folders: make a relative ``data.root`` absolute (``root`` already is)."""
    data = cfg.get("data") or {}
    if data.get("root") and not Path(str(data["root"])).expanduser().is_absolute():
        cfg = dict(cfg, data=dict(data, root=str(Path(cwd) / data["root"])))
    return cfg


def _numeric(d: dict) -> dict:
    return {k: v for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _RAY_KEYS}


def _trainable(config: dict, job: dict) -> None:
    """One Ray trial: the seeds of one configuration (one seed for grid/random), trained one after the other."""
    from ray import tune

    study = StudyConfig.from_dict(job["study"])
    metric, path = study.metric, study.path
    try:
        ray_id = tune.get_context().get_trial_id()
    except Exception:  # pragma: no cover - outside a Tune session
        ray_id = None
    if job["search"] == "optuna":
        params = {n: config[n] for n in study.params}
        units = [(trial_id(params, s), params, s, -1) for s in study.seeds]
    else:
        spec = job["specs"][config["wb_index"]]
        units = [(spec["trial_id"], spec["params"], spec["seed"], spec["config_index"])]
    from .ray_cluster import drop_local, hand_over, local_runs_folder, trial_node

    records: list[dict] = []
    killed = {"flag": False}
    node = trial_node()  # recorded per trial: where it ran
    local = local_runs_folder(f"trial_{ray_id}") if job.get("storage") else None  # node-local, see ray_cluster
    threads = max(1, int(job.get("threads") or 1))
    for k, (tid, params, seed, index) in enumerate(units):
        if (path / "STOP").exists():
            break
        meta = dict(trial_meta(study, Trial(tid, dict(params), seed, None, index)), ray_trial=ray_id, **node)
        if local is None and not (path / "study.yaml").is_file():  # the study folder is not on this node
            records.append(dict(meta, status="failed", run_path=None, value=None, final={}, seconds=0.0, epochs=0,
                                error=f"the study folder {path} is not on node {node['node_ip']}: put it on a "
                                      f"filesystem every node mounts at the same path, or set ray_storage"))
            break
        try:
            cfg = study.config_for(params, seed).to_dict()
        except ValueError as e:  # an Optuna suggestion that makes an invalid config
            records.append(dict(meta, status="failed", run_path=None, value=None, final={}, error=str(e),
                                seconds=0.0, epochs=0))
            break
        cfg = _absolute_paths(cfg, job["cwd"])
        if local is not None:
            cfg["root"] = str(local)
        if not job.get("gpu") and cfg["train"].get("device") == "auto":
            cfg["train"]["device"] = "cpu"  # no GPU reserved: never crowd onto a GPU other trials own
        epochs = int(cfg["train"]["epochs"])
        seen: dict[str, Any] = {"history": [], "run_path": None}

        def on_epoch(ev, cfg=cfg, seen=seen):
            seen["history"].append(dict(ev.metrics))
            seen["run_path"] = str(Path(cfg["root"]) / ev.run_id)

        def prune(epoch: int, value: float, first=(k == 0), seen=seen, tid=tid, seed=seed, epochs=epochs) -> bool:
            # the last epoch is reported after the trainer has finished (see the module docstring)
            if not first or epoch >= epochs or killed["flag"]:
                return False
            hist = seen["history"]
            report = {**_numeric(hist[-1]), "epoch": int(epoch), metric: float(value),
                      "wb_trial_id": tid, "wb_seed": seed, "wb_run_path": seen["run_path"],
                      "wb_node_id": node["node_id"], "wb_node_ip": node["node_ip"],
                      "wb_value": objective_value(hist, metric, study.objective, study.mode)}
            try:
                tune.report(report)
            except SystemExit:  # Tune stopped this trial (scheduler, or the study's stop)
                killed["flag"] = True
                return True
            return False

        rec = execute_trial(cfg, meta, str(path), threads, on_epoch=on_epoch, prune=prune)
        if killed["flag"]:
            # Tune no longer listens (the driver records the trial from its last report); SystemExit(0)
            # ends this thread quietly, so Tune can reuse the actor for the next trial
            raise SystemExit(0)
        records.append(rec)
        if rec["status"] != "finished" or rec["value"] is None:
            break
    ok = bool(records) and len(records) == len(units) and all(
        r["status"] == "finished" and r["value"] is not None for r in records)
    first = records[0] if records else {}
    report = {**_numeric(first.get("final") or {}), "epoch": int(first.get("epochs") or 0),
              metric: (sum(r["value"] for r in records) / len(records)) if ok else float("nan"),
              "wb_records": json.dumps(records, default=str)}
    if local is None or not local.is_dir():
        tune.report(report)  # may raise SystemExit(0) (stopped right at its last report, which was delivered)
        return
    try:  # the run folders go to Tune's storage as this trial's checkpoint; the driver copies them into the study
        tune.report(report, checkpoint=hand_over(local))
    finally:
        drop_local(local)


# -------------------------------------------------------------- in the driver
def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


@functools.lru_cache(maxsize=None)
def _driver_classes():
    """Tune's Stopper and Callback for a study (built once, after Ray is imported).

    Tune pickles its run config (``tuner.pkl``): these classes keep their state in
    instance attributes, and ``__getstate__`` drops what cannot be pickled (the stop
    event, the event callbacks).
    """
    from ray import tune

    class StudyStopper(tune.Stopper):
        """Stops launching (and stops running trials) when ``stop`` is set or the STOP file exists."""

        def __init__(self, path: Path, event: threading.Event | None):
            self.path, self.event = path, event

        def __call__(self, trial_id, result) -> bool:
            return False

        def stop_all(self) -> bool:
            if self.event is not None and self.event.is_set():
                if not (self.path / "STOP").exists():
                    stop_study(self.path)  # running trainers watch the STOP file
                return True
            return (self.path / "STOP").exists()

        def __getstate__(self):
            return {"path": self.path, "event": None}

    class StudyEvents(tune.Callback):
        """Tune callback: live ``trial_started`` / ``epoch`` events and the record of each trial as it ends.

        It notes pruned trials; ``on_done(trial, error)`` records each trial as it ends (``trials.jsonl`` and
        ``trial_ended``, see the module docstring).
        """

        def __init__(self, describe: Callable[[dict], list[dict]], emit, total: int | None, done0: int):
            self.describe, self.emit, self.total, self.done0 = describe, emit, total, done0
            self.ended = 0
            self.pruned: set[str] = set()  # Ray trial ids stopped by the scheduler
            self.on_done: Callable | None = None

        def _send(self, kind: str, trial, **extra) -> None:
            if self.emit is None:
                return
            for m in self.describe(trial.config)[:1]:
                self.emit(SweepEvent(kind, dict(m, status="running", **extra), self.total, self.done0 + self.ended))

        def on_trial_start(self, iteration, trials, trial, **info):
            self._send("trial_started", trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("done") and "wb_records" not in result:
                # the scheduler decided to stop the trial at this epoch report (Tune sets done=True)
                self.pruned.add(trial.trial_id)
            if result.get("epoch"):  # not a trial that failed before its first epoch
                self._send("epoch", trial, epoch=result.get("epoch"),
                           last=_numeric({k: v for k, v in result.items() if not k.startswith("wb_")}))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.ended += 1
            self._done(trial, False)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.ended += 1
            self._done(trial, True)

        def _done(self, trial, error: bool) -> None:
            if self.on_done is None:
                return
            try:
                self.on_done(trial, error)
            except Exception as e:  # the trial is then recorded when fit returns
                logging.getLogger(__name__).warning("recording Ray trial %s failed: %s", trial.trial_id, e)

        def __getstate__(self):
            return {"describe": None, "emit": None, "total": self.total, "done0": self.done0, "ended": self.ended,
                    "pruned": set(self.pruned), "on_done": None}

    return StudyStopper, StudyEvents


class _DefineByRun:
    """The Optuna search space, asked define-by-run: the same names and distributions as the local backend.

    (A module-level class: Ray checkpoints the searcher with plain ``pickle``.)
    """

    def __init__(self, specs: list):
        self.specs = specs

    def __call__(self, otrial) -> None:
        for p in self.specs:
            p.suggest(otrial)


def _optuna_search_class(optuna):
    from ray.tune.search.optuna import OptunaSearch

    class _OptunaSearch(OptunaSearch):
        """Tells Optuna ``PRUNED`` for trials the scheduler stopped, ``FAIL`` for failed or stopped ones.

        (Ray's own class tells a stopped trial ``COMPLETE`` with its last intermediate value.)
        ``wb_pruned`` is the set of Ray trial ids the scheduler stopped, filled by the event callback.
        """

        wb_pruned: set = set()

        def on_trial_result(self, trial_id, result):
            if "wb_records" not in result:  # the final report carries the objective, not an epoch's value
                super().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id, result=None, error=False):
            try:
                ot_trial = self._ot_trials.get(trial_id)
                if ot_trial is not None and trial_id not in self._completed_trials:
                    value = (result or {}).get(self.metric)
                    state = None
                    if error or not result:
                        state = optuna.trial.TrialState.FAIL
                    elif "wb_records" not in result:  # stopped by Tune before its final report
                        pruned = trial_id in self.wb_pruned
                        state = optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.FAIL
                    elif not isinstance(value, (int, float)) or not math.isfinite(value):
                        state = optuna.trial.TrialState.FAIL  # a seed failed, diverged or was stopped
                    if state is not None:
                        self._ot_study.tell(ot_trial, state=state)
                        self._completed_trials.add(trial_id)
                        return
            except Exception:  # private attributes changed: fall back to Ray's behaviour
                pass
            super().on_trial_complete(trial_id, result=result, error=error)

    return _OptunaSearch


def _scheduler(study: StudyConfig, epochs: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    if study.pruner == "asha":
        grace = min(max(1, study.grace_epochs), max(1, epochs))
        return ASHAScheduler(time_attr="epoch", grace_period=grace, max_t=max(1, epochs))
    if study.pruner == "median":
        # min_time_slice=inf: never pause a trial to let others catch up (a function trainable would
        # restart from scratch), as Optuna's MedianPruner with n_startup_trials=1
        return MedianStoppingRule(time_attr="epoch", grace_period=study.grace_epochs, min_samples_required=1,
                                  min_time_slice=float("inf"))
    return FIFOScheduler()


def _record_from_result(result, describe, pruned: set) -> list[dict]:
    """The trial records of one Ray trial (none for a trial that never started), from its ``Result``."""
    return _records_from(result.metrics, result.config, result.error, describe, pruned)


def _trial_error(trial):
    """The exception (or its text) a failed Ray trial left, as ``Result.error`` would hold it; None if unknown."""
    for get in ("get_pickled_error", "get_error"):
        try:
            err = getattr(trial, get)()
        except Exception:
            err = None
        if err is not None:
            return err
    return RuntimeError(getattr(trial, "error_msg", None) or "the Ray trial failed")


def _records_from(metrics, config, err, describe, pruned: set) -> list[dict]:
    """The trial records of one Ray trial from its last reported ``metrics``, ``config`` and error.

    A trial without its final report died (``failed``) or was stopped by Tune: ``pruned``
    when its scheduler decided so, else ``stopped`` (the study's stop, or Ctrl-C).
    """
    m = dict(metrics or {})
    units = describe(config or {})
    if "wb_records" in m:
        try:
            return json.loads(m["wb_records"])
        except (TypeError, ValueError):
            pass
    error = None
    if err is not None:  # the trainable itself died (``execute_trial`` never raises)
        error = f"{type(err).__name__}: {err}".strip()[:2000]
    if "epoch" in m and "wb_trial_id" in m:  # ended without its final report, after an epoch report
        base = next((u for u in units if u["trial_id"] == m["wb_trial_id"]), units[0] if units else {})
        status = "failed" if error else "pruned" if m.get("trial_id") in pruned else "stopped"
        return [dict(base, status=status, run_path=m.get("wb_run_path"),
                     value=m.get("wb_value"), final=_numeric({k: v for k, v in m.items() if not k.startswith("wb_")}),
                     error=error, seconds=m.get("time_total_s"), epochs=int(m["epoch"]),
                     node_id=m.get("wb_node_id"), node_ip=m.get("wb_node_ip"))]
    if error and units:
        return [dict(units[0], status="failed", run_path=None, value=None, final={}, error=error,
                     seconds=m.get("time_total_s"), epochs=0)]
    return []


def _signal_handlers() -> dict:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(saved: dict) -> None:
    import signal

    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)


def run_ray(study: StudyConfig, *, emit: Callable[[SweepEvent], Any],
            stop: threading.Event | None = None) -> tuple[list[dict], int, str]:
    """Run (or resume) ``study`` on Ray Tune; see the module docstring.

    Returns:
        ``(records, skipped, status)``: the study's trial records (previous and new),
        the number of trials skipped as already done, and ``finished`` or ``stopped``.

    Raises:
        ImportError: Ray Tune (or Optuna for ``search: optuna``) is not installed.
        RayStartError: a local Ray could not be started (one line).
        RayClusterError: the cluster at ``ray_address`` cannot be joined, or no node can hold
            ``resources_per_trial`` (one line naming the address and what to check).
    """
    ray, tune = _import_ray()
    path = study.path
    journal = trials_journal(path)
    status = "finished"
    study_dict = dict(study.to_dict(), root=str(path.parent))
    job: dict[str, Any] = {"study": study_dict, "search": study.search, "cwd": os.getcwd(),
                           "storage": bool(study.ray_storage), "threads": study.resources_per_trial["cpu"],
                           "gpu": study.resources_per_trial["gpu"]}
    epochs = study.base.train.epochs  # ASHA's max_t: the most epochs a trial can run
    if "train.epochs" in study.params:
        spec = study.params["train.epochs"]
        epochs = max([epochs, *(v for v in (spec.values or ()) if isinstance(v, int)),
                      *([int(spec.high)] if spec.is_range else [])])

    if study.search == "optuna":
        optuna, ostudy, skipped, todo_n = resume_optuna(study)  # creates optuna.db; fails trials left RUNNING
        index0 = len(ostudy.get_trials(deepcopy=False))
        total = None
        previous_records: dict[str, dict] = {}

        def describe(config: dict) -> list[dict]:
            if not all(n in config for n in study.params):
                return []
            params = {n: config[n] for n in study.params}
            return [dict(trial_meta(study, Trial(trial_id(params, s), params, s, None, -1))) for s in study.seeds]
    else:
        trials = study.trials()
        previous_records = {r["trial_id"]: r for r in read_trials(path)}
        todo = [t for t in trials if previous_records.get(t.trial_id, {}).get("status") not in DONE_STATUSES]
        skipped = len(trials) - len(todo)
        todo_n = len(todo)
        total = len(trials)
        job["specs"] = [{"trial_id": t.trial_id, "params": t.params, "seed": t.seed, "config_index": t.config_index}
                        for t in todo]

        def describe(config: dict) -> list[dict]:
            i = config.get("wb_index")
            if not isinstance(i, int) or not 0 <= i < len(todo):
                return []
            return [trial_meta(study, todo[i])]

    emit(SweepEvent("study_started", {"skipped": skipped}, total, skipped))
    new: list[dict] = []
    if todo_n and not study_stop(study, stop).is_set():
        started = False
        if not ray.is_initialized():
            if study.ray_address:
                join_cluster(ray, study)  # RayClusterError (one line) when the address cannot be used
            else:
                init_local_ray(ray)  # services on 127.0.0.1 only; one retry; RayStartError when it cannot start
            started = True
        try:
            check_resources(ray, study.resources_per_trial, study.ray_address)
            stopper_cls, events_cls = _driver_classes()
            events = events_cls(describe, emit, total, skipped)
            recorded: set[str] = set()  # Ray trial ids whose records are in trials.jsonl
            trainable = tune.with_resources(tune.with_parameters(_trainable, job=job),
                                            {k: v for k, v in study.resources_per_trial.items() if v > 0})
            if study.search == "optuna":
                storage = optuna.storages.RDBStorage(f"sqlite:///{path / 'optuna.db'}")
                search_alg = _optuna_search_class(optuna)(space=_DefineByRun(list(study.params.values())),
                                                          metric=study.metric, mode=study.mode,
                                                          storage=storage, study_name=study.name,
                                                          seed=study.sampler_seed)
                search_alg.wb_pruned = events.pruned  # the same set (picklable, unlike the callback)
                param_space: dict = {}
                num_samples = todo_n
            else:
                search_alg = None
                param_space = {"wb_index": tune.grid_search(list(range(todo_n)))}
                num_samples = 1

            def record(ray_id, metrics, config, err, n: int, checkpoint=None) -> None:
                """Append one ended Ray trial's records to trials.jsonl and emit them (once per trial)."""
                if ray_id in recorded:
                    return
                recorded.add(ray_id)
                recs = _records_from(metrics, config, err, describe, events.pruned)
                if study.ray_storage:  # run folders come from Tune's storage (the trial's checkpoint)
                    fetch_runs(checkpoint, recs, path / "runs")
                for rec in recs:
                    rec.setdefault("ray_trial", ray_id)
                    if study.search == "optuna":
                        try:
                            number = search_alg._ot_trials[rec.get("ray_trial") or ray_id].number
                        except Exception:  # not asked by Optuna, or a private attribute changed
                            number = index0 + n
                        rec["config_index"] = number
                        rec["optuna_trial"] = number
                    new.append(rec)
                    journal.append(rec)
                    emit(SweepEvent("trial_ended", rec, total, skipped + len(new)))

            events.on_done = lambda trial, error: record(
                trial.trial_id, trial.last_result, trial.config, _trial_error(trial) if error else None,
                len(recorded), trial.checkpoint)
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(metric=study.metric, mode=study.mode, search_alg=search_alg,
                                            scheduler=_scheduler(study, epochs), num_samples=num_samples,
                                            trial_dirname_creator=_trial_dirname, reuse_actors=True),
                run_config=tune.RunConfig(storage_path=study.ray_storage or str(path / "ray"),
                                          name=study.name if study.ray_storage else "tune", verbose=0,
                                          stop=stopper_cls(path, stop),
                                          callbacks=[events],
                                          # a trial whose worker or node died starts again, on any node
                                          failure_config=tune.FailureConfig(max_failures=study.max_failures,
                                                                            fail_fast=False)),
            )
            tune_logger = logging.getLogger("ray.tune")
            level = tune_logger.level
            tune_logger.setLevel(max(level, logging.WARNING))  # no "Wrote the latest version of ..." lines
            # Tune installs its own SIGINT/SIGTERM handlers and leaves them behind: restore ours afterwards
            saved = _signal_handlers()
            try:
                grid = tuner.fit()
            finally:
                tune_logger.setLevel(level)
                _restore_signal_handlers(saved)
            for n, result in enumerate(grid):  # trials Tune ended without telling the callback
                ray_id = (result.metrics or {}).get("trial_id")
                if ray_id is None and result.path:  # e.g. failed before its first report: from its folder name
                    ray_id = Path(str(result.path)).name.removeprefix("trial_")
                record(ray_id, result.metrics, result.config, result.error, n, result.checkpoint)
        finally:
            if started:
                ray.shutdown()
    if study_stop(study, stop).is_set() or any(r["status"] == "stopped" for r in new):
        status = "stopped"
    (path / "STOP").unlink(missing_ok=True)
    if study.search == "optuna":
        return read_trials(path), skipped, status
    records = dict(previous_records)
    for r in new:
        records[r["trial_id"]] = r
    order = [t.trial_id for t in trials]
    return [records[i] for i in order if i in records], skipped, status
