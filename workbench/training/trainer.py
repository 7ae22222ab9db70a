"""The training engine: SGD / Adam / SAM / ASAM / m-SAM on any registered model and dataset.

Over 700 lines, kept whole: the step loop, checkpointing, resume, defenses and the plugin hooks all act on one
Trainer's state; the plugin base classes (Probe, Stepper) sit here so their contract is read next to it.

:class:`Trainer` runs one :class:`~workbench.config.RunConfig`, writes the run
folder as it goes (``metrics.jsonl`` flushed per record, atomic checkpoints,
``status.json``) and emits events (:mod:`workbench.training.events`) to
callbacks: the CLI's tqdm bar and the notebook dashboard both listen to the
same events.

Stop and pause are thread-safe (``threading.Event``) and honoured within one
optimizer step. A non-finite loss ends the run with status ``diverged``; an
exception with ``failed`` (and the error text); a stop with ``stopped`` and a
checkpoint from which :meth:`Trainer.from_run` resumes exactly where it
stopped (same batches, same random streams). When the trainer runs on the
main thread, Ctrl-C / "interrupt kernel" requests a graceful stop at the end
of the current step; a second Ctrl-C aborts at once.

One process trains a run folder at a time: the trainer holds the folder's
advisory lock (:mod:`workbench.runs.lock`, ``flock`` on ``<run>/.lock``, the
holder's PID written in it) for the whole training; the operating system
releases it when the process ends, crashed or killed included. A resume that
fails before training starts (a finished run without more epochs, a missing or
corrupt checkpoint, a locked folder, a set-up error) leaves the run folder's
files exactly as they were: nothing is written before the lock is held and the
set-up has succeeded.

No UI imports.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F

from ..config import RunConfig
from ..data import BatchLoader, DataBundle, load_data
from ..models import build_model, count_parameters
from ..optim import SAM, build_optimizer, build_scheduler, sam_step
from ..runs import Run, RunLock, load_checkpoint
from .device import resolve_device, seed_everything, set_deterministic
from .evaluate import evaluate
from .events import CallbackList, EpochEnd, ProbeResult, RunEnded, RunStarted, StatusChanged, StepEnd

if TYPE_CHECKING:
    from ..data import IndexedTensorDataset

__all__ = ["Trainer", "TrainResult", "Probe", "load_data_cached", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 1
_DATA_CACHE: "OrderedDict[str, DataBundle]" = OrderedDict()
_DATA_CACHE_LOCK = threading.Lock()


def load_data_cached(cfg, maxsize: int = 4) -> DataBundle:
    """:func:`workbench.data.load_data` with a small in-process LRU cache.

    Several runs on the same data (SGD vs SAM, seeds) then share one copy.
    The bundle's tensors must be treated as read-only.
    """
    key = json.dumps(cfg.to_dict(), sort_keys=True)
    with _DATA_CACHE_LOCK:
        if key in _DATA_CACHE:
            _DATA_CACHE.move_to_end(key)
            return _DATA_CACHE[key]
    bundle = load_data(cfg)
    with _DATA_CACHE_LOCK:
        _DATA_CACHE[key] = bundle
        while len(_DATA_CACHE) > maxsize:
            _DATA_CACHE.popitem(last=False)
    return bundle


def _file_stamp(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Probe:
    """A measurement taken on the model at the end of every ``every``-th epoch.

    Subclasses set ``name`` and implement :meth:`measure`, which must leave the
    model exactly as it found it (use :func:`workbench.analysis.preserved_state`)
    and return JSON-able values. The trainer writes them to ``metrics.jsonl`` as
    ``{"kind": "probe", "name": ..., "epoch": ..., "step": ..., **values}`` and
    emits a :class:`~workbench.training.events.ProbeResult`.

    Attributes:
        name: record name.
        every: run after epochs ``every, 2*every, ...`` (and after the last one).
    """

    name = "probe"

    def __init__(self, every: int = 1):
        if every <= 0:
            raise ValueError(f"every={every!r} is invalid: must be a positive number of epochs")
        self.every = every

    def setup(self, trainer: "Trainer") -> None:
        """Called once before training (the model, data bundle and device are ready)."""

    def measure(self, model: torch.nn.Module, trainer: "Trainer") -> dict:
        """Measure ``model`` at an epoch end (every ``every`` epochs); the values are logged as a ``probe`` record."""
        raise NotImplementedError


class Stepper:
    """Replaces the trainer's optimizer step, e.g. to craft poisons around SAM's step.

    The default reproduces the plain trainer: :func:`~workbench.optim.sam_step`.
    Subclasses may keep state that must survive a resume (``state_dict`` /
    ``load_state_dict``: tensors and plain containers, saved in the checkpoint)
    and report values at epoch ends (``on_epoch_end`` → a ``probe`` record).
    """

    name = "stepper"

    def setup(self, trainer: "Trainer") -> None:
        """Called once before training, after the model, optimizer and data are ready."""

    def step(self, trainer: "Trainer", x, y, index, epoch: int):
        """One optimizer step on the batch ``(x, y)`` with dataset indices ``index``; returns a SAMStepResult."""
        cfg = trainer.config
        return sam_step(trainer.model, trainer.loss_fn, x, y, trainer.optimizer, m=cfg.optim.m,
                        bn=cfg.optim.bn_policy, max_grad_norm=cfg.train.max_grad_norm)

    def on_epoch_end(self, trainer: "Trainer", epoch: int) -> dict | None:
        return None

    def on_end(self, trainer: "Trainer", status: str) -> None:
        """Called once when training ends (any status), e.g. to save artifacts."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.run`.

    Attributes:
        status: finished, stopped, diverged or failed.
        run_path: the run folder (None when ``store=False``).
        epochs_done: completed epochs; steps: optimizer steps done.
        final_metrics: the last epoch record (losses in nats, accuracies in [0, 1]).
        history: all epoch records of this attempt.
        error: error text for failed/diverged runs.
        model: the trained model (on its training device).
    """

    status: str
    run_path: Path | None
    epochs_done: int
    steps: int
    final_metrics: dict
    history: list[dict] = field(default_factory=list)
    error: str | None = None
    model: torch.nn.Module | None = None


class Trainer:
    """Train one configuration.

    Args:
        config: the run configuration (validated).
        callbacks: callables receiving events (see :mod:`~workbench.training.events`).
        store: write a run folder under ``config.root`` (default). ``False``
            trains in memory only (tests, benchmarks).
        data: a pre-loaded :class:`~workbench.data.DataBundle` for ``config.data``
            (default: loaded and cached per process).
        handle_sigint: on the main thread, turn the first Ctrl-C into a graceful stop.
        probes: :class:`Probe` objects measuring the model at epoch ends
            (top Hessian eigenvalue, feature sparsity, ...).
        stepper: a :class:`Stepper` replacing the optimizer step (poison crafting).
        defense: a train-time data-selection defense (:class:`workbench.defenses.EPIC`,
            ``DropHighestLoss``, ...): at the start of every epoch the trainer calls
            ``defense.maybe_select(model, train_split, epoch)``; when it returns kept dataset
            indices, training continues on those examples only (dropped examples are never
            fed to the model again). Each round is a ``{"kind": "defense", ...}`` record in
            ``metrics.jsonl`` and the dropped examples are written to
            ``artifacts/<defense.name>_dropped.csv``; the defense state is checkpointed.

    Example::

        result = Trainer(RunConfig.load("configs/quickstart_sam.yaml")).run()
    """

    def __init__(self, config: RunConfig, *, callbacks: Iterable[Callable] = (), store: bool = True,
                 data: DataBundle | None = None, handle_sigint: bool = True, probes: Iterable[Probe] = (),
                 stepper: Stepper | None = None, defense=None, _run: Run | None = None,
                 _checkpoint: dict | None = None):
        if not isinstance(config, RunConfig):
            raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
        self.config = config
        self._callbacks = CallbackList(callbacks, what="training")  # the workbench's one error policy
        self.probes = list(probes)
        self.stepper = stepper if stepper is not None else Stepper()
        self._custom_stepper = stepper is not None
        self.defense = defense
        self._run_lock: RunLock | None = None
        self._store = store
        self._data = data
        self._handle_sigint = handle_sigint
        self._run = _run
        self._checkpoint = _checkpoint
        self._stop_event = threading.Event()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._lock = threading.Lock()
        self.status = "created"
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.device: torch.device | None = None
        self.bundle: DataBundle | None = None

    # ------------------------------------------------------------- controls
    def add_callback(self, fn: Callable) -> None:
        """Also send every later event to ``fn`` (see :mod:`~workbench.training.events`)."""
        self._callbacks.append(fn)

    def stop(self) -> None:
        """Ask the run to stop after the current step (thread-safe)."""
        self._stop_event.set()
        self._unpaused.set()

    def pause(self) -> None:
        """Pause before the next step (thread-safe); :meth:`resume` continues."""
        self._unpaused.clear()

    def resume(self) -> None:
        """Continue a paused run (thread-safe)."""
        self._unpaused.set()

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`stop` was called (the run ends after its current step)."""
        return self._stop_event.is_set()

    @property
    def paused(self) -> bool:
        """Whether the run is paused (:meth:`pause`) and waits for :meth:`resume`."""
        return not self._unpaused.is_set()

    @property
    def run_path(self) -> Path | None:
        """The run folder (``None`` for an in-memory run, ``store=False``); the same as :attr:`run_dir`."""
        return self._run.path if self._run is not None else None

    # ------------------------------------------------- the plugin API (public)
    # Probes, steppers, defenses and callbacks use only what follows (and the public attributes
    # ``config``, ``model``, ``optimizer``, ``device``, ``bundle``, ``step``, ``attempt``,
    # ``steps_per_epoch``), as Lightning's callbacks use only the Trainer's public state.
    @property
    def run_dir(self) -> Path | None:
        """The run folder, or ``None`` for an in-memory run (``store=False``).

        Known once :meth:`run` has set up the run (at once for :meth:`from_run`); files a plugin
        wants to keep go in :attr:`artifact_dir`.
        """
        return self.run_path

    @property
    def artifact_dir(self) -> Path | None:
        """``<run folder>/artifacts`` (created with the run), or ``None`` for an in-memory run."""
        return self._run.artifact_dir if self._run is not None else None

    @property
    def run_id(self) -> str | None:
        """The id every event of this run carries.

        The run folder's id (known at once for :meth:`from_run`); for an in-memory run ``memory-<hex>`` once
        set up (``"pending"`` while :meth:`run` sets up, ``None`` before).
        """
        if self._run is not None:
            return self._run.id
        return getattr(self, "_run_id", None)

    @property
    def splits(self) -> Mapping[str, "IndexedTensorDataset"]:
        """The run's data splits, ``{"train", "val", "test"}`` → dataset with ``x``, ``y`` and dataset ``index``.

        These are the tensors the trainer trains and evaluates on (already on the training device when
        ``data.in_memory``); the training split is the one the optimizer sees (a poisoned one when
        ``data.poison`` is set), before any defense drops examples. Read-only: do not write into them.

        Raises:
            RuntimeError: before the run is set up (use it from ``Probe.setup`` / ``Stepper.setup`` on).
        """
        splits = getattr(self, "_splits", None)
        if splits is None:
            raise RuntimeError("Trainer.splits is available once the run is set up (from Probe.setup / "
                               "Stepper.setup on)")
        return MappingProxyType(splits)

    @property
    def loss_fn(self) -> Callable:
        """The training loss ``loss_fn(logits [B, C], targets [B]) -> scalar``.

        Cross-entropy with the configured ``train.label_smoothing``, mean over the batch, in nats.
        """
        return self._loss_fn()

    def log(self, record: Mapping) -> None:
        """Append one record to the run's ``metrics.jsonl`` (flushed; nothing happens for an in-memory run).

        Args:
            record: a JSON-able mapping with a ``"kind"`` string (e.g. ``{"kind": "craft", "epoch": 1,
                "step": 10, ...}``); readers of the run group records by ``kind``.

        Raises:
            ValueError: ``record`` is not a mapping with a non-empty string ``"kind"``.
        """
        if not isinstance(record, Mapping) or not isinstance(record.get("kind"), str) or not record.get("kind"):
            raise ValueError(f"record={record!r} is invalid: a mapping with a non-empty string 'kind' is required")
        if self._run is not None:
            self._run.append(dict(record))

    def emit(self, event) -> None:
        """Send ``event`` to every callback (:mod:`workbench.training.events` or a plugin's own dataclass).

        A callback that raises is disabled with a ``RuntimeWarning``; training goes on.
        """
        self._emit(event)

    # ------------------------------------------------------------ resuming
    @classmethod
    def from_run(cls, path: str | Path, *, epochs: int | None = None, checkpoint: str = "last.pt",
                 callbacks: Iterable[Callable] = (), data: DataBundle | None = None,
                 handle_sigint: bool = True, probes: Iterable[Probe] = (),
                 stepper: "Stepper | None" = None, defense=None) -> "Trainer":
        """Continue a stopped (or killed) run from its checkpoint, in the same folder.

        Args:
            path: the run folder.
            epochs: new total number of epochs (default: the configured one).
            checkpoint: checkpoint file name in ``checkpoints/``.
            callbacks: callables receiving events (see :mod:`~workbench.training.events`).
            data: a pre-loaded :class:`~workbench.data.DataBundle` for the run's data config
                (default: loaded and cached per process).
            handle_sigint: on the main thread, turn the first Ctrl-C into a graceful stop.
            probes: probes to attach again (they are not stored in the run).
            stepper: the run's :class:`Stepper` when it used one (its state is
                restored from the checkpoint), e.g. a poison crafter.
            defense: the run's defense (same kind and settings; its state, e.g. the
                examples dropped so far, is restored from the checkpoint).

        Nothing is written here: ``config.json`` (with the new ``epochs``), the ``resume``
        record and the status are written by :meth:`run` once it holds the folder's lock and
        the set-up succeeded, so a resume that fails leaves the folder's files unchanged.

        Raises:
            FileNotFoundError: not a run folder.
            CheckpointError: the checkpoint is missing or corrupted.
            ValueError: ``epochs`` not larger than the epochs already done for a finished run,
                or a stepper/defense missing for a run that used one.
        """
        run = Run(path)
        config = run.config()
        ck_path = run.checkpoint_dir / checkpoint
        ck = load_checkpoint(ck_path, map_location="cpu")
        write_config = False
        if epochs is not None and int(epochs) != config.train.epochs:
            config = config.with_overrides({"train.epochs": int(epochs)})
            write_config = True  # written when training starts (a failed resume changes nothing)
        cls._check_resumable(path, config, ck, stepper, defense)
        t = cls(config, callbacks=callbacks, store=True, data=data, handle_sigint=handle_sigint, probes=probes,
                stepper=stepper, defense=defense, _run=run, _checkpoint=ck)
        t._resume_from = (ck_path, _file_stamp(ck_path), write_config)
        return t

    @staticmethod
    def _check_resumable(path, config: RunConfig, ck: dict, stepper, defense) -> None:
        """Raise ``ValueError`` when checkpoint ``ck`` cannot continue ``config`` (see :meth:`from_run`)."""
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {ck.get('format')!r} is not supported (expected {CHECKPOINT_FORMAT})")
        if ck["epoch"] >= config.train.epochs and ck["batch"] == 0:
            raise ValueError(f"train.epochs={config.train.epochs} is invalid: the checkpoint already completed "
                             f"{ck['epoch']} epochs; pass a larger epochs= to continue training")
        if ck.get("stepper") and stepper is None:
            raise ValueError(f"run {str(path)!r} was trained with a custom step (e.g. poison crafting) whose state is "
                             "in the checkpoint: pass the same kind of stepper, e.g. "
                             "Trainer.from_run(path, stepper=SharpnessAwarePoisoner(cfg))")
        if ck.get("defense") and defense is None:
            raise ValueError(f"run {str(path)!r} was trained with a defense ({ck['defense'].get('name')!r}) whose "
                             "state is in the checkpoint: pass the same defense, e.g. "
                             "Trainer.from_run(path, defense=EPIC(budget=0.2, period=2, warmup=10))")

    def _take_lock(self) -> None:
        """Hold the run folder's lock; for a resume, re-read the checkpoint if it changed since :meth:`from_run`."""
        if self._run is None or self._run_lock is not None:
            return
        self._run_lock = RunLock(self._run.path).acquire()
        resume = getattr(self, "_resume_from", None)
        if resume is not None and self._checkpoint is not None:
            ck_path, stamp, _ = resume
            if _file_stamp(ck_path) != stamp:  # another process trained on between from_run and run()
                ck = load_checkpoint(ck_path, map_location="cpu")
                self._check_resumable(self._run.path, self.config, ck, self.stepper if self._custom_stepper else None,
                                      self.defense)
                self._checkpoint = ck

    def _release_lock(self) -> None:
        lock, self._run_lock = self._run_lock, None
        if lock is not None:
            lock.release()

    # -------------------------------------------------------------- events
    def _emit(self, event) -> None:
        # a callback that raises is disabled with a warning naming it (CallbackList), training goes on
        self._callbacks(event)

    def _set_status(self, status: str, **info) -> None:
        self.status = status
        if self._run is not None:
            self._run.set_status(status, **info)
        self._emit(StatusChanged(self._run_id, status, info))

    # ---------------------------------------------------------------- setup
    def _setup(self) -> None:
        cfg = self.config
        t = cfg.train
        self.device = resolve_device(t.device)
        if t.num_threads is not None:
            torch.set_num_threads(t.num_threads)
        set_deterministic(t.deterministic)
        self.bundle = self._data if self._data is not None else load_data_cached(cfg.data)
        b = self.bundle
        if len(b.train) == 0:
            raise ValueError("the training split is empty: check data.classes / data.max_train / fractions")
        seed_everything(t.seed)
        self.model = build_model(cfg.model, tuple(b.input_shape), b.num_classes).to(self.device)
        self.optimizer = build_optimizer(cfg.optim, self.model.parameters())
        self._splits = {"train": b.train, "val": b.val, "test": b.test}
        if cfg.data.in_memory:  # one device copy per split, shared by the loader and the evaluation
            self._splits = {k: ds.to(self.device) for k, ds in self._splits.items()}
        self.loader = BatchLoader(self._splits["train"], t.batch_size, shuffle=True, seed=t.seed,
                                  device=self.device, augment=b.augment, drop_last=False,
                                  in_memory=cfg.data.in_memory, num_workers=cfg.data.num_workers)
        self.clean_loader = None
        if b.clean_train is not None and cfg.data.poison_from_epoch > 1:
            clean = b.clean_train.to(self.device) if cfg.data.in_memory else b.clean_train
            self.clean_loader = BatchLoader(clean, t.batch_size, shuffle=True, seed=t.seed, device=self.device,
                                            augment=b.augment, drop_last=False, in_memory=cfg.data.in_memory,
                                            num_workers=cfg.data.num_workers)
        self.steps_per_epoch = len(self.loader)
        self._full_train = (self._splits["train"], clean if self.clean_loader is not None else None)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, t.epochs, self.steps_per_epoch)
        self.start_epoch, self.start_batch, self.step, self.attempt = 0, 0, 0, 1
        if self._checkpoint is not None:
            ck = self._checkpoint
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
            self.scheduler.load_state_dict(ck["scheduler"])
            self.start_epoch, self.start_batch, self.step = int(ck["epoch"]), int(ck["batch"]), int(ck["step"])
            self.attempt = int(ck.get("attempt", 1)) + 1
            if ck.get("stepper"):
                self._stepper_state = ck["stepper"]
            if ck.get("defense") and self.defense is not None:
                self.defense.load_state_dict(ck["defense"])
            rng = ck.get("rng", {})
            if "torch" in rng:
                torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(list(rng["cuda"]))
        if t.tensorboard and not self._store:
            raise ValueError("train.tensorboard=true needs a run folder (store=True)")
        if self._store and self._run is None:
            self._run = Run.create(self.config.root, self.config)
            self._take_lock()  # a new folder: nobody else knows it yet
        self._run_id = self._run.id if self._run is not None else f"memory-{id(self):x}"
        for probe in self.probes:
            probe.setup(self)
        self.stepper.setup(self)
        if getattr(self, "_stepper_state", None):
            self.stepper.load_state_dict(self._stepper_state)
        if self.defense is not None and self.defense.kept_indices is not None:
            self._restrict_training(self.defense.kept_indices)
        if t.tensorboard:  # last: it writes into the run folder
            from .tensorboard import TensorBoardWriter

            self._callbacks.append(TensorBoardWriter(self._run.path / "tensorboard"))

    def _restrict_training(self, kept) -> None:
        """Train on the examples whose dataset index is in ``kept`` only (a defense's selection)."""
        t, d = self.config.train, self.config.data

        def subset_loader(ds):
            pos = torch.nonzero(torch.isin(ds.index.cpu(), kept.cpu())).squeeze(1).to(ds.x.device)
            sub = type(ds)(ds.x[pos], ds.y[pos], ds.index[pos])
            return BatchLoader(sub, t.batch_size, shuffle=True, seed=t.seed, device=self.device,
                               augment=self.bundle.augment, drop_last=False, in_memory=d.in_memory,
                               num_workers=d.num_workers)

        train, clean = self._full_train
        self.loader = subset_loader(train)
        if clean is not None:
            self.clean_loader = subset_loader(clean)

    def _defense_round(self, epoch: int) -> None:
        """Ask the defense for a selection round at the start of ``epoch`` (epochs done); log and apply it."""
        t0 = time.perf_counter()
        kept = self.defense.maybe_select(self.model, self._full_train[0], epoch)
        if kept is None:
            return
        self._restrict_training(kept)
        values = dict(self.defense.rounds[-1])
        values.pop("epoch", None)
        dt = time.perf_counter() - t0
        if self._run is not None:
            self._run.append({"kind": "defense", "name": self.defense.name, "attempt": self.attempt,
                              "epoch": epoch, "step": self.step, **values})
            from ..runs.store import atomic_write_bytes

            atomic_write_bytes(self._run.artifact_dir / f"{self.defense.name}_dropped.csv",
                               self.defense.log.to_csv(index=False).encode())
        self._emit(ProbeResult(self._run_id, self.defense.name, epoch, self.step, values, dt))

    def _loss_fn(self):
        ls = self.config.train.label_smoothing
        return (lambda out, y: F.cross_entropy(out, y, label_smoothing=ls)) if ls else F.cross_entropy

    def _checkpoint_state(self, epoch: int, batch: int, metrics: dict) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch, "batch": batch, "step": self.step, "attempt": self.attempt,
            "rng": rng,
            "input_shape": list(self.bundle.input_shape), "num_classes": int(self.bundle.num_classes),
            "config": self.config.to_json(),
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None},
            "stepper": self.stepper.state_dict(),
            "defense": self.defense.state_dict() if self.defense is not None else {},
        }

    def _save_checkpoint(self, epoch: int, batch: int, metrics: dict, *, snapshot: bool = False) -> None:
        if self._run is None:
            return
        state = self._checkpoint_state(epoch, batch, metrics)
        self._run.save_checkpoint(state, "last.pt")
        if snapshot:
            self._run.save_checkpoint(state, f"epoch_{epoch:04d}.pt")

    def _evaluate(self, epoch: int) -> dict:
        bs = self.config.train.eval_batch_size
        out = {}
        for name, ds in self._splits.items():
            if len(ds) == 0:
                continue
            loss, acc = evaluate(self.model, ds.x, ds.y, batch_size=bs, device=self.device)
            out[f"{name}_loss"], out[f"{name}_acc"] = loss, acc
        return out

    def _run_probes(self, epoch: int) -> None:
        t0 = time.perf_counter()
        values = self.stepper.on_epoch_end(self, epoch)
        if values:
            rec = {"kind": "probe", "name": self.stepper.name, "attempt": self.attempt, "epoch": epoch,
                   "step": self.step, "seconds": time.perf_counter() - t0, **values}
            if self._run is not None:
                self._run.append(rec)
            self._emit(ProbeResult(self._run_id, self.stepper.name, epoch, self.step, dict(values),
                                   time.perf_counter() - t0))
        for probe in self.probes:
            if epoch % probe.every and epoch != self.config.train.epochs:
                continue
            t0 = time.perf_counter()
            values = probe.measure(self.model, self)
            dt = time.perf_counter() - t0
            rec = {"kind": "probe", "name": probe.name, "attempt": self.attempt, "epoch": epoch, "step": self.step,
                   "seconds": dt, **values}
            if self._run is not None:
                self._run.append(rec)
            self._emit(ProbeResult(self._run_id, probe.name, epoch, self.step, dict(values), dt))

    # ------------------------------------------------------------------ run
    def run(self) -> TrainResult:
        """Train to the configured number of epochs (or until stopped).

        Returns:
            :class:`TrainResult`.

        The run folder's lock is held from before the first write until the end (see the
        module docstring); it is released when this returns or raises.

        Raises:
            RunLockedError: another process (or trainer) is training the same run folder; the
                one-line message names its PID. Nothing was written.
            Exception: whatever failed (after recording status ``failed`` with
                the error in ``status.json``); ``KeyboardInterrupt`` on a second Ctrl-C.
                A resumed run whose set-up fails (before training starts) keeps its
                previous status and files.
        """
        self._run_id = "pending"
        resuming = self._run is not None
        try:
            return self._run_locked(resuming)
        finally:
            self._release_lock()

    def _run_locked(self, resuming: bool) -> TrainResult:
        if resuming:
            self._take_lock()  # RunLockedError: nothing written
        try:
            self._setup()
        except Exception as e:
            if self._run is not None and not resuming:  # a new run folder: say why it stopped
                self._run.set_status("failed", error=f"{type(e).__name__}: {e}")
            raise
        old_handler = None
        on_main = threading.current_thread() is threading.main_thread()
        if self._handle_sigint and on_main:
            presses = {"n": 0}

            def _handler(signum, frame):
                presses["n"] += 1
                if presses["n"] >= 2:
                    raise KeyboardInterrupt
                print("\nStopping after this step (a checkpoint will be written); interrupt again to abort.",
                      flush=True)
                self.stop()

            try:
                old_handler = signal.signal(signal.SIGINT, _handler)
            except ValueError:  # pragma: no cover - not in main interpreter thread
                old_handler = None
        try:
            return self._train()
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            if self._run is not None:
                self._run.close()

    def _train(self) -> TrainResult:
        cfg, t = self.config, self.config.train
        model, opt = self.model, self.optimizer
        is_sam = isinstance(opt, SAM)
        spe = self.steps_per_epoch
        total = spe * t.epochs
        history: list[dict] = []
        last_metrics: dict = {}
        t0 = time.perf_counter()
        epoch, batch = self.start_epoch, self.start_batch
        run = self._run
        if run is not None:
            info = dict(attempt=self.attempt, device=str(self.device), pid=os.getpid(), host=socket.gethostname(),
                        started=time.strftime("%Y-%m-%dT%H:%M:%S"), steps_per_epoch=spe, total_steps=total,
                        num_parameters=count_parameters(model),
                        input_shape=list(self.bundle.input_shape), num_classes=self.bundle.num_classes,
                        split_sizes={k: len(v) for k, v in self._splits.items()})
            resume = getattr(self, "_resume_from", None)
            if resume is not None and resume[2]:
                run.write_config(cfg)  # the new number of epochs, now that training starts
            if self.attempt > 1:
                run.append({"kind": "resume", "attempt": self.attempt, "step": self.step, "epoch": epoch,
                            "batch": batch})
            self._set_status("running", **info)
        else:
            self._set_status("running")
        self._emit(RunStarted(self._run_id, str(run.path) if run else None, cfg.display_name, cfg.to_dict(),
                              str(self.device), spe, total, self.step, epoch, self.attempt,
                              count_parameters(model)))
        status, error = "finished", None
        try:
            model.train()
            while epoch < t.epochs:
                if self.defense is not None and batch == 0:
                    self._defense_round(epoch)
                loader = self.loader
                if self.clean_loader is not None and epoch + 1 < cfg.data.poison_from_epoch:
                    loader = self.clean_loader
                loader.set_epoch(epoch)
                ep_t0 = time.perf_counter()
                spe = len(loader)  # smaller than steps_per_epoch once a defense dropped examples
                it = loader.iter_from(batch) if batch else iter(loader)
                for xb, yb, idx in it:
                    if not self._unpaused.is_set():
                        self._set_status("paused", step=self.step)
                        self._save_checkpoint(epoch, batch, last_metrics)
                        self._unpaused.wait()
                        if not self._stop_event.is_set():
                            self._set_status("running", step=self.step)
                    if self._stop_event.is_set():
                        status = "stopped"
                        break
                    res = self.stepper.step(self, xb, yb, idx, epoch + 1)
                    lr = opt.param_groups[0]["lr"]
                    self.scheduler.step()
                    self.step += 1
                    batch += 1
                    if self.step % t.log_every == 0 or batch == spe:
                        vals = [res.loss, res.correct, res.grad_norm]
                        if is_sam:
                            vals += [res.sam_grad_norm, res.cosine]
                        vals = torch.stack([v.detach().double().reshape(()).cpu() for v in vals]).tolist()
                        m = {"loss": vals[0], "acc": vals[1] / xb.shape[0], "lr": lr, "grad_norm": vals[2]}
                        if is_sam:
                            m["sam_grad_norm"], m["cosine"] = vals[3], vals[4]
                        rec = {"kind": "step", "attempt": self.attempt, "step": self.step,
                               "epoch": (epoch * spe + batch) / spe, **m}
                        if run is not None:
                            run.append(rec)
                        self._emit(StepEnd(self._run_id, self.step, (epoch * spe + batch) / spe, m,
                                           time.perf_counter() - t0))
                        if not math.isfinite(m["loss"]):
                            status, error = "diverged", f"non-finite loss {m['loss']} at step {self.step}"
                            break
                if status != "finished":
                    break
                # ---- end of epoch
                for _ in range(self.steps_per_epoch - spe):  # keep the LR schedule on epoch boundaries
                    self.scheduler.step()
                epoch += 1
                batch = 0
                rec = {"kind": "epoch", "attempt": self.attempt, "epoch": epoch, "step": self.step,
                       "lr": opt.param_groups[0]["lr"], "epoch_seconds": time.perf_counter() - ep_t0}
                if epoch % t.eval_every == 0 or epoch == t.epochs:
                    rec.update(self._evaluate(epoch))
                    if not math.isfinite(rec.get("train_loss", 0.0)):
                        status, error = "diverged", f"non-finite training loss after epoch {epoch}"
                last_metrics = rec
                history.append(rec)
                if run is not None:
                    run.append(rec)
                    run.sync()
                self._emit(EpochEnd(self._run_id, epoch, self.step, dict(rec), time.perf_counter() - t0))
                self._run_probes(epoch)
                if status == "diverged":
                    break
                if epoch % t.checkpoint_every == 0 or epoch == t.epochs:
                    self._save_checkpoint(epoch, 0, rec, snapshot=t.keep_checkpoints)
            if status == "stopped":
                self._save_checkpoint(epoch, batch, last_metrics)
            self.stepper.on_end(self, status)
        except Exception as e:
            status, error = "failed", f"{type(e).__name__}: {e}"
            tb = traceback.format_exc()
            try:
                self.stepper.on_end(self, "failed")
            except Exception:  # keep the original error
                pass
            if run is not None:
                run.set_status("failed", error=error, traceback=tb, step=self.step, epoch=epoch)
            self.status = "failed"
            self._emit(StatusChanged(self._run_id, "failed", {"error": error}))
            self._emit(RunEnded(self._run_id, "failed", error, last_metrics, self.step, epoch))
            raise
        except KeyboardInterrupt:
            status, error = "stopped", "interrupted"
            if run is not None:
                run.set_status("stopped",
                               error="interrupted (second Ctrl-C); last checkpoint is from the last epoch end",
                               step=self.step, epoch=epoch)
            self.status = "stopped"
            self._emit(RunEnded(self._run_id, "stopped", error, last_metrics, self.step, epoch))
            raise
        final = {"step": self.step, "epoch": epoch, "seconds": time.perf_counter() - t0}
        if error:
            final["error"] = error
        self._set_status(status, finished=time.strftime("%Y-%m-%dT%H:%M:%S"), **final)
        self._emit(RunEnded(self._run_id, status, error, last_metrics, self.step, epoch))
        return TrainResult(status=status, run_path=run.path if run else None, epochs_done=epoch, steps=self.step,
                           final_metrics=last_metrics, history=history, error=error, model=model)
