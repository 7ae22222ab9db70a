"""EPIC's efficacy: attack success with and without a defense over many targets ([Yang 2022, Table 1]).

An :class:`EfficacyStudy` names an attack, a dataset, a victim pipeline and the defenses to
compare. :func:`run_efficacy` then

1. trains the clean pretrained LeNet-5 (the attacker's crafting model; in transfer learning
   also the victim's fixed feature extractor — the white-box setting of [Yang 2022, §4.1.2]);
2. trains one clean victim (fixed victim seed) and evaluates every target on it: the
   target's adversarial-label probability and prediction without poisons;
3. draws ``trials`` seeded threat setups (:func:`~workbench.targeted.make_setups`: a target
   test image, an adversarial class, ``budget`` of the training set as poisons of that class);
4. per setup crafts the poison (Bullseye Polytope, Feature Collision or Gradient Matching,
   :func:`~workbench.targeted.study.make_attack`) and trains one victim per defense spec
   (``{"name": "none"}`` = undefended, EPIC, the loss / confidence filters), all with the
   same victim seed, so that the defenses are compared on the same poisons and the same
   batch order (paired trials).

Every finished (trial, defense) is appended to ``records.jsonl`` at once (a killed run
loses nothing written; a re-run skips what is recorded). :func:`summarize` turns the records
into one row per (attack, defense): attack success with its 95 % Wilson interval, the exact
McNemar test against the undefended victims on the same trials, test accuracy (mean, 95 %
t-interval), examples dropped (all, poisons, clean).

Transfer learning is run in feature space: with the feature extractor ``f`` fixed (eval
mode, no gradients), training the re-initialised last linear layer on ``f(x)`` *is* the
transfer scenario of [Yang 2022, §4.1.2]. :func:`transfer_features` computes ``f`` once per
split (the poisons' rows once per trial) and the victim is a one-layer model holding the
pretrained head (:func:`head_model`), trained by the same
:func:`~workbench.targeted.train_victim` (``scenario="transfer"``: the same head
re-initialisation, optimizer, schedule and batch order as on images). EPIC's proxies
``softmax(z) − onehot(y)`` and ``(softmax(z) − onehot(y)) W`` and the loss / confidence
scores are functions of the logits only, so the defenses see exactly what they see on
images; the victim trains about 100× faster. ``tests/test_epic_efficacy.py`` checks that
both paths give the same victim.

Stored results of the study run for the project (``workbench/defenses/results/``) are read by
:func:`load_stored_results`; the notebook ``04_targeted_poisoning_and_epic`` shows them.

Command line: ``python -m workbench.defenses.efficacy --attack bullseye_polytope --trials 20
--out runs/epic_efficacy`` (``--help`` for the rest).

No UI imports.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..stats import t_interval

__all__ = ["DEFAULT_DATASET", "ATTACK_SCENARIOS", "EfficacyStudy", "default_defenses", "transfer_features",
           "head_model", "run_efficacy", "read_records", "summarize", "efficacy_table", "wilson_interval",
           "mcnemar_exact", "load_stored_results", "RESULTS_DIR"]

#: The study's dataset: the real 28×28 MNIST test set shipped with the package.
DEFAULT_DATASET = "mnist-10k"
#: Scenario each attack is run in by [Yang 2022, Table 1].
ATTACK_SCENARIOS = {"bullseye_polytope": "transfer", "feature_collision": "transfer",
                    "gradient_matching": "scratch"}
#: Folder of the stored study results read by :func:`load_stored_results`.
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def default_defenses(scenario: str, epochs: int) -> list[dict]:
    """The compared defenses for a pipeline of ``epochs`` epochs, with the paper's schedules scaled.

    * ``none`` — the undefended victim;
    * EPIC — transfer: EPIC-0.2 with ``T = 1`` ([Yang 2022, §4.1.2]) after a one-epoch warm-up
      (Fig. 5 shows rounds from epoch 1); from scratch: EPIC-0.1 with ``K = 10`` and ``T = 2`` of 40
      epochs ([Yang 2022, §4.1.1]), scaled to ``epochs`` (``K = round(epochs/4)``, ``T = max(1, round(epochs/20))``);
    * the baselines of [Yang 2022, Fig. 2] on the same schedule: drop every kept example with
      loss above 1 nat / confidence below 0.5 (the middle thresholds of Fig. 2).
    """
    if scenario == "scratch":
        warmup, period, epic = max(1, round(epochs / 4)), max(1, round(epochs / 20)), 0.1
    else:
        warmup, period, epic = 1, 1, 0.2
    return [{"name": "none"},
            {"name": "epic", "budget": epic, "period": period, "warmup": warmup},
            {"name": "drop_highest_loss", "threshold": 1.0, "period": period, "warmup": warmup,
             "label": "Loss > 1"},
            {"name": "drop_lowest_confidence", "threshold": 0.5, "period": period, "warmup": warmup,
             "label": "Confidence < 0.5"}]


def _default_victim(scenario: str) -> dict:
    if scenario == "scratch":  # the 40-epoch proxy pipeline shortened to what 2 CPU cores allow
        return {"scenario": "scratch", "epochs": 12, "lr": 0.05, "batch_size": 64, "seed": 0}
    return {"scenario": scenario, "epochs": 40, "lr": 0.01, "batch_size": 64, "seed": 0}


@dataclass
class EfficacyStudy:
    """Definition of an efficacy study (one attack, one scenario, several defenses).

    Attributes:
        attack: ``bullseye_polytope``, ``feature_collision`` or ``gradient_matching``.
        dataset: :class:`~workbench.config.DataConfig` name (default :data:`DEFAULT_DATASET`).
        scenario: ``transfer`` / ``scratch`` / ``finetune`` (default: :data:`ATTACK_SCENARIOS`).
        trials: number of targets (seeded setups ``0..trials-1``).
        budget: poisons as a fraction of the training set (1 % in [Yang 2022, §4.1]).
        epsilon: ℓ∞ bound on the [0, 1] pixel scale (8/255 in [Yang 2022, §4.1]; Feature Collision's
            default soft bound ignores it, see :class:`~workbench.targeted.feature_collision.FeatureCollision`).
        attack_kwargs: attack settings (:func:`~workbench.targeted.study.make_attack`).
        victim: :class:`~workbench.targeted.VictimConfig` fields (default by scenario: transfer 40
            epochs lr 0.01, the paper's 40-epoch proxy pipeline; scratch 12 epochs lr 0.05).
        defenses: defense specs (default :func:`default_defenses`).
        pretrain_epochs, pretrain_lr: the clean pretrained model (seed ``seed``).
        seed: setups and pretraining seed.
        max_train: keep at most this many training examples (None: the whole training split).
    """

    attack: str = "bullseye_polytope"
    dataset: str = DEFAULT_DATASET
    scenario: str | None = None
    trials: int = 20
    budget: float = 0.01
    epsilon: float = 8 / 255
    attack_kwargs: dict = field(default_factory=dict)
    victim: dict | None = None
    defenses: list | None = None
    pretrain_epochs: int = 20
    pretrain_lr: float = 0.05
    seed: int = 0
    max_train: int | None = None

    def __post_init__(self) -> None:
        from ..targeted.study import ATTACKS, DEFENSES

        if self.attack not in ATTACKS:
            raise ValueError(f"attack={self.attack!r} is invalid: choose one of {', '.join(ATTACKS)}")
        if self.scenario is None:
            self.scenario = ATTACK_SCENARIOS[self.attack]
        if self.scenario not in ("scratch", "transfer", "finetune"):
            raise ValueError(f"scenario={self.scenario!r} is invalid: choose scratch, transfer or finetune")
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ValueError(f"trials={self.trials!r} is invalid: must be a positive integer")
        v = dict(_default_victim(self.scenario), **(self.victim or {}))
        v["scenario"] = self.scenario
        self.victim = v
        if self.defenses is None:
            self.defenses = default_defenses(self.scenario, int(v["epochs"]))
        for d in self.defenses:
            if d.get("name", "none") not in DEFENSES:
                raise ValueError(f"defense {d!r} is invalid: name must be one of {', '.join(DEFENSES)}")

    def victim_config(self):
        """The victim's :class:`~workbench.targeted.VictimConfig`."""
        from ..targeted import VictimConfig

        return VictimConfig(**self.victim)

    def to_dict(self) -> dict:
        """The study as a JSON-able dict (``study.json``)."""
        return dataclasses.asdict(self)


# ------------------------------------------------------------------ transfer in feature space
@torch.no_grad()
def _features(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    from ..targeted.common import frozen, penultimate

    out = []
    with frozen(model):
        for s in range(0, len(x), batch_size):
            out.append(penultimate(model, x[s:s + batch_size]).detach())
    if not out:
        return torch.zeros(0, 0)
    return torch.cat(out)


def transfer_features(model: nn.Module, data, poison=None, *, base=None):
    """The data as the transfer victim sees it: penultimate features ``f(x)`` of every split.

    Args:
        model: the pretrained network (its input to the last ``nn.Linear`` is ``f``); eval mode,
            left unchanged.
        data: the image :class:`~workbench.data.DataBundle`.
        poison: Δ keyed by dataset index; its rows of the training split are ``f(x + Δ)``.
        base: a clean feature bundle from an earlier call (only the poison rows are recomputed).

    Returns:
        A :class:`~workbench.data.DataBundle` with the same splits, labels and dataset indices and
        ``x [N, D]`` features (``D`` = input width of the last linear layer; 84 for LeNet-5).
    """
    from ..data import DataBundle, IndexedTensorDataset

    def split(ds):
        return IndexedTensorDataset(_features(model, ds.x), ds.y.clone(), ds.index.clone())

    if base is None:
        base = DataBundle(name=f"{data.name}:features", train=split(data.train), val=split(data.val),
                          test=split(data.test), input_shape=(0,), num_classes=data.num_classes,
                          class_names=list(data.class_names), info={"features_of": data.name})
        base.input_shape = (int(base.train.x.shape[1]),)
    if poison is None:
        return base
    from ..data.poison import apply_poison

    rows = torch.nonzero(torch.isin(data.train.index, poison.index)).squeeze(1)
    xp = apply_poison(data.train, poison).x[rows]
    tx = base.train.x.clone()
    tx[rows] = _features(model, xp)
    train = IndexedTensorDataset(tx, base.train.y, base.train.index)
    return dataclasses.replace(base, train=train)


def head_model(model: nn.Module, x: Tensor):
    """``(ModelConfig, nn.Module)``: a one-layer model (``logistic_regression``) holding ``model``'s last linear layer.

    Used as ``pretrained`` for :func:`~workbench.targeted.train_victim` on :func:`transfer_features`;
    the victim re-initialises it exactly as it re-initialises the network's head.
    """
    from ..analysis.gradients import find_last_linear
    from ..config import ModelConfig
    from ..models import build_model

    _, lin = find_last_linear(model, x[:1])
    cfg = ModelConfig(name="logistic_regression")
    m = build_model(cfg, (lin.in_features,), lin.out_features)
    m.linear.load_state_dict(lin.state_dict())
    return cfg, m


# ------------------------------------------------------------------ statistics
def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``scipy.stats.binomtest(...).proportion_ci``); NaN for n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes ``a``, ``b`` (binomial test on the discordant pairs).

    ``1.0`` when there is no discordant pair.
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    n01, n10 = int((~a & b).sum()), int((a & ~b).sum())
    if n01 + n10 == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(n10, n01 + n10, 0.5).pvalue)


# ------------------------------------------------------------------ records
_RECORD_KEY = ("dataset", "attack", "scenario", "budget", "trial", "defense")


def _journal(root: str | Path):
    """The study's journal ``records.jsonl`` (:class:`workbench.engine.Journal`).

    Key: (dataset, attack, scenario, budget, trial, defense).
    """
    from ..engine import Journal

    return Journal(Path(root) / "records.jsonl", lambda r: tuple(r.get(k) for k in _RECORD_KEY))


def read_records(root: str | Path) -> pd.DataFrame:
    """A study folder's records (``records.jsonl``), latest per (dataset, attack, scenario, budget, trial, defense).

    Torn lines (a killed study) are skipped.
    """
    return pd.DataFrame([r for r in _journal(root).latest().values() if "trial" in r and "defense" in r])


def _defense_label(spec: Mapping | None) -> str:
    from ..targeted.study import defense_label

    return defense_label(spec)


def _linf_pixels(poison, data) -> float:
    if data.std is None:
        return float(poison.delta.abs().amax())
    std = torch.as_tensor(data.std, dtype=poison.delta.dtype).view((1, -1) + (1,) * (poison.delta.dim() - 2))
    return float((poison.delta * std).abs().amax())


def run_efficacy(study: EfficacyStudy, root: str | Path | None = None, *, data=None,
                 pretrained: nn.Module | None = None, log: Callable[[str], None] | None = None,
                 stop: threading.Event | None = None, device: str = "cpu") -> pd.DataFrame:
    """Run (or resume) ``study``; returns one row per (trial, defense) (see the module docstring).

    Args:
        study: the definition (saved as ``study.json`` in ``root``).
        root: study folder (``records.jsonl``, ``poisons/``, ``pretrained.pt``); ``None``: nothing written.
        data: the image bundle (default: ``load_data(DataConfig(name=study.dataset, max_train=...))``).
        pretrained: a ready clean model for ``data`` (skips pretraining).
        log: receives one progress line per event (e.g. ``print``).
        stop: a ``threading.Event``; the study stops after the current victim.
        device: torch device of crafting and victims.

    Record columns: dataset, attack, scenario, trial, target_index, target_class, poison_class, poisons,
    epsilon, budget, defense (label), success, adv_prob, target_pred, clean_pred, clean_adv_prob,
    clean_success, test_acc, clean_test_acc, dropped, poisons_dropped, clean_dropped, kept, epochs,
    train_seconds, defense_seconds, craft_seconds, craft_loss, linf (largest |Δ| on the pixel scale).
    """
    from ..config import DataConfig, ModelConfig
    from ..data import load_data
    from ..data.poison import load_poison, save_poison
    from ..runs.store import atomic_write_bytes
    from ..targeted import evaluate_target, make_setups, pretrain, train_victim
    from ..targeted.study import make_attack, make_defense

    say = log or (lambda s: None)
    root = Path(root) if root is not None else None
    t_start = time.perf_counter()
    if data is None:
        data = load_data(DataConfig(name=study.dataset, split="pooled", max_train=study.max_train))
    done = read_records(root) if root is not None else pd.DataFrame()
    key = (data.name, study.attack, study.scenario)
    have = set()
    rows: list[dict] = []
    if not done.empty:
        mine = done[(done["dataset"] == key[0]) & (done["attack"] == key[1]) & (done["scenario"] == key[2])]
        have = set(zip(mine["trial"], mine["defense"]))
        rows = mine.to_dict("records")
    if root is not None:
        from ..engine import bind_spec

        root.mkdir(parents=True, exist_ok=True)
        # the folder's poisons and records are valid only for this definition; more trials or defenses may be added
        bind_spec(root / "spec.json", {k: v for k, v in study.to_dict().items() if k not in ("trials", "defenses")},
                  what="EPIC efficacy study", hint="attack, dataset, scenario, budget, epsilon, attack settings, "
                  "victim, pretraining, seed and max_train (trials and defenses may change)")
        atomic_write_bytes(root / "study.json", (json.dumps(study.to_dict(), indent=1) + "\n").encode())
    model_cfg = ModelConfig(name="lenet5")
    if pretrained is None:
        ppath = root / "pretrained.pt" if root is not None else None
        if ppath is not None and ppath.is_file():
            from ..models import build_model

            pretrained = build_model(model_cfg, tuple(data.input_shape), data.num_classes)
            pretrained.load_state_dict(torch.load(ppath, weights_only=True))
        else:
            t0 = time.perf_counter()
            pretrained = pretrain(data, model_cfg=model_cfg, epochs=study.pretrain_epochs, lr=study.pretrain_lr,
                                  seed=study.seed, device=device, stop=stop)
            say(f"pretrained LeNet-5 on {data.name} ({len(data.train)} examples, {study.pretrain_epochs} epochs) "
                f"in {time.perf_counter() - t0:.0f} s")
            if ppath is not None:
                from ..runs.store import atomic_torch_save

                atomic_torch_save(pretrained.state_dict(), ppath)
    pretrained.eval()
    vcfg = study.victim_config()
    setups = make_setups(data, study.trials, budget=study.budget, epsilon=study.epsilon, seed=study.seed)
    labels = [_defense_label(d) for d in study.defenses]
    if all((s.trial, lab) in have for s in setups for lab in labels):
        return pd.DataFrame(rows)
    transfer = study.scenario == "transfer"
    if transfer:
        feats = transfer_features(pretrained, data)
        vdata = feats
        vmodel_cfg, vpre = head_model(pretrained, data.train.x)
    else:
        feats, vdata, vmodel_cfg, vpre = None, data, model_cfg, pretrained
    t0 = time.perf_counter()
    clean = train_victim(vdata, None, vcfg, model_cfg=vmodel_cfg, pretrained=vpre, device=device,
                         eval_every=vcfg.epochs, stop=stop)
    say(f"clean victim: test accuracy {clean.test_acc:.4f} ({time.perf_counter() - t0:.1f} s)")
    for s in setups:
        if stop is not None and stop.is_set():
            break
        if all((s.trial, lab) in have for lab in labels):
            continue
        x_t, y_adv = s.target(vdata)
        _, clean_pred, clean_p = evaluate_target(clean.model, x_t, y_adv)
        ppath = root / "poisons" / f"{study.attack}_{s.trial:03d}.pt" if root is not None else None
        if ppath is not None and ppath.is_file():
            poison = load_poison(ppath)
            craft_s = float(poison.meta.get("seconds", float("nan")))
        else:
            attack = make_attack(study.attack, **study.attack_kwargs)
            poison = attack.craft(pretrained, s, data, stop=stop)
            craft_s = attack.seconds
            if poison.meta.get("stopped"):
                break
            if ppath is not None:
                save_poison(poison, ppath)
        craft_loss = poison.meta.get("final_loss", poison.meta.get("final_distance"))
        pdata = transfer_features(pretrained, data, poison, base=feats) if transfer else data
        vpoison = None if transfer else poison
        pois = set(int(i) for i in s.poison_indices)
        for spec, lab in zip(study.defenses, labels):
            if (s.trial, lab) in have or (stop is not None and stop.is_set()):
                continue
            defense = make_defense(spec)
            if defense is not None:
                defense.set_poison_indices(poison.index.clone())
            res = train_victim(pdata, vpoison, vcfg, setup=s, model_cfg=vmodel_cfg, pretrained=vpre,
                               defense=defense, device=device, eval_every=vcfg.epochs, stop=stop)
            if res.status != "finished":
                break
            log_df = res.dropped if isinstance(res.dropped, pd.DataFrame) else None
            dropped = set(log_df["index"].astype(int)) if log_df is not None and len(log_df) else set()
            rec = {"dataset": data.name, "attack": study.attack, "scenario": study.scenario, "trial": s.trial,
                   "target_index": s.target_index, "target_class": s.target_class, "poison_class": s.poison_class,
                   "poisons": s.num_poisons, "epsilon": s.epsilon, "budget": s.budget, "defense": lab,
                   "success": bool(res.success), "adv_prob": float(res.adv_prob), "target_pred": int(res.target_pred),
                   "clean_pred": int(clean_pred), "clean_adv_prob": float(clean_p),
                   "clean_success": bool(clean_pred == y_adv), "test_acc": float(res.test_acc),
                   "clean_test_acc": float(clean.test_acc), "dropped": len(dropped),
                   "poisons_dropped": len(dropped & pois), "clean_dropped": len(dropped - pois),
                   "kept": int(len(res.kept)), "epochs": vcfg.epochs, "train_seconds": float(res.seconds),
                   "defense_seconds": float(res.defense_seconds), "craft_seconds": float(craft_s),
                   "craft_loss": None if craft_loss is None else float(craft_loss),
                   "linf": _linf_pixels(poison, data)}
            rows.append(rec)
            have.add((s.trial, lab))
            if root is not None:
                _journal(root).append(rec)
            say(f"[{time.perf_counter() - t_start:6.0f} s] {study.attack} trial {s.trial}: {lab:>18} "
                f"success={rec['success']!s:5} p_adv={rec['adv_prob']:.3f} acc={rec['test_acc']:.4f} "
                f"dropped={rec['dropped']} (poisons {rec['poisons_dropped']}/{s.num_poisons})")
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ tables
_ATTACK_LABELS = {"gradient_matching": "Gradient Matching", "feature_collision": "Feature Collision",
                  "bullseye_polytope": "Bullseye Polytope"}
_SCENARIO_LABELS = {"scratch": "From-scratch", "transfer": "Transfer", "finetune": "Finetune"}


def summarize(df: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """One row per (dataset, attack, scenario, budget, defense), numbers as fractions / counts.

    Columns: dataset, attack, scenario, budget (poisons as a fraction of the training set), defense, trials,
    successes, success, success_lo, success_hi (Wilson interval at ``level``), p_vs_none (exact McNemar
    against the undefended victim on the same trials; NaN for the undefended row), clean_success (target
    already misclassified as y_adv without poisons), test_acc, test_acc_lo, test_acc_hi (t-interval),
    dropped, poisons_dropped (mean counts per victim), poisons (per trial), clean_dropped, linf (largest
    |Δ|, pixel scale), train_seconds (mean victim wall time).
    """
    if df.empty:
        return pd.DataFrame()
    out = []
    if "budget" not in df:   # records written before the budget was recorded
        df = df.assign(budget=float("nan"))
    for (ds, att, sc, bud), g in df.groupby(["dataset", "attack", "scenario", "budget"], sort=False, dropna=False):
        none = g[g["defense"] == "None"].set_index("trial")["success"]
        for lab, h in g.groupby("defense", sort=False):
            k, n = int(h["success"].sum()), len(h)
            lo, hi = wilson_interval(k, n, level)
            acc, alo, ahi = t_interval(h["test_acc"], level)
            if lab == "None" or none.empty:
                p = float("nan")
            else:
                common = h.set_index("trial")["success"].index.intersection(none.index)
                p = mcnemar_exact(none.loc[common].to_numpy(), h.set_index("trial")["success"].loc[common].to_numpy())
            out.append({"dataset": ds, "attack": att, "scenario": sc, "budget": float(bud), "defense": lab,
                        "trials": n, "successes": k,
                        "success": k / n, "success_lo": lo, "success_hi": hi, "p_vs_none": p,
                        "clean_success": float(h["clean_success"].mean()), "test_acc": acc, "test_acc_lo": alo,
                        "test_acc_hi": ahi, "dropped": float(h["dropped"].mean()),
                        "poisons_dropped": float(h["poisons_dropped"].mean()), "poisons": float(h["poisons"].mean()),
                        "clean_dropped": float(h["clean_dropped"].mean()), "linf": float(h["linf"].max()),
                        "train_seconds": float(h["train_seconds"].mean())})
    return pd.DataFrame(out)


def efficacy_table(df: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """:func:`summarize` formatted for reading: success ``k/n = x % [lo, hi]``, accuracy with its interval, drops."""
    s = summarize(df, level)
    if s.empty:
        return s
    pct = int(round(100 * level))

    def f(r):
        p = "–" if r["p_vs_none"] != r["p_vs_none"] else f"{r['p_vs_none']:.2g}"
        return {"Attack": _ATTACK_LABELS.get(r["attack"], r["attack"]),
                "Scenario": _SCENARIO_LABELS.get(r["scenario"], r["scenario"]),
                "Poisons": "–" if r["budget"] != r["budget"] else f"{100 * r['budget']:g} %",
                "Defense": r["defense"],
                f"Attack success [{pct}% Wilson]": f"{r['successes']}/{r['trials']} = {100 * r['success']:.0f}% "
                                                   f"[{100 * r['success_lo']:.0f}, {100 * r['success_hi']:.0f}]",
                "p vs none (McNemar)": p,
                f"Test acc. [{pct}% CI]": f"{100 * r['test_acc']:.2f}% [{100 * r['test_acc_lo']:.2f}, "
                                         f"{100 * r['test_acc_hi']:.2f}]",
                "Dropped": f"{r['dropped']:.0f}",
                "Poisons dropped": f"{r['poisons_dropped']:.1f}/{r['poisons']:.0f}",
                "Clean dropped": f"{r['clean_dropped']:.0f}"}
    return pd.DataFrame([f(r) for _, r in s.iterrows()])


def load_stored_results(path: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """The stored study records and the settings they were run with.

    Args:
        path: a folder holding ``records.jsonl`` and ``studies.json`` (default :data:`RESULTS_DIR`).

    Returns:
        ``(records DataFrame, {"studies": [...], "host": ..., ...})``; an empty frame and ``{}`` if absent.
    """
    p = Path(path) if path is not None else RESULTS_DIR
    df = read_records(p)
    meta_path = p / "studies.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return df, meta


# ------------------------------------------------------------------ command line
def main(argv=None) -> int:  # pragma: no cover - exercised by running the study
    import argparse

    ap = argparse.ArgumentParser(prog="python -m workbench.defenses.efficacy", description=__doc__.split("\n")[0])
    ap.add_argument("--attack", action="append", required=True,
                    help="bullseye_polytope, feature_collision, gradient_matching (repeatable)")
    ap.add_argument("--dataset", default=DEFAULT_DATASET)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--budget", type=float, default=0.01)
    ap.add_argument("--epsilon", type=float, default=8, help="l_inf bound in 1/255 pixel units")
    ap.add_argument("--epochs", type=int, help="victim epochs (default by scenario)")
    ap.add_argument("--iterations", type=int, help="crafting iterations")
    ap.add_argument("--restarts", type=int, help="gradient matching restarts")
    ap.add_argument("--max-train", type=int)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    for att in a.attack:
        kw = {}
        if a.iterations:
            kw["iterations"] = a.iterations
        if a.restarts and att == "gradient_matching":
            kw["restarts"] = a.restarts
        st = EfficacyStudy(attack=att, dataset=a.dataset, trials=a.trials, budget=a.budget, epsilon=a.epsilon / 255,
                           attack_kwargs=kw, victim={"epochs": a.epochs} if a.epochs else None,
                           max_train=a.max_train)
        out = Path(a.out) / att
        df = run_efficacy(st, out, log=lambda s: print(s, flush=True))
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(efficacy_table(df).to_string(index=False), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
