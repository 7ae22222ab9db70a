"""Evaluation of a classifier on a whole split (no UI imports)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024,
             device: torch.device | str | None = None) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy in [0, 1] of ``model`` on ``(x, y)``.

    The model is put in eval mode for the pass (BatchNorm uses running
    statistics, dropout off) and its previous mode is restored afterwards.

    Args:
        model: the classifier (its train/eval mode is restored afterwards).
        x: inputs ``[N, ...]`` (any device; moved batch-wise to ``device``).
        y: labels ``[N]``.
        batch_size: evaluation batch size.
        device: where to compute; default the model's device.

    Returns:
        ``(loss, accuracy)``; ``(nan, nan)`` for an empty split.
    """
    n = int(y.shape[0])
    if n == 0:
        return float("nan"), float("nan")
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    try:
        for i in range(0, n, batch_size):
            xb = x[i:i + batch_size].to(device, non_blocking=True)
            yb = y[i:i + batch_size].to(device, non_blocking=True)
            out = model(xb)
            loss_sum += F.cross_entropy(out, yb, reduction="sum").double()
            correct += (out.argmax(1) == yb).sum()
    finally:
        model.train(was_training)
    return float(loss_sum.item() / n), float(correct.item() / n)
