"""Shared test fixtures.

Tests run on the CPU with tiny data; torch uses at most 2 threads (the
machine's cores) so a JupyterLab kernel started by a test does not fight the
test process for cores.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def run_root(tmp_path) -> Path:
    d = tmp_path / "runs"
    d.mkdir()
    return d


def pytest_configure(config):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test, restored afterwards: the thesis' toy models are far too small for
    intra-op parallelism, and on a busy 2-core machine a second thread only spins."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_SLOW_LIST = Path(__file__).with_name("slow_tests.txt")


def pytest_collection_modifyitems(config, items):
    """Mark the tests listed in ``tests/slow_tests.txt`` (measured at 2 s or more) ``slow``.

    ``make test-fast`` (``-m "not slow and not browser"``) then stays under 3 minutes on 2 cores; ``make test``
    runs every test. Tests decorated ``@pytest.mark.slow`` are slow whether listed or not.
    """
    if not _SLOW_LIST.is_file():
        return
    listed = {ln.strip() for ln in _SLOW_LIST.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    for item in items:
        if item.nodeid in listed or item.nodeid.split("[")[0] in listed:   # a listed name covers all its params
            item.add_marker(pytest.mark.slow)
