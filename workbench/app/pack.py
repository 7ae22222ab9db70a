"""Results packs: the runs and analyses behind the guided tour's figures, prepared once, shown anywhere.

A teacher builds a pack where computing is cheap (``workbench pack build`` on a GPU
machine, or the night before) and loads it on the classroom laptops
(``workbench pack load``); the tour and its panels then show every figure at once.

Layout of a pack (a plain folder; zip or copy it as it is)::

    <pack>/
        index.json           {"format": "workbench-pack", "version": 1, "created", "device", "settings",
                              "roles": {role: run id}, "runs": [{"id", "role", "name", "checkpoints":
                              {file: {"size", "sha256", "mtime_ns"}}, "analyses": [artifact names]}]}
        runs/<run id>/       ordinary run folders (config.json, metrics.jsonl, checkpoints/, artifacts/
                             with analysis/ results and poison.pt)

Loading (:func:`load_pack`) never unpickles code: the index is JSON, every checkpoint
is verified by SHA-256 and opened with ``torch.load(..., weights_only=True,
map_location="cpu")`` (a pack made on CUDA loads on a CPU-only laptop); the run folders
are copied into the runs folder and ``<runs>/pack.json`` records the roles. The
analysis cache keys include each checkpoint's modification time, so loading restores
the recorded ``mtime_ns`` (archives often round it) and saved results are found
instead of recomputed.

No UI imports.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from ..runs.store import atomic_write_bytes, load_checkpoint
from .tour import PACK_INDEX, TourSettings, prepare

__all__ = ["PACK_FORMAT", "PACK_VERSION", "PackError", "build_pack", "load_pack", "read_index", "verify_pack"]

PACK_FORMAT = "workbench-pack"
PACK_VERSION = 1


class PackError(ValueError):
    """A folder is not a valid results pack (missing/invalid index, checkpoint mismatch, foreign format)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def build_pack(out: str | Path, settings: TourSettings | None = None, *,
               log: Callable[[str], None] | None = print) -> dict:
    """Compute the guided tour's runs and analyses into ``out/runs`` and write ``out/index.json``.

    Args:
        out: the pack folder (created; an existing pack there is completed, not recomputed).
        settings: the tour's sizes (default: :meth:`TourSettings.from_env`, i.e. the tour's defaults).
            The runs train on ``device: auto`` (CUDA, then MPS, then CPU).
        log: one line per step (None: silent).

    Returns:
        The index (also written to ``out/index.json``).
    """
    out = Path(out)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    settings = settings or TourSettings.from_env()
    data = prepare(runs, settings, log=log)
    index = {"format": PACK_FORMAT, "version": PACK_VERSION,
             "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
             "device": _device_name(), "settings": settings.to_dict(),
             "roles": {role: p.name for role, p in data.runs.items()}, "runs": []}
    for role, p in data.runs.items():
        cks = {}
        for ck in sorted((p / "checkpoints").glob("*.pt")):
            if ck.name.startswith("."):
                continue
            st = ck.stat()
            cks[ck.name] = {"size": st.st_size, "sha256": _sha256(ck), "mtime_ns": st.st_mtime_ns}
        analyses = sorted(q.name for q in (p / "artifacts" / "analysis").glob("*.json")) \
            if (p / "artifacts" / "analysis").is_dir() else []
        index["runs"].append({"id": p.name, "role": role, "name": json.loads((p / "config.json").read_text()).get("name")
                              or p.name, "checkpoints": cks, "analyses": analyses})
    _write_json(out / "index.json", index)
    if log:
        log(f"pack written to {out} ({len(index['runs'])} runs, {sum(len(r['analyses']) for r in index['runs'])} "
            f"analysis files)")
    return index


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu"


def read_index(pack: str | Path) -> dict:
    """The pack's ``index.json``, checked for format and version.

    Raises:
        PackError: no index, not JSON, another format, or a newer version.
    """
    p = Path(pack) / "index.json"
    if not p.is_file():
        raise PackError(f"{str(pack)!r} is not a results pack: no index.json (build one with 'workbench pack build')")
    try:
        index = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PackError(f"{str(p)!r} is not valid JSON: {e}") from e
    if not isinstance(index, dict) or index.get("format") != PACK_FORMAT:
        raise PackError(f"{str(p)!r} is not a workbench results pack (format={index.get('format') if isinstance(index, dict) else None!r})")
    if int(index.get("version", 0)) > PACK_VERSION:
        raise PackError(f"{str(p)!r} has version {index.get('version')}; this workbench reads up to {PACK_VERSION}")
    return index


def verify_pack(pack: str | Path, *, load: bool = True) -> dict:
    """Check every run folder and checkpoint of a pack against its index.

    Checkpoints must match their recorded size and SHA-256 and (``load``) open with
    ``torch.load(..., weights_only=True, map_location="cpu")``.

    Raises:
        PackError: a run folder or checkpoint is missing, altered or not a plain-tensor checkpoint.
    """
    pack = Path(pack)
    index = read_index(pack)
    for r in index.get("runs", []):
        d = pack / "runs" / r["id"]
        if not (d / "config.json").is_file():
            raise PackError(f"pack run {r['id']!r} is missing (no {d}/config.json)")
        for name, meta in r.get("checkpoints", {}).items():
            ck = d / "checkpoints" / name
            if not ck.is_file() or ck.stat().st_size != meta["size"] or _sha256(ck) != meta["sha256"]:
                raise PackError(f"checkpoint {str(ck)!r} is missing or differs from the pack index (size/SHA-256)")
            if load:
                try:
                    load_checkpoint(ck, map_location="cpu")
                except Exception as e:
                    raise PackError(str(e)) from e
    return index


def _retarget_poison(run_dir: Path, old_root: Path, new_root: Path, ids: set[str]) -> None:
    """Point ``data.poison`` of a copied run at the copied crafting run (paths inside the pack)."""
    cfg_path = run_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    poison = (cfg.get("data") or {}).get("poison")
    if not poison:
        return
    p = Path(poison)
    # .../<run id>/artifacts/poison.pt with <run id> one of the pack's runs
    if len(p.parts) >= 3 and p.parts[-3] in ids:
        cfg["data"]["poison"] = str(new_root / p.parts[-3] / p.parts[-2] / p.parts[-1])
        atomic_write_bytes(cfg_path, (json.dumps(cfg, indent=2) + "\n").encode())


def load_pack(pack: str | Path, root: str | Path = "runs", *, verify: bool = True,
              log: Callable[[str], None] | None = print) -> dict:
    """Copy a pack's runs into ``root`` so that the tour and the panels show them without recomputation.

    Runs already in ``root`` (same id) are kept. Writes ``<root>/pack.json`` (the index
    plus where it came from); :func:`workbench.app.tour.prepare` then uses these runs and
    finds their saved analyses.

    Returns:
        The index written to ``<root>/pack.json``.

    Raises:
        PackError: see :func:`verify_pack`.
    """
    t0 = time.perf_counter()
    pack, root = Path(pack).resolve(), Path(root)
    index = verify_pack(pack, load=True) if verify else read_index(pack)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    ids = {r["id"] for r in index.get("runs", [])}
    copied = 0
    for r in index.get("runs", []):
        src, dst = pack / "runs" / r["id"], root / r["id"]
        if not dst.exists():
            tmp = root / f".{r['id']}.loading"
            if tmp.exists():
                shutil.rmtree(tmp)
            shutil.copytree(src, tmp)
            os.replace(tmp, dst)
            copied += 1
        _retarget_poison(dst, pack / "runs", root, ids)
        for name, meta in r.get("checkpoints", {}).items():  # analysis cache keys include the mtime
            ck = dst / "checkpoints" / name
            if ck.is_file() and ck.stat().st_size == meta["size"] and "mtime_ns" in meta:
                os.utime(ck, ns=(ck.stat().st_atime_ns, int(meta["mtime_ns"])))
    loaded = dict(index, source=str(pack), loaded=_dt.datetime.now().astimezone().isoformat(timespec="seconds"))
    _write_json(root / PACK_INDEX, loaded)
    if log:
        log(f"pack {pack} loaded into {root}: {copied} run(s) copied, {len(ids) - copied} already there "
            f"({time.perf_counter() - t0:.1f} s)")
    return loaded
