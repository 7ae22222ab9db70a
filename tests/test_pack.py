"""Results packs: built from short runs, loaded in a fresh interpreter, same figure data, nothing recomputed or
unpickled."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.app.pack import PackError, build_pack, load_pack, read_index, verify_pack
from workbench.app.tour import TourSettings, prepare

REPO = Path(__file__).resolve().parents[1]
TINY = TourSettings(epochs=1, craft_epochs=1, count=64)


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pack") / "tour-pack"
    build_pack(out, TINY, log=None)
    return out


def _figure_data(root: str, settings=None) -> dict:
    """JSON of the tour's figures (slices, Hessian spectra, gradient PCA) built from ``root`` (run in both
    interpreters)."""
    from workbench.viz import result_figure

    d = prepare(root, settings, log=None)
    figs = {what: result_figure(what, list(outs.values())) for what, outs in d.analyses.items()}
    return {"computed": d.computed,
            "data": {what: [json.loads(json.dumps(t.to_plotly_json(), default=str)) for t in f.data]
                     for what, f in figs.items()}}


_CHILD = r"""
import json, sys, torch
calls = []
_load = torch.load
def spy(*a, **k):
    calls.append(k.get("weights_only"))
    return _load(*a, **k)
torch.load = spy
import pickle
def no_unpickling(*a, **k):
    raise AssertionError("pickle.load called while loading a pack")
pickle.load = no_unpickling
from workbench.app.pack import load_pack
sys.path.insert(0, sys.argv[3])
from test_pack import _figure_data
load_pack(sys.argv[1], sys.argv[2], log=None)
out = _figure_data(sys.argv[2])
out["torch_load_weights_only"] = calls
print(json.dumps(out))
"""


def test_pack_loads_in_a_fresh_interpreter_with_the_same_figures_and_no_recomputation(pack, tmp_path):
    index = read_index(pack)
    assert set(index["roles"]) == {"sgd", "sam", "craft", "poisoned"}
    assert index["settings"] == TINY.to_dict()
    for r in index["runs"]:  # plain run folders; every checkpoint fingerprinted
        d = pack / "runs" / r["id"]
        assert (d / "config.json").is_file() and (d / "metrics.jsonl").is_file()
        assert r["checkpoints"]["last.pt"]["sha256"]
    assert not list(pack.rglob("*.pkl")) and not list(pack.rglob("*.pickle"))
    expected = _figure_data(str(pack / "runs"), TINY)
    assert expected["computed"] == []  # the pack already holds every analysis the tour shows

    root = tmp_path / "laptop" / "runs"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORKBENCH_EPOCHS", None)
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(pack), str(root), str(REPO / "tests")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["computed"] == [], "loading a pack must not recompute runs or analyses"
    assert got["data"] == expected["data"]
    assert got["torch_load_weights_only"] and all(w is True for w in got["torch_load_weights_only"])
    assert json.loads((root / "pack.json").read_text())["source"] == str(pack.resolve())
    # the poisoned run's config points at the copied poison, not at the teacher's folder
    poisoned = root / index["roles"]["poisoned"]
    poison = json.loads((poisoned / "config.json").read_text())["data"]["poison"]
    assert Path(poison).resolve() == (root / index["roles"]["craft"] / "artifacts" / "poison.pt").resolve()


def test_pack_refuses_altered_or_code_carrying_checkpoints(pack, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(pack, bad)
    index = read_index(bad)
    run = index["runs"][0]
    ck = bad / "runs" / run["id"] / "checkpoints" / "last.pt"
    # 1. altered bytes: refused by the SHA-256 check
    data = bytearray(ck.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ck.write_bytes(bytes(data))
    with pytest.raises(PackError, match="differs"):
        verify_pack(bad)
    # 2. a checkpoint that would run code when unpickled, with a matching index entry: refused, never run
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Evil()}, ck)
    import hashlib

    fp = dict(size=ck.stat().st_size, sha256=hashlib.sha256(ck.read_bytes()).hexdigest())
    run["checkpoints"]["last.pt"].update(fp)
    run["files"]["checkpoints/last.pt"].update(fp)
    (bad / "index.json").write_text(json.dumps(index))
    with pytest.raises(PackError, match="weights_only|plain-tensor"):
        load_pack(bad, tmp_path / "runs", log=None)
    assert not marker.exists()
    assert not (tmp_path / "runs" / run["id"]).exists()
    # 3. not a pack at all
    with pytest.raises(PackError, match="no index.json"):
        read_index(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(PackError, match="not a workbench results pack"):
        read_index(tmp_path)


def test_checkpoint_mtimes_are_restored_so_saved_analyses_are_found(pack, tmp_path):
    """Archives round modification times; the analysis cache key includes them: loading restores them."""
    import shutil

    copy = tmp_path / "copied"
    shutil.copytree(pack, copy)
    for ck in copy.rglob("*.pt"):
        os.utime(ck, (1_000_000_000, 1_000_000_000))  # as if unpacked from an archive
    root = tmp_path / "runs"
    load_pack(copy, root, log=None)
    assert prepare(root, log=None).computed == []
