"""Targeted-poisoning trials with and without a defense, and the tables of [Yang 2022, Tables 1–2].

:func:`run_trials` does, for a :class:`TrialStudy`:

1. train the clean pretrained model (the attacker's crafting model; for ``transfer`` and
   ``finetune`` also the victim's starting point — the white-box setting of [Yang 2022, §4.1.2]);
2. draw ``trials`` seeded threat setups (:func:`~workbench.targeted.setup.make_setups`) and
   save them (``setups.json``, poisoning-benchmark fields included);
3. per setup: craft the poison (saved as ``poisons/trial_XXX.pt``), train a clean victim
   (the "clean run": the target's adversarial-label probability without poisons), then one
   victim per defense (``"none"`` = undefended) on the poisoned data; one JSON line per
   (trial, defense) in ``trials.jsonl`` (a re-run skips what is recorded: resumable).

Attack success = the victim classifies the target as ``y_adv`` ([Yang 2022, §4]). :func:`table1`
gives [Yang 2022, Table 1]'s layout (attack × scenario; undefended / defended attack success and
test accuracy), :func:`table2` Table 2's (one row per defense: attack success, test
accuracy, time), both from the trial records (mean ± standard error over trials).

The study folder is run by the study engine (:mod:`workbench.engine`): ``trials.jsonl`` is a
:class:`~workbench.engine.Journal` (torn-line tolerant, latest record per (trial, defense)
wins), ``spec.json`` binds the folder to the study's definition (attack, victim, threat
setups, pretraining, model: a changed one is refused with a one-line
:class:`~workbench.engine.SpecMismatchError`; more trials or defenses extend it), and a
callback that raises is disabled with a warning naming it.

Defenses are named by spec dicts, built lazily from :mod:`workbench.defenses`
(``{"name": "epic", "budget": 0.2, "period": 2, "warmup": 4}``; ``drop_highest_loss``,
``drop_lowest_confidence``) so this module imports without them.

No UI imports.
"""
from __future__ import annotations

import dataclasses
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd

from ..config import ModelConfig
from ..data.poison import load_poison, save_poison
from ..engine import CallbackList, Journal, bind_spec
from ..runs.store import atomic_write_bytes
from .common import CraftProgress
from .setup import make_setups, save_setups
from .victim import VictimConfig, pretrain, train_victim

__all__ = ["ATTACKS", "DEFENSES", "make_attack", "make_defense", "defense_label", "TrialStudy", "TrialEvent",
           "run_trials", "read_trials", "trials_journal", "table1", "table2", "ATTACK_LABELS"]

ATTACKS = ("gradient_matching", "feature_collision", "bullseye_polytope")
ATTACK_LABELS = {"gradient_matching": "Gradient Matching", "feature_collision": "Feature Collision",
                 "bullseye_polytope": "Bullseye Polytope"}
DEFENSES = ("none", "epic", "drop_highest_loss", "drop_lowest_confidence")
SCENARIO_LABELS = {"scratch": "From-scratch", "transfer": "Transfer", "finetune": "Finetune"}


def make_attack(name: str, **kwargs):
    """An attack object by name (``gradient_matching``, ``feature_collision``, ``bullseye_polytope``)."""
    if name == "gradient_matching":
        from .gradient_matching import GradientMatching
        return GradientMatching(**kwargs)
    if name == "feature_collision":
        from .feature_collision import FeatureCollision
        return FeatureCollision(**kwargs)
    if name == "bullseye_polytope":
        from .feature_collision import BullseyePolytope
        return BullseyePolytope(**kwargs)
    raise ValueError(f"attack={name!r} is invalid: choose one of {', '.join(ATTACKS)}")


def make_defense(spec: Mapping | None):
    """A fresh defense object from a spec dict (``None`` or ``{"name": "none"}``: no defense).

    Raises:
        ValueError: unknown name; ImportError: :mod:`workbench.defenses` is not available.
    """
    if spec is None or spec.get("name", "none") == "none":
        return None
    kw = {k: v for k, v in spec.items() if k not in ("name", "label")}
    name = spec["name"]
    from .. import defenses as D  # imported lazily: the defenses package is optional here

    cls = {"epic": "EPIC", "drop_highest_loss": "DropHighestLoss", "drop_lowest_confidence": "DropLowestConfidence"}
    if name not in cls:
        raise ValueError(f"defense={name!r} is invalid: choose one of {', '.join(DEFENSES)}")
    return getattr(D, cls[name])(**kw)


def defense_label(spec: Mapping | None) -> str:
    """Table label: ``None``, ``EPIC-0.2``, ``Drop highest loss``, or the spec's ``label``."""
    if spec is None or spec.get("name", "none") == "none":
        return "None"
    if spec.get("label"):
        return str(spec["label"])
    if spec["name"] == "epic":
        return f"EPIC-{spec.get('budget', 0.2):g}"
    return spec["name"].replace("_", " ").capitalize()


@dataclass
class TrialStudy:
    """Definition of a set of targeted-poisoning trials.

    Attributes:
        attack: one of :data:`ATTACKS`; attack_kwargs: its settings.
        victim: the victim's training (:class:`VictimConfig`; ``scenario`` included).
        defenses: spec dicts (``{"name": "none"}`` first for the undefended run).
        trials, budget, epsilon, seed: the setups (:func:`make_setups`).
        pretrain_epochs, pretrain_seed, pretrain_lr: the clean pretrained model.
        model: architecture (``ModelConfig`` dict; LeNet-5 by default).
        victim_seeds: victim seed per trial = ``victim.seed + trial`` when ``True``, else ``victim.seed``.
    """

    attack: str = "bullseye_polytope"
    attack_kwargs: dict = field(default_factory=dict)
    victim: VictimConfig = field(default_factory=lambda: VictimConfig(scenario="transfer", epochs=20, lr=0.01))
    defenses: list = field(default_factory=lambda: [{"name": "none"}])
    trials: int = 10
    budget: float = 0.04
    epsilon: float = 64 / 255
    seed: int = 0
    pretrain_epochs: int = 30
    pretrain_seed: int = 0
    pretrain_lr: float = 0.05
    model: dict = field(default_factory=lambda: {"name": "lenet5"})
    victim_seeds: bool = True

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"attack={self.attack!r} is invalid: choose one of {', '.join(ATTACKS)}")
        if isinstance(self.victim, dict):
            self.victim = VictimConfig(**self.victim)
        if not isinstance(self.trials, int) or self.trials < 1:
            raise ValueError(f"trials={self.trials!r} is invalid: must be a positive integer")
        for d in self.defenses:
            if d.get("name", "none") not in DEFENSES:
                raise ValueError(f"defense {d!r} is invalid: name must be one of {', '.join(DEFENSES)}")

    def to_dict(self) -> dict:
        """The study as a plain dict (the victim's settings nested); :meth:`from_dict` inverts it."""
        d = dataclasses.asdict(self)
        d["victim"] = self.victim.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrialStudy":
        """A study from :meth:`to_dict`'s output (e.g. a saved ``study.json``)."""
        d = dict(d)
        if isinstance(d.get("victim"), dict):
            v = dict(d["victim"])
            v["milestones"] = tuple(v.get("milestones", (25 / 40, 35 / 40)))
            d["victim"] = VictimConfig(**v)
        return cls(**d)


@dataclass(frozen=True)
class TrialEvent:
    """Progress of :func:`run_trials`: ``stage`` is pretrain, craft, victim or done; ``record`` a finished row."""

    stage: str
    trial: int
    trials: int
    defense: str | None = None
    record: dict | None = None
    craft: CraftProgress | None = None


def _se(v: pd.Series) -> float:
    v = v.dropna()
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def trials_journal(root: str | Path) -> Journal:
    """The journal ``<root>/trials.jsonl`` of a study folder (key ``(trial, defense)``)."""
    return Journal(Path(root) / "trials.jsonl", ("trial", "defense"), default=float)


def read_trials(root: str | Path) -> pd.DataFrame:
    """The trial records of a study folder (``trials.jsonl``), latest record per (trial, defense).

    A torn line (a study killed mid-write) is skipped; a line that is not a trial record (JSON but not
    an object, or without ``trial``/``defense``) is skipped with a ``RuntimeWarning``.
    """
    return pd.DataFrame(list(trials_journal(root).latest().values()))


def _bind(root: Path, study: TrialStudy) -> None:
    """Bind the folder to what makes its records valid (all of the study but ``trials`` and ``defenses``)."""
    d = study.to_dict()
    for k in ("trials", "defenses"):
        d.pop(k, None)
    bind_spec(root / "spec.json", d, what="targeted-poisoning study",
              hint="attack, victim, threat setups, pretraining or model")


def run_trials(data, study: TrialStudy, root: str | Path | None = None, *,
               callback: Callable[[TrialEvent], None] | None = None, stop: threading.Event | None = None,
               device: str = "cpu", pretrained=None) -> pd.DataFrame:
    """Run (or resume) the trials of ``study`` on ``data``; returns one row per (trial, defense).

    Columns: trial, target_index, target_class, poison_class, poisons, attack, scenario, defense
    (label), success, adv_prob, clean_adv_prob, target_pred, test_acc, clean_test_acc,
    craft_seconds, train_seconds, defense_seconds, dropped, poisons_dropped, kept, epochs.

    Args:
        data: the :class:`~workbench.data.DataBundle`.
        study: the definition (saved as ``study.json`` in ``root``).
        root: study folder (``None``: nothing written, nothing resumed).
        callback: receives :class:`TrialEvent` objects (crafting progress included).
        stop: ``threading.Event``; the study stops after the current victim / crafting iteration.
        pretrained: a ready clean model (skips pretraining; it must fit ``data``).
        device: device of the pretraining, crafting and victim trainings.

    Raises:
        SpecMismatchError: ``root`` holds a study with another attack, victim, setups or model (one line).
    """
    root = Path(root) if root is not None else None
    emit = CallbackList([callback], what="targeted study")
    model_cfg = ModelConfig(**study.model)
    journal = trials_journal(root) if root is not None else None
    if root is not None:
        _bind(root, study)
    done = journal.latest() if journal is not None else {}
    have = set(done)
    rows = list(done.values())
    if root is not None:
        atomic_write_bytes(root / "study.json", (json.dumps(study.to_dict(), indent=1) + "\n").encode())
    if pretrained is None:
        emit(TrialEvent("pretrain", -1, study.trials))
        pretrained = pretrain(data, model_cfg=model_cfg, epochs=study.pretrain_epochs, lr=study.pretrain_lr,
                              seed=study.pretrain_seed, device=device, stop=stop)
    setups = make_setups(data, study.trials, budget=study.budget, epsilon=study.epsilon, seed=study.seed)
    if root is not None:
        save_setups(setups, root / "setups.json", extra={"dataset": data.name, "study": study.to_dict()})
    for s in setups:
        if stop is not None and stop.is_set():
            break
        labels = [defense_label(d) for d in study.defenses]
        if all((s.trial, lab) in have for lab in labels):
            continue
        ppath = root / "poisons" / f"trial_{s.trial:03d}.pt" if root is not None else None
        attack = make_attack(study.attack, **study.attack_kwargs)
        if ppath is not None and ppath.is_file():
            poison = load_poison(ppath)
            craft_s = float(poison.meta.get("seconds", float("nan")))
        else:
            emit(TrialEvent("craft", s.trial, study.trials))
            poison = attack.craft(pretrained, s, data, stop=stop,
                                  callback=lambda p, t=s.trial: emit(TrialEvent("craft", t, study.trials, craft=p)))
            craft_s = attack.seconds
            if poison.meta.get("stopped"):
                break
            if ppath is not None:
                save_poison(poison, ppath)
        vcfg = dataclasses.replace(study.victim, seed=study.victim.seed + (s.trial if study.victim_seeds else 0))
        emit(TrialEvent("victim", s.trial, study.trials, defense="clean"))
        clean = train_victim(data, None, vcfg, setup=s, model_cfg=model_cfg, pretrained=pretrained, stop=stop,
                             device=device, eval_every=vcfg.epochs)
        for spec, lab in zip(study.defenses, labels):
            if (s.trial, lab) in have:
                continue
            if stop is not None and stop.is_set():
                break
            emit(TrialEvent("victim", s.trial, study.trials, defense=lab))
            defense = make_defense(spec)
            res = train_victim(data, poison, vcfg, setup=s, model_cfg=model_cfg, pretrained=pretrained,
                               defense=defense, stop=stop, device=device, eval_every=vcfg.epochs)
            if res.status != "finished":
                break
            log = res.dropped if isinstance(res.dropped, pd.DataFrame) else None
            pois = set(s.poison_indices)
            dropped_idx = set(log["index"].astype(int)) if log is not None and len(log) else set()
            rec = {"trial": s.trial, "target_index": s.target_index, "target_class": s.target_class,
                   "poison_class": s.poison_class, "poisons": s.num_poisons, "attack": study.attack,
                   "scenario": vcfg.scenario, "defense": lab, "success": bool(res.success),
                   "adv_prob": res.adv_prob, "clean_adv_prob": clean.adv_prob, "target_pred": res.target_pred,
                   "test_acc": res.test_acc, "clean_test_acc": clean.test_acc, "craft_seconds": craft_s,
                   "train_seconds": res.seconds, "defense_seconds": res.defense_seconds,
                   "dropped": len(dropped_idx), "poisons_dropped": len(dropped_idx & pois), "kept": int(len(res.kept)),
                   "epochs": vcfg.epochs, "epsilon": s.epsilon, "budget": s.budget,
                   "craft_final_loss": poison.meta.get("final_loss")}
            rows.append(rec)
            have.add((s.trial, lab))
            if journal is not None:
                journal.append(rec)
            emit(TrialEvent("victim", s.trial, study.trials, defense=lab, record=rec))
    emit(TrialEvent("done", study.trials, study.trials))
    return pd.DataFrame(rows)


def _pct(m: float, s: float | None = None) -> str:
    if m != m:
        return "–"
    return f"{100 * m:.1f}%" + (f" ± {100 * s:.1f}%" if s is not None and s == s else "")


def table1(df: pd.DataFrame, *, formatted: bool = True) -> pd.DataFrame:
    """[Yang 2022, Table 1] layout: rows (attack, scenario); columns undefended / each defense × (success, test acc.).

    Values are means over trials (fractions; ``formatted`` renders percentages).
    """
    if df.empty:
        return pd.DataFrame()
    out = {}
    for (att, sc), g in df.groupby(["attack", "scenario"], sort=False):
        row = {}
        for lab, h in g.groupby("defense", sort=False):
            head = "Undefended" if lab == "None" else f"Defended ({lab})"
            s, a = h["success"].astype(float).mean(), h["test_acc"].mean()
            row[(head, "Att. succ. ↓" if lab != "None" else "Att. succ. ↑")] = _pct(s) if formatted else s
            row[(head, "Test acc. ↑")] = _pct(a) if formatted else a
        out[(ATTACK_LABELS.get(att, att), SCENARIO_LABELS.get(sc, sc))] = row
    t = pd.DataFrame(out).T
    t.index.names = ["Attack", "Scenario"]
    t.columns = pd.MultiIndex.from_tuples(t.columns)
    return t


def _hms(seconds: float) -> str:
    if seconds != seconds:
        return "–"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


def table2(df: pd.DataFrame, *, formatted: bool = True) -> pd.DataFrame:
    """[Yang 2022, Table 2] layout: one row per (epochs, defense): attack success, test accuracy (mean ± s.e.), time.

    ``Time`` is the mean victim training wall time per trial (defense included; crafting excluded),
    as h:mm:ss; ``Trials`` the number of trials.
    """
    if df.empty:
        return pd.DataFrame()
    rows = []
    for (ep, lab), g in df.groupby(["epochs", "defense"], sort=False):
        s, a = g["success"].astype(float), g["test_acc"]
        rows.append({"Epochs": int(ep), "Defense": lab,
                     "Attack succ. ↓": _pct(s.mean(), _se(s)) if formatted else s.mean(),
                     "Test acc. ↑": _pct(a.mean(), _se(a)) if formatted else a.mean(),
                     "Time": _hms(g["train_seconds"].mean()) if formatted else g["train_seconds"].mean(),
                     "Trials": len(g)})
    return pd.DataFrame(rows).set_index(["Epochs", "Defense"])
