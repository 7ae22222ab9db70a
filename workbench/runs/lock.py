"""An advisory lock on a run folder: one process trains a run folder at a time.

The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<run>/.lock``, held by the
trainer for the whole training (set-up, every epoch, the final status). The
holder writes ``"<pid> <host>"`` into the file so that a second process is told
who holds it. The operating system releases the lock when the holder's file
descriptor is closed, i.e. also when the process crashes or is killed: a stale
lock never blocks a resume (the PID left in the file by a killed holder is
ignored because the lock itself is free).

``flock`` locks belong to an open file description, so two trainers of the same
folder in one process exclude each other too. On a platform without ``fcntl``
(Windows) locking is a no-op. On network file systems ``flock`` may be local to
one machine.

No UI imports.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

try:  # pragma: no cover - always present on Linux / macOS
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["RunLock", "RunLockedError", "LOCK_FILE", "lock_holder"]

LOCK_FILE = ".lock"


class RunLockedError(OSError):
    """Another process (or trainer) holds the run folder's lock; the message is one line naming its PID.

    Attributes:
        path: the run folder; pid: the holder's PID (None when it has not written it yet); host: its host.
    """

    def __init__(self, path: str | Path, pid: int | None, host: str | None):
        self.path, self.pid, self.host = Path(path), pid, host
        who = f"process {pid}" if pid is not None else "another process"
        if host and host != socket.gethostname():
            who += f" on {host}"
        super().__init__(f"run folder {str(self.path)!r} is being trained by {who} (lock {LOCK_FILE}); "
                         "wait for it to end or stop it, then resume")

    def __str__(self) -> str:  # OSError's str would prefix errno fields
        return self.args[0]


def lock_holder(path: str | Path) -> tuple[int | None, str | None]:
    """``(pid, host)`` written in ``<path>/.lock`` (``(None, None)`` when empty or unreadable).

    This is who took the lock last; whether it still holds it only ``flock`` can tell.
    """
    try:
        text = (Path(path) / LOCK_FILE).read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return None, None
    pid = int(text[0]) if text and text[0].isdigit() else None
    host = text[1] if len(text) > 1 else None
    return pid, host


class RunLock:
    """The lock of one run folder. :meth:`acquire` never blocks; :meth:`release` is idempotent.

    Usable as a context manager (``with RunLock(path): ...``).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Take the lock and write this process' PID and host into the lock file.

        Raises:
            RunLockedError: another process or trainer holds it (the message names its PID).
            OSError: the lock file cannot be created (e.g. a read-only folder).
        """
        if self._fd is not None or fcntl is None:
            return self
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid, host = lock_holder(self.path)
            for _ in range(20):  # the holder writes its PID right after taking the lock
                if pid is not None:
                    break
                time.sleep(0.01)
                pid, host = lock_holder(self.path)
            raise RunLockedError(self.path, pid, host) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except OSError:  # the lock is what counts; the PID is a courtesy
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the lock file and release the lock (no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):  # pragma: no cover - a forgotten lock is released with its descriptor
        try:
            self.release()
        except Exception:
            pass
