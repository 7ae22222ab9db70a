"""How long will it take? Estimates of run and analysis durations from short timed probes, never guesses.

The classroom panels label their "heavier" settings with an estimated duration. The
estimate comes from timing a little of the real work on this machine, now:

* **training** (:func:`probe_training`): the configuration itself is trained in
  memory (nothing written) for ``warmup + steps`` optimizer steps; the median
  time of the timed steps, times the steps of the full run, plus one timed
  evaluation pass over every split per epoch, gives the estimate. SAM costs
  two gradient evaluations per step and the probe sees that.
* **analyses** (:func:`probe_analysis`): the analysis is run, unsaved, on two
  small example counts ``n₁ < n₂``; a line ``t = a + b·n`` through the two
  timings is evaluated at the requested count (HVP-based estimates and
  landscape evaluations are linear in the number of examples at fixed
  iteration counts).

Probe results are cached per process by what determines them (the configuration
without its epochs, root and name), so many panels in one kernel probe once.
Estimates reflect the machine's load at probe time; they are labelled "≈".

No UI imports.
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import RunConfig

__all__ = ["Estimate", "TrainingProbe", "probe_training", "estimate_training", "estimate_crafting", "estimate_study",
           "probe_analysis",
           "estimate_analysis", "format_duration", "clear_cache"]

_CACHE: dict[str, Any] = {}
_LOCK = threading.Lock()


def format_duration(seconds: float) -> str:
    """``42 s``, ``3:05 min``, ``1 h 12 min``; ``?`` for NaN."""
    if seconds != seconds:
        return "?"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{max(s, 1)} s"
    if s < 3600:
        return f"{s // 60}:{s % 60:02d} min"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


@dataclass
class Estimate:
    """A predicted duration.

    Attributes:
        seconds: predicted wall time of the whole job (s).
        probe_seconds: wall time the probe itself took (s).
        detail: how it was computed (for tooltips and reports).
        parts: the measured ingredients (per-step seconds, eval seconds, ...).
    """

    seconds: float
    probe_seconds: float
    detail: str
    parts: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The estimate for a button, e.g. ``≈ 3:05 min``."""
        return "≈ " + format_duration(self.seconds)


@dataclass
class TrainingProbe:
    """Timings of one configuration on this machine.

    Attributes:
        step_seconds: median seconds per optimizer step (after warm-up).
        eval_seconds: seconds of one evaluation pass over all splits (one epoch end).
        steps_per_epoch: optimizer steps per epoch.
        setup_seconds: data and model set-up.
        probe_seconds: total wall time of the probe.
        steps: timed steps.
    """

    step_seconds: float
    eval_seconds: float
    steps_per_epoch: int
    setup_seconds: float
    probe_seconds: float
    steps: int

    def predict(self, epochs: int) -> float:
        """Seconds of training for ``epochs`` epochs (steps and epoch-end evaluations; set-up not included)."""
        return epochs * (self.steps_per_epoch * self.step_seconds + self.eval_seconds)


def _key(cfg: RunConfig) -> str:
    d = cfg.to_dict()
    d.pop("root", None)
    d.pop("name", None)
    d.get("train", {}).pop("epochs", None)
    return json.dumps(d, sort_keys=True, default=str)


def clear_cache() -> None:
    """Forget the timings measured so far in this process (the next estimate probes again)."""
    with _LOCK:
        _CACHE.clear()


def probe_training(config: RunConfig, *, steps: int = 4, warmup: int = 1, cache: bool = True,
                   stepper=None, stepper_key: str = "") -> TrainingProbe:
    """Time ``steps`` optimizer steps (after ``warmup``) and one evaluation of ``config`` on this machine.

    The configuration is trained in memory (``store=False``: no run folder), stopped
    after ``warmup + steps`` steps. ``stepper`` (a zero-argument factory of a
    :class:`~workbench.training.Stepper`, e.g. a poison crafter) replaces the optimizer
    step; ``stepper_key`` names it in the cache.

    Raises:
        ValueError: ``steps < 1`` or ``warmup < 0``.
    """
    from ..training import Trainer
    from ..training.evaluate import evaluate
    from ..training.events import RunStarted, StepEnd

    if steps < 1 or warmup < 0:
        raise ValueError(f"steps={steps} must be >= 1 and warmup={warmup} >= 0")
    key = f"train:{steps}:{warmup}:{stepper_key}:" + _key(config)
    if cache:
        with _LOCK:
            if key in _CACHE:
                return _CACHE[key]
    t_start = time.perf_counter()
    cfg = config.with_overrides({"train.epochs": 1})
    stamps: list[float] = []
    info: dict = {}
    holder: list = []

    def watch(ev) -> None:
        if isinstance(ev, RunStarted):
            info["spe"] = ev.steps_per_epoch
            info["t_run"] = time.perf_counter()
            stamps.append(time.perf_counter())
        elif isinstance(ev, StepEnd):
            stamps.append(time.perf_counter())
            if len(stamps) > warmup + steps:
                holder[0].stop()

    trainer = Trainer(cfg, callbacks=[watch], store=False, handle_sigint=False,
                      stepper=stepper() if stepper is not None else None)
    holder.append(trainer)
    trainer.run()
    if len(stamps) < 2:  # pragma: no cover - a run with no step
        raise RuntimeError(f"the probe of {config.display_name} made no optimizer step")
    diffs = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    timed = diffs[warmup:] or diffs
    step_s = statistics.median(timed)
    # one evaluation pass over every split (what the trainer does at each epoch end)
    t0 = time.perf_counter()
    bundle, model = trainer.bundle, trainer.model
    with torch.no_grad():
        for ds in (bundle.train, bundle.val, bundle.test):
            if len(ds):
                evaluate(model, ds.x, ds.y, batch_size=cfg.train.eval_batch_size, device=trainer.device)
    eval_s = time.perf_counter() - t0
    spe = int(info.get("spe") or trainer.steps_per_epoch)
    out = TrainingProbe(step_seconds=step_s, eval_seconds=eval_s, steps_per_epoch=spe,
                        setup_seconds=info.get("t_run", t_start) - t_start,
                        probe_seconds=time.perf_counter() - t_start, steps=len(timed))
    if cache:
        with _LOCK:
            _CACHE[key] = out
    return out


def estimate_training(configs: RunConfig | Sequence[RunConfig], *, steps: int = 4) -> Estimate:
    """Predicted wall time of training ``configs`` one after the other (each probed once, see module doc)."""
    configs = [configs] if isinstance(configs, RunConfig) else list(configs)
    if not configs:
        raise ValueError("configs is empty: nothing to estimate")
    t0 = time.perf_counter()
    total, parts = 0.0, []
    for c in configs:
        p = probe_training(c, steps=steps)
        total += p.predict(c.train.epochs) + p.setup_seconds
        parts.append({"name": c.display_name, "epochs": c.train.epochs, "step_seconds": p.step_seconds,
                      "eval_seconds": p.eval_seconds, "steps_per_epoch": p.steps_per_epoch})
    detail = "; ".join(f"{q['name']}: {q['epochs']} epochs × ({q['steps_per_epoch']} steps × "
                       f"{q['step_seconds'] * 1e3:.1f} ms + eval {q['eval_seconds'] * 1e3:.0f} ms)" for q in parts)
    return Estimate(total, time.perf_counter() - t0, "timed probe: " + detail, {"runs": parts})


def estimate_crafting(run_config: RunConfig, poison_config, *, steps: int = 3) -> Estimate:
    """Predicted wall time of :func:`workbench.poisoning.craft_poison` from two timed probes.

    SAM steps before ``poison_config.start_epoch`` are timed on the plain configuration,
    crafted steps (SAM step + ``iterations`` inner iterations of the poison) with a crafter
    that starts at once. Drift measurements at ``drift_epochs`` are not included.
    """
    from ..poisoning.sharpness_aware import SharpnessAwarePoisoner

    t0 = time.perf_counter()
    plain = probe_training(run_config, steps=steps)
    pc = poison_config.with_overrides({"start_epoch": 1}) if hasattr(poison_config, "with_overrides") else \
        type(poison_config).from_dict({**poison_config.to_dict(), "start_epoch": 1})
    craft = probe_training(run_config, steps=steps, stepper=lambda: SharpnessAwarePoisoner(pc),
                           stepper_key="craft:" + json.dumps(pc.to_dict(), sort_keys=True, default=str))
    epochs = run_config.train.epochs
    before = min(max(int(poison_config.start_epoch) - 1, 0), epochs)
    total = plain.predict(before) + craft.predict(epochs - before) + plain.setup_seconds
    return Estimate(total, time.perf_counter() - t0,
                    f"timed probe: {before} SAM epoch(s) × {plain.steps_per_epoch} steps × "
                    f"{plain.step_seconds * 1e3:.1f} ms + {epochs - before} crafting epoch(s) × "
                    f"{craft.steps_per_epoch} steps × {craft.step_seconds * 1e3:.1f} ms (+ evaluation)",
                    {"sam_step_seconds": plain.step_seconds, "craft_step_seconds": craft.step_seconds})


def estimate_study(study) -> Estimate:
    """Predicted wall time of a grid or random :class:`~workbench.sweeps.StudyConfig` (every trial probed).

    Trials differing only in the seed share one probe; ``workers > 1`` divides the sum
    by the number of workers (an optimistic bound on a machine with as many cores).
    """
    t0 = time.perf_counter()
    trials = study.trials()
    if not trials:
        raise ValueError(f"study {study.name!r} has no trials")
    total = 0.0
    for t in trials:
        p = probe_training(t.config.with_overrides({"train.seed": 0}))
        total += p.predict(t.config.train.epochs) + p.setup_seconds
    workers = max(int(getattr(study, "workers", 1) or 1), 1)
    return Estimate(total / workers, time.perf_counter() - t0,
                    f"timed probe of {len({_key(t.config.with_overrides({'train.seed': 0})) for t in trials})} "
                    f"configuration(s), {len(trials)} trial(s), {workers} worker(s)", {"trials": len(trials)})


def probe_analysis(what: str, run: str | Path, *, counts: tuple[int, int] = (64, 256), cache: bool = True,
                   **kwargs) -> tuple[float, float]:
    """Time ``what`` on ``counts`` examples (unsaved); returns ``(a, b)`` of ``t ≈ a + b·n`` in seconds.

    ``kwargs`` go to :func:`workbench.analysis.tasks.analyze` (``params``, ``split``, ``other``, ...).

    Raises:
        ValueError: counts not increasing positive integers, or a bad analysis setting.
    """
    from ..analysis.tasks import analyze

    n1, n2 = (int(c) for c in counts)
    if not 0 < n1 < n2:
        raise ValueError(f"counts={counts} must be two increasing positive example counts")
    key = "analysis:" + json.dumps([what, str(run), n1, n2, kwargs], sort_keys=True, default=str)
    if cache:
        with _LOCK:
            if key in _CACHE:
                return _CACHE[key]
    kwargs = {k: v for k, v in kwargs.items() if k not in ("count", "save", "force", "callback", "stop")}
    times = []
    for n in (n1, n2):
        t0 = time.perf_counter()
        analyze(what, run, count=n, save=False, force=True, **kwargs)
        times.append(time.perf_counter() - t0)
    b = max((times[1] - times[0]) / (n2 - n1), 0.0)
    a = max(times[0] - b * n1, 0.0)
    if cache:
        with _LOCK:
            _CACHE[key] = (a, b)
    return a, b


def estimate_analysis(what: str, run: str | Path, count: int, **kwargs) -> Estimate:
    """Predicted wall time of ``analyze(what, run, count=count, ...)`` from two timed small probes."""
    t0 = time.perf_counter()
    a, b = probe_analysis(what, run, **kwargs)
    return Estimate(a + b * int(count), time.perf_counter() - t0,
                    f"timed probe: {a:.2f} s + {b * 1e3:.2f} ms × {int(count)} examples", {"a": a, "b": b})
