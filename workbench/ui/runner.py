"""Background execution of training runs for the notebook panels.

:class:`BackgroundRunner` trains a queue of configurations one after the other
on a daemon thread (one training job at a time: two concurrent jobs on a small
CPU slow each other down badly). The kernel stays responsive; ``stop()``
stops the current run at the next step and drops the rest of the queue.
No science here: the runner only drives :class:`~workbench.training.Trainer`.
"""
from __future__ import annotations

import threading
import traceback
from typing import Callable, Sequence

from ..config import RunConfig
from ..training import Trainer, TrainResult

__all__ = ["BackgroundRunner"]


class BackgroundRunner:
    """Run ``configs`` sequentially on a background thread.

    Args:
        configs: the runs to train, in order.
        callbacks: event callbacks attached to every trainer.
        on_run_start: ``fn(index, config, trainer)`` before each run.
        on_finish: ``fn(results)`` when the queue is done (or stopped / failed).
        on_error: ``fn(index, config, exception, traceback_text)`` when a run fails;
            the queue continues with the next run.
        probes: ``fn(config) -> list of Probe`` giving fresh probes for each run.
    """

    def __init__(self, configs: Sequence[RunConfig], *, callbacks: Sequence[Callable] = (),
                 on_run_start: Callable | None = None, on_finish: Callable | None = None,
                 on_error: Callable | None = None, probes: Callable | None = None):
        self.configs = list(configs)
        self.callbacks = list(callbacks)
        self.probes = probes
        self.on_run_start, self.on_finish, self.on_error = on_run_start, on_finish, on_error
        self.results: list[TrainResult] = []
        self.errors: list[tuple[int, BaseException]] = []
        self.trainer: Trainer | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="workbench-runner", daemon=True)

    def start(self) -> "BackgroundRunner":
        """Start the queue on the background thread; returns ``self``."""
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """Whether the background thread is still working through the queue."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop the current run after its current step and skip the remaining ones."""
        self._stop.set()
        if self.trainer is not None:
            self.trainer.stop()

    def pause(self) -> None:
        """Pause the current run before its next step (:meth:`resume` continues)."""
        if self.trainer is not None:
            self.trainer.pause()

    def resume(self) -> None:
        """Continue a paused run."""
        if self.trainer is not None:
            self.trainer.resume()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the queue; returns True when it finished."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _main(self) -> None:
        try:
            for i, cfg in enumerate(self.configs):
                if self._stop.is_set():
                    break
                probes = self.probes(cfg) if self.probes is not None else []
                trainer = Trainer(cfg, callbacks=self.callbacks, handle_sigint=False, probes=probes)
                self.trainer = trainer
                if self._stop.is_set():
                    trainer.stop()
                if self.on_run_start is not None:
                    self.on_run_start(i, cfg, trainer)
                try:
                    self.results.append(trainer.run())
                except Exception as e:  # reported, queue continues
                    self.errors.append((i, e))
                    if self.on_error is not None:
                        self.on_error(i, cfg, e, traceback.format_exc())
        finally:
            if self.on_finish is not None:
                self.on_finish(self.results)
