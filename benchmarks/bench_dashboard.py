"""Training throughput with the live dashboard attached over headless throughput, measured in one run.

Workload: the quickstart (LeNet-5 on digits, SGD, batch 64), run folder written in both cases. "Headless" is
``Trainer(cfg).run()``; "dashboard" attaches exactly what ``TrainingPanel`` attaches: ``LiveCurves`` redrawing a
plotly ``FigureWidget`` (per-step curves on, default 0.5 s throttle) and the panel's progress callback. Outside a
Jupyter kernel the widget has no frontend, so this measures the Python-side cost (event buffering, series building,
trace updates, message serialisation), which is what competes with training for the interpreter. Repeats alternate
headless / dashboard; the overhead is the median of the per-repeat time ratios minus 1 (goal <= 10 %).

Usage: python benchmarks/bench_dashboard.py [--repeats 5] [--epochs 20] [--interval 0.5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch

from workbench.presets import quickstart_config
from workbench.training import Trainer
from workbench.ui import TrainingPanel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--optimizer", default="sgd")
    args = ap.parse_args()
    torch.set_num_threads(2)
    root = tempfile.mkdtemp(prefix="wb-bench-")
    cfg = quickstart_config(args.optimizer, epochs=args.epochs, root=root)
    Trainer(cfg, store=False).run()  # warm-up: data cache, allocator, kernels

    def headless():
        t0 = time.perf_counter()
        res = Trainer(cfg).run()
        return time.perf_counter() - t0, res.steps

    def dashboard():
        panel = TrainingPanel(root=root, base=cfg, compare=(args.optimizer,), interval=args.interval)
        panel.live.start()
        t0 = time.perf_counter()
        res = Trainer(cfg, callbacks=[panel.live, panel._on_event]).run()
        dt = time.perf_counter() - t0
        panel.live.stop(final=True)
        return dt, res.steps, panel.live.redraws

    h, d, redraws = [], [], []
    for _ in range(args.repeats):
        th, steps = headless()
        td, _, r = dashboard()
        h.append(th)
        d.append(td)
        redraws.append(r)
    ratio = statistics.median(b / a for a, b in zip(h, d))
    print(f"quickstart ({args.optimizer}, LeNet-5, digits, {args.epochs} epochs, {steps} steps), "
          f"{args.repeats} alternating repeats, torch threads {torch.get_num_threads()}")
    print(f"headless : {statistics.median(h):6.2f} s median ({steps / statistics.median(h):7.1f} steps/s)")
    print(f"dashboard: {statistics.median(d):6.2f} s median ({steps / statistics.median(d):7.1f} steps/s), "
          f"{statistics.median(redraws):.0f} redraws per run")
    print(f"\ndashboard overhead: {100 * (ratio - 1):+.1f} %  (goal <= 10 %)")


if __name__ == "__main__":
    main()
