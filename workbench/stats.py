"""Small statistics shared by the studies: the Student-t interval of a mean.

Core module: no plotly / ipywidgets.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

__all__ = ["t_interval"]


def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of the finite ``values`` and its two-sided Student-t interval (sample standard deviation, ddof 1).

    Used for means over seeds and, given per-seed differences, for paired comparisons.

    Args:
        values: numbers (NaN and infinities are dropped), e.g. ``[n]`` per-seed test accuracies or differences.
        level: confidence level in (0, 1).

    Returns:
        ``(mean, lo, hi)``; ``lo`` and ``hi`` are NaN with fewer than two values, all three NaN with none.

    Raises:
        ValueError: ``level`` outside (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} is invalid: a confidence level in (0, 1)")
    x = np.asarray(list(values), dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    from scipy.stats import t

    h = float(t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return m, m - h, m + h
