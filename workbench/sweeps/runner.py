"""Running studies: the local backend (in-process or a process pool), Optuna, and the Ray Tune switch.

The study folder and its records are described in :mod:`workbench.sweeps.trials`; the
machinery (journal, one training per trial, the process pool whose workers die with the
study, the callback error policy) is :mod:`workbench.engine`.

A trial that raises is recorded with its error and the study goes on; running
the same study again skips trials already ``finished`` or ``pruned`` (failed
and stopped ones are tried again). ``trials.jsonl`` is a
:class:`~workbench.engine.Journal`: a torn last line (a killed study) is
terminated before the next record and skipped when read. A resumed study whose
base config or objective changed is refused (``spec.json``, one-line
:class:`~workbench.engine.SpecMismatchError`).

The process pool's workers die with the study: each worker asks Linux to send it
SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and SIGTERM/SIGINT of
the study process (main thread) terminate the workers before the study ends
(SIGINT raises ``KeyboardInterrupt`` after that; the study's status is ``stopped``).
Trials the workers were running are not recorded and run again on resume.

Callbacks that raise are disabled with a warning naming them
(:class:`~workbench.engine.CallbackList`); the study goes on.

No UI imports.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ..engine import CallbackList, execute_trial, objective_value, run_pool
from .study import StudyConfig, Trial, trial_id
from .trials import (
    DONE_STATUSES,
    SweepEvent,
    bind_study,
    open_optuna_study,
    read_trials,
    resume_optuna,
    stop_study,
    study_stop,
    trial_meta,
    trials_journal,
    write_status,
)

__all__ = ["SweepEvent", "StudyResult", "run_study", "stop_study", "read_trials", "objective_value",
           "DONE_STATUSES", "open_optuna_study"]


@dataclass
class StudyResult:
    """Outcome of :func:`run_study`: ``records`` (one per trial, latest first attempt wins) and counts."""

    path: Path
    status: str
    records: list
    skipped: int = 0

    def counts(self) -> dict:
        """``{status: number of trials}``."""
        out: dict[str, int] = {}
        for r in self.records:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out


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
        SpecMismatchError: the folder holds a study with another base config or objective (one line).
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
    bind_study(study)  # SpecMismatchError before anything else is written
    stopper = study_stop(study, stop)
    stopper.clear_file()
    study.to_yaml(path / "study.yaml")
    emit = CallbackList(callbacks, what="study")
    write_status(path, "running", backend=study.backend, search=study.search)
    try:
        if study.backend == "ray":
            from .ray_backend import run_ray

            records, skipped, status = run_ray(study, emit=emit, stop=stop)
        elif study.search == "optuna":
            records, skipped, status = _run_optuna_local(study, emit, stop)
        else:
            records, skipped, status = _run_local(study, emit, stop)
    except KeyboardInterrupt:  # Ctrl-C (the pool's workers are already terminated)
        write_status(path, "stopped", backend=study.backend, search=study.search, error="interrupted")
        raise
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    write_status(path, status, counts=counts, skipped=skipped)
    emit(SweepEvent("study_ended", {"status": status, "counts": counts}, len(records), len(records)))
    return StudyResult(path, status, records, skipped)


def _run_local(study: StudyConfig, emit, stop) -> tuple[list, int, str]:
    path = study.path
    journal = trials_journal(path)
    stopper = study_stop(study, stop)
    trials = study.trials()
    previous = journal.latest()
    todo = [t for t in trials if previous.get(t.trial_id, {}).get("status") not in DONE_STATUSES]
    skipped = len(trials) - len(todo)
    records = {t.trial_id: previous[t.trial_id] for t in trials if t.trial_id in previous}
    done = skipped
    emit(SweepEvent("study_started", {"skipped": skipped}, len(trials), done))
    status = "finished"

    def started(t: Trial) -> None:
        emit(SweepEvent("trial_started", dict(trial_meta(study, t), status="running"), len(trials), done))

    def finish(rec: dict) -> None:
        nonlocal done
        done += 1
        records[rec["trial_id"]] = rec
        journal.append(rec)
        emit(SweepEvent("trial_ended", rec, len(trials), done))

    if study.workers == 1:
        for t in todo:
            if stopper.is_set():
                status = "stopped"
                break
            meta = trial_meta(study, t)
            started(t)
            rec = execute_trial(t.config.to_dict(), meta, str(path), None,
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
        def ended(t: Trial, rec: dict | None, err: BaseException | None) -> None:
            if err is not None:  # the worker process died
                rec = dict(trial_meta(study, t), status="failed",
                           error=f"worker died: {type(err).__name__}: {err}", run_path=None, value=None, final={})
            finish(rec)

        all_launched = run_pool(todo, lambda t: (execute_trial, (t.config.to_dict(), trial_meta(study, t),
                                                                 str(path), 1)),
                                workers=study.workers, stop=stopper, on_start=started, on_done=ended)
        if not all_launched:
            status = "stopped"
    stopper.clear_file()
    order = [t.trial_id for t in trials]
    return [records[i] for i in order if i in records], skipped, status


def _run_optuna_local(study: StudyConfig, emit, stop) -> tuple[list, int, str]:
    if study.workers != 1:
        raise ValueError("search: optuna with the local backend runs trials one after the other (workers: 1); "
                         "use backend: ray for parallel Optuna trials")
    path = study.path
    journal = trials_journal(path)
    stopper = study_stop(study, stop)
    optuna, ostudy, finished_before, remaining = resume_optuna(study)
    records: list[dict] = list(journal.latest().values())
    status = "finished"
    emit(SweepEvent("study_started", {"skipped": finished_before}, None, finished_before))

    def objective(otrial):
        params = {n: p.suggest(otrial) for n, p in study.params.items()}
        values = []
        for k, seed in enumerate(study.seeds):
            if stopper.is_set():
                raise optuna.TrialPruned("study stopped")
            t = Trial(trial_id(params, seed), params, seed, study.config_for(params, seed), otrial.number)
            meta = dict(trial_meta(study, t), optuna_trial=otrial.number)
            emit(SweepEvent("trial_started", dict(meta, status="running"), None, len(records)))

            def prune(epoch, value, first=(k == 0)):
                if not first:
                    return False
                otrial.report(value, epoch)
                return otrial.should_prune()

            rec = execute_trial(t.config.to_dict(), meta, str(path), None,
                                on_epoch=lambda ev, m=meta: emit(SweepEvent(
                                    "epoch", dict(m, status="running", epoch=ev.epoch,
                                                  last={kk: v for kk, v in ev.metrics.items()
                                                        if isinstance(v, (int, float))}), None, len(records))),
                                stop_event=stop, prune=prune)
            records.append(rec)
            journal.append(rec)
            emit(SweepEvent("trial_ended", rec, None, len(records)))
            if rec["status"] == "pruned":
                raise optuna.TrialPruned(f"pruned at epoch {rec.get('epochs')}")
            if rec["status"] != "finished" or rec["value"] is None:
                raise RuntimeError(rec.get("error") or f"trial ended {rec['status']}")
            values.append(rec["value"])
        return sum(values) / len(values)

    if remaining:
        ostudy.optimize(objective, n_trials=remaining, catch=(RuntimeError,))
    if stopper.is_set():
        status = "stopped"
    stopper.clear_file()
    return read_trials(path), finished_before, status
