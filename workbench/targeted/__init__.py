"""Targeted clean-label poisoning: threat setups, gradient matching, feature collision, Bullseye Polytope,
victim training scenarios, trial studies and the effective-poison analysis of [Yang 2022].

No UI imports.
"""
from .common import Attack, CraftProgress, DiffAugment, penultimate
from .gradient_matching import GradientMatching, alignment_loss, target_gradient
from .setup import PixelBox, ThreatSetup, load_setups, make_setups, save_setups
from .victim import SCENARIOS, VictimConfig, VictimResult, evaluate_target, pretrain, train_victim

__all__ = ["Attack", "CraftProgress", "DiffAugment", "penultimate", "GradientMatching", "alignment_loss",
           "target_gradient", "PixelBox", "ThreatSetup", "load_setups", "make_setups", "save_setups", "SCENARIOS",
           "VictimConfig", "VictimResult", "evaluate_target", "pretrain", "train_victim"]
