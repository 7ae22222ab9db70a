"""In-memory datasets with stable example indices, and :func:`load_data`.

:func:`load_data` turns a :class:`~workbench.config.DataConfig` into a
:class:`DataBundle` of three :class:`IndexedTensorDataset` splits. Steps, in
order:

1. read the raw pool (:mod:`workbench.data.sources`); every example's
   ``index`` is its position in the pool (official train files first, then
   official test files), fixed before anything else happens, so the same
   example has the same index across runs with different splits/subsets;
2. keep ``classes`` (relabelled 0..k-1 in the given order);
3. split, seeded and stratified (``sklearn.model_selection.train_test_split``
   with ``random_state=split_seed``); ``max_train`` subsamples the training
   split the same way;
4. convert to ``float32`` (pixels in [0, 1]), ``resize`` (bilinear), and
   ``normalize`` per channel with training-split statistics.

This module is part of the core: no ``ipywidgets``/``plotly``/``IPython``.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from workbench.config import DATASET_CHOICES, DataConfig

from .sources import SOURCE_READERS, RawDataset

__all__ = ["IndexedTensorDataset", "DataBundle", "load_data", "DATASET_REGISTRY", "default_augment"]

#: Dataset name -> reader ``fn(cfg: DataConfig) -> RawDataset`` (keys == ``DATASET_CHOICES``).
DATASET_REGISTRY = dict(SOURCE_READERS)
assert tuple(DATASET_REGISTRY) == DATASET_CHOICES, "workbench.data registry out of sync with config"

_IMAGE_DATASETS = ("digits", "mnist", "mnist-10k", "fashion-mnist", "cifar10", "cifar100")


class IndexedTensorDataset(torch.utils.data.Dataset):
    """A split held as three tensors; item ``i`` is ``(x[i], y[i], index[i])``.

    Attributes:
        x: ``float32 [N, *input_shape]`` inputs (images ``[N, C, H, W]``).
        y: ``int64 [N]`` labels in ``0..num_classes-1``.
        index: ``int64 [N]`` position of each example in the source pool
            (stable across splits and runs; see :func:`load_data`).

    ``dataset[i]`` also accepts a list / ``LongTensor`` of positions and then
    returns the batched tensors (used by :class:`~workbench.data.BatchLoader`).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor):
        if not (len(x) == len(y) == len(index)):
            raise ValueError(f"x, y and index must have the same length, got {len(x)}, {len(y)}, {len(index)}")
        if y.dim() != 1 or index.dim() != 1:
            raise ValueError(f"y and index must be 1-D, got shapes {tuple(y.shape)} and {tuple(index.shape)}")
        self.x = x if x.dtype.is_floating_point else x.float()
        self.y = y.long()
        self.index = index.long()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i], self.index[i]

    def to(self, device) -> "IndexedTensorDataset":
        """A new dataset with the tensors on ``device`` (tensors already there are shared)."""
        return IndexedTensorDataset(self.x.to(device), self.y.to(device), self.index.to(device))

    @property
    def device(self) -> torch.device:
        """Device of the inputs ``x``."""
        return self.x.device

    def __repr__(self) -> str:
        return f"IndexedTensorDataset(n={len(self)}, x={tuple(self.x.shape)}, device={self.x.device})"


@dataclass
class DataBundle:
    """The three splits of a dataset and what a model needs to know about them.

    Attributes:
        name: dataset name (``DataConfig.name``).
        train, val, test: the splits (``val``/``test`` may be empty, never ``None``).
        input_shape: shape of one input, e.g. ``(1, 28, 28)``, ``(3, 32, 32)``, ``(2,)``.
        num_classes: number of labels after class filtering.
        class_names: name of each label ``0..num_classes-1``.
        mean, std: per-channel (toy data: per-feature) statistics of the
            training split used for normalisation, on the [0, 1] pixel scale;
            ``None`` when ``normalize`` is off.
        info: provenance, JSON-serialisable: ``source``, ``files`` read,
            ``source_sizes``, ``pool_size``, ``split`` (effective), ``split_seed``,
            ``split_sizes``, ``classes`` (original labels kept, in new label
            order), ``stratified``, ``max_train``, ``resize``, ``normalize``, ``augment``.
        augment: whether training batches should be augmented (``DataConfig.augment``
            resolved: ``None`` means on for CIFAR only).
    """

    name: str
    train: IndexedTensorDataset
    val: IndexedTensorDataset
    test: IndexedTensorDataset
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str]
    mean: list[float] | None = None
    std: list[float] | None = None
    info: dict = field(default_factory=dict)
    augment: bool = False
    clean_train: IndexedTensorDataset | None = None

    def splits(self) -> dict[str, IndexedTensorDataset]:
        """``{"train", "val", "test"}`` → the split's dataset."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits().items())
        return (f"DataBundle({self.name!r}, {sizes}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes})")


def default_augment(name: str) -> bool:
    """Default of ``DataConfig.augment`` (``None``): on for CIFAR-10/100, off otherwise."""
    return name in ("cifar10", "cifar100")


# ----------------------------------------------------------------- splitting
def _split(positions: np.ndarray, labels: np.ndarray, n_second: int, seed: int, what: str,
           notes: dict) -> tuple[np.ndarray, np.ndarray]:
    """Split ``positions`` into (first, second) with ``len(second) == n_second``, stratified by ``labels``.

    Falls back to an unstratified (still seeded) split, with a warning, when
    the split is too small to stratify (fewer examples than classes, or a class
    with a single member).
    """
    from sklearn.model_selection import train_test_split

    if n_second <= 0:
        return positions, positions[:0]
    if n_second >= len(positions):
        raise ValueError(f"cannot hold out {n_second} of {len(positions)} examples for {what}: "
                         "lower data.val_fraction / data.test_fraction")
    try:
        first, second = train_test_split(positions, test_size=n_second, random_state=seed, shuffle=True,
                                         stratify=labels)
    except ValueError as e:
        warnings.warn(f"data split ({what}): cannot stratify ({e}); using an unstratified seeded split",
                      stacklevel=3)
        notes["stratified"] = False
        first, second = train_test_split(positions, test_size=n_second, random_state=seed, shuffle=True)
    return np.sort(first), np.sort(second)


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _resize(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Bilinear resize of ``[N, C, H, W]`` to ``size x size`` (antialiased when shrinking)."""
    if len(x) == 0:
        return x.new_zeros((0, x.shape[1], size, size))
    if tuple(x.shape[-2:]) == (size, size):
        return x
    antialias = size < x.shape[-2] or size < x.shape[-1]
    out = [F.interpolate(x[i:i + chunk], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=antialias) for i in range(0, len(x), chunk)]
    return torch.cat(out)


def _channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of ``[N, C, ...]``; a zero std becomes 1.

    Two passes over chunks: float32 partial sums (torch sums pairwise),
    accumulated in float64.
    """
    dims = [0] + list(range(2, x.dim()))
    count = len(x) * (x[0].numel() // x.shape[1])
    shape = (1, -1) + (1,) * (x.dim() - 2)
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for c in x.split(chunk):
        total += c.sum(dim=dims).double()
    mean = total / count
    sq = torch.zeros_like(total)
    m32 = mean.float().view(shape)
    for c in x.split(chunk):
        sq += (c - m32).square_().sum(dim=dims).double()
    std = (sq / count).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.float(), std.float()


def _normalize_(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """In place: ``(x - mean) / std`` per channel (dimension 1)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x.sub_(mean.view(shape)).div_(std.view(shape))


def load_data(cfg: DataConfig) -> DataBundle:
    """Read, filter, split and preprocess the dataset described by ``cfg``.

    Returns a :class:`DataBundle` whose splits hold ``float32`` inputs
    ``[N, *input_shape]`` (images: pixels on the [0, 1] scale, then resized and,
    if ``cfg.normalize``, standardised per channel with training-split
    mean/std), ``int64`` labels ``0..k-1`` and ``int64`` source indices.

    Splits:
        * ``split=official`` (MNIST, Fashion-MNIST, CIFAR): test = the official
          test files; validation = ``round(val_fraction * n_train_official)``
          examples held out of the official training files.
        * ``split=pooled``, and always for digits and the toy datasets: the
          whole pool is split into test (``round(test_fraction * N)``),
          validation (``round(val_fraction * N)``) and train (the rest).
        * ``max_train`` then keeps a subset of the training split.

        Every split is stratified by label and seeded by ``split_seed``; each
        split is sorted by source index.

    Indices: ``index`` is an example's position in the pool, i.e. in the
    concatenation of the files read (official train before official test),
    assigned before class filtering and splitting. Note that a pooled MNIST
    made of the t10k files alone numbers them 0..9999.

    Poison: with ``cfg.poison`` (a file written by
    :func:`workbench.data.poison.save_poison`) the training split's inputs get the
    poison's Δ added by dataset index (validation and test stay clean); the clean
    training split is kept as ``bundle.clean_train``.

    Raises:
        FileNotFoundError: dataset files missing (message: where it looked,
            what it expected, how to obtain them).
        ValueError: a label of ``cfg.classes`` does not occur in the dataset;
            ``resize``/``augment`` asked for a non-image dataset; a split would
            leave no training examples.
    """
    if cfg.poison:
        from .poison import apply_poison, load_poison

        clean = load_data(dataclasses.replace(cfg, poison=None))
        poison = load_poison(cfg.poison)
        train = apply_poison(clean.train, poison, data_cfg=cfg)
        meta = {k: v for k, v in poison.meta.items() if k in ("kind", "source_run", "norms", "created")}
        info = dict(clean.info, poison={"path": str(cfg.poison), **meta})
        return dataclasses.replace(clean, train=train, info=info, clean_train=clean.train)
    is_image = cfg.name in _IMAGE_DATASETS
    if not is_image and cfg.resize is not None:
        raise ValueError(f"data.resize={cfg.resize!r} is invalid: {cfg.name} is not an image dataset; use null")
    if not is_image and cfg.augment:
        raise ValueError(f"data.augment={cfg.augment!r} is invalid: crop/flip augmentation needs images, "
                         f"{cfg.name} is not an image dataset")

    raw: RawDataset = DATASET_REGISTRY[cfg.name](cfg)
    y_all = raw.y.numpy()
    pool_size = len(y_all)
    positions = np.arange(pool_size)

    # --- class filtering -------------------------------------------------
    present = sorted(int(c) for c in np.unique(y_all))
    if cfg.classes is not None:
        missing = [c for c in cfg.classes if c not in present]
        if missing:
            raise ValueError(f"data.classes={cfg.classes!r} is invalid: label(s) {missing} do not occur in "
                             f"{cfg.name}; available labels: {present}")
        kept = list(cfg.classes)
        positions = positions[np.isin(y_all, kept)]
    else:
        kept = present
    lut = np.full(max(present) + 1, -1, dtype=np.int64)
    lut[kept] = np.arange(len(kept))
    labels = lut[y_all]  # new label of every pool example (-1: dropped)
    class_names = [raw.class_names[c] if c < len(raw.class_names) else str(c) for c in kept]

    # --- splitting ---------------------------------------------------------
    notes = {"stratified": True}
    official = cfg.split == "official" and raw.n_official_train is not None
    if official:
        train_part = positions[positions < raw.n_official_train]
        test_pos = positions[positions >= raw.n_official_train]
        n_val = int(round(cfg.val_fraction * len(train_part)))
        train_pos, val_pos = _split(train_part, labels[train_part], n_val, cfg.split_seed, "validation", notes)
    else:
        n_test = int(round(cfg.test_fraction * len(positions)))
        n_val = int(round(cfg.val_fraction * len(positions)))
        rest, test_pos = _split(positions, labels[positions], n_test, cfg.split_seed, "test", notes)
        train_pos, val_pos = _split(rest, labels[rest], n_val, cfg.split_seed, "validation", notes)
    n_train_before = len(train_pos)
    if cfg.max_train is not None and cfg.max_train < len(train_pos):
        _, train_pos = _split(train_pos, labels[train_pos], cfg.max_train, cfg.split_seed, "max_train", notes)
    if len(train_pos) == 0:
        raise ValueError(f"{cfg.name}: the training split is empty (pool of {len(positions)} examples after "
                         "class filtering); lower data.val_fraction / data.test_fraction")

    # --- tensors ---------------------------------------------------------
    def build(pos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(pos.astype(np.int64))
        x = _to_float(raw.x[idx])
        if cfg.resize is not None:
            x = _resize(x, cfg.resize)
        return x, torch.from_numpy(labels[pos]), idx

    parts = {name: build(pos) for name, pos in (("train", train_pos), ("val", val_pos), ("test", test_pos))}
    mean = std = None
    if cfg.normalize:
        m, s = _channel_stats(parts["train"][0])
        parts = {k: (_normalize_(x, m, s), y, i) for k, (x, y, i) in parts.items()}
        mean, std = [float(v) for v in m], [float(v) for v in s]
    datasets = {k: IndexedTensorDataset(*v) for k, v in parts.items()}
    input_shape = tuple(int(d) for d in datasets["train"].x.shape[1:])
    augment = default_augment(cfg.name) if cfg.augment is None else bool(cfg.augment)

    info = dict(raw.info)
    info.update({
        "dataset": cfg.name,
        "pool_size": pool_size,
        "split": "official" if official else "pooled",
        "split_requested": cfg.split,
        "split_seed": cfg.split_seed,
        "val_fraction": cfg.val_fraction,
        "test_fraction": None if official else cfg.test_fraction,
        "split_sizes": {k: len(v) for k, v in datasets.items()},
        "train_size_before_max_train": n_train_before,
        "max_train": cfg.max_train,
        "classes": [int(c) for c in kept],
        "classes_filtered": cfg.classes is not None,
        "stratified": notes["stratified"],
        "resize": cfg.resize,
        "normalize": cfg.normalize,
        "augment": augment,
    })
    return DataBundle(
        name=cfg.name, train=datasets["train"], val=datasets["val"], test=datasets["test"],
        input_shape=input_shape, num_classes=len(kept), class_names=class_names,
        mean=mean, std=std, info=info, augment=augment,
    )
