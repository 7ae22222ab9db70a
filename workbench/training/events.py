"""Events emitted by the :class:`~workbench.training.Trainer` to its callbacks.

Callbacks are plain callables ``fn(event)``. They run on the training thread,
so they must be quick (the live dashboard only appends to buffers and lets its
own thread redraw). An exception in a callback is reported once as a warning
and the callback is dropped; training goes on.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class RunStarted:
    """Training (re)starts.

    Attributes: run_id, run_path (None when not stored), name, config (dict),
    device, steps_per_epoch, total_steps, start_step, start_epoch, attempt,
    num_parameters.
    """

    run_id: str
    run_path: str | None
    name: str
    config: dict
    device: str
    steps_per_epoch: int
    total_steps: int
    start_step: int
    start_epoch: int
    attempt: int
    num_parameters: int


@dataclass(frozen=True)
class StepEnd:
    """A logged optimizer step (every ``train.log_every`` steps).

    Attributes:
        step: optimizer steps done (1-based).
        epoch: fractional epoch ``step / steps_per_epoch``.
        metrics: ``loss`` (mean batch loss at w), ``acc`` (batch accuracy in
            [0, 1]), ``lr``, ``grad_norm`` (‖g‖₂), and under SAM ``sam_grad_norm``
            (‖g′‖₂) and ``cosine`` (cos(g, g′)).
        elapsed: seconds since this attempt started.
    """

    run_id: str
    step: int
    epoch: float
    metrics: dict
    elapsed: float


@dataclass(frozen=True)
class EpochEnd:
    """An epoch finished and (when due) was evaluated in eval mode on the full splits.

    Attributes:
        epoch: completed epochs (1-based).
        step: optimizer steps done.
        metrics: ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``,
            ``test_loss``, ``test_acc`` (losses in nats, accuracies in [0, 1]),
            ``lr``, ``epoch_seconds``.
    """

    run_id: str
    epoch: int
    step: int
    metrics: dict
    elapsed: float


@dataclass(frozen=True)
class ProbeResult:
    """A probe measured the model at the end of an epoch (see :class:`~workbench.training.Probe`).

    Attributes:
        name: the probe's name (e.g. ``top_eigenvalue``, ``feature_sparsity``).
        epoch: completed epochs; step: optimizer steps done.
        values: what the probe returned (JSON-able: numbers, lists, dicts).
        seconds: time the probe took.
    """

    run_id: str
    name: str
    epoch: int
    step: int
    values: dict
    seconds: float


@dataclass(frozen=True)
class StatusChanged:
    """The run's status changed (running, paused, finished, stopped, diverged, failed)."""

    run_id: str
    status: str
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunEnded:
    """Training ended; ``status`` is finished, stopped, diverged or failed."""

    run_id: str
    status: str
    error: str | None
    final_metrics: dict
    step: int
    epoch: int


Event = Any


def callback_name(fn: Callable) -> str:
    """A readable name of a callback for messages: ``module.qualname`` of a function, else its class."""
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    mod = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", None) or repr(fn)
    return f"{mod}.{name}" if mod and mod != "builtins" else name


class CallbackList:
    """Callbacks with the workbench's one error policy: a callback that raises is disabled with a warning.

    ``cbs(event)`` calls every callback in order. A callback that raises an ``Exception``
    is removed and reported once as a ``RuntimeWarning`` naming it (``<what> callback
    <module.name> raised <Type>: <message>; it is disabled``); the other callbacks and the
    caller (a training run, a study) go on. The Trainer and every study (sweeps, poisoning,
    targeted, bilevel) dispatch their events with this policy. A ``CallbackList`` is itself
    a callback, so a study hands one to each Trainer it runs: a callback disabled by one
    run stays disabled for the rest of the study.

    Args:
        callbacks: callables ``fn(event)``; ``None`` entries are ignored.
        what: the word used in the warning (``"training"``, ``"study"``).
    """

    def __init__(self, callbacks: Iterable[Callable | None] = (), *, what: str = "study"):
        self.callbacks = [fn for fn in callbacks if fn is not None]
        self.what = what
        self.disabled: list[Callable] = []

    def append(self, fn: Callable) -> None:
        """Add a callback (called after the others)."""
        self.callbacks.append(fn)

    def __len__(self) -> int:
        return len(self.callbacks)

    def __call__(self, event: Any) -> None:
        """Send ``event`` to every enabled callback (see the class docstring for errors)."""
        for fn in list(self.callbacks):
            try:
                fn(event)
            except Exception as e:  # a broken callback must not stop the work it watches
                try:
                    self.callbacks.remove(fn)
                except ValueError:
                    pass
                self.disabled.append(fn)
                warnings.warn(f"{self.what} callback {callback_name(fn)} raised {type(e).__name__}: {e}; "
                              "it is disabled", RuntimeWarning, stacklevel=2)

