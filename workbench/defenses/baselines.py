"""Baseline filters of [Yang 2022, Fig. 2 / §3.3]: drop highest-loss or lowest-confidence examples.

The paper shows that effective poisons are *not* the examples with the highest
loss or the lowest confidence (Fig. 1b, Fig. 2), so filtering by either removes
many clean examples and few effective poisons. Both baselines share EPIC's
schedule (rounds every ``period`` epochs after ``warmup``, permanent drops,
selection among the kept examples) and one of two drop rules per round:

* ``budget`` (default): per class, drop the ``ceil(budget · |V_c|)`` examples with the
  highest loss / lowest confidence — the same per-class fraction semantics as
  EPIC's budget (but here it is the number dropped, EPIC drops only the isolated
  medoids among ``budget · |V_c|``);
* ``threshold``: drop every kept example with loss above / confidence below the
  threshold (Fig. 2 sweeps thresholds: confidence .25/.5, loss 1/2).

Scores are computed in eval mode, without augmentation; the model is left unchanged.
Loss: cross-entropy ``−log p_y`` (nats). Confidence: the largest softmax probability
``max_c p_c`` (the model's confidence in its own prediction).

No UI imports.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..analysis.common import eval_mode, model_device, preserved_state
from .base import SelectionDefense
from .medoids import medoid_budget

__all__ = ["DropHighestLoss", "DropLowestConfidence", "ScoreFilter", "loss_and_confidence"]


def loss_and_confidence(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Per-example cross-entropy (nats) and confidence ``max_c softmax(z)_c``, eval mode, model unchanged.

    Returns:
        ``(loss [N], confidence [N])`` float64 on the CPU.
    """
    dev = model_device(model)
    losses, confs = [], []
    with preserved_state(model), eval_mode(model), torch.no_grad():
        for s in range(0, len(y), batch_size):
            z = model(x[s:s + batch_size].to(dev)).double()
            yb = y[s:s + batch_size].to(dev)
            losses.append(F.cross_entropy(z, yb, reduction="none").cpu())
            confs.append(torch.softmax(z, dim=1).max(dim=1).values.cpu())
    if not losses:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    return torch.cat(losses), torch.cat(confs)


class ScoreFilter(SelectionDefense):
    """Drop the examples with the most suspicious score, per class (``budget``) or by ``threshold``.

    Subclasses define :meth:`_suspicion` (larger = more suspicious) and how ``threshold``
    maps onto it.

    Args:
        budget: fraction of every class dropped per round, in (0, 1) (ignored with ``threshold``).
        threshold: absolute threshold instead of ``budget`` (see the subclasses).
        period, warmup, stop_after, seed, batch_size: as in :class:`SelectionDefense`.

    Raises:
        ValueError: bad ``budget`` / ``threshold``.
    """

    def __init__(self, budget: float | None = 0.1, period: int = 2, warmup: int = 10, seed: int = 0, *,
                 threshold: float | None = None, stop_after: int | None = None, batch_size: int = 512):
        super().__init__(period=period, warmup=warmup, stop_after=stop_after, seed=seed, batch_size=batch_size)
        if threshold is None:
            if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget < 1:
                raise ValueError(f"budget={budget!r} is invalid: must be a fraction of each class in (0, 1) "
                                 "(or pass threshold=)")
            budget = float(budget)
        else:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
                raise ValueError(f"threshold={threshold!r} is invalid: must be a finite number")
            threshold, budget = float(threshold), None
        self.budget = budget
        self.threshold = threshold

    def config(self) -> dict:
        """The defense's settings as a plain dict (saved with the run's state and in its records)."""
        return {"budget": self.budget, "threshold": self.threshold, **super().config()}

    def _suspicion(self, loss: Tensor, conf: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(score, over_threshold_mask or None)``; larger score = dropped first."""
        raise NotImplementedError

    def _select(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int) -> dict:
        loss, conf = loss_and_confidence(model, x, y, batch_size=self.batch_size)
        score, over = self._suspicion(loss, conf)
        if over is not None:
            return {"drop": over, "score": score}
        yc = y.cpu()
        drop = torch.zeros(len(yc), dtype=torch.bool)
        for c in torch.unique(yc).tolist():
            pos = torch.nonzero(yc == c).squeeze(1)
            k = medoid_budget(self.budget, len(pos))
            # stable order: ties dropped by lowest position
            order = torch.sort(score[pos], descending=True, stable=True).indices[:k]
            drop[pos[order]] = True
        return {"drop": drop, "score": score}


class DropHighestLoss(ScoreFilter):
    """Drop the highest-loss examples each round ([Yang 2022, Fig. 2]; ``threshold``: loss in nats)."""

    name = "drop_highest_loss"

    def _suspicion(self, loss, conf):
        return loss, (loss > self.threshold) if self.threshold is not None else None


class DropLowestConfidence(ScoreFilter):
    """Drop the lowest-confidence examples each round ([Yang 2022, Fig. 2]; ``threshold``: confidence in [0, 1])."""

    name = "drop_lowest_confidence"

    def _suspicion(self, loss, conf):
        return -conf, (conf < self.threshold) if self.threshold is not None else None
