"""Hessian top-5 eigenvalues, trace and SLQ density: own code vs PyHessian, measured in one run.

Workload: LeNet-5 (``build_model(ModelConfig(name='lenet5'), (1, 8, 8), 10)``, 21,386 parameters) on
scikit-learn's digits, trained 5 epochs with the quickstart SGD config (``Trainer(store=False)``), at
that state; the Hessian of the mean cross-entropy over the **whole training split** (1,258 examples with
the default pooled 70/10/20 split; digits has fewer than 2,048) in eval mode. torch threads = 2,
OpenBLAS threads = 1.

* Reference top-5: own Lanczos on a float64 copy of the model at tol 1e-10, cross-checked with ARPACK
  ``eigsh`` at tol 1e-10. The float32 HVP limits the float32 methods to about 1e-6 relative.
* Accuracy sweep (seed 0): PyHessian ``eigenvalues(maxIter=1000, tol)`` for tol 1e-3, 1e-4, 1e-5, 1e-6
  and own ``lanczos(tol)`` for tol 1e-1 ... 1e-3; for each side the loosest tol whose top-5 are within
  1e-3 relative of the reference is chosen ("equal accuracy").
* Timing: all configurations run interleaved in every repeat (median / min of ``--repeats``), each
  including its own setup (the ``create_graph`` gradient); ratios are medians of per-repeat ratios.
  Before each call the script waits (up to 30 s) until other processes use < 0.3 cores, and reports
  the largest foreign load seen during a timed call (this box is shared).
* Trace: own Hutchinson (100 probes), own Hutch++ (102 products), PyHessian ``trace`` with its default
  stop (maxIter 100, tol 1e-3) and with all 100 probes (tol 0). Density: own SLQ (80 steps, 1 probe)
  vs PyHessian ``density(iter=80, n_v=1)``, which needs a ``torch.eig`` shim on current torch (set on
  ``torch`` in this process only for that call; the package is not modified).

Usage: python benchmarks/bench_hessian.py [--repeats 5] [--epochs 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import copy  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from workbench.analysis import curvature as cv  # noqa: E402
from workbench.analysis.common import ExampleSet  # noqa: E402
from workbench.presets import quickstart_config  # noqa: E402
from workbench.training import Trainer  # noqa: E402

warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")

TARGET = 1e-3


# ------------------------------------------------------------------ load measurement
def _busy_seconds() -> float:
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:9]]
    return (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float = 0.3, window: float = 0.5, timeout: float = 30.0) -> float:
    """Wait until other processes use < ``limit`` cores (measured over ``window``); return the last load."""
    t_end = time.time() + timeout
    while True:
        b0, c0, t0 = _busy_seconds(), time.process_time(), time.perf_counter()
        time.sleep(window)
        load = (_busy_seconds() - b0 - (time.process_time() - c0)) / (time.perf_counter() - t0)
        if load < limit or time.time() > t_end:
            return load


class Timed:
    """Wall time, own CPU time and foreign CPU load (cores) of one call."""

    def __init__(self, fn):
        b0, c0, t0 = _busy_seconds(), time.process_time(), time.perf_counter()
        self.result = fn()
        self.wall = time.perf_counter() - t0
        self.foreign = max(0.0, (_busy_seconds() - b0 - (time.process_time() - c0)) / self.wall)


def max_rel(vals, ref) -> float:
    a, b = np.asarray(vals, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def fmt_t(ts) -> str:
    return f"{statistics.median(ts):.2f} / {min(ts):.2f}"


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--trace-repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(quickstart_config("sgd", epochs=args.epochs, root=tmp), store=False, handle_sigint=False)
        res = trainer.run()
    model = res.model.eval()
    ex = ExampleSet.from_dataset(trainer._splits["train"], count=None, split="train")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"# Hessian benchmark: LeNet-5 on digits (1x8x8), {n_params:,} parameters, trained {args.epochs} epochs "
          f"(train acc {res.final_metrics['train_acc']:.3f}, test acc {res.final_metrics['test_acc']:.3f})")
    print(f"Hessian examples: the whole training split, count={ex.count} (digits has fewer than 2,048), eval mode, "
          f"mean cross-entropy. torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, python {sys.version.split()[0]}.")

    # ---- reference spectrum (float64 copy)
    m64 = copy.deepcopy(model).double()
    ex64 = ExampleSet(x=ex.x.double(), y=ex.y, index=ex.index, split=ex.split, seed=ex.seed, count=ex.count)
    with cv.HessianOperator(m64, ex64) as op64:
        ref_l = cv.lanczos(op64, k=5, tol=1e-10, max_iter=300)
        ref_e = cv.eigsh_eigenvalues(op64, k=5, tol=1e-10)
        low = cv.smallest_eigenvalues(op64, k=1, tol=1e-8)
    ref = ref_l.values.numpy()
    print(f"\nReference top-5 (float64 Lanczos tol 1e-10, {ref_l.n_matvecs} HVPs, converged={ref_l.converged}): "
          + ", ".join(f"{v:.6f}" for v in ref)
          + f"; eigsh tol 1e-10 agrees to {max_rel(ref_e.values, ref):.1e}; λmin = {float(low.values[0]):.5f}; "
          f"λ1/λ5 = {cv.eigenvalue_ratio(ref_l):.3f}")

    # ---- accuracy sweep (seed 0; counts are deterministic)
    print("\n## Accuracy sweep, top-5 (seed 0)\n")
    print("| method | tol | maxIter | HVPs | max rel err vs ref | time s |")
    print("|---|---|---|---|---|---|")
    chosen: dict[str, float | None] = {"pyhessian": None, "own": None}
    for tol in (1e-3, 1e-4, 1e-5, 1e-6):
        wait_quiet()
        t = Timed(lambda tol=tol: cv.pyhessian_eigenvalues(model, ex, k=5, tol=tol, max_iter=1000, seed=0))
        err = max_rel(t.result.values, ref)
        print(f"| PyHessian power iteration | {tol:g} | 1000 | {t.result.n_matvecs} | {err:.1e} | {t.wall:.2f} |")
        if err <= TARGET:
            chosen["pyhessian"] = tol
            break
    for tol in (1e-1, 3e-2, 1e-2, 3e-3, 1e-3):
        wait_quiet()
        t = Timed(lambda tol=tol: cv.lanczos(cv.HessianOperator(model, ex), k=5, tol=tol, seed=0))
        err = max_rel(t.result.values, ref)
        print(f"| own Lanczos (full reorth.) | {tol:g} | - | {t.result.n_matvecs} | {err:.1e} | {t.wall:.2f} |")
        if err <= TARGET and chosen["own"] is None:
            chosen["own"] = tol
        if tol <= 1e-3:
            break
    print(f"\nChosen for equal accuracy (<= {TARGET:g} relative): PyHessian tol {chosen['pyhessian']}, "
          f"own Lanczos tol {chosen['own']}.")

    # ---- interleaved timing of top-5
    ph_tol = chosen["pyhessian"] or 1e-6
    own_tol = chosen["own"] or 1e-3
    configs = {
        f"PyHessian tol {ph_tol:g} (equal accuracy)":
            lambda: cv.pyhessian_eigenvalues(model, ex, k=5, tol=ph_tol, max_iter=1000, seed=0),
        f"own Lanczos tol {own_tol:g} (equal accuracy)":
            lambda: cv.lanczos(cv.HessianOperator(model, ex), k=5, tol=own_tol, seed=0),
        "PyHessian tol 1e-3 (its default)":
            lambda: cv.pyhessian_eigenvalues(model, ex, k=5, tol=1e-3, max_iter=100, seed=0),
        "own Lanczos tol 1e-3 (default)": lambda: cv.lanczos(cv.HessianOperator(model, ex), k=5, tol=1e-3, seed=0),
        "own eigsh (ARPACK) tol 1e-3": lambda: cv.eigsh_eigenvalues(cv.HessianOperator(model, ex), k=5, tol=1e-3),
        "own power iteration tol 1e-3": lambda: cv.power_iteration(cv.HessianOperator(model, ex), k=5, tol=1e-3),
    }
    times = {k: [] for k in configs}
    info: dict[str, tuple] = {}
    foreign = 0.0
    for _ in range(args.repeats):
        for name, fn in configs.items():
            wait_quiet()
            t = Timed(fn)
            times[name].append(t.wall)
            foreign = max(foreign, t.foreign)
            info[name] = (t.result.n_matvecs, max_rel(t.result.values, ref))
    names = list(configs)
    print(f"\n## Top-5 eigenvalues, {args.repeats} interleaved repeats (setup included on both sides)\n")
    print("| method | HVPs | max rel err vs ref | time s (med / min) | ms per HVP |")
    print("|---|---|---|---|---|")
    for name in names:
        n, err = info[name]
        print(f"| {name} | {n} | {err:.1e} | {fmt_t(times[name])} | {1e3 * statistics.median(times[name]) / n:.1f} |")

    def ratio(a: str, b: str) -> tuple[float, float]:
        return info[a][0] / info[b][0], statistics.median(x / y for x, y in zip(times[a], times[b]))

    print("\n| comparison (PyHessian / own) | HVP ratio | time ratio (median of per-repeat ratios) | goal |")
    print("|---|---|---|---|")
    for a, b, label in [(names[0], names[1], "equal accuracy (<= 1e-3 rel)"),
                        (names[2], names[3], "both at tol 1e-3 (PyHessian less accurate)")]:
        h, t = ratio(a, b)
        print(f"| {label} | {h:.1f}x | {t:.1f}x | >= 3x fewer HVPs and >= 3x less time: "
              f"{'met' if h >= 3 and t >= 3 else 'NOT met'} |")
    print(f"\nLargest foreign CPU load during a timed top-5 call: {foreign:.2f} cores.")

    # ---- trace and density
    n = sum(p.numel() for p in model.parameters())
    orig_eig = getattr(torch, "eig", None)

    def eig_shim(A, eigenvectors=False):  # PyHessian 0.1 calls torch.eig (removed); T is symmetric
        w, V = torch.linalg.eigh(A)
        return torch.stack([w, torch.zeros_like(w)], 1), V

    def ph_density():
        torch.eig = eig_shim
        try:
            return cv.pyhessian_density(model, ex, steps=80, n_probes=1, seed=0)
        finally:
            torch.eig = orig_eig

    tconfigs = {
        "PyHessian trace, maxIter 100, tol 1e-3 (its stop)": lambda: cv.pyhessian_trace(model, ex, 100, 1e-3, seed=0),
        "PyHessian trace, 100 probes (tol 0)": lambda: cv.pyhessian_trace(model, ex, 100, 0.0, seed=0),
        "own Hutchinson, 100 probes": lambda: cv.hutchinson_trace(cv.HessianOperator(model, ex), 100, seed=0),
        "own Hutch++, 102 products": lambda: cv.hutchpp_trace(cv.HessianOperator(model, ex), 102, seed=0),
        "PyHessian density, iter 80, n_v 1 (torch.eig shim)": ph_density,
        "own SLQ density, 80 steps, 1 probe": lambda: cv.spectral_density(cv.HessianOperator(model, ex), 1, 80, seed=0),
    }
    ttimes = {k: [] for k in tconfigs}
    tres: dict[str, object] = {}
    foreign = 0.0
    for _ in range(args.trace_repeats):
        for name, fn in tconfigs.items():
            wait_quiet()
            t = Timed(fn)
            ttimes[name].append(t.wall)
            foreign = max(foreign, t.foreign)
            tres[name] = t.result
    print(f"\n## Trace and density, {args.trace_repeats} interleaved repeats\n")
    print("| method | HVPs | estimate ± std. error (trace) | time s (med / min) | ms per HVP |")
    print("|---|---|---|---|---|")
    for name, r in tres.items():
        if isinstance(r, cv.TraceResult):
            est = f"{r.estimate:.3f} ± {r.std_error:.3f} ({100 * r.std_error / abs(r.estimate):.1f} %)"
        else:
            est = f"SLQ trace {r.trace_estimate:.3f} (1 probe); sigma {r.sigma:.3g}"
        print(f"| {name} | {r.n_matvecs} | {est} | {fmt_t(ttimes[name])} | "
              f"{1e3 * statistics.median(ttimes[name]) / r.n_matvecs:.1f} |")
    k = list(tconfigs)
    dn = tres[k[4]], tres[k[5]]
    node_diff = max(float(np.max(np.abs(np.sort(np.asarray(dn[0].nodes[0])) - np.sort(np.asarray(dn[1].nodes[0])))))
                    / float(np.max(np.abs(ref))), 0.0)
    print(f"\nTime ratios PyHessian / own: trace at 100 probes "
          f"{statistics.median(a / b for a, b in zip(ttimes[k[1]], ttimes[k[2]])):.2f}x; density "
          f"{statistics.median(a / b for a, b in zip(ttimes[k[4]], ttimes[k[5]])):.2f}x (same HVP count: the "
          f"algorithm fixes it, so ~1x is the ceiling). Hutch++ vs Hutchinson standard error at the same budget: "
          f"{tres[k[3]].std_error:.3f} vs {tres[k[2]].std_error:.3f}. SLQ nodes PyHessian vs own differ by "
          f"{node_diff:.1e} (relative to λmax; both happen to draw the same Rademacher probe from seed 0). "
          f"Largest foreign load: {foreign:.2f} cores. n = {n}.")


if __name__ == "__main__":
    main()
