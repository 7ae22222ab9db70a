"""λmax (and optionally the top-k, λ1/λ5 and the trace) tracked during training by the Trainer.

No UI imports.
"""
from __future__ import annotations

from torch import nn

from ...training.trainer import Probe
from ..common import ExampleSet, preserved_state
from .eigen import lanczos
from .operator import (
    HessianOperator,
)
from .trace import eigenvalue_ratio, hutchpp_trace


# ====================================================================== training probe
class TopEigenvalueProbe(Probe):
    """Track λmax (and optionally the top-k, λ1/λ5 and the trace) of the training-loss Hessian during training.

    In :meth:`setup` a fixed, seeded :class:`ExampleSet` of ``count`` examples
    is drawn from the trainer's ``split`` (default 512 training examples, for
    speed; the same examples at every measurement). :meth:`measure` runs
    :func:`lanczos` on a :class:`HessianOperator` of the trainer's loss (label
    smoothing included) in eval mode, inside :func:`~workbench.analysis.common.preserved_state`: it uses its
    own seeded generators (never torch's global RNG), so training is not disturbed.

    Returns per measurement ``{"lambda_max", "eigenvalues", "n_matvecs",
    "converged", "count", "split"}``, plus ``"ratio_1_5"`` (λ1/λ5) when
    ``k >= 5`` and ``"trace", "trace_std_error"`` when ``trace=True``.
    """

    name = "top_eigenvalue"

    def __init__(self, every: int = 1, *, k: int = 1, count: int | None = 512, seed: int = 0, split: str = "train",
                 tol: float = 1e-3, max_iter: int | None = None, trace: bool = False, n_probes: int = 30,
                 batch_size: int | None = None):
        super().__init__(every)
        if k <= 0:
            raise ValueError(f"k={k!r} is invalid: must be positive")
        self.k, self.count, self.seed, self.split = int(k), count, int(seed), split
        self.tol, self.max_iter, self.trace, self.n_probes, self.batch_size = tol, max_iter, trace, n_probes, batch_size
        self.examples: ExampleSet | None = None

    def setup(self, trainer) -> None:
        """Draw the probe's fixed, seeded examples from the trainer's ``split``.

        Raises:
            ValueError: the trainer has no such split.
        """
        splits = trainer.splits
        if self.split not in splits:
            raise ValueError(f"split={self.split!r} is invalid: choose one of {sorted(splits)}")
        self.examples = ExampleSet.from_dataset(splits[self.split], count=self.count, seed=self.seed,
                                                split=self.split)

    def measure(self, model: nn.Module, trainer) -> dict:
        """Top-k Hessian eigenvalues (and the trace with ``trace``) at ``model``; the keys are in the class doc."""
        if self.examples is None:
            self.setup(trainer)
        loss_fn = trainer.loss_fn
        with preserved_state(model):
            with HessianOperator(model, self.examples, loss_fn, batch_size=self.batch_size) as op:
                r = lanczos(op, k=self.k, which="LA", tol=self.tol, max_iter=self.max_iter, seed=self.seed)
                vals = [float(v) for v in r.values]
                out = {"lambda_max": vals[0], "eigenvalues": vals, "n_matvecs": int(r.n_matvecs),
                       "converged": bool(r.converged), "count": int(self.examples.count), "split": self.split}
                if self.k >= 5:
                    out["ratio_1_5"] = eigenvalue_ratio(vals, 5)
                if self.trace:
                    t = hutchpp_trace(op, n_matvecs=max(3, self.n_probes), seed=self.seed)
                    out.update(trace=t.estimate, trace_std_error=t.std_error, n_matvecs=int(op.n_matvecs))
        return out
