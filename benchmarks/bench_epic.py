"""EPIC selection time per round as a fraction of one training epoch, and against submodlib, measured in one run.

Workload (default ``--data mnist-10k``): LeNet-5 (61,706 parameters) on the 7,000 training images of the
bundled real 28x28 MNIST test set (``mnist-10k``, pooled split), i.e. the scale of the efficacy study
(``workbench.defenses.efficacy``); ``--data synthetic`` uses 10,000 synthetic 1x28x28 images of 10 classes
(a fixed random prototype per class plus N(0, 1) noise). SGD lr 0.05 momentum 0.9 wd 5e-4, batch 128,
torch threads = ``--threads``.

Timed, interleaved over ``--repeats`` repeats (median reported):

* ``epoch``: one training epoch (``workbench.optim.sam_step`` with SGD, exactly the trainer's inner step),
  after a warm-up epoch;
* ``round[<greedy>, <kernel>, <budget>]``: one EPIC selection round, ``EPIC.maybe_select`` on the whole
  training set ([Yang 2022, Alg. 1]: gradient proxies softmax − onehot in eval mode, per class greedy
  facility location with ceil(budget·n_c) medoids, nearest-medoid clusters, isolated medoids dropped),
  split into the proxy pass and the medoid search (``EPIC.timings``). Kernels (``--kernels``): the paper's
  ``shifted_distance`` c0 − d and the authors' code's ``exponential`` exp(−d/dim). Greedy implementations
  (``--greedy``): ``incremental`` (own exact greedy with incremental gain updates, EPIC's default), ``lazy``
  (own vectorised lazy greedy), ``naive`` (own, recomputes all gains), ``submodlib`` (PyPI submodlib-py,
  LazyGreedy) and ``apricot`` (PyPI apricot-select, lazy), the libraries only when installed; all get the same
  precomputed similarity matrix. A first untimed call per variant absorbs first-call costs (JIT, allocations).
* ``same points``: the authors' code path — ``submodlib.FacilityLocationFunction(data=g_c,
  metric="euclidean", mode="dense")`` (submodlib builds its exp(−d/dim) kernel itself) and
  ``maximize(budget=k, optimizer="LazyGreedy")`` — against ``class_medoid_clusters(g_c, budget,
  kernel="exponential")`` (own kernel, incremental greedy, clusters) on the same per-class proxies ``g_c``,
  summed over the classes; the medoid sets are compared.

Reported: seconds per round (median), the fraction ``round / epoch`` (goal ≤ 0.5 epoch), for every greedy the
medoid time relative to ``incremental``, and the same-points ratio submodlib / own.

Usage: python benchmarks/bench_epic.py [--repeats 2] [--budgets 0.1,0.2,0.3] [--data mnist-10k] [--threads 2]
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
from workbench.defenses import EPIC, class_medoid_clusters, gradient_proxies, medoid_budget
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
    ap.add_argument("--data", default="mnist-10k", choices=["mnist-10k", "synthetic"])
    ap.add_argument("--n", type=int, default=10_000, help="examples of --data synthetic")
    ap.add_argument("--kernels", default="shifted_distance,exponential")
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
    kernels = args.kernels.split(",")

    torch.manual_seed(0)
    if args.data == "synthetic":
        data = make_data(args.n, 10, 0).to(dev)
    else:
        from workbench.config import DataConfig
        from workbench.data import load_data

        data = load_data(DataConfig(name=args.data, split="pooled")).train.to(dev)
    n = len(data)
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

    def round_(method: str, budget: float, kernel: str) -> tuple[float, dict, torch.Tensor]:
        d = EPIC(budget=budget, period=1, warmup=0, greedy=method, kernel=kernel)
        sync(dev)
        t0 = time.perf_counter()
        kept = d.maybe_select(model, data, 0)
        sync(dev)
        return time.perf_counter() - t0, dict(d.timings), kept

    print(f"warm-up epoch ({len(loader)} steps) ...", flush=True)
    epoch(0)  # warm-up epoch: the model learns the classes; proxies are then structured
    for m in methods:
        for k in kernels:
            round_(m, budgets[0], k)  # JIT / first-call costs
    times = {"epoch": []}
    parts = {}
    kept_sets = {}
    for r in range(args.repeats):
        times["epoch"].append(epoch(1 + r))
        print(f"repeat {r + 1}/{args.repeats}: epoch {times['epoch'][-1]:.2f} s", flush=True)
        for b in budgets:
            for k in kernels:
                for m in methods:
                    dt, tm, kept = round_(m, b, k)
                    times.setdefault((m, k, b), []).append(dt)
                    parts.setdefault((m, k, b), []).append(tm)
                    kept_sets[(m, k, b)] = kept
                    print(f"  round greedy={m} kernel={k} budget={b}: {dt:.3f} s {tm}", flush=True)
    ep = statistics.median(times["epoch"])
    print(f"device={dev} threads={args.threads} data={args.data} n={n} LeNet-5 width={args.width} batch={args.batch} "
          f"repeats={args.repeats}")
    print(f"one training epoch: {ep:.3f} s ({len(loader)} steps)")
    if skipped:
        print(f"not installed (skipped): {', '.join(skipped)}")
    print(f"{'greedy':>12} {'kernel':>16} {'budget':>6} {'round s':>8} {'proxies s':>9} {'medoids s':>9} "
          f"{'round/epoch':>11} {'vs incremental':>14} {'dropped':>7} {'same kept set':>13}")
    for b in budgets:
        for k in kernels:
            base = ("incremental", k, b)
            base_med = statistics.median(p["medoids"] for p in parts[base]) if base in parts else float("nan")
            for m in methods:
                key = (m, k, b)
                rt = statistics.median(times[key])
                pr = statistics.median(p["proxies"] for p in parts[key])
                md = statistics.median(p["medoids"] for p in parts[key])
                same = torch.equal(kept_sets[key], kept_sets[base]) if base in kept_sets else None
                print(f"{m:>12} {k:>16} {b:>6.2f} {rt:>8.3f} {pr:>9.3f} {md:>9.3f} {rt / ep:>10.1%} "
                      f"{md / base_med:>13.2f}x {n - len(kept_sets[key]):>7d} {str(same):>13}")
    if importlib.util.find_spec("submodlib") is None:
        print("same points: submodlib not installed (pip install submodlib-py)")
        return
    same_points(model, data, budgets, args.repeats)


def same_points(model, data, budgets, repeats: int) -> None:
    """The authors' code path (submodlib builds exp(−d/dim) from the points) vs own, on the same proxies."""
    from submodlib import FacilityLocationFunction

    g = gradient_proxies(model, data.x, data.y).double()
    y = data.y.cpu()
    classes = [torch.nonzero(y == c).squeeze(1) for c in torch.unique(y).tolist()]
    print(f"same points: per-class proxies softmax − onehot, {len(g)} points of dim {g.shape[1]}, "
          f"{len(classes)} classes; seconds summed over the classes (median of {repeats})")
    print(f"{'budget':>6} {'submodlib s':>11} {'own s':>8} {'submodlib/own':>13} {'same medoids':>12}")
    for b in budgets:
        t_lib, t_own, same = [], [], True
        for _ in range(repeats):
            tl = to = 0.0
            for pos in classes:
                X = g[pos]
                k = medoid_budget(b, len(pos))
                t0 = time.perf_counter()
                f = FacilityLocationFunction(n=len(X), data=X.numpy(), metric="euclidean", mode="dense")
                lib = f.maximize(budget=k, optimizer="LazyGreedy", stopIfZeroGain=False, stopIfNegativeGain=False,
                                 verbose=False, show_progress=False)
                tl += time.perf_counter() - t0
                t0 = time.perf_counter()
                cl = class_medoid_clusters(X, b, kernel="exponential")
                to += time.perf_counter() - t0
                same &= set(int(i) for i, _ in lib) == set(cl.medoids.tolist())
            t_lib.append(tl)
            t_own.append(to)
        ml, mo = statistics.median(t_lib), statistics.median(t_own)
        print(f"{b:>6.2f} {ml:>11.3f} {mo:>8.3f} {ml / mo:>12.1f}x {str(same):>12}", flush=True)


if __name__ == "__main__":
    main()
