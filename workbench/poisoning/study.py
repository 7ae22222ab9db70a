"""Sharpness-aware poisoning studies: the four-way comparison and the Table 4.1 search.

Source: [Murphy 2025, Ch. 4] (§4.2: the poisoning hyperparameter search of
Table 4.1 judged by the Fig. 4.1 ratios; Tables 4.3-4.4: test accuracy, mean ±
standard error over 5 seeds) and Ch. 5 (the LeNet-5/MNIST analysis, Figs. 5.1-5.10).

:func:`compare_poison` crafts one poison S′ = S + Δ with a SAM run
(:class:`~workbench.poisoning.SharpnessAwarePoisoner`), builds random noise with the
poison's per-example norms (the §5.3.2 control), and then trains, for every seed, four
fresh models from the same initialisation:

=====================  ==============================================================
``SGD on S``           the base optimizer on the clean training set (the baseline)
``SGD on S′``          the base optimizer on the poisoned set (``data.poison``)
``SAM on S``           SAM (``optim.rho`` of the base config) on the clean set
``SGD on S + noise``   the base optimizer on S + matched random noise (Fig. 5.3)
=====================  ==============================================================

"SGD" is the base config's optimizer (``sgd``, or ``adam`` when the base config uses
Adam); the SAM variant and the crafting run use ``optim.name = "sam"`` with the same
learning rate, momentum, weight decay and schedule.

Study folder ``<root>/<name>/``::

    comparison.json     the definition (base config, poison config, craft seed, noise seed)
    comparison.jsonl    one record per crafting run / trial start and end (latest wins)
    runs/               ordinary run folders: the crafting run and one per (variant, seed)

The poison is the crafting run's ``artifacts/poison.pt``; the matched noise is written
beside it as ``artifacts/noise.pt``. Running the same comparison again skips every
finished run and resumes stopped or killed ones from their last checkpoint (the same
spirit as :mod:`workbench.sweeps.runner`); more seeds can be added later.

:func:`poison_search` runs the §4.2 search: for every combination of poisoning
hyperparameters (and seed) a SAM crafting run, then the base optimizer on its poison;
it records both final validation accuracies and their ratio (Fig. 4.1: > 1 means the
poison run beat the SAM run that made its poison). :func:`ratio_figure` draws Fig. 4.1.

The core part of this module imports no plotting library; the figure methods import
:mod:`workbench.viz` when called.

No UI imports.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd

from ..config import RunConfig
from ..data.poison import load_poison, save_poison
from ..runs import Run, load_run
from ..runs.logs import append_jsonl, read_jsonl
from ..runs.store import atomic_write_bytes
from .sharpness_aware import POISON_FILE, PoisonConfig, SharpnessAwarePoisoner, matched_noise

__all__ = ["VARIANTS", "NOISE_FILE", "PoisonStudyEvent", "PoisonComparison", "compare_poison", "open_comparison",
           "variant_configs", "poison_search", "read_search", "table41_grid", "ratio_figure", "craft_records",
           "poison_probes"]

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
def _hash(obj: Any, n: int = 10) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _append(path: Path, record: dict) -> None:
    """Append one record to a study log (a torn last line is terminated first, see :mod:`workbench.runs.logs`)."""
    append_jsonl(path, record, default=str)


def _read_jsonl(path: Path) -> list[dict]:
    """The records of a study log; torn lines are skipped (lines that are not objects: with a warning)."""
    return read_jsonl(path)


def _dedupe(records: Iterable[dict]) -> list[dict]:
    """Drop a run's records of branches abandoned by a resume (as :func:`workbench.runs.load_run` does)."""
    out: list[dict] = []
    for r in records:
        if r.get("kind") == "resume":
            s = r.get("step", 0)
            out = [q for q in out if q.get("step", 0) <= s]
        out.append(r)
    return out


def craft_records(run_path: str | Path) -> list[dict]:
    """The ``craft`` records of a crafting run (one per crafted batch, in order; resumes deduplicated)."""
    return [r for r in _dedupe(Run(run_path).read_metrics()) if r.get("kind") == "craft"]


def poison_probes(run_path: str | Path) -> list[dict]:
    """The per-epoch ``poison`` probe records of a crafting run (‖Δ‖ norms, drift, cosine losses)."""
    return [r for r in _dedupe(Run(run_path).read_metrics())
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


class _Runner:
    """Runs (or resumes) one training run with stop support; returns its record."""

    def __init__(self, callbacks: Sequence[Callable], stop: threading.Event | None, handle_sigint: bool):
        self.callbacks = list(callbacks)
        self.stop = stop
        self.handle_sigint = handle_sigint

    def emit(self, ev) -> None:
        for cb in self.callbacks:
            try:
                cb(ev)
            except Exception:  # a broken UI callback must not stop the study
                pass

    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def train(self, cfg: RunConfig, prev: dict | None, *, stepper_factory=None,
              on_start: Callable[[Path], None] | None = None) -> dict:
        """Train ``cfg``; resume ``prev['run_path']`` when it was stopped or killed with a checkpoint."""
        from ..training import RunStarted, Trainer

        t0 = time.perf_counter()
        rec: dict[str, Any] = {"status": "failed", "run_path": None, "error": None}
        resume = None
        if prev and prev.get("run_path") and prev.get("status") in ("stopped", "running"):
            p = Path(prev["run_path"])
            if (p / "checkpoints" / "last.pt").is_file():
                resume = p
        trainer = None
        try:
            if resume is not None and Run(resume).status().get("status") == "finished":
                rec.update(status="finished", run_path=str(resume))
            else:
                stepper = stepper_factory() if stepper_factory else None
                started = {"done": False}

                def watch(ev):
                    if isinstance(ev, RunStarted) and not started["done"] and ev.run_path:
                        started["done"] = True
                        if on_start is not None:
                            on_start(Path(ev.run_path))
                    if self.stopping() and trainer is not None:
                        trainer.stop()

                cbs = [watch] + self.callbacks
                if resume is not None:
                    trainer = Trainer.from_run(resume, callbacks=cbs, stepper=stepper,
                                               handle_sigint=self.handle_sigint)
                else:
                    trainer = Trainer(cfg, callbacks=cbs, stepper=stepper, handle_sigint=self.handle_sigint)
                if self.stopping():
                    trainer.stop()
                res = trainer.run()
                rec.update(status=res.status, run_path=str(res.run_path) if res.run_path else None, error=res.error)
        except Exception as e:  # recorded; the study goes on
            rec.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=5))
            if trainer is not None and trainer.run_path is not None:
                rec["run_path"] = str(trainer.run_path)
        if rec.get("run_path"):
            rec.update(_run_metrics(Path(rec["run_path"])))
        rec["seconds"] = time.perf_counter() - t0
        return rec


def _check_spec(path: Path, fname: str, spec: dict, what: str) -> None:
    f = path / fname
    if f.exists():
        old = json.loads(f.read_text())
        if old.get("hash") != spec["hash"]:
            raise ValueError(f"{str(path)!r} holds a different {what} (its {fname} differs: base config, poison "
                             f"config or seeds of crafting); choose another name= or root=")
    else:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(f, (json.dumps(spec, indent=1, default=str) + "\n").encode())


def _spec_core(base_cfg: RunConfig) -> dict:
    d = base_cfg.to_dict()
    for k in ("name", "root", "tags"):
        d.pop(k, None)
    d["train"].pop("seed", None)
    return d


# --------------------------------------------------------------- comparison
@dataclass
class PoisonComparison:
    """Outcome (or current state) of :func:`compare_poison`.

    Attributes:
        path: the study folder ``<root>/<name>``.
        base: the base run config; poison: the :class:`PoisonConfig`.
        seeds: the training seeds of the trials; craft_seed: seed of the crafting run.
        status: ``finished`` (every run finished), ``stopped`` or ``incomplete`` (a run failed).
        craft_run: the crafting (SAM) run folder; poison_path: its ``artifacts/poison.pt``;
            noise_path: the matched noise ``artifacts/noise.pt`` beside it.
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

    # ------------------------------------------------------------- runs
    def run_path(self, variant: str, seed: int = 0) -> Path:
        """The run folder of ``variant`` (key or label) and ``seed``.

        Raises:
            KeyError: no such trial, or it has no run folder (yet).
        """
        key = _variant_key(variant)
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

    # ------------------------------------------------------------ curves
    def curves_figure(self, seed: int = 0, *, variants: Sequence[str] | None = None,
                      metrics: Sequence[str] = ("loss",), splits: Sequence[str] = ("train", "val"),
                      theme: str = "screen", title: str | None = None):
        """Train/validation loss curves of the variants for one seed ([Murphy 2025, Figs. 5.1, 5.3, 5.4]).

        ``variants`` (keys or labels; default all four): ``("sgd_clean", "sgd_poison")`` is Fig. 5.1,
        ``("sgd_noise", "sgd_poison")`` Fig. 5.3, ``("sgd_poison", "sam_clean")`` Fig. 5.4.
        """
        from ..viz.curves import CurveData, training_curves

        keys = [_variant_key(v) for v in (variants or list(VARIANTS))]
        runs = []
        for k in keys:
            try:
                rd = load_run(self.run_path(k, seed))
            except (KeyError, FileNotFoundError):
                continue
            runs.append(CurveData(name=VARIANTS[k], epochs=rd.epochs, steps=rd.steps, key=rd.id))
        if title is None and theme == "screen":
            title = f"{' vs '.join(VARIANTS[k] for k in keys)} (seed {seed})"
        return training_curves(runs, metrics=metrics, splits=splits, theme=theme, title=title)

    # ------------------------------------------------------ minima analyses
    def _hessians(self, seed: int, k: int, count: int | None, split: str, variants: Sequence[str], device: str):
        from ..analysis.tasks import analyze

        return {VARIANTS[_variant_key(v)]: analyze("hessian", self.run_path(v, seed), count=count, split=split,
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
        from ..viz.results import summary_rows

        outs = self._hessians(seed, k, count, split, variants, device)
        rows = []
        for label, out in outs.items():
            row = summary_rows("hessian", {label: out.result})[0]
            row = {"variant": label, **{c: v for c, v in row.items() if c != "run"}, "split": split}
            rows.append(row)
        return pd.DataFrame(rows)

    def eigenvalues_figure(self, seed: int = 0, k: int = 5, *, count: int | None = -1, split: str = "train",
                           variants: Sequence[str] = ("sgd_clean", "sgd_poison"), device: str = "auto",
                           theme: str = "screen", log_y: bool = False):
        """Fig. 5.9: the top-k eigenvalues of :meth:`eigenvalues`, one line per variant."""
        from ..viz.results import result_figure

        outs = self._hessians(seed, k, count, split, variants, device)
        fig = result_figure("hessian", {label: o.result for label, o in outs.items()}, theme=theme, log_y=log_y)
        if theme == "screen":
            fig.update_layout(title=dict(text=f"Top-{k} Hessian eigenvalues of the minima (seed {seed}, "
                                              f"{split} split of each run's data)", x=0.01))
        return fig

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

    def interpolation_figure(self, seed: int = 0, *, count: int | None = -1, params: Mapping | None = None,
                             device: str = "auto", theme: str = "screen", log_y: bool = False):
        """Fig. 5.10: loss and accuracy along the line from the poison minimum (α = 0) to the baseline (α = 1)."""
        from ..viz.results import result_figure

        out = self.interpolation(seed, count=count, params=params, device=device)
        return result_figure("interpolate", {f"{VARIANTS['sgd_clean']} → {VARIANTS['sgd_poison']}": out.result},
                             theme=theme, log_y=log_y)

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

    def craft_loss_figure(self, zoom: tuple[int, int] | None = None, *, theme: str = "screen",
                          title: str | None = None):
        """Figs. 5.5 (whole run) and 5.6 (``zoom=(first_step, last_step)``)."""
        from ..viz.poisoning import craft_loss_figure

        return craft_loss_figure(self.craft_records(), zoom=zoom, theme=theme, title=title)

    def delta_norm_figure(self, *, theme: str = "screen", title: str | None = None):
        """Fig. 5.2: ‖Δ‖_F after every epoch of the crafting run."""
        from ..viz.poisoning import delta_norm_figure

        p = self.poison_probes()
        return delta_norm_figure([int(r["epoch"]) for r in p], [r.get("delta_frobenius") for r in p], theme=theme,
                                 title=title)

    def drift_figure(self, *, theme: str = "screen", title: str | None = None):
        """Fig. 5.7: mean 𝓑 of the current poisons at weights frozen after earlier epochs."""
        from ..viz.poisoning import drift_figure

        return drift_figure(self.poison_probes(), theme=theme, title=title)

    def sam_cosine_figure(self, seed: int | None = None, *, theme: str = "screen", title: str | None = None):
        """Fig. 5.8: 1 − cos(g, g′) per step on clean data while training with SAM.

        ``seed=None``: the crafting run (SAM on the clean batches, the run that made the
        poison); a seed: that seed's ``SAM on S`` run.
        """
        from ..viz.poisoning import sam_cosine_figure

        path = self._craft() if seed is None else self.run_path("sam_clean", seed)
        return sam_cosine_figure(load_run(path).steps, theme=theme, title=title)

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

    def image_grid_figure(self, n: int = 8, *, noise: bool = False, theme: str = "screen", title: str | None = None):
        """x, Δ and x + Δ for the first ``n`` training examples (``noise=True``: the matched noise instead of Δ)."""
        from ..viz.poisoning import image_grid_figure

        im = self.images(n)
        d = im["noise"] if noise else im["delta"]
        if title is None and theme == "screen":
            title = (f"Clean images x, {'matched noise' if noise else 'poison perturbations Δ'} and the sum "
                     f"(first {len(im['labels'])} training examples)")
        return image_grid_figure(im["x"], d, n=n, labels=im["labels"], theme=theme, title=title)

    def norms(self) -> pd.DataFrame:
        """Norms of the poison and the matched noise (Frobenius, mean/max per-example ℓ2, max |·|)."""
        rows = []
        for what, p in (("poison", self.poison_path), ("noise", self.noise_path)):
            if p is not None and Path(p).is_file():
                rows.append({"what": what, **load_poison(p).norms()})
        return pd.DataFrame(rows)


def _variant_key(v: str) -> str:
    if v in VARIANTS:
        return v
    for k, label in VARIANTS.items():
        if v == label:
            return k
    raise ValueError(f"variant={v!r} is invalid: choose one of {list(VARIANTS)} or {list(VARIANTS.values())}")


_TRIAL_COLUMNS = ["variant", "key", "seed", "status", "run_path", "test_acc", "val_acc", "train_acc", "train_loss",
                  "val_loss", "test_loss", "best_val_acc", "epochs_done", "seconds", "error"]


def _latest(records: Iterable[dict]) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for r in records:
        out[(r.get("kind"), r.get("variant"), r.get("seed"))] = r
    return out


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


def _comparison_spec(base_cfg: RunConfig, poison_cfg: PoisonConfig, craft_seed: int, noise_seed: int) -> dict:
    core = {"base": _spec_core(base_cfg), "poison": poison_cfg.to_dict(), "craft_seed": int(craft_seed),
            "noise_seed": int(noise_seed)}
    return {"format": _FORMAT, "kind": "poison_comparison", "hash": _hash(core), **core,
            "base_config": base_cfg.to_dict(), "created": _now()}


def compare_poison(base_cfg: RunConfig, poison_cfg: PoisonConfig | None = None, *,
                   seeds: Sequence[int] = (0, 1, 2, 3, 4), root: str | Path | None = None, name: str | None = None,
                   craft_seed: int = 0, noise_seed: int = 0, callbacks: Iterable[Callable] = (),
                   stop: threading.Event | None = None, handle_sigint: bool = True) -> PoisonComparison:
    """Craft a poison once, then train SGD on S, SGD on S′, SAM on S and SGD on S + noise for every seed.

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
        craft_seed: training seed of the crafting (SAM) run.
        noise_seed: seed of the matched random noise.
        callbacks: receive :class:`PoisonStudyEvent` objects and the Trainer events of every run.
        stop: when set, the current run stops at its next step (and checkpoints) and no new
            run starts; calling again resumes.
        handle_sigint: on the main thread, the first Ctrl-C (interrupt kernel) stops the
            current run gracefully, which stops the comparison.

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
    spec = _comparison_spec(base_cfg, poison_cfg, craft_seed, noise_seed)
    root = Path(root) if root is not None else Path(base_cfg.root) / "poison"
    name = name or f"compare-{base_cfg.data.name}-{base_cfg.model.name}-{spec['hash'][:8]}"
    path = root / name
    _check_spec(path, "comparison.json", spec, "poison comparison")
    runs_dir = path / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    log = path / "comparison.jsonl"
    latest = _latest(_read_jsonl(log))
    runner = _Runner(list(callbacks), stop, handle_sigint)
    total = 1 + 4 * len(seeds)
    done = 0
    skipped = 0
    status = "finished"
    runner.emit(PoisonStudyEvent("started", {"path": str(path), "seeds": seeds}, total, done))

    def record(rec: dict) -> None:
        rec = dict(rec, time=_now())
        _append(log, rec)
        latest[(rec.get("kind"), rec.get("variant"), rec.get("seed"))] = rec

    # ---- 1. the crafting run
    prev = latest.get(("craft", None, int(craft_seed)))
    craft_ok = (prev is not None and prev.get("status") in DONE and prev.get("poison_path")
                and Path(prev["poison_path"]).is_file())
    if craft_ok:
        skipped += 1
        done += 1
        runner.emit(PoisonStudyEvent("skipped", prev, total, done))
    elif runner.stopping():
        status = "stopped"
    else:
        cfg = _craft_config(base_cfg, craft_seed, runs_dir, f"craft-sam-s{craft_seed}")
        head = {"kind": "craft", "variant": None, "seed": int(craft_seed)}
        runner.emit(PoisonStudyEvent("run_started", dict(head, status="running"), total, done))
        rec = runner.train(cfg, prev, stepper_factory=lambda: SharpnessAwarePoisoner(poison_cfg),
                           on_start=lambda p: record(dict(head, status="running", run_path=str(p))))
        rec = dict(head, **rec)
        _attach_poison(rec)
        record(rec)
        done += 1
        runner.emit(PoisonStudyEvent("run_ended", rec, total, done))
        if rec["status"] == "stopped":
            status = "stopped"
        elif rec["status"] != "finished":
            runner.emit(PoisonStudyEvent("ended", {"status": "failed"}, total, done))
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
            for key, cfg in cfgs.items():
                prev = latest.get(("trial", key, seed))
                if prev is not None and prev.get("status") in DONE and prev.get("run_path") and \
                        Path(prev["run_path"]).is_dir():
                    skipped += 1
                    done += 1
                    runner.emit(PoisonStudyEvent("skipped", prev, total, done))
                    continue
                if runner.stopping():
                    status = "stopped"
                    break
                head = {"kind": "trial", "variant": key, "label": VARIANTS[key], "seed": seed}
                runner.emit(PoisonStudyEvent("run_started", dict(head, status="running"), total, done))
                rec = dict(head, **runner.train(cfg, prev, on_start=lambda p, h=head: record(
                    dict(h, status="running", run_path=str(p)))))
                record(rec)
                done += 1
                runner.emit(PoisonStudyEvent("run_ended", rec, total, done))
                if rec["status"] == "stopped":
                    status = "stopped"
                    break
            if status == "stopped":
                break
    trials = _trials_frame(latest, seeds)
    if status == "finished" and not (trials["status"] == "finished").all():
        status = "incomplete"
    result = PoisonComparison(path=path, base=base_cfg, poison=poison_cfg, seeds=seeds, craft_seed=int(craft_seed),
                              status=status, craft_run=craft_run, poison_path=poison_path, noise_path=noise_path,
                              trials=trials, skipped=skipped)
    runner.emit(PoisonStudyEvent("ended", {"status": status, "path": str(path), "skipped": skipped}, total, done))
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
    latest = _latest(_read_jsonl(path / "comparison.jsonl"))
    if seeds is None:
        seeds = sorted({int(k[2]) for k in latest if k[0] == "trial" and k[2] is not None})
    craft = latest.get(("craft", None, int(spec["craft_seed"])))
    craft_run = Path(craft["run_path"]) if craft and craft.get("run_path") else None
    poison_path = Path(craft["poison_path"]) if craft and craft.get("poison_path") else None
    noise_path = poison_path.with_name(NOISE_FILE) if poison_path is not None else None
    trials = _trials_frame(latest, list(seeds))
    status = "finished" if len(trials) and (trials["status"] == "finished").all() else "incomplete"
    return PoisonComparison(path=path, base=RunConfig.from_dict(spec["base_config"]),
                            poison=PoisonConfig.from_dict(spec["poison"]), seeds=list(seeds),
                            craft_seed=int(spec["craft_seed"]), status=status, craft_run=craft_run,
                            poison_path=poison_path, noise_path=noise_path if noise_path and noise_path.is_file()
                            else None, trials=trials)


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


_SEARCH_COLUMNS = ["combo_id", "seed", "status", "sam_val_acc", "poison_val_acc", "ratio", "sam_best_val_acc",
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


def _search_spec(base_cfg: RunConfig, poison_cfg: PoisonConfig) -> dict:
    core = {"base": _spec_core(base_cfg), "poison": poison_cfg.to_dict()}
    return {"format": _FORMAT, "kind": "poison_search", "hash": _hash(core), **core,
            "base_config": base_cfg.to_dict(), "created": _now()}


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
        callbacks, stop, handle_sigint: as for :func:`compare_poison`.

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
    spec = _search_spec(base_cfg, poison_cfg)
    root = Path(root) if root is not None else Path(base_cfg.root) / "poison"
    name = name or f"search-{base_cfg.data.name}-{base_cfg.model.name}-{spec['hash'][:8]}"
    path = root / name
    _check_spec(path, "search.json", spec, "poison search")
    runs_dir = path / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    log = path / "search.jsonl"
    latest = {(r.get("combo_id"), r.get("stage")): r for r in _read_jsonl(log)}
    runner = _Runner(list(callbacks), stop, handle_sigint)
    combos = _combos(grid)
    todo = [(c, s) for c in combos for s in seeds]
    total, done, status = 2 * len(todo), 0, "finished"
    runner.emit(PoisonStudyEvent("started", {"path": str(path), "combinations": len(combos), "seeds": seeds},
                                 total, done))

    def record(rec: dict) -> None:
        rec = dict(rec, time=_now())
        _append(log, rec)
        latest[(rec["combo_id"], rec["stage"])] = rec

    def finished(rec: dict | None, need: str) -> bool:
        return bool(rec and rec.get("status") in DONE and rec.get(need) and Path(rec[need]).exists())

    ids = []
    for params, seed in todo:
        cid = _hash({"params": params, "seed": seed}, 12)
        ids.append((cid, params, seed))
        if status == "stopped":
            continue
        head = {"combo_id": cid, "params": params, "seed": seed}
        craft = latest.get((cid, "craft"))
        if finished(craft, "poison_path"):
            done += 1
            runner.emit(PoisonStudyEvent("skipped", craft, total, done))
        else:
            if runner.stopping():
                status = "stopped"
                continue
            pc = PoisonConfig.from_dict({**poison_cfg.to_dict(), **params})
            cfg = _craft_config(base_cfg, seed, runs_dir, f"craft-{cid}")
            h = dict(head, stage="craft")
            runner.emit(PoisonStudyEvent("run_started", dict(h, status="running"), total, done))
            rec = dict(h, **runner.train(cfg, craft, stepper_factory=lambda pc=pc: SharpnessAwarePoisoner(pc),
                                         on_start=lambda p, h=h: record(dict(h, status="running", run_path=str(p)))))
            _attach_poison(rec)
            record(rec)
            done += 1
            runner.emit(PoisonStudyEvent("run_ended", rec, total, done))
            if rec["status"] == "stopped":
                status = "stopped"
                continue
            if rec["status"] != "finished":
                done += 1  # its poison run cannot happen
                continue
            craft = rec
        prev = latest.get((cid, "poison"))
        if finished(prev, "run_path"):
            done += 1
            runner.emit(PoisonStudyEvent("skipped", prev, total, done))
            continue
        if runner.stopping():
            status = "stopped"
            continue
        cfg = variant_configs(base_cfg, seed, poison_path=craft["poison_path"], root=runs_dir)["sgd_poison"]
        cfg = cfg.with_overrides({"name": f"poison-{cid}"})
        h = dict(head, stage="poison")
        runner.emit(PoisonStudyEvent("run_started", dict(h, status="running"), total, done))
        rec = dict(h, **runner.train(cfg, prev, on_start=lambda p, h=h: record(dict(h, status="running",
                                                                                      run_path=str(p)))))
        record(rec)
        done += 1
        runner.emit(PoisonStudyEvent("run_ended", rec, total, done))
        if rec["status"] == "stopped":
            status = "stopped"
    df = _search_frame(latest, ids, list(grid))
    if status == "finished" and not (df["status"] == "finished").all():
        status = "incomplete"
    df.attrs.update(path=str(path), status=status)
    runner.emit(PoisonStudyEvent("ended", {"status": status, "path": str(path)}, total, done))
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
    cols = ["combo_id", "seed", *params] + _SEARCH_COLUMNS[2:]
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
    recs = _read_jsonl(path / "search.jsonl")
    latest = {(r.get("combo_id"), r.get("stage")): r for r in recs}
    ids, seen, params = [], set(), []
    for r in recs:
        if r["combo_id"] not in seen:
            seen.add(r["combo_id"])
            ids.append((r["combo_id"], r.get("params", {}), r.get("seed")))
            params += [k for k in r.get("params", {}) if k not in params]
    df = _search_frame(latest, ids, params)
    df.attrs.update(path=str(path))
    return df


def ratio_figure(df: pd.DataFrame, param: str, *, value: str = "final", bins: int = 10, barmode: str = "overlay",
                 statuses: Sequence[str] | None = ("finished",), theme: str = "screen", title: str | None = None):
    """The Fig. 4.1 view: histograms of poison-run / SAM-run validation-accuracy ratios per value of ``param``.

    Reuses :func:`workbench.viz.sweeps.ratio_histogram_figure`: every poison run is matched
    with the SAM crafting run that made its poison (same ``combo_id``). A ratio above 1
    (right of the dashed line) means the poison run beat its SAM run.

    Args:
        df: :func:`poison_search` output.
        param: a grid column (``lr``, ``epsilon``, ``iterations``, ``start_epoch``, ...).
        value: ``final`` (final validation accuracies, the ``ratio`` column) or ``best``
            (best epoch, ``best_ratio``; the report's choice).
        bins, barmode: see :func:`ratio_histogram_figure` (``group`` is clearer for a few runs).
        statuses: rows used (default finished).

    Raises:
        ValueError: ``param`` is not a column of ``df``, or a bad ``value``.
    """
    from ..viz.sweeps import ratio_histogram_figure
    from ..viz.theme import apply_theme

    if value not in ("final", "best"):
        raise ValueError(f"value={value!r} is invalid: choose 'final' or 'best'")
    if param not in df.columns:
        raise ValueError(f"param={param!r} is invalid: not a column of the search table "
                         f"(grid columns: {[c for c in df.columns if c not in _SEARCH_COLUMNS]})")
    t = df if statuses is None else df[df["status"].isin(list(statuses))]
    pv, sv = ("poison_val_acc", "sam_val_acc") if value == "final" else ("poison_best_val_acc", "sam_best_val_acc")
    t = t[t[pv].notna() & t[sv].notna()]
    label = f"{'final' if value == 'final' else 'best'} validation accuracy: poison run / SAM run"
    if title is None and theme == "screen":
        title = f"Poison / SAM validation accuracy by {param} (Fig. 4.1 view; > 1: poison better)"
    if t.empty:
        import plotly.graph_objects as go

        fig = go.Figure()
        fig.update_xaxes(title_text=label)
        fig.update_yaxes(title_text="runs")
        apply_theme(fig, theme)
        if title:
            fig.update_layout(title=dict(text=title, x=0.01))
        return fig
    keep = ["combo_id", "seed", param]
    long = pd.concat([t[keep].assign(role="poison", val_acc=t[pv].to_numpy(), status="finished"),
                      t[keep].assign(role="sam", val_acc=t[sv].to_numpy(), status="finished")], ignore_index=True)
    fig = ratio_histogram_figure(long, param=param, metric="val_acc", baseline={"role": "sam"},
                                 match_on=("combo_id",), bins=bins, barmode=barmode, statuses=None, theme=theme,
                                 title=title)
    fig.update_xaxes(title_text=label)
    fig.update_yaxes(title_text="runs")
    return fig
