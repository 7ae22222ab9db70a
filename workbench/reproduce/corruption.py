"""Random vs gradient-based parameter corruption of trained LeNet-5 networks, SGD vs SAM [Sun 2020, Alg. 1-2].

The claim (as the course report [Anonymous n.d.] presents [Sun 2020]): corrupting ``n`` weights along the loss
gradient raises the loss far more than corrupting ``n`` random weights with the same budget ``ε``. The paper
measures it on ResNet-34 (CIFAR-10 / ImageNet) and other large networks; :func:`corruption_study` measures it on
networks a CPU trains in a minute:

1. train LeNet-5 [LeCun 1998] on the bundled real MNIST images (``mnist-10k``, pooled split: 7,000 train /
   1,000 validation / 2,000 test) with SGD and with SAM [Foret 2021] (the workbench
   :class:`~workbench.training.Trainer`), one run per method and seed;
2. on the test images, for every corruption size ``n`` and budget ``ε`` (``l2`` by default), compare the loss
   increase of the gradient-based corruption [Sun 2020, Alg. 2] with that of ``n_random`` random corruptions
   [Sun 2020, Alg. 1] of the same ``n`` and ``ε``
   (:func:`~workbench.analysis.corruption.parameter_corruption`);
3. the verdict (:func:`corruption_verdict`): a *cell* is one (method, seed, ``ε``, ``n >= min_n``); it holds when
   the gradient-based increase is positive and at least ``factor`` (10) times the largest increase of any random
   draw. ``reproduced`` when every cell holds, ``partial`` when some do, ``not reproduced`` when none do.

SAM's flatter minimum should be the more robust one; the study reports the gradient-based increase of SAM
against SGD, paired by seed, as measured (it does not enter the verdict, which is about the ledger's claim).

``workbench reproduce --corruption`` runs it and stores the result (``anonymous/corruption.json`` under the
results folder), where the claims ledger reads it.

Core module: no plotly / ipywidgets.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd

__all__ = ["corruption_study", "corruption_verdict", "run_and_store", "CLAIM", "RESULT"]

CLAIM = "Gradient-based parameter corruption hurts far more than random corruption of the same size."
"""The ledger's claim [Anonymous n.d.] about [Sun 2020, Alg. 1-2]."""

RESULT = "anonymous/corruption.json"
"""Where the stored result goes, relative to the results folder (the ledger row reads it there)."""

PAPER_SCALE = "ResNet-34 on CIFAR-10 / ImageNet"


def _holds(gradient: float, random_max: float, factor: float) -> bool:
    """One cell: gradient-based increase positive and >= ``factor`` x the largest random increase (if positive)."""
    return bool(np.isfinite(gradient) and gradient > 0 and gradient >= factor * max(float(random_max), 0.0))


def corruption_verdict(table: pd.DataFrame | Sequence[dict], *, factor: float = 10.0,
                       min_n: int = 10) -> tuple[str, str]:
    """Verdict on the claim from per-cell loss increases [Sun 2020, Alg. 1-2].

    Args:
        table: rows with ``n`` (corruption size), ``epsilon``, ``gradient_increase`` and ``random_max`` (loss
            increases in nats: the gradient-based corruption's, and the largest over the random draws), and
            optionally ``method`` and ``seed`` (named in the reason).
        factor: how many times the largest random increase the gradient-based one must reach (> 0).
        min_n: only sizes ``n >= min_n`` are judged (a single weight is no "corruption of the same size" claim).

    Returns:
        ``(verdict, reason)``: ``reproduced`` when every judged cell holds, ``partial`` when some do,
        ``not reproduced`` when none do; the reason counts the cells and names the weakest one.

    Raises:
        ValueError: ``factor <= 0``, or no row with ``n >= min_n``.
    """
    if not (isinstance(factor, (int, float)) and factor > 0):
        raise ValueError(f"factor={factor!r} is invalid: must be a number > 0")
    df = pd.DataFrame(list(table) if not isinstance(table, pd.DataFrame) else table)
    df = df[df["n"] >= min_n] if len(df) else df
    if not len(df):
        raise ValueError(f"no corruption size n >= {min_n} was measured: nothing to judge")
    grad = df["gradient_increase"].to_numpy(float)
    rmax = df["random_max"].to_numpy(float)
    ok = np.array([_holds(g, r, factor) for g, r in zip(grad, rmax)])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(rmax > 0, grad / rmax, np.where(grad > 0, np.inf, -np.inf))
    w = int(np.nanargmin(np.where(np.isnan(ratio), -np.inf, ratio)))
    row = df.iloc[w]
    who = ", ".join(f"{k} {row[k]}" for k in ("method", "seed") if k in df.columns)
    weakest = (f"weakest cell ({who + ', ' if who else ''}n {int(row['n'])}, eps {float(row['epsilon']):g}): "
               f"gradient {float(row['gradient_increase']):.3g} vs largest random {float(row['random_max']):.3g} nats"
               + (f" ({ratio[w]:.3g}x)" if np.isfinite(ratio[w]) else ""))
    held, total = int(ok.sum()), len(ok)
    cells = f"{held} of {total} cells (method, seed, n >= {min_n}, budget)"
    if held == total:
        return "reproduced", f"the gradient-based loss increase is >= {factor:g}x every random draw's in all " \
                             f"{cells}; " + weakest
    if held:
        return "partial", f"the gradient-based loss increase is >= {factor:g}x every random draw's in only " \
                          f"{cells}; " + weakest
    return "not reproduced", f"the gradient-based loss increase reaches {factor:g}x every random draw's in none of " \
                             f"the {total} cells; " + weakest


def _sizes(sizes: Sequence[int | str], k: int) -> list[int]:
    out = []
    for s in sizes:
        if s == "all":
            out.append(int(k))
        elif isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ValueError(f"sizes={list(sizes)!r} is invalid: corruption sizes are integers >= 1 or 'all'")
        else:
            out.append(min(int(s), int(k)))
    return sorted(set(out))


def corruption_study(*, dataset: str = "mnist-10k", max_train: int | None = None, model: str = "lenet5",
                     width: float = 1.0, methods: Sequence[str] = ("sgd", "sam"), seeds: Sequence[int] = (0, 1, 2),
                     epochs: int = 10, batch_size: int = 128, lr: float = 0.05, momentum: float = 0.9,
                     weight_decay: float = 5e-4, rho: float = 0.05,
                     sizes: Sequence[int | str] = (1, 10, 100, 1000, "all"),
                     epsilons: Sequence[float] = (0.1, 0.5, 1.0), norm: str = "l2", n_random: int = 20,
                     count: int | None = None, headline_n: int | str = 100, headline_epsilon: float = 0.5,
                     factor: float = 10.0, min_n: int = 10, device: str = "cpu", threads: int | None = 1,
                     progress: Callable[[str], None] | None = None):
    """Train SGD and SAM networks and compare gradient-based with random parameter corruption [Sun 2020, Alg. 1-2].

    Args:
        dataset: ``mnist-10k`` (the bundled real MNIST images, pooled split 7,000 / 1,000 / 2,000) or any
            dataset name of :class:`~workbench.config.DataConfig` (pooled split where it has no official one).
        max_train: keep at most this many training images (``None``: all).
        model: the architecture (:class:`~workbench.config.ModelConfig`; ``lenet5`` [LeCun 1998]).
        width: its channel multiplier (1.0: the classic 6/16 channels).
        methods: optimizers trained, ``sgd`` and/or ``sam`` [Foret 2021].
        seeds: training seeds (one run per method and seed; the same seed also seeds the random corruptions).
        epochs: training epochs (constant learning rate).
        batch_size: training batch size.
        lr: learning rate.
        momentum: SGD momentum (also SAM's base optimizer).
        weight_decay: L2 coefficient of the base optimizer.
        rho: SAM's radius.
        sizes: corruption sizes ``n`` (integers >= 1, or ``"all"`` for every weight).
        epsilons: budgets ``ε`` on ``‖a‖_p``.
        norm: the budget's norm ``p``: ``l2``, ``linf`` or ``l1``.
        n_random: random corruptions drawn per (size, budget).
        count: test images the loss is measured on (``None``: the whole test split, 2,000 for ``mnist-10k``).
        headline_n: the size of the headline metrics (among ``sizes``; ``"all"`` allowed).
        headline_epsilon: the budget of the headline metrics (among ``epsilons``).
        factor: the verdict's factor (:func:`corruption_verdict`).
        min_n: the smallest size the verdict judges (:func:`corruption_verdict`).
        device: training and corruption device (``cpu`` default, ``auto``, ``cuda``).
        threads: torch CPU threads (``None`` leaves torch's default).
        progress: called with one line of text after every training run and every budget.

    Returns:
        A :class:`~workbench.thesis.registry.Reproduction` (name ``corruption``) whose ``metrics`` hold the
        headline ``loss_change_gradient`` and ``loss_change_random`` (the first method's networks, SGD by
        default; ``n = headline_n``, ``ε = headline_epsilon``: mean over seeds, and over the random draws; nats)
        and ``ratio`` (their quotient; NaN when the random mean is <= 0), the same per method (``*_sgd``,
        ``*_sam``), the weakest cell's ``min_ratio_vs_max_random``, ``cells_holding`` /
        ``cells_tested``, test accuracies and losses.
        ``data`` holds ``runs`` (one row per training run), ``cells`` (one row per method, seed, ``ε`` and
        ``n``: base loss, gradient-based and random increases, accuracies, first-order increases),
        ``sam_vs_sgd`` (per ``ε`` and ``n``: mean gradient-based increase of each, and the seeds where SAM's is
        lower) and ``models`` (``{(method, seed): trained model}``).

    Raises:
        ValueError: an unknown method, an empty ``seeds`` / ``epsilons``, a headline not measured, or the
            errors of :func:`~workbench.analysis.corruption.parameter_corruption`.
    """
    import torch

    from ..analysis.common import ExampleSet
    from ..analysis.corruption import parameter_corruption
    from ..config import DataConfig, ModelConfig, OptimConfig, RunConfig, ScheduleConfig, TrainConfig
    from ..thesis.registry import Reproduction
    from ..training import Trainer, load_data_cached

    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    bad = [m for m in methods if m not in ("sgd", "sam")]
    if bad or not methods:
        raise ValueError(f"methods={list(methods)!r} is invalid: choose from 'sgd' and 'sam'")
    if not seeds or not epsilons:
        raise ValueError("give at least one seed and one budget epsilon")
    epsilons = [float(e) for e in epsilons]
    if float(headline_epsilon) not in epsilons:
        raise ValueError(f"headline_epsilon={headline_epsilon!r} is not among the budgets {epsilons}")
    if threads is not None:
        torch.set_num_threads(int(threads))
    data_cfg = DataConfig(name=dataset, max_train=max_train,
                          split="pooled" if dataset in ("mnist-10k", "digits") else "official")
    bundle = load_data_cached(data_cfg)
    runs, cells, models = [], [], {}
    k = n_head = None
    for method in methods:
        for seed in seeds:
            cfg = RunConfig(name=f"corruption-{method}-{seed}", data=data_cfg,
                            model=ModelConfig(name=model, width=width),
                            optim=OptimConfig(name=method, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                              rho=rho),
                            schedule=ScheduleConfig(name="constant"),
                            train=TrainConfig(epochs=epochs, batch_size=batch_size, seed=int(seed), device=device,
                                              num_threads=threads, eval_every=epochs, checkpoint_every=10 ** 6))
            t1 = time.perf_counter()
            res = Trainer(cfg, store=False, data=bundle, handle_sigint=False).run()
            if res.status != "finished":
                raise RuntimeError(f"training {method} seed {seed} ended {res.status}: {res.error}")
            fm = res.final_metrics
            net = res.model
            models[(method, int(seed))] = net
            runs.append({"method": method, "seed": int(seed), "train_loss": fm.get("train_loss"),
                         "train_acc": fm.get("train_acc"), "test_loss": fm.get("test_loss"),
                         "test_acc": fm.get("test_acc"), "seconds": time.perf_counter() - t1})
            say(f"trained {method} seed {seed}: test acc {fm.get('test_acc', float('nan')):.2%} "
                f"({time.perf_counter() - t1:.0f} s)")
            dev = next(net.parameters()).device
            ex = ExampleSet.from_dataset(bundle.test, count=count, seed=int(seed), split="test").to(dev)
            k = sum(p.numel() for p in net.parameters() if p.requires_grad)
            ns = _sizes(sizes, k)
            n_head = int(k) if headline_n == "all" else min(int(headline_n), int(k))
            if n_head not in ns:
                raise ValueError(f"headline_n={headline_n!r} is not among the sizes {list(sizes)}")
            for eps in epsilons:
                r = parameter_corruption(net, ex, sizes=ns, epsilon=eps, norm=norm, n_random=n_random,
                                         seed=int(seed))
                gi, ri = r.gradient_increase, r.random_increase
                for i, n in enumerate(np.asarray(r.sizes)):
                    cells.append({"method": method, "seed": int(seed), "epsilon": eps, "n": int(n),
                                  "n_params": int(r.n_params), "base_loss": float(r.base_loss),
                                  "base_acc": float(r.base_acc), "gradient_increase": float(gi[i]),
                                  "random_mean": float(ri[i].mean()), "random_std": float(ri[i].std()),
                                  "random_max": float(ri[i].max()), "random_min": float(ri[i].min()),
                                  "gradient_acc": float(r.gradient_acc[i]),
                                  "random_acc_mean": float(np.mean(r.random_acc[i])),
                                  "gradient_first_order": float(r.gradient_first_order[i]),
                                  "random_first_order_mean": float(np.mean(r.random_first_order[i])),
                                  "gradient_norm": float(r.gradient_norm),
                                  "holds": _holds(float(gi[i]), float(ri[i].max()), factor)})
                head = [c for c in cells[-len(r.sizes):] if c["n"] == n_head][0]
                say(f"  {method} seed {seed}, eps {eps:g}: n={n_head} gradient {head['gradient_increase']:.4g} vs "
                    f"random {head['random_mean']:.3g} (max {head['random_max']:.3g}) nats "
                    f"[{r.seconds:.0f} s]")
    runs_df, cells_df = pd.DataFrame(runs), pd.DataFrame(cells)
    verdict, why = corruption_verdict(cells_df, factor=factor, min_n=min_n)

    # ------------------------------------------------------------ headline metrics
    def head(method: str) -> dict:
        c = cells_df[(cells_df.method == method) & (cells_df.n == n_head)
                     & (cells_df.epsilon == float(headline_epsilon))]
        g, rnd = float(c.gradient_increase.mean()), float(c.random_mean.mean())
        return {"g": g, "r": rnd, "ratio": g / rnd if rnd > 0 else math.nan}  # undefined for a mean <= 0

    judged = cells_df[cells_df.n >= min_n]
    with np.errstate(divide="ignore", invalid="ignore"):
        rat = np.where(judged.random_max > 0, judged.gradient_increase / judged.random_max, np.inf)
    metrics: dict[str, float] = {}
    first = methods[0]
    h = head(first)
    metrics.update(loss_change_gradient=h["g"], loss_change_random=h["r"], ratio=h["ratio"])
    for method in methods:
        hm = head(method)
        rm = runs_df[runs_df.method == method]
        metrics.update({f"loss_change_gradient_{method}": hm["g"], f"loss_change_random_{method}": hm["r"],
                        f"ratio_{method}": hm["ratio"], f"test_acc_{method}": float(rm.test_acc.mean()),
                        f"test_loss_{method}": float(rm.test_loss.mean())})
    metrics.update(min_ratio_vs_max_random=float(np.min(rat)) if len(rat) else math.nan,
                   cells_holding=float(judged.holds.sum()), cells_tested=float(len(judged)),
                   headline_n=float(n_head), headline_epsilon=float(headline_epsilon), n_params=float(k))

    # ------------------------------------------------------------ SAM vs SGD, paired by seed
    sam_rows, notes = [], []
    if "sgd" in methods and "sam" in methods:
        piv = cells_df.pivot_table(index=["epsilon", "n", "seed"], columns="method", values="gradient_increase")
        for (eps, n), grp in piv.groupby(level=[0, 1]):
            sam_rows.append({"epsilon": float(eps), "n": int(n), "gradient_sgd": float(grp["sgd"].mean()),
                             "gradient_sam": float(grp["sam"].mean()),
                             "sam_lower_seeds": int((grp["sam"] < grp["sgd"]).sum()), "seeds": int(len(grp))})
        sv = pd.DataFrame(sam_rows)
        lower = int(sv.sam_lower_seeds.sum())
        metrics.update(sam_lower_fraction=lower / max(int(sv.seeds.sum()), 1),
                       sam_over_sgd_gradient=metrics["loss_change_gradient_sam"] / metrics["loss_change_gradient_sgd"]
                       if metrics["loss_change_gradient_sgd"] else math.nan)
        notes.append(f"SAM vs SGD (robustness of the minimum): SAM's gradient-based loss increase is lower than "
                     f"SGD's (same seed) in {lower} of {int(sv.seeds.sum())} (seed, n, eps) cases; at n={n_head}, "
                     f"eps={float(headline_epsilon):g}: SAM {metrics['loss_change_gradient_sam']:.4g} vs SGD "
                     f"{metrics['loss_change_gradient_sgd']:.4g} nats (base test loss SAM "
                     f"{metrics['test_loss_sam']:.4f}, SGD {metrics['test_loss_sgd']:.4f}).")
    sam_df = pd.DataFrame(sam_rows)

    n_train, n_test = len(bundle.train), int(ex.count)
    scale = (f"{'LeNet-5' if model == 'lenet5' else model} on {n_train:,} {dataset} training images, loss on "
             f"{n_test:,} test images, {len(seeds)} seed(s) x {', '.join(m.upper() for m in methods)}")
    reason = f"{why}. Scale: {scale} (the paper: {PAPER_SCALE})"
    per_eps = []
    for eps in epsilons:
        c = cells_df[(cells_df.method == first) & (cells_df.epsilon == eps)].groupby("n")
        per_eps.append(f"eps {eps:g}: " + ", ".join(
            f"n={n} {g.gradient_increase.mean():.3g} vs {g.random_mean.mean():.2g}" for n, g in c))
    measured = (f"{first.upper()} networks ({metrics[f'test_acc_{first}']:.2%} test accuracy), {norm} budget, loss "
                f"increase in nats, gradient-based vs mean of {n_random} random draws (mean over seeds) -- "
                + "; ".join(per_eps)
                + f". Headline n={n_head}, eps={float(headline_epsilon):g}: {metrics['loss_change_gradient']:.4g} vs "
                  f"{metrics['loss_change_random']:.3g} ({metrics['ratio']:.3g}x). Weakest n >= {min_n} cell: "
                  f"{metrics['min_ratio_vs_max_random']:.3g}x the largest random draw.")
    notes.append(f"Random corruptions [Sun 2020, Alg. 1] pick n coordinates uniformly with a random {norm} "
                 "direction; their first-order term is zero on average over draws, so their mean loss change is of "
                 "second order, and a single draw's can be negative.")
    notes.append(f"n = 'all' is every one of the {k:,} trainable weights; n = 1 is reported but not judged.")
    settings = {"dataset": f"{dataset} ({n_train:,} train / {n_test:,} test images)",
                "model": "LeNet-5" if model == "lenet5" else model, "width": width, "methods": list(methods),
                "seeds": [int(s) for s in seeds], "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "momentum": momentum, "weight_decay": weight_decay, "rho": rho, "schedule": "constant",
                "sizes": [str(s) if s == "all" else int(s) for s in sizes], "epsilons": epsilons, "norm": norm,
                "n_random": n_random, "count": count, "headline_n": headline_n, "headline_epsilon": headline_epsilon,
                "factor": factor, "min_n": min_n, "device": device, "max_train": max_train}
    return Reproduction(data={"runs": runs_df, "cells": cells_df, "sam_vs_sgd": sam_df, "models": models},
                        measured=measured, verdict=verdict, verdict_reason=reason, metrics=metrics,
                        settings=settings, notes=notes, name="corruption", claim=CLAIM,
                        seconds=time.perf_counter() - t0)


def run_and_store(results: str = "results", *, tiny: bool = False, printer: Callable[[str], None] = print,
                  **overrides):
    """Run :func:`corruption_study` (``tiny``: a one-minute pipeline check) and store it under ``results``.

    The measurement goes to ``<results>/anonymous/corruption.json``; a ``tiny`` check to
    ``<results>/tiny/anonymous/corruption.json`` so it never replaces a measurement.

    Returns:
        The stored result's path.
    """
    from pathlib import Path

    from .store import save_result

    kw = dict(max_train=512, seeds=(0,), epochs=1, sizes=(1, 10, 100, "all"), epsilons=(0.5,), n_random=5,
              count=500) if tiny else {}
    kw.update(overrides)
    out = corruption_study(progress=printer, **kw)
    path = Path(results) / ("tiny" if tiny else "") / RESULT
    save_result(out, path, command="workbench reproduce --corruption" + (" --tiny" if tiny else ""),
                tables={k: out.data[k] for k in ("runs", "cells", "sam_vs_sgd")})
    printer(f"corruption: {out.verdict} in {out.seconds:.0f} s; stored {path}")
    return path
