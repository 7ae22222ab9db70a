"""EPIC selection time per round on 10,000 examples, as a fraction of one training epoch, measured in one run.

Workload: LeNet-5 (``--width``, default 1.0: 61,706 parameters) on 10,000 synthetic 1x28x28 images of 10
balanced classes (a fixed random prototype per class plus N(0, 1) noise, so the model learns and the
gradient proxies are structured), SGD lr 0.05 momentum 0.9 wd 5e-4, batch 128, torch threads = ``--threads``.

Timed, interleaved over ``--repeats`` repeats (median reported):

* ``epoch``: one training epoch over the 10,000 examples (79 steps of ``workbench.optim.sam_step`` with SGD,
  i.e. exactly the trainer's inner step), after a warm-up epoch;
* ``round[<greedy>, <budget>]``: one EPIC selection round, ``EPIC.maybe_select`` on the whole training set
  ([Yang 2022, Alg. 1]: gradient proxies softmax − onehot in eval mode, per class greedy
  facility location with ceil(budget·1000) medoids, nearest-medoid clusters, isolated medoids dropped),
  split into the proxy pass and the medoid search (``EPIC.timings``). Greedy implementations (``--greedy``):
  ``incremental`` (own exact greedy with incremental gain updates, EPIC's default), ``lazy`` (own
  vectorised lazy greedy), ``naive`` (own, recomputes all gains), ``submodlib`` (PyPI submodlib-py, LazyGreedy) and
  ``apricot`` (PyPI apricot-select, lazy),
  the libraries only when installed; all get the same precomputed similarity matrix c0 − ‖g_i − g_j‖.
  A first untimed call per variant absorbs JIT compilation (apricot/numba).

Reported: seconds per round (median), the fraction ``round / epoch`` (goal ≤ 10 %), and for every
greedy the medoid time relative to ``incremental``. Kept sets of the methods are compared (same size).

Usage: python benchmarks/bench_epic.py [--repeats 2] [--budgets 0.1,0.2,0.3] [--device auto] [--threads 2]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch

from workbench.config import ModelConfig, OptimConfig
from workbench.data import BatchLoader, IndexedTensorDataset
from workbench.defenses import EPIC
from workbench.models import build_model
from workbench.optim import build_optimizer, sam_step
from workbench.training import resolve_device


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def make_data(n: int, classes: int, seed: int) -> IndexedTensorDataset:
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(classes, 1, 28, 28, generator=g)
    y = torch.arange(n) % classes
    x = protos[y] + torch.randn(n, 1, 28, 28, generator=g)
    return IndexedTensorDataset(x, y, torch.arange(n))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--budgets", default="0.1,0.2,0.3")
    ap.add_argument("--greedy", default="incremental,lazy,submodlib,apricot",
                    help="comma-separated: lazy, incremental, naive, submodlib, apricot (libraries only if installed)")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    methods = [m for m in args.greedy.split(",") if m in ("lazy", "incremental", "naive")
               or importlib.util.find_spec(m) is not None]
    skipped = [m for m in args.greedy.split(",") if m not in methods]
    budgets = [float(b) for b in args.budgets.split(",")]

    torch.manual_seed(0)
    data = make_data(args.n, 10, 0).to(dev)
    model = build_model(ModelConfig(name="lenet5", width=args.width), (1, 28, 28), 10).to(dev)
    opt = build_optimizer(OptimConfig(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4), model.parameters())
    loader = BatchLoader(data, args.batch, shuffle=True, seed=0, device=dev)
    loss_fn = torch.nn.functional.cross_entropy

    def epoch(e: int) -> float:
        loader.set_epoch(e)
        model.train()
        sync(dev)
        t0 = time.perf_counter()
        for xb, yb, _ in loader:
            sam_step(model, loss_fn, xb, yb, opt)
        sync(dev)
        return time.perf_counter() - t0

    def round_(method: str, budget: float) -> tuple[float, dict, torch.Tensor]:
        d = EPIC(budget=budget, period=1, warmup=0, greedy=method)
        sync(dev)
        t0 = time.perf_counter()
        kept = d.maybe_select(model, data, 0)
        sync(dev)
        return time.perf_counter() - t0, dict(d.timings), kept

    print(f"warm-up epoch ({len(loader)} steps) ...", flush=True)
    epoch(0)  # warm-up epoch: the model learns the classes; proxies are then structured
    for m in methods:
        round_(m, budgets[0])  # JIT / first-call costs
    times = {"epoch": []}
    parts = {}
    kept_sets = {}
    for r in range(args.repeats):
        times["epoch"].append(epoch(1 + r))
        print(f"repeat {r + 1}/{args.repeats}: epoch {times['epoch'][-1]:.2f} s", flush=True)
        for b in budgets:
            for m in methods:
                dt, tm, kept = round_(m, b)
                times.setdefault((m, b), []).append(dt)
                parts.setdefault((m, b), []).append(tm)
                kept_sets[(m, b)] = kept
                print(f"  round greedy={m} budget={b}: {dt:.3f} s {tm}", flush=True)
    ep = statistics.median(times["epoch"])
    print(f"device={dev} threads={args.threads} n={args.n} LeNet-5 width={args.width} batch={args.batch} "
          f"repeats={args.repeats}")
    print(f"one training epoch: {ep:.3f} s ({len(loader)} steps)")
    if skipped:
        print(f"not installed (skipped): {', '.join(skipped)}")
    print(f"{'greedy':>12} {'budget':>6} {'round s':>8} {'proxies s':>9} {'medoids s':>9} {'round/epoch':>11} "
          f"{'vs incremental':>14} {'dropped':>7} {'same kept set':>13}")
    for b in budgets:
        base_med = statistics.median(p["medoids"] for p in parts[("incremental", b)]) \
            if ("incremental", b) in parts else float("nan")
        for m in methods:
            rt = statistics.median(times[(m, b)])
            pr = statistics.median(p["proxies"] for p in parts[(m, b)])
            md = statistics.median(p["medoids"] for p in parts[(m, b)])
            same = torch.equal(kept_sets[(m, b)], kept_sets[("incremental", b)]) \
                if ("incremental", b) in kept_sets else None
            print(f"{m:>12} {b:>6.2f} {rt:>8.3f} {pr:>9.3f} {md:>9.3f} {rt / ep:>10.1%} {md / base_med:>13.2f}x "
                  f"{args.n - len(kept_sets[(m, b)]):>7d} {str(same):>13}")


if __name__ == "__main__":
    main()
