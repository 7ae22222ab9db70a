"""A sweep's records: its journal (``trials.jsonl``), events, stop file and Optuna storage.

Shared by the local runner (:mod:`workbench.sweeps.runner`) and the Ray Tune backend
(:mod:`workbench.sweeps.ray_backend`), which both build on :mod:`workbench.engine`.

Study folder ``<root>/<name>/``::

    study.yaml      the StudyConfig
    spec.json       the definition the records belong to (hash of the base config, metric,
                    objective, mode and search); a changed one is refused on resume
    trials.jsonl    one record per finished/failed/pruned/stopped trial (latest per ``trial_id`` wins)
    status.json     running | finished | stopped, counts
    runs/           one ordinary run folder per trial
    optuna.db       Optuna's storage (search: optuna), so a stopped search resumes
    STOP            created by :func:`stop_study`: workers stop their trial at the next step

No UI imports.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..engine import Journal, StopSignal, bind_spec, config_core
from ..runs.store import atomic_write_bytes
from .study import StudyConfig, Trial

__all__ = ["SweepEvent", "DONE_STATUSES", "trials_journal", "read_trials", "trial_meta", "study_stop",
           "stop_study", "bind_study", "write_status", "open_optuna_study", "resume_optuna"]

DONE_STATUSES = ("finished", "pruned")
"""Trial statuses a resumed study skips (failed and stopped trials are tried again)."""


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


def trials_journal(path: str | Path) -> Journal:
    """The journal ``<study>/trials.jsonl`` (key ``trial_id``)."""
    return Journal(Path(path) / "trials.jsonl", "trial_id", default=str)


def read_trials(path: str | Path) -> list[dict]:
    """The latest record of every trial in ``<study>/trials.jsonl`` (in order of first appearance).

    Torn lines (a killed study) are skipped; a line that is not a trial record (JSON but not
    an object, or without ``trial_id``) is skipped with a ``RuntimeWarning``.
    """
    return list(trials_journal(path).latest().values())


def trial_meta(study: StudyConfig, t: Trial) -> dict:
    """The identity of a trial as recorded: ``trial_id``, ``config_index``, ``params``, ``seed`` and the objective."""
    return {"trial_id": t.trial_id, "config_index": t.config_index, "params": t.params, "seed": t.seed,
            "metric": study.metric, "objective": study.objective, "mode": study.mode}


def study_stop(study: StudyConfig, stop: threading.Event | None = None) -> StopSignal:
    """The study's stop signal: ``stop`` or the ``STOP`` file of its folder."""
    return StopSignal(stop, folder=study.path)


def stop_study(path: str | Path) -> None:
    """Ask a running study (in this or another process) to stop: running trials stop at their next step."""
    StopSignal(folder=path).request()


def bind_study(study: StudyConfig) -> dict:
    """Bind the study folder to what its records mean (``spec.json``).

    Covered: the base config (all but its name, root, tags and seed), ``metric``,
    ``objective``, ``mode`` and ``search``. Adding parameter values, seeds or trials keeps
    the records valid and resumes.

    Raises:
        SpecMismatchError: the folder holds a study with another base config or objective.
    """
    definition = {"base": config_core(study.base), "metric": study.metric, "objective": study.objective,
                  "mode": study.mode, "search": study.search}
    return bind_spec(study.path / "spec.json", definition, what="study",
                     hint="base config, metric, objective, mode or search",
                     extra={"name": study.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})


def write_status(path: Path, status: str, **info) -> None:
    """Write ``<study>/status.json`` atomically."""
    d = {"status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    atomic_write_bytes(path / "status.json", (json.dumps(d, indent=1) + "\n").encode())


# ------------------------------------------------------------------ Optuna's storage
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


def resume_optuna(study: StudyConfig):
    """Open the Optuna study and queue the study's ``enqueue`` points not asked yet.

    Returns:
        ``(optuna, ostudy, done, remaining)``: the module, the Optuna study, the trials already
        complete or pruned, and how many of ``n_trials`` are still to run.
    """
    optuna, ostudy = open_optuna_study(study)
    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(ostudy.get_trials(deepcopy=False, states=done_states))
    queued = {json.dumps(t.params, sort_keys=True) for t in ostudy.get_trials(deepcopy=False)}
    for e in study.enqueue:
        if json.dumps(e, sort_keys=True) not in queued:
            ostudy.enqueue_trial(e)
    return optuna, ostudy, done, max(0, study.n_trials - done)

