"""Sharpness-aware poisoning studies: the four-way comparison and the Table 4.1 search.

Over 700 lines, kept whole: the comparison and the Table 4.1 search share their run folders, journals and
definition binding.

Source: [Murphy 2025, Ch. 4] (§4.2: the poisoning hyperparameter search of
Table 4.1 judged by the Fig. 4.1 ratios; Tables 4.3-4.4: test accuracy, mean ±
standard error over 5 seeds) and Ch. 5 (the LeNet-5/MNIST analysis, Figs. 5.1-5.10).

:func:`compare_poison` follows the Table 4.3 protocol [Murphy 2025, §4.2, Table 4.3]: for
every seed it crafts a poison S′ = S + Δ with a SAM run of that seed
(:class:`~workbench.poisoning.SharpnessAwarePoisoner`), builds random noise with that
poison's per-example norms (the §5.3.2 control), and trains fresh models from the same
initialisation (the seed's):

=====================  ==============================================================
``SGD on S``           the base optimizer on the clean training set (the baseline)
``SGD on S′``          the base optimizer on the poisoned set (``data.poison``)
``SAM on S``           SAM (``optim.rho`` of the base config) on the clean set: the
                       seed's crafting run itself, as the report takes its SAM column
``SGD on S + noise``   the base optimizer on S + matched random noise (Fig. 5.3)
=====================  ==============================================================

so the table's spread includes the crafting variance (one crafting run per seed).
``shared_poison=True`` keeps the older protocol: one poison crafted with ``craft_seed``
serves every seed, and ``SAM on S`` is a separate SAM run per seed.

"SGD" is the base config's optimizer (``sgd``, or ``adam`` when the base config uses
Adam); the SAM variant and the crafting run use ``optim.name = "sam"`` with the same
learning rate, momentum, weight decay and schedule.

Study folder ``<root>/<name>/``::

    comparison.json     the definition (base config, poison config, protocol, seeds of crafting/noise)
    comparison.jsonl    one record per crafting run / trial start and end (latest wins)
    runs/               ordinary run folders: the crafting runs and one per trained (variant, seed)

A poison is its crafting run's ``artifacts/poison.pt``; the matched noise is written
beside it as ``artifacts/noise.pt`` (per seed: noise seed ``noise_seed + seed``). Running
the same comparison again skips every finished run and resumes stopped or killed ones
from their last checkpoint; more seeds can be added later. The machinery is the study
engine (:mod:`workbench.engine`): the records are a :class:`~workbench.engine.Journal`
(torn-line tolerant, latest record per key wins), ``comparison.json`` binds the folder
to its definition (a different one is refused with a one-line
:class:`~workbench.engine.SpecMismatchError`), every run trains through
:func:`~workbench.engine.train_run`, and a callback that raises is disabled with a
warning naming it.

:func:`poison_search` runs the §4.2 search: for every combination of poisoning
hyperparameters (and seed) a SAM crafting run, then the base optimizer on its poison;
it records both final validation accuracies and their ratio (Fig. 4.1: > 1 means the
poison run beat the SAM run that made its poison).

The results carry data; their figures are functions of :mod:`workbench.viz.poison_study`
(``plot_curves(comparison, seed)``, ``plot_ratios(search_table, param)``, ...). This
module imports no plotting library.

No UI imports.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd

from ..config import RunConfig
from ..data.poison import load_poison, save_poison
from ..engine import CallbackList, Journal, StopSignal, bind_spec, config_core, spec_hash, train_run
from ..runs import Run, load_run
from ..runs.store import dedupe_records
from .sharpness_aware import POISON_FILE, PoisonConfig, SharpnessAwarePoisoner, matched_noise

__all__ = ["VARIANTS", "NOISE_FILE", "PoisonStudyEvent", "PoisonComparison", "compare_poison", "open_comparison",
           "variant_configs", "variant_key", "poison_search", "read_search", "table41_grid", "craft_records",
           "poison_probes", "SEARCH_COLUMNS"]

VARIANTS: dict[str, str] = {
    "sgd_clean": "SGD on S",
    "sgd_poison": "SGD on S′",
    "sam_clean": "SAM on S",
    "sgd_noise": "SGD on S + noise",
}
"""Variant key → label (the label is the ``variant`` column of the tables)."""
NOISE_FILE = "noise.pt"
DONE = ("finished",)
_FORMAT = 1


# ------------------------------------------------------------------- events
@dataclass(frozen=True)
class PoisonStudyEvent:
    """Progress of :func:`compare_poison` / :func:`poison_search`, sent to the callbacks.

    The callbacks also receive the :class:`~workbench.training.Trainer` events of every
    run the study trains (``RunStarted`` carries the run folder, ``CraftStep`` the
    crafting losses, ``ProbeResult`` named ``poison`` the per-epoch poison report).

    Attributes:
        kind: ``started``, ``run_started``, ``run_ended``, ``skipped`` (a finished run
            found in the records) or ``ended``.
        record: the run's record so far (``kind`` craft/trial/poison, ``variant``, ``seed``,
            ``status``, ``run_path``, metrics ...); for ``started``/``ended`` a summary.
        total: number of runs of the study; done: runs ended or skipped so far.
    """

    kind: str
    record: dict = field(default_factory=dict)
    total: int = 0
    done: int = 0


# ------------------------------------------------------------------ helpers
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def craft_records(run_path: str | Path) -> list[dict]:
    """The ``craft`` records of a crafting run (one per crafted batch, in order; resumes deduplicated)."""
    return [r for r in dedupe_records(Run(run_path).read_metrics()) if r.get("kind") == "craft"]


def poison_probes(run_path: str | Path) -> list[dict]:
    """The per-epoch ``poison`` probe records of a crafting run (‖Δ‖ norms, drift, cosine losses)."""
    return [r for r in dedupe_records(Run(run_path).read_metrics())
            if r.get("kind") == "probe" and r.get("name") == "poison"]


def _plain_name(cfg: RunConfig) -> str:
    """The base (non-SAM) optimizer of a config: its own name, or its SAM base."""
    return cfg.optim.base if cfg.optim.is_sam else cfg.optim.name


def variant_configs(base_cfg: RunConfig, seed: int, *, poison_path: str | Path | None = None,
                    noise_path: str | Path | None = None, root: str | Path | None = None) -> dict[str, RunConfig]:
    """The four comparison configs for one seed (keys of :data:`VARIANTS`; poison/noise ones only with a path).

    Every config is ``base_cfg`` with ``train.seed = seed``, the plain optimizer (``sgd``, or
    ``adam`` for an Adam base) for the three "SGD" variants and ``sam`` for ``sam_clean``,
    ``data.poison`` set for ``sgd_poison``/``sgd_noise``, a run name ``<variant>-s<seed>``
    and ``root`` (default ``base_cfg.root``).
    """
    plain = _plain_name(base_cfg)
    common = {"train.seed": int(seed), "root": str(root if root is not None else base_cfg.root), "data.poison": None}
    sam = {"optim.name": "sam", "optim.base": plain}
    sgd = {"optim.name": plain}
    out = {"sgd_clean": base_cfg.with_overrides({**common, **sgd, "name": f"sgd-clean-s{seed}"}),
           "sam_clean": base_cfg.with_overrides({**common, **sam, "name": f"sam-clean-s{seed}"})}
    if poison_path is not None:
        out["sgd_poison"] = base_cfg.with_overrides({**common, **sgd, "name": f"sgd-poison-s{seed}",
                                                     "data.poison": str(poison_path)})
    if noise_path is not None:
        out["sgd_noise"] = base_cfg.with_overrides({**common, **sgd, "name": f"sgd-noise-s{seed}",
                                                    "data.poison": str(noise_path)})
    return {k: out[k] for k in VARIANTS if k in out}


def _attach_poison(rec: dict) -> None:
    """Give a finished crafting run's record its ``poison_path``; a finished run without a poison file failed."""
    if rec["status"] == "finished" and rec.get("run_path"):
        pp = Path(rec["run_path"]) / "artifacts" / POISON_FILE
        if pp.is_file():
            rec["poison_path"] = str(pp)
        else:
            rec.update(status="failed", error=f"the crafting run finished but wrote no {pp}")


def _craft_config(base_cfg: RunConfig, seed: int, root: Path, name: str) -> RunConfig:
    """The crafting run: SAM (or ASAM when the base config already uses it) on the clean data."""
    sam = base_cfg.optim.name if base_cfg.optim.is_sam else "sam"
    return base_cfg.with_overrides({"optim.name": sam, "optim.base": _plain_name(base_cfg), "train.seed": int(seed),
                                    "root": str(root), "name": name, "data.poison": None})


def _run_metrics(run_path: Path) -> dict:
    """Final epoch metrics of a run folder (and best validation accuracy)."""
    try:
        ep = load_run(run_path).epochs
    except FileNotFoundError:
        return {}
    if ep.empty:
        return {"epochs_done": 0}
    last = ep.iloc[-1]
    out = {k: float(last[k]) for k in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
           if k in ep and pd.notna(last[k])}
    if "val_acc" in ep and ep["val_acc"].notna().any():
        out["best_val_acc"] = float(ep["val_acc"].max())
    out["epochs_done"] = int(last["epoch"])
    return out


def _resumable(prev: dict | None) -> Path | None:
    """The run folder of a recorded run that was stopped or killed and has a checkpoint to resume from."""
    if prev and prev.get("run_path") and prev.get("status") in ("stopped", "running"):
        p = Path(prev["run_path"])
        if (p / "checkpoints" / "last.pt").is_file():
            return p
    return None


def _train(cfg: RunConfig, prev: dict | None, *, callbacks: CallbackList, stop: StopSignal, handle_sigint: bool,
           stepper_factory=None, on_start: Callable[[Path], None] | None = None) -> dict:
    """Train ``cfg`` (or resume ``prev``'s run) with the engine; the record with the run's final metrics."""
    t0 = time.perf_counter()
    rec, _ = train_run(cfg, resume=_resumable(prev), callbacks=[callbacks], stop=stop, handle_sigint=handle_sigint,
                       stepper_factory=stepper_factory, on_start=on_start)
    if rec.get("run_path"):
        rec.update(_run_metrics(Path(rec["run_path"])))
    rec["seconds"] = time.perf_counter() - t0
    return rec


def _comparison_key(r: dict) -> tuple:
    return r.get("kind"), r.get("variant"), r.get("seed")


def _search_key(r: dict) -> tuple:
    return r.get("combo_id"), r.get("stage")


class _Study:
    """A running study's bookkeeping: its journal and latest records, callbacks, stop signal, progress and runs."""

    def __init__(self, path: Path, journal: Journal, callbacks: Iterable[Callable], stop: threading.Event | None,
                 handle_sigint: bool):
        self.path, self.runs_dir = path, path / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.journal, self.latest = journal, journal.latest()
        self.callbacks = CallbackList(callbacks, what="poisoning study")
        self.stop, self.handle_sigint = StopSignal(stop), handle_sigint
        self.total = self.done = 0

    @classmethod
    def open(cls, kind: str, base_cfg: RunConfig, core: dict, extra: dict, root, name, journal_key: Callable,
             callbacks, stop, handle_sigint) -> "_Study":
        """Bind ``<root>/<name>`` (default ``<kind>-<data>-<model>-<hash>``) to ``core`` and open its journal."""
        root = Path(root) if root is not None else Path(base_cfg.root) / "poison"
        name = name or f"{kind}-{base_cfg.data.name}-{base_cfg.model.name}-{spec_hash(core)[:8]}"
        path = root / name
        spec, log, what = {"compare": ("comparison.json", "comparison.jsonl", "poison comparison"),
                           "search": ("search.json", "search.jsonl", "poison search")}[kind]
        bind_spec(path / spec, core, what=what, hint="base config, poison config or seeds of crafting", extra=extra)
        return cls(path, Journal(path / log, journal_key), callbacks, stop, handle_sigint)

    def emit(self, kind: str, record: dict) -> None:
        self.callbacks(PoisonStudyEvent(kind, record, self.total, self.done))

    def stopping(self) -> bool:
        return self.stop.is_set()

    def record(self, rec: dict) -> None:
        rec = dict(rec, time=_now())
        self.journal.append(rec)
        self.latest[self.journal.key(rec)] = rec

    def skip(self, prev: dict) -> None:
        self.done += 1
        self.emit("skipped", prev)

    @staticmethod
    def finished(rec: dict | None, need: str = "run_path") -> bool:
        """Whether ``rec`` is a finished record whose ``need`` path (run folder, poison file) still exists."""
        return bool(rec and rec.get("status") in DONE and rec.get(need) and Path(rec[need]).exists())

    def run_variants(self, cfgs: dict[str, RunConfig], seed: int, *, skip: tuple[str, ...] = ()) -> tuple[int, bool]:
        """Train one seed's variants (``cfgs``: variant -> config) in order, skipping finished ones.

        Returns:
            ``(skipped, stopped)``: how many were already finished, and whether the study stopped.
        """
        skipped = 0
        for key, cfg in cfgs.items():
            if key in skip:
                continue
            prev = self.latest.get(("trial", key, seed))
            if self.finished(prev):
                skipped += 1
                self.skip(prev)
                continue
            if self.stopping():
                return skipped, True
            rec = self.run({"kind": "trial", "variant": key, "label": VARIANTS[key], "seed": seed}, cfg, prev)
            if rec["status"] == "stopped":
                return skipped, True
        return skipped, False

    def run(self, head: dict, cfg: RunConfig, prev: dict | None, *, poison: PoisonConfig | None = None) -> dict:
        """Train (or resume) one run of the study, recorded ``running`` as it starts and again as it ends.

        ``poison``: a crafting run (SAM with :class:`SharpnessAwarePoisoner`); its record gets ``poison_path``.
        """
        self.emit("run_started", dict(head, status="running"))
        factory = (lambda: SharpnessAwarePoisoner(poison)) if poison is not None else None
        rec = dict(head, **_train(cfg, prev, callbacks=self.callbacks, stop=self.stop, handle_sigint=self.handle_sigint,
                                  stepper_factory=factory,
                                  on_start=lambda p: self.record(dict(head, status="running", run_path=str(p)))))
        if poison is not None:
            _attach_poison(rec)
        self.record(rec)
        self.done += 1
        self.emit("run_ended", rec)
        return rec


# --------------------------------------------------------------- comparison
@dataclass
class PoisonComparison:
    """Outcome (or current state) of :func:`compare_poison`.

    Attributes:
        path: the study folder ``<root>/<name>``.
        base: the base run config; poison: the :class:`PoisonConfig`.
        seeds: the training seeds of the trials; craft_seed: seed of the crafting run whose
            poison ``craft_run``/``poison_path``/``noise_path`` describe (the shared poison;
            per seed: the first seed's).
        status: ``finished`` (every run finished), ``stopped`` or ``incomplete`` (a run failed).
        craft_run: the crafting (SAM) run folder; poison_path: its ``artifacts/poison.pt``;
            noise_path: the matched noise ``artifacts/noise.pt`` beside it.
        protocol: ``per_seed`` (one crafting run per seed, Table 4.3) or ``shared``.
        crafts: seed → ``{"craft_run", "poison_path", "noise_path"}`` of every crafting run
            (per seed; ``shared``: the one crafting run under ``craft_seed``).
        trials: one row per (variant, seed): ``variant`` (label), ``key``, ``seed``,
            ``status``, ``run_path``, final ``test_acc``/``val_acc``/``train_acc`` and
            losses, ``best_val_acc``, ``epochs_done``, ``seconds``, ``error``.
        skipped: runs found finished in the records and not trained again.
    """

    path: Path
    base: RunConfig
    poison: PoisonConfig
    seeds: list
    craft_seed: int = 0
    status: str = "finished"
    craft_run: Path | None = None
    poison_path: Path | None = None
    noise_path: Path | None = None
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)
    skipped: int = 0
    protocol: str = "per_seed"
    crafts: dict = field(default_factory=dict)

    # ------------------------------------------------------------- runs
    def run_path(self, variant: str, seed: int = 0) -> Path:
        """The run folder of ``variant`` (key or label) and ``seed``.

        Raises:
            KeyError: no such trial, or it has no run folder (yet).
        """
        key = variant_key(variant)
        t = self.trials
        hit = t[(t["key"] == key) & (t["seed"] == int(seed))] if len(t) else t
        if hit.empty or not isinstance(hit.iloc[0]["run_path"], str):
            raise KeyError(f"no run for variant {VARIANTS[key]!r} with seed {seed} in {str(self.path)!r}")
        return Path(hit.iloc[0]["run_path"])

    def reload(self) -> "PoisonComparison":
        """Re-read the records (e.g. while another thread or process runs the comparison)."""
        return open_comparison(self.path, seeds=self.seeds)

    # ------------------------------------------------------------ tables
    def table(self, metric: str = "test_acc") -> pd.DataFrame:
        """Mean ± standard error over seeds per variant (finished runs): ``variant``, ``<metric>_mean/_se/_n``."""
        from ..sweeps.results import summarize

        t = self.trials
        if len(t) and metric not in t:
            raise ValueError(f"metric={metric!r} is invalid: choose one of "
                             f"{[c for c in t.columns if c.endswith(('_acc', '_loss'))]}")
        s = summarize(t if len(t) else pd.DataFrame(columns=["variant", "status", metric]), ["variant"], [metric])
        order = {v: i for i, v in enumerate(VARIANTS.values())}
        if len(s):
            s = s.sort_values("variant", key=lambda c: c.map(order)).reset_index(drop=True)
        return s

    def to_markdown(self, metric: str = "test_acc", **kw) -> str:
        """The Tables 4.3-4.4 layout in Markdown: "mean ± s.e." per variant, the best in bold."""
        from ..sweeps.results import to_markdown

        return to_markdown(self.table(metric), ["variant"], metric, **kw)

    def to_latex(self, metric: str = "test_acc", **kw) -> str:
        """The same as a booktabs LaTeX table (``caption=``, ``label=`` as in :func:`workbench.sweeps.to_latex`)."""
        from ..sweeps.results import to_latex

        return to_latex(self.table(metric), ["variant"], metric, **kw)

    # ------------------------------------------------------ minima analyses
    def hessians(self, seed: int = 0, k: int = 5, *, count: int | None = -1, split: str = "train",
                 variants: Sequence[str] = ("sgd_clean", "sgd_poison"), device: str = "auto") -> dict:
        """``{variant label: AnalysisOutput}`` of ``analyze("hessian")`` (top-``k`` Lanczos) at each variant's minimum.

        See :meth:`eigenvalues`; the figure is :func:`workbench.viz.poison_study.plot_eigenvalues`.
        """
        from ..analysis.tasks import analyze

        return {VARIANTS[variant_key(v)]: analyze("hessian", self.run_path(v, seed), count=count, split=split,
                                                   device=device, params={"k": int(k)})
                for v in variants}

    def eigenvalues(self, seed: int = 0, k: int = 5, *, count: int | None = -1, split: str = "train",
                    variants: Sequence[str] = ("sgd_clean", "sgd_poison"), device: str = "auto") -> pd.DataFrame:
        """Top-k Hessian eigenvalues of the baseline and poison minima ([Murphy 2025, Fig. 5.9, §5.3.5]).

        Computed with :func:`workbench.analysis.tasks.analyze` (``"hessian"``, Lanczos) on a
        fixed, seeded set of ``count`` examples of ``split`` of each run's own data: with
        ``split="train"`` the baseline on S and the poison run on S′, i.e. each model on the
        objective it minimised; ``split="test"`` compares both on the same clean examples.
        Results are saved in the run folders, so asking again is instant.

        Returns:
            One row per variant: ``variant``, ``lambda_1`` … ``lambda_k``, ``lambda_1/lambda_5``,
            ``count``, ``split``, ``n_matvecs``.
        """
        outs = self.hessians(seed, k, count=count, split=split, variants=variants, device=device)
        rows = []
        for label, out in outs.items():
            r = out.result
            vals = [float(v) for v in r.values]
            row: dict[str, Any] = {"variant": label, **{f"lambda_{i + 1}": v for i, v in enumerate(vals[:8])}}
            if r.which != "SA" and len(vals) >= 5 and vals[4] != 0:
                row["lambda_1/lambda_5"] = vals[0] / vals[4]
            row.update(n_matvecs=r.n_matvecs, converged=r.converged, count=r.count, seconds=r.seconds, split=split)
            rows.append(row)
        return pd.DataFrame(rows)

    def interpolation(self, seed: int = 0, *, count: int | None = -1, params: Mapping | None = None,
                      device: str = "auto"):
        """1-D linear interpolation between the baseline and the poison minimum ([Murphy 2025, Fig. 5.10]).

        ``analyze("interpolate", baseline_run, other=poison_run)``: θ(α) = αθ₁ + (1−α)θ₂ with
        θ₁ = ``SGD on S`` at α = 1 and θ₂ = ``SGD on S′`` at α = 0, as in the report ("poison
        minimum is at 0.0 and baseline minimum is at 1.0"); evaluated on clean train and test
        examples (the baseline run's data). Returns the :class:`AnalysisOutput`.
        """
        from ..analysis.tasks import analyze

        return analyze("interpolate", self.run_path("sgd_clean", seed), other=self.run_path("sgd_poison", seed),
                       count=count, params=dict(params or {}), device=device)

    # ------------------------------------------------------- crafting run
    def _craft(self) -> Path:
        if self.craft_run is None or not Path(self.craft_run).is_dir():
            raise KeyError(f"the comparison in {str(self.path)!r} has no crafting run yet")
        return Path(self.craft_run)

    def craft_records(self) -> list[dict]:
        """The crafting run's ``craft`` records (one per batch: ``losses`` per inner iteration)."""
        return craft_records(self._craft())

    def poison_probes(self) -> list[dict]:
        """The crafting run's per-epoch ``poison`` records (‖Δ‖, drift, poison/clean cosine losses)."""
        return poison_probes(self._craft())

    def sam_steps(self, seed: int | None = None) -> pd.DataFrame:
        """The step records (``cosine`` = cos(g, g′) per SAM step, ...) of a SAM run.

        ``seed=None``: the crafting run; a seed: that seed's ``SAM on S`` run.
        """
        path = self._craft() if seed is None else self.run_path("sam_clean", seed)
        return load_run(path).steps

    def images(self, n: int = 8) -> dict:
        """The first ``n`` training examples: ``{"x", "delta", "noise", "labels", "index"}`` (input units)."""
        from ..training.trainer import load_data_cached

        if self.poison_path is None:
            raise KeyError(f"the comparison in {str(self.path)!r} has no poison yet")
        bundle = load_data_cached(dataclasses.replace(self.base.data, poison=None))
        train = bundle.train
        poison = load_poison(self.poison_path)
        idx = train.index[: int(n)].cpu()
        mask, d = poison.rows_for(idx)
        x = train.x[: int(n)].cpu()[mask]
        y = train.y[: int(n)].cpu()[mask]
        out = {"x": x, "delta": d, "labels": [bundle.class_names[int(c)] for c in y], "index": idx[mask]}
        if self.noise_path is not None and Path(self.noise_path).is_file():
            out["noise"] = load_poison(self.noise_path).rows_for(idx)[1]
        return out

    def norms(self) -> pd.DataFrame:
        """Norms of the poison and the matched noise (Frobenius, mean/max per-example ℓ2, max |·|)."""
        rows = []
        for what, p in (("poison", self.poison_path), ("noise", self.noise_path)):
            if p is not None and Path(p).is_file():
                rows.append({"what": what, **load_poison(p).norms()})
        return pd.DataFrame(rows)


def variant_key(v: str) -> str:
    """The variant key (``sgd_poison``) of a key or label (``SGD on S′``).

    Raises:
        ValueError: neither a key nor a label of :data:`VARIANTS`.
    """
    if v in VARIANTS:
        return v
    for k, label in VARIANTS.items():
        if v == label:
            return k
    raise ValueError(f"variant={v!r} is invalid: choose one of {list(VARIANTS)} or {list(VARIANTS.values())}")


_TRIAL_COLUMNS = ["variant", "key", "seed", "status", "run_path", "test_acc", "val_acc", "train_acc", "train_loss",
                  "val_loss", "test_loss", "best_val_acc", "epochs_done", "seconds", "error"]


def _trials_frame(latest: Mapping[tuple, dict], seeds: Sequence[int]) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        for key, label in VARIANTS.items():
            r = latest.get(("trial", key, int(seed)))
            row = {"variant": label, "key": key, "seed": int(seed), "status": r["status"] if r else "pending",
                   "run_path": r.get("run_path") if r else None}
            for c in _TRIAL_COLUMNS[5:]:
                row[c] = r.get(c) if r else None
            rows.append(row)
    df = pd.DataFrame(rows, columns=_TRIAL_COLUMNS)
    for c in _TRIAL_COLUMNS[5:-1]:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def _comparison_spec(base_cfg: RunConfig, poison_cfg: PoisonConfig, craft_seed: int, noise_seed: int,
                     shared_poison: bool = True) -> tuple[dict, dict]:
    """``(definition, extra)`` of a comparison folder (see :func:`workbench.engine.bind_spec`).

    The shared-poison definition is the older one unchanged (its folders keep their names).
    """
    if shared_poison:
        core = {"base": config_core(base_cfg), "poison": poison_cfg.to_dict(), "craft_seed": int(craft_seed),
                "noise_seed": int(noise_seed)}
    else:
        core = {"base": config_core(base_cfg), "poison": poison_cfg.to_dict(), "protocol": "per_seed",
                "noise_seed": int(noise_seed)}
    return core, {"format": _FORMAT, "kind": "poison_comparison", "base_config": base_cfg.to_dict(),
                  "created": _now()}


def compare_poison(base_cfg: RunConfig, poison_cfg: PoisonConfig | None = None, *,
                   seeds: Sequence[int] = (0, 1, 2, 3, 4), root: str | Path | None = None, name: str | None = None,
                   craft_seed: int = 0, noise_seed: int = 0, callbacks: Iterable[Callable] = (),
                   stop: threading.Event | None = None, handle_sigint: bool = True,
                   shared_poison: bool = False) -> PoisonComparison:
    """The Table 4.3 comparison: per seed, craft a poison with SAM, then train SGD on S, SGD on S′ and SGD on S + noise.

    ``SAM on S`` is each seed's crafting run (its own accuracy, as [Murphy 2025, §4.2]
    reports the SAM column); see the module docstring.

    Args:
        base_cfg: data, model, schedule, epochs and the base optimizer's hyperparameters
            (``optim.rho`` is used by the SAM variant and the crafting run). Its
            ``data.poison`` must be empty; ``data.poison_from_epoch`` applies to the
            poison and noise variants (1: from the first epoch, as in §5.2).
        poison_cfg: how the poison is crafted (default :class:`PoisonConfig`: §5.2).
        seeds: training seeds; each seed trains the four variants from the same initialisation.
        root: parent of the study folder (default ``<base_cfg.root>/poison``).
        name: study folder name (default ``compare-<data>-<model>-<hash of the configs>``, so
            the same comparison resumes and a different one gets its own folder).
        craft_seed: training seed of the one crafting run with ``shared_poison`` (ignored otherwise:
            each seed's crafting run trains with that seed).
        noise_seed: seed of the matched random noise (per seed: ``noise_seed + seed``).
        callbacks: receive :class:`PoisonStudyEvent` objects and the Trainer events of every run.
        stop: when set, the current run stops at its next step (and checkpoints) and no new
            run starts; calling again resumes.
        handle_sigint: on the main thread, the first Ctrl-C (interrupt kernel) stops the
            current run gracefully, which stops the comparison.
        shared_poison: the older protocol: one poison crafted with ``craft_seed`` for every seed
            and a separate ``SAM on S`` run per seed (it hides the crafting variance).

    Returns:
        :class:`PoisonComparison`.

    Raises:
        ValueError: bad arguments, or the folder holds a different comparison.
        RuntimeError: the crafting run failed (the error is recorded too).
    """
    poison_cfg = poison_cfg or PoisonConfig()
    if base_cfg.data.poison:
        raise ValueError("base_cfg.data.poison must be empty: the comparison crafts its own poison")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds!r} is invalid: give one or more distinct integers")
    core, extra = _comparison_spec(base_cfg, poison_cfg, craft_seed, noise_seed, shared_poison)
    study = _Study.open("compare", base_cfg, core, extra, root, name, _comparison_key, callbacks, stop, handle_sigint)
    if not shared_poison:
        return _compare_per_seed(study, base_cfg, poison_cfg, seeds, noise_seed)
    path, runs_dir, latest = study.path, study.runs_dir, study.latest
    study.total = 1 + 4 * len(seeds)
    skipped = 0
    status = "finished"
    study.emit("started", {"path": str(path), "seeds": seeds})

    # ---- 1. the crafting run
    prev = latest.get(("craft", None, int(craft_seed)))
    craft_ok = (prev is not None and prev.get("status") in DONE and prev.get("poison_path")
                and Path(prev["poison_path"]).is_file())
    if craft_ok:
        skipped += 1
        study.skip(prev)
    elif study.stopping():
        status = "stopped"
    else:
        cfg = _craft_config(base_cfg, craft_seed, runs_dir, f"craft-sam-s{craft_seed}")
        rec = study.run({"kind": "craft", "variant": None, "seed": int(craft_seed)}, cfg, prev, poison=poison_cfg)
        if rec["status"] == "stopped":
            status = "stopped"
        elif rec["status"] != "finished":
            study.emit("ended", {"status": "failed"})
            raise RuntimeError(f"the crafting run {rec.get('run_path')} ended {rec['status']}: {rec.get('error')}")
    craft = latest.get(("craft", None, int(craft_seed)))
    craft_run = Path(craft["run_path"]) if craft and craft.get("run_path") else None
    poison_path = noise_path = None
    if status == "finished":
        poison_path = Path(craft["poison_path"])
        noise_path = poison_path.with_name(NOISE_FILE)
        if not noise_path.is_file():
            save_poison(matched_noise(load_poison(poison_path), seed=noise_seed), noise_path)

    # ---- 2. the trials
    if status == "finished":
        for seed in seeds:
            cfgs = variant_configs(base_cfg, seed, poison_path=poison_path, noise_path=noise_path, root=runs_dir)
            n, stopped = study.run_variants(cfgs, seed)
            skipped += n
            if stopped:
                status = "stopped"
                break
    trials = _trials_frame(latest, seeds)
    if status == "finished" and not (trials["status"] == "finished").all():
        status = "incomplete"
    result = PoisonComparison(path=path, base=base_cfg, poison=poison_cfg, seeds=seeds, craft_seed=int(craft_seed),
                              status=status, craft_run=craft_run, poison_path=poison_path, noise_path=noise_path,
                              trials=trials, skipped=skipped, protocol="shared",
                              crafts=_crafts(latest, [int(craft_seed)]))
    study.emit("ended", {"status": status, "path": str(path), "skipped": skipped})
    return result


def _crafts(latest: Mapping[tuple, dict], seeds: Sequence[int]) -> dict:
    """Map each seed to ``{"craft_run", "poison_path", "noise_path"}`` of its recorded crafting run."""
    out = {}
    for seed in seeds:
        c = latest.get(("craft", None, int(seed)))
        if not c or not c.get("run_path"):
            continue
        pp = Path(c["poison_path"]) if c.get("poison_path") else None
        noise = pp.with_name(NOISE_FILE) if pp is not None else None
        out[int(seed)] = {"craft_run": Path(c["run_path"]), "poison_path": pp,
                          "noise_path": noise if noise is not None and noise.is_file() else None}
    return out


def _sam_from_craft(craft: dict, seed: int) -> dict:
    """The ``SAM on S`` trial record of a seed under the per-seed protocol: its crafting run's own metrics."""
    skip = {"kind", "variant", "label", "seed", "time", "poison_path"}
    return {**{k: v for k, v in craft.items() if k not in skip}, "kind": "trial", "variant": "sam_clean",
            "label": VARIANTS["sam_clean"], "seed": int(seed), "source": "crafting run"}


def _compare_per_seed(study: "_Study", base_cfg: RunConfig, poison_cfg: PoisonConfig, seeds: list[int],
                      noise_seed: int) -> PoisonComparison:
    """:func:`compare_poison` under the Table 4.3 protocol: one crafting run per seed (see the module docstring)."""
    path, runs_dir, latest = study.path, study.runs_dir, study.latest
    study.total = 4 * len(seeds)  # per seed: the crafting run (= SAM on S) and three trained variants
    skipped = 0
    status = "finished"
    study.emit("started", {"path": str(path), "seeds": seeds, "protocol": "per_seed"})

    finished = study.finished

    for seed in seeds:
        prev = latest.get(("craft", None, seed))
        if finished(prev, "poison_path"):
            skipped += 1
            study.skip(prev)
        elif study.stopping():
            status = "stopped"
            break
        else:
            cfg = _craft_config(base_cfg, seed, runs_dir, f"craft-sam-s{seed}")
            rec = study.run({"kind": "craft", "variant": None, "seed": seed}, cfg, prev, poison=poison_cfg)
            if rec["status"] == "stopped":
                status = "stopped"
                break
            if rec["status"] != "finished":
                study.emit("ended", {"status": "failed"})
                raise RuntimeError(f"the crafting run {rec.get('run_path')} ended {rec['status']}: {rec.get('error')}")
        craft = latest[("craft", None, seed)]
        sam = _sam_from_craft(craft, seed)
        old = latest.get(("trial", "sam_clean", seed))
        if old is None or {k: v for k, v in old.items() if k != "time"} != sam:
            study.record(sam)
        poison_path = Path(craft["poison_path"])
        noise_path = poison_path.with_name(NOISE_FILE)
        if not noise_path.is_file():
            save_poison(matched_noise(load_poison(poison_path), seed=int(noise_seed) + seed), noise_path)
        cfgs = variant_configs(base_cfg, seed, poison_path=poison_path, noise_path=noise_path, root=runs_dir)
        n, stopped = study.run_variants(cfgs, seed, skip=("sam_clean",))  # SAM on S is the crafting run itself
        skipped += n
        if stopped:
            status = "stopped"
            break
    trials = _trials_frame(latest, seeds)
    if status == "finished" and not (trials["status"] == "finished").all():
        status = "incomplete"
    crafts = _crafts(latest, seeds)
    first = crafts[min(crafts)] if crafts else {}
    result = PoisonComparison(path=path, base=base_cfg, poison=poison_cfg, seeds=seeds,
                              craft_seed=min(crafts) if crafts else seeds[0], status=status,
                              craft_run=first.get("craft_run"), poison_path=first.get("poison_path"),
                              noise_path=first.get("noise_path"), trials=trials, skipped=skipped,
                              protocol="per_seed", crafts=crafts)
    study.emit("ended", {"status": status, "path": str(path), "skipped": skipped})
    return result


def open_comparison(path: str | Path, *, seeds: Sequence[int] | None = None) -> PoisonComparison:
    """Open a comparison folder written by :func:`compare_poison` without running anything.

    ``seeds`` defaults to every seed found in the records. ``status`` is ``finished`` when
    every trial of those seeds finished, else ``incomplete``.

    Raises:
        FileNotFoundError: not a comparison folder.
    """
    path = Path(path)
    f = path / "comparison.json"
    if not f.is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a poison comparison folder (no comparison.json)")
    spec = json.loads(f.read_text())
    latest = Journal(path / "comparison.jsonl", _comparison_key).latest()
    if seeds is None:
        seeds = sorted({int(k[2]) for k in latest if k[0] == "trial" and k[2] is not None})
    protocol = spec.get("protocol", "shared")
    crafts = _crafts(latest, list(seeds) if protocol == "per_seed" else [int(spec["craft_seed"])])
    craft_seed = (min(crafts) if crafts else (list(seeds) or [0])[0]) if protocol == "per_seed" \
        else int(spec["craft_seed"])
    first = crafts.get(craft_seed, {})
    trials = _trials_frame(latest, list(seeds))
    status = "finished" if len(trials) and (trials["status"] == "finished").all() else "incomplete"
    return PoisonComparison(path=path, base=RunConfig.from_dict(spec["base_config"]),
                            poison=PoisonConfig.from_dict(spec["poison"]), seeds=list(seeds),
                            craft_seed=craft_seed, status=status, craft_run=first.get("craft_run"),
                            poison_path=first.get("poison_path"), noise_path=first.get("noise_path"), trials=trials,
                            protocol=protocol, crafts=crafts)


# ------------------------------------------------------------------- search
def table41_grid(epochs: int) -> dict[str, list]:
    """The Table 4.1 search space scaled to a short run of ``epochs`` epochs on small data.

    Table 4.1 (F-MNIST, ResNet-18, 100 epochs): lr^P ∈ {0.001, 0.01, 0.1}, ε ∈ {0, 5 %},
    iterations ∈ {25, 50}, start epoch ∈ {0, 10}. Here: ``lr`` ∈ {0.01, 0.1},
    ``epsilon`` ∈ {0, 0.1} (relative: a fraction of each example's ‖x‖∞, ``PoisonConfig.relative``),
    ``iterations`` ∈ {5, 10}, ``start_epoch`` ∈ {1, epochs // 3} (one value when they coincide):
    16 combinations (8 when epochs < 6).
    """
    starts = sorted({1, max(1, int(epochs) // 3)})
    return {"lr": [0.01, 0.1], "epsilon": [0.0, 0.1], "iterations": [5, 10], "start_epoch": starts}


SEARCH_COLUMNS = ["combo_id", "seed", "status", "sam_val_acc", "poison_val_acc", "ratio", "sam_best_val_acc",
                   "poison_best_val_acc", "best_ratio", "sam_test_acc", "poison_test_acc", "craft_run", "poison_run",
                   "poison_path", "error"]


def _combos(grid: Mapping[str, Sequence]) -> list[dict]:
    names = list(grid)
    return [dict(zip(names, vals)) for vals in itertools.product(*[list(grid[n]) for n in names])]


def _check_grid(grid: Mapping[str, Sequence], base: PoisonConfig) -> None:
    known = {f.name for f in dataclasses.fields(PoisonConfig)}
    for k, vals in grid.items():
        if k not in known:
            raise ValueError(f"grid key {k!r} is invalid: choose PoisonConfig fields {sorted(known)}")
        if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence) or not len(vals):
            raise ValueError(f"grid[{k!r}]={vals!r} is invalid: give a non-empty list of values")
        for v in vals:
            PoisonConfig.from_dict({**base.to_dict(), k: v})  # validates the value


def _search_spec(base_cfg: RunConfig, poison_cfg: PoisonConfig) -> tuple[dict, dict]:
    """``(definition, extra)`` of a search folder (see :func:`workbench.engine.bind_spec`)."""
    core = {"base": config_core(base_cfg), "poison": poison_cfg.to_dict()}
    return core, {"format": _FORMAT, "kind": "poison_search", "base_config": base_cfg.to_dict(), "created": _now()}


def poison_search(base_cfg: RunConfig, grid: Mapping[str, Sequence] | None = None, *,
                  poison_cfg: PoisonConfig | None = None, seeds: Sequence[int] = (0,),
                  root: str | Path | None = None, name: str | None = None, callbacks: Iterable[Callable] = (),
                  stop: threading.Event | None = None, handle_sigint: bool = True) -> pd.DataFrame:
    """The §4.2 search: for every combination × seed, a SAM crafting run and SGD on its poison.

    For each combination of ``grid`` (PoisonConfig fields → values; default
    :func:`table41_grid` of ``base_cfg.train.epochs``) and seed: a SAM run (same seed,
    ``optim.rho`` of the base config) crafts a poison, then the base optimizer trains on
    it (same seed, ``data.poison_from_epoch`` of the base config). Recorded: both runs'
    final validation accuracies and ``ratio = poison_val_acc / sam_val_acc`` (Fig. 4.1; the
    report uses the best epoch: ``best_ratio`` of the best validation accuracies), test
    accuracies and run folders.

    Resumable: the folder ``<root>/<name>/`` keeps ``search.json`` (base configs),
    ``search.jsonl`` (one record per crafting / poison run, latest wins) and ``runs/``;
    running again skips finished runs (a combination whose crafting run finished only
    trains its poison run), resumes stopped ones from their checkpoint and adds new grid
    values or seeds. The default ``name`` hashes only the base configs, so a larger grid
    reuses the combinations already done.

    Args:
        base_cfg: as for :func:`compare_poison`.
        grid: the search space (PoisonConfig fields); values of other fields come from ``poison_cfg``.
        poison_cfg: the fixed poisoning settings (default :class:`PoisonConfig`).
        seeds: seeds per combination (the report: one).
        root: parent of the study folder (default ``<base_cfg.root>/poison``).
        name: folder name (default ``search-<data>-<model>-<hash>``).
        callbacks: receive :class:`PoisonStudyEvent` objects and the Trainer events of every run.
        stop: when set, the current run stops at its next step and no new run starts; calling again resumes.
        handle_sigint: on the main thread, the first Ctrl-C stops the current run gracefully (and the search).

    Returns:
        One row per combination × seed: ``combo_id``, ``seed``, one column per grid field,
        ``status``, ``sam_val_acc``, ``poison_val_acc``, ``ratio``, ``sam_best_val_acc``,
        ``poison_best_val_acc``, ``best_ratio``, ``sam_test_acc``, ``poison_test_acc``,
        ``craft_run``, ``poison_run``, ``poison_path``, ``error``. ``df.attrs["path"]`` is the
        study folder and ``df.attrs["status"]`` finished / stopped / incomplete.
    """
    poison_cfg = poison_cfg or PoisonConfig()
    if base_cfg.data.poison:
        raise ValueError("base_cfg.data.poison must be empty: the search crafts its own poisons")
    grid = dict(grid) if grid is not None else table41_grid(base_cfg.train.epochs)
    _check_grid(grid, poison_cfg)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds!r} is invalid: give one or more distinct integers")
    core, extra = _search_spec(base_cfg, poison_cfg)
    study = _Study.open("search", base_cfg, core, extra, root, name, _search_key, callbacks, stop, handle_sigint)
    path, runs_dir, latest = study.path, study.runs_dir, study.latest
    combos = _combos(grid)
    todo = [(c, s) for c in combos for s in seeds]
    study.total, status = 2 * len(todo), "finished"
    study.emit("started", {"path": str(path), "combinations": len(combos), "seeds": seeds})

    finished = study.finished

    ids = []
    for params, seed in todo:
        cid = spec_hash({"params": params, "seed": seed}, 12)
        ids.append((cid, params, seed))
        if status == "stopped":
            continue
        head = {"combo_id": cid, "params": params, "seed": seed}
        craft = latest.get((cid, "craft"))
        if finished(craft, "poison_path"):
            study.skip(craft)
        else:
            if study.stopping():
                status = "stopped"
                continue
            pc = PoisonConfig.from_dict({**poison_cfg.to_dict(), **params})
            rec = study.run(dict(head, stage="craft"), _craft_config(base_cfg, seed, runs_dir, f"craft-{cid}"), craft,
                            poison=pc)
            if rec["status"] == "stopped":
                status = "stopped"
                continue
            if rec["status"] != "finished":
                study.done += 1  # its poison run cannot happen
                continue
            craft = rec
        prev = latest.get((cid, "poison"))
        if finished(prev, "run_path"):
            study.skip(prev)
            continue
        if study.stopping():
            status = "stopped"
            continue
        cfg = variant_configs(base_cfg, seed, poison_path=craft["poison_path"], root=runs_dir)["sgd_poison"]
        rec = study.run(dict(head, stage="poison"), cfg.with_overrides({"name": f"poison-{cid}"}), prev)
        if rec["status"] == "stopped":
            status = "stopped"
    df = _search_frame(latest, ids, list(grid))
    if status == "finished" and not (df["status"] == "finished").all():
        status = "incomplete"
    df.attrs.update(path=str(path), status=status)
    study.emit("ended", {"status": status, "path": str(path)})
    return df


def _search_frame(latest: Mapping[tuple, dict], ids: Sequence[tuple], params: Sequence[str]) -> pd.DataFrame:
    rows = []
    for cid, p, seed in ids:
        c, q = latest.get((cid, "craft")) or {}, latest.get((cid, "poison")) or {}
        st = q.get("status") if c.get("status") == "finished" else (c.get("status") or "pending")
        row = {"combo_id": cid, "seed": seed, **p, "status": st or "pending",
               "sam_val_acc": c.get("val_acc"), "poison_val_acc": q.get("val_acc"),
               "sam_best_val_acc": c.get("best_val_acc"), "poison_best_val_acc": q.get("best_val_acc"),
               "sam_test_acc": c.get("test_acc"), "poison_test_acc": q.get("test_acc"),
               "craft_run": c.get("run_path"), "poison_run": q.get("run_path"), "poison_path": c.get("poison_path"),
               "error": q.get("error") or c.get("error")}
        rows.append(row)
    cols = ["combo_id", "seed", *params] + SEARCH_COLUMNS[2:]
    df = pd.DataFrame(rows, columns=cols)
    for a in ("sam_val_acc", "poison_val_acc", "sam_best_val_acc", "poison_best_val_acc", "sam_test_acc",
              "poison_test_acc"):
        df[a] = pd.to_numeric(df[a], errors="coerce")
    df["ratio"] = df["poison_val_acc"] / df["sam_val_acc"]
    df["best_ratio"] = df["poison_best_val_acc"] / df["sam_best_val_acc"]
    return df


def read_search(path: str | Path) -> pd.DataFrame:
    """The table of a search folder (every combination recorded so far), without running anything."""
    path = Path(path)
    if not (path / "search.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a poison search folder (no search.json)")
    journal = Journal(path / "search.jsonl", _search_key)
    recs = journal.records()
    latest = journal.latest()
    ids, seen, params = [], set(), []
    for r in recs:
        if r["combo_id"] not in seen:
            seen.add(r["combo_id"])
            ids.append((r["combo_id"], r.get("params", {}), r.get("seed")))
            params += [k for k in r.get("params", {}) if k not in params]
    df = _search_frame(latest, ids, params)
    df.attrs.update(path=str(path))
    return df
