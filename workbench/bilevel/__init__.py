"""Optimal poisoning of L2-regularised logistic regression as a minimax bilevel problem.

Source: [Carnerero-Cano 2021] (Carnerero-Cano, Muñoz-González, Spencer, Lupu,
"Regularization can help mitigate poisoning attacks... with the right hyperparameters").

* :mod:`.model`: the inner problem (L2-regularised logistic regression, λ on a log scale,
  full-batch GD, batched training of many models, Newton solver, mini-batch SGD to test).
* :mod:`.hypergrad`: hypergradients by reverse-mode differentiation through T steps
  (App. B, Alg. 1, with the Eq. 3 products) and implicitly at the optimum (CG).
* :mod:`.attack`: projected hypergradient ascent on X_p / descent on λ (Eq. 1–2), restarts.
* :mod:`.illustration`: the 2-D Gaussian example of Fig. 1 with vectorised maps.
* :mod:`.study`: the Fig. 2–3 study (four λ strategies vs poisoning fraction).

No UI imports.
"""
from .attack import AttackConfig, AttackResult, AttackStep, init_poison, project_box, project_lambda, run_attack
from .hypergrad import (
    BilevelProblem,
    Hypergradient,
    central_difference,
    conjugate_gradient,
    grad_vjp,
    implicit_hypergradient,
    reverse_hypergradient,
    unrolled_objective,
)
from .illustration import (
    Illustration,
    IllustrationSettings,
    PoisonMaps,
    Toy2D,
    argmin_lambda,
    gaussian_2d,
    illustrate,
    load_illustration,
    poison_maps,
    save_illustration,
)
from .model import error_rate, solve_inner, train_gd, train_gd_batched, train_loss, train_sgd, val_loss

__all__ = ["AttackConfig", "AttackResult", "AttackStep", "init_poison", "project_box", "project_lambda", "run_attack",
           "BilevelProblem", "Hypergradient", "central_difference", "conjugate_gradient", "grad_vjp",
           "implicit_hypergradient", "reverse_hypergradient", "unrolled_objective", "Illustration",
           "IllustrationSettings", "PoisonMaps", "Toy2D", "argmin_lambda", "gaussian_2d", "illustrate",
           "load_illustration", "poison_maps", "save_illustration", "error_rate", "solve_inner", "train_gd",
           "train_gd_batched", "train_loss", "train_sgd", "val_loss"]
