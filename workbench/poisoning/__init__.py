"""Data poisoning: sharpness-aware poisons ([Murphy 2025, Ch. 3 and 6]) and, later, targeted attacks."""
from ..data.poison import Poison, apply_poison, load_poison, save_poison
from .sharpness_aware import (
    POISON_FILE,
    CraftResult,
    CraftStep,
    PoisonConfig,
    SharpnessAwarePoisoner,
    cosine_loss,
    craft_poison,
    matched_noise,
    project,
)
from .study import (
    NOISE_FILE,
    VARIANTS,
    PoisonComparison,
    PoisonStudyEvent,
    compare_poison,
    craft_records,
    open_comparison,
    poison_probes,
    poison_search,
    read_search,
    table41_grid,
    variant_configs,
)

__all__ = ["PoisonConfig", "SharpnessAwarePoisoner", "CraftStep", "CraftResult", "craft_poison", "cosine_loss",
           "project", "matched_noise", "Poison", "save_poison", "load_poison", "apply_poison", "POISON_FILE",
           "compare_poison", "open_comparison", "PoisonComparison", "PoisonStudyEvent", "variant_configs", "VARIANTS",
           "NOISE_FILE", "poison_search", "read_search", "table41_grid", "craft_records",
           "poison_probes"]
