"""Deterministic, resumable batch iteration and GPU-friendly augmentation.

:class:`BatchLoader` yields ``(x, y, index)`` batches on the training device.
The order (and the augmentation) of epoch ``e`` is a pure function of
``(seed, e)``: a run stopped after batch ``k - 1`` and resumed with
``set_epoch(e); iter_from(k)`` sees exactly the batches it would have seen.

Random streams (all CPU ``torch.Generator``, so results do not depend on the
device):

* permutation of epoch ``e``: seeded with ``mix(seed, e, 0)``;
* augmentation of batch ``b`` of epoch ``e``: seeded with ``mix(seed, e, 1, b)``
  (one generator per batch, so batch ``b`` does not depend on batches before it),

where ``mix`` is a SplitMix64 hash of the integers (:func:`stream_seed`).
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F

from .datasets import IndexedTensorDataset

__all__ = ["BatchLoader", "augment_batch", "stream_seed"]

_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def stream_seed(*values: int) -> int:
    """A 63-bit seed hashed (SplitMix64) from integers, e.g. ``stream_seed(seed, epoch, 0)``.

    Distinct tuples give unrelated seeds; negative integers are allowed.
    """
    h = 0x243F6A8885A308D3
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return h & ((1 << 63) - 1)


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return g


def augment_batch(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop (zero padding) + random horizontal flip, per example, vectorised.

    Each image is zero-padded by ``padding`` pixels on every side, cropped back
    to ``H x W`` at an offset drawn uniformly from ``0..2*padding`` (rows and
    columns independently), then mirrored left-right with probability 1/2 (as
    torchvision's ``RandomCrop(padding=4)`` followed by ``RandomHorizontalFlip``).
    The padding value is 0 in the space of ``x`` (after normalisation, 0 is the
    channel mean).

    Args:
        x: ``[N, C, H, W]`` batch on any device.
        generator: source of the offsets and flips; the random numbers are
            drawn on ``generator.device`` and then moved to ``x.device``, so a CPU
            generator gives the same augmentation on every device.
        padding: maximal shift in pixels (``0``: flips only).

    Returns:
        A new tensor with the shape, dtype and device of ``x``.

    Raises:
        ValueError: ``x`` is not 4-D or ``padding`` is negative.
    """
    if x.dim() != 4:
        raise ValueError(f"augment_batch needs images [N, C, H, W], got shape {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding={padding!r} is invalid: must be >= 0")
    n, _, h, w = x.shape
    gdev = generator.device
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gdev).to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gdev).to(x.device)
    flip = torch.randint(0, 2, (n,), generator=generator, device=gdev).to(x.device).bool()
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = oy[:, None] + ar_h[None, :]  # [N, H]
    cols = ox[:, None] + torch.where(flip[:, None], (w - 1 - ar_w)[None, :], ar_w[None, :])  # [N, W]
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # [N, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


class _FixedBatches(torch.utils.data.Sampler):
    """Sampler yielding precomputed index batches (each a ``LongTensor``)."""

    def __init__(self, batches: list[torch.Tensor]):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _identity(batch):
    return batch


class BatchLoader:
    """Iterable of ``(x, y, index)`` batches on ``device``, reproducible per ``(seed, epoch)``.

    Args:
        dataset: the split to iterate.
        batch_size: examples per batch (the last batch may be smaller unless
            ``drop_last``).
        shuffle: permute the examples each epoch (otherwise dataset order).
        seed: seed of the permutation and augmentation streams.
        device: where the batches are delivered (``"cpu"``, ``"cuda"``, a ``torch.device``).
        augment: apply :func:`augment_batch` (crop + flip) to each batch, on
            ``device`` after the transfer.
        drop_last: drop the final incomplete batch.
        in_memory: move the whole dataset to ``device`` once (at construction)
            and slice batches from it. ``False`` uses a
            ``torch.utils.data.DataLoader`` (same batches; ``pin_memory`` when
            ``device`` is CUDA) with ``num_workers`` workers.
        num_workers: DataLoader workers (``in_memory=False`` only).

    Call :meth:`set_epoch` before each epoch; without it every pass repeats
    epoch 0's order. Iterating yields from batch 0; :meth:`iter_from` resumes
    mid-epoch.

    Raises:
        ValueError: non-positive ``batch_size``, negative ``num_workers``, or
            ``augment`` on non-image data.
    """

    def __init__(self, dataset: IndexedTensorDataset, batch_size: int, *, shuffle: bool, seed: int, device,
                 augment: bool = False, drop_last: bool = False, in_memory: bool = True, num_workers: int = 0):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size={batch_size!r} is invalid: must be a positive integer")
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers!r} is invalid: must be >= 0")
        if augment and dataset.x.dim() != 4:
            raise ValueError(f"augment=True needs image data [N, C, H, W], got x of shape {tuple(dataset.x.shape)}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.augment = bool(augment)
        self.drop_last = bool(drop_last)
        self.in_memory = bool(in_memory)
        self.num_workers = int(num_workers)
        self.epoch = 0
        self._data = dataset.to(self.device) if self.in_memory else None

    # ------------------------------------------------------------ schedule
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def permutation(self) -> torch.Tensor:
        """The CPU ``LongTensor`` order of the current epoch (``arange`` when not shuffling)."""
        n = len(self.dataset)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=_generator(stream_seed(self.seed, self.epoch, 0)))

    def batch_indices(self, start_batch: int = 0) -> list[torch.Tensor]:
        """Positions (into ``dataset``) of batches ``start_batch..`` of the current epoch."""
        perm = self.permutation()
        bs = self.batch_size
        return [perm[b * bs:(b + 1) * bs] for b in range(start_batch, len(self))]

    def augmentation_generator(self, batch: int) -> torch.Generator:
        """CPU generator of the augmentation of batch ``batch`` of the current epoch."""
        return _generator(stream_seed(self.seed, self.epoch, 1, batch))

    # ------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield batches ``start_batch, start_batch + 1, ...`` of the current epoch.

        Raises:
            ValueError: ``start_batch`` outside ``0..len(self)``.
        """
        if isinstance(start_batch, bool) or not isinstance(start_batch, int) or not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch={start_batch!r} is invalid: must lie in 0..{len(self)}")
        batches = self.batch_indices(start_batch)
        if self.in_memory:
            return self._iter_memory(batches, start_batch)
        return self._iter_dataloader(batches, start_batch)

    def _finish(self, b: int, x: torch.Tensor, y: torch.Tensor, i: torch.Tensor):
        if self.augment:
            x = augment_batch(x, self.augmentation_generator(b))
        return x, y, i

    def _iter_memory(self, batches, start_batch):
        data = self._data
        for b, idx in enumerate(batches, start=start_batch):
            idx = idx.to(self.device)
            yield self._finish(b, data.x[idx], data.y[idx], data.index[idx])

    def _iter_dataloader(self, batches, start_batch):
        on_cpu = self.dataset.x.device.type == "cpu"
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=None, sampler=_FixedBatches(batches), collate_fn=_identity,
            num_workers=self.num_workers if on_cpu else 0,
            pin_memory=on_cpu and self.device.type == "cuda",
        )
        non_blocking = self.device.type == "cuda"
        for b, (x, y, i) in enumerate(loader, start=start_batch):
            yield self._finish(b, x.to(self.device, non_blocking=non_blocking),
                               y.to(self.device, non_blocking=non_blocking),
                               i.to(self.device, non_blocking=non_blocking))

    def __repr__(self) -> str:
        return (f"BatchLoader(n={len(self.dataset)}, batch_size={self.batch_size}, batches={len(self)}, "
                f"shuffle={self.shuffle}, augment={self.augment}, device={self.device}, "
                f"in_memory={self.in_memory}, epoch={self.epoch})")
