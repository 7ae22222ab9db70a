"""Training engine: Trainer, events, evaluation, device selection, checkpoints."""
from .device import resolve_device, seed_everything, set_deterministic
from .evaluate import evaluate
from .events import EpochEnd, ProbeResult, RunEnded, RunStarted, StatusChanged, StepEnd
from .progress import TqdmProgress
from .trainer import CHECKPOINT_FORMAT, Probe, Trainer, TrainResult, load_data_cached

__all__ = ["Trainer", "TrainResult", "evaluate", "resolve_device", "seed_everything", "set_deterministic",
           "RunStarted", "StepEnd", "EpochEnd", "ProbeResult", "Probe", "StatusChanged", "RunEnded", "TqdmProgress",
           "load_data_cached", "CHECKPOINT_FORMAT"]
