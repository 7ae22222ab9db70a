"""SAM step time over SGD step time (LeNet-5, batch 128), measured in one run.

Workload: LeNet-5 (conv 1->6 5x5 pad 2, pool, conv 6->16 5x5, pool,
400-120-84-10; 61,706 parameters) on random 1x28x28 inputs, batch 128, SGD lr 0.05 momentum 0.9 wd 5e-4,
rho 0.05, torch threads = 2. Each repeat times 20 steps of every variant back to back (interleaved), after a
warm-up; the ratio is the median of the per-repeat ratios. The floor is about 2.0 (SAM needs two forward/backward
passes per step); the goal is <= 2.2.

If PEERS_DIR points to a folder holding davda54/sam's ``sam.py`` it is timed in the same run for comparison
(it is imported from there, never copied into this project).

Usage: python benchmarks/bench_sam_step.py [--repeats 15] [--steps 20] [--device auto]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch
import torch.nn.functional as F

from workbench.config import ModelConfig, OptimConfig
from workbench.models import build_model
from workbench.optim import build_optimizer, sam_step
from workbench.training import resolve_device


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28, generator=g).to(dev)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(dev)

    def fresh(name):
        torch.manual_seed(0)
        model = build_model(ModelConfig(name="lenet5"), (1, 28, 28), 10).to(dev).train()
        opt = build_optimizer(OptimConfig(name=name, lr=0.05, momentum=0.9, weight_decay=5e-4, rho=0.05),
                              model.parameters())
        return model, opt

    variants = {}
    for name in ("sgd", "sam"):
        model, opt = fresh(name)
        variants[name] = (lambda m=model, o=opt: sam_step(m, F.cross_entropy, x, y, o))

    peers = os.environ.get("PEERS_DIR")
    if peers and os.path.isfile(os.path.join(peers, "sam.py")):
        spec = importlib.util.spec_from_file_location("peer_sam", os.path.join(peers, "sam.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        torch.manual_seed(0)
        pm = build_model(ModelConfig(name="lenet5"), (1, 28, 28), 10).to(dev).train()
        po = mod.SAM(pm.parameters(), torch.optim.SGD, rho=0.05, lr=0.05, momentum=0.9, weight_decay=5e-4)

        def peer_step(m=pm, o=po):
            F.cross_entropy(m(x), y).backward()
            o.first_step(zero_grad=True)
            F.cross_entropy(m(x), y).backward()
            o.second_step(zero_grad=True)

        variants["davda54 SAM"] = peer_step

    for fn in variants.values():  # warm-up
        for _ in range(5):
            fn()
    sync(dev)
    times = {k: [] for k in variants}
    for _ in range(args.repeats):
        for k, fn in variants.items():
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            sync(dev)
            times[k].append((time.perf_counter() - t0) / args.steps * 1e3)
    print(f"LeNet-5, batch {args.batch}, device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.repeats} interleaved repeats x {args.steps} steps")
    print(f"{'variant':16s} {'ms/step median':>15s} {'ms/step min':>12s} {'ratio to SGD':>13s}")
    for k, ts in times.items():
        ratio = statistics.median(a / b for a, b in zip(ts, times["sgd"]))
        print(f"{k:16s} {statistics.median(ts):15.2f} {min(ts):12.2f} {ratio:13.3f}")
    r = statistics.median(a / b for a, b in zip(times["sam"], times["sgd"]))
    print(f"\nSAM/SGD step-time ratio: {r:.3f}  (goal <= 2.2; floor ~2.0: two forward/backward passes)")


if __name__ == "__main__":
    main()
