"""Readers that turn files on disk (or generators) into a raw example pool.

Each reader takes a :class:`~workbench.config.DataConfig` and returns a
:class:`RawDataset`: every example the reader could find, concatenated in
file order (official training files first, then official test files), with
integer labels and the class names. Splitting, class filtering, resizing and
normalisation happen later, in :func:`workbench.data.load_data`.

Readers:

* ``digits``: scikit-learn's bundled 8x8 digits (offline).
* ``mnist`` / ``fashion-mnist``: IDX files read with torchvision's readers.
* ``mnist-10k``: the 10,000 MNIST test images shipped inside the package (offline, SHA-256 checked).
* ``cifar10`` / ``cifar100``: torchvision's CIFAR classes (python pickles).
* ``gaussians-2d`` / ``moons``: toy 2-D problems generated from ``split_seed``.

Errors: a missing dataset raises :class:`FileNotFoundError` whose message
names the directories searched, the files expected and how to obtain them.
"""
from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from workbench.config import DataConfig
from workbench.runs.store import file_sha256

__all__ = [
    "RawDataset",
    "SOURCE_READERS",
    "resolve_root",
    "read_digits",
    "read_mnist",
    "read_fashion_mnist",
    "read_mnist10k",
    "MNIST10K_SHA256",
    "read_cifar10",
    "read_cifar100",
    "read_gaussians_2d",
    "read_moons",
]


@dataclass
class RawDataset:
    """Every example a reader found, before filtering and splitting.

    Attributes:
        x: ``uint8`` images ``[N, C, H, W]`` (pixel values 0..255, divided by
            255 later) or ``float32`` inputs already on their final scale
            (digits: ``[N, 1, 8, 8]`` in [0, 1]; toy data: ``[N, 2]``).
        y: ``int64`` labels ``[N]`` (original class labels).
        class_names: name of each original label (``class_names[y]``).
        n_official_train: the first ``n_official_train`` examples are the
            official training set and the rest the official test set; ``None``
            when the pool has no official train/test division.
        info: provenance (``source``, ``files`` read, ``source_sizes``).
    """

    x: torch.Tensor
    y: torch.Tensor
    class_names: list[str]
    n_official_train: int | None = None
    info: dict = field(default_factory=dict)


def resolve_root(cfg: DataConfig) -> Path:
    """The data root: ``cfg.root``, else ``$WORKBENCH_DATA``, else ``~/.cache/workbench/data``."""
    root = cfg.root or os.environ.get("WORKBENCH_DATA") or "~/.cache/workbench/data"
    return Path(root).expanduser()


# ----------------------------------------------------------------- digits
def read_digits(cfg: DataConfig) -> RawDataset:
    """scikit-learn's 8x8 digits: 1,797 images ``[N, 1, 8, 8]`` scaled to [0, 1] (values / 16)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(np.asarray(d.images, dtype=np.float32) / 16.0).unsqueeze(1).contiguous()
    y = torch.from_numpy(np.asarray(d.target, dtype=np.int64))
    return RawDataset(
        x=x, y=y, class_names=[str(c) for c in range(10)], n_official_train=None,
        info={"source": "sklearn.datasets.load_digits", "files": [], "source_sizes": {"pool": len(y)}},
    )


# ------------------------------------------------------------- MNIST (IDX)
_MNIST_SPECS = {
    "mnist": {
        "folder": "MNIST",
        "alt": "mnist",
        "cls": "MNIST",
        "class_names": [str(c) for c in range(10)],
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of http://yann.lecun.com/exdb/mnist/)",
    },
    "fashion-mnist": {
        "folder": "FashionMNIST",
        "alt": "fashion-mnist",
        "cls": "FashionMNIST",
        "class_names": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ "
               "(see https://github.com/zalandoresearch/fashion-mnist)",
    },
}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def mnist_search_dirs(name: str, root: Path) -> list[Path]:
    """Directories searched, in order, for the IDX files of ``mnist``/``fashion-mnist``.

    ``<root>/MNIST/raw`` (torchvision's layout; ``FashionMNIST/raw`` for
    fashion), ``<root>/mnist/raw``, ``<root>/mnist`` (``fashion-mnist`` for
    fashion), and for MNIST only also ``<root>/raw`` and ``<root>``.
    Fashion-MNIST uses the same file names as MNIST, so it is only read from
    its own folders: a root that points at MNIST files never yields them as
    Fashion-MNIST.
    """
    spec = _MNIST_SPECS[name]
    dirs = [root / spec["folder"] / "raw", root / spec["alt"] / "raw", root / spec["alt"]]
    if name == "mnist":
        dirs += [root / "raw", root]
    return dirs


def _find_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _find_pair(dirs: list[Path], part: str) -> tuple[Path, Path] | None:
    """First directory holding both the images and labels file of ``part`` (plain or ``.gz``)."""
    img_stem, lab_stem = _IDX_FILES[part]
    for d in dirs:
        img, lab = _find_file(d, img_stem), _find_file(d, lab_stem)
        if img is not None and lab is not None:
            return img, lab
    return None


def _read_idx(path: Path, reader: Callable[[str], torch.Tensor], tmpdir: str) -> torch.Tensor:
    """Read an IDX file with a torchvision reader, gunzipping ``.gz`` into ``tmpdir`` first.

    torchvision's readers need an uncompressed path, and the data root may be
    read-only, so compressed files are decompressed into a temporary folder
    that is deleted afterwards.
    """
    if path.suffix == ".gz":
        target = Path(tmpdir) / path.stem
        with gzip.open(path, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
        try:
            return reader(str(target))
        finally:
            target.unlink(missing_ok=True)
    return reader(str(path))


def _mnist_missing_message(name: str, root: Path, dirs: list[Path], parts: list[str], split: str,
                           found: list[str], download_error: BaseException | None) -> str:
    spec = _MNIST_SPECS[name]
    wanted = [f for p in parts for f in _IDX_FILES[p]]
    lines = [
        f"{name}: the {' and '.join(parts)} IDX files were not found "
        f"(data.root={str(root)!r}, data.split={split!r}).",
        "Directories searched, in order:",
        *[f"  - {d}" for d in dirs],
        "Files expected (plain or .gz): " + ", ".join(wanted),
    ]
    if found:
        lines.append("Found only: " + ", ".join(found)
                     + ("; use data.split=pooled to train on the files present" if split == "official" else ""))
    if download_error is not None:
        lines.append(f"Downloading failed: {type(download_error).__name__}: {download_error}")
    lines += [
        "How to obtain them: set data.download=true on a machine with network access "
        f"(torchvision.datasets.{spec['cls']} downloads into <root>/{spec['folder']}/raw/), "
        f"or copy the four files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz from {spec['url']} "
        f"into {root / spec['folder'] / 'raw'}/.",
    ]
    return "\n".join(lines)


def _read_mnist_like(name: str, cfg: DataConfig) -> RawDataset:
    """Shared reader of ``mnist`` and ``fashion-mnist`` (see :func:`read_mnist`)."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    spec = _MNIST_SPECS[name]
    root = resolve_root(cfg)
    dirs = mnist_search_dirs(name, root)

    def locate() -> dict[str, tuple[Path, Path] | None]:
        return {part: _find_pair(dirs, part) for part in ("train", "test")}

    pairs = locate()
    need_all = cfg.split == "official"
    missing = [p for p, v in pairs.items() if v is None] if need_all else (
        ["train", "test"] if all(v is None for v in pairs.values()) else [])
    download_error: BaseException | None = None
    if missing and cfg.download:
        import torchvision.datasets as tvd

        try:  # downloads all four files into <root>/<folder>/raw
            getattr(tvd, spec["cls"])(str(root), train=True, download=True)
        except Exception as e:  # offline: URLError / RuntimeError from every mirror
            download_error = e
        pairs = locate()
        missing = [p for p, v in pairs.items() if v is None] if need_all else (
            ["train", "test"] if all(v is None for v in pairs.values()) else [])
    if missing:
        found = [str(p) for v in pairs.values() if v is not None for p in v]
        raise FileNotFoundError(_mnist_missing_message(name, root, dirs, missing, cfg.split, found, download_error))

    xs, ys, files, sizes = [], [], [], {}
    with tempfile.TemporaryDirectory(prefix="workbench-idx-") as tmp:
        for part in ("train", "test"):
            if pairs[part] is None:
                continue
            img_path, lab_path = pairs[part]
            x = _read_idx(img_path, read_image_file, tmp)
            y = _read_idx(lab_path, read_label_file, tmp)
            if len(x) != len(y):
                raise ValueError(f"{name}: {img_path} holds {len(x)} images but {lab_path} holds {len(y)} labels")
            xs.append(x)
            ys.append(y)
            files += [str(img_path), str(lab_path)]
            sizes[part] = len(y)
    x = torch.cat(xs).unsqueeze(1).contiguous()  # uint8 [N, 1, H, W]
    y = torch.cat(ys).long()
    both = pairs["train"] is not None and pairs["test"] is not None
    return RawDataset(
        x=x, y=y, class_names=list(spec["class_names"]),
        n_official_train=sizes["train"] if both else None,
        info={"source": f"IDX files ({name})", "files": files, "source_sizes": sizes},
    )


def read_mnist(cfg: DataConfig) -> RawDataset:
    """MNIST from IDX files (``uint8 [N, 1, 28, 28]``), searched as :func:`mnist_search_dirs` says.

    ``split=official`` needs the train and the t10k files; ``pooled`` uses
    whatever pair is present (train first, then t10k). With ``download`` on and
    files missing, torchvision downloads them into ``<root>/MNIST/raw``.

    Raises:
        FileNotFoundError: files missing (and download off or failed).
    """
    return _read_mnist_like("mnist", cfg)


def read_fashion_mnist(cfg: DataConfig) -> RawDataset:
    """Fashion-MNIST, as :func:`read_mnist` but under ``FashionMNIST/raw`` / ``fashion-mnist``."""
    return _read_mnist_like("fashion-mnist", cfg)


# ------------------------------------------------------ mnist-10k (package)
#: SHA-256 of the two IDX files shipped in ``workbench/data/mnist10k/`` (the original MNIST t10k files).
MNIST10K_SHA256 = {
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


def mnist10k_dir() -> Path:
    """Folder of the shipped MNIST test-set files (package data ``workbench/data/mnist10k``)."""
    return Path(__file__).resolve().parent / "mnist10k"


def read_mnist10k(cfg: DataConfig, folder: Path | None = None) -> RawDataset:
    """The real MNIST test set shipped with the package: 10,000 images ``uint8 [N, 1, 28, 28]``, labels 0-9.

    Reads the original IDX files ``t10k-images-idx3-ubyte.gz`` / ``t10k-labels-idx1-ubyte.gz`` (1.65 MB,
    from http://yann.lecun.com/exdb/mnist/; MNIST by Yann LeCun, Corinna Cortes and Christopher J.C. Burges,
    CC BY-SA 3.0) with the same IDX reader as ``mnist``, after checking each file's SHA-256 against
    :data:`MNIST10K_SHA256`. Works offline; ``cfg.root``/``download`` are not used. The pool has no official
    train/test division, so :func:`workbench.data.load_data` always splits it (pooled, seeded, stratified:
    7,000 / 1,000 / 2,000 at the default fractions); indices are 0..9999 in file order.

    Args:
        cfg: the data config (only used for the record).
        folder: where the two files are (default :func:`mnist10k_dir`; tests point it elsewhere).

    Raises:
        FileNotFoundError: a file is missing (a broken installation).
        ValueError: a file's SHA-256 differs from the expected one (corrupted or replaced file).
    """
    from torchvision.datasets.mnist import read_image_file, read_label_file

    folder = mnist10k_dir() if folder is None else Path(folder)
    paths = {}
    for name, expected in MNIST10K_SHA256.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"mnist-10k: {path} is missing: the package data of workbench is incomplete; "
                                    "reinstall the package (pip install --force-reinstall .)")
        got = file_sha256(path)
        if got != expected:
            raise ValueError(f"mnist-10k: {path} has SHA-256 {got}, expected {expected}: the file is corrupted or "
                             "was replaced; reinstall the package")
        paths[name] = path
    names = list(MNIST10K_SHA256)
    with tempfile.TemporaryDirectory(prefix="workbench-idx-") as tmp:
        x = _read_idx(paths[names[0]], read_image_file, tmp)
        y = _read_idx(paths[names[1]], read_label_file, tmp)
    if len(x) != len(y):
        raise ValueError(f"mnist-10k: {len(x)} images but {len(y)} labels")
    return RawDataset(
        x=x.unsqueeze(1).contiguous(), y=y.long(), class_names=[str(c) for c in range(10)], n_official_train=None,
        info={"source": "MNIST test set shipped with workbench (IDX, SHA-256 checked)",
              "files": [str(paths[n]) for n in names], "source_sizes": {"pool": int(len(y))},
              "licence": "CC BY-SA 3.0; Yann LeCun, Corinna Cortes, Christopher J.C. Burges"},
    )


# ------------------------------------------------------------------ CIFAR
_CIFAR_SPECS = {
    "cifar10": {"cls": "CIFAR10", "folder": "cifar-10-batches-py",
                "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "files": "data_batch_1..5, test_batch, batches.meta"},
    "cifar100": {"cls": "CIFAR100", "folder": "cifar-100-python",
                 "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "files": "train, test, meta"},
}


def _read_cifar(name: str, cfg: DataConfig) -> RawDataset:
    import torchvision.datasets as tvd

    spec = _CIFAR_SPECS[name]
    root = resolve_root(cfg)
    candidates = [root, root / name]
    base = next((c for c in candidates if (c / spec["folder"]).is_dir()), root)
    cls = getattr(tvd, spec["cls"])
    parts = []
    try:
        for train in (True, False):
            parts.append(cls(str(base), train=train, download=cfg.download))
    except (RuntimeError, OSError) as e:
        raise FileNotFoundError(
            f"{name}: dataset not found or corrupted (torchvision said: {e}).\n"
            "Directories searched, in order:\n"
            + "".join(f"  - {c / spec['folder']}\n" for c in candidates)
            + f"Expected the folder {spec['folder']!r} (files {spec['files']}) under data.root={str(root)!r}.\n"
            f"How to obtain it: set data.download=true on a machine with network access, or download "
            f"{spec['url']} and extract it into {root}/ (it unpacks to {spec['folder']}/)."
        ) from e
    xs = [torch.from_numpy(np.ascontiguousarray(p.data)).permute(0, 3, 1, 2).contiguous() for p in parts]
    ys = [torch.as_tensor(np.asarray(p.targets, dtype=np.int64)) for p in parts]
    folder = base / spec["folder"]
    files = [str(folder / f) for f, _ in cls.train_list + cls.test_list] + [str(folder / cls.meta["filename"])]
    return RawDataset(
        x=torch.cat(xs), y=torch.cat(ys), class_names=list(parts[0].classes),
        n_official_train=len(ys[0]),
        info={"source": f"torchvision.datasets.{spec['cls']}", "files": files,
              "source_sizes": {"train": len(ys[0]), "test": len(ys[1])}},
    )


def read_cifar10(cfg: DataConfig) -> RawDataset:
    """CIFAR-10 via ``torchvision.datasets.CIFAR10`` (``uint8 [N, 3, 32, 32]``, 50,000 + 10,000).

    The folder ``cifar-10-batches-py`` is looked for under ``<root>``, then
    ``<root>/cifar10``. Both official parts are always read (torchvision
    checks all files), so ``pooled`` pools train + test.

    Raises:
        FileNotFoundError: folder missing or corrupted (and download off or failed).
    """
    return _read_cifar("cifar10", cfg)


def read_cifar100(cfg: DataConfig) -> RawDataset:
    """CIFAR-100 (fine labels) via ``torchvision.datasets.CIFAR100``; folder ``cifar-100-python``."""
    return _read_cifar("cifar100", cfg)


# ------------------------------------------------------------------- toys
def read_gaussians_2d(cfg: DataConfig) -> RawDataset:
    """Two isotropic Gaussian blobs in 2-D: ``float32 [n_samples, 2]``, labels 0/1.

    Class 0 is centred at (-2, 0), class 1 at (+2, 0); each has standard
    deviation ``cfg.noise`` in both coordinates, 1.0 when ``noise`` is None
    (so the Bayes error is ``Phi(-2 / noise)``: 2.3% at 1.0, 16% at 2.0).
    Class sizes are ``ceil(n/2)`` and ``floor(n/2)``; the points are shuffled and
    generated by ``sklearn.datasets.make_blobs`` with ``random_state=split_seed``.
    """
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=cfg.n_samples, centers=np.array([[-2.0, 0.0], [2.0, 0.0]]),
                      cluster_std=float(1.0 if cfg.noise is None else cfg.noise), shuffle=True,
                      random_state=cfg.split_seed)
    return RawDataset(
        x=torch.from_numpy(x.astype(np.float32)), y=torch.from_numpy(y.astype(np.int64)),
        class_names=["0", "1"], n_official_train=None,
        info={"source": "sklearn.datasets.make_blobs(centers=(-2,0),(2,0), cluster_std=noise)",
              "files": [], "source_sizes": {"pool": int(cfg.n_samples)}},
    )


def read_moons(cfg: DataConfig) -> RawDataset:
    """``sklearn.datasets.make_moons(n_samples, noise=noise, random_state=split_seed)``: ``float32 [N, 2]``.

    ``noise`` None means 0.2.
    """
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=cfg.n_samples, noise=float(0.2 if cfg.noise is None else cfg.noise),
                      random_state=cfg.split_seed)
    return RawDataset(
        x=torch.from_numpy(x.astype(np.float32)), y=torch.from_numpy(y.astype(np.int64)),
        class_names=["0", "1"], n_official_train=None,
        info={"source": "sklearn.datasets.make_moons", "files": [], "source_sizes": {"pool": int(cfg.n_samples)}},
    )


SOURCE_READERS: dict[str, Callable[[DataConfig], RawDataset]] = {
    "digits": read_digits,
    "mnist": read_mnist,
    "mnist-10k": read_mnist10k,
    "fashion-mnist": read_fashion_mnist,
    "cifar10": read_cifar10,
    "cifar100": read_cifar100,
    "gaussians-2d": read_gaussians_2d,
    "moons": read_moons,
}
