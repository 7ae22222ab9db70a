"""Results packs are untrusted input: attacks on ``workbench pack load`` are refused in one line, leaving nothing.

Every attack starts from a real (tiny) pack, alters a copy, loads it into ``<tmp>/home/runs`` and checks
that the error names the problem, that nothing was written anywhere under ``<tmp>`` (a canary
``<tmp>/home/.ipython`` never appears; the runs folder the load created is removed again) and that no
``.loading`` staging folder is left.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from workbench.app import pack as pack_mod
from workbench.app.pack import PackError, build_pack, load_pack, read_index, verify_pack
from workbench.app.tour import TourSettings

TINY = TourSettings(epochs=1, craft_epochs=1, count=64)
WORKBENCH = Path(sys.executable).with_name("workbench")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "tour-pack"
    build_pack(out, TINY, log=None)
    return out


@pytest.fixture
def pk(built, tmp_path) -> Path:
    """A fresh copy of the built pack under ``<tmp>/pack`` to attack."""
    dst = tmp_path / "pack"
    shutil.copytree(built, dst)
    return dst


# ------------------------------------------------------------------ helpers
def _tree(top: Path) -> set[str]:
    """Every path under ``top`` (folders, files, links), never following links."""
    out = set()
    for d, dirs, files in os.walk(top, followlinks=False):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(d, n), top))
    return out


def _index(pk: Path) -> dict:
    return json.loads((pk / "index.json").read_text())


def _save(pk: Path, index) -> None:
    (pk / "index.json").write_text(json.dumps(index))


def _fp(path: Path) -> dict:
    data = path.read_bytes()  # through links: what an attacker would record to pass the SHA-256 check
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _run(pk: Path, role: str = "sgd") -> tuple[dict, dict, Path]:
    index = _index(pk)
    r = next(r for r in index["runs"] if r["role"] == role)
    return index, r, pk / "runs" / r["id"]


def _refused(pk: Path, tmp_path: Path, match: str, *, root_exists: bool = False, **kw) -> str:
    """Load ``pk`` into ``<tmp>/home/runs``: PackError matching ``match``, one line, nothing written anywhere."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    root = home / "runs"
    if root_exists:
        root.mkdir(exist_ok=True)
    before = _tree(tmp_path)
    with pytest.raises(PackError, match=match) as ei:
        load_pack(pk, root, log=None, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and len(msg) < 600, msg
    assert _tree(tmp_path) == before, "a refused load wrote or left something"
    assert not (home / ".ipython").exists()
    if root_exists:
        assert list(root.iterdir()) == [], "staging or partial run folders left in the runs folder"
    else:
        assert not root.exists(), "the runs folder created by a refused load is not removed"
    return msg


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([str(WORKBENCH), *args], capture_output=True, text=True, timeout=timeout, env=env)


# ------------------------------------------------------------------ a clean pack
def test_clean_pack_loads_every_file_and_leaves_no_staging(pk, tmp_path):
    index = read_index(pk)
    assert index["version"] == 2
    for r in index["runs"]:  # every file of every run is fingerprinted
        on_disk = {str(p.relative_to(pk / "runs" / r["id"])).replace(os.sep, "/")
                   for p in (pk / "runs" / r["id"]).rglob("*") if p.is_file()} - {".lock"}
        assert set(r["files"]) == on_disk
        assert {"config.json", "status.json", "metrics.jsonl", "checkpoints/last.pt"} <= on_disk
    root = tmp_path / "home" / "runs"
    load_pack(pk, root, log=None)
    assert sorted(p.name for p in root.iterdir()) == sorted([r["id"] for r in index["runs"]] + ["pack.json"])
    for r in index["runs"]:
        cfg = json.loads((root / r["id"] / "config.json").read_text())
        assert cfg["root"] == str(root.resolve()) and cfg["data"]["root"] is None
        for rel in r["files"]:
            if rel != "config.json":
                assert (root / r["id"] / rel).read_bytes() == (pk / "runs" / r["id"] / rel).read_bytes()
    # loading again keeps the runs and still leaves nothing behind
    load_pack(pk, root, log=None)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
    assert not (tmp_path / "home" / ".ipython").exists()


def test_cli_loads_a_clean_pack_and_reports_a_refused_one_in_one_line(pk, tmp_path, capsys):
    from workbench.cli import main

    root = tmp_path / "runs"
    assert main(["pack", "load", str(pk), "--runs", str(root)]) == 0
    assert (root / "pack.json").is_file()
    m = pk / "runs" / _run(pk)[1]["id"] / "metrics.jsonl"
    m.write_text(m.read_text() + "{}\n")
    capsys.readouterr()
    assert main(["pack", "load", str(pk), "--runs", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "metrics.jsonl" in err, err
    assert not (tmp_path / "other").exists()
    # the installed command: one line on stderr, exit status 2, no traceback
    bad = _cli("pack", "load", str(pk), "--runs", str(tmp_path / "other"))
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "metrics.jsonl" in lines[0], bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "other").exists()


# ------------------------------------------------------------------ where things are written
@pytest.mark.parametrize("bad_id", ["..", "../x", "a/b", "ABS", ".hidden", "", "a\\b", "a\x00b", "a\nb", ".", "-x",
                                    "x" * 300])
def test_run_ids_that_are_not_one_plain_name_are_refused(pk, tmp_path, bad_id):
    bad_id = str(tmp_path / "abs") if bad_id == "ABS" else bad_id
    index, r, _ = _run(pk)
    old = r["id"]
    r["id"] = bad_id
    index["roles"]["sgd"] = bad_id
    _save(pk, index)
    msg = _refused(pk, tmp_path, "run id|plain name|empty")
    assert "\x00" not in msg and "\n" not in msg
    assert not (tmp_path / "abs").exists() and (pk / "runs" / old).is_dir()


def test_ipython_startup_traversal_is_refused_and_plants_nothing(pk, tmp_path):
    """The reported exploit: a run id of ``../.ipython/profile_default/startup`` with a matching folder in the pack."""
    index, r, run = _run(pk)
    evil = pk / ".ipython" / "profile_default" / "startup"
    evil.mkdir(parents=True)
    (evil / "config.json").write_text("{}")
    (evil / "00-evil.py").write_text("open('/tmp/pwned', 'w').write('x')\n")
    r["id"] = "../.ipython/profile_default/startup"
    r["files"] = {n: _fp(evil / n) for n in ("config.json", "00-evil.py")}
    r["checkpoints"], r["analyses"] = {}, []
    index["roles"]["sgd"] = r["id"]
    _save(pk, index)
    for root_exists in (False, True):
        assert "plain name" in _refused(pk, tmp_path, "run id", root_exists=root_exists)
    assert not (tmp_path / "home" / ".ipython").exists()


@pytest.mark.parametrize("field,value", [
    ("file", "../../../escape.py"), ("file", "artifacts/../../x"), ("file", "/abs/x"), ("file", "artifacts//x"),
    ("file", "artifacts/.hidden"), ("checkpoint", "../last.pt"), ("analysis", "../../x.json"),
    ("role", "../x"), ("rolename", "a/b")])
def test_other_path_like_index_fields_are_refused(pk, tmp_path, field, value):
    index, r, _ = _run(pk)
    if field == "file":
        r["files"][value] = dict(r["files"]["config.json"])
    elif field == "checkpoint":
        r["checkpoints"][value] = dict(r["checkpoints"]["last.pt"])
    elif field == "analysis":
        r["analyses"].append(value)
    elif field == "role":
        index["roles"]["sgd"] = value
    else:
        index["roles"][value] = r["id"]
    _save(pk, index)
    _refused(pk, tmp_path, "plain name|plain word|not a run")


def test_poison_path_outside_the_pack_is_refused_and_data_root_cleared(pk, tmp_path):
    index, r, run = _run(pk, "poisoned")
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["poison"] = "/home/teacher/evil/artifacts/poison.pt"
    (run / "config.json").write_text(json.dumps(cfg))
    r["files"]["config.json"] = _fp(run / "config.json")
    _save(pk, index)
    _refused(pk, tmp_path, "data.poison")
    # a dataset folder of the teacher's machine is not kept (it decides where downloads go)
    cfg["data"]["poison"] = str(pk / "runs" / index["roles"]["craft"] / "artifacts" / "poison.pt")
    cfg["data"]["root"] = str(tmp_path / "home" / ".ipython")
    (run / "config.json").write_text(json.dumps(cfg))
    r["files"]["config.json"] = _fp(run / "config.json")
    _save(pk, index)
    root = tmp_path / "home" / "runs"
    load_pack(pk, root, log=None)
    got = json.loads((root / r["id"] / "config.json").read_text())
    assert got["data"]["root"] is None and got["root"] == str(root.resolve())
    assert Path(got["data"]["poison"]) == root.resolve() / index["roles"]["craft"] / "artifacts" / "poison.pt"


# ------------------------------------------------------------------ links and special files
def test_symlink_to_an_outside_file_is_refused_even_when_listed(pk, tmp_path):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("the student's private key\n")
    index, r, run = _run(pk)
    (run / "artifacts" / "secret.txt").symlink_to(secret)
    r["files"]["artifacts/secret.txt"] = _fp(run / "artifacts" / "secret.txt")
    _save(pk, index)
    msg = _refused(pk, tmp_path, "symbolic link")
    assert "secret.txt" in msg


def test_symlinked_checkpoint_with_matching_hash_is_refused(pk, tmp_path):
    index, r, run = _run(pk)
    real = tmp_path / "outside.pt"
    shutil.move(run / "checkpoints" / "last.pt", real)
    (run / "checkpoints" / "last.pt").symlink_to(real)
    assert _fp(run / "checkpoints" / "last.pt")["sha256"] == r["files"]["checkpoints/last.pt"]["sha256"]
    assert "last.pt" in _refused(pk, tmp_path, "symbolic link")


def test_symlinked_run_folder_and_pack_folder_are_refused(pk, tmp_path):
    index, r, run = _run(pk)
    moved = tmp_path / "elsewhere"
    shutil.move(run, moved)
    run.symlink_to(moved, target_is_directory=True)
    assert r["id"] in _refused(pk, tmp_path, "symbolic link")
    run.unlink()
    shutil.move(moved, run)
    link = tmp_path / "pack-link"
    link.symlink_to(pk, target_is_directory=True)
    _refused(link, tmp_path, "symbolic link")
    with pytest.raises(PackError, match="symbolic link"):
        verify_pack(link)


@pytest.mark.timeout(60)
def test_two_symlink_loops_are_refused_quickly(pk, tmp_path, capsys):
    index, r, run = _run(pk)
    (run / "artifacts" / "loop").symlink_to(run, target_is_directory=True)  # a folder linking to its run
    (pk / "a").mkdir()
    (pk / "a" / "b").symlink_to(pk / "c", target_is_directory=True)  # a/b -> c, c/d -> a
    (pk / "c").mkdir()
    (pk / "c" / "d").symlink_to(pk / "a", target_is_directory=True)
    t0 = time.perf_counter()
    _refused(pk, tmp_path, "symbolic link")
    assert time.perf_counter() - t0 < 10
    from workbench.cli import main

    assert main(["pack", "load", str(pk), "--runs", str(tmp_path / "home" / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "symbolic link" in err, err
    assert len(_tree(tmp_path / "home")) == 0


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_without_blocking(pk, tmp_path):
    index, r, run = _run(pk)
    os.mkfifo(run / "artifacts" / "pipe")
    r["files"]["artifacts/pipe"] = {"size": 0, "sha256": hashlib.sha256(b"").hexdigest()}
    _save(pk, index)
    assert "pipe" in _refused(pk, tmp_path, "FIFO")
    os.unlink(run / "artifacts" / "pipe")
    os.mkfifo(pk / "index.json.tmp")
    os.replace(pk / "index.json.tmp", pk / "index.json")
    _refused(pk, tmp_path, "FIFO|regular file")


def test_size_and_count_caps(pk, tmp_path):
    assert "more than 10 files" in _refused(pk, tmp_path, "files and folders", max_files=10)
    _refused(pk, tmp_path, "GB", max_bytes=100_000)
    index, r, _ = _run(pk)
    r["files"]["config.json"]["size"] = 10 ** 12  # an index claiming a huge file is refused before reading it
    _save(pk, index)
    _refused(pk, tmp_path, "GB")


# ------------------------------------------------------------------ integrity of every file
def test_modified_metrics_are_refused_naming_run_and_file(pk, tmp_path):
    index, r, run = _run(pk)
    m = run / "metrics.jsonl"
    data = bytearray(m.read_bytes())
    data[5] = ord("9") if data[5] != ord("9") else ord("8")  # same size, different bytes
    m.write_bytes(bytes(data))
    msg = _refused(pk, tmp_path, "differs", root_exists=True)
    assert r["id"] in msg and "metrics.jsonl" in msg
    with pytest.raises(PackError, match="metrics.jsonl"):
        verify_pack(pk)
    m.write_bytes(bytes(data) + b"{}\n")  # a different size
    _refused(pk, tmp_path, "metrics.jsonl.*differs", root_exists=True)


@pytest.mark.parametrize("extra", ["artifacts/notes.txt", "artifacts/analysis/fake-0.json", ".hidden",
                                   "checkpoints/epoch_0001.pt", "new/deep/file.bin"])
def test_an_unlisted_file_is_refused(pk, tmp_path, extra):
    index, r, run = _run(pk)
    (run / extra).parent.mkdir(parents=True, exist_ok=True)
    (run / extra).write_bytes(b"not in the index")
    msg = _refused(pk, tmp_path, "not listed")
    assert r["id"] in msg and extra in msg


@pytest.mark.parametrize("gone", ["status.json", "config.json", "checkpoints/last.pt", "artifacts/poison.pt"])
def test_a_missing_file_is_refused(pk, tmp_path, gone):
    index, r, run = _run(pk, "craft")
    (run / gone).unlink()
    msg = _refused(pk, tmp_path, "missing")
    assert r["id"] in msg and gone in msg


def test_a_runs_lock_file_is_neither_packed_nor_copied_but_a_linked_one_is_refused(pk, tmp_path):
    index, r, run = _run(pk)
    (run / ".lock").write_text("12345 teachers-laptop")
    root = tmp_path / "home" / "runs"
    load_pack(pk, root, log=None)
    assert not (root / r["id"] / ".lock").exists()
    shutil.rmtree(root)
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(tmp_path / "outside")
    assert ".lock" in _refused(pk, tmp_path, "symbolic link")


def test_a_missing_run_folder_is_refused(pk, tmp_path):
    index, r, run = _run(pk)
    shutil.rmtree(run)
    assert r["id"] in _refused(pk, tmp_path, "missing")


def test_a_code_carrying_checkpoint_is_refused_and_no_earlier_run_is_left(pk, tmp_path):
    """The last run's checkpoint fails weights_only after the others were staged: nothing is left."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    index = _index(pk)
    r = index["runs"][-1]
    ck = pk / "runs" / r["id"] / "checkpoints" / "last.pt"
    torch.save({"model": Evil()}, ck)
    fp = _fp(ck)
    r["files"]["checkpoints/last.pt"].update(fp)
    r["checkpoints"]["last.pt"].update(fp)
    _save(pk, index)
    _refused(pk, tmp_path, "plain-tensor|weights_only", root_exists=True)
    assert not marker.exists()


def test_a_failure_after_runs_were_moved_in_rolls_them_back(pk, tmp_path, monkeypatch):
    root = tmp_path / "home" / "runs"
    root.mkdir(parents=True)
    (root / "mine").mkdir()  # the student's own run stays
    real = pack_mod._write_json

    def disk_full(path, obj):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(pack_mod, "_write_json", disk_full)
    with pytest.raises(OSError):
        load_pack(pk, root, log=None)
    assert [p.name for p in root.iterdir()] == ["mine"]
    monkeypatch.setattr(pack_mod, "_write_json", real)
    load_pack(pk, root, log=None)
    assert len(list(root.iterdir())) == len(_index(pk)["runs"]) + 2


# ------------------------------------------------------------------ malformed indexes
@pytest.mark.parametrize("text,match", [
    ("this is not json", "not valid JSON"),
    ("\xff\xfe", "not valid JSON"),
    ("[1, 2, 3]", "not a workbench results pack"),
    ('"workbench-pack"', "not a workbench results pack"),
    ("null", "not a workbench results pack"),
])
def test_index_that_is_not_an_object_is_refused(pk, tmp_path, text, match):
    (pk / "index.json").write_bytes(text.encode("latin-1"))
    _refused(pk, tmp_path, match)


def _mut(path: str, value):
    """Set (or with KeyError delete) ``index[...]`` along ``path``, ``/``-separated keys (list indices as numbers)."""
    def f(index):
        obj, keys = index, path.split("/")
        for k in keys[:-1]:
            obj = obj[int(k)] if isinstance(obj, list) else obj[k]
        last = keys[-1]
        if value is KeyError:
            del obj[last]
        elif isinstance(obj, list):
            obj[int(last)] = value
        else:
            obj[last] = value
    return f


@pytest.mark.parametrize("mutate,match", [
    (_mut("version", 1), "rebuild"),
    (_mut("version", 99), "reads up to"),
    (_mut("version", "2"), "version must be an integer"),
    (_mut("runs", "x"), "runs must be a list"),
    (_mut("runs", {"a": 1}), "runs must be a list"),
    (_mut("runs/0", 5), r"runs\[0\] must be an object"),
    (_mut("runs/0/id", 123), "must be a string"),
    (_mut("runs/0/id", None), "must be a string"),
    (_mut("runs/0/files", []), "files must be"),
    (_mut("runs/0/files", KeyError), "files must be"),
    (_mut("runs/0/files/config.json", "abc"), "must be an object"),
    (_mut("runs/0/files/metrics.jsonl", {"size": "12", "sha256": "0" * 64}), "size must be an integer"),
    (_mut("runs/0/files/metrics.jsonl", {"size": -1, "sha256": "0" * 64}), "size must be an integer"),
    (_mut("runs/0/files/metrics.jsonl", {"size": 1, "sha256": "../x"}), "sha256"),
    (_mut("runs/0/checkpoints", ["last.pt"]), "checkpoints must be an object"),
    (_mut("runs/0/analyses", "x.json"), "analyses must be a list"),
    (_mut("roles", ["sgd"]), "roles must be an object"),
    (_mut("roles/sgd", "no-such-run"), "not a run of the pack"),
    (_mut("settings", {"epochs": 1}), "settings must be"),
    (_mut("settings/epochs", "1; rm -rf /"), "settings.epochs"),
])
def test_index_with_wrong_types_is_refused(pk, tmp_path, mutate, match):
    index = _index(pk)
    mutate(index)
    _save(pk, index)
    _refused(pk, tmp_path, match)


def test_duplicate_run_ids_and_index_as_folder_or_link(pk, tmp_path):
    index = _index(pk)
    index["runs"].append(dict(index["runs"][0]))
    _save(pk, index)
    _refused(pk, tmp_path, "listed twice")
    (pk / "index.json").unlink()
    _refused(pk, tmp_path, "no index.json")
    (pk / "index.json").mkdir()
    _refused(pk, tmp_path, "regular file")
    (pk / "index.json").rmdir()
    (tmp_path / "index.json").write_text(json.dumps(index))
    (pk / "index.json").symlink_to(tmp_path / "index.json")
    _refused(pk, tmp_path, "symbolic link")
