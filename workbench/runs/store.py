"""Run store: one folder per run, nothing lost, nothing unpickled.

Layout of a run folder::

    <root>/<YYYYmmdd-HHMMSS>-<name>-<id>/
        config.json        the RunConfig (JSON)
        status.json        {"status": running|paused|finished|stopped|diverged|failed, "error": ..., ...}
                           written atomically (temp file + os.replace)
        metrics.jsonl      one JSON record per line, appended and flushed per record
        checkpoints/       last.pt (+ epoch_XXXX.pt), written atomically, read with
                           torch.load(..., weights_only=True)
        artifacts/         analysis results, figures, poisons
        .lock              advisory lock of the process training the run (see :mod:`workbench.runs.lock`)

Records in ``metrics.jsonl`` carry ``kind`` ("step" or "epoch"), ``attempt``
(1 for the first launch, +1 per resume), ``step`` (optimizer steps so far) and
``epoch``. When a run is resumed from a checkpoint older than the last records
(the kernel died mid-epoch), the new attempt first writes a ``resume`` record
with the checkpoint's step, and :func:`load_run` drops the earlier records beyond
that step, so curves never show an abandoned branch. All JSON-lines logs are
written and read by :mod:`workbench.runs.logs` (a torn last line is terminated
before the next append and skipped when read).

A folder that looks like a run (it has ``config.json``, ``metrics.jsonl`` or
``checkpoints/``, or a run folder's name and a ``status.json``) but whose files
cannot be read is *corrupt*: :func:`load_run` raises :class:`CorruptRunError`
(reason and folder in one line) and :func:`list_runs` lists it with status
``corrupt`` beside every healthy run. Corrupt means: ``config.json`` missing,
not UTF-8, not JSON, not a valid run config, or a folder; ``status.json`` not
UTF-8, not a JSON object, or a folder; ``metrics.jsonl`` with a line that is JSON
but not an object, or not UTF-8, or a folder; ``checkpoints`` a file. A torn
last line of ``metrics.jsonl`` and a missing ``status.json`` (status
``unknown``) are not corruption.

No UI imports.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch

from ..config import RunConfig
from .lock import RunLock, RunLockedError
from . import logs as _logs
from .logs import LogError, read_jsonl

__all__ = ["effective_status", "dedupe_records", "Run", "RunData", "CheckpointError", "CorruptRunError", "RunLockedError", "list_runs",
           "load_run", "load_runs", "run_folders", "is_run_folder", "atomic_write_bytes", "atomic_torch_save", "file_sha256",
           "load_checkpoint", "STATUSES"]

STATUSES = ("created", "running", "paused", "finished", "stopped", "diverged", "failed")


def effective_status(status: dict) -> str:
    """The status, with ``interrupted`` for a running/paused run whose process is gone.

    A killed kernel cannot update ``status.json``; the trainer records its pid
    and host, so a run on this host whose process no longer exists is reported
    as ``interrupted`` (resume it with ``Trainer.from_run``).
    """
    st = status.get("status", "unknown")
    if st in ("running", "paused") and status.get("host") == socket.gethostname() and status.get("pid"):
        try:
            os.kill(int(status["pid"]), 0)
        except ProcessLookupError:
            return "interrupted"
        except (PermissionError, OSError, ValueError, TypeError, OverflowError):
            pass
    return st


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupted or not loadable with ``weights_only=True``."""


class CorruptRunError(ValueError):
    """A run folder whose files cannot be read (see the module docstring for what counts).

    The message is one line: ``run folder '<path>' is corrupt: <reason>``.

    Attributes:
        path: the run folder; reason: what is wrong, one line.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), " ".join(str(reason).split())
        super().__init__(f"run folder {str(self.path)!r} is corrupt: {self.reason}")


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes as 64 hex digits, read in 1 MiB chunks (packs, the bundled MNIST files)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file beside ``path``, fsync, then ``os.replace``.

    A reader never sees a half-written checkpoint: it sees the old file or the new one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict:
    """Load a checkpoint with ``torch.load(..., weights_only=True)``.

    Raises:
        CheckpointError: the file is missing, truncated or corrupted, or holds
            objects that are not plain tensors/containers (never unpickled).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError/zipfile errors
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupted, truncated or not a plain-tensor checkpoint "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            f"Resume from another checkpoint in {str(path.parent)!r} or start the run again."
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, expected a dict")
    return obj


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9.=_-]+", "-", text).strip("-")
    return s[:60] or "run"


class Run:
    """Handle on one run folder (create with :meth:`create`, open with ``Run(path)``).

    Thread-safe for appends and status updates (a lock serialises writers).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"run folder {str(self.path)!r} does not exist")
        self._lock = threading.Lock()
        self._fh = None

    # -------------------------------------------------------------- creation
    @classmethod
    def create(cls, root: str | Path, config: RunConfig) -> "Run":
        """Create a new, uniquely named run folder under ``root`` and write ``config.json``."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        for _ in range(100):
            path = root / f"{stamp}-{_slug(config.display_name)}-{uuid.uuid4().hex[:6]}"
            try:
                path.mkdir()
                break
            except FileExistsError:  # pragma: no cover - 24 random bits
                continue
        else:  # pragma: no cover
            raise RuntimeError(f"could not create a unique run folder under {root}")
        (path / "checkpoints").mkdir()
        (path / "artifacts").mkdir()
        atomic_write_bytes(path / "config.json", (config.to_json() + "\n").encode())
        (path / "metrics.jsonl").touch()
        run = cls(path)
        run.set_status("created", created=_now())
        return run

    # ---------------------------------------------------------------- basics
    @property
    def id(self) -> str:
        return self.path.name

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def artifact_dir(self) -> Path:
        d = self.path / "artifacts"
        d.mkdir(exist_ok=True)
        return d

    def config(self) -> RunConfig:
        return RunConfig.from_json(self.path / "config.json")

    def write_config(self, config: RunConfig) -> None:
        atomic_write_bytes(self.path / "config.json", (config.to_json() + "\n").encode())

    # --------------------------------------------------------------- metrics
    def append(self, record: dict) -> None:
        """Append one JSON record to ``metrics.jsonl`` and flush it to the OS."""
        line = json.dumps(record, allow_nan=True, default=_json_default) + "\n"
        with self._lock:
            if self._fh is None or self._fh.closed:
                # a killed writer may have left half a line: the shared opener starts on a fresh one
                self._fh = _logs.open_for_append(self.path / "metrics.jsonl")
            self._fh.write(line)
            self._fh.flush()

    def sync(self) -> None:
        """fsync ``metrics.jsonl`` (called at epoch ends; appends are flushed anyway)."""
        with self._lock:
            if self._fh is not None and not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())

    def close(self) -> None:
        with self._lock:
            if self._fh is not None and not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
            self._fh = None

    def read_metrics(self, strict: bool = False) -> list[dict]:
        """All records in file order; torn lines (a killed writer) are skipped.

        Raises:
            LogError: ``strict`` and a line that is not UTF-8 or JSON but not an object
                (otherwise such a line is skipped with a warning).
        """
        return read_jsonl(self.path / "metrics.jsonl", strict=strict)

    # ------------------------------------------------------------------ lock
    def lock(self) -> RunLock:
        """Take the folder's advisory lock (see :mod:`workbench.runs.lock`); release it with ``.release()``.

        Raises:
            RunLockedError: another process or trainer holds it (the message names its PID).
        """
        return RunLock(self.path).acquire()

    # ---------------------------------------------------------------- status
    def status(self) -> dict:
        """Content of ``status.json``; ``{"status": "unknown"}`` when it is missing or unreadable."""
        p = self.path / "status.json"
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # ValueError: JSON and UTF-8 decoding errors
            return {"status": "unknown"}
        return d if isinstance(d, dict) else {"status": "unknown"}

    def set_status(self, status: str, **info: Any) -> dict:
        """Update ``status.json`` atomically, merging ``info`` into the previous content."""
        if status not in STATUSES:
            raise ValueError(f"status={status!r} is invalid: choose one of {STATUSES}")
        with self._lock:
            d = self.status() if (self.path / "status.json").exists() else {}
            d.pop("status", None)
            if status in ("running", "created"):
                d.pop("error", None)
            d.update(info)
            d = {"status": status, "updated": _now(), **{k: v for k, v in d.items() if k != "updated"}}
            atomic_write_bytes(self.path / "status.json", (json.dumps(d, indent=2, default=_json_default) + "\n").encode())
            return d

    # ----------------------------------------------------------- checkpoints
    def save_checkpoint(self, state: dict, name: str = "last.pt") -> Path:
        path = self.checkpoint_dir / name
        self.checkpoint_dir.mkdir(exist_ok=True)
        atomic_torch_save(state, path)
        return path

    def checkpoints(self) -> list[Path]:
        return sorted(p for p in self.checkpoint_dir.glob("*.pt") if not p.name.startswith("."))

    def load_checkpoint(self, name: str = "last.pt", map_location="cpu") -> dict:
        return load_checkpoint(self.checkpoint_dir / name, map_location=map_location)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def _json_default(o: Any):
    if isinstance(o, torch.Tensor):
        return o.item() if o.numel() == 1 else o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


def dedupe_records(records: Iterable[dict]) -> list[dict]:
    """Drop records of abandoned branches.

    A resumed attempt writes ``{"kind": "resume", "step": s, ...}`` where ``s``
    is the checkpoint's step; records written earlier with a step beyond ``s``
    belong to a branch that the checkpoint no longer contains and are dropped.
    """
    out: list[dict] = []
    for r in records:
        if r.get("kind") == "resume":
            s = r.get("step", 0)
            out = [q for q in out if q.get("step", 0) <= s]
        out.append(r)
    return out


@dataclass
class RunData:
    """Everything on disk about one run, loaded.

    Attributes:
        path: run folder.
        config: the :class:`RunConfig`.
        status: content of ``status.json``.
        steps: DataFrame of step records (columns step, epoch, loss, acc, lr, grad_norm, ...).
        epochs: DataFrame of epoch records (epoch, step, train_loss, train_acc, val_*, test_*, ...).
        checkpoints: checkpoint files, oldest name first.
        probes: DataFrame of probe records (name, epoch, step, seconds, the probe's values).
    """

    path: Path
    config: RunConfig
    status: dict
    steps: pd.DataFrame
    epochs: pd.DataFrame
    checkpoints: list[Path] = field(default_factory=list)
    probes: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def name(self) -> str:
        return self.config.display_name

    def load_checkpoint(self, name: str = "last.pt", map_location="cpu") -> dict:
        return load_checkpoint(self.path / "checkpoints" / name, map_location=map_location)

    def load_model(self, name: str = "last.pt", device="cpu"):
        """Rebuild the model from the config and load weights from a checkpoint.

        Needs the data's input shape and class count, which are stored in the checkpoint.
        """
        from ..models import build_model  # local import: models import torch only

        ck = self.load_checkpoint(name, map_location=device)
        shape = tuple(ck["input_shape"])
        model = build_model(self.config.model, shape, int(ck["num_classes"]))
        model.load_state_dict(ck["model"])
        return model.to(device)


_RUN_NAME = re.compile(r"^\d{8}-\d{6}-.+-[0-9a-f]{6}$")


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder that looks like a run folder, healthy or corrupt.

    True when it holds ``config.json``, ``metrics.jsonl`` or ``checkpoints`` (of any
    file type), or has a run folder's name (``YYYYmmdd-HHMMSS-<name>-<6 hex>``) and a
    ``status.json``. A study folder (``study.yaml``, ``trials.jsonl``, ``status.json``) is not.
    """
    path = Path(path)
    try:
        if not path.is_dir() or path.name.startswith("."):
            return False
        if any(os.path.lexists(path / n) for n in ("config.json", "metrics.jsonl", "checkpoints")):
            return True
        return bool(_RUN_NAME.match(path.name)) and os.path.lexists(path / "status.json")
    except OSError:
        return False


def run_folders(root: str | Path) -> list[Path]:
    """The run folders (healthy or corrupt, see :func:`is_run_folder`) directly under ``root``, sorted by name.

    A missing or unreadable ``root`` gives ``[]``.
    """
    root = Path(root)
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    return [p for p in entries if is_run_folder(p)]


def _read_json_file(folder: Path, name: str, *, missing=None):
    """The JSON content of ``folder/name``; ``missing`` (when not None) for an absent file.

    Raises:
        CorruptRunError: absent (``missing`` is None), a folder, unreadable, not UTF-8 or not JSON.
    """
    p = folder / name
    if p.is_dir():
        raise CorruptRunError(folder, f"{name} is a folder, expected a file")
    if not p.exists():
        if missing is not None:
            return missing
        raise CorruptRunError(folder, f"{name} is missing")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CorruptRunError(folder, f"{name} cannot be read ({e.strerror or type(e).__name__})") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptRunError(folder, f"{name} is not UTF-8 text (byte {e.start})") from e
    if not text.strip():
        raise CorruptRunError(folder, f"{name} is empty")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        where = f"{e.msg} at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else "too deep"
        raise CorruptRunError(folder, f"{name} is not valid JSON, truncated or garbled ({where})") from e


def _read_parts(path: Path) -> tuple[RunConfig, dict, list[dict]]:
    """``(config, status, metric records)`` of a run folder, every file checked.

    Raises:
        CorruptRunError: see the module docstring.
    """
    raw = _read_json_file(path, "config.json")
    if not isinstance(raw, dict):
        raise CorruptRunError(path, f"config.json holds a JSON {type(raw).__name__}, expected an object")
    try:
        cfg = RunConfig.from_dict(raw)
    except Exception as e:  # the config classes raise ValueError/TypeError, odd content anything
        raise CorruptRunError(path, f"config.json is not a valid run config ({type(e).__name__}: {e})") from e
    status = _read_json_file(path, "status.json", missing={"status": "unknown"})
    if not isinstance(status, dict):
        raise CorruptRunError(path, f"status.json holds a JSON {type(status).__name__}, expected an object")
    if not isinstance(status.get("status", ""), str):
        raise CorruptRunError(path, f"status.json: status is {status.get('status')!r}, expected a string")
    m = path / "metrics.jsonl"
    if m.is_dir():
        raise CorruptRunError(path, "metrics.jsonl is a folder, expected a file")
    try:
        records = read_jsonl(m, strict=True)
    except LogError as e:
        raise CorruptRunError(path, str(e)) from e
    except OSError as e:
        raise CorruptRunError(path, f"metrics.jsonl cannot be read ({e.strerror or type(e).__name__})") from e
    ck = path / "checkpoints"
    if os.path.lexists(ck) and not ck.is_dir():
        raise CorruptRunError(path, "checkpoints is a file, expected a folder")
    return cfg, status, records


def load_run(path: str | Path) -> RunData:
    """Load config, status, metrics (deduplicated across resumes) and checkpoint list.

    Every file is checked: a run folder never loads half-read.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a run folder (no ``config.json``,
            ``metrics.jsonl`` or ``checkpoints/``).
        CorruptRunError: a run folder whose files cannot be read (``config.json`` missing,
            garbled or a folder, ``status.json`` not an object, ...; see the module docstring).
            A ``ValueError``: the CLI prints it as one ``error:`` line.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {str(path)!r} does not exist")
    if not is_run_folder(path):
        raise FileNotFoundError(f"{str(path)!r} is not a run folder (no config.json)")
    cfg, status, records = _read_parts(path)
    run = Run(path)
    records = dedupe_records(records)
    steps = pd.DataFrame([r for r in records if r.get("kind") == "step"])
    epochs = pd.DataFrame([r for r in records if r.get("kind") == "epoch"])
    probes = pd.DataFrame([r for r in records if r.get("kind") == "probe"])
    return RunData(path=path, config=cfg, status=status, steps=steps, epochs=epochs,
                   checkpoints=run.checkpoints(), probes=probes)


def load_runs(paths: Iterable[str | Path], *, warn: Any = None) -> list[RunData]:
    """:func:`load_run` of every path, skipping corrupt runs with one warning line each.

    Args:
        paths: run folders.
        warn: called with each warning line (default: printed to ``sys.stderr``):
            ``warning: skipping run folder '<path>': <reason>``.

    Raises:
        FileNotFoundError: a path that is not a run folder at all.
    """
    import sys

    out = []
    for p in paths:
        try:
            out.append(load_run(p))
        except CorruptRunError as e:
            line = f"warning: skipping run folder {str(e.path)!r}: corrupt: {e.reason}"
            if warn is None:
                print(line, file=sys.stderr)
            else:
                warn(line)
    return out


_LIST_COLUMNS = ["run_id", "name", "status", "dataset", "model", "optimizer", "lr", "rho", "m", "batch_size",
                 "epochs", "seed", "epochs_done", "final_train_loss", "final_test_acc", "best_val_acc",
                 "created", "path", "reason"]


def list_runs(root: str | Path = "runs") -> pd.DataFrame:
    """One row per run folder under ``root`` (newest first); one bad run never hides the others.

    Columns: run_id, name, status (``interrupted`` when a running run's
    process is gone, see :func:`effective_status`), dataset, model, optimizer, lr, rho, m,
    batch_size, epochs, seed, epochs_done, final_train_loss, final_test_acc,
    best_val_acc, created, path, reason. A corrupt run folder (see the module docstring)
    is listed with status ``corrupt``, ``reason`` saying what is wrong (one line), its
    ``path``, its folder name as ``name`` and the other columns empty; ``reason`` is
    empty for healthy runs. A missing ``root`` gives an empty frame. Never raises for
    the content of a run folder.
    """
    rows = []
    for p in run_folders(root):
        try:
            cfg, st, records = _read_parts(p)
        except CorruptRunError as e:
            rows.append({"run_id": p.name, "name": p.name, "status": "corrupt", "path": str(p), "reason": e.reason})
            continue
        epochs = [r for r in dedupe_records(records) if r.get("kind") == "epoch"]
        last = epochs[-1] if epochs else {}
        vals = [r.get("val_acc") for r in epochs if r.get("val_acc") is not None]
        rows.append({
            "run_id": p.name, "name": cfg.display_name, "status": effective_status(st),
            "dataset": cfg.data.name, "model": cfg.model.name, "optimizer": cfg.optim.name,
            "lr": cfg.optim.lr, "rho": cfg.optim.rho if cfg.optim.is_sam else None,
            "m": cfg.optim.m, "batch_size": cfg.train.batch_size, "epochs": cfg.train.epochs,
            "seed": cfg.train.seed, "epochs_done": last.get("epoch", 0),
            "final_train_loss": last.get("train_loss"), "final_test_acc": last.get("test_acc"),
            "best_val_acc": _max_or_none(vals), "created": st.get("created"), "path": str(p), "reason": None,
        })
    df = pd.DataFrame(rows, columns=_LIST_COLUMNS)
    if len(df):
        df = df.sort_values("run_id", ascending=False, ignore_index=True)
    return df


def _max_or_none(vals: list):
    try:
        return max(vals) if vals else None
    except TypeError:  # a hand-edited record with a non-numeric value
        return None
