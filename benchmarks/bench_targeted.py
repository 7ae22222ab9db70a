"""Crafting time per attack iteration: gradient matching, feature collision, Bullseye Polytope (measured in one run).

Workload: LeNet-5 pretrained for a few epochs on the bundled digits (8x8, or ``--resize 28`` for
MNIST-sized inputs), one seeded threat setup with ``--poisons`` poisons (ε = 16/255), torch threads 1.

Per attack, the time per iteration is the *marginal* cost: ``(t(N2) − t(N1)) / (N2 − N1)`` for
``N1 = --short`` and ``N2 = --long`` iterations (one restart), so the one-off costs (target gradient,
final evaluation, setup) are excluded. Reported: median over ``--repeats`` of ms per iteration, and the
same in units of one SGD step (forward + backward + update) on a batch of the poisons (a gradient-matching
iteration is a forward, a backward with ``create_graph`` and a backward through that graph; the feature
attacks need one forward and one backward to the input).

Usage: python benchmarks/bench_targeted.py [--repeats 5] [--poisons 50] [--short 10] [--long 40] [--resize 28]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch
import torch.nn.functional as F

from workbench.config import DataConfig
from workbench.data import load_data
from workbench.targeted import GradientMatching, make_setups, pretrain
from workbench.targeted.feature_collision import BullseyePolytope, FeatureCollision


def attacks(n: int):
    return {"gradient_matching": lambda: GradientMatching(iterations=n, restarts=1),
            "feature_collision": lambda: FeatureCollision(iterations=n, tol=0.0),
            "bullseye_polytope": lambda: BullseyePolytope(iterations=n)}


def sgd_step_ms(model, x, y, repeats: int = 20) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ts.append(time.perf_counter() - t0)
    return 1000 * statistics.median(ts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--poisons", type=int, default=50)
    p.add_argument("--short", type=int, default=10)
    p.add_argument("--long", type=int, default=40)
    p.add_argument("--resize", type=int, default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    data = load_data(DataConfig(name="digits", split="pooled", resize=a.resize))
    model = pretrain(data, epochs=5, seed=0)
    setup = make_setups(data, 1, budget=a.poisons / len(data.train), epsilon=16 / 255, seed=0)[0]
    rows = setup.poison_rows(data.train)
    x, y = data.train.x[rows], data.train.y[rows]
    step = sgd_step_ms(model, x, y)
    print(f"digits {tuple(data.input_shape)}, LeNet-5, {setup.num_poisons} poisons; one SGD step on them: "
          f"{step:.2f} ms")
    print(f"{'attack':<20} {'ms / iteration':>15} {'SGD steps':>10}")
    for name in attacks(1):
        per = []
        for _ in range(a.repeats):
            times = {}
            for n in (a.short, a.long):
                atk = attacks(n)[name]()
                t0 = time.perf_counter()
                atk.craft(model, setup, data)
                times[n] = time.perf_counter() - t0
                assert atk.iterations_done == n, (name, atk.iterations_done)
            per.append(1000 * (times[a.long] - times[a.short]) / (a.long - a.short))
        m = statistics.median(per)
        print(f"{name:<20} {m:>15.2f} {m / step:>10.1f}")


if __name__ == "__main__":
    main()
