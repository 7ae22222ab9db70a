"""Post-ReLU features: the feature sparsity coefficient, active fraction, dead units, feature rank.

Definitions ([Andriushchenko 2024, Ch. 6]):

* **Feature sparsity coefficient (FSC)** — [Andriushchenko 2024, §6.4]: "the average fraction
  of *distinct* (i.e., counting a group of highly correlated activations as
  one), *non-zero* activations at some layer over the training set ... 100%
  means a completely dense feature vector and 0% means a feature vector with
  all zeros. We count a pair of activations i and j as highly correlated if
  their Pearson's correlation coefficient is at least 0.95" (motivation: §6.4,
  why correlated units are merged: §6.9). Procedure, following the reference
  code (``compute_feature_sparsity`` of tml-epfl/sgd-sparse-features, see
  ``docs/references.md``) on the activation matrix ``Φ ∈ R^{N×k}`` of
  one layer (N examples, k units):

  1. drop **dead units**: columns never active (``Φ_ij > 0`` for no i);
  2. Pearson correlation ``C`` of the remaining columns (a column with zero
     variance has undefined correlation and is never merged);
  3. **greedy merge**: walk the remaining columns in order; delete column i
     when some *not yet deleted* column j ≠ i has ``C_ij ≥ τ`` (the thesis' "at
     least"); otherwise keep it. A group of mutually correlated columns thus
     keeps exactly its last member; ``n_merged`` counts the deleted columns;
  4. ``FSC = #{(i, j): j kept, Φ_ij > 0} / (N · k)`` — the denominator counts
     all k analysed columns, dead and merged ones included.

  The reference code compares ``|C_ij| > τ`` (absolute value, strict); pass
  ``absolute=True`` for the absolute value (equality at exactly τ is immaterial
  in practice). The toy-network code of the thesis uses τ = 0.99 / 0.999; τ is
  a parameter (default 0.95, the thesis value) and is stored with the result.
* **Active fraction** — the fraction of (example, unit) entries that are > 0.
  The reference code calls this number "sparsity" (lower = sparser); it is
  named ``active_fraction`` here to avoid the inversion.
* **Feature rank at 99 %** (tml-epfl/sam-low-rank-features,
  ``compute_feature_sing_vals``): the number of singular values of the
  centred ``(examples × units)`` matrix needed to reach 99 % of ``Σ σ²``. The
  matrix is centred **over examples (axis 0, per unit)**, as PCA requires; the
  reference code subtracts the per-*example* mean (axis 1), which is a
  different quantity.

Layers: every call of every ``nn.ReLU`` module is one layer, named by the
module's name; a module called ``k > 1`` times per forward pass (torchvision's
``BasicBlock.relu`` in ResNet-18) gives layers ``name#1 … name#k`` in call
order. ``F.relu`` calls are invisible to hooks (the model zoo uses modules
throughout). Convolutional activations are flattened per example over
``C × H × W`` (each channel-position is one unit), as in the thesis code
(tml-epfl/sgd-sparse-features), and at most ``max_units`` units (default 1,000, as in the
reference code) are drawn per layer, seeded, without replacement.

Activations are collected batchwise in eval mode (BatchNorm running
statistics; the reference code evaluates after ``model.eval()``) on an
:class:`ExampleSet`, normally the un-augmented training split. The model is
left exactly as it was. No UI imports.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..training.trainer import Probe
from .common import ExampleSet, ResultRecord, eval_mode, model_device, preserved_state

__all__ = ["ActivationLayer", "Activations", "relu_layers", "collect_activations", "sparsity_of_activation_matrix",
           "feature_rank", "feature_sparsity", "FeatureSparsityResult", "FeatureSparsityProbe"]


@dataclass(frozen=True)
class ActivationLayer:
    """One ReLU call site.

    Attributes:
        name: layer name (module name, ``#k`` appended when the module is called several times).
        module: the ``nn.ReLU`` module's name; call: 1-based call number within a forward pass.
        shape: per-example activation shape; n_units: its number of entries.
        position: index among all ReLU layers of the model (seeds the unit subsample).
    """

    name: str
    module: str
    call: int
    shape: tuple[int, ...]
    n_units: int
    position: int


@dataclass
class Activations:
    """Post-ReLU activations of some layers on an example set.

    Attributes:
        layers: the layers, in call order.
        values: ``name -> [N, u]`` (CPU, model dtype), ``u = min(n_units, max_units)``.
        units: ``name -> int64 [u]`` indices of the sampled units within the flattened activation.
        index: dataset indices ``[N]``; labels: ``[N]``.
    """

    layers: list[ActivationLayer]
    values: dict[str, Tensor]
    units: dict[str, Tensor]
    index: Tensor
    labels: Tensor


def _relu_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ReLU)]


def relu_layers(model: nn.Module, x: Tensor) -> list[ActivationLayer]:
    """Every ``nn.ReLU`` call site of ``model``, in call order, found by one forward pass on ``x``.

    Args:
        model: the network.
        x: an input batch (one example is enough).

    Raises:
        ValueError: no ``nn.ReLU`` module is called.
    """
    mods = _relu_modules(model)
    calls: list[tuple[str, tuple[int, ...]]] = []

    def make(name):
        def hook(mod, inp, out):
            calls.append((name, tuple(out.shape[1:])))
        return hook

    handles = [m.register_forward_hook(make(n)) for n, m in mods]
    try:
        with preserved_state(model), eval_mode(model), torch.no_grad():
            model(x.to(model_device(model)))
    finally:
        for h in handles:
            h.remove()
    if not calls:
        raise ValueError(f"{type(model).__name__} calls no nn.ReLU module (functional F.relu calls are invisible "
                         "to forward hooks); feature analyses need nn.ReLU modules")
    totals: dict[str, int] = {}
    for n, _ in calls:
        totals[n] = totals.get(n, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for pos, (n, shape) in enumerate(calls):
        k = seen[n] = seen.get(n, 0) + 1
        name = f"{n}#{k}" if totals[n] > 1 else n
        out.append(ActivationLayer(name=name, module=n, call=k, shape=shape, n_units=int(np.prod(shape)),
                                   position=pos))
    return out


def _pick_layers(all_layers: list[ActivationLayer], layers) -> list[ActivationLayer]:
    if layers is None:
        return all_layers
    if isinstance(layers, str):
        layers = [layers]
    by_name = {L.name: L for L in all_layers}
    unknown = [n for n in layers if n not in by_name]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; the ReLU layers are {list(by_name)}")
    wanted = set(layers)
    return [L for L in all_layers if L.name in wanted]


def collect_activations(model: nn.Module, examples: ExampleSet, *, layers: None | str | Sequence[str] = None,
                        max_units: int | None = 1000, seed: int = 0, batch_size: int = 512) -> Activations:
    """Post-ReLU activations, flattened per example, of the chosen ReLU layers (eval mode, batchwise).

    Args:
        model: the network.
        examples: the example set (normally the un-augmented training split).
        layers: layer names (see :func:`relu_layers`); ``None``: all ReLU layers.
        max_units: at most this many units per layer, drawn without replacement with
            ``numpy.random.default_rng([seed, position])``; ``None``: all units.
        seed: seed of the unit subsample.
        batch_size: examples per forward pass.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size!r} is invalid: must be positive")
    if max_units is not None and max_units <= 0:
        raise ValueError(f"max_units={max_units!r} is invalid: must be positive or None")
    device = model_device(model)
    chosen = _pick_layers(relu_layers(model, examples.x[:1]), layers)
    keys = {(L.module, L.call): L for L in chosen}
    units: dict[str, Tensor] = {}
    for L in chosen:
        if max_units is None or L.n_units <= max_units:
            units[L.name] = torch.arange(L.n_units)
        else:
            rng = np.random.default_rng([int(seed), L.position])
            units[L.name] = torch.as_tensor(np.sort(rng.choice(L.n_units, size=max_units, replace=False)))
    idx_dev = {k: units[L.name].to(device) for k, L in keys.items()}
    parts: dict[str, list[Tensor]] = {L.name: [] for L in chosen}
    counters: dict[str, int] = {}

    def make(name):
        def hook(mod, inp, out):
            k = counters[name] = counters.get(name, 0) + 1
            L = keys.get((name, k))
            if L is not None:  # index_select copies: safe with in-place ReLUs and later in-place ops
                parts[L.name].append(out.detach().flatten(1).index_select(1, idx_dev[(name, k)]).cpu())
        return hook

    wanted_modules = {L.module for L in chosen}
    handles = [m.register_forward_hook(make(n)) for n, m in _relu_modules(model) if n in wanted_modules]
    try:
        with preserved_state(model), eval_mode(model), torch.no_grad():
            for xb, _ in examples.batches(batch_size):
                counters.clear()
                model(xb.to(device))
    finally:
        for h in handles:
            h.remove()
    values = {name: torch.cat(p, dim=0) for name, p in parts.items()}
    return Activations(layers=chosen, values=values, units=units, index=examples.index.cpu(),
                       labels=examples.y.cpu())


# -------------------------------------------------------------- metrics
def feature_rank(A, energy: float = 0.99, *, center: bool = True) -> int:
    """Number of singular values of ``A`` (centred over rows/examples, axis 0) reaching ``energy`` of ``Σσ²``.

    Returns 0 for a matrix that is zero after centring.
    """
    if not 0 < energy <= 1:
        raise ValueError(f"energy={energy!r} is invalid: must lie in (0, 1]")
    M = np.asarray(A.detach().cpu() if isinstance(A, Tensor) else A, dtype=np.float64)
    if M.ndim != 2:
        raise ValueError(f"expected a matrix [examples, units], got shape {M.shape}")
    if M.size == 0:
        return 0
    if center:
        M = M - M.mean(axis=0, keepdims=True)
    # σ² are the eigenvalues of the smaller Gram matrix (several times faster than an SVD; the
    # energy fractions only need σ² to absolute precision ~1e-16 · Σσ²).
    gram = M.T @ M if M.shape[1] <= M.shape[0] else M @ M.T
    s2 = torch.linalg.eigvalsh(torch.from_numpy(gram)).numpy()[::-1].clip(min=0.0)
    total = s2.sum()
    if total <= 0:
        return 0
    cum = np.cumsum(s2) / total
    return int(min(np.searchsorted(cum, energy - 1e-12) + 1, len(s2)))


def _pearson_columns(A: np.ndarray) -> np.ndarray:
    """Pearson correlation of the columns of ``A``; NaN rows/columns for zero-variance columns."""
    Z = A - A.mean(axis=0, keepdims=True)
    sd = np.sqrt((Z ** 2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        Z = Z / sd
        C = Z.T @ Z
    C[:, sd == 0] = np.nan
    C[sd == 0, :] = np.nan
    return C


def sparsity_of_activation_matrix(A, tau: float = 0.95, *, absolute: bool = False) -> dict:
    """Feature sparsity statistics of one layer's activation matrix ``A [N examples, k units]``.

    See the module docstring for the definitions ([Andriushchenko 2024, §6.4];
    the procedure of the reference code tml-epfl/sgd-sparse-features). ``A`` is assumed non-negative (post-ReLU);
    "active"/"non-zero" means ``> 0``.

    Returns:
        dict with ``n_examples``, ``n_units`` (k), ``dead_units``, ``n_merged``
        (columns deleted as highly correlated), ``n_distinct`` (columns kept),
        ``active_fraction``, ``feature_sparsity_coefficient``, ``feature_rank_99``, ``tau``.
    """
    if not -1 <= tau <= 1:
        raise ValueError(f"tau={tau!r} is invalid: a correlation threshold must lie in [-1, 1]")
    M = np.asarray(A.detach().cpu() if isinstance(A, Tensor) else A, dtype=np.float64)
    if M.ndim != 2:
        raise ValueError(f"expected a matrix [examples, units], got shape {M.shape}")
    n, k = M.shape
    if n == 0 or k == 0:
        raise ValueError(f"empty activation matrix of shape {M.shape}")
    active = M > 0
    alive = np.flatnonzero(active.any(axis=0))
    C = _pearson_columns(M[:, alive])
    if absolute:
        C = np.abs(C)
    with np.errstate(invalid="ignore"):
        high = C >= tau  # NaN (undefined correlation) compares False
    np.fill_diagonal(high, False)
    remaining = np.ones(len(alive), dtype=bool)
    for i in range(len(alive)):
        if (high[i] & remaining).any():
            remaining[i] = False
    kept = alive[remaining]
    return {
        "n_examples": int(n),
        "n_units": int(k),
        "dead_units": int(k - len(alive)),
        "n_merged": int(len(alive) - len(kept)),
        "n_distinct": int(len(kept)),
        "active_fraction": float(active.sum() / (n * k)),
        "feature_sparsity_coefficient": float(active[:, kept].sum() / (n * k)),
        "feature_rank_99": feature_rank(M, 0.99),
        "tau": float(tau),
    }


@dataclass(frozen=True, eq=False)
class FeatureSparsityResult(ResultRecord):
    """Per-layer feature statistics (arrays aligned with ``layers``).

    Attributes:
        layers: layer names (call order).
        feature_sparsity_coefficient: FSC in [0, 1] ([Andriushchenko 2024, §6.4]).
        active_fraction: fraction of (example, unit) entries > 0 (the reference code's "sparsity").
        dead_units: analysed units never active on the set.
        n_units: analysed units (after subsampling); total_units: units of the layer.
        n_merged: units deleted as correlated (>= tau) with a remaining one; n_distinct: units kept.
        feature_rank_99: singular values of the example-centred matrix reaching 99 % of Σσ².
        tau: correlation threshold; absolute: whether |corr| was compared.
        count: examples; example_seed: seed of the example draw; split: their split.
        seed: seed of the unit subsample; max_units: cap on units per layer.
        seconds: computation time.
    """

    layers: list
    feature_sparsity_coefficient: np.ndarray
    active_fraction: np.ndarray
    dead_units: np.ndarray
    n_units: np.ndarray
    total_units: np.ndarray
    n_merged: np.ndarray
    n_distinct: np.ndarray
    feature_rank_99: np.ndarray
    tau: float
    count: int
    seed: int
    max_units: int | None = 1000
    absolute: bool = False
    example_seed: int | None = None
    split: str = "train"
    seconds: float = 0.0

    def layer(self, name: str) -> dict:
        """The statistics of one layer as a dict."""
        try:
            i = list(self.layers).index(name)
        except ValueError:
            raise KeyError(f"unknown layer {name!r}; layers are {list(self.layers)}") from None
        return {"layer": name, **{k: _item(getattr(self, k)[i]) for k in _PER_LAYER}}

    def rows(self) -> list[dict]:
        """One dict per layer (e.g. for ``pandas.DataFrame(result.rows())``)."""
        return [self.layer(n) for n in self.layers]


_PER_LAYER = ("feature_sparsity_coefficient", "active_fraction", "dead_units", "n_units", "total_units",
              "n_merged", "n_distinct", "feature_rank_99")


def _item(v):
    return v.item() if hasattr(v, "item") else v


def feature_sparsity(model: nn.Module, examples: ExampleSet, *, layers: None | str | Sequence[str] = None,
                     tau: float = 0.95, max_units: int | None = 1000, seed: int = 0, batch_size: int = 512,
                     absolute: bool = False) -> FeatureSparsityResult:
    """Feature sparsity coefficient, active fraction, dead units and feature rank of every ReLU layer.

    Args:
        model: the network (left unchanged; evaluated in eval mode).
        examples: the example set (normally the un-augmented training split, as in the thesis).
        layers: layer names (:func:`relu_layers`); ``None``: all ReLU layers.
        tau: correlation threshold for merging units (thesis: 0.95).
        max_units: units drawn per layer (reference code: 1,000); ``None``: all.
        seed: seed of the unit subsample.
        batch_size: examples per forward pass.
        absolute: merge on ``|corr| >= tau`` (reference code) instead of ``corr >= tau`` (thesis wording).

    Returns:
        :class:`FeatureSparsityResult`.
    """
    t0 = time.perf_counter()
    acts = collect_activations(model, examples, layers=layers, max_units=max_units, seed=seed,
                               batch_size=batch_size)
    stats = [sparsity_of_activation_matrix(acts.values[L.name], tau, absolute=absolute) for L in acts.layers]
    col = lambda k, dt: np.array([s[k] for s in stats], dtype=dt)  # noqa: E731
    return FeatureSparsityResult(
        layers=[L.name for L in acts.layers],
        feature_sparsity_coefficient=col("feature_sparsity_coefficient", np.float64),
        active_fraction=col("active_fraction", np.float64),
        dead_units=col("dead_units", np.int64), n_units=col("n_units", np.int64),
        total_units=np.array([L.n_units for L in acts.layers], dtype=np.int64),
        n_merged=col("n_merged", np.int64), n_distinct=col("n_distinct", np.int64),
        feature_rank_99=col("feature_rank_99", np.int64), tau=float(tau), count=int(examples.count),
        seed=int(seed), max_units=max_units, absolute=bool(absolute), example_seed=examples.seed,
        split=examples.split, seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------- probe
class FeatureSparsityProbe(Probe):
    """Trainer probe: feature sparsity of every ReLU layer every ``every`` epochs (thesis Figs. 6.5–6.7).

    In :meth:`setup` it draws a fixed :class:`ExampleSet` of ``count`` examples
    (seeded) from the trainer's training split (un-augmented: augmentation is
    applied by the loader only). :meth:`measure` runs :func:`feature_sparsity` in
    eval mode and restores the model exactly; it uses its own random generators,
    so training proceeds bitwise as without the probe.

    Values written per epoch: ``layers``, ``fsc``, ``active_fraction``,
    ``dead_units``, ``rank_99``, ``n_units``, ``n_merged``, ``tau``, ``count``.
    """

    name = "feature_sparsity"

    def __init__(self, every: int = 1, *, count: int | None = 1024, seed: int = 0,
                 layers: None | str | Sequence[str] = None, tau: float = 0.95, max_units: int | None = 1000,
                 batch_size: int = 512, absolute: bool = False):
        super().__init__(every)
        self.count, self.seed, self.layers, self.tau = count, seed, layers, tau
        self.max_units, self.batch_size, self.absolute = max_units, batch_size, absolute
        self.examples: ExampleSet | None = None

    def setup(self, trainer) -> None:
        """Draw the probe's fixed, seeded training examples."""
        self.examples = ExampleSet.from_dataset(trainer.splits["train"], count=self.count, seed=self.seed,
                                                split="train")

    def measure(self, model: nn.Module, trainer) -> dict:
        """Feature sparsity of ``model``'s ReLU layers on the probe's examples (model state preserved)."""
        if self.examples is None:
            self.setup(trainer)
        with preserved_state(model):
            r = feature_sparsity(model, self.examples, layers=self.layers, tau=self.tau, max_units=self.max_units,
                                 seed=self.seed, batch_size=self.batch_size, absolute=self.absolute)
        return {"layers": list(r.layers), "fsc": r.feature_sparsity_coefficient.tolist(),
                "active_fraction": r.active_fraction.tolist(), "dead_units": r.dead_units.tolist(),
                "rank_99": r.feature_rank_99.tolist(), "n_units": r.n_units.tolist(),
                "n_merged": r.n_merged.tolist(), "tau": float(self.tau), "count": int(self.examples.count)}
