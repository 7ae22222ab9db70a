"""Device selection and seeding (no UI imports)."""
from __future__ import annotations

import os
import random
import re

import numpy as np
import torch

__all__ = ["resolve_device", "seed_everything", "set_deterministic"]


_DEVICE_RE = re.compile(r"^(?:auto|cpu|mps|cuda(?::[0-9]+)?)$")


def resolve_device(spec: str | torch.device = "auto", name: str = "train.device") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; explicit names are checked.

    ``name`` is how the message calls the setting (``train.device`` in a config, ``--device`` on the command line).

    Raises:
        ValueError: ``spec`` is not ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, or the requested device is
            not available here (names what is). One line, no traceback detail from torch.
    """
    if isinstance(spec, torch.device):
        return spec
    if not isinstance(spec, str) or not _DEVICE_RE.match(spec):
        raise ValueError(f"{name}={spec!r} is invalid: choose 'auto', 'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...) "
                         f"or 'mps'")
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={spec!r} is invalid: CUDA is not available on this machine "
                         f"(use 'auto' or 'cpu')")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{name}={spec!r} is invalid: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{name}={spec!r} is invalid: MPS is not available on this machine")
    return dev


def set_deterministic(on: bool) -> None:
    """Deterministic algorithms and cuDNN (slower on GPU); ``False`` restores the defaults."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
