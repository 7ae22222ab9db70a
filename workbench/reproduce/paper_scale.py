"""Paper-scale configurations of the ledger's GPU-only rows, runnable with one command.

``workbench reproduce --paper-scale NAME`` prints what will run and its expected time on a GPU, then runs it and
stores the result where the ledger reads it (``results/<...>.json``); ``--tiny`` runs the same code path at a
size a CPU finishes in a minute (offline datasets, small models, one epoch) to check the pipeline; ``--plan``
prints the plan only.

=============================  ================================================================================
name                           what runs
=============================  ================================================================================
``andriushchenko2024-fig5.1``  ERM / random perturbation / n-SAM / m-SAM on CIFAR-10, ResNet-18, batch 128,
                               200 epochs, 3 seeds ([Andriushchenko 2024, Fig. 5.1 and §5.7])
``murphy2025-table4.3``        standard / poisoned / SAM training on Fashion-MNIST, ResNet-18, 5 seeds, one crafting
                               run per seed ([Murphy 2025, Table 4.3])
``yang2022-table2``            gradient matching from scratch against no defense and EPIC-0.1 on CIFAR-10,
                               ResNet-18, 40 epochs ([Yang 2022, Table 2])
=============================  ================================================================================

Expected times are estimates for one current data-centre GPU (A100/H100 class) with the workbench's in-memory
data pipeline, stated per run; they are printed, not promised. The CIFAR-10 / Fashion-MNIST files are read from
``WORKBENCH_DATA`` (or downloaded with ``data.download``) as for any run.

Core module: no plotly / ipywidgets.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["PaperScale", "CONFIGS", "plan", "run_paper_scale"]


@dataclass
class PaperScale:
    """One paper-scale configuration.

    Attributes:
        name: the command-line name.
        claim: the ledger row it produces (work and item).
        result: the stored result's path relative to the results folder.
        full: keyword arguments of ``runner`` at the paper's scale.
        tiny: the overrides of ``full`` for the CPU check.
        runs: number of training runs at the paper's scale.
        gpu_minutes_per_run: estimated minutes per run on one GPU.
        runner: ``runner(**kwargs) -> Reproduction-like`` (name, claim, verdict, measured, metrics, settings...).
    """

    name: str
    claim: str
    result: str
    full: dict
    tiny: dict
    runs: int
    gpu_minutes_per_run: float
    runner: Callable[..., Any] = field(repr=False, default=None)

    def kwargs(self, tiny: bool = False) -> dict:
        """Keyword arguments of ``runner``: ``full``, with ``tiny``'s overrides when ``tiny``."""
        return {**self.full, **(self.tiny if tiny else {})}


# ---------------------------------------------------------------- runners
def _thesis_fig51(**kw):
    from ..thesis.ch5 import digits_sam_variants

    out = digits_sam_variants(**kw)
    out.name, out.claim = "fig5.1", "Andriushchenko 2024, Fig. 5.1 (paper scale)"
    out.seconds = 0.0
    return out


def _murphy_table43(*, dataset, model, width, epochs, seeds, max_train, root, batch_size, lr, craft_steps):
    """Standard / poison / SAM over ``seeds`` with :func:`workbench.poisoning.study.compare_poison`."""
    from types import SimpleNamespace

    from ..config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
    from ..poisoning.study import compare_poison

    base = RunConfig(name="murphy2025-table4.3", root=str(root),
                     data=DataConfig(name=dataset, max_train=max_train,
                                     split="pooled" if dataset == "mnist-10k" else "official"),
                     model=ModelConfig(name=model, width=width), optim=OptimConfig(name="sgd", lr=lr, momentum=0.9),
                     train=TrainConfig(epochs=epochs, batch_size=batch_size, device="auto"))
    from ..poisoning.study import variant_key

    comp = compare_poison(base, seeds=seeds, handle_sigint=False)
    table = comp.table("test_acc")
    names = {"sgd_clean": "acc_standard", "sgd_poison": "acc_poison", "sam_clean": "acc_sam", "sgd_noise": "acc_noise"}
    metrics = {names[variant_key(r["variant"])]: float(r["test_acc_mean"]) for _, r in table.iterrows()
               if variant_key(r["variant"]) in names}
    std, poi, sam = (metrics.get(k, float("nan")) for k in ("acc_standard", "acc_poison", "acc_sam"))
    verdict = ("reproduced" if poi > std and sam > std else "partial" if poi > std or sam > std
               else "not reproduced")
    return SimpleNamespace(name="table4.3", claim="Murphy 2025, Table 4.3 (paper scale)", verdict=verdict,
                           verdict_reason="mean test accuracy of poisoned / SAM training against standard training "
                                          "(the paper's differences are within one standard error)",
                           measured=f"{metrics}", metrics=metrics,
                           settings={"dataset": dataset, "model": model, "seeds": list(seeds)}, notes=[], seconds=0.0)


def _yang_table2(*, dataset, trials, epochs, max_train, root):
    """Gradient matching from scratch, no defense vs EPIC-0.1, with :mod:`workbench.defenses.efficacy`."""
    from types import SimpleNamespace

    from ..defenses.efficacy import EfficacyStudy, efficacy_table, run_efficacy

    study = EfficacyStudy(attack="gradient_matching", dataset=dataset, scenario="scratch", trials=trials,
                          victim={"epochs": epochs}, max_train=max_train)
    from ..defenses.efficacy import summarize

    df = run_efficacy(study, root, device="cuda" if torch_cuda() else "cpu")
    tab, s = efficacy_table(df), summarize(df)
    metrics = {}
    for _, r in s.iterrows():
        key = "undefended" if r["defense"] == "None" else ("epic" if "EPIC" in str(r["defense"]) else None)
        if key and f"success_{key}" not in metrics:
            metrics[f"success_{key}"], metrics[f"acc_{key}"] = float(r["success"]), float(r["test_acc"])
    su, se = metrics.get("success_undefended", float("nan")), metrics.get("success_epic", float("nan"))
    au, ae = metrics.get("acc_undefended", float("nan")), metrics.get("acc_epic", float("nan"))
    verdict = ("reproduced" if se <= su / 5 and au - ae <= 0.02 else "partial" if se < su else "not reproduced")
    return SimpleNamespace(name="table2", claim="Yang 2022, Table 2 (paper scale)", verdict=verdict,
                           verdict_reason="reproduced: EPIC cuts attack success at least 5-fold (25% -> 2.7% in the "
                                          "paper) losing <= 2 points of test accuracy; partial: a smaller cut",
                           measured=tab.to_string(), metrics=metrics,
                           settings={"dataset": dataset, "trials": trials, "epochs": epochs}, notes=[], seconds=0.0)


def torch_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


CONFIGS: dict[str, PaperScale] = {c.name: c for c in (
    PaperScale("andriushchenko2024-fig5.1", "Andriushchenko 2024, Fig. 5.1", "thesis/fig5.1-paper-scale.json",
               full=dict(dataset="cifar10", model="resnet18", ms=[128], seeds=[0, 1, 2], rho=0.1, epochs=200,
                         batch_size=128, lr=0.1, schedule="multistep", augment=True, device="auto", hidden=256),
               tiny=dict(dataset="mnist-10k", model="resnet18", width=0.125, ms=[128], seeds=[0], epochs=1,
                         max_train=256, augment=False, device="cpu", schedule="constant", lr=0.05),
               runs=4 * 3, gpu_minutes_per_run=25.0, runner=_thesis_fig51),
    PaperScale("murphy2025-table4.3", "Murphy 2025, Table 4.3", "murphy2025/table4.3.json",
               full=dict(dataset="fashion-mnist", model="resnet18", width=1.0, epochs=50, seeds=[0, 1, 2, 3, 4],
                         max_train=None, root="runs/paper-scale", batch_size=128, lr=0.05, craft_steps=50),
               tiny=dict(dataset="mnist-10k", width=0.125, epochs=1, seeds=[0], max_train=256),
               runs=5 * 4, gpu_minutes_per_run=12.0, runner=_murphy_table43),
    PaperScale("yang2022-table2", "Yang 2022, Table 2", "yang2022/table2.json",
               full=dict(dataset="cifar10", trials=100, epochs=40, max_train=None, root="runs/paper-scale/epic"),
               tiny=dict(dataset="digits", trials=1, epochs=1, max_train=300),
               runs=100 * 2, gpu_minutes_per_run=6.0, runner=_yang_table2),
)}


def plan(name: str, tiny: bool = False) -> str:
    """What ``name`` runs, with the expected time (paper scale: on one GPU).

    Raises:
        ValueError: unknown name.
    """
    if name not in CONFIGS:
        raise ValueError(f"unknown paper-scale configuration {name!r}: choose one of {', '.join(CONFIGS)}")
    c = CONFIGS[name]
    kw = c.kwargs(tiny)
    shown = ", ".join(f"{k}={v}" for k, v in kw.items())
    if tiny:
        return f"{name} (tiny CPU check of the pipeline, about a minute): {shown}"
    total = c.runs * c.gpu_minutes_per_run
    return (f"{name} -> {c.claim}: {c.runs} training runs, expected time on one GPU about {total / 60:.1f} h "
            f"({c.gpu_minutes_per_run:g} min per run); {shown}")


def run_paper_scale(name: str, *, tiny: bool = False, results: str | Path = "results",
                    printer: Callable[[str], None] = print, **overrides) -> Path:
    """Print the plan, run configuration ``name`` and store its result under ``results``.

    With ``tiny`` the result goes to ``<results>/tiny/...`` so a pipeline check never replaces a measurement.

    Returns:
        The stored result's path.
    """
    from .store import save_result

    printer(plan(name, tiny))
    c = CONFIGS[name]
    t0 = time.perf_counter()
    out = c.runner(**{**c.kwargs(tiny), **overrides})
    out.seconds = time.perf_counter() - t0
    path = Path(results) / ("tiny" if tiny else "") / c.result
    save_result(out, path, command=f"workbench reproduce --paper-scale {name}" + (" --tiny" if tiny else ""),
                tables={"runs": out.data["runs"]} if isinstance(getattr(out, "data", None), dict)
                and "runs" in out.data else None)
    printer(f"{name}: {out.verdict} in {out.seconds:.0f} s; stored {path}")
    return path
