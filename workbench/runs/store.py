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

Records in ``metrics.jsonl`` carry ``kind`` ("step" or "epoch"), ``attempt``
(1 for the first launch, +1 per resume), ``step`` (optimizer steps so far) and
``epoch``. When a run is resumed from a checkpoint older than the last records
(the kernel died mid-epoch), the new attempt first writes a ``resume`` record
with the checkpoint's step, and :func:`load_run` drops the earlier records beyond
that step, so curves never show an abandoned branch.

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

__all__ = ["effective_status", "Run", "RunData", "CheckpointError", "list_runs", "load_run", "atomic_write_bytes",
           "atomic_torch_save", "load_checkpoint", "STATUSES"]

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
        except (PermissionError, OSError, ValueError):
            pass
    return st


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupted or not loadable with ``weights_only=True``."""


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
                self._fh = open(self.path / "metrics.jsonl", "a", encoding="utf-8")
                if _ends_mid_line(self.path / "metrics.jsonl"):
                    self._fh.write("\n")  # a killed writer left half a line: start on a fresh one
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

    def read_metrics(self) -> list[dict]:
        """All records in file order; a truncated last line (a killed writer) is skipped."""
        return _read_jsonl(self.path / "metrics.jsonl")

    # ---------------------------------------------------------------- status
    def status(self) -> dict:
        p = self.path / "status.json"
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return {"status": "unknown"}

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


def _ends_mid_line(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # truncated by a killed writer
    return out


def _dedupe(records: Iterable[dict]) -> list[dict]:
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


def load_run(path: str | Path) -> RunData:
    """Load config, status, metrics (deduplicated across resumes) and checkpoint list.

    Raises:
        FileNotFoundError: not a run folder (no ``config.json``).
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a run folder (no config.json)")
    run = Run(path)
    records = _dedupe(run.read_metrics())
    steps = pd.DataFrame([r for r in records if r.get("kind") == "step"])
    epochs = pd.DataFrame([r for r in records if r.get("kind") == "epoch"])
    probes = pd.DataFrame([r for r in records if r.get("kind") == "probe"])
    return RunData(path=path, config=run.config(), status=run.status(), steps=steps, epochs=epochs,
                   checkpoints=run.checkpoints(), probes=probes)


_LIST_COLUMNS = ["run_id", "name", "status", "dataset", "model", "optimizer", "lr", "rho", "m", "batch_size",
                 "epochs", "seed", "epochs_done", "final_train_loss", "final_test_acc", "best_val_acc",
                 "created", "path"]


def list_runs(root: str | Path = "runs") -> pd.DataFrame:
    """One row per run folder under ``root`` (newest first).

    Columns: run_id, name, status (``interrupted`` when a running run's
    process is gone, see :func:`effective_status`), dataset, model, optimizer, lr, rho, m,
    batch_size, epochs, seed, epochs_done, final_train_loss, final_test_acc,
    best_val_acc, created, path. Unreadable folders are listed with status
    ``unreadable``. A missing ``root`` gives an empty frame.
    """
    root = Path(root)
    rows = []
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if not (p / "config.json").is_file():
                continue
            try:
                cfg = RunConfig.from_json(p / "config.json")
            except Exception as e:  # a hand-edited or foreign config
                rows.append({"run_id": p.name, "status": "unreadable", "name": str(e)[:80], "path": str(p)})
                continue
            run = Run(p)
            st = run.status()
            epochs = [r for r in _dedupe(run.read_metrics()) if r.get("kind") == "epoch"]
            last = epochs[-1] if epochs else {}
            vals = [r.get("val_acc") for r in epochs if r.get("val_acc") is not None]
            rows.append({
                "run_id": p.name, "name": cfg.display_name, "status": effective_status(st),
                "dataset": cfg.data.name, "model": cfg.model.name, "optimizer": cfg.optim.name,
                "lr": cfg.optim.lr, "rho": cfg.optim.rho if cfg.optim.is_sam else None,
                "m": cfg.optim.m, "batch_size": cfg.train.batch_size, "epochs": cfg.train.epochs,
                "seed": cfg.train.seed, "epochs_done": last.get("epoch", 0),
                "final_train_loss": last.get("train_loss"), "final_test_acc": last.get("test_acc"),
                "best_val_acc": max(vals) if vals else None, "created": st.get("created"), "path": str(p),
            })
    df = pd.DataFrame(rows, columns=_LIST_COLUMNS)
    if len(df):
        df = df.sort_values("run_id", ascending=False, ignore_index=True)
    return df
