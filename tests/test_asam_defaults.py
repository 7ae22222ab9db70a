"""ASAM's defaults follow [Kwon 2021] (rho 0.5, eta 0.01) whenever the optimizer is ASAM; SAM keeps rho 0.05."""
from __future__ import annotations

import torch
from torch import nn

from workbench.config import OptimConfig, RunConfig
from workbench.optim import build_optimizer


def test_defaults_depend_on_the_optimizer():
    assert (OptimConfig().rho, OptimConfig().eta) == (0.05, 0.0)
    assert (OptimConfig(name="sam").rho, OptimConfig(name="sam").eta) == (0.05, 0.0)
    a = OptimConfig(name="asam")
    assert (a.rho, a.eta, a.adaptive) == (0.5, 0.01, True)
    assert (OptimConfig(name="sam", adaptive=True).rho, OptimConfig(name="sam", adaptive=True).eta) == (0.5, 0.01)
    # explicit values always win, also 0
    explicit = OptimConfig(name="asam", rho=2.0, eta=0.0)
    assert (explicit.rho, explicit.eta) == (2.0, 0.0)


def test_overrides_switching_to_asam_take_its_defaults_unless_set():
    c = RunConfig().with_overrides(["optim.name=asam"])
    assert (c.optim.rho, c.optim.eta) == (0.5, 0.01)
    assert RunConfig().with_overrides(["optim.name=asam", "optim.rho=1.0"]).optim.rho == 1.0
    assert RunConfig().with_overrides({"optim.name": "sam"}).optim.rho == 0.05
    tuned = RunConfig().with_overrides(["optim.rho=0.2"]).with_overrides(["optim.name=asam"])
    assert tuned.optim.rho == 0.2          # a value the user chose is never replaced
    # the saved config holds the resolved numbers and loads back to the same optimizer
    assert RunConfig.from_dict(c.to_dict()).optim == c.optim


def test_the_optimizer_built_from_the_defaults_uses_them():
    model = nn.Linear(3, 2)
    opt = build_optimizer(OptimConfig(name="asam", lr=0.1), model.parameters())
    group = opt.param_groups[0]
    assert group["rho"] == 0.5 and group["eta"] == 0.01 and group["adaptive"] is True
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    assert torch.isfinite(nn.functional.cross_entropy(model(x), y))
