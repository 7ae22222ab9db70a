"""Train-time defenses against targeted data poisoning: EPIC ([Yang 2022, Alg. 1]) and the baselines of its Fig. 2.

* :class:`EPIC` — drop isolated facility-location medoids of every class in the
  last-layer gradient space, every ``period`` epochs after ``warmup``.
* :class:`DropHighestLoss`, :class:`DropLowestConfidence` — loss / confidence filters
  on the same schedule.
* :mod:`~workbench.defenses.medoids` — greedy facility location (own exact greedy,
  or ``submodlib`` / ``apricot``), nearest-medoid clusters.
* :mod:`~workbench.defenses.analysis` — data of [Yang 2022, Figs. 2–5].

Use with the trainer: ``Trainer(config, data=bundle, defense=EPIC(budget=0.2, period=2, warmup=10)).run()``.
No UI imports.
"""
from .base import LOG_COLUMNS, ROUND_KEYS, SelectionDefense
from .baselines import DropHighestLoss, DropLowestConfidence, ScoreFilter, loss_and_confidence
from .epic import EPIC, PROXIES, gradient_proxies
from .medoids import (
    GREEDY_METHODS,
    KERNELS,
    ClassClusters,
    assign_to_medoids,
    class_medoid_clusters,
    facility_location_similarity,
    greedy_facility_location,
    medoid_budget,
)

__all__ = ["SelectionDefense", "EPIC", "DropHighestLoss", "DropLowestConfidence", "ScoreFilter", "PROXIES",
           "gradient_proxies", "loss_and_confidence", "GREEDY_METHODS", "KERNELS", "greedy_facility_location",
           "facility_location_similarity", "assign_to_medoids", "class_medoid_clusters", "ClassClusters",
           "medoid_budget", "LOG_COLUMNS", "ROUND_KEYS"]

#: Defense name (``SelectionDefense.name``) → class.
DEFENSE_CLASSES = {cls.name: cls for cls in (EPIC, DropHighestLoss, DropLowestConfidence)}


def defense_from_state(state: dict) -> SelectionDefense:
    """Rebuild a defense (same class and settings, same rounds/log/kept set) from its ``state_dict()``.

    E.g. from a run's checkpoint: ``defense_from_state(load_checkpoint(path)["defense"])``; pass the
    result to ``Trainer.from_run(path, defense=...)`` to resume, or to the analysis functions.

    Raises:
        ValueError: not a defense state, or an unknown defense name.
    """
    if not isinstance(state, dict) or "name" not in state or "config" not in state:
        raise ValueError("not a defense state (expected the dict of SelectionDefense.state_dict())")
    cls = DEFENSE_CLASSES.get(state["name"])
    if cls is None:
        raise ValueError(f"unknown defense {state['name']!r}: known are {sorted(DEFENSE_CLASSES)}")
    d = cls(**state["config"])
    d.load_state_dict(state)
    return d


__all__ += ["DEFENSE_CLASSES", "defense_from_state"]
