"""Assertions shared by the analysis tests: a model is left exactly as it was."""
from __future__ import annotations

import torch
from torch import nn


def snapshot(model: nn.Module):
    """Values of every parameter and buffer, every module's mode, and each parameter's ``.grad`` object."""
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [m.training for m in model.modules()],
            [p.grad for p in model.parameters()])


def assert_unchanged(model: nn.Module, snap, what: str = "") -> None:
    """Parameters and buffers bitwise equal (names, dtypes, values), modes restored, ``.grad`` objects untouched."""
    state, modes, grads = snap
    now = model.state_dict()
    assert list(now) == list(state), f"{what}: state names changed"
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), f"{what}: {k} changed"
    assert [m.training for m in model.modules()] == modes, f"{what}: modes changed"
    assert all(p.grad is g for p, g in zip(model.parameters(), grads)), f"{what}: .grad changed"
