"""The paper-size MNIST '0' vs '8' preset of the bilevel study, on the shipped ``mnist-10k``.

Source: [Carnerero-Cano 2021, §4, App. C.2 (Tables 1–3), Fig. 2].

The paper's MNIST test set is the 1,954 official MNIST test images of 0 and 8 [Carnerero-Cano
2021, Table 1]; ``mnist-10k`` ships exactly those 10,000 official test images, so this preset
draws the paper's 512 training / 171 validation points from the 1,954 and keeps the 1,271 left
over as the fixed test set (a seeded stratified hold-out; every repetition re-splits the other
683 into training and validation, as the paper re-splits training/validation per repetition
with the test set fixed). Everything else is the paper's MNIST column: α = 0.99, β = 0.8,
Φ(D_p) = [0, 1]^784, Φ(λ) = [−8, log 200], η = 0.1, T = 150, T_{D_p} = T_mul = 100, T_λ = 50,
λ_RMD warm-started at log 5, λ_CLEAN by 5-fold CV over [−8, 1]; testing with SGD η_tr = 0.01,
batch 64, 200 epochs; 17 poisoning points per batch, 5 batches (0–16.6 %). The paper averages
10 repetitions; the preset runs 5 (the CPU budget of this project), ``reps`` overrides it.

``workbench bilevel study --preset mnist-10k-0v8 --out DIR`` runs it from the command line;
notebook 05 reads the stored results (``results/bilevel/mnist-10k-0v8``).

No UI imports.
"""
from __future__ import annotations

from pathlib import Path

from .study import StudySettings, paper_settings

__all__ = ["PRESETS", "preset_settings", "mnist10k_settings", "RESULTS_DIR"]

RESULTS_DIR = Path(__file__).resolve().parents[2] / "results" / "bilevel" / "mnist-10k-0v8"
"""Where the repository keeps the stored paper-size run (read by notebook 05)."""


def mnist10k_settings(**overrides) -> StudySettings:
    """The paper-size MNIST 0-vs-8 study on ``mnist-10k`` (512 / 171 / 1,271; 5 repetitions), ``overrides`` applied.

    Raises:
        ValueError: an override is invalid (from :class:`StudySettings`).
    """
    return paper_settings("mnist-10k", **{"reps": 5, **overrides})


PRESETS = {"mnist-10k-0v8": mnist10k_settings}
"""Preset name → function ``(**overrides) -> StudySettings``."""


def preset_settings(name: str, **overrides) -> StudySettings:
    """The settings of preset ``name`` (see :data:`PRESETS`) with ``overrides`` applied.

    Raises:
        ValueError: unknown preset (one line naming the known ones).
    """
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} is unknown: choose one of {sorted(PRESETS)}")
    return PRESETS[name](**overrides)
