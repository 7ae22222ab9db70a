"""Tests of the dataset layer (workbench.data): readers, splits, indices, BatchLoader."""
from __future__ import annotations

import gzip
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.config import DATASET_CHOICES, DataConfig
from workbench.data import (
    DATASET_REGISTRY,
    BatchLoader,
    DataBundle,
    IndexedTensorDataset,
    augment_batch,
    load_data,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _all_indices(b: DataBundle) -> torch.Tensor:
    return torch.cat([b.train.index, b.val.index, b.test.index])


def _digits_source():
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.asarray(d.images, dtype=np.float32) / 16.0, np.asarray(d.target)


# ------------------------------------------------------------------ registry
def test_registry_matches_choices_and_core_imports():
    assert tuple(DATASET_REGISTRY) == DATASET_CHOICES
    # in a fresh interpreter: other tests of the session may import the UI packages
    import subprocess

    code = ("import sys, workbench.data; "
            "bad=[m for m in sys.modules if m.split('.')[0] in ('ipywidgets','plotly','IPython')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_poison_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="somewhere.pt"):
        load_data(DataConfig(name="digits", poison=str(tmp_path / "somewhere.pt")))


def test_poison_is_added_by_index_to_the_training_split_only(tmp_path):
    from workbench.data.poison import Poison, data_fingerprint, load_poison, save_poison

    cfg = DataConfig(name="digits", split="pooled")
    clean = load_data(cfg)
    k = 50
    idx = clean.train.index[torch.randperm(len(clean.train), generator=torch.Generator().manual_seed(0))[:k]]
    delta = torch.randn((k, *clean.input_shape), generator=torch.Generator().manual_seed(1))
    save_poison(Poison(delta, idx, {"kind": "test", "data": data_fingerprint(cfg)}), tmp_path / "p.pt")
    again = load_poison(tmp_path / "p.pt")
    assert torch.equal(again.delta, delta) and torch.equal(again.index, idx)
    b = load_data(DataConfig(name="digits", split="pooled", poison=str(tmp_path / "p.pt")))
    assert torch.equal(b.clean_train.x, clean.train.x) and torch.equal(b.test.x, clean.test.x)
    pos = {int(i): n for n, i in enumerate(b.train.index)}
    for j in range(k):
        n = pos[int(idx[j])]
        assert torch.allclose(b.train.x[n], clean.train.x[n] + delta[j])
    untouched = [n for i, n in pos.items() if i not in set(idx.tolist())]
    assert torch.equal(b.train.x[untouched], clean.train.x[untouched])
    with pytest.raises(ValueError, match="split_seed"):
        load_data(DataConfig(name="digits", split="pooled", split_seed=5, poison=str(tmp_path / "p.pt")))


# -------------------------------------------------------------------- digits
def test_digits_shapes_split_sizes_and_stratification():
    cfg = DataConfig(name="digits", val_fraction=0.1, test_fraction=0.2, normalize=False)
    b = load_data(cfg)
    assert b.input_shape == (1, 8, 8) and b.num_classes == 10
    assert b.class_names == [str(c) for c in range(10)]
    assert b.mean is None and b.std is None
    n = len(b.train) + len(b.val) + len(b.test)
    assert n == 1797
    assert len(b.test) == round(0.2 * 1797) and len(b.val) == round(0.1 * 1797)
    assert b.info["split_sizes"] == {"train": len(b.train), "val": len(b.val), "test": len(b.test)}
    assert b.info["split"] == "pooled"  # digits have no official test set
    for ds in (b.train, b.val, b.test):
        assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64 and ds.index.dtype == torch.int64
        assert ds.x.shape[1:] == (1, 8, 8)
        assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
        x, y, i = ds[0]
        assert x.shape == (1, 8, 8) and y.dim() == 0 and i.dim() == 0
    # stratified: class proportions of each split follow the pool's
    _, ys = _digits_source()
    pool = np.bincount(ys, minlength=10) / len(ys)
    for ds in (b.train, b.val, b.test):
        frac = np.bincount(ds.y.numpy(), minlength=10) / len(ds)
        assert np.abs(frac - pool).max() < 0.02
    # indices unique across splits and cover the pool
    idx = _all_indices(b)
    assert len(torch.unique(idx)) == 1797 and idx.min() == 0 and idx.max() == 1796


def test_digits_indices_point_to_source_examples():
    xs, ys = _digits_source()
    raw = load_data(DataConfig(name="digits", normalize=False))
    for ds in (raw.train, raw.val, raw.test):
        i = ds.index.numpy()
        assert torch.equal(ds.x[:, 0], torch.from_numpy(xs[i]))
        assert np.array_equal(ds.y.numpy(), ys[i])
    # the same after normalisation with the reported training statistics
    b = load_data(DataConfig(name="digits", normalize=True))
    mean, std = b.mean[0], b.std[0]
    i = b.test.index.numpy()
    assert torch.allclose(b.test.x[:, 0], (torch.from_numpy(xs[i]) - mean) / std, atol=1e-5)
    tr = b.train.x
    assert abs(float(tr.mean())) < 1e-4 and abs(float(tr.std(unbiased=False)) - 1) < 1e-3
    assert abs(mean - float(torch.from_numpy(xs[b.train.index.numpy()]).mean())) < 1e-5


def test_digits_split_seed_reproducible_and_distinct():
    a = load_data(DataConfig(name="digits", split_seed=3))
    b = load_data(DataConfig(name="digits", split_seed=3))
    c = load_data(DataConfig(name="digits", split_seed=4))
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(a, s).index, getattr(b, s).index)
        assert torch.equal(getattr(a, s).x, getattr(b, s).x)
    assert not torch.equal(a.test.index, c.test.index)
    assert a.info["split_seed"] == 3


def test_digits_binary_subset():
    _, ys = _digits_source()
    b = load_data(DataConfig(name="digits", classes=[0, 8]))
    assert b.num_classes == 2 and b.class_names == ["0", "8"]
    assert b.info["classes"] == [0, 8]
    for ds in (b.train, b.val, b.test):
        assert set(ds.y.unique().tolist()) == {0, 1}
        orig = ys[ds.index.numpy()]
        assert set(orig.tolist()) == {0, 8}
        assert np.array_equal(ds.y.numpy(), (orig == 8).astype(np.int64))
    assert len(_all_indices(b)) == int(np.isin(ys, [0, 8]).sum())
    # the given order defines the new labels
    r = load_data(DataConfig(name="digits", classes=[8, 0]))
    assert np.array_equal(r.train.y.numpy(), (ys[r.train.index.numpy()] == 0).astype(np.int64))


def test_digits_unknown_class_and_max_train_and_resize():
    with pytest.raises(ValueError, match=r"data\.classes.*available labels"):
        load_data(DataConfig(name="digits", classes=[0, 12]))
    full = load_data(DataConfig(name="digits"))
    small = load_data(DataConfig(name="digits", max_train=200))
    assert len(small.train) == 200
    assert set(small.train.index.tolist()) <= set(full.train.index.tolist())
    assert torch.equal(small.test.index, full.test.index) and torch.equal(small.val.index, full.val.index)
    assert (np.bincount(small.train.y.numpy(), minlength=10) >= 18).all()  # stratified
    r = load_data(DataConfig(name="digits", resize=28, normalize=False))
    assert r.input_shape == (1, 28, 28) and r.train.x.shape[1:] == (1, 28, 28)
    assert 0.0 <= r.train.x.min() and r.train.x.max() <= 1.0


# -------------------------------------------------------------- MNIST (IDX)
def _idx_images(imgs: np.ndarray) -> bytes:
    n, h, w = imgs.shape
    return struct.pack(">IIII", 2051, n, h, w) + imgs.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def _write_mnist(folder: Path, n_train: int, n_test: int, *, gz: bool, train: bool = True, seed: int = 0):
    """Write small files in the real IDX format (big-endian header, magic 2051/2049)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    parts = ([("train", n_train)] if train else []) + [("t10k", n_test)]
    for prefix, n in parts:
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        for stem, payload in ((f"{prefix}-images-idx3-ubyte", _idx_images(imgs)),
                              (f"{prefix}-labels-idx1-ubyte", _idx_labels(labels))):
            if gz:
                (folder / (stem + ".gz")).write_bytes(gzip.compress(payload))
            else:
                (folder / stem).write_bytes(payload)
        out[prefix] = (imgs, labels)
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_official_and_pooled(tmp_path, gz):
    src = _write_mnist(tmp_path / "MNIST" / "raw", 100, 40, gz=gz)
    b = load_data(DataConfig(name="mnist", root=str(tmp_path), split="official", val_fraction=0.2,
                             normalize=False))
    assert b.input_shape == (1, 28, 28) and b.num_classes == 10
    assert (len(b.train), len(b.val), len(b.test)) == (80, 20, 40)
    assert b.info["split"] == "official" and b.info["source_sizes"] == {"train": 100, "test": 40}
    assert len(b.info["files"]) == 4
    # official test = the t10k files, indexed after the 100 training examples
    assert torch.equal(b.test.index, torch.arange(100, 140))
    imgs = np.concatenate([src["train"][0], src["t10k"][0]])
    labels = np.concatenate([src["train"][1], src["t10k"][1]])
    for ds in (b.train, b.val, b.test):
        i = ds.index.numpy()
        assert torch.equal(ds.x[:, 0], torch.from_numpy(imgs[i]).float() / 255)
        assert np.array_equal(ds.y.numpy(), labels[i])
    assert b.train.index.max() < 100 and b.val.index.max() < 100

    p = load_data(DataConfig(name="mnist", root=str(tmp_path), split="pooled", val_fraction=0.1,
                             test_fraction=0.2))
    assert (len(p.train), len(p.val), len(p.test)) == (98, 14, 28)
    assert p.info["split"] == "pooled"
    assert sorted(_all_indices(p).tolist()) == list(range(140))
    assert len(p.mean) == 1 and len(p.std) == 1


def test_mnist_pooled_with_test_files_only_and_other_layouts(tmp_path):
    src = _write_mnist(tmp_path / "mnist", 0, 50, gz=True, train=False)  # <root>/mnist layout
    # 5 validation examples cannot hold 10 classes: seeded unstratified fallback, with a warning
    with pytest.warns(UserWarning, match="cannot stratify"):
        p = load_data(DataConfig(name="mnist", root=str(tmp_path), split="pooled", normalize=False))
    assert p.info["stratified"] is False and p.info["source_sizes"] == {"test": 50}
    assert sorted(_all_indices(p).tolist()) == list(range(50))
    i = p.train.index.numpy()
    assert torch.equal(p.train.x[:, 0], torch.from_numpy(src["t10k"][0][i]).float() / 255)
    with pytest.raises(FileNotFoundError) as e:
        load_data(DataConfig(name="mnist", root=str(tmp_path), split="official"))
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and "split=pooled" in msg and str(tmp_path / "MNIST" / "raw") in msg


def test_fashion_mnist_layout(tmp_path):
    _write_mnist(tmp_path / "FashionMNIST" / "raw", 100, 20, gz=True)
    b = load_data(DataConfig(name="fashion-mnist", root=str(tmp_path), split="official"))
    assert (len(b.train), len(b.val), len(b.test)) == (90, 10, 20)
    assert b.info["stratified"] is True
    assert b.class_names[0] == "T-shirt/top" and b.num_classes == 10
    # MNIST files are not picked up for fashion-mnist's dedicated folder and vice versa
    with pytest.raises(FileNotFoundError):
        load_data(DataConfig(name="mnist", root=str(tmp_path), split="official"))


def test_missing_dataset_offline_message(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as e:
        load_data(DataConfig(name="mnist", root=str(tmp_path), split="pooled"))
    msg = str(e.value)
    assert str(tmp_path / "MNIST" / "raw") in msg and "download" in msg
    assert "t10k-images-idx3-ubyte" in msg

    # download=True while offline: torchvision's error is reported, still a FileNotFoundError
    from urllib.error import URLError

    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz", URLError("no network"))

    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(FileNotFoundError, match="Downloading failed"):
        load_data(DataConfig(name="mnist", root=str(tmp_path), download=True))

    with pytest.raises(FileNotFoundError) as e:
        load_data(DataConfig(name="cifar10", root=str(tmp_path)))
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "download" in msg


# ------------------------------------------------------------------- CIFAR
@pytest.fixture
def no_md5(monkeypatch):
    # torchvision checks every CIFAR file against the md5 of the real release,
    # which rejects the tiny stand-ins written here: let the check pass.
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)


def _pickle(path: Path, obj) -> None:
    # The real files were pickled by Python 2; torchvision loads them with
    # encoding="latin1", which turns their keys into str: write str keys.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _write_cifar10(root: Path, per_batch: int = 20, n_test: int = 30):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    datas, labels = [], []
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        lab = [int(v) for v in rng.permutation(np.arange(n) % 10)]
        _pickle(folder / name, {"batch_label": f"{name} of 6", "labels": lab, "data": data,
                                "filenames": [f"img_{k}.png" for k in range(n)]})
        datas.append(data)
        labels += lab
    _pickle(folder / "batches.meta", {"num_cases_per_batch": per_batch, "num_vis": 3072,
                                      "label_names": ["airplane", "automobile", "bird", "cat", "deer",
                                                      "dog", "frog", "horse", "ship", "truck"]})
    return np.concatenate(datas), np.array(labels)


def test_cifar10_files(tmp_path, no_md5):
    data, labels = _write_cifar10(tmp_path)
    b = load_data(DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.2, normalize=False))
    assert b.input_shape == (3, 32, 32) and b.num_classes == 10
    assert b.class_names[:2] == ["airplane", "automobile"]
    assert (len(b.train), len(b.val), len(b.test)) == (80, 20, 30)
    assert torch.equal(b.test.index, torch.arange(100, 130))
    assert b.augment is True and b.info["augment"] is True  # default on for CIFAR
    for ds in (b.train, b.test):
        i = ds.index.numpy()
        # the on-disk layout: 1024 red, then green, then blue values, row-major
        expect = torch.from_numpy(data[i].reshape(-1, 3, 32, 32)).float() / 255
        assert torch.equal(ds.x, expect)
        assert np.array_equal(ds.y.numpy(), labels[i])
    n = load_data(DataConfig(name="cifar10", root=str(tmp_path), classes=[3, 5], augment=False))
    assert n.class_names == ["cat", "dog"] and len(n.mean) == 3 and n.augment is False
    pooled = load_data(DataConfig(name="cifar10", root=str(tmp_path), split="pooled"))
    assert sorted(_all_indices(pooled).tolist()) == list(range(130))


def test_cifar100_files(tmp_path, no_md5):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    fine_names = [f"class_{k:03d}" for k in range(100)]
    written = {}
    for name, n in (("train", 400), ("test", 100)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in np.arange(n) % 100]
        _pickle(folder / name, {"filenames": [f"{k}.png" for k in range(n)], "batch_label": name,
                                "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": data})
        written[name] = (data, np.array(fine))
    _pickle(folder / "meta", {"fine_label_names": fine_names,
                              "coarse_label_names": [f"super_{k}" for k in range(20)]})
    b = load_data(DataConfig(name="cifar100", root=str(tmp_path), val_fraction=0.25, normalize=False))
    assert b.num_classes == 100 and b.class_names == fine_names and b.input_shape == (3, 32, 32)
    assert (len(b.train), len(b.val), len(b.test)) == (300, 100, 100)
    i = b.test.index.numpy() - 400
    assert torch.equal(b.test.x, torch.from_numpy(written["test"][0][i].reshape(-1, 3, 32, 32)).float() / 255)
    assert np.array_equal(b.test.y.numpy(), written["test"][1][i])


# -------------------------------------------------------------- real MNIST
def test_real_mnist_test_files():
    if not (SHARED_DATA / "mnist" / "raw" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST test files not found under {SHARED_DATA} (../shared/data next to the repo)")
    b = load_data(DataConfig(name="mnist", root=str(SHARED_DATA), split="pooled", normalize=False))
    assert len(b.train) + len(b.val) + len(b.test) == 10_000
    assert b.num_classes == 10 and b.input_shape == (1, 28, 28)
    assert sorted(_all_indices(b).unique().tolist()) == list(range(10_000))
    x = b.train.x
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert 0.1 < float(x.mean()) < 0.15  # MNIST's mean pixel is about 0.13
    assert set(b.test.y.unique().tolist()) == set(range(10))
    with pytest.raises(FileNotFoundError) as e:
        load_data(DataConfig(name="mnist", root=str(SHARED_DATA), split="official"))
    assert "train-images-idx3-ubyte" in str(e.value) and "download" in str(e.value)


# --------------------------------------------------------------------- toys
@pytest.mark.parametrize("name", ["gaussians-2d", "moons"])
def test_toy_datasets(name):
    b = load_data(DataConfig(name=name, n_samples=300, noise=0.5, normalize=False))
    assert b.input_shape == (2,) and b.num_classes == 2
    assert len(b.train) + len(b.val) + len(b.test) == 300
    for ds in (b.train, b.val, b.test):
        assert ds.x.shape[1:] == (2,) and set(ds.y.unique().tolist()) == {0, 1}
    c = load_data(DataConfig(name=name, n_samples=300, noise=0.5, normalize=False))
    assert torch.equal(b.train.x, c.train.x)
    if name == "gaussians-2d":
        x, y = torch.cat([b.train.x, b.val.x, b.test.x]), torch.cat([b.train.y, b.val.y, b.test.y])
        assert abs(float(x[y == 0, 0].mean()) + 2) < 0.2 and abs(float(x[y == 1, 0].mean()) - 2) < 0.2
        assert abs(float(x[y == 0].std(dim=0).mean()) - 0.5) < 0.1
    with pytest.raises(ValueError, match="data.resize"):
        load_data(DataConfig(name=name, resize=8))
    n = load_data(DataConfig(name=name))
    assert len(n.mean) == 2 and n.augment is False


# --------------------------------------------------------------- BatchLoader
def _toy_dataset(n=53, shape=(1, 4, 4)):
    x = torch.arange(n * int(np.prod(shape)), dtype=torch.float32).reshape(n, *shape)
    return IndexedTensorDataset(x, torch.arange(n) % 3, torch.arange(n) + 1000)


def _collect(batches):
    return [tuple(t.clone() for t in b) for b in batches]


def test_batchloader_epoch_coverage_and_determinism():
    ds = _toy_dataset()
    loader = BatchLoader(ds, 8, shuffle=True, seed=5, device="cpu")
    assert len(loader) == 7
    loader.set_epoch(0)
    e0 = _collect(loader)
    assert sorted(torch.cat([b[2] for b in e0]).tolist()) == list(range(1000, 1053))
    for x, y, i in e0:  # x, y, index stay aligned
        assert torch.equal(y, (i - 1000) % 3) and torch.equal(x[:, 0, 0, 0], (i - 1000).float() * 16)
    again = BatchLoader(ds, 8, shuffle=True, seed=5, device="cpu")
    again.set_epoch(0)
    assert all(torch.equal(a[2], b[2]) for a, b in zip(e0, _collect(again)))
    loader.set_epoch(1)
    e1 = _collect(loader)
    assert not torch.equal(torch.cat([b[2] for b in e0]), torch.cat([b[2] for b in e1]))
    other = BatchLoader(ds, 8, shuffle=True, seed=6, device="cpu")
    assert not torch.equal(torch.cat([b[2] for b in _collect(other)]), torch.cat([b[2] for b in e0]))
    plain = BatchLoader(ds, 8, shuffle=False, seed=5, device="cpu")
    assert torch.equal(torch.cat([b[2] for b in plain]), ds.index)


def test_batchloader_iter_from_and_drop_last():
    ds = _toy_dataset(shape=(3, 8, 8))
    loader = BatchLoader(ds, 8, shuffle=True, seed=1, device="cpu", augment=True)
    loader.set_epoch(3)
    full = _collect(loader)
    for k in (0, 3, 6, 7):
        tail = _collect(loader.iter_from(k))
        assert len(tail) == len(full) - k
        for a, b in zip(tail, full[k:]):
            assert all(torch.equal(u, v) for u, v in zip(a, b))
    with pytest.raises(ValueError):
        loader.iter_from(8)
    dl = BatchLoader(ds, 8, shuffle=True, seed=1, device="cpu", drop_last=True)
    assert len(dl) == 6
    batches = _collect(dl)
    assert len(batches) == 6 and all(len(b[0]) == 8 for b in batches)
    assert len(set(torch.cat([b[2] for b in batches]).tolist())) == 48
    assert len(BatchLoader(ds, 100, shuffle=True, seed=1, device="cpu", drop_last=True)) == 0


@pytest.mark.parametrize("num_workers", [0, 1])
def test_batchloader_dataloader_path_matches_in_memory(num_workers):
    ds = _toy_dataset(n=37, shape=(3, 8, 8))
    kw = dict(shuffle=True, seed=9, device="cpu", augment=True, drop_last=False)
    mem = BatchLoader(ds, 6, in_memory=True, **kw)
    dl = BatchLoader(ds, 6, in_memory=False, num_workers=num_workers, **kw)
    for epoch in (0, 2):
        mem.set_epoch(epoch)
        dl.set_epoch(epoch)
        a, b = _collect(mem), _collect(dl)
        assert len(a) == len(b) == len(mem) == 7
        for u, v in zip(a, b):
            assert all(torch.equal(s, t) for s, t in zip(u, v))
    tail = _collect(dl.iter_from(4))
    assert all(torch.equal(s, t) for u, v in zip(tail, _collect(mem.iter_from(4))) for s, t in zip(u, v))


def test_augment_batch_crop_and_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = augment_batch(x, g)
    assert out.shape == x.shape and out.dtype == x.dtype and not torch.equal(out, x)
    # padding 0: each image is either itself or its mirror image, and both occur
    flips = augment_batch(x, torch.Generator().manual_seed(1), padding=0)
    same = [torch.equal(o, i) for o, i in zip(flips, x)]
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(flips, x)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)
    # every output is an 8x8 window of the zero-padded image, possibly mirrored
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    shifted = 0
    for o, p in zip(out, padded):
        windows = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(o, p[:, dy:dy + 8, dx:dx + 8]) or torch.equal(o, p[:, dy:dy + 8, dx:dx + 8].flip(-1))]
        assert windows
        shifted += (4, 4) not in windows
    assert shifted > 32
    # same generator state -> same augmentation; the input is not modified
    x0 = x.clone()
    a = augment_batch(x, torch.Generator().manual_seed(7))
    b = augment_batch(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and torch.equal(x, x0)
    with pytest.raises(ValueError):
        augment_batch(torch.rand(4, 2), g)


def test_dataset_to_and_bundle_loader_roundtrip():
    b = load_data(DataConfig(name="digits", classes=[1, 7]))
    moved = b.train.to("cpu")
    assert isinstance(moved, IndexedTensorDataset) and torch.equal(moved.x, b.train.x)
    loader = BatchLoader(b.train, 32, shuffle=True, seed=0, device="cpu", augment=True)
    seen = torch.cat([i for _, _, i in loader])
    assert sorted(seen.tolist()) == sorted(b.train.index.tolist())
    with pytest.raises(ValueError, match="augment"):
        BatchLoader(_toy_dataset(shape=(2,)), 4, shuffle=False, seed=0, device="cpu", augment=True)
