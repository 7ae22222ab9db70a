"""Ready-made configurations shared by the quickstart notebook, ``workbench demo`` and the tests.

The quickstart compares SGD and SAM [Foret 2021, Eq. 2] with LeNet-5 on
scikit-learn's bundled 8x8 handwritten digits: 1,797 images, split 70/10/20
into train/validation/test with a fixed seed. Both runs share
data, initialisation (same seed) and hyperparameters; only the optimizer
differs. On a 2-core CPU each 30-epoch run takes a few seconds.
"""
from __future__ import annotations

from .config import RunConfig

__all__ = ["quickstart_config", "quickstart_configs"]


def quickstart_config(optimizer: str = "sgd", *, epochs: int = 30, root: str = "runs", seed: int = 0) -> RunConfig:
    """LeNet-5 on digits with ``optimizer`` (sgd, sam, asam, adam); SGD-style hyperparameters.

    Args:
        optimizer: ``sgd``, ``sam``, ``asam`` (rho 0.5) or ``adam`` (lr 1e-3).
        epochs: training epochs (positive).
        root: runs folder.
        seed: initialisation and batch-order seed.

    Raises:
        ValueError: an unknown optimizer or a non-positive ``epochs`` (from the config's validation).
    """
    ov = {
        "root": root, "data.name": "digits", "data.split": "pooled", "model.name": "lenet5", "optim.name": optimizer,
        "optim.lr": 0.05, "optim.momentum": 0.9, "optim.weight_decay": 5e-4, "optim.rho": 0.05,
        "train.epochs": int(epochs), "train.batch_size": 64, "train.seed": int(seed),
    }
    if optimizer == "asam":
        ov["optim.rho"] = 0.5
    if optimizer == "adam":
        ov["optim.lr"] = 1e-3
    return RunConfig().with_overrides(ov)


def quickstart_configs(*, epochs: int = 30, root: str = "runs", seed: int = 0,
                       optimizers=("sgd", "sam")) -> list[RunConfig]:
    """The quickstart comparison: one config per optimizer (default SGD and SAM); see :func:`quickstart_config`."""
    return [quickstart_config(o, epochs=epochs, root=root, seed=seed) for o in optimizers]
