"""Append-only JSON-lines logs: one writer and one reader for every log of the workbench.

``metrics.jsonl`` of a run, ``trials.jsonl`` of a sweep or a targeted-poisoning
study, ``comparison.jsonl`` / ``search.jsonl`` of the poisoning studies all go
through these functions, so they share one guarantee:

* **Writing** (:func:`open_for_append`, :func:`append_jsonl`): a writer killed
  mid-record leaves a torn last line (a fragment without ``\\n``). The next
  writer first terminates that fragment with a newline, then appends its record
  on a fresh line: no record is ever glued onto a fragment (and lost with it),
  and the fragment's bytes are kept as they are.
* **Reading** (:func:`read_jsonl`): blank lines and lines that are not JSON (a
  torn last line, or a torn line that a later writer terminated) are skipped.
  A line that *is* JSON but not an object, or bytes that are not UTF-8, are
  never written by the workbench (records are objects, ``json.dumps`` writes
  ASCII): with ``strict=True`` they raise :class:`LogError` naming the file and
  line, otherwise they are skipped with a :class:`RuntimeWarning`.

No UI imports.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import IO, Any, Callable

__all__ = ["LogError", "append_jsonl", "open_for_append", "read_jsonl", "ends_mid_line"]


class LogError(ValueError):
    """A JSON-lines log holds a line the workbench never writes (not UTF-8, or JSON that is not an object).

    Attributes:
        path: the log file; line: 1-based line number; reason: one line.
    """

    def __init__(self, path: str | Path, line: int, reason: str):
        self.path, self.line, self.reason = Path(path), int(line), reason
        super().__init__(f"{self.path.name} line {self.line}: {reason}")


def ends_mid_line(path: str | Path) -> bool:
    """Whether ``path`` is a non-empty file whose last byte is not ``\\n`` (a torn last line)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


def open_for_append(path: str | Path) -> IO[str]:
    """Open a JSON-lines log for appending (created if missing), positioned on a fresh line.

    If the file ends with a torn line (a killed writer), a newline is written first so that
    the next record starts on its own line.

    Raises:
        OSError: the file cannot be opened (e.g. ``IsADirectoryError``).
    """
    path = Path(path)
    torn = ends_mid_line(path)
    f = open(path, "a", encoding="utf-8")
    if torn:
        try:
            f.write("\n")
            f.flush()
        except BaseException:
            f.close()
            raise
    return f


def append_jsonl(path: str | Path, record: dict, *, default: Callable[[Any], Any] | None = None,
                 fsync: bool = False) -> None:
    """Append one record (one line) to a JSON-lines log, repairing a torn last line first.

    The line is serialised before the file is opened (a record that cannot be serialised
    raises ``TypeError`` and writes nothing), written with one ``write`` call and flushed
    (``fsync=True``: also fsynced).

    Raises:
        TypeError: ``record`` is not JSON-serialisable (with ``default``).
        OSError: the file cannot be written.
    """
    line = json.dumps(record, default=default, allow_nan=True) + "\n"
    with open_for_append(path) as f:
        f.write(line)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def read_jsonl(path: str | Path, *, strict: bool = False) -> list[dict]:
    """The records (JSON objects) of a JSON-lines log, in file order; ``[]`` for a missing file.

    Skipped silently: blank lines and lines that are not valid JSON (torn by a killed writer,
    see the module docstring). A line that is valid JSON but not an object, or a complete
    line that is not UTF-8, raises :class:`LogError` when ``strict`` (else it is skipped
    with a ``RuntimeWarning`` naming the file and line). A torn last line is never an error.

    Raises:
        LogError: ``strict`` and a line the workbench never writes.
        OSError: the path exists but cannot be read (e.g. ``IsADirectoryError``).
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    out: list[dict] = []
    for i, raw in enumerate(lines):
        last_torn = i == len(lines) - 1  # bytes after the last newline: a torn line (or b"")
        if not raw.strip():
            continue
        problem = None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if last_torn:
                continue
            problem = f"not UTF-8 text (byte {e.start} of the line)"
        else:
            try:
                obj = json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                continue  # a torn line
            if isinstance(obj, dict):
                out.append(obj)
                continue
            problem = f"a JSON {type(obj).__name__}, expected an object"
        if strict:
            raise LogError(path, i + 1, problem)
        warnings.warn(f"{path}: line {i + 1} skipped: {problem}", RuntimeWarning, stacklevel=2)
    return out
