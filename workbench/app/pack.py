"""Results packs: the runs and analyses behind the guided tour's figures, prepared once, shown anywhere.

A teacher builds a pack where computing is cheap (``workbench pack build`` on a GPU
machine, or the night before) and loads it on the classroom laptops
(``workbench pack load``); the tour and its panels then show every figure at once.

Layout of a pack (a plain folder; zip or copy it as it is)::

    <pack>/
        index.json           {"format": "workbench-pack", "version": 2, "created", "device", "settings",
                              "roles": {role: run id}, "runs": [{"id", "role", "name",
                              "files": {relative path: {"size", "sha256", "mtime_ns"}},
                              "checkpoints": {file: {"size", "sha256", "mtime_ns"}},
                              "analyses": [artifact names]}]}
        runs/<run id>/       ordinary run folders (config.json, status.json, metrics.jsonl, checkpoints/,
                             artifacts/ with analysis/ results and poison.pt)

A pack is untrusted input (a teacher's folder, a download, a USB stick). Loading
(:func:`load_pack`):

* never lets the pack decide where anything is written: run ids, file names and every other
  path-like field of the index are single plain names (``[A-Za-z0-9_][A-Za-z0-9._=+(),-]*``,
  no ``..``, separators, leading dot, control characters), and every destination is checked to
  lie inside the resolved runs folder; the copied configs' ``root`` becomes the runs folder,
  ``data.root`` is cleared and ``data.poison`` must name a run of the pack;
* never follows a symbolic link: a link anywhere in the pack (the pack folder itself, a run
  folder, a file, a nested folder) and special files (FIFOs, devices, sockets) are refused,
  and the pack is capped in size and number of entries (:data:`MAX_BYTES`, :data:`MAX_FILES`);
* checks every file of every run (not only checkpoints) against the SHA-256 recorded in the
  index: a modified, missing or unlisted file refuses the whole pack (a run's machine-local
  ``.lock``, :data:`LOCAL_FILES`, is neither packed nor read nor copied); checkpoints and other
  ``.pt`` files are opened with ``torch.load(..., weights_only=True, map_location="cpu")``
  (never unpickling code; a pack made on CUDA loads on a CPU-only laptop);
* stages the copy in a hidden temporary folder inside the runs folder, checks everything
  there and only then moves the run folders into place; a refused or failed load leaves
  nothing behind.

``<runs>/pack.json`` records the roles. The analysis cache keys include each checkpoint's
modification time, so loading restores the recorded ``mtime_ns`` (archives often round it)
and saved results are found instead of recomputed.

Packs of version 1 (earlier workbench releases) only fingerprinted checkpoints; they are
refused with a message asking to rebuild them with ``workbench pack build``.

No UI imports.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..runs.store import CheckpointError, atomic_write_bytes, file_sha256, load_checkpoint
from .tour import PACK_INDEX, TourSettings, prepare

__all__ = ["PACK_FORMAT", "PACK_VERSION", "MAX_BYTES", "MAX_FILES", "PackError", "build_pack", "load_pack",
           "read_index", "verify_pack"]

PACK_FORMAT = "workbench-pack"
PACK_VERSION = 2
MAX_BYTES = 2 * 10 ** 9      #: default cap on a pack's total file size (bytes)
MAX_FILES = 100_000           #: default cap on a pack's number of files and folders
MAX_INDEX_BYTES = 64 * 1024 ** 2
MAX_DEPTH = 16                #: folders nested inside a run folder at most

#: machine-local files at the top of a run folder: not packed, and never read or copied by a load
#: (``.lock``: the trainer's advisory lock holding its PID and host, see :mod:`workbench.runs.lock`)
LOCAL_FILES = frozenset({".lock"})

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._=+(),-]*\Z")
_ROLE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
_SHA = re.compile(r"[0-9a-f]{64}\Z")
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_READ = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0) | _O_NOFOLLOW


class PackError(ValueError):
    """A folder is not a valid or not a safe results pack (index, links, special files, sizes, altered files)."""


def _show(value, n: int = 80) -> str:
    """``repr`` of a value for a one-line message (control characters escaped, long values cut)."""
    s = repr(value)
    return s if len(s) <= n else s[:n - 3] + "..."


def _check_name(value, what: str) -> str:
    """A single plain path component (a run id, a file or folder name), or PackError."""
    if not isinstance(value, str):
        raise PackError(f"{what} must be a string, not {type(value).__name__} ({_show(value)})")
    if not value:
        raise PackError(f"{what} is empty")
    if len(value) > 200 or value in (".", "..") or not _NAME.match(value):
        raise PackError(f"{what} {_show(value)} is not a plain name: packs allow letters, digits and ._=+(),- "
                        f"(not starting with '.' or '-'; no '/', '\\', '..', spaces or control characters)")
    return value


def _check_rel(value, what: str) -> str:
    """A relative path inside a run folder: ``/``-separated plain names, at most :data:`MAX_DEPTH` deep."""
    if not isinstance(value, str) or not value:
        raise PackError(f"{what} must be a non-empty string, not {_show(value)}")
    parts = value.split("/")
    if len(parts) > MAX_DEPTH + 1:
        raise PackError(f"{what} {_show(value)} is nested too deeply (at most {MAX_DEPTH} folders)")
    for p in parts:
        try:
            _check_name(p, "component")
        except PackError:
            raise PackError(f"{what} {_show(value)} is not a relative path of plain names (component {_show(p)}; "
                            f"packs allow letters, digits and ._=+(),- not starting with '.' or '-')") from None
    return value


def _int(value, what: str, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise PackError(f"{what} must be an integer >= {lo}, not {_show(value)}")
    return value


def _inside(root: Path, name: str) -> Path:
    """``root/name`` for a checked plain name, verified to lie inside the (resolved) ``root``."""
    dst = root / _check_name(name, "run id")
    if dst.parent != root or Path(os.path.normpath(dst)) != dst:
        raise PackError(f"run id {_show(name)} does not stay inside the runs folder")
    real = dst.resolve()
    if real != dst and not real.is_relative_to(root):
        raise PackError(f"{str(dst)!r} already exists and points outside the runs folder {str(root)!r}")
    return dst


def _write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


# ------------------------------------------------------------------ walking a folder without following links
class _Budget:
    """Counts entries and bytes while walking; PackError past the caps (stops loops and floods early)."""

    def __init__(self, max_bytes: int, max_files: int, where: Path):
        self.max_bytes, self.max_files, self.where = int(max_bytes), int(max_files), where
        self.bytes = self.entries = 0

    def add(self, size: int = 0) -> None:
        self.entries += 1
        self.bytes += size
        if self.entries > self.max_files:
            raise PackError(f"{str(self.where)!r} holds more than {self.max_files} files and folders "
                            f"(the limit for a pack; raise it with max_files if this pack is genuine)")
        if self.bytes > self.max_bytes:
            raise PackError(f"{str(self.where)!r} holds more than {self.max_bytes / 1e9:.3g} GB "
                            f"(the limit for a pack; raise it with max_bytes if this pack is genuine)")


def _walk(top: Path, budget: _Budget) -> dict[str, int]:
    """Regular files under ``top`` as ``{relative posix path: size}``, never following links.

    Raises:
        PackError: a symbolic link (or junction), a special file (FIFO, device, socket), a folder
            nested deeper than :data:`MAX_DEPTH` + 2, or the budget exceeded. The message names the path.
    """
    files: dict[str, int] = {}
    stack: list[tuple[Path, str, int]] = [(top, "", 0)]
    while stack:
        d, rel, depth = stack.pop()
        try:
            it = os.scandir(d)
        except OSError as e:
            raise PackError(f"cannot read pack folder {str(d)!r}: {e.strerror or e}") from e
        with it:
            for e in it:
                path, r = Path(e.path), rel + e.name
                st = e.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode) or (hasattr(e, "is_junction") and e.is_junction()):
                    raise PackError(f"{str(path)!r} is a symbolic link: packs may not contain links "
                                    f"(copy the file it points to instead)")
                if stat.S_ISDIR(st.st_mode):
                    budget.add()
                    if depth >= MAX_DEPTH + 2:
                        raise PackError(f"{str(path)!r} is nested too deeply for a pack")
                    stack.append((path, r + "/", depth + 1))
                elif stat.S_ISREG(st.st_mode):
                    budget.add(st.st_size)
                    files[r] = st.st_size
                else:
                    raise PackError(f"{str(path)!r} is not a regular file or folder (FIFO, device or socket): "
                                    f"packs hold plain files only")
    return files


def _pack_dir(pack: str | Path) -> Path:
    """The pack folder as an absolute path; refused when it is a link or not a folder."""
    p = Path(os.path.abspath(pack))
    try:
        st = os.lstat(p)
    except OSError:
        raise PackError(f"{str(pack)!r} is not a results pack: no index.json (no such folder)") from None
    if stat.S_ISLNK(st.st_mode):
        raise PackError(f"{str(pack)!r} is a symbolic link: give the pack folder itself (packs never follow links)")
    if not stat.S_ISDIR(st.st_mode):
        raise PackError(f"{str(pack)!r} is not a results pack: not a folder")
    return p


# ------------------------------------------------------------------ the index
def _read_json_file(p: Path, limit: int = MAX_INDEX_BYTES):
    """A JSON file read through a descriptor that refuses links and special files."""
    try:
        fd = os.open(p, _O_READ)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise PackError(f"{str(p)!r} cannot be opened ({e.strerror or e}; links are refused)") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PackError(f"{str(p)!r} is not a regular file (a folder, FIFO or device)")
        if st.st_size > limit:
            raise PackError(f"{str(p)!r} is larger than {limit // 2 ** 20} MiB")
        chunks, n = [], 0
        while n <= limit:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            n += len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise PackError(f"{str(p)!r} is larger than {limit // 2 ** 20} MiB")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackError(f"{str(p)!r} is not valid JSON: {str(e).splitlines()[0]}") from e


def read_index(pack: str | Path) -> dict:
    """The pack's ``index.json``, checked for format, version and a well-formed listing.

    Raises:
        PackError: no index, not JSON, another format, an older (1: rebuild) or newer version, a
            field of the wrong type, or a run id / file name that is not a plain name.
    """
    pack = _pack_dir(pack)
    p = pack / "index.json"
    try:
        index = _read_json_file(p)
    except FileNotFoundError:
        raise PackError(f"{str(pack)!r} is not a results pack: no index.json "
                        f"(build one with 'workbench pack build')") from None
    if not isinstance(index, dict) or index.get("format") != PACK_FORMAT:
        raise PackError(f"{str(p)!r} is not a workbench results pack "
                        f"(format={_show(index.get('format')) if isinstance(index, dict) else type(index).__name__})")
    version = index.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise PackError(f"{str(p)!r}: version must be an integer, not {_show(version)}")
    if version > PACK_VERSION:
        raise PackError(f"{str(p)!r} has version {version}; this workbench reads up to {PACK_VERSION}")
    if version < PACK_VERSION:
        raise PackError(f"{str(p)!r} has version {version}, which fingerprints only checkpoints; rebuild the pack "
                        f"with 'workbench pack build' (it records a SHA-256 of every file)")
    _check_index(index, p)
    return index


def _check_index(index: dict, where: Path) -> None:
    """Types and names of every field :func:`load_pack` and the tour use (PackError naming the field)."""
    pre = f"{str(where)!r}:"
    settings = index.get("settings")
    keys = set(TourSettings().to_dict())
    if not isinstance(settings, dict) or set(settings) != keys:
        raise PackError(f"{pre} settings must be an object with keys {sorted(keys)}, not {_show(settings)}")
    for k, v in settings.items():
        _int(v, f"{pre} settings.{k}", 1)
    runs = index.get("runs")
    if not isinstance(runs, list):
        raise PackError(f"{pre} runs must be a list, not {_show(runs)}")
    ids: set[str] = set()
    for i, r in enumerate(runs):
        if not isinstance(r, dict):
            raise PackError(f"{pre} runs[{i}] must be an object, not {_show(r)}")
        rid = _check_name(r.get("id"), f"{pre} runs[{i}].id (run id)")
        if rid in ids:
            raise PackError(f"{pre} run id {rid!r} is listed twice")
        ids.add(rid)
        at = f"{pre} run {rid!r}:"
        if r.get("role") is not None and (not isinstance(r["role"], str) or not _ROLE.match(r["role"])):
            raise PackError(f"{at} role must be a plain word, not {_show(r['role'])}")
        if r.get("name") is not None and (not isinstance(r["name"], str) or len(r["name"]) > 500):
            raise PackError(f"{at} name must be a string, not {_show(r['name'])}")
        files = r.get("files")
        if not isinstance(files, dict) or not files:
            raise PackError(f"{at} files must be a non-empty object {{path: {{size, sha256}}}}, not {_show(files)}")
        for rel, meta in files.items():
            _check_rel(rel, f"{at} file")  # (LOCAL_FILES start with '.': refused here)
            _check_meta(meta, f"{at} file {rel!r}")
        if "config.json" not in files:
            raise PackError(f"{at} files lists no config.json")
        cks = r.get("checkpoints", {})
        if not isinstance(cks, dict):
            raise PackError(f"{at} checkpoints must be an object, not {_show(cks)}")
        for name, meta in cks.items():
            _check_name(name, f"{at} checkpoint")
            _check_meta(meta, f"{at} checkpoint {name!r}")
            f = files.get(f"checkpoints/{name}")
            if f is None or f["sha256"] != meta["sha256"] or f["size"] != meta["size"]:
                raise PackError(f"{at} checkpoint {name!r} does not match files['checkpoints/{name}']")
        analyses = r.get("analyses", [])
        if not isinstance(analyses, list):
            raise PackError(f"{at} analyses must be a list, not {_show(analyses)}")
        for a in analyses:
            if f"artifacts/analysis/{_check_name(a, f'{at} analysis')}" not in files:
                raise PackError(f"{at} analysis {a!r} is not among its files")
    roles = index.get("roles", {})
    if not isinstance(roles, dict):
        raise PackError(f"{pre} roles must be an object {{role: run id}}, not {_show(roles)}")
    for role, rid in roles.items():
        if not _ROLE.match(role):
            raise PackError(f"{pre} role {_show(role)} is not a plain word")
        _check_name(rid, f"{pre} roles[{role!r}] (run id)")
        if rid not in ids:
            raise PackError(f"{pre} roles[{role!r}] = {rid!r} is not a run of the pack")


def _check_meta(meta, what: str) -> None:
    if not isinstance(meta, dict):
        raise PackError(f"{what} must be an object {{size, sha256}}, not {_show(meta)}")
    _int(meta.get("size"), f"{what}: size")
    if not isinstance(meta.get("sha256"), str) or not _SHA.match(meta["sha256"]):
        raise PackError(f"{what}: sha256 must be 64 lowercase hex digits, not {_show(meta.get('sha256'))}")
    if "mtime_ns" in meta:
        _int(meta["mtime_ns"], f"{what}: mtime_ns")


def _inspect(pack: Path, max_bytes: int, max_files: int) -> tuple[dict, dict[str, int]]:
    """Walk the whole pack (no links, no special files, within the caps), read its index, match the listing.

    Returns ``(index, {path relative to the pack: size})``.
    """
    files = _walk(pack, _Budget(max_bytes, max_files, pack))
    index = read_index(pack)
    runs_dir = pack / "runs"
    if not runs_dir.is_dir():
        raise PackError(f"{str(pack)!r} is not a results pack: no runs/ folder")
    listed = {r["id"] for r in index["runs"]}
    declared = sum(m["size"] for r in index["runs"] for m in r["files"].values())
    if declared > max_bytes:
        raise PackError(f"{str(pack)!r}: index.json lists {declared / 1e9:.3g} GB, more than the limit of "
                        f"{max_bytes / 1e9:.3g} GB for a pack")
    found: dict[str, dict[str, int]] = {rid: {} for rid in listed}
    for rel, size in files.items():
        parts = rel.split("/", 2)
        if parts[0] == "runs" and len(parts) == 3 and parts[1] in listed and parts[2] not in LOCAL_FILES:
            found[parts[1]][parts[2]] = size
    for r in index["runs"]:
        rid, have, want = r["id"], found[r["id"]], r["files"]
        d = runs_dir / rid
        if not d.is_dir():
            raise PackError(f"pack run {rid!r} is missing (no folder {str(d)!r})")
        for rel in sorted(want):
            if rel not in have:
                raise PackError(f"pack run {rid!r}: file {rel!r} is missing from the pack (listed in index.json)")
            if have[rel] != want[rel]["size"]:
                raise PackError(f"pack run {rid!r}: file {rel!r} differs from index.json "
                                f"(size {have[rel]}, listed {want[rel]['size']})")
        for rel in sorted(have):
            if rel not in want:
                raise PackError(f"pack run {rid!r}: file {rel!r} is not listed in index.json (extra files are "
                                f"refused; rebuild the pack with 'workbench pack build')")
    return index, files


def _copy_verified(src: Path, dst: Path | None, meta: dict, rid: str, rel: str) -> None:
    """Read ``src`` through a no-follow descriptor, check size and SHA-256, and (``dst``) write the same bytes."""
    try:
        fd = os.open(src, _O_READ)
    except OSError as e:
        raise PackError(f"pack run {rid!r}: file {rel!r} cannot be opened ({e.strerror or e}; links are refused)") \
            from e
    out = None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PackError(f"pack run {rid!r}: file {rel!r} is not a regular file")
        h, n = hashlib.sha256(), 0
        if dst is not None:
            out = open(dst, "xb")
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            n += len(chunk)
            if n > meta["size"]:
                break
            h.update(chunk)
            if out is not None:
                out.write(chunk)
        if n != meta["size"] or h.hexdigest() != meta["sha256"]:
            raise PackError(f"pack run {rid!r}: file {rel!r} differs from index.json (size/SHA-256): "
                            f"the pack was modified after it was built")
    finally:
        os.close(fd)
        if out is not None:
            out.close()


def _load_pt(path: Path, rid: str, rel: str) -> None:
    try:
        load_checkpoint(path, map_location="cpu")
    except CheckpointError as e:
        why = type(e.__cause__).__name__ if e.__cause__ is not None else str(e).split(". ")[0][-80:]
        raise PackError(f"pack run {rid!r}: file {rel!r} is corrupted or not a plain-tensor checkpoint "
                        f"(torch.load with weights_only=True refused it: {why}); nothing was unpickled") from e


def verify_pack(pack: str | Path, *, load: bool = True, max_bytes: int = MAX_BYTES,
                max_files: int = MAX_FILES) -> dict:
    """Check a pack in place: no links or special files, every file of every run as index.json lists it.

    Every file must match its recorded size and SHA-256; no file may be missing or unlisted. With
    ``load``, every ``.pt`` file opens with ``torch.load(..., weights_only=True, map_location="cpu")``.

    Raises:
        PackError: see :func:`read_index`, :func:`load_pack`; the message names the run and file.
    """
    pack = _pack_dir(pack)
    index, _ = _inspect(pack, max_bytes, max_files)
    for r in index["runs"]:
        for rel, meta in sorted(r["files"].items()):
            _copy_verified(pack / "runs" / r["id"] / rel, None, meta, r["id"], rel)
        if load:
            for rel in sorted(r["files"]):
                if rel.endswith(".pt"):
                    _load_pt(pack / "runs" / r["id"] / rel, r["id"], rel)
    return index


# ------------------------------------------------------------------ building
def _run_files(run: Path) -> dict[str, dict]:
    """``{relative path: {size, sha256, mtime_ns}}`` of every file of a run folder (refusing what a load refuses)."""
    out = {}
    for rel in sorted(set(_walk(run, _Budget(MAX_BYTES, MAX_FILES, run))) - LOCAL_FILES):
        try:
            _check_rel(rel, f"run {run.name!r}: file")
        except PackError as e:
            raise PackError(f"{e} — remove {str(run / rel)!r} (e.g. a leftover temporary file) and build again") \
                from None
        p = run / rel
        st = p.stat()
        out[rel] = {"size": st.st_size, "sha256": file_sha256(p), "mtime_ns": st.st_mtime_ns}
    return out


def build_pack(out: str | Path, settings: TourSettings | None = None, *,
               log: Callable[[str], None] | None = print) -> dict:
    """Compute the guided tour's runs and analyses into ``out/runs`` and write ``out/index.json``.

    Args:
        out: the pack folder (created; an existing pack there is completed, not recomputed).
        settings: the tour's sizes (default: :meth:`TourSettings.from_env`, i.e. the tour's defaults).
            The runs train on ``device: auto`` (CUDA, then MPS, then CPU).
        log: one line per step (None: silent).

    Returns:
        The index (also written to ``out/index.json``): every file of every run with its size,
        SHA-256 and modification time.

    Raises:
        PackError: ``out`` or a run folder holds a link, a special file or a file whose name a
            load would refuse (e.g. a hidden leftover temporary file).
    """
    out = Path(out)
    if out.is_symlink():
        raise PackError(f"{str(out)!r} is a symbolic link: packs never follow links; give a real folder")
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    settings = settings or TourSettings.from_env()
    data = prepare(runs, settings, log=log)
    index = {"format": PACK_FORMAT, "version": PACK_VERSION,
             "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
             "device": _device_name(), "settings": settings.to_dict(),
             "roles": {role: p.name for role, p in data.runs.items()}, "runs": []}
    for role, p in data.runs.items():
        _check_name(p.name, "run id")
        files = _run_files(p)
        cks = {rel.split("/", 1)[1]: dict(m) for rel, m in files.items()
               if rel.startswith("checkpoints/") and rel.count("/") == 1 and rel.endswith(".pt")}
        analyses = sorted(rel.rsplit("/", 1)[1] for rel in files
                          if rel.startswith("artifacts/analysis/") and rel.count("/") == 2 and rel.endswith(".json"))
        index["runs"].append({"id": p.name, "role": role,
                              "name": json.loads((p / "config.json").read_text()).get("name") or p.name,
                              "files": files, "checkpoints": cks, "analyses": analyses})
    extra = sorted(q.name for q in runs.iterdir() if q.name not in {r["id"] for r in index["runs"]})
    _check_index(index, out / "index.json")
    _write_json(out / "index.json", index)
    if log:
        if extra:
            log(f"note: {len(extra)} folder(s) in {runs} are not part of the pack and are not loaded: "
                f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
        log(f"pack written to {out} ({len(index['runs'])} runs, {sum(len(r['files']) for r in index['runs'])} "
            f"files, {sum(len(r['analyses']) for r in index['runs'])} analysis files)")
    return index


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu"


# ------------------------------------------------------------------ loading
def _retarget_config(run_dir: Path, rid: str, root: Path, runs: dict[str, dict]) -> None:
    """Make a copied run's config point only inside the runs folder.

    ``root`` becomes the runs folder, ``data.root`` (a dataset folder on the teacher's machine) is
    cleared, and ``data.poison`` must be ``.../<run id of the pack>/artifacts/poison.pt`` (that run
    holding the file): it is pointed at the copy.
    """
    cfg_path = run_dir / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackError(f"pack run {rid!r}: config.json is not valid JSON: {str(e).splitlines()[0]}") from e
    if not isinstance(cfg, dict) or not isinstance(cfg.get("data", {}), dict):
        raise PackError(f"pack run {rid!r}: config.json is not a run configuration (an object with a data section)")
    cfg["root"] = str(root)
    data = cfg.get("data")
    if data:
        if data.get("root") is not None:
            data["root"] = None
        poison = data.get("poison")
        if poison:
            parts = Path(str(poison)).parts if isinstance(poison, str) else ()
            if not (len(parts) >= 3 and parts[-2:] == ("artifacts", "poison.pt") and parts[-3] in runs
                    and "artifacts/poison.pt" in runs[parts[-3]]["files"]):
                raise PackError(f"pack run {rid!r}: data.poison {_show(poison)} is not the poison.pt of a run "
                                f"in the pack")
            data["poison"] = str(root / parts[-3] / "artifacts" / "poison.pt")
    atomic_write_bytes(cfg_path, (json.dumps(cfg, indent=2) + "\n").encode())


def _missing_dirs(root: Path) -> list[Path]:
    """The folders ``root.mkdir(parents=True)`` would create, outermost first (removed again after a failed load)."""
    missing = []
    p = Path(os.path.abspath(root))
    while not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    return missing[::-1]


def load_pack(pack: str | Path, root: str | Path = "runs", *, verify: bool = True,
              log: Callable[[str], None] | None = print, max_bytes: int = MAX_BYTES,
              max_files: int = MAX_FILES) -> dict:
    """Copy a pack's runs into ``root`` so that the tour and the panels show them without recomputation.

    The pack is untrusted: it is walked without following links, every file is checked against
    the SHA-256 in its index while it is copied into a hidden staging folder inside ``root``, the
    copies' ``.pt`` files are opened with ``weights_only=True`` (``verify``), the configs are
    pointed at ``root``, and only then are the run folders moved into place. A refused or failed
    load leaves nothing behind (no staging folder, no partial run folder, no new ``pack.json``).

    Runs already in ``root`` (same id) are kept (the pack's copy is still checked). Writes
    ``<root>/pack.json`` (the index plus where it came from); :func:`workbench.app.tour.prepare`
    then uses these runs and finds their saved analyses.

    Args:
        pack: the pack folder.
        root: the runs folder (created if needed).
        verify: also open every ``.pt`` file with ``torch.load(weights_only=True)`` (SHA-256 checks always run).
        log: receives the progress lines, e.g. the final summary (None: silent).
        max_bytes: cap on the pack's total size in bytes.
        max_files: cap on the pack's number of files and folders.

    Returns:
        The index written to ``<root>/pack.json``.

    Raises:
        PackError: a link, special file, unsafe name, malformed index, modified / missing / unlisted
            file, non-plain-tensor checkpoint or a size cap; the one-line message names the problem.
    """
    t0 = time.perf_counter()
    pack = _pack_dir(pack)
    index, _ = _inspect(pack, max_bytes, max_files)
    by_id = {r["id"]: r for r in index["runs"]}
    created = _missing_dirs(Path(root))
    stage: Path | None = None
    moved: list[Path] = []
    ok = False
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        root = Path(root).resolve()
        stage = Path(tempfile.mkdtemp(prefix=".pack-", suffix=".loading", dir=root))
        todo, kept = [], []
        for r in index["runs"]:
            rid = r["id"]
            dst = _inside(root, rid)
            src = pack / "runs" / rid
            if os.path.lexists(dst):  # kept; the pack's copy is checked all the same
                for rel, meta in sorted(r["files"].items()):
                    _copy_verified(src / rel, None, meta, rid, rel)
                kept.append(r)
                continue
            tmp = stage / rid
            tmp.mkdir()
            for rel, meta in sorted(r["files"].items()):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                _copy_verified(src / rel, tmp / rel, meta, rid, rel)
            todo.append(r)
        for r in todo:
            tmp = stage / r["id"]
            if verify:
                for rel in sorted(r["files"]):
                    if rel.endswith(".pt"):
                        _load_pt(tmp / rel, r["id"], rel)
            _retarget_config(tmp, r["id"], root, by_id)
            for rel, meta in r["files"].items():  # analysis cache keys include checkpoint mtimes
                if "mtime_ns" in meta and rel != "config.json":
                    os.utime(tmp / rel, ns=(time.time_ns(), meta["mtime_ns"]), follow_symlinks=False)
        if verify:
            for r in kept:
                for rel in sorted(r["files"]):
                    if rel.endswith(".pt"):
                        _load_pt(pack / "runs" / r["id"] / rel, r["id"], rel)
        for r in todo:
            dst = _inside(root, r["id"])
            if os.path.lexists(dst):
                raise PackError(f"{str(dst)!r} appeared while the pack was loading; load it again")
            os.rename(stage / r["id"], dst)
            moved.append(dst)
        for r in kept:  # restore checkpoint mtimes of runs already there (as earlier loads did)
            dst = _inside(root, r["id"])
            for name, meta in r.get("checkpoints", {}).items():
                ck = dst / "checkpoints" / name
                try:
                    st = os.lstat(ck)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_size == meta["size"] and "mtime_ns" in meta \
                        and ck.resolve().is_relative_to(root):
                    os.utime(ck, ns=(st.st_atime_ns, meta["mtime_ns"]), follow_symlinks=False)
        loaded = dict(index, source=str(pack),
                      loaded=_dt.datetime.now().astimezone().isoformat(timespec="seconds"))
        _write_json(root / PACK_INDEX, loaded)
        ok = True
    finally:
        if not ok:
            for d in moved:
                shutil.rmtree(d, ignore_errors=True)
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        if not ok:
            for d in reversed(created):
                try:
                    d.rmdir()
                except OSError:
                    break
    if log:
        log(f"pack {pack} loaded into {root}: {len(todo)} run(s) copied, {len(kept)} already there "
            f"({time.perf_counter() - t0:.1f} s)")
    return loaded
