"""Run store: one folder per run (config, status, metrics, checkpoints, artifacts)."""
from .lock import RunLock, RunLockedError
from .logs import LogError, append_jsonl, read_jsonl
from .store import (STATUSES, CheckpointError, CorruptRunError, Run, RunData, atomic_torch_save, atomic_write_bytes,
                    is_run_folder, list_runs, load_checkpoint, load_run, load_runs, run_folders)

__all__ = ["Run", "RunData", "CheckpointError", "CorruptRunError", "RunLock", "RunLockedError", "LogError",
           "list_runs", "load_run", "load_runs", "run_folders", "is_run_folder", "load_checkpoint",
           "atomic_torch_save", "atomic_write_bytes", "append_jsonl", "read_jsonl", "STATUSES"]
