"""The shared Student-t interval against scipy's own and its edge cases."""
import math

import numpy as np
import pytest
from scipy import stats

from workbench.stats import t_interval


def test_t_interval_matches_scipy_and_drops_non_finite_values():
    x = np.array([0.971, 0.968, 0.975, 0.969, 0.972])
    m, lo, hi = t_interval(list(x) + [float("nan"), float("inf")], level=0.9)
    ref = stats.t.interval(0.9, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert m == pytest.approx(x.mean()) and (lo, hi) == pytest.approx(ref)


def test_t_interval_edge_cases():
    m, lo, hi = t_interval([0.5])
    assert m == 0.5 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in t_interval([]))
    with pytest.raises(ValueError, match="level"):
        t_interval([1.0, 2.0], level=95)
