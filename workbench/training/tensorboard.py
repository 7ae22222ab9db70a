"""TensorBoard scalars for runs (``train.tensorboard: true``), so people keep the viewer they know.

A trainer callback writing ``<run>/tensorboard/events.out.tfevents.*`` with
``torch.utils.tensorboard.SummaryWriter``: per logged step ``train/loss``,
``train/acc``, ``train/lr``, ``train/grad_norm`` (and under SAM
``train/sam_grad_norm``, ``train/cosine``) at the optimizer step; per epoch
``epoch/train_loss``, ``epoch/val_acc``, ... at the epoch number, plus probe
values under ``probe/<name>/...``. No UI imports.
"""
from __future__ import annotations

from pathlib import Path

from .events import EpochEnd, ProbeResult, RunEnded, StepEnd

__all__ = ["TensorBoardWriter"]


class TensorBoardWriter:
    """Trainer callback writing TensorBoard scalars to ``log_dir``.

    Raises:
        ImportError: the ``tensorboard`` package is missing (says what to install).
    """

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # torch raises ImportError when tensorboard is absent
            raise ImportError("train.tensorboard=true needs the 'tensorboard' package: pip install tensorboard") from e
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=10)

    def __call__(self, ev) -> None:
        """Trainer callback: write the step, epoch and probe metrics of ``ev`` as scalars; close at the run's end."""
        w = self.writer
        if isinstance(ev, StepEnd):
            for k, v in ev.metrics.items():
                if isinstance(v, (int, float)):
                    w.add_scalar(f"train/{k}", v, ev.step)
        elif isinstance(ev, EpochEnd):
            for k, v in ev.metrics.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "step", "attempt"):
                    w.add_scalar(f"epoch/{k}", v, ev.epoch)
            w.flush()
        elif isinstance(ev, ProbeResult):
            for k, v in ev.values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    w.add_scalar(f"probe/{ev.name}/{k}", v, ev.epoch)
        elif isinstance(ev, RunEnded):
            w.flush()
            w.close()
