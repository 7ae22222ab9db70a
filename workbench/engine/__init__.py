"""The study engine: one append-only journal and one runner for every study of the workbench.

* :mod:`~workbench.engine.journal` — :class:`Journal` (JSON lines, torn-line tolerant, latest
  record per key wins) and :func:`bind_spec` (a resumed study refuses a changed definition).
* :mod:`~workbench.engine.runner` — :func:`train_run` (one training, never raises, stoppable,
  resumable), :func:`execute_trial` (one sweep trial), :func:`run_pool` (a local process pool
  whose workers die with the study) and :class:`CallbackList` (one error policy for callbacks).

Used by :mod:`workbench.sweeps` (local and Ray Tune), :mod:`workbench.poisoning.study`,
:mod:`workbench.targeted.study` and :mod:`workbench.bilevel.study`. No UI imports.
"""
from .journal import Journal, SpecMismatchError, bind_spec, config_core, latest_by, spec_hash
from .runner import STOP_FILE, CallbackList, StopSignal, execute_trial, objective_value, run_pool, train_run

__all__ = ["Journal", "SpecMismatchError", "bind_spec", "spec_hash", "latest_by", "config_core", "CallbackList",
           "StopSignal", "train_run", "execute_trial", "objective_value", "run_pool", "STOP_FILE"]
