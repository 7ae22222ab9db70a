"""Chapter 2 of the thesis: fast adversarial training, gradient alignment and GradAlign.

Over 700 lines, kept whole: one module per thesis chapter, so that a figure's code, its criterion and its
registry entry read together with the chapter.

Source: [Andriushchenko 2024, Ch. 2] (PhD thesis; section, equation and figure numbers below refer to
it). Everything here is core code (torch / numpy /
pandas); figures are built by :mod:`workbench.viz.thesis_adv`.

Attacks (inputs live in ``[0, 1]^d``, threat model ``‖δ‖_∞ ≤ ε``):

* **FGSM** (Eq. 2.2): ``δ = ε · sign(∇_x ℓ(x, y; θ))``, then ``x + δ`` is
  clipped to ``[0, 1]^d``. :func:`fgsm_delta` with ``random_start=False``
  (step ``α`` defaults to ε).
* **FGSM-RS** (Eq. 2.3, Wong et al.): ``η ~ U([−ε, ε]^d)``,
  ``δ = Π_{[−ε, ε]^d}[η + α · sign(∇_x ℓ(x + η, y; θ))]`` with ``α = 1.25 ε``
  (§2.6). :func:`fgsm_delta` with ``random_start=True``.
* **PGD-k** (§2.9, §2.11.1): ``k`` signed-gradient steps of size α with
  projection; during training **no random start**, α = ε/2 for k = 2 and
  α = 2ε/k for k ≥ 3 (PGD-10: 2ε/10). Evaluation: PGD-50-10 (50 steps, 10
  random restarts, α = ε/4, §2.9) — :func:`pgd_delta`, :func:`robust_accuracy`.

Gradient alignment (Eq. 2.5): ``E_{(x,y), η ~ U([−ε, ε]^d)} cos(∇_x ℓ(x, y),
∇_x ℓ(x + η, y))`` — :func:`gradient_alignment`. **GradAlign** (Eq. 2.7):
``Ω = E[1 − cos(∇_x ℓ(x, y; θ), ∇_x ℓ(x + η, y; θ))]``, added as ``λ · Ω`` to the
FGSM training loss and differentiated by double backward (``create_graph=True``)
— :func:`grad_align_penalty`. The thesis is silent on which gradient carries the
graph; the public code (``tml-epfl/understanding-fast-adv-training``, train.py)
**detaches** ``∇_x ℓ(x)`` (it reuses the FGSM gradient) and differentiates only
through ``∇_x ℓ(x + η)``. Both are offered (``detach_clean``; default ``False``:
the thesis' Eq. 2.7 differentiated exactly), and the choice is recorded.

Lemma 1 (Eq. 2.4; proof §2.8.1) and Lemma 2 (§2.5; proof and
Fig. 2.9 §2.8.2) Monte-Carlo checks: :func:`lemma1_mc`, :func:`lemma2_mc`.

Reproductions (each returns ``(data, figure, summary)``):

Registered in :mod:`workbench.thesis.registry` as ``fig2.2``, ``fig2.9``, ``fig2.11``; each compute function
returns an :class:`~workbench.thesis.registry.Outcome`:

* :func:`repro_lemma1` — Fig. 2.2: ``E‖δ_FGSM-RS‖₂/√d`` by Monte Carlo vs the
  bound, against ``α/ε``.
* :func:`repro_lemma2` — Fig. 2.9: the gradient alignment at initialisation of a
  single-layer CNN (k = 100 patches, m = 4 filters), its k, m → ∞ limit
  (Eq. 2.9), the Hoeffding bound and the final bound of Lemma 2, against ε.
* :func:`repro_fast_at` — a scaled-down Fig. 2.11: a single-layer CNN with 4
  filters (§2.9) trained with FGSM / FGSM-RS / PGD-k / FGSM + GradAlign AT on the
  8×8 scikit-learn digits (CIFAR-10 is not available offline), tracking clean,
  FGSM and PGD accuracy and losses, gradient alignment, cos(δ_FGSM, δ_PGD) and
  per-filter weight norms during training.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import Outcome, Param, register

__all__ = [
    "SingleLayerCNN", "input_gradient", "fgsm_delta", "pgd_delta", "robust_accuracy", "cosine_per_example",
    "gradient_alignment", "grad_align_penalty", "default_alpha", "cyclic_lr", "FastATConfig", "FastATResult",
    "fast_adversarial_training", "digits_bundle", "lemma1_bound", "lemma1_mc", "lemma2_mc",
    "repro_lemma1", "repro_lemma2", "repro_fast_at", "METHODS", "GRADALIGN_LAMBDA_CIFAR10",
]

#: Training methods of :func:`fast_adversarial_training`.
METHODS = ("standard", "fgsm", "fgsm_rs", "pgd", "fgsm_gradalign")

#: Table 2.2: GradAlign λ on CIFAR-10 for ε = 1/255 … 16/255.
GRADALIGN_LAMBDA_CIFAR10 = dict(zip(range(1, 17), (0.03, 0.04, 0.05, 0.06, 0.08, 0.11, 0.15, 0.20, 0.27, 0.36,
                                                   0.47, 0.63, 0.84, 1.12, 1.50, 2.00)))


# ------------------------------------------------------------------ model
class SingleLayerCNN(nn.Module):
    """The thesis' single-layer CNN (§2.9): ``m`` 3×3 conv filters, ReLU, then directly a fully connected layer.

    The convolution has stride 1 and padding 1; there is no pooling.

    Args:
        in_channels: input channels C; image_size: H = W; n_filters: m (thesis: 4); num_classes: K.

    Shapes: input ``[N, C, H, W]`` in [0, 1] (no input normalisation, §2.9) → logits ``[N, K]``.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 8, n_filters: int = 4, num_classes: int = 10):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("image_size", image_size), ("n_filters", n_filters),
                        ("num_classes", num_classes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} is invalid: must be a positive integer")
        self.conv = nn.Conv2d(in_channels, n_filters, 3, stride=1, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(n_filters * image_size * image_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` for images ``[N, C, H, W]``."""
        return self.fc(self.relu(self.conv(x)).flatten(1))


# ------------------------------------------------------------------ gradients and attacks
def input_gradient(model: nn.Module, x: Tensor, y: Tensor, *, create_graph: bool = False) -> Tensor:
    """Per-example input gradients ``∇_x ℓ(x_i, y_i; θ)`` of the cross-entropy, shape ``[N, *x.shape[1:]]``.

    The summed loss is differentiated, so row i is exactly the gradient of example i's loss. With
    ``create_graph=True`` the result is differentiable w.r.t. the parameters (double backward).
    """
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x, create_graph=create_graph)
    return g


def _check_eps(eps: float) -> float:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps={eps!r} is invalid: the ℓ∞ radius must be a finite number >= 0")
    return float(eps)


def _uniform(like: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(like.shape, generator=generator, dtype=like.dtype, device="cpu").to(like.device)
    return (2 * u - 1) * eps


def _clip_delta(x: Tensor, delta: Tensor, eps: float, clip: tuple[float, float] | None) -> Tensor:
    delta = delta.clamp(-eps, eps)
    if clip is not None:
        delta = (x + delta).clamp(*clip) - x
    return delta


def fgsm_delta(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, alpha: float | None = None,
               random_start: bool = False, generator: torch.Generator | None = None,
               clip: tuple[float, float] | None = (0.0, 1.0)) -> Tensor:
    """FGSM (Eq. 2.2) or FGSM-RS (Eq. 2.3) perturbation ``δ`` (detached, same shape as ``x``).

    Args:
        model: the classifier (in its current mode; not modified).
        x: inputs ``[N, ...]``.
        y: labels ``[N]``.
        eps: ℓ∞ radius ε.
        alpha: step α (default ε for FGSM, 1.25 ε for FGSM-RS, §2.6).
        random_start: start from ``η ~ U([−ε, ε]^d)`` (FGSM-RS).
        generator: CPU generator for η (seeded runs).
        clip: input domain; ``x + δ`` is clipped into it (``None``: no clipping, as in the lemmas).
    """
    eps = _check_eps(eps)
    if alpha is None:
        alpha = 1.25 * eps if random_start else eps
    eta = _uniform(x, eps, generator) if random_start else torch.zeros_like(x)
    if clip is not None:
        eta = (x + eta).clamp(*clip) - x
    g = input_gradient(model, x + eta, y)
    return _clip_delta(x, eta + alpha * g.sign(), eps, clip).detach()


def default_alpha(eps: float, steps: int) -> float:
    """PGD-k training step (§2.9, §2.11.1): ε/2 for k ≤ 2 (PGD-2), 2ε/k otherwise (PGD-10: 2ε/10)."""
    return eps / 2 if steps <= 2 else 2 * eps / steps


def pgd_delta(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, steps: int = 10, alpha: float | None = None,
              restarts: int = 1, random_start: bool = False, generator: torch.Generator | None = None,
              clip: tuple[float, float] | None = (0.0, 1.0)) -> Tensor:
    """PGD-k ℓ∞ perturbation: ``k`` steps ``δ ← Π(δ + α sign ∇_δ ℓ(x + δ))``.

    With restarts, per example the restart with the highest final loss is kept (PGD-50-10: ``steps=50,
    restarts=10, alpha=ε/4, random_start``).

    Returns the detached ``δ`` (shape of ``x``). Raises ``ValueError`` for ``steps < 1`` or ``restarts < 1``.
    """
    eps = _check_eps(eps)
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps={steps!r} and restarts={restarts!r} must be >= 1")
    if alpha is None:
        alpha = default_alpha(eps, steps)
    best = torch.zeros_like(x)
    best_loss = torch.full((len(x),), -float("inf"), device=x.device)
    for _ in range(restarts):
        delta = _clip_delta(x, _uniform(x, eps, generator), eps, clip) if random_start else torch.zeros_like(x)
        for _ in range(steps):
            g = input_gradient(model, x + delta, y)
            delta = _clip_delta(x, delta + alpha * g.sign(), eps, clip).detach()
        with torch.no_grad():
            loss = F.cross_entropy(model(x + delta), y, reduction="none")
        better = loss > best_loss
        best[better] = delta[better]
        best_loss = torch.where(better, loss, best_loss)
    return best


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, steps: int = 50, restarts: int = 10,
                    alpha: float | None = None, seed: int = 0, batch_size: int = 512) -> float:
    """Accuracy under PGD (default PGD-50-10 with α = ε/4 and random restarts, §2.9), in [0, 1].

    An example counts as robust only if it is classified correctly after every restart (worst case over restarts).
    """
    eps = _check_eps(eps)
    alpha = eps / 4 if alpha is None else alpha
    gen = torch.Generator().manual_seed(seed)
    correct = 0
    with _eval(model):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            ok = torch.ones(len(xb), dtype=torch.bool, device=xb.device)
            with torch.no_grad():
                ok &= model(xb).argmax(1) == yb
            for _ in range(restarts):
                d = pgd_delta(model, xb, yb, eps, steps=steps, alpha=alpha, restarts=1, random_start=True,
                              generator=gen)
                with torch.no_grad():
                    ok &= model(xb + d).argmax(1) == yb
            correct += int(ok.sum())
    return correct / max(len(x), 1)


class _eval:
    """Context: eval mode (BatchNorm/dropout frozen) for attacks and measurements; previous mode restored."""

    def __init__(self, model: nn.Module):
        self.model, self.was = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *a):
        self.model.train(self.was)


def cosine_per_example(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine between rows of ``a`` and ``b`` (flattened per example) and a mask of rows where both are non-zero.

    Returns ``(cos [N], valid [N] bool)``; rows with a zero vector have ``cos = 0`` and ``valid = False``
    (the public code drops them from the mean).
    """
    a, b = a.flatten(1), b.flatten(1)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    valid = (na > 0) & (nb > 0)
    cos = (a * b).sum(1) / torch.where(valid, na * nb, torch.ones_like(na))
    return torch.where(valid, cos, torch.zeros_like(cos)), valid


def gradient_alignment(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, generator: torch.Generator | None = None,
                       samples: int = 1) -> float:
    """Gradient alignment (Eq. 2.5): mean cosine of the input gradients at ``x`` and at ``x + η``.

    The mean runs over examples (and ``samples`` draws of η ~ U([−ε, ε]^d)) of
    ``cos(∇_x ℓ(x, y), ∇_x ℓ(x + η, y))``; examples with a zero gradient are left out. Unclipped x + η, as in
    Eq. 2.5. Evaluated in eval mode; returns a float in [−1, 1] (NaN if every gradient is zero).
    """
    eps = _check_eps(eps)
    with _eval(model):
        g0 = input_gradient(model, x, y)
        vals = []
        for _ in range(samples):
            g1 = input_gradient(model, x + _uniform(x, eps, generator), y)
            c, v = cosine_per_example(g0, g1)
            vals.append(c[v])
    v = torch.cat(vals)
    return float(v.mean()) if len(v) else float("nan")


def grad_align_penalty(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, generator: torch.Generator | None = None,
                       detach_clean: bool = False, clean_grad: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """GradAlign regulariser Ω (Eq. 2.7) without λ: ``1 − mean_i cos(∇_x ℓ(x_i), ∇_x ℓ(x_i + η_i))``.

    Both input gradients are built with ``create_graph=True``, so ``Ω.backward()`` differentiates through the
    cosine (double backward). ``detach_clean=True`` reproduces the public code, which detaches ``∇_x ℓ(x)``
    (optionally passed in as ``clean_grad``, e.g. the FGSM gradient) and differentiates only through
    ``∇_x ℓ(x + η)``. Examples whose gradients vanish are left out of the mean (public code).

    Returns:
        ``(omega, cos)``: the scalar penalty (a graph-carrying tensor) and the per-example cosines (detached).
    """
    eps = _check_eps(eps)
    if detach_clean:
        g0 = (clean_grad if clean_grad is not None else input_gradient(model, x, y)).detach()
    else:
        g0 = input_gradient(model, x, y, create_graph=True)
    g1 = input_gradient(model, x + _uniform(x, eps, generator), y, create_graph=True)
    cos, valid = cosine_per_example(g0, g1)
    if not bool(valid.any()):
        return (cos * 0).sum(), cos.detach()
    return 1.0 - cos[valid].mean(), cos.detach()


# ------------------------------------------------------------------ training
def cyclic_lr(t: float, lr_max: float) -> float:
    """Cyclic schedule of the thesis' AT runs (§2.9; [Smith 2017]): linear 0 → ``lr_max`` at 2/5 of training → 0.

    ``t`` is the fraction of training done, in [0, 1].
    """
    t = min(max(float(t), 0.0), 1.0)
    return lr_max * (t / 0.4 if t <= 0.4 else (1 - t) / 0.6)


@dataclass
class FastATConfig:
    """Settings of one adversarial training run (:func:`fast_adversarial_training`).

    Attributes:
        method: one of :data:`METHODS` (``standard`` = no attack).
        eps: ℓ∞ radius ε on the [0, 1] pixel scale (Fig. 2.11: 10/255 on CIFAR-10; digits need larger ε).
        alpha: attack step α; ``None``: ε (FGSM), 1.25 ε (FGSM-RS), :func:`default_alpha` (PGD).
        pgd_steps: k for ``method="pgd"``.
        lam: GradAlign λ (``fgsm_gradalign``); detach_clean: public-code variant of the penalty.
        epochs, batch_size: training length; optimizer: ``adam`` (single-layer CNN, §2.9: Adam lr 0.003) or ``sgd``
            (momentum 0.9, weight decay 5e-4); lr_max: peak of the cyclic schedule.
        n_filters: m of :class:`SingleLayerCNN` (thesis: 4).
        eval_every: iterations between measurements; eval_count: test points used for them (thesis: 256);
        eval_pgd_steps / eval_pgd_restarts: PGD used in the measurements (α = ε/4).
        final_pgd_steps / final_pgd_restarts: PGD used for the final robust accuracy (thesis: PGD-50-10).
        final_count: test points for the final robust accuracy (thesis: 1,000).
        seed: seeds the initialisation, the batch order, and η draws.
    """

    method: str = "fgsm"
    eps: float = 0.3
    alpha: float | None = None
    pgd_steps: int = 10
    lam: float = 1.0
    detach_clean: bool = False
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    lr_max: float = 0.003
    n_filters: int = 4
    eval_every: int = 20
    eval_count: int = 256
    eval_pgd_steps: int = 10
    eval_pgd_restarts: int = 1
    final_pgd_steps: int = 50
    final_pgd_restarts: int = 10
    final_count: int = 449
    seed: int = 0

    def validate(self) -> "FastATConfig":
        """Check every setting and return ``self``.

        Raises:
            ValueError: the first invalid setting, named.
        """
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is invalid: choose one of {METHODS}")
        _check_eps(self.eps)
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer={self.optimizer!r} is invalid: choose 'adam' or 'sgd'")
        for name in ("epochs", "batch_size", "eval_every", "eval_count", "pgd_steps", "n_filters",
                     "eval_pgd_steps", "eval_pgd_restarts", "final_pgd_steps", "final_pgd_restarts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} is invalid: must be a positive integer")
        if self.lam < 0 or self.lr_max <= 0:
            raise ValueError(f"lam={self.lam!r} must be >= 0 and lr_max={self.lr_max!r} > 0")
        return self


@dataclass
class FastATResult:
    """Outcome of :func:`fast_adversarial_training`.

    Attributes:
        history: one row per measurement: ``iteration``, ``epoch`` (fractional), ``lr``, ``train_loss``
            (training objective on the last batch, incl. λΩ), ``clean_acc``, ``fgsm_acc``, ``pgd_acc``,
            ``fgsm_loss``, ``pgd_loss``, ``grad_alignment``, ``cos_fgsm_pgd``, ``filter_norm_<j>``,
            ``out_norm_<j>`` (ℓ2 norm of filter j and of its outgoing fc weights), ``seconds``.
        final: ``clean_acc`` (full test split), ``pgd_acc`` (final PGD on ``final_count`` points),
            ``grad_alignment``; config: the settings; model: the trained network (eval mode).
    """

    history: pd.DataFrame
    final: dict
    config: dict
    model: nn.Module = field(repr=False)


def digits_bundle(split_seed: int = 0):
    """The 8×8 scikit-learn digits on the [0, 1] scale, as a data bundle.

    No normalisation: the attacks' ε is in pixel units. 75 % / 25 % train/test (1,348 / 449 images), via
    :func:`workbench.data.load_data`.
    """
    from ..config import DataConfig
    from ..data import load_data

    return load_data(DataConfig(name="digits", normalize=False, val_fraction=0.0, test_fraction=0.25,
                                split_seed=split_seed))


def _measure(model, xe, ye, eps, gen, cfg) -> dict:
    with _eval(model):
        with torch.no_grad():
            clean = model(xe)
        d_f = fgsm_delta(model, xe, ye, eps)
        d_p = pgd_delta(model, xe, ye, eps, steps=cfg.eval_pgd_steps, alpha=eps / 4, restarts=cfg.eval_pgd_restarts,
                        random_start=cfg.eval_pgd_restarts > 1, generator=gen)
        with torch.no_grad():
            out_f, out_p = model(xe + d_f), model(xe + d_p)
        c, v = cosine_per_example(d_f, d_p)
    rec = {
        "clean_acc": float((clean.argmax(1) == ye).float().mean()),
        "fgsm_acc": float((out_f.argmax(1) == ye).float().mean()),
        "pgd_acc": float((out_p.argmax(1) == ye).float().mean()),
        "fgsm_loss": float(F.cross_entropy(out_f, ye)),
        "pgd_loss": float(F.cross_entropy(out_p, ye)),
        "grad_alignment": gradient_alignment(model, xe, ye, eps, generator=gen),
        "cos_fgsm_pgd": float(c[v].mean()) if bool(v.any()) else float("nan"),
    }
    if isinstance(model, SingleLayerCNN):
        W = model.conv.weight.detach()
        U = model.fc.weight.detach().view(model.fc.out_features, W.shape[0], -1)
        for j in range(W.shape[0]):
            rec[f"filter_norm_{j}"] = float(W[j].norm())
            rec[f"out_norm_{j}"] = float(U[:, j].norm())
    return rec


def fast_adversarial_training(cfg: FastATConfig, data=None, *, model: nn.Module | None = None,
                              callback: Callable[[dict], None] | None = None,
                              should_stop: Callable[[], bool] | None = None) -> FastATResult:
    """Adversarial training (Eq. 2.1) with FGSM / FGSM-RS / PGD-k / FGSM + GradAlign, measured as it goes.

    Each iteration: the attack of ``cfg.method`` crafts δ in eval mode, then the model is trained on
    ``ℓ(x + δ, y)`` (+ ``λ Ω`` for GradAlign, Eq. 2.7, on the clean batch). The learning rate follows
    :func:`cyclic_lr` per iteration. Every ``eval_every`` iterations (and at the end) :func:`_measure` runs on a
    fixed set of ``eval_count`` test points: clean / FGSM / PGD accuracy and loss, gradient alignment
    (Eq. 2.5), cos(δ_FGSM, δ_PGD) (§2.5), per-filter norms (Fig. 2.6).

    Args:
        cfg: :class:`FastATConfig`.
        data: a :class:`~workbench.data.DataBundle` with inputs in [0, 1] (default :func:`digits_bundle`).
        model: a network to train (default :class:`SingleLayerCNN` with ``cfg.n_filters`` filters).
        callback: called with each measurement record (live plots).
        should_stop: polled every iteration; ``True`` stops the training early.

    Returns:
        :class:`FastATResult`.
    """
    cfg.validate()
    data = digits_bundle() if data is None else data
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    eval_gen = torch.Generator().manual_seed(cfg.seed + 1)
    xtr, ytr = data.train.x, data.train.y
    xte, yte = data.test.x, data.test.y
    if float(xtr.min()) < -1e-6 or float(xtr.max()) > 1 + 1e-6:
        raise ValueError("fast_adversarial_training expects inputs on the [0, 1] scale (load data with "
                         "normalize=False); the ℓ∞ radius eps is in those units")
    if model is None:
        c, h, w = data.input_shape
        model = SingleLayerCNN(c, h, cfg.n_filters, data.num_classes)
    dev = next(model.parameters()).device
    xtr, ytr, xte, yte = xtr.to(dev), ytr.to(dev), xte.to(dev), yte.to(dev)
    eval_idx = torch.randperm(len(xte), generator=torch.Generator().manual_seed(cfg.seed + 2))[:cfg.eval_count]
    xe, ye = xte[eval_idx.to(dev)], yte[eval_idx.to(dev)]
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr_max)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr_max, momentum=0.9, weight_decay=5e-4)
    n = len(xtr)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = per_epoch * cfg.epochs
    eps = cfg.eps
    rows: list[dict] = []
    t0 = time.perf_counter()
    it = 0
    last_loss = float("nan")

    def record():
        rec = {"iteration": it, "epoch": it / per_epoch, "lr": cyclic_lr(it / total, cfg.lr_max),
               "train_loss": last_loss, **_measure(model, xe, ye, eps, eval_gen, cfg),
               "seconds": time.perf_counter() - t0}
        rows.append(rec)
        if callback is not None:
            callback(rec)

    record()
    stopped = False
    for _ep in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen).to(dev)
        for b in range(per_epoch):
            if should_stop is not None and should_stop():
                stopped = True
                break
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x, y = xtr[idx], ytr[idx]
            for g in opt.param_groups:
                g["lr"] = cyclic_lr((it + 0.5) / total, cfg.lr_max)
            with _eval(model):
                if cfg.method == "standard":
                    delta = torch.zeros_like(x)
                elif cfg.method in ("fgsm", "fgsm_gradalign"):
                    delta = fgsm_delta(model, x, y, eps, alpha=cfg.alpha)
                elif cfg.method == "fgsm_rs":
                    delta = fgsm_delta(model, x, y, eps, alpha=cfg.alpha, random_start=True, generator=gen)
                else:
                    delta = pgd_delta(model, x, y, eps, steps=cfg.pgd_steps, alpha=cfg.alpha)
            loss = F.cross_entropy(model(x + delta), y)
            if cfg.method == "fgsm_gradalign" and cfg.lam > 0:
                omega, _ = grad_align_penalty(model, x, y, eps, generator=gen, detach_clean=cfg.detach_clean)
                loss = loss + cfg.lam * omega
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last_loss = float(loss.detach())
            it += 1
            if it % cfg.eval_every == 0:
                record()
        if stopped:
            break
    if rows[-1]["iteration"] != it:
        record()
    model.eval()
    with torch.no_grad():
        clean_full = float((model(xte).argmax(1) == yte).float().mean())
    m = min(cfg.final_count, len(xte))
    final = {"clean_acc": clean_full,
             "pgd_acc": robust_accuracy(model, xte[:m], yte[:m], eps, steps=cfg.final_pgd_steps,
                                        restarts=cfg.final_pgd_restarts, seed=cfg.seed),
             "grad_alignment": gradient_alignment(model, xte[:m], yte[:m], eps, generator=eval_gen),
             "pgd": f"PGD-{cfg.final_pgd_steps}-{cfg.final_pgd_restarts}, alpha=eps/4, {m} test points",
             "iterations": it, "stopped": stopped, "seconds": time.perf_counter() - t0}
    return FastATResult(history=pd.DataFrame(rows), final=final, config=asdict(cfg), model=model)


# ------------------------------------------------------------------ Lemma 1 (Fig. 2.2)
def lemma1_bound(alpha, eps: float, d: int = 1):
    """Right-hand side of Eq. 2.4: ``√d · √(−α³/(6ε) + α²/2 + ε²/3)``, for α ∈ [0, 2ε] (array or scalar).

    Raises ``ValueError`` for α outside [0, 2ε] or ε <= 0.
    """
    a = np.asarray(alpha, dtype=np.float64)
    if eps <= 0:
        raise ValueError(f"eps={eps!r} must be > 0")
    if np.any(a < 0) or np.any(a > 2 * eps + 1e-12):
        raise ValueError("Lemma 1 holds for alpha in [0, 2 eps]")
    return math.sqrt(d) * np.sqrt(-a ** 3 / (6 * eps) + a ** 2 / 2 + eps ** 2 / 3)


def lemma1_mc(alpha, eps: float, d: int, *, samples: int = 1000, seed: int = 0) -> dict:
    """Monte-Carlo estimate of ``E_η ‖δ_FGSM-RS(η)‖₂`` and ``√E‖δ‖₂²`` (Lemma 1).

    It uses ``samples`` draws of η ~ U([−ε, ε]^d) per α (thesis Fig. 2.2: 1,000).

    The gradient signs ``sign(∇_x ℓ(x + η))`` are drawn as independent fair signs (the proof shows the value
    does not depend on them); no clipping to [0, 1] (footnote 3, §2.4).

    Returns:
        dict of arrays over ``alpha``: ``mean_norm``, ``std_norm``, ``rms_norm``, ``bound``; and ``fgsm_norm`` = √d ε.
    """
    a = np.atleast_1d(np.asarray(alpha, dtype=np.float64))
    rng = np.random.default_rng(seed)
    mean, std, rms = [], [], []
    for al in a:
        eta = rng.uniform(-eps, eps, size=(samples, d))
        s = rng.choice(np.array([-1.0, 1.0]), size=(samples, d))
        delta = np.clip(eta + al * s, -eps, eps)
        nrm = np.linalg.norm(delta, axis=1)
        mean.append(nrm.mean()), std.append(nrm.std()), rms.append(np.sqrt((nrm ** 2).mean()))
    return {"alpha": a, "mean_norm": np.array(mean), "std_norm": np.array(std), "rms_norm": np.array(rms),
            "bound": lemma1_bound(a, eps, d), "fgsm_norm": math.sqrt(d) * eps}


# ------------------------------------------------------------------ Lemma 2 (Fig. 2.9)
def lemma2_mc(eps_grid: Sequence[float], *, p: int = 27, k: int = 100, m: int = 4, samples: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """The four quantities of Fig. 2.9 (§2.8.2) for a single-layer CNN at initialisation, per ε.

    Setting (Lemma 2, §2.5): patches ``z ~ U([0, 1]^p)``, filters ``w ~ N(0, σ_w² I_p)``, outgoing weights
    ``u ~ N(0, σ_u²)``, biases 0, ``η ~ U([−ε, ε]^p)`` per patch. With non-overlapping patches the input
    gradient of ``f(x) = Σ_r Σ_j u_rj relu(⟨w_r, z_j⟩)`` has block j equal to ``Σ_r u_rj 1[⟨w_r, z_j⟩ ≥ 0] w_r``
    (§2.5); the loss' derivative is a common scalar factor that cancels in the cosine.

    Columns: ``eps``; ``cos_finite_mean`` / ``cos_finite_std`` (cosine for ``k`` patches and ``m`` filters over
    ``samples`` random draws); ``cos_limit`` (Eq. 2.9, the k, m → ∞ limit, expectations by MC); ``bound_hoeffding``
    = max{1 − E[‖w‖² exp(−⟨ŵ, z⟩²/(2ε²))]/(pσ_w²), 0.5}; ``bound_final`` = max{1 − √2 E[exp(−⟨ŵ, z⟩²/ε²)]^{1/2}, 0.5}
    (the Lemma). σ_w = 1 (every quantity is scale-free in σ_w, σ_u).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for eps in eps_grid:
        eps = float(eps)
        # finite k, m
        W = rng.standard_normal((samples, m, p))
        U = rng.standard_normal((samples, m, k))
        Z = rng.uniform(0, 1, (samples, k, p))
        E = rng.uniform(-eps, eps, (samples, k, p))
        a0 = np.einsum("smp,skp->smk", W, Z) >= 0
        a1 = np.einsum("smp,skp->smk", W, Z + E) >= 0
        G0 = np.einsum("smk,smp->skp", U * a0, W)
        G1 = np.einsum("smk,smp->skp", U * a1, W)
        num = (G0 * G1).sum(axis=(1, 2))
        den = np.sqrt((G0 ** 2).sum(axis=(1, 2)) * (G1 ** 2).sum(axis=(1, 2)))
        cos = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
        # limit (Eq. 2.9) and bounds, expectations over (w, z, eta) with `samples` draws
        w = rng.standard_normal((samples, p))
        z = rng.uniform(0, 1, (samples, p))
        e = rng.uniform(-eps, eps, (samples, p))
        wn2 = (w ** 2).sum(1)
        s0 = (w * z).sum(1) >= 0
        s1 = (w * (z + e)).sum(1) >= 0
        limit = (wn2 * s0 * s1).mean() / math.sqrt((wn2 * s0).mean() * (wn2 * s1).mean())
        proj2 = ((w / np.sqrt(wn2)[:, None]) * z).sum(1) ** 2
        with np.errstate(over="ignore", divide="ignore"):
            ex_h = np.exp(-proj2 / (2 * eps ** 2)) if eps > 0 else np.zeros(samples)
            ex_f = np.exp(-proj2 / eps ** 2) if eps > 0 else np.zeros(samples)
        hoeff = max(1 - (wn2 * ex_h).mean() / p, 0.5)
        final = max(1 - math.sqrt(2) * math.sqrt(ex_f.mean()), 0.5)
        rows.append({"eps": eps, "cos_finite_mean": float(np.nanmean(cos)), "cos_finite_std": float(np.nanstd(cos)),
                     "cos_limit": float(limit), "bound_hoeffding": float(hoeff), "bound_final": float(final),
                     "p": p, "k": k, "m": m, "samples": samples})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ reproductions (registered)
def repro_lemma1(*, eps: float = 8 / 255, d: int = 3072, points: int = 41, samples: int = 1000, seed: int = 0,
                 progress: Callable[[float, str], None] | None = None) -> Outcome:
    """Fig. 2.2: ``E‖δ_FGSM-RS‖₂/√d`` (Monte Carlo) and the Lemma-1 bound vs α/ε ∈ [0, 2].

    The Monte Carlo uses ``samples`` draws of η. Defaults ε = 8/255, d = 3072 (CIFAR-10).

    Criterion (faithful reproduction): the MC mean lies below the bound (within 3 standard errors) everywhere, the
    bound stays below FGSM's √d ε, and at α = 1.25 ε the bound is ≈ 7/255 · √d (§2.4).
    Data: dict ``table`` (DataFrame over α/ε), ``eps``, ``d``.
    """
    ratios = np.linspace(0, 2, points)
    r = lemma1_mc(ratios * eps, eps, d, samples=samples, seed=seed)
    sd = math.sqrt(d)
    df = pd.DataFrame({"alpha_over_eps": ratios, "alpha": r["alpha"], "mc_mean_over_sqrt_d": r["mean_norm"] / sd,
                       "mc_se_over_sqrt_d": r["std_norm"] / sd / math.sqrt(samples),
                       "bound_over_sqrt_d": r["bound"] / sd, "fgsm_over_sqrt_d": r["fgsm_norm"] / sd})
    if progress:
        progress(1.0, "Lemma 1 Monte Carlo done")
    se = df["mc_se_over_sqrt_d"]
    below = bool((df["mc_mean_over_sqrt_d"] <= df["bound_over_sqrt_d"] * (1 + 1e-9) + 3 * se).all())
    le_fgsm = bool((df["bound_over_sqrt_d"] <= df["fgsm_over_sqrt_d"] + 1e-12).all())
    gap = float(((df["bound_over_sqrt_d"] - df["mc_mean_over_sqrt_d"]) / df["bound_over_sqrt_d"]).max())
    at125 = float(lemma1_bound(1.25 * eps, eps, 1) * 255)
    metrics = {"max_rel_gap": gap, "bound_at_1.25eps_in_255ths": at125, "mc_below_bound": float(below),
               "bound_below_fgsm": float(le_fgsm)}
    measured = (f"MC mean of ||delta_FGSM-RS||_2/sqrt(d) {'<=' if below else 'NOT <='} bound at all {points} alphas "
                f"(d={d}, {samples} samples); largest relative gap {gap:.2%}; bound at alpha=1.25 eps = "
                f"{at125:.2f}/255 (thesis: ~7/255); bound <= FGSM's sqrt(d) eps: {le_fgsm}.")
    return Outcome(data={"table": df, "eps": eps, "d": d}, measured=measured,
                   verdict="reproduced" if (below and le_fgsm and abs(at125 - 7) < 0.5) else "not reproduced",
                   verdict_reason=("Monte Carlo norms below the bound at every alpha, bound <= FGSM's, ~7/255 at "
                                   "alpha = 1.25 eps") if (below and le_fgsm and abs(at125 - 7) < 0.5) else
                   "a part of Lemma 1 fails numerically (see measured)", metrics=metrics,
                   settings={"eps": eps, "d": d, "samples": samples, "seed": seed},
                   notes=["Gradient signs sign(grad at x+eta) are drawn as fair coins: the proof (§2.8.1) shows "
                          "the expectation does not depend on them; clipping to [0,1] is ignored (footnote 3, §2.4)."])


def repro_lemma2(*, eps_max: float = 0.1, points: int = 21, p: int = 27, k: int = 100, m: int = 4,
                 samples: int = 1000, seed: int = 0, progress: Callable[[float, str], None] | None = None) -> Outcome:
    """Fig. 2.9: the Lemma-2 quantities vs ε ∈ (0, ``eps_max``] (p = 27, k = 100, m = 4, 1,000 MC samples).

    Criterion (faithful reproduction; §2.8.2): the finite-(k, m) alignment and its limit are ≥ 0.7 for ε ≤ 0.1, and the
    bounds are ordered final ≤ Hoeffding ≤ limit (MC tolerance 0.02). Data: dict ``table``.
    """
    grid = np.linspace(0, eps_max, points)[1:]
    df = lemma2_mc(grid, p=p, k=k, m=m, samples=samples, seed=seed)
    if progress:
        progress(1.0, "Lemma 2 Monte Carlo done")
    ordered = bool(((df["bound_final"] <= df["bound_hoeffding"] + 0.02)
                    & (df["bound_hoeffding"] <= df["cos_limit"] + 0.02)).all())
    ok07 = df.loc[df["bound_final"] >= 0.7, "eps"]
    eps07 = float(ok07.max()) if len(ok07) else 0.0
    metrics = {"min_cos_finite": float(df["cos_finite_mean"].min()), "min_cos_limit": float(df["cos_limit"].min()),
               "min_bound_hoeffding": float(df["bound_hoeffding"].min()),
               "min_bound_final": float(df["bound_final"].min()), "bounds_ordered": float(ordered),
               "largest_eps_final_bound_ge_0.7": eps07}
    measured = (f"For eps in (0, {eps_max}]: mean alignment at init (k={k}, m={m}) >= {metrics['min_cos_finite']:.3f}, "
                f"limit (Eq. 2.9) >= {metrics['min_cos_limit']:.3f}, Hoeffding bound >= "
                f"{metrics['min_bound_hoeffding']:.3f}, final Lemma-2 bound >= {metrics['min_bound_final']:.3f} "
                f"(>= 0.7 up to eps = {eps07:.3f}); bounds below the limit: {ordered}.")
    return Outcome(data={"table": df}, measured=measured,
                   verdict=("reproduced" if ordered and min(metrics["min_cos_finite"], metrics["min_cos_limit"],
                                                             metrics["min_bound_hoeffding"],
                                                             metrics["min_bound_final"]) >= 0.7
                            else "partial" if ordered and metrics["min_cos_finite"] >= 0.7
                            and metrics["min_cos_limit"] >= 0.7 else "not reproduced"),
                   verdict_reason=("all four quantities >= 0.7 for eps <= eps_max" if ordered and min(
                       metrics["min_cos_finite"], metrics["min_cos_limit"], metrics["min_bound_hoeffding"],
                       metrics["min_bound_final"]) >= 0.7 else
                       f"the alignment and its limit stay >= 0.7, but the claim 'all quantities in [0.7, 1]' fails for "
                       f"the bounds (final bound down to {metrics['min_bound_final']:.2f}; >= 0.7 only up to eps = "
                       f"{metrics['largest_eps_final_bound_ge_0.7']:.3f})"
                       if ordered and metrics["min_cos_finite"] >= 0.7
                       and metrics["min_cos_limit"] >= 0.7 else "the alignment at initialisation falls below 0.7"),
                   metrics=metrics, settings={"eps_max": eps_max, "p": p, "k": k, "m": m, "samples": samples,
                                              "seed": seed},
                   notes=["The thesis says all four quantities lie in [0.7, 1] for eps <= 0.1 (§2.8.2); the final "
                          "(Cauchy-Schwarz) bound is measured here to drop towards its 0.5 floor near eps = 0.1 — "
                          "the alignment itself and its limit stay above 0.7.",
                          "Patches are non-overlapping (independent z_j, as in the proof); sigma_w = sigma_u = 1 "
                          "(all quantities are scale-free)."])


def repro_fast_at(*, methods: Sequence[str] = ("fgsm", "fgsm_rs", "fgsm_gradalign", "pgd"), eps: float = 0.25,
                  epochs: int = 30, lam: float = 1.0, lr_max: float = 0.01, n_filters: int = 4, seed: int = 0,
                  batch_size: int = 64, eval_every: int = 20, pgd_steps: int = 10, final_pgd_steps: int = 50,
                  final_pgd_restarts: int = 10, detach_clean: bool = False,
                  progress: Callable[[float, str], None] | None = None,
                  callback: Callable[[str, dict], None] | None = None) -> Outcome:
    """Scaled-down Fig. 2.11: single-layer CNN (4 filters, §2.9) adversarially trained on the 8×8 digits.

    Thesis claim: FGSM AT shows catastrophic overfitting — PGD accuracy collapses while FGSM accuracy rises and
    gradient alignment falls (0.12 after CO for the 4-filter CNN, §2.5); FGSM + GradAlign (Eq. 2.7) keeps the
    alignment high and does not collapse. Setting here (CIFAR-10 is not available offline): 1,348 / 449 digits,
    ε on the [0, 1] scale (default 0.25; 8×8 digits need a larger radius than CIFAR-10's 10/255), Adam with the
    cyclic schedule peaking at ``lr_max`` (thesis: 0.003; 0.01 here), 30 epochs, batch 64, λ = ``lam``.
    Final robust accuracy: PGD-``final_pgd_steps``-``final_pgd_restarts`` (α = ε/4) on the 449 test points.

    Criterion: FGSM's final PGD accuracy < 10 % and at least 20 points below GradAlign's; FGSM's alignment ends
    at least 0.1 below GradAlign's. Data: dict ``history`` (stacked per-method records), ``final`` (per method),
    ``eps``.
    """
    data = digits_bundle()
    frames, finals = [], {}
    for i, meth in enumerate(methods):
        if progress:
            progress(i / len(methods), f"training {meth}")
        cfg = FastATConfig(method=meth, eps=eps, epochs=epochs, lam=lam, lr_max=lr_max, n_filters=n_filters,
                           seed=seed, batch_size=batch_size, eval_every=eval_every, pgd_steps=pgd_steps,
                           final_pgd_steps=final_pgd_steps, final_pgd_restarts=final_pgd_restarts,
                           detach_clean=detach_clean)
        cb = (lambda rec, _m=meth: callback(_m, rec)) if callback is not None else None
        res = fast_adversarial_training(cfg, data, callback=cb)
        h = res.history.assign(method=meth)
        frames.append(h)
        finals[meth] = {**{k: v for k, v in res.final.items() if k != "pgd"},
                        "min_grad_alignment": float(h["grad_alignment"].min()),
                        "peak_pgd_acc": float(h["pgd_acc"].max()), "last_fgsm_acc": float(h["fgsm_acc"].iloc[-1]),
                        "last_pgd_acc": float(h["pgd_acc"].iloc[-1])}
    if progress:
        progress(1.0, "done")
    hist = pd.concat(frames, ignore_index=True)
    metrics = {f"{m}_{k}": float(v) for m, f in finals.items() for k, v in f.items()
               if k in ("clean_acc", "pgd_acc", "grad_alignment", "min_grad_alignment", "peak_pgd_acc",
                        "last_fgsm_acc")}
    verdict, why = "not attempted", "FGSM and FGSM + GradAlign are not both among the methods"
    if "fgsm" in finals and "fgsm_gradalign" in finals:
        f, g = finals["fgsm"], finals["fgsm_gradalign"]
        ok = (f["pgd_acc"] < 0.10 and g["pgd_acc"] >= f["pgd_acc"] + 0.20
              and f["grad_alignment"] <= g["grad_alignment"] - 0.10)
        verdict = "reproduced" if ok else "not reproduced"
        why = ("FGSM: PGD accuracy < 10% with collapsed alignment; GradAlign keeps >= 20 points more PGD accuracy"
               if ok else "FGSM does not overfit catastrophically, or GradAlign does not prevent it (see measured)")
    parts = [f"{m}: clean {f['clean_acc']:.1%}, PGD-{final_pgd_steps}-{final_pgd_restarts} {f['pgd_acc']:.1%} "
             f"(peak during training {f['peak_pgd_acc']:.1%}), alignment {f['grad_alignment']:.2f} "
             f"(min {f['min_grad_alignment']:.2f})" for m, f in finals.items()]
    dead = [m for m, f in finals.items() if not f["clean_acc"] > 0.2 or not np.isfinite(f["grad_alignment"])]
    measured = (f"eps={eps}, {epochs} epochs, seed {seed}. " + "; ".join(parts) + "."
                + "".join(f" {m} did not learn (clean accuracy near chance or vanishing input gradients: dead ReLUs); "
                          f"try a smaller lam or detach_clean=True." for m in dead))
    notes = ["Digits 8x8 instead of CIFAR-10 (not available offline); eps = 0.25 on the [0,1] scale and Adam "
             "lr_max = 0.01 (thesis: 10/255 and 0.003 on CIFAR-10) — chosen so that FGSM AT overfits within 30 epochs.",
             "GradAlign differentiates through both input gradients (thesis Eq. 2.7); the public code detaches "
             "grad_x l(x) (detach_clean=True reproduces it).",
             "Collapse on digits is gradual (over several epochs), not the abrupt one-epoch CO of Fig. 2.11.",
             "Seed dependence measured at the test size: seed 1 — FGSM does not collapse (PGD-20 33%); seed 2 — FGSM "
             "collapses (6.9%) but full-graph GradAlign with lambda = 1 drives the CNN to dead ReLUs (clean 10%), "
             "while the detached (public-code) variant (28.5%) and lambda = 0.5 (40.3%) train normally."]
    return Outcome(data={"history": hist, "final": finals, "eps": eps}, measured=measured, verdict=verdict,
                   verdict_reason=why, metrics=metrics,
                   settings={"methods": list(methods), "eps": eps, "epochs": epochs, "lam": lam, "lr_max": lr_max,
                             "n_filters": n_filters, "seed": seed, "batch_size": batch_size,
                             "final_pgd": f"PGD-{final_pgd_steps}-{final_pgd_restarts}", "detach_clean": detach_clean},
                   notes=notes)


register("fig2.2", repro_lemma1, chapter=2, title="Lemma 1: FGSM-RS perturbation norm",
         claim="FGSM-RS shrinks the expected l2 norm of the perturbation: E||delta||_2 <= sqrt(d) sqrt(-a^3/(6eps) + "
               "a^2/2 + eps^2/3) <= sqrt(d) eps, ~ (7/255) sqrt(d) for a = 1.25 eps at eps = 8/255 (Lemma 1, "
               "Eq. 2.4, §2.4; Fig. 2.2).",
         params=[Param("eps", 8 / 255, help="l_inf radius (pixel scale)"),
                 Param("d", 3072, test=3072, help="input dimension (CIFAR-10: 3072)"),
                 Param("points", 41, test=21, help="alpha/eps grid points in [0, 2]"),
                 Param("samples", 1000, test=500, help="Monte-Carlo draws of eta (thesis: 1000)"),
                 Param("seed", 0)],
         figure="workbench.viz.thesis_adv:lemma1_figure")
register("fig2.9", repro_lemma2, chapter=2, title="Lemma 2: gradient alignment at initialisation",
         claim="At initialisation a single-layer CNN has high gradient alignment: >= max{1 - sqrt(2) "
               "E[exp(-<w/|w|,z>^2/eps^2)]^(1/2), 0.5}; all quantities in [0.7, 1] for eps <= 0.1 (Lemma 2, §2.5; "
               "Fig. 2.9, §2.8.2).",
         params=[Param("eps_max", 0.1), Param("points", 21, test=11), Param("p", 27, help="patch size 3x3x3"),
                 Param("k", 100, help="patches"), Param("m", 4, help="filters"),
                 Param("samples", 1000, test=400, help="Monte-Carlo samples (thesis: 1000)"), Param("seed", 0)],
         figure="workbench.viz.thesis_adv:lemma2_figure")
register("fig2.11", repro_fast_at, chapter=2, title="Fast AT on digits: FGSM vs GradAlign (scaled-down Fig. 2.11)",
         claim="FGSM AT of a 4-filter single-layer CNN overfits catastrophically (PGD accuracy -> ~0 while FGSM "
               "accuracy rises) together with a collapse of gradient alignment; FGSM + GradAlign avoids it "
               "(Fig. 2.11; §2.5; Eq. 2.7).",
         params=[Param("methods", ["fgsm", "fgsm_rs", "fgsm_gradalign", "pgd"], test=["fgsm", "fgsm_gradalign"],
                       help=f"any of {METHODS}"),
                 Param("eps", 0.25, help="l_inf radius on the [0,1] scale"),
                 Param("epochs", 30), Param("lam", 1.0, help="GradAlign lambda"),
                 Param("lr_max", 0.01, help="peak of the cyclic Adam schedule (thesis CNN: 0.003)"),
                 Param("n_filters", 4), Param("seed", 0),
                 Param("eval_every", 20, test=40, help="iterations between measurements (256 test points)"),
                 Param("final_pgd_steps", 50, test=20, help="steps of the final PGD evaluation (thesis: 50)"),
                 Param("final_pgd_restarts", 10, test=1, help="restarts of the final PGD evaluation (thesis: 10)"),
                 Param("detach_clean", False, help="public-code GradAlign (detached clean gradient)")],
         figure="workbench.viz.thesis_adv:fast_at_figure")
