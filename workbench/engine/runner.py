"""The study runner: one training per unit of work, in-process or in a local process pool, stoppable.

What every study of the workbench shares (sweeps, the poisoning comparison and Table 4.1
search, targeted-poisoning trials, the bilevel study):

* :func:`train_run` trains (or resumes) one run folder with the :class:`~workbench.training.Trainer`
  and never raises: an error becomes a ``failed`` record with its traceback. It stops at
  the next step when the study's :class:`StopSignal` is raised (an event, or a ``STOP``
  file that other processes can create), resumes a stopped or killed run from its
  checkpoint, and reports the run folder as soon as it exists (so a study can record a
  ``running`` line before training starts).
* :func:`execute_trial` is :func:`train_run` for one sweep trial (objective value, numeric
  final metrics, pruning); it is a module-level function so that pool workers and Ray
  actors can run it.
* :func:`run_pool` runs units of work in a local process pool (``spawn``). Each worker asks
  Linux to send it SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), runs one
  torch thread, and SIGTERM/SIGINT of the study process (main thread) terminate the workers
  before the study ends (SIGINT raises ``KeyboardInterrupt`` afterwards). Units that were
  running are not recorded and run again on resume.
* Callbacks follow one error policy everywhere, :class:`~workbench.training.events.CallbackList`:
  a callback that raises is disabled with a warning naming it; the study goes on.

Records go to a :class:`~workbench.engine.journal.Journal`. The Ray Tune backend of the
sweeps (:mod:`workbench.sweeps.ray_backend`) builds on :func:`execute_trial` and the journal.

No UI imports.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..training.events import CallbackList

__all__ = ["CallbackList", "StopSignal", "train_run", "execute_trial", "objective_value", "run_pool",
           "die_with_parent", "STOP_FILE"]

STOP_FILE = "STOP"


class StopSignal:
    """A study's stop request: a ``threading.Event`` (this process) and/or a ``STOP`` file (any process).

    Args:
        events: ``threading.Event`` objects (``None`` ignored), set by the caller (a UI button, a callback).
        folder: the study folder; ``<folder>/STOP`` stops the study too (see :meth:`request`).
    """

    def __init__(self, *events: threading.Event | None, folder: str | Path | None = None):
        self.events = [e for e in events if e is not None]
        self.file = Path(folder) / STOP_FILE if folder is not None else None

    def event_set(self) -> bool:
        """Whether one of the events is set (cheap: checked at every training event)."""
        return any(e.is_set() for e in self.events)

    def is_set(self) -> bool:
        """Whether an event is set or the STOP file exists."""
        return self.event_set() or (self.file is not None and self.file.exists())

    def request(self) -> None:
        """Create the STOP file (running workers of other processes watch it)."""
        if self.file is not None:
            self.file.touch()

    def clear_file(self) -> None:
        """Remove the STOP file (at the start and the end of a study)."""
        if self.file is not None:
            self.file.unlink(missing_ok=True)


class _Watch:
    """Trainer callback: reports the run folder once, stops the trainer on the study's stop signal.

    The event is checked at every training event; the STOP file at most once a second.
    """

    def __init__(self, trainer_ref: list, stop: StopSignal | None, on_start: Callable[[Path], None] | None):
        self.ref, self.stop, self.on_start = trainer_ref, stop, on_start
        self.started = False
        self._last = 0.0

    def __call__(self, ev) -> None:
        from ..training import RunStarted

        if isinstance(ev, RunStarted) and not self.started and ev.run_path:
            self.started = True
            if self.on_start is not None:
                self.on_start(Path(ev.run_path))
        if self.stop is None or not self.ref:
            return
        hit = self.stop.event_set()
        if not hit and self.stop.file is not None:
            now = time.monotonic()
            if now - self._last >= 1.0:
                self._last = now
                hit = self.stop.file.exists()
        if hit:
            self.ref[0].stop()


def train_run(config, *, resume: str | Path | None = None, callbacks: Iterable[Callable] = (),
              stop: StopSignal | None = None, handle_sigint: bool = False,
              stepper_factory: Callable[[], Any] | None = None, on_start: Callable[[Path], None] | None = None,
              threads: int | None = None, trainer_ref: list | None = None) -> tuple[dict, Any]:
    """Train (or resume) one run; never raises.

    Args:
        config: the :class:`~workbench.config.RunConfig` (or its dict) of a new run.
        resume: a run folder to resume from its ``checkpoints/last.pt`` instead (a folder
            already ``finished`` is not trained again).
        callbacks: receive the Trainer's events (hand a :class:`CallbackList` to keep one
            error policy across the runs of a study).
        stop: the study's stop signal; the trainer stops at its next step (and checkpoints).
        handle_sigint: let the Trainer turn the first Ctrl-C into a graceful stop (main thread).
        stepper_factory: builds the Trainer's stepper (e.g. a poison crafter); None: plain steps.
        on_start: called with the run folder once training (re)starts.
        threads: ``torch.set_num_threads`` before training (pool workers: 1).
        trainer_ref: a list the Trainer is appended to once built (for callbacks that stop it).

    Returns:
        ``(record, result)``: ``record`` has ``status`` (the Trainer's, ``failed`` on an
        error), ``run_path``, ``error`` (plus ``traceback`` when the Trainer raised); the
        caller adds ``seconds`` or metrics. ``result`` is the :class:`TrainResult` (None when
        training raised or a finished run was found).
    """
    from ..config import RunConfig
    from ..runs import Run
    from ..training import Trainer

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    rec: dict[str, Any] = {"status": "failed", "run_path": None, "error": None}
    ref: list = trainer_ref if trainer_ref is not None else []
    result = None
    try:
        if resume is not None and Run(resume).status().get("status") == "finished":
            rec.update(status="finished", run_path=str(resume))
            return rec, None
        stepper = stepper_factory() if stepper_factory else None
        cbs = [_Watch(ref, stop, on_start), *callbacks]
        if resume is not None:
            trainer = Trainer.from_run(resume, callbacks=cbs, stepper=stepper, handle_sigint=handle_sigint)
        else:
            cfg = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
            trainer = Trainer(cfg, callbacks=cbs, stepper=stepper, handle_sigint=handle_sigint)
        ref.append(trainer)
        if stop is not None and stop.is_set():
            trainer.stop()
        result = trainer.run()
        rec.update(status=result.status, run_path=str(result.run_path) if result.run_path else None,
                   error=result.error)
    except Exception as e:  # recorded; the study goes on
        rec.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=5))
        if ref and ref[0].run_path is not None:
            rec["run_path"] = str(ref[0].run_path)
    return rec, result


def objective_value(history: list[dict], metric: str, objective: str = "final", mode: str = "max") -> float | None:
    """The study objective from a run's epoch records: the last (``final``) or best (``best``) ``metric``.

    Returns None when no epoch record has the metric (NaN values are ignored).
    """
    vals = [h[metric] for h in history
            if h.get(metric) is not None and not (isinstance(h[metric], float) and math.isnan(h[metric]))]
    if not vals:
        return None
    if objective == "final":
        return float(vals[-1])
    return float(max(vals) if mode == "max" else min(vals))


def execute_trial(cfg_dict: dict, meta: dict, study_path: str, threads: int | None,
                  on_epoch: Callable | None = None, stop_event: threading.Event | None = None,
                  prune: Callable[[int, float], bool] | None = None) -> dict:
    """Train one sweep trial and return its record; never raises (errors become a ``failed`` record).

    Args:
        cfg_dict: the trial's run config as a dict.
        meta: the trial's identity (``trial_id``, ``params``, ``seed``, ...) with the study's
            ``metric``, ``objective`` and ``mode``; copied into the record.
        study_path: the study folder (its ``STOP`` file stops the trial).
        threads: torch threads (None: leave as is).
        on_epoch: called with every ``EpochEnd`` event.
        stop_event: stops the trial at its next step when set.
        prune: ``prune(epoch, value) -> bool`` after every epoch; True stops the trial as ``pruned``.

    Returns:
        ``dict(meta, status, run_path, value, final, error, epochs, seconds)`` (``traceback``
        when training raised); ``value`` is :func:`objective_value` of the run's history.
    """
    from ..training import EpochEnd

    t0 = time.perf_counter()
    rec = dict(meta, status="failed", run_path=None, value=None, final={}, error=None)
    pruned = {"flag": False}
    ref: list = []

    def epoch_cb(ev):
        if isinstance(ev, EpochEnd):
            if on_epoch is not None:
                on_epoch(ev)
            if prune is not None:
                v = ev.metrics.get(meta["metric"])
                if v is not None and prune(ev.epoch, float(v)):
                    pruned["flag"] = True
                    ref[0].stop()

    out, res = train_run(cfg_dict, callbacks=[epoch_cb], stop=StopSignal(stop_event, folder=study_path),
                         threads=threads, trainer_ref=ref)
    rec.update(status=out["status"], run_path=out["run_path"], error=out["error"])
    if "traceback" in out:
        rec["traceback"] = out["traceback"]
    if res is not None:
        rec.update(status="pruned" if pruned["flag"] else res.status,
                   value=objective_value(res.history, meta["metric"], meta["objective"], meta["mode"]),
                   final={k: v for k, v in res.final_metrics.items() if isinstance(v, (int, float))},
                   epochs=res.epochs_done)
    rec["seconds"] = time.perf_counter() - t0
    return rec


# ------------------------------------------------------------------ the local process pool
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None) -> None:
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
    die_with_parent(parent)
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


def run_pool(units: Sequence, job: Callable[[Any], tuple[Callable, tuple]], *, workers: int, stop: StopSignal,
             on_start: Callable[[Any], None], on_done: Callable[[Any, Any, BaseException | None], None]) -> bool:
    """Run ``units`` in a local pool of ``workers`` processes; returns whether every unit was launched.

    Args:
        units: the units of work, launched in order.
        job: ``unit -> (function, args)``: a module-level function (pickled to the worker) and its arguments.
        workers: pool size.
        stop: no unit is launched once it is set; the STOP file is then created so running workers stop.
        on_start: ``on_start(unit)`` before a unit is submitted (in this process).
        on_done: ``on_done(unit, result, error)`` as each unit ends (``error``: the worker died).

    Raises:
        KeyboardInterrupt: Ctrl-C (the workers are terminated first).
    """
    ctx = mp.get_context("spawn")
    queue = list(units)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(os.getpid(),)) as pool, _KillPoolOnSignal(pool):
        pending: dict = {}
        while queue or pending:
            while queue and len(pending) < workers and not stop.is_set():
                unit = queue.pop(0)
                on_start(unit)
                fn, args = job(unit)
                pending[pool.submit(fn, *args)] = unit
            if not pending:
                break
            finished, _ = wait(list(pending), timeout=0.5, return_when=FIRST_COMPLETED)
            if stop.is_set():
                stop.request()  # workers watch the STOP file
            for fut in finished:
                unit = pending.pop(fut)
                try:
                    res, err = fut.result(), None
                except Exception as e:  # the worker process died
                    res, err = None, e
                on_done(unit, res, err)
    return not queue and not stop.is_set()
