"""Train-time defenses against targeted data poisoning: EPIC (002 Alg. 1) and the Fig. 2 baselines.

* :class:`EPIC` — drop isolated facility-location medoids of every class in the
  last-layer gradient space, every ``period`` epochs after ``warmup``.
* :class:`DropHighestLoss`, :class:`DropLowestConfidence` — loss / confidence filters
  on the same schedule.
* :mod:`~workbench.defenses.medoids` — greedy facility location (own exact greedy,
  or ``submodlib`` / ``apricot``), nearest-medoid clusters.
* :mod:`~workbench.defenses.analysis` — data of 002 Figs. 2–5.

Use with the trainer: ``Trainer(config, data=bundle, defense=EPIC(budget=0.2, period=2, warmup=10)).run()``.
No UI imports.
"""
from .base import LOG_COLUMNS, ROUND_KEYS, SelectionDefense
from .baselines import DropHighestLoss, DropLowestConfidence, ScoreFilter, loss_and_confidence
from .epic import EPIC, PROXIES, gradient_proxies
from .medoids import (GREEDY_METHODS, ClassClusters, assign_to_medoids, class_medoid_clusters,
                      facility_location_similarity, greedy_facility_location, medoid_budget)

__all__ = ["SelectionDefense", "EPIC", "DropHighestLoss", "DropLowestConfidence", "ScoreFilter", "PROXIES",
           "gradient_proxies", "loss_and_confidence", "GREEDY_METHODS", "greedy_facility_location",
           "facility_location_similarity", "assign_to_medoids", "class_medoid_clusters", "ClassClusters",
           "medoid_budget", "LOG_COLUMNS", "ROUND_KEYS"]
