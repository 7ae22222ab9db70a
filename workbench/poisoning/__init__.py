"""Data poisoning: sharpness-aware poisons (000 report Ch. 3, 6) and, later, targeted attacks."""
from ..data.poison import Poison, apply_poison, load_poison, save_poison
from .sharpness_aware import (POISON_FILE, CraftResult, CraftStep, PoisonConfig, SharpnessAwarePoisoner, cosine_loss,
                              craft_poison, matched_noise, project)

__all__ = ["PoisonConfig", "SharpnessAwarePoisoner", "CraftStep", "CraftResult", "craft_poison", "cosine_loss",
           "project", "matched_noise", "Poison", "save_poison", "load_poison", "apply_poison", "POISON_FILE"]
