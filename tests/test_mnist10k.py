"""The shipped MNIST test set (dataset ``mnist-10k``): real 28x28 images offline, checked files, seeded split."""
from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.config import DataConfig, ModelConfig
from workbench.data import load_data
from workbench.data.sources import MNIST10K_SHA256, mnist10k_dir, read_mnist10k

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle():
    return load_data(DataConfig(name="mnist-10k", normalize=False))


def test_raw_pool_is_the_real_mnist_test_set():
    raw = read_mnist10k(DataConfig(name="mnist-10k"))
    assert raw.x.shape == (10000, 1, 28, 28) and raw.x.dtype == torch.uint8
    # the published class counts of the MNIST test set
    assert np.bincount(raw.y.numpy()).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # the header of the original file: the first test digit is a 7, the second a 2
    assert raw.y[:3].tolist() == [7, 2, 1]
    assert "CC BY-SA 3.0" in raw.info["licence"]


def test_shapes_split_sizes_and_class_balance(bundle):
    assert bundle.input_shape == (1, 28, 28) and bundle.num_classes == 10
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (7000, 1000, 2000)
    assert bundle.info["split"] == "pooled" and bundle.info["stratified"]
    pool = np.bincount(read_mnist10k(DataConfig(name="mnist-10k")).y.numpy()) / 10000
    for part in (bundle.train, bundle.val, bundle.test):
        frac = np.bincount(part.y.numpy(), minlength=10) / len(part)
        assert np.abs(frac - pool).max() < 0.002, frac  # stratified: every split keeps the class proportions
    idx = torch.cat([bundle.train.index, bundle.val.index, bundle.test.index])
    assert sorted(idx.tolist()) == list(range(10000))  # a partition of the pool
    assert 0.0 <= float(bundle.train.x.min()) and float(bundle.train.x.max()) <= 1.0


def test_split_is_deterministic_per_seed(bundle):
    again = load_data(DataConfig(name="mnist-10k", normalize=False))
    other = load_data(DataConfig(name="mnist-10k", normalize=False, split_seed=1))
    assert torch.equal(again.test.index, bundle.test.index) and torch.equal(again.train.x, bundle.train.x)
    assert not torch.equal(other.test.index, bundle.test.index)


def test_checksum_refusal(tmp_path):
    for name in MNIST10K_SHA256:
        shutil.copy(mnist10k_dir() / name, tmp_path / name)
    read_mnist10k(DataConfig(name="mnist-10k"), folder=tmp_path)  # intact copies are accepted
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    tampered = raw[:8] + bytes([(raw[8] + 1) % 10]) + raw[9:]  # one label changed, still a valid IDX file
    labels.write_bytes(gzip.compress(tampered))
    with pytest.raises(ValueError, match="SHA-256"):
        read_mnist10k(DataConfig(name="mnist-10k"), folder=tmp_path)
    labels.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        read_mnist10k(DataConfig(name="mnist-10k"), folder=tmp_path)


@pytest.mark.parametrize("model", [ModelConfig(name="lenet5"), ModelConfig(name="mlp", hidden_sizes=[32]),
                                   ModelConfig(name="resnet18", width=0.125)])
def test_models_that_take_28x28_run_on_it(bundle, model):
    from workbench.models import build_model

    net = build_model(model, bundle.input_shape, bundle.num_classes)
    out = net(bundle.train.x[:4])
    assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_wheel_ships_the_files(tmp_path):
    pytest.importorskip("setuptools")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                          str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(tmp_path.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for name in MNIST10K_SHA256:
        assert f"workbench/data/mnist10k/{name}" in names
