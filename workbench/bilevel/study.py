"""The real-data study of Fig. 2–3: test error vs poisoning fraction for four λ strategies.

Source: [Carnerero-Cano 2021, §4, App. C.2 (Tables 1–3) and App. D (Fig. 3)].

For every repetition (a different random train/validation split; the test set is fixed)
and every λ strategy:

=========  ==================================================================================
``small``  λ fixed small (the lower end of Φ(λ), −8)
``large``  λ fixed large (the upper end of Φ(λ), e.g. log 200)
``clean``  λ_CLEAN: 5-fold cross-validation on the clean training set over [−8, 1]
           (scikit-learn, as in Xiao et al. 2015), then fixed
``rmd``    λ_RMD: learned by RMD on the clean set (T_λ hyperiterations from log 5), then
           re-learned jointly with every batch of poisoning points (minimax, T_mul)
=========  ==================================================================================

the poisoning points are added in batches of 17 (for 512 training points; scaled with the
training-set size otherwise) up to 5 batches (0 to 16.6 % of the training set). Each batch is
initialised from validation points without duplicates, with flipped labels, and optimised
with the earlier batches kept fixed in the training set (T_{D_p} hyperiterations for a fixed
λ, T_mul minimax hyperiterations for λ_RMD). Every attack is *tested* by training a fresh
model with mini-batch SGD (Table 3) on D_tr ∪ D_p with the strategy's λ and measuring the
test error.

Results: one record per (repetition, strategy, number of poisoning points) in a pandas
DataFrame (:attr:`StudyResult.records`) and the parameters w of the clean and most-poisoned
models for the Fig. 3 histograms (:attr:`StudyResult.weights`). The output folder is run by
the study engine (:mod:`workbench.engine`): every finished repetition is appended to
``reps.jsonl`` (a :class:`~workbench.engine.Journal`: its records and weights on one line,
torn-line tolerant, latest per repetition wins), ``spec.json`` binds the folder to the
settings (a rerun with other settings is refused with a one-line
:class:`~workbench.engine.SpecMismatchError`; with the same settings it skips finished
repetitions), and ``records.csv``/``records.json``, ``weights.json`` and ``settings.json``
are exported from the journal after every repetition. :func:`study_folder` gives each
settings its own folder. Progress callbacks that raise are disabled with a warning.

Datasets: ``digits`` (scikit-learn's 8×8 digits, 0 vs 8: 352 images, so the paper's
512/171 split is scaled down, see :func:`paper_settings`), ``mnist-10k`` (the shipped
MNIST test images, 0 vs 8: the paper's 1,954 test images, split 512/171 with the 1,271 left
over as the fixed test set; the preset is :mod:`workbench.bilevel.mnist`), ``mnist`` (0 vs 8) and
``fashion-mnist`` (T-shirt vs pullover) through :func:`workbench.data.load_data` when their
files are present (official test files as the fixed test set; with only MNIST's t10k files,
a fixed seeded hold-out of the pool).

No UI imports.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..engine import CallbackList, Journal, bind_spec, spec_hash
from .attack import AttackConfig, init_poison, run_attack
from .hypergrad import BilevelProblem
from .model import error_rate, train_sgd, val_loss

__all__ = ["STRATEGIES", "StudySettings", "StudyResult", "paper_settings", "load_binary", "lambda_cv",
           "run_study", "load_study", "summary_table", "study_folder"]

STRATEGIES = {"small": "λ small (fixed)", "large": "λ large (fixed)", "clean": "λ_CLEAN (5-fold CV)",
              "rmd": "λ_RMD (learned)"}
"""Strategy key → label."""

# Fashion-MNIST: 0 T-shirt, 2 pullover
_CLASSES = {"digits": [0, 8], "mnist": [0, 8], "mnist-10k": [0, 8], "fashion-mnist": [0, 2]}


@dataclass
class StudySettings:
    """Settings of the study (defaults: App. C, MNIST '0' vs '8').

    Attributes:
        dataset: ``digits``, ``mnist`` or ``fashion-mnist``; root: data root (``None``: default).
        n_train, n_val: split sizes (Table 1: 512 / 171); the rest of the pool (or the official
            test files) is the fixed test set.
        batch: poisoning points optimised together (17); n_batches: batches (5 → 16.6 %).
        reps: repetitions with different train/validation splits; seed: base seed.
        strategies: subset of :data:`STRATEGIES`.
        lam_small, lam_large: the fixed λ values; lam_range: Φ(λ); cv_range: (lo, hi, count)
            of the λ_CLEAN grid; lam_init: warm start of λ_RMD on the clean set.
        box: Φ(D_p); alpha, beta: learning rates; eta, inner_steps: η and T of the inner problem;
        steps_xp, steps_lambda, steps_mul: T_{D_p}, T_λ, T_mul.
        eta_tr, batch_size, epochs: mini-batch SGD used to test every attack (Table 3).
        restarts, patience: footnote-4 restarts (0: none).
        method: Eq. 3 products (``analytic`` or ``autograd``).
        max_test: cap on the test-set size (``None``: all).
        device: ``"cpu"`` (default: these small float64 problems are fastest there), ``"cuda"`` or ``"auto"``
            (MPS has no float64).
    """

    dataset: str = "mnist"
    root: str | None = None
    n_train: int = 512
    n_val: int = 171
    batch: int = 17
    n_batches: int = 5
    reps: int = 10
    seed: int = 0
    strategies: tuple[str, ...] = ("small", "large", "clean", "rmd")
    lam_small: float = -8.0
    lam_large: float = math.log(200.0)
    lam_range: tuple[float, float] = (-8.0, math.log(200.0))
    cv_range: tuple[float, float, int] = (-8.0, 1.0, 10)
    lam_init: float = math.log(5.0)
    box: tuple[float, float] = (0.0, 1.0)
    alpha: float = 0.99
    beta: float = 0.8
    eta: float = 0.1
    inner_steps: int = 150
    steps_xp: int = 100
    steps_lambda: int = 50
    steps_mul: int = 100
    eta_tr: float = 0.01
    batch_size: int = 64
    epochs: int = 200
    restarts: int = 0
    patience: int = 20
    method: str = "analytic"
    max_test: int | None = None
    device: str = "cpu"

    def __post_init__(self):
        self.strategies = tuple(self.strategies)
        self.lam_range = tuple(float(v) for v in self.lam_range)
        self.box = tuple(float(v) for v in self.box)
        self.cv_range = (float(self.cv_range[0]), float(self.cv_range[1]), int(self.cv_range[2]))
        if self.dataset not in _CLASSES:
            raise ValueError(f"dataset={self.dataset!r} is invalid: choose one of {sorted(_CLASSES)}")
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad or not self.strategies:
            raise ValueError(f"strategies={self.strategies!r} is invalid: choose from {list(STRATEGIES)}")
        for name in ("n_train", "n_val", "batch", "reps", "batch_size", "epochs", "inner_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: must be >= 1")
        if self.n_batches < 0:
            raise ValueError(f"n_batches={self.n_batches} is invalid: must be >= 0")
        if self.batch * max(self.n_batches, 1) > self.n_val:
            raise ValueError(f"batch*n_batches={self.batch * self.n_batches} exceeds n_val={self.n_val}: poisoning "
                             "points are cloned from distinct validation points")
        if not self.lam_range[0] <= self.lam_small <= self.lam_large <= self.lam_range[1]:
            raise ValueError(f"need lam_range[0] <= lam_small <= lam_large <= lam_range[1], got {self.lam_range}, "
                             f"{self.lam_small}, {self.lam_large}")

    def attack_config(self, steps: int, seed: int) -> AttackConfig:
        """The attack's settings for ``steps`` hyperiterations, seeded by ``seed``."""
        return AttackConfig(alpha=self.alpha, beta=self.beta, steps=steps, box=self.box, lam_range=self.lam_range,
                            restarts=self.restarts, patience=self.patience, method=self.method, seed=seed)

    def to_dict(self) -> dict:
        """The settings as a plain dict (``strategies`` as a list)."""
        d = asdict(self)
        d["strategies"] = list(self.strategies)
        return d


def paper_settings(dataset: str, **overrides) -> StudySettings:
    """App. C settings for ``dataset`` (Tables 1–3), with ``overrides`` applied.

    * ``mnist``: α = 0.99, β = 0.8, Φ(λ) = [−8, log 200], η = 0.1, T = 150, T_{D_p} = 100,
      T_λ = 50, T_mul = 100; testing: η_tr = 0.01, batch 64, 200 epochs.
    * ``fashion-mnist``: α = 0.9, β = 0.3, Φ(λ) = [−8, log 400], η = 0.08, T = 200.
    * ``digits`` (not in the paper; MNIST settings): the pool has only 352 images of 0 and 8,
      so the 512/171 split becomes 176 training / 59 validation points (the paper's 3:1
      ratio; 117 test points) and poisoning batches of 6 (17·176/512 ≈ 5.8), 5 batches
      → 0–17 % as in the paper.
    * ``mnist-10k`` (the shipped 10,000 MNIST test images): the MNIST settings at the paper's
      sizes; its 1,954 images of 0 and 8 are the paper's test set, so 512 + 171 of them are
      train/validation and the 1,271 left over are the fixed test set (see
      :mod:`workbench.bilevel.mnist` for the preset with 5 repetitions).
    """
    base = dict(dataset=dataset)
    if dataset == "fashion-mnist":
        base.update(alpha=0.9, beta=0.3, lam_range=(-8.0, math.log(400.0)), lam_large=math.log(400.0), eta=0.08,
                    inner_steps=200)
    elif dataset == "digits":
        base.update(n_train=176, n_val=59, batch=6)
    elif dataset not in ("mnist", "mnist-10k"):
        raise ValueError(f"dataset={dataset!r} is invalid: choose one of {sorted(_CLASSES)}")
    base.update(overrides)
    return StudySettings(**base)


def load_binary(dataset: str, root: str | None = None, *, n_test_pool: int | None = None, seed: int = 0,
                dtype=torch.float64, n_trainval: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """The study's binary task as flat features in [0, 1]: ``(x_pool, y_pool, x_test, y_test, info)``.

    ``x_pool``/``y_pool`` are split into train/validation per repetition; the test set is
    fixed: the official test files when the official training files are present, else a
    seeded stratified hold-out of ``n_test_pool`` examples of the pool (``None``: what is left
    after ``n_trainval`` train + validation examples, or a third when that is ``None`` too).
    ``mnist-10k`` is always pooled (it holds only the official test files).

    Raises:
        FileNotFoundError: the dataset's files are missing (from :func:`workbench.data.load_data`).
    """
    from sklearn.model_selection import train_test_split

    from ..config import DataConfig
    from ..data import load_data

    classes = _CLASSES[dataset]
    common = dict(name=dataset, root=root, classes=classes, normalize=False, val_fraction=0.0)
    info: dict = {"dataset": dataset, "classes": classes}
    bundle = None
    if dataset not in ("digits", "mnist-10k"):
        try:
            bundle = load_data(DataConfig(split="official", **common))
            x, y = bundle.train.x, bundle.train.y
            xt, yt = bundle.test.x, bundle.test.y
            info["test"] = "official test files"
        except FileNotFoundError:
            bundle = None
    if bundle is None:
        b = load_data(DataConfig(split="pooled", test_fraction=0.0, **common))
        x_all, y_all = b.train.x, b.train.y
        n_test = (n_test_pool if n_test_pool is not None else
                  len(y_all) - n_trainval if n_trainval is not None else len(y_all) // 3)
        idx = np.arange(len(y_all))
        rest, test = train_test_split(idx, test_size=n_test, random_state=seed, stratify=y_all.numpy())
        x, y, xt, yt = x_all[rest], y_all[rest], x_all[test], y_all[test]
        info["test"] = f"seeded hold-out of {n_test} from the pool of {len(y_all)} (seed {seed})"
    flat = lambda t: t.reshape(len(t), -1).to(dtype)  # noqa: E731
    info.update(n_pool=len(y), n_test=len(yt), features=int(x[0].numel()))
    return flat(x), y.to(dtype), flat(xt), yt.to(dtype), info


def lambda_cv(x: torch.Tensor, y: torch.Tensor, cv_range: tuple[float, float, int], *, seed: int = 0) -> float:
    """λ_CLEAN: 5-fold stratified cross-validation (scikit-learn ``LogisticRegressionCV``, log-loss) on clean data.

    Our objective ``(Σℓ + e^λ/2‖w‖²)/n`` is scikit-learn's ``CΣℓ + ½‖w‖²`` with ``C = e^{−λ}``,
    so the grid ``λ ∈ linspace(*cv_range)`` maps to ``Cs = e^{−λ}``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    lams = np.linspace(cv_range[0], cv_range[1], int(cv_range[2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        cv = LogisticRegressionCV(Cs=np.exp(-lams), cv=StratifiedKFold(5, shuffle=True, random_state=seed),
                                  scoring="neg_log_loss", max_iter=2000)
        cv.fit(x.cpu().numpy(), y.cpu().numpy().astype(int))
    return float(-np.log(cv.C_[0]))


@dataclass
class StudyResult:
    """Records (one row per repetition × strategy × poisoning count), weights and settings of a study."""

    records: pd.DataFrame
    weights: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def _eval(x, y, log_lam, s: StudySettings, x_test, y_test, x_val, y_val, seed):
    theta = train_sgd(x, y, log_lam, eta=s.eta_tr, epochs=s.epochs, batch_size=s.batch_size, seed=seed)
    return theta, {"test_error": float(error_rate(theta, x_test, y_test)),
                   "val_error": float(error_rate(theta, x_val, y_val)),
                   "val_loss": float(val_loss(theta, x_val, y_val)),
                   "w_norm2": float(theta[:-1].square().sum())}


def _rep(s: StudySettings, rep: int, x_pool, y_pool, x_test, y_test, emit, should_stop):
    from sklearn.model_selection import train_test_split

    seed = s.seed + rep
    tr, va = train_test_split(np.arange(len(y_pool)), train_size=s.n_train, test_size=s.n_val, random_state=seed,
                              stratify=y_pool.cpu().numpy())
    x_tr, y_tr, x_val, y_val = x_pool[tr], y_pool[tr], x_pool[va], y_pool[va]
    records, weights = [], {}
    for strategy in s.strategies:
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(seed * 1000 + list(STRATEGIES).index(strategy))
        clean = BilevelProblem(x_tr, y_tr, x_val, y_val, y_tr[:0], eta=s.eta, steps=s.inner_steps)
        if strategy == "small":
            lam = s.lam_small
        elif strategy == "large":
            lam = s.lam_large
        elif strategy == "clean":
            lam = lambda_cv(x_tr, y_tr, s.cv_range, seed=seed)
        else:
            res = run_attack(clean, x_tr[:0], s.lam_init, s.attack_config(s.steps_lambda, seed), learn_xp=False,
                             learn_lambda=True, should_stop=should_stop)
            lam = res.log_lam
        x_p, y_p = x_tr[:0], y_tr[:0]
        used = torch.zeros(0, dtype=torch.long)
        for b in range(s.n_batches + 1):
            if should_stop is not None and should_stop():
                return records, weights
            attack_loss = float("nan")
            if b > 0:
                x0, yb, idx = init_poison(x_val, y_val, s.batch, generator=gen, exclude=used)
                used = torch.cat([used, idx.cpu()])
                prob = BilevelProblem(torch.cat([x_tr, x_p]), torch.cat([y_tr, y_p]), x_val, y_val, yb, eta=s.eta,
                                      steps=s.inner_steps)
                minimax = strategy == "rmd"
                cfg = s.attack_config(s.steps_mul if minimax else s.steps_xp, seed + 7919 * b)
                res = run_attack(prob, x0, lam, cfg, learn_xp=True, learn_lambda=minimax, should_stop=should_stop)
                x_p, y_p = torch.cat([x_p, res.x_p]), torch.cat([y_p, yb])
                lam, attack_loss = res.log_lam if minimax else lam, res.val_loss
            x, y = torch.cat([x_tr, x_p]), torch.cat([y_tr, y_p])
            theta, metrics = _eval(x, y, lam, s, x_test, y_test, x_val, y_val, seed)
            n_p = len(y_p)
            rec = {"dataset": s.dataset, "rep": rep, "strategy": strategy, "label": STRATEGIES[strategy],
                   "n_poison": n_p, "fraction": n_p / s.n_train, "log_lam": lam, "lambda": math.exp(lam),
                   "attack_val_loss": attack_loss, **metrics, "seconds": time.perf_counter() - t0,
                   "in_box": bool(((x_p >= s.box[0]) & (x_p <= s.box[1])).all())}
            records.append(rec)
            emit({"kind": "record", **rec})
            if b in (0, s.n_batches) and strategy in ("small", "rmd"):
                weights[f"{rep}/{strategy}/{n_p}"] = theta[:-1].tolist()
    return records, weights


def _journal(out: Path) -> Journal:
    return Journal(out / "reps.jsonl", "rep")


def study_folder(root: str | Path, settings: StudySettings) -> Path:
    """A folder for ``settings`` under ``root`` that :func:`run_study` accepts.

    ``<root>/<dataset>`` when it is new or holds these settings, else
    ``<root>/<dataset>-<hash of the settings>``: every settings resumes in its own folder and
    none overwrites another's results.
    """
    first = Path(root) / settings.dataset
    h = spec_hash(settings.to_dict())
    try:
        stored = json.loads((first / "spec.json").read_text(encoding="utf-8")).get("hash")
    except (OSError, ValueError, AttributeError):
        stored = None
    if stored is None and (first / "records.json").exists() and not (first / "reps.jsonl").exists():
        stored = "an older study"  # written before the journal: keep it
    return first if stored in (None, h) else Path(root) / f"{settings.dataset}-{h[:8]}"


def run_study(settings: StudySettings, out: str | Path | None = None, *,
              progress: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None
              ) -> StudyResult:
    """Run (or resume) the study; see the module docstring.

    Args:
        settings: :class:`StudySettings` (:func:`paper_settings` gives App. C's).
        out: the study folder (``reps.jsonl``, ``spec.json`` and the exports ``records.csv``/``records.json``/
            ``weights.json``/``settings.json``, written after every repetition; finished repetitions found
            there are skipped).
        progress: called with event dicts: ``{"kind": "record", ...}`` per evaluated attack and
            ``{"kind": "rep", "rep", "reps", "seconds"}`` per finished repetition.
        should_stop: polled between hyperiterations; ``True`` stops after saving finished work.

    Returns:
        :class:`StudyResult`.

    Raises:
        SpecMismatchError: ``out`` holds a study with other settings (one line).
    """
    s = settings
    emit = CallbackList([progress], what="bilevel study")
    x_pool, y_pool, x_test, y_test, info = load_binary(
        s.dataset, s.root, seed=s.seed, n_trainval=(s.n_train + s.n_val) if s.dataset == "mnist-10k" else None)
    if s.max_test is not None and len(y_test) > s.max_test:
        x_test, y_test = x_test[:s.max_test], y_test[:s.max_test]
    from ..training.device import resolve_device

    dev = resolve_device(s.device)
    x_pool, y_pool, x_test, y_test = (t.to(dev) for t in (x_pool, y_pool, x_test, y_test))
    if s.n_train + s.n_val > len(y_pool):
        raise ValueError(f"n_train + n_val = {s.n_train + s.n_val} exceeds the {len(y_pool)} examples available "
                         f"for training/validation in {s.dataset}")
    records: list[dict] = []
    weights: dict = {}
    done: set[int] = set()
    out = Path(out) if out is not None else None
    journal = None
    if out is not None:
        bind_spec(out / "spec.json", s.to_dict(), what="bilevel study", hint="settings")
        journal = _journal(out)
        for r in journal.latest().values():
            records += r["records"]
            weights.update(r["weights"])
            done.add(int(r["rep"]))
    for rep in range(s.reps):
        if rep in done:
            continue
        t0 = time.perf_counter()
        recs, w = _rep(s, rep, x_pool, y_pool, x_test, y_test, emit, should_stop)
        if should_stop is not None and should_stop():
            break
        records += recs
        weights.update(w)
        if journal is not None:
            journal.append({"rep": rep, "records": recs, "weights": w, "seconds": time.perf_counter() - t0})
            _save(out, records, weights, s, info)
        emit({"kind": "rep", "rep": rep, "reps": s.reps, "seconds": time.perf_counter() - t0})
    return StudyResult(pd.DataFrame(records), weights, s.to_dict(), info)


def _save(out: Path, records, weights, s: StudySettings, info: dict) -> None:
    from ..runs.store import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "settings.json", json.dumps({"settings": s.to_dict(), "info": info}, indent=1).encode())
    atomic_write_bytes(out / "records.json", json.dumps(records).encode())
    atomic_write_bytes(out / "weights.json", json.dumps(weights).encode())
    atomic_write_bytes(out / "records.csv", pd.DataFrame(records).to_csv(index=False).encode())


def load_study(out: str | Path) -> StudyResult:
    """Read a study folder written by :func:`run_study` (its journal ``reps.jsonl``; an older folder: ``records.json``).

    Raises:
        FileNotFoundError: neither ``reps.jsonl`` nor ``records.json`` in ``out``.
    """
    out = Path(out)
    meta = json.loads((out / "settings.json").read_text()) if (out / "settings.json").exists() else {}
    if (out / "reps.jsonl").exists():
        reps = sorted(_journal(out).latest().values(), key=lambda r: int(r["rep"]))
        records = [rec for r in reps for rec in r["records"]]
        w = {k: v for r in reps for k, v in r["weights"].items()}
        return StudyResult(pd.DataFrame(records), w, meta.get("settings", {}), meta.get("info", {}))
    if not (out / "records.json").exists():
        raise FileNotFoundError(f"no bilevel study in {out} (reps.jsonl and records.json missing)")
    w = json.loads((out / "weights.json").read_text()) if (out / "weights.json").exists() else {}
    return StudyResult(pd.DataFrame(json.loads((out / "records.json").read_text())), w, meta.get("settings", {}),
                       meta.get("info", {}))


def summary_table(records: pd.DataFrame, value: str = "test_error") -> pd.DataFrame:
    """Mean ± standard error of ``value`` per strategy (rows) and poisoning fraction (columns).

    Returns a DataFrame with a ``(stat, fraction)`` column MultiIndex (``mean``, ``se``, ``n``).
    """
    g = records.groupby(["strategy", "fraction"])[value]
    t = pd.DataFrame({"mean": g.mean(), "se": g.sem().fillna(0.0), "n": g.count()}).unstack("fraction")
    order = [k for k in STRATEGIES if k in t.index]
    return t.loc[order]
