"""Events emitted by the :class:`~workbench.training.Trainer` to its callbacks.

Callbacks are plain callables ``fn(event)``. They run on the training thread,
so they must be quick (the live dashboard only appends to buffers and lets its
own thread redraw). An exception in a callback is reported once as a warning
and the callback is dropped; training goes on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
