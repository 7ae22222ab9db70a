"""Dataset layer: loading, splitting, preprocessing and batching.

* :func:`load_data` reads a :class:`~workbench.config.DataConfig` into a
  :class:`DataBundle` of train/val/test :class:`IndexedTensorDataset` splits
  (``float32`` inputs, ``int64`` labels, ``int64`` stable source indices).
* :data:`DATASET_REGISTRY` maps every name of ``DATASET_CHOICES`` to its reader.
* :class:`BatchLoader` yields ``(x, y, index)`` batches reproducibly per
  ``(seed, epoch)``, resumable mid-epoch; :func:`augment_batch` is the
  vectorised crop + flip it applies.

Part of the core: imports neither ``ipywidgets``, ``plotly`` nor ``IPython``.
"""
from .datasets import DATASET_REGISTRY, DataBundle, IndexedTensorDataset, default_augment, load_data
from .loader import BatchLoader, augment_batch, stream_seed
from .sources import RawDataset, resolve_root

__all__ = [
    "IndexedTensorDataset",
    "DataBundle",
    "load_data",
    "DATASET_REGISTRY",
    "BatchLoader",
    "augment_batch",
    "default_augment",
    "stream_seed",
    "RawDataset",
    "resolve_root",
]
