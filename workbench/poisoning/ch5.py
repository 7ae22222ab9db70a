"""The report's Ch. 5 analysis of sharpness-aware poisoning on LeNet-5, run and summarised as stored results.

[Murphy 2025, Ch. 5] trains LeNet-5 on MNIST (§5.1: SGD, lr 0.001, momentum 0.9, weight decay 1e-4,
batch 64, 30 epochs) and poisons from epoch 1 with 5 inner iterations per batch, lr^P 0.01 (Adam), no ε
bound (§5.2), SAM with ρ = 0.05. :func:`ch5_configs` builds those settings (default data: the bundled
``mnist-10k``, 7,000 training images instead of 60,000), :func:`run_ch5` runs or resumes the per-seed
comparison (:func:`~workbench.poisoning.study.compare_poison`: per seed one SAM crafting run, which is also
the ``SAM on S`` column, then SGD on S, on S′ and on S + matched noise), and :func:`summarize_ch5` turns a
finished :class:`~workbench.poisoning.study.PoisonComparison` into three stored results
(:func:`save_ch5`, :func:`workbench.reproduce.store.save_result`):

* ``ch5-losses``: test accuracy per variant and paired differences; validation loss curves of Figs. 5.1, 5.3
  and 5.4 [Murphy 2025, §5.3.1-5.3.3];
* ``ch5-crafting``: ‖Δ‖_F growth (Fig. 5.2), the crafting loss 𝓑 (Figs. 5.5/5.6), its drift at frozen weights
  (Fig. 5.7) and SAM's 1 − cos(g, g′) on clean data (Fig. 5.8) [Murphy 2025, §5.3.4];
* ``ch5-sharpness``: top Hessian eigenvalues of the clean and poison minima (Fig. 5.9) and the interpolation
  between them (Fig. 5.10) [Murphy 2025, §5.3.5].

Every number is read from the run folders; nothing is hard-coded. No UI imports.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ..config import RunConfig
from .sharpness_aware import PoisonConfig

__all__ = ["CH5_LR", "CH5_EPOCHS", "CH5_SEEDS", "CH5_NAME", "Ch5Result", "ch5_configs", "run_ch5", "summarize_ch5",
           "save_ch5", "paired_interval"]

CH5_LR = 0.001
"""The report's SGD learning rate [Murphy 2025, §5.1]."""
CH5_EPOCHS = 30
"""Epochs of every run [Murphy 2025, §5.1]."""
CH5_SEEDS = (0, 1, 2, 3, 4)
"""Seeds of the comparison (the report's tables use 5 runs [Murphy 2025, Table 4.3])."""
CH5_NAME = "ch5-{data}-lenet5"
"""Study folder name under ``<root>`` (``{data}`` is the dataset name)."""


def ch5_configs(*, root: str | Path = "runs", data: str = "mnist-10k", lr: float = CH5_LR, epochs: int = CH5_EPOCHS,
                max_train: int | None = None, drift_epochs: Sequence[int] = (1, 5, 10, 15)
                ) -> tuple[RunConfig, PoisonConfig]:
    """The base run config and the poison config of [Murphy 2025, §5.1-5.2].

    Args:
        root: where the run folders go (``RunConfig.root``).
        data: dataset name (``mnist-10k``: 7,000 train / 1,000 validation / 2,000 test 28×28 images, split
            ``pooled``; ``digits`` for 8×8 images).
        lr: SGD learning rate (the report: 0.001); SAM and the crafting run use the same.
        epochs: epochs of every run (the report: 30).
        max_train: keep only this many training images (tests); ``None``: all.
        drift_epochs: epochs whose weights are frozen for the drift report (Fig. 5.7; those ≤ ``epochs`` kept).

    Returns:
        ``(base, poison)``: LeNet-5, SGD with momentum 0.9, weight decay 1e-4, batch 64, SAM ρ = 0.05, training
        on the poison from epoch 1; Adam on Δ with lr^P 0.01, 5 inner iterations from epoch 1, no ε bound.

    Raises:
        ValueError: a non-positive ``lr`` or ``epochs``.
    """
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr={lr!r} is invalid: give a positive learning rate")
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs={epochs!r} is invalid: give a positive integer")
    base = RunConfig().with_overrides({
        "root": str(root), "data.name": data, "data.split": "pooled", "data.max_train": max_train,
        "model.name": "lenet5", "optim.name": "sgd", "optim.lr": float(lr), "optim.momentum": 0.9,
        "optim.weight_decay": 1e-4, "optim.rho": 0.05, "train.epochs": int(epochs), "train.batch_size": 64,
        "train.seed": 0, "train.num_threads": 1, "data.poison_from_epoch": 1})
    poison = PoisonConfig(lr=0.01, iterations=5, start_epoch=1, epsilon=0.0,
                          drift_epochs=[int(e) for e in drift_epochs if int(e) <= epochs], drift_batches=4)
    return base, poison


def _default_name(data: str, lr: float, epochs: int, max_train: int | None) -> str:
    name = CH5_NAME.format(data=data)
    if float(lr) != CH5_LR or int(epochs) != CH5_EPOCHS:
        name += f"-lr{float(lr):g}-e{int(epochs)}"
    if max_train is not None:
        name += f"-n{int(max_train)}"
    return name


def run_ch5(root: str | Path = "runs", *, seeds: Sequence[int] = CH5_SEEDS, data: str = "mnist-10k",
            lr: float = CH5_LR, epochs: int = CH5_EPOCHS, max_train: int | None = None, name: str | None = None,
            callbacks: Iterable[Callable] = (), stop=None, handle_sigint: bool = True):
    """Run (or resume) the Ch. 5 comparison at the settings of :func:`ch5_configs` [Murphy 2025, §5.1-5.2].

    Per seed: a SAM crafting run (also the ``SAM on S`` column), SGD on S, SGD on S′ and SGD on S + matched
    noise (:func:`~workbench.poisoning.study.compare_poison`, per-seed protocol). Finished runs are skipped, so a
    second call with the same arguments trains nothing; stopped runs resume from their checkpoint.

    Args:
        root: parent folder of the study folder (and the runs' ``RunConfig.root``).
        seeds: training seeds (distinct integers).
        data: dataset name (see :func:`ch5_configs`).
        lr: SGD learning rate (the report: 0.001).
        epochs: epochs of every run (the report: 30).
        max_train: keep only this many training images (tests); ``None``: all.
        name: study folder name (default ``ch5-<data>-lenet5``, with ``-lr…-e…`` / ``-n…`` for other settings).
        callbacks: receive :class:`~workbench.poisoning.study.PoisonStudyEvent` objects and the Trainer events.
        stop: a ``threading.Event``; when set, the current run stops at its next step and no new one starts.
        handle_sigint: on the main thread, the first Ctrl-C stops the study gracefully.

    Returns:
        The :class:`~workbench.poisoning.study.PoisonComparison`.

    Raises:
        ValueError: bad settings, or the folder holds a different study.
        RuntimeError: a crafting run failed.
    """
    from .study import compare_poison

    base, poison = ch5_configs(root=root, data=data, lr=lr, epochs=epochs, max_train=max_train)
    return compare_poison(base, poison, seeds=seeds, root=root, name=name or _default_name(data, lr, epochs, max_train),
                          callbacks=callbacks, stop=stop, handle_sigint=handle_sigint)


# ------------------------------------------------------------------ statistics
def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of the paired differences ``a − b`` and its Student-t interval.

    Args:
        a: ``[n]`` per-seed values.
        b: ``[n]`` per-seed values, paired with ``a`` by position (pairs with a NaN are dropped).
        level: confidence level.

    Returns:
        ``(mean, lo, hi)``; ``lo``/``hi`` are NaN with fewer than 2 pairs, all NaN with none.
    """
    from ..stats import t_interval

    return t_interval(np.asarray(a, dtype=float) - np.asarray(b, dtype=float), level)


def _mse(v: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (ddof 1; NaN for one value) of the finite values."""
    x = np.asarray(v, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def _below(ci: tuple[float, float, float]) -> bool:
    return bool(math.isfinite(ci[2]) and ci[2] < 0)


def _above(ci: tuple[float, float, float]) -> bool:
    return bool(math.isfinite(ci[1]) and ci[1] > 0)


def _ci_text(ci: tuple[float, float, float], scale: float = 1.0, fmt: str = "+.4f", unit: str = "") -> str:
    m, lo, hi = (scale * x for x in ci)
    if not math.isfinite(lo):
        return f"{m:{fmt}}{unit} (one seed: no interval)"
    return f"{m:{fmt}}{unit} [{lo:{fmt}}, {hi:{fmt}}]"


# ------------------------------------------------------------------ results
@dataclass
class Ch5Result:
    """One stored result of the Ch. 5 analysis (the fields :func:`workbench.reproduce.store.save_result` reads).

    Attributes:
        name: ``ch5-losses``, ``ch5-crafting`` or ``ch5-sharpness``.
        claim: the report's claims of that group, with their figures.
        verdict: ``reproduced`` / ``partial`` / ``not reproduced``.
        verdict_reason: why, in one or two sentences, with the scale.
        measured: the measured numbers in words.
        metrics: the numbers (floats) behind them.
        settings: data, model, seeds, hyperparameters, study folder.
        notes: caveats.
        seconds: wall time of the summary (analyses), plus the training time of the runs.
        tables: per-seed tables kept with the result.
    """

    name: str
    claim: str
    verdict: str
    verdict_reason: str
    measured: str
    metrics: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    seconds: float = 0.0
    tables: dict = field(default_factory=dict)


_SHORT = {"sgd_clean": "clean", "sgd_poison": "poison", "sam_clean": "sam", "sgd_noise": "noise"}


def _epochs(path) -> pd.DataFrame:
    from ..runs import load_run

    return load_run(path).epochs


def _verdict(holds: dict[str, bool], scale: str) -> tuple[str, str]:
    """``partial`` when some or all sub-claims hold (at a reduced scale: never ``reproduced``), else not."""
    ok = [k for k, v in holds.items() if v]
    bad = [k for k, v in holds.items() if not v]
    if not ok:
        return "not reproduced", f"none of {', '.join(bad)} holds ({scale})"
    verb = "holds" if len(ok) == 1 else "hold"
    if not bad:
        return "partial", f"{', '.join(ok)} {verb}, but at a reduced scale ({scale}), so at most partial"
    return "partial", f"{', '.join(ok)} {verb}; {', '.join(bad)} {'does' if len(bad) == 1 else 'do'} not ({scale})"


def _settings(cmp, seeds: list[int]) -> dict:
    b, p = cmp.base, cmp.poison
    return {"dataset": b.data.name, "model": "LeNet-5", "seeds": seeds, "epochs": b.train.epochs, "lr": b.optim.lr,
            "momentum": b.optim.momentum, "weight_decay": b.optim.weight_decay, "batch_size": b.train.batch_size,
            "rho": b.optim.rho, "poison_lr": p.lr, "poison_optimizer": p.optimizer, "iterations": p.iterations,
            "start_epoch": p.start_epoch, "epsilon": p.epsilon, "max_train": b.data.max_train,
            "protocol": cmp.protocol, "study": Path(cmp.path).name}


def _scale(cmp, seeds: list[int], n_train: int) -> str:
    return (f"{cmp.base.data.name} ({n_train:,} train images, not MNIST's 60,000), LeNet-5, {len(seeds)} seed"
            f"{'s' if len(seeds) != 1 else ''}")


def _losses(cmp, seeds: list[int], scale: str) -> Ch5Result:
    t = cmp.trials
    epochs = int(cmp.base.train.epochs)
    late = max(1, epochs // 6)
    rows, curves = [], {}
    for key in _SHORT:
        for s in seeds:
            ep = _epochs(cmp.run_path(key, s))
            vl = ep["val_loss"].to_numpy(dtype=float)
            curves[(key, s)] = vl
            rows.append({"variant": key, "seed": s, "test_acc": float(ep["test_acc"].iloc[-1]),
                         "val_acc": float(ep["val_acc"].iloc[-1]), "val_loss_final": float(vl[-1]),
                         "val_loss_min": float(np.nanmin(vl)),
                         "val_loss_argmin": int(ep["epoch"].iloc[int(np.nanargmin(vl))]),
                         "val_loss_late": float(np.nanmean(vl[-late:])), "val_loss_mean": float(np.nanmean(vl)),
                         "epochs": int(ep["epoch"].iloc[-1])})
    per = pd.DataFrame(rows)
    # the trials table and the run folders must agree (the summary reads the runs themselves)
    for key in _SHORT:
        rec = t[(t["key"] == key) & t["seed"].isin(seeds)].sort_values("seed")["test_acc"].to_numpy(dtype=float)
        got = per[per.variant == key].sort_values("seed")["test_acc"].to_numpy(dtype=float)
        if len(rec) == len(got) and not np.allclose(rec, got, equal_nan=True):
            raise RuntimeError(f"the recorded test accuracies of {key} differ from its run folders in {cmp.path}")

    def col(key, c):
        return per[per.variant == key].sort_values("seed")[c].to_numpy(dtype=float)

    m: dict[str, Any] = {}
    for key, short in _SHORT.items():
        for c in ("test_acc", "val_acc", "val_loss_final", "val_loss_min", "val_loss_argmin", "val_loss_late",
                  "val_loss_mean"):
            m[f"{c}_{short}"], m[f"{c}_{short}_se"] = _mse(col(key, c))
    diffs = {}
    for other in ("sgd_clean", "sgd_noise", "sam_clean"):
        ci = paired_interval(col("sgd_poison", "test_acc"), col(other, "test_acc"))
        diffs[other] = ci
        o = _SHORT[other]
        m[f"diff_acc_poison_{o}"], m[f"diff_acc_poison_{o}_lo"], m[f"diff_acc_poison_{o}_hi"] = ci
    c51 = paired_interval(col("sgd_poison", "val_loss_late"), col("sgd_clean", "val_loss_late"))
    c53 = paired_interval(col("sgd_poison", "val_loss_late"), col("sgd_noise", "val_loss_late"))
    c54 = paired_interval(col("sam_clean", "val_loss_mean"), col("sgd_poison", "val_loss_mean"))
    overfit = col("sgd_clean", "val_loss_final") - col("sgd_clean", "val_loss_min")
    for k, ci in (("fig51_late_val_loss_poison_minus_clean", c51), ("fig53_late_val_loss_poison_minus_noise", c53),
                  ("fig54_mean_val_loss_sam_minus_poison", c54)):
        m[k], m[k + "_lo"], m[k + "_hi"] = ci
    m["clean_val_loss_rise_after_min"], _ = _mse(overfit)
    m["late_epochs"] = float(late)
    m["n_seeds"] = float(len(seeds))
    m["n_test"] = float(_n_split(cmp, "test"))
    holds = {"Fig. 5.1 (poison's late validation loss below clean)": _below(c51),
             "Fig. 5.3 (below matched noise)": _below(c53),
             "Fig. 5.4 (SAM converges more slowly: higher mean validation loss)": _above(c54)}
    verdict, why = _verdict(holds, scale)
    one = 100.0 / m["n_test"] if m["n_test"] else float("nan")
    acc = "; ".join(f"{VAR[k]} {100 * m[f'test_acc_{s}']:.2f} ± {100 * m[f'test_acc_{s}_se']:.2f} %"
                    for k, s in _SHORT.items())
    measured = (
        f"Test accuracy (mean ± s.e. over {len(seeds)} seed{'s' if len(seeds) != 1 else ''}, "
        f"{int(m['n_test'])} test images, one image = "
        f"{one:.2f} points): {acc}. Paired by seed (95 % t-interval, points): poison − clean "
        f"{_ci_text(diffs['sgd_clean'], 100, '+.2f')}, poison − noise {_ci_text(diffs['sgd_noise'], 100, '+.2f')}, "
        f"poison − SAM {_ci_text(diffs['sam_clean'], 100, '+.2f')}. Validation loss, final (minimum, at epoch): "
        + "; ".join(f"{VAR[k]} {m[f'val_loss_final_{s}']:.4f} ({m[f'val_loss_min_{s}']:.4f}, epoch "
                    f"{m[f'val_loss_argmin_{s}']:.1f})" for k, s in _SHORT.items())
        + f". Fig. 5.1: mean validation loss of the last {late} epochs, poison − clean {_ci_text(c51)}; the clean "
        f"run's validation loss ends {m['clean_val_loss_rise_after_min']:.4f} above its minimum. Fig. 5.3: poison − "
        f"noise {_ci_text(c53)}. Fig. 5.4: validation loss averaged over all epochs, SAM − poison {_ci_text(c54)}.")
    notes = ["SAM on S is each seed's crafting run (the per-seed protocol of [Murphy 2025, §4.2]); the poison and "
             "noise runs train on S′ / S + noise from epoch 1 and are evaluated on clean validation and test data.",
             f"'Late' is the last {late} epochs; the report's Figs. 5.1/5.3/5.4 are single curves, judged here by "
             "paired 95 % t-intervals over seeds."]
    return Ch5Result("ch5-losses", "[Murphy 2025, §5.3.1-5.3.3, Figs. 5.1/5.3/5.4]: late in training the poisoned "
                     "run's validation loss is below the clean run's (Fig. 5.1) and below that of matched random "
                     "noise (Fig. 5.3); SAM converges more slowly than SGD on the poison (Fig. 5.4).",
                     verdict, why, measured, m, {}, notes, tables={"per_seed": per})


VAR = {"sgd_clean": "SGD on S", "sgd_poison": "SGD on S′", "sam_clean": "SAM on S", "sgd_noise": "SGD on S + noise"}


def _n_split(cmp, split: str) -> int:
    import dataclasses

    from ..training.trainer import load_data_cached

    b = load_data_cached(dataclasses.replace(cmp.base.data, poison=None))
    return len(getattr(b, split))


def _crafting(cmp, seeds: list[int], scale: str) -> Ch5Result:
    import dataclasses

    from ..data.poison import load_poison
    from ..runs import load_run
    from ..training.trainer import load_data_cached
    from .study import craft_records, poison_probes

    x_norm = float(load_data_cached(dataclasses.replace(cmp.base.data, poison=None)).train.x.double().norm())
    rows, drift_rows = [], []
    for s in seeds:
        c = cmp.crafts[s]
        probes = sorted(poison_probes(c["craft_run"]), key=lambda r: int(r["epoch"]))
        frob = [float(r["delta_frobenius"]) for r in probes]
        saved = load_poison(c["poison_path"]).norms()["frobenius"]
        recs = craft_records(c["craft_run"])
        before = np.array([r["losses"][0] for r in recs], dtype=float)
        after = np.array([r["losses"][-1] for r in recs], dtype=float)
        ep = np.array([int(r["epoch"]) for r in recs])
        emeans = [float(before[ep == e].mean()) for e in sorted(set(ep.tolist()))]
        steps = load_run(c["craft_run"]).steps
        cos = steps.dropna(subset=["cosine"]) if "cosine" in steps else steps.iloc[:0]
        one_minus = 1.0 - cos["cosine"].to_numpy(dtype=float)
        cep = np.maximum(np.ceil(cos["epoch"].to_numpy(dtype=float) - 1e-9).astype(int), 1)
        sam_means = [float(one_minus[cep == e].mean()) for e in sorted(set(cep.tolist()))]
        last = probes[-1]
        drift_final = {int(k): float(v) for k, v in (last.get("drift") or {}).items()}
        drift_start = {}
        for k in drift_final:
            at = [r for r in probes if int(r["epoch"]) == k and str(k) in (r.get("drift") or {})]
            drift_start[k] = float(at[0]["drift"][str(k)]) if at else float("nan")
        for k in sorted(drift_final):
            drift_rows.append({"seed": s, "frozen_after_epoch": k, "at_freeze": drift_start[k],
                               "final": drift_final[k], "clean_final": float(last["clean_cos_loss"]),
                               "current_final": float(last["poison_cos_loss"])})
        rows.append({"seed": s, "frob_first": frob[0], "frob_final": frob[-1], "frob_saved": saved,
                     "frob_relative": saved / x_norm, "frob_increasing": float(np.mean(np.diff(frob) > 0))
                     if len(frob) > 1 else float("nan"),
                     "b_before": float(before.mean()), "b_after": float(after.mean()),
                     "b_epoch_first": emeans[0], "b_epoch_last": emeans[-1], "b_epoch_max": max(emeans),
                     "b_epoch_argmax": int(sorted(set(ep.tolist()))[int(np.argmax(emeans))]),
                     "b_epoch_min": min(emeans),
                     "sam_first": sam_means[0] if sam_means else float("nan"),
                     "sam_last": sam_means[-1] if sam_means else float("nan"),
                     "sam_max": max(sam_means) if sam_means else float("nan"),
                     "sam_min": min(sam_means) if sam_means else float("nan"),
                     "clean_cos_final": float(last["clean_cos_loss"]),
                     "poison_cos_final": float(last["poison_cos_loss"]),
                     "crafted_batches": len(recs)})
    per, drift = pd.DataFrame(rows), pd.DataFrame(drift_rows)
    m: dict[str, Any] = {}
    for c in per.columns:
        if c != "seed":
            m[c], m[c + "_se"] = _mse(per[c])
    for k, g in drift.groupby("frozen_after_epoch") if len(drift) else []:
        m[f"drift_{k}_at_freeze"], _ = _mse(g["at_freeze"])
        m[f"drift_{k}_final"], _ = _mse(g["final"])
    rising = bool(len(drift) and (drift["final"] > drift["at_freeze"]).all())
    above = bool(len(drift) and (drift["final"] > drift["clean_final"]).all())
    m["drift_rising_all"] = float(rising)
    m["drift_above_clean_all"] = float(above)
    nan = float("nan")
    m["drift_rising_fraction"] = float((drift["final"] > drift["at_freeze"]).mean()) if len(drift) else nan
    m["drift_above_clean_fraction"] = float((drift["final"] > drift["clean_final"]).mean()) if len(drift) else nan
    m["n_seeds"] = float(len(seeds))
    holds = {"Fig. 5.2 (‖Δ‖_F grows every epoch)": bool((per["frob_increasing"] == 1).all()),
             "Figs. 5.5/5.6 (the inner iterations lower 𝓑, largest in the first epoch)":
                 bool((per["b_after"] < per["b_before"]).all() and (per["b_epoch_argmax"] == 1).all()),
             "Fig. 5.7 (frozen-weight 𝓑 rises, above the clean baseline)": rising and above,
             "Fig. 5.8 (SAM's epoch-mean 1 − cos(g, g′) ≤ 0.1)": bool((per["sam_max"] <= 0.1).all())}
    verdict, why = _verdict(holds, scale)
    dk = sorted(drift["frozen_after_epoch"].unique().tolist()) if len(drift) else []
    measured = (
        f"Means over {len(seeds)} crafting run{'s' if len(seeds) != 1 else ''} (one per seed). "
        f"Fig. 5.2: ‖Δ‖_F {m['frob_first']:.1f} after epoch 1 "
        f"→ {m['frob_saved']:.1f} ± {m['frob_saved_se']:.1f} at the end ({100 * m['frob_relative']:.1f} % of the clean "
        f"inputs' norm), increasing in {100 * m['frob_increasing']:.0f} % of the epochs. Figs. 5.5/5.6: 5 inner "
        f"iterations lower a batch's 𝓑 from {m['b_before']:.4f} to {m['b_after']:.4f}; epoch means of 𝓑 (before "
        f"crafting) {m['b_epoch_first']:.4f} in epoch 1, {m['b_epoch_last']:.4f} in the last, largest "
        f"{m['b_epoch_max']:.4f} (epoch {m['b_epoch_argmax']:.1f} on average), smallest {m['b_epoch_min']:.4f}. "
        f"Fig. 5.7: mean 𝓑 of the final poisons at the weights frozen after epoch "
        + ", ".join(f"{k}: {m[f'drift_{k}_at_freeze']:.4f} at freezing → {m[f'drift_{k}_final']:.4f} at the end"
                    for k in dk)
        + f"; at the current weights {m['poison_cos_final']:.4f}, clean baseline 1 − cos(g, g′) "
        f"{m['clean_cos_final']:.4f}; rising in {100 * m['drift_rising_fraction']:.0f} % and above the baseline in "
        f"{100 * m['drift_above_clean_fraction']:.0f} % of (seed, frozen epoch) pairs. Fig. 5.8: SAM's epoch-mean "
        f"1 − cos(g, g′) on clean batches {m['sam_first']:.4f} in epoch 1, {m['sam_last']:.4f} in the last, between "
        f"{m['sam_min']:.4f} and {m['sam_max']:.4f}.")
    notes = ["Δ starts at 0 (init_noise 0), not at the report's random noise of norm 300, so ‖Δ‖_F is compared by "
             "its growth, not its values; ‖Δ‖_F is in normalised input units.",
             f"The drift report uses {cmp.poison.drift_batches} fixed batches per epoch."]
    return Ch5Result("ch5-crafting", "[Murphy 2025, §5.3.4, Figs. 5.2/5.5-5.8]: ‖Δ‖_F grows steadily (Fig. 5.2); the "
                     "inner iterations lower the crafting loss 𝓑, largest early in training (Figs. 5.5/5.6); at frozen "
                     "earlier weights 𝓑 of the current poisons rises above the clean baseline (Fig. 5.7); SAM's "
                     "1 − cos(g, g′) stays at or below 0.1 (Fig. 5.8).",
                     verdict, why, measured, m, {}, notes, tables={"per_seed": per, "drift": drift})


def _sharpness(cmp, seeds: list[int], hessian_seeds: list[int], scale: str, *, k: int, count: int | None,
               device: str, progress: Callable[[str], None]) -> Ch5Result:
    rows, irows = [], []
    for s in hessian_seeds:
        for split in ("train", "test"):
            progress(f"Hessian top-{k}, seed {s}, {split}")
            e = cmp.eigenvalues(seed=s, k=k, count=count, split=split, device=device)
            for _, r in e.iterrows():
                rows.append({"seed": s, "split": split, "variant": variant_key_of(r["variant"]),
                             **{f"lambda_{i}": float(r[f"lambda_{i}"]) for i in range(1, k + 1)},
                             "count": int(r["count"])})
        progress(f"interpolation, seed {s}")
        out = cmp.interpolation(seed=s, count=count, device=device).result
        a = np.asarray(out.alphas, dtype=float)
        for split, loss in out.loss.items():
            loss = np.asarray(loss, dtype=float)
            inside = (a >= -1e-9) & (a <= 1 + 1e-9)
            l0, l1 = float(np.interp(0.0, a, loss)), float(np.interp(1.0, a, loss))
            step = 0.25
            irows.append({"seed": s, "split": split, "loss_poison_end": l0, "loss_clean_end": l1,
                          "barrier": float(loss[inside].max() - max(l0, l1)),
                          "rise_poison_end": float(np.interp(-step, a, loss) - l0),
                          "rise_clean_end": float(np.interp(1 + step, a, loss) - l1)})
    eig, interp = pd.DataFrame(rows), pd.DataFrame(irows)
    m: dict[str, Any] = {}
    for split in ("train", "test"):
        g = eig[eig.split == split]
        for key in ("sgd_clean", "sgd_poison"):
            h = g[g.variant == key].sort_values("seed")
            for i in range(1, k + 1):
                m[f"{split}_lambda{i}_{_SHORT[key]}"], _ = _mse(h[f"lambda_{i}"])
            m[f"{split}_lambda1_{_SHORT[key]}_se"] = _mse(h["lambda_1"])[1]
        a = g[g.variant == "sgd_poison"].sort_values("seed")["lambda_1"].to_numpy(dtype=float)
        b = g[g.variant == "sgd_clean"].sort_values("seed")["lambda_1"].to_numpy(dtype=float)
        ci = paired_interval(a, b)
        m[f"{split}_lambda1_diff"], m[f"{split}_lambda1_diff_lo"], m[f"{split}_lambda1_diff_hi"] = ci
        m[f"{split}_lambda1_ratio"] = float(np.mean(a / b)) if len(a) else float("nan")
    for split, g in interp.groupby("split"):
        for c in ("barrier", "rise_poison_end", "rise_clean_end", "loss_poison_end", "loss_clean_end"):
            m[f"interp_{split}_{c}"], _ = _mse(g[c])
        m[f"interp_{split}_poison_end_steeper_fraction"] = float((g["rise_poison_end"] > g["rise_clean_end"]).mean())
    m["n_hessian_seeds"] = float(len(hessian_seeds))
    m["hessian_count"] = float(eig["count"].iloc[0]) if len(eig) else float("nan")
    test_ci = (m["test_lambda1_diff"], m["test_lambda1_diff_lo"], m["test_lambda1_diff_hi"])
    same = bool(math.isfinite(test_ci[1]) and test_ci[1] <= 0 <= test_ci[2])
    no_barrier = bool(len(interp) and (interp["barrier"] < 0.01).all())
    holds = {"Fig. 5.9 (no significant change of λ₁ on the same clean test images)": same,
             "Fig. 5.10 (one basin: no loss barrier ≥ 0.01 between the minima)": no_barrier}
    verdict, why = _verdict(holds, scale)
    tr_ci = (m["train_lambda1_diff"], m["train_lambda1_diff_lo"], m["train_lambda1_diff_hi"])
    why += (f"; λ₁ poison − clean on each run's own training data {_ci_text(tr_ci, 1, '+.2f')}, on the same clean "
            f"test images {_ci_text(test_ci, 1, '+.2f')}")
    if len(hessian_seeds) < 2:
        why += "; one seed gives no interval for the eigenvalues"
    n = int(m["hessian_count"]) if math.isfinite(m["hessian_count"]) else 0
    measured = (
        f"Top-{k} Hessian eigenvalues (Lanczos, {n} examples, seeds {', '.join(map(str, hessian_seeds))}, means): on "
        f"each run's own training data λ₁, …, λ_{k} clean "
        + ", ".join(f"{m[f'train_lambda{i}_clean']:.2f}" for i in range(1, k + 1)) + " vs poison "
        + ", ".join(f"{m[f'train_lambda{i}_poison']:.2f}" for i in range(1, k + 1))
        + f" (λ₁ poison − clean {_ci_text(tr_ci, 1, '+.2f')}); on the same clean test images clean "
        + ", ".join(f"{m[f'test_lambda{i}_clean']:.2f}" for i in range(1, k + 1)) + " vs poison "
        + ", ".join(f"{m[f'test_lambda{i}_poison']:.2f}" for i in range(1, k + 1))
        + f" (λ₁ poison − clean {_ci_text(test_ci, 1, '+.2f')}, mean ratio {m['test_lambda1_ratio']:.3f}). "
        f"Interpolation (Fig. 5.10, poison at α = 0, clean at α = 1): barrier on [0, 1] "
        + ", ".join(f"{sp} {m[f'interp_{sp}_barrier']:.4f}" for sp in sorted(interp["split"].unique()))
        + "; loss rise 0.25 beyond each end (poison end / clean end): "
        + ", ".join(f"{sp} {m[f'interp_{sp}_rise_poison_end']:.4f} / {m[f'interp_{sp}_rise_clean_end']:.4f}"
                    for sp in sorted(interp["split"].unique())) + ".")
    notes = ["Cross-entropy Hessians shrink as the training loss goes to zero: a run with a lower training loss looks "
             "flatter on its own data; the clean test images compare both at the same inputs.",
             "The report's Fig. 5.10 finds the loss slightly more sensitive around the poison minimum; here that is "
             "the 'rise' beyond each end (α = −0.25 vs 1.25)."]
    return Ch5Result("ch5-sharpness", "[Murphy 2025, §5.3.5, Figs. 5.9/5.10]: the top Hessian eigenvalues of the "
                     "clean and poison minima are similarly distributed (no significant change of sharpness), and "
                     "linear interpolation shows similar minima, slightly more sensitive around the poison minimum.",
                     verdict, why, measured, m, {}, notes, tables={"eigenvalues": eig, "interpolation": interp})


def variant_key_of(label: str) -> str:
    """The variant key (``sgd_poison``) of a variant label (``SGD on S′``) or key."""
    from .study import variant_key

    return variant_key(label)


def summarize_ch5(cmp, *, hessian_seeds: Sequence[int] | None = None, k: int = 5, count: int | None = 1024,
                  device: str = "cpu", progress: Callable[[str], None] | None = None) -> list[Ch5Result]:
    """Turn a finished Ch. 5 comparison into its three stored results [Murphy 2025, Figs. 5.1-5.10].

    Everything is read from the run folders: the epoch metrics (validation loss curves, test accuracy), the
    crafting runs' ``craft`` and ``poison`` probe records and SAM step cosines, the saved poisons, and the
    Hessian / interpolation analyses (computed here, or read from the runs' saved analyses).

    Args:
        cmp: a :class:`~workbench.poisoning.study.PoisonComparison` (per-seed protocol); only the seeds whose
            four variants finished are used.
        hessian_seeds: seeds for Figs. 5.9/5.10 (default: every finished seed).
        k: number of top Hessian eigenvalues.
        count: examples per Hessian / interpolation (seeded draw).
        device: torch device of the analyses.
        progress: called with a short line before each analysis.

    Returns:
        ``[losses, crafting, sharpness]`` :class:`Ch5Result` objects (``ch5-losses``, ``ch5-crafting``,
        ``ch5-sharpness``).

    Raises:
        ValueError: a shared-poison comparison, or no seed with all four variants finished.
    """
    if cmp.protocol != "per_seed":
        raise ValueError("the Ch. 5 summary needs a per-seed comparison (shared_poison=False)")
    t = cmp.trials
    seeds = [int(s) for s in cmp.seeds
             if len(t[(t.seed == s) & (t.status == "finished")]) == 4 and int(s) in cmp.crafts]
    if not seeds:
        raise ValueError(f"no seed of {str(cmp.path)!r} has all four variants finished yet")
    hs = [int(s) for s in (hessian_seeds if hessian_seeds is not None else seeds)]
    missing = sorted(set(hs) - set(seeds))
    if missing:
        raise ValueError(f"hessian_seeds {missing} are not finished seeds of the study (finished: {seeds})")
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    n_train = _n_split(cmp, "train")
    scale = _scale(cmp, seeds, n_train)
    say("losses and accuracies")
    out = [_losses(cmp, seeds, scale)]
    say("crafting records")
    out.append(_crafting(cmp, seeds, scale))
    out.append(_sharpness(cmp, seeds, hs, scale, k=k, count=count, device=device, progress=say))
    train_s = float(pd.to_numeric(t[t.seed.isin(seeds) & (t.key != "sam_clean")]["seconds"], errors="coerce").sum()
                    + pd.to_numeric(t[t.seed.isin(seeds) & (t.key == "sam_clean")]["seconds"], errors="coerce").sum())
    settings = _settings(cmp, seeds)
    settings.update(n_train=n_train, hessian_seeds=hs, hessian_k=k, count=count)
    for r in out:
        r.settings = dict(settings)
        r.seconds = train_s + (time.perf_counter() - t0)
        r.metrics["n_train"] = float(n_train)
    return out


def save_ch5(results: Sequence[Ch5Result], folder: str | Path, *, command: str = "") -> list[Path]:
    """Write each result to ``<folder>/<name>.json`` (:func:`workbench.reproduce.store.save_result`).

    The measured scale is stored as ``scale`` for the claims ledger.

    Returns:
        The paths written.
    """
    import json

    from ..reproduce.store import load_result, save_result

    paths = []
    for r in results:
        p = save_result(r, Path(folder) / f"{r.name}.json", command=command, tables=r.tables)
        doc = load_result(p)
        s = r.settings
        seeds = s.get("seeds") or []
        doc["scale"] = (f"{s.get('dataset')} ({int(r.metrics.get('n_train', 0)):,} train), LeNet-5, "
                        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
        p.write_text(json.dumps(doc, indent=1) + "\n")
        paths.append(p)
    return paths
