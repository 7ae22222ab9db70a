"""Console progress for the CLI: a tqdm bar fed by trainer events (no UI imports)."""
from __future__ import annotations

from tqdm.auto import tqdm

from .events import EpochEnd, RunEnded, RunStarted, StepEnd


class TqdmProgress:
    """Callback drawing one tqdm bar over all steps, with the last loss/accuracy as postfix."""

    def __init__(self, **tqdm_kwargs):
        self._kw = dict(dynamic_ncols=True, unit="step")
        self._kw.update(tqdm_kwargs)
        self.bar = None

    def __call__(self, ev) -> None:
        """Trainer callback: open, advance and close the progress bar on the run's events."""
        if isinstance(ev, RunStarted):
            self.bar = tqdm(total=ev.total_steps, initial=ev.start_step, desc=ev.name, **self._kw)
        elif isinstance(ev, StepEnd) and self.bar is not None:
            self.bar.n = ev.step
            self.bar.set_postfix(loss=f"{ev.metrics['loss']:.4f}", acc=f"{ev.metrics['acc']:.3f}", refresh=False)
            self.bar.refresh()
        elif isinstance(ev, EpochEnd) and self.bar is not None:
            m = ev.metrics
            if "test_acc" in m:
                self.bar.write(f"epoch {ev.epoch}: train loss {m['train_loss']:.4f} acc {m['train_acc']:.4f} | "
                               f"val acc {m.get('val_acc', float('nan')):.4f} | test acc {m['test_acc']:.4f}")
        elif isinstance(ev, RunEnded) and self.bar is not None:
            self.bar.close()
            self.bar = None
