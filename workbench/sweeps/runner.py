"""Running studies: the study folder, the local backend (in-process or a process pool) and Optuna.

Study folder ``<root>/<name>/``::

    study.yaml      the StudyConfig
    trials.jsonl    one record per finished/failed/pruned/stopped trial, appended as they end
    status.json     running | finished | stopped, counts
    runs/           one ordinary run folder per trial
    optuna.db       Optuna's storage (search: optuna), so a stopped search resumes
    STOP            created by ``stop_study()``: workers stop their trial at the next step

A trial that raises is recorded with its error and the study goes on; running
the same study again skips trials already ``finished`` or ``pruned`` (failed
and stopped ones are tried again). ``trials.jsonl`` is written and read with
:mod:`workbench.runs.logs`: a torn last line (a killed study) is terminated
before the next record and skipped when read.

The process pool's workers die with the study: each worker asks Linux to send it
SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and SIGTERM/SIGINT of
the study process (main thread) terminate the workers before the study ends
(SIGINT raises ``KeyboardInterrupt`` after that; the study's status is ``stopped``).
Trials the workers were running are not recorded and run again on resume.

No UI imports.
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..config import RunConfig
from ..runs.logs import append_jsonl, read_jsonl
from ..runs.store import atomic_write_bytes
from .study import StudyConfig, Trial, trial_id

__all__ = ["SweepEvent", "StudyResult", "run_study", "stop_study", "read_trials", "objective_value",
           "DONE_STATUSES"]

DONE_STATUSES = ("finished", "pruned")


@dataclass(frozen=True)
class SweepEvent:
    """What a study reports to its callbacks.

    Attributes:
        kind: ``study_started``, ``trial_started``, ``epoch`` (a trial finished an epoch),
            ``trial_ended`` or ``study_ended``.
        trial: the trial record so far (``trial_id``, ``params``, ``seed``, ``status``, ``value``, ...).
        total: number of trials of the study (None for Optuna while it runs).
        done: trials ended so far.
    """

    kind: str
    trial: dict = field(default_factory=dict)
    total: int | None = None
    done: int = 0


@dataclass
class StudyResult:
    """Outcome of :func:`run_study`: ``records`` (one per trial, latest first attempt wins) and counts."""

    path: Path
    status: str
    records: list
    skipped: int = 0

    def counts(self) -> dict:
        out: dict[str, int] = {}
        for r in self.records:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out


# ------------------------------------------------------------------ records
def read_trials(path: str | Path) -> list[dict]:
    """The latest record of every trial in ``<study>/trials.jsonl`` (file order).

    Torn lines (a killed writer) are skipped; a line that is not a trial record (JSON but not
    an object, or without ``trial_id``) is skipped with a ``RuntimeWarning``.
    """
    latest: dict[str, dict] = {}
    for r in read_jsonl(Path(path) / "trials.jsonl"):
        if r.get("trial_id") is None:
            import warnings

            warnings.warn(f"{Path(path) / 'trials.jsonl'}: a record without trial_id skipped", RuntimeWarning,
                          stacklevel=2)
            continue
        latest[r["trial_id"]] = r
    return list(latest.values())


def _append(path: Path, record: dict, lock: threading.Lock) -> None:
    """Append one record to ``<study>/trials.jsonl`` (a torn last line is terminated first)."""
    with lock:
        append_jsonl(path / "trials.jsonl", record, default=str)


def _write_status(path: Path, status: str, **info) -> None:
    d = {"status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    atomic_write_bytes(path / "status.json", (json.dumps(d, indent=1) + "\n").encode())


def objective_value(history: list[dict], metric: str, objective: str = "final", mode: str = "max") -> float | None:
    """The study objective from a run's epoch records: last (``final``) or best (``best``) ``metric``."""
    vals = [h[metric] for h in history if h.get(metric) is not None and not _nan(h[metric])]
    if not vals:
        return None
    if objective == "final":
        return float(vals[-1])
    return float(max(vals) if mode == "max" else min(vals))


def _nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def stop_study(path: str | Path) -> None:
    """Ask a running study (in this or another process) to stop: running trials stop at their next step."""
    (Path(path) / "STOP").touch()


# ------------------------------------------------------------- one trial
class _StopWatcher:
    """Trainer callback: stops the trainer when the study's STOP file or event appears (checked ≤ 1/s)."""

    def __init__(self, study_path: Path, trainer_ref: list, event: threading.Event | None):
        self.stop_file = study_path / "STOP"
        self.trainer_ref, self.event = trainer_ref, event
        self._last = 0.0

    def __call__(self, ev) -> None:
        now = time.monotonic()
        if now - self._last < 1.0:
            return
        self._last = now
        if (self.event is not None and self.event.is_set()) or self.stop_file.exists():
            if self.trainer_ref:
                self.trainer_ref[0].stop()


def _execute(cfg_dict: dict, meta: dict, study_path: str, threads: int | None,
             on_epoch: Callable | None = None, stop_event: threading.Event | None = None,
             prune: Callable[[int, float], bool] | None = None) -> dict:
    """Train one trial; never raises (errors become a ``failed`` record)."""
    import torch

    from ..training import EpochEnd, Trainer

    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    rec = dict(meta, status="failed", run_path=None, value=None, final={}, error=None)
    ref: list = []
    pruned = {"flag": False}

    def epoch_cb(ev):
        if isinstance(ev, EpochEnd):
            if on_epoch is not None:
                on_epoch(ev)
            if prune is not None:
                v = ev.metrics.get(meta["metric"])
                if v is not None and prune(ev.epoch, float(v)):
                    pruned["flag"] = True
                    ref[0].stop()

    try:
        cfg = RunConfig.from_dict(cfg_dict)
        trainer = Trainer(cfg, callbacks=[epoch_cb, _StopWatcher(Path(study_path), ref, stop_event)],
                          handle_sigint=False)
        ref.append(trainer)
        res = trainer.run()
        rec.update(status="pruned" if pruned["flag"] else res.status, run_path=str(res.run_path),
                   value=objective_value(res.history, meta["metric"], meta["objective"], meta["mode"]),
                   final={k: v for k, v in res.final_metrics.items() if isinstance(v, (int, float))},
                   error=res.error, epochs=res.epochs_done)
    except Exception as e:
        rec.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=5),
                   run_path=str(ref[0].run_path) if ref and ref[0].run_path else None)
    rec["seconds"] = time.perf_counter() - t0
    return rec


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int | None) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``); no-op elsewhere.

    If the parent died before the request (it is then reparented), exit at once.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # pragma: no cover - no libc / prctl
        return
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def _init_worker(parent: int | None = None) -> None:
    _die_with_parent(parent)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


class _KillPoolOnSignal:
    """While a process pool runs (main thread only): SIGTERM/SIGINT first terminate the pool's workers.

    Then SIGINT raises ``KeyboardInterrupt``; SIGTERM is delivered again with its previous
    disposition (by default the process ends, as without this handler). Restores the previous
    handlers on exit.
    """

    def __init__(self, pool: ProcessPoolExecutor):
        self.pool, self.saved = pool, {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.saved[sig] = signal.signal(sig, self._handler)
            except (ValueError, OSError):  # pragma: no cover - not the main interpreter
                pass
        return self

    def __exit__(self, *exc):
        self._restore()
        return False

    def _restore(self) -> None:
        for sig, h in self.saved.items():
            try:
                signal.signal(sig, h if h is not None else signal.SIG_DFL)
            except (ValueError, OSError):  # pragma: no cover
                pass
        self.saved = {}

    def kill_workers(self) -> None:
        procs = list((getattr(self.pool, "_processes", None) or {}).values())
        for p in procs:
            try:
                p.terminate()
            except Exception:
                pass
        deadline = time.monotonic() + 3.0
        for p in procs:
            try:
                p.join(max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
            except Exception:
                pass

    def _handler(self, signum, frame):
        previous = self.saved.get(signum)
        self.kill_workers()
        self._restore()
        if signum == signal.SIGINT:
            if callable(previous) and previous is not signal.default_int_handler:
                previous(signum, frame)
            raise KeyboardInterrupt
        if callable(previous):
            previous(signum, frame)
            return
        if previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


# ------------------------------------------------------------------ studies
def _meta(study: StudyConfig, t: Trial) -> dict:
    return {"trial_id": t.trial_id, "config_index": t.config_index, "params": t.params, "seed": t.seed,
            "metric": study.metric, "objective": study.objective, "mode": study.mode}


def run_study(study: StudyConfig, *, callbacks: Iterable[Callable[[SweepEvent], Any]] = (),
              stop: threading.Event | None = None) -> StudyResult:
    """Run (or resume) a study with its backend.

    Args:
        study: the study.
        callbacks: receive :class:`SweepEvent` objects on the calling thread: for
            in-process trials all kinds as they happen; for the process pool
            ``trial_started``/``trial_ended`` only; for Ray all kinds live (``trial_ended``
            as each trial ends, right after its records are in ``trials.jsonl``).
        stop: when set, running trials stop at their next step and no new trial starts.

    Returns:
        :class:`StudyResult` with one record per trial.

    Raises:
        ValueError: an invalid combination (e.g. Optuna with a local process pool).
        ImportError: ``optuna`` or ``ray`` missing for a study that needs it (says what to install).
        KeyboardInterrupt: Ctrl-C; the study's ``status.json`` says ``stopped`` and the process
            pool's workers are terminated (see the module docstring).
    """
    if study.backend == "ray":
        try:
            import ray  # noqa: F401
            from ray import tune  # noqa: F401
        except ImportError as e:
            raise ImportError("backend: ray needs Ray Tune: pip install 'ray[tune]' "
                              "(or pip install -e '.[ray]' in this repository)") from e
    path = study.path
    (path / "runs").mkdir(parents=True, exist_ok=True)
    (path / "STOP").unlink(missing_ok=True)
    study.to_yaml(path / "study.yaml")
    cbs = list(callbacks)

    def emit(ev: SweepEvent) -> None:
        for cb in cbs:
            try:
                cb(ev)
            except Exception:  # a broken UI callback must not stop the study
                pass

    _write_status(path, "running", backend=study.backend, search=study.search)
    try:
        if study.backend == "ray":
            from .ray_backend import run_ray

            records, skipped, status = run_ray(study, emit=emit, stop=stop)
        elif study.search == "optuna":
            records, skipped, status = _run_optuna_local(study, emit, stop)
        else:
            records, skipped, status = _run_local(study, emit, stop)
    except KeyboardInterrupt:  # Ctrl-C (the pool's workers are already terminated)
        _write_status(path, "stopped", backend=study.backend, search=study.search, error="interrupted")
        raise
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    _write_status(path, status, counts=counts, skipped=skipped)
    emit(SweepEvent("study_ended", {"status": status, "counts": counts}, len(records), len(records)))
    return StudyResult(path, status, records, skipped)


def _stopping(study: StudyConfig, stop: threading.Event | None) -> bool:
    return (stop is not None and stop.is_set()) or (study.path / "STOP").exists()


def _run_local(study: StudyConfig, emit, stop) -> tuple[list, int, str]:
    path = study.path
    lock = threading.Lock()
    trials = study.trials()
    previous = {r["trial_id"]: r for r in read_trials(path)}
    todo = [t for t in trials if previous.get(t.trial_id, {}).get("status") not in DONE_STATUSES]
    skipped = len(trials) - len(todo)
    records = {t.trial_id: previous[t.trial_id] for t in trials if t.trial_id in previous}
    done = skipped
    emit(SweepEvent("study_started", {"skipped": skipped}, len(trials), done))
    status = "finished"

    def finish(rec: dict) -> None:
        nonlocal done
        done += 1
        records[rec["trial_id"]] = rec
        _append(path, rec, lock)
        emit(SweepEvent("trial_ended", rec, len(trials), done))

    if study.workers == 1:
        for t in todo:
            if _stopping(study, stop):
                status = "stopped"
                break
            meta = _meta(study, t)
            emit(SweepEvent("trial_started", dict(meta, status="running"), len(trials), done))
            rec = _execute(t.config.to_dict(), meta, str(path), None,
                           on_epoch=lambda ev, m=meta: emit(SweepEvent(
                               "epoch", dict(m, status="running", epoch=ev.epoch,
                                             last={k: v for k, v in ev.metrics.items()
                                                   if isinstance(v, (int, float))}), len(trials), done)),
                           stop_event=stop)
            finish(rec)
            if rec["status"] == "stopped":
                status = "stopped"
                break
    else:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=study.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(os.getpid(),)) as pool, _KillPoolOnSignal(pool):
            pending = {}
            queue = list(todo)
            while queue or pending:
                while queue and len(pending) < study.workers and not _stopping(study, stop):
                    t = queue.pop(0)
                    meta = _meta(study, t)
                    emit(SweepEvent("trial_started", dict(meta, status="running"), len(trials), done))
                    pending[pool.submit(_execute, t.config.to_dict(), meta, str(path), 1)] = t
                if not pending:
                    break
                finished, _ = wait(list(pending), timeout=0.5, return_when=FIRST_COMPLETED)
                if _stopping(study, stop):
                    stop_study(path)  # workers watch the STOP file
                for fut in finished:
                    t = pending.pop(fut)
                    try:
                        rec = fut.result()
                    except Exception as e:  # the worker process died
                        rec = dict(_meta(study, t), status="failed", error=f"worker died: {type(e).__name__}: {e}",
                                   run_path=None, value=None, final={})
                    finish(rec)
            if queue or _stopping(study, stop):
                status = "stopped"
    (path / "STOP").unlink(missing_ok=True)
    order = [t.trial_id for t in trials]
    return [records[i] for i in order if i in records], skipped, status


def _optuna_storage(study: StudyConfig):
    try:
        import optuna
    except ImportError as e:  # pragma: no cover - optuna is a dependency
        raise ImportError("search: optuna needs the 'optuna' package: pip install optuna") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna, f"sqlite:///{study.path / 'optuna.db'}"


def _optuna_pruner(optuna, study: StudyConfig):
    if study.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=study.grace_epochs)
    if study.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, study.grace_epochs))
    return optuna.pruners.NopPruner()


def open_optuna_study(study: StudyConfig):
    """The Optuna study behind a ``search: optuna`` study (created or loaded from ``optuna.db``).

    Trials left ``RUNNING`` by a killed session are marked ``FAIL`` so they are not counted.
    """
    optuna, storage = _optuna_storage(study)
    ostudy = optuna.create_study(study_name=study.name, storage=storage, load_if_exists=True,
                                 direction="maximize" if study.mode == "max" else "minimize",
                                 sampler=optuna.samplers.TPESampler(seed=study.sampler_seed),
                                 pruner=_optuna_pruner(optuna, study))
    for t in ostudy.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        ostudy._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    return optuna, ostudy


def _run_optuna_local(study: StudyConfig, emit, stop) -> tuple[list, int, str]:
    if study.workers != 1:
        raise ValueError("search: optuna with the local backend runs trials one after the other (workers: 1); "
                         "use backend: ray for parallel Optuna trials")
    path = study.path
    lock = threading.Lock()
    optuna, ostudy = open_optuna_study(study)
    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    finished_before = len(ostudy.get_trials(deepcopy=False, states=done_states))
    remaining = max(0, study.n_trials - finished_before)
    queued = {json.dumps(t.params, sort_keys=True) for t in ostudy.get_trials(deepcopy=False)}
    for e in study.enqueue:
        if json.dumps(e, sort_keys=True) not in queued:
            ostudy.enqueue_trial(e)
    records: list[dict] = [r for r in read_trials(path)]
    status = "finished"
    emit(SweepEvent("study_started", {"skipped": finished_before}, None, finished_before))

    def objective(otrial):
        params = {n: p.suggest(otrial) for n, p in study.params.items()}
        values = []
        for k, seed in enumerate(study.seeds):
            if _stopping(study, stop):
                raise optuna.TrialPruned("study stopped")
            t = Trial(trial_id(params, seed), params, seed, study.config_for(params, seed), otrial.number)
            meta = dict(_meta(study, t), optuna_trial=otrial.number)
            emit(SweepEvent("trial_started", dict(meta, status="running"), None, len(records)))

            def prune(epoch, value, first=(k == 0)):
                if not first:
                    return False
                otrial.report(value, epoch)
                return otrial.should_prune()

            rec = _execute(t.config.to_dict(), meta, str(path), None,
                           on_epoch=lambda ev, m=meta: emit(SweepEvent(
                               "epoch", dict(m, status="running", epoch=ev.epoch,
                                             last={kk: v for kk, v in ev.metrics.items()
                                                   if isinstance(v, (int, float))}), None, len(records))),
                           stop_event=stop, prune=prune)
            records.append(rec)
            _append(path, rec, lock)
            emit(SweepEvent("trial_ended", rec, None, len(records)))
            if rec["status"] == "pruned":
                raise optuna.TrialPruned(f"pruned at epoch {rec.get('epochs')}")
            if rec["status"] != "finished" or rec["value"] is None:
                raise RuntimeError(rec.get("error") or f"trial ended {rec['status']}")
            values.append(rec["value"])
        return sum(values) / len(values)

    if remaining:
        ostudy.optimize(objective, n_trials=remaining, catch=(RuntimeError,))
    if _stopping(study, stop):
        status = "stopped"
    (path / "STOP").unlink(missing_ok=True)
    return read_trials(path), finished_before, status
