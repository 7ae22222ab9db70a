"""Poison-crafting time per batch, relative to one SGD step and to a reference-style loop, measured in one run.

Workload (as benchmarks/bench_sam_step.py): LeNet-5 (61,706 parameters) on random 1x28x28 inputs, batch 128,
SGD lr 0.05 momentum 0.9 wd 5e-4, rho 0.05, torch threads = 2. Crafting: n = 5 inner iterations per batch
([Murphy 2025, §5.2] for MNIST), Adam with lr^P = 0.01 on Δ, per-tensor cosine (as the reference
code), no projection, early stopping off (tol = 0) so every variant does exactly n iterations.

Variants, timed per batch, interleaved (each repeat runs ``--steps`` batches of every variant back to back):

* ``sgd``: one plain SGD step (``sam_step`` with SGD): 1 forward/backward.
* ``sam``: one SAM step: 2 forward/backward.
* ``own``: :class:`workbench.poisoning.SharpnessAwarePoisoner.step` inside a real (in-memory) Trainer:
  SAM gradient g′ (``sam_step(update=False)``), n crafting iterations on Δ^B with ``autograd.grad``
  (create_graph) on the live model, then the SAM update.
* ``reference-style loop``: written here from the report's pseudocode (§3.2) in the way the reference code
  runs it: for every batch ``copy.deepcopy(model)``, the SAM gradient computed on that copy (ascent,
  second pass), then the n inner iterations on a freshly deep-copied model (one copy per batch, as the
  reference passes ``copy.deepcopy(model)`` to its poison function; ``passenger_loss.backward()``
  accumulates into that copy's parameters, hence the copy), then θ ← θ − η g′ on the real model.
  ``reference-style loop, copy per iteration`` deep-copies the model for every inner iteration instead.
  Nothing is imported from the reference code.

Reported: ms per batch (median over repeats), the ratios reference/own and own/SGD (medians of the per-repeat
ratios), and the equivalent number of backprops, i.e. the time per batch in units of one SGD step
(1 forward + 1 backward). The report's accounting (§3.2) counts 2 + n backprops per batch
(2 for SAM + n for the optimisation); a crafting iteration is a forward, a backward with create_graph and
a backward through that graph, so it costs more than one SGD step.

Usage: python benchmarks/bench_poison.py [--repeats 7] [--steps 5] [--batch 128] [--iterations 5] [--device auto]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch
import torch.nn.functional as F

from workbench.config import ModelConfig, OptimConfig, RunConfig
from workbench.data import DataBundle, IndexedTensorDataset
from workbench.models import build_model
from workbench.optim import build_optimizer, sam_step
from workbench.poisoning import PoisonConfig, SharpnessAwarePoisoner
from workbench.training import Trainer, resolve_device

LR, MOMENTUM, WD, RHO = 0.05, 0.9, 5e-4, 0.05


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------- reference-style loop
class ReferenceStyleLoop:
    """The report's crafting loop written out naively, deep-copying the model per batch (see module doc)."""

    def __init__(self, model, n_examples: int, input_shape, *, iterations: int, lr_p: float,
                 copy_per_iteration: bool = False):
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
        dev = next(model.parameters()).device
        self.deltas = torch.zeros(n_examples, *input_shape, device=dev)
        self.iterations, self.lr_p, self.per_iter = iterations, lr_p, copy_per_iteration

    def sam_gradient(self, x, y):
        """g′ = ∇L_B(θ)|θ+ε̂(θ), ε̂ = ρ g/‖g‖ (Eq. 3.1-3.2), on a deep copy of the model."""
        m = copy.deepcopy(self.model)
        F.cross_entropy(m(x), y).backward()
        params = [p for p in m.parameters() if p.grad is not None]
        norm = torch.norm(torch.stack([p.grad.norm(p=2) for p in params]), p=2)
        scale = RHO / (norm + 1e-12)
        with torch.no_grad():
            for p in params:
                p.add_(p.grad * scale)
        m.zero_grad()
        F.cross_entropy(m(x), y).backward()
        return [p.grad.detach().clone() for p in m.parameters()]

    def poison(self, model, x, y, delta, g_sam):
        """n Adam steps on Δ minimising 1 − mean over tensors of cos(∇θ L(B+Δ), g′) (Eq. 3.6, per tensor)."""
        delta = delta.clone().detach().requires_grad_(True)
        opt = torch.optim.Adam([delta], lr=self.lr_p)
        g_flat = [g.flatten() for g in g_sam]
        for _ in range(self.iterations):
            if self.per_iter:
                model = copy.deepcopy(self.model)
            opt.zero_grad()
            loss = F.cross_entropy(model(x + delta), y)
            poison_grad = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
            passenger = 1.0
            for pg, g in zip(poison_grad, g_flat):
                passenger = passenger - F.cosine_similarity(pg.flatten(), g, dim=0) / len(g_flat)
            passenger.backward()  # also accumulates into the copy's parameters
            opt.step()
            passenger.item()  # the reference logs the loss every iteration
        return delta.detach()

    def __call__(self, x, y, idx):
        g_sam = self.sam_gradient(x, y)
        self.deltas[idx] = self.poison(copy.deepcopy(self.model), x, y, self.deltas[idx], g_sam)
        self.opt.zero_grad()
        for p, g in zip(self.model.parameters(), g_sam):
            p.grad = g
        self.opt.step()


# ------------------------------------------------------------------------ timing
def build_variants(args, dev) -> dict:
    """The timed callables, one batch each: sgd, sam, own, and the two reference-style loops."""
    shape = (1, 28, 28)
    g = torch.Generator().manual_seed(0)
    x_cpu = torch.randn(args.batch, *shape, generator=g)
    y_cpu = torch.randint(0, 10, (args.batch,), generator=g)
    idx_cpu = torch.arange(args.batch)
    x, y, idx = x_cpu.to(dev), y_cpu.to(dev), idx_cpu.to(dev)

    def fresh(name):
        torch.manual_seed(0)
        model = build_model(ModelConfig(name="lenet5"), shape, 10).to(dev).train()
        opt = build_optimizer(OptimConfig(name=name, lr=LR, momentum=MOMENTUM, weight_decay=WD, rho=RHO),
                              model.parameters())
        return model, opt

    variants = {}
    for name in ("sgd", "sam"):
        model, opt = fresh(name)
        variants[name] = (lambda m=model, o=opt: sam_step(m, F.cross_entropy, x, y, o))

    # own: the crafting stepper inside a real in-memory Trainer (one batch = the whole toy training set)
    cfg = RunConfig().with_overrides({
        "data.name": "digits", "model.name": "lenet5", "optim.name": "sam", "optim.lr": LR,
        "optim.momentum": MOMENTUM, "optim.weight_decay": WD, "optim.rho": RHO, "train.epochs": 1,
        "train.batch_size": args.batch, "train.seed": 0, "train.device": str(dev)})
    empty = IndexedTensorDataset(torch.zeros(0, *shape), torch.zeros(0, dtype=torch.long),
                                 torch.zeros(0, dtype=torch.long))
    bundle = DataBundle(name="random", train=IndexedTensorDataset(x_cpu, y_cpu, idx_cpu), val=empty, test=empty,
                        input_shape=shape, num_classes=10, class_names=[str(i) for i in range(10)])
    poisoner = SharpnessAwarePoisoner(PoisonConfig(lr=0.01, optimizer="adam", iterations=args.iterations,
                                                   cosine="per_tensor", tol=0.0, drift_epochs=[]))
    trainer = Trainer(cfg, store=False, data=bundle, stepper=poisoner, handle_sigint=False)
    trainer._setup()  # model, optimizer, splits and stepper ready; we drive the steps ourselves
    variants["own"] = lambda: poisoner.step(trainer, x, y, idx, 1)

    for label, per_iter in (("reference-style loop", False), ("reference-style loop, copy per iteration", True)):
        model, _ = fresh("sgd")
        ref = ReferenceStyleLoop(model, args.batch, shape, iterations=args.iterations, lr_p=0.01,
                                 copy_per_iteration=per_iter)
        variants[label] = (lambda r=ref: r(x, y, idx))
    return variants


def time_variants(args, dev, variants: dict) -> None:
    for fn in variants.values():  # warm-up
        for _ in range(2):
            fn()
    sync(dev)
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    times = {k: [] for k in variants}
    for _ in range(args.repeats):
        for k, fn in variants.items():
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            sync(dev)
            times[k].append((time.perf_counter() - t0) / args.steps * 1e3)
    load1 = os.getloadavg() if hasattr(os, "getloadavg") else None

    def per_repeat(a, b):
        return [u / v for u, v in zip(times[a], times[b])]

    def ratio(a, b):  # median over repeats of the per-repeat ratio
        return statistics.median(per_repeat(a, b))

    def spread(r):  # quartiles of the per-repeat ratios: how much other load on the machine moved them
        if len(r) < 4:
            return float("nan"), float("nan")
        q = statistics.quantiles(r, n=4)
        return q[0], q[2]

    n = args.iterations
    print(f"LeNet-5, batch {args.batch}, 1x28x28 random inputs, device {dev}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, n = {n} crafting iterations (Adam lr 0.01, no early stop), "
          f"{args.repeats} interleaved repeats x {args.steps} batches"
          + (", denormals flushed" if args.flush_denormal else ""))
    if load0 is not None:
        print(f"load average before/after timing: {load0[0]:.2f} / {load1[0]:.2f}")
    print(f"{'variant':42s} {'ms/batch median':>16s} {'ms/batch min':>13s} {'x SGD step':>11s}")
    for k, ts in times.items():
        print(f"{k:42s} {statistics.median(ts):16.2f} {min(ts):13.2f} {ratio(k, 'sgd'):11.2f}")
    craft = [(o - s) / g for o, s, g in zip(times["own"], times["sam"], times["sgd"])]
    ref, ref_it = "reference-style loop", "reference-style loop, copy per iteration"
    rows = [
        ("own (SAM step + crafting) / SGD step", per_repeat("own", "sgd")),
        (f"  = equivalent backprops per batch (report: 2+n = {2 + n})", per_repeat("own", "sgd")),
        ("crafting alone: (own - SAM) / SGD step", craft),
        ("  per crafting iteration", [c / n for c in craft]),
        ("SAM step / SGD step", per_repeat("sam", "sgd")),
        ("reference-style loop / own", per_repeat(ref, "own")),
        ("reference-style loop / SGD step (its backprops)", per_repeat(ref, "sgd")),
        ("reference-style loop, copy per iteration / own", per_repeat(ref_it, "own")),
    ]
    print()
    print(f"{'ratio (per repeat)':52s} {'median':>8s} {'q25':>7s} {'q75':>7s}")
    for label, r in rows:
        lo, hi = spread(r)
        print(f"{label:52s} {statistics.median(r):8.2f} {lo:7.2f} {hi:7.2f}")


# ------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True) (CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    dev = resolve_device(args.device)
    variants = build_variants(args, dev)
    time_variants(args, dev, variants)


if __name__ == "__main__":
    main()
