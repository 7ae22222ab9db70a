"""Bilevel poisoning [Carnerero-Cano 2021]: time of the Fig. 1 maps and of one hypergradient.

1. **50×50 map** (App. C.1: 32 training points + 1 poisoning point, 100 full-batch steps of η = 0.2):
   :func:`workbench.bilevel.poison_maps` trains the 2,500 models of one map — for the two Fig. 1
   panels (no regularisation, λ = log 20) that is 5,000 models, and the argmin-λ map over 15 λ values
   is 37,500 — in one batched loop. Compared with training the same models one at a time
   (:func:`workbench.bilevel.train_gd`; timed on a subset and extrapolated).
2. **Hypergradient cost**: one ∇_{X_p}𝒜 and ∂𝒜/∂λ for 17 poisoning points on an MNIST-sized problem
   (512 + 17 training points, 784 features, 171 validation points, T = 150, η = 0.1; random data in
   [0, 1]) and a digits-sized one (176 + 6, 64 features): reverse-mode through T steps (Alg. 1;
   ``analytic`` fused closed-form products, ``autograd`` double backward, Eq. 3) vs the implicit
   hypergradient at the Newton optimum (CG on Hessian-vector products, or a dense solve); the
   implicit timing includes the Newton solve. Also prints the relative difference between RMD at
   T = 150 and the implicit hypergradient (they differ: the T-step model is not at its optimum).

Timings are medians of ``--repeats``; this machine is shared, so the 1-minute load average is printed.
Usage: python benchmarks/bench_bilevel.py [--repeats 3] [--threads 1]

Measured 2026-11-22 on the 2-core dev box, 1 torch thread, ``--repeats 2``, under a load average of 12–13
(other jobs running; expect faster on an idle machine):

* 50×50 maps, both Fig. 1 panels (5,000 models): **0.97 s**; argmin-λ map over 15 λ (37,500 models): 9.3 s;
  one model at a time: 13.7 ms per model → 68 s for the two panels (batched ≈ 70× faster).
* One hypergradient, MNIST-sized (529 × 784, T = 150): RMD analytic 396 ms, RMD autograd (Eq. 3) 3,254 ms
  (8.2×), implicit CG 1,139 ms (2.9×), implicit dense 3,732 ms (9.4×). Digits-sized (182 × 64): RMD analytic
  47 ms, autograd 315 ms (6.7×), implicit CG 11 ms (0.23×), dense 50 ms. RMD analytic and autograd agree to
  1e-14; RMD at T = 150 differs from the implicit hypergradient by ~90 % (relative norm): the T-step model is far
  from its optimum for these λ, which is why the study uses RMD (the paper's choice) and not the implicit one.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

from workbench.bilevel import (  # noqa: E402
    BilevelProblem,
    gaussian_2d,
    implicit_hypergradient,
    poison_maps,
    reverse_hypergradient,
    train_gd,
)


def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def problem(n, n_p, d, n_val, seed=0, steps=150, eta=0.1):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    xv = torch.rand(n_val, d, generator=g, dtype=torch.float64)
    y = ((x - 0.5) @ w > 0).double()
    yv = ((xv - 0.5) @ w > 0).double()
    yp = (torch.rand(n_p, generator=g) > 0.5).double()
    return BilevelProblem(x, y, xv, yv, yp, eta=eta, steps=steps), torch.rand(n_p, d, generator=g, dtype=torch.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, threads {a.threads}, load average at start {os.getloadavg()[0]:.2f}")

    toy = gaussian_2d(0)
    print("\n== 50x50 maps (App. C.1: 100 full-batch steps, eta 0.2) ==")
    t2, m = timed(lambda: poison_maps(toy, [-math.inf, math.log(20.0)], grid=50), a.repeats)
    print(f"two Fig. 1 panels (no reg, lambda = log 20): 5,000 models in {t2:.2f} s (load {os.getloadavg()[0]:.1f})")
    lams = torch.linspace(-8, 6, 15).tolist()
    t15, _ = timed(lambda: poison_maps(toy, lams, grid=50), max(1, a.repeats - 1))
    print(f"argmin-lambda map, 15 lambda values: 37,500 models in {t15:.2f} s (load {os.getloadavg()[0]:.1f})")
    y = torch.cat([toy.y_tr, toy.y_tr.new_zeros(1)])
    pts = torch.rand(40, 2, dtype=torch.float64) * 19 - 9.5

    def loop():
        for p in pts:
            train_gd(torch.cat([toy.x_tr, p[None]]), y, 0.0, eta=0.2, steps=100)

    tl, _ = timed(loop, 1)
    per = tl / len(pts)
    print(f"one model at a time: {1e3 * per:.1f} ms per model -> {5000 * per:.1f} s for the two panels "
          f"(batched is {5000 * per / t2:.0f}x faster)")

    print("\n== hypergradient cost (17 poisoning points for MNIST size, 6 for digits size) ==")
    for name, (n, n_p, d, nv) in {"MNIST-sized": (512, 17, 784, 171), "digits-sized": (176, 6, 64, 59)}.items():
        P, xp = problem(n, n_p, d, nv)
        rows = {}
        rows["RMD analytic (fused)"], h_a = timed(lambda P=P, xp=xp: reverse_hypergradient(P, xp, 0.0), a.repeats)
        rows["RMD autograd (Eq. 3)"], h_g = timed(
            lambda P=P, xp=xp: reverse_hypergradient(P, xp, 0.0, method="autograd"), a.repeats)
        rows["implicit, CG"], h_i = timed(
            lambda P=P, xp=xp: implicit_hypergradient(P, xp, 0.0, solver="cg"), a.repeats)
        rows["implicit, dense solve"], _ = timed(
            lambda P=P, xp=xp: implicit_hypergradient(P, xp, 0.0, solver="direct"), max(1, a.repeats - 1))
        base = rows["RMD analytic (fused)"]
        print(f"{name}: n = {n} + {n_p}, d = {d}, T = {P.steps} (load {os.getloadavg()[0]:.1f})")
        for k, v in rows.items():
            print(f"  {k:<24s} {1e3 * v:9.1f} ms   ({v / base:5.2f}x RMD analytic)")
        agree = float((h_a.grad_xp - h_g.grad_xp).norm() / h_g.grad_xp.norm())
        gap = float((h_a.grad_xp - h_i.grad_xp).norm() / h_i.grad_xp.norm())
        print(f"  |RMD analytic - RMD autograd| / |.| = {agree:.1e};  |RMD(T=150) - implicit| / |.| = {gap:.2f}")


if __name__ == "__main__":
    main()
