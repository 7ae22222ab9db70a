"""Run store: one folder per run (config, status, metrics, checkpoints, artifacts)."""
from .store import (STATUSES, CheckpointError, Run, RunData, atomic_torch_save, atomic_write_bytes, list_runs,
                    load_checkpoint, load_run)

__all__ = ["Run", "RunData", "CheckpointError", "list_runs", "load_run", "load_checkpoint", "atomic_torch_save",
           "atomic_write_bytes", "STATUSES"]
