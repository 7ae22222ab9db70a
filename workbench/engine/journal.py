"""The study journal: one append-only JSON-lines log per study, the latest record per key wins.

Every study of the workbench (sweeps, the poisoning comparison and Table 4.1 search,
targeted-poisoning trials, the bilevel study) records what it did in a :class:`Journal`:

* **Append-only.** A record is one JSON object on one line, appended and flushed as soon as
  the unit of work (a trial, a run, a repetition) ends. Nothing is ever rewritten, so a
  killed study loses only the unit that was running.
* **Torn-line tolerant.** Writing and reading go through :mod:`workbench.runs.logs`: a torn
  last line left by a killed writer is terminated before the next append and skipped when
  read.
* **Latest wins.** Each record has a key (``trial_id``; ``(trial, defense)``; ...). A key
  may be recorded several times (``running`` then ``finished``; a failed trial tried again
  on resume): :meth:`Journal.latest` keeps the last record of every key, in the order the
  keys first appeared.
* **A bound definition.** :func:`bind_spec` writes the study's definition and its hash
  (:func:`spec_hash`) beside the journal on first use; a resumed study whose definition
  changed is refused with a one-line :class:`SpecMismatchError` instead of mixing records of
  two different studies.

No UI imports.
"""
from __future__ import annotations

import hashlib
import json
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

from ..runs.logs import append_jsonl, read_jsonl
from ..runs.store import atomic_write_bytes

__all__ = ["Journal", "SpecMismatchError", "bind_spec", "spec_hash", "latest_by", "config_core"]


def spec_hash(definition: Any, n: int = 10) -> str:
    """The first ``n`` hex digits of the SHA-1 of ``definition`` as canonical JSON (sorted keys, ``str`` fallback)."""
    return hashlib.sha1(json.dumps(definition, sort_keys=True, default=str).encode()).hexdigest()[:n]


def config_core(cfg) -> dict:
    """The part of a :class:`~workbench.config.RunConfig` that defines a study's results (a dict).

    All of it but ``name``, ``root``, ``tags`` and ``train.seed``: the study sets those per run.
    """
    d = cfg.to_dict()
    for k in ("name", "root", "tags"):
        d.pop(k, None)
    d["train"].pop("seed", None)
    return d


class SpecMismatchError(ValueError):
    """A study folder holds a different study definition than the one being run; the message is one line.

    Attributes:
        path: the definition file; stored, given: the two hashes.
    """

    def __init__(self, path: str | Path, what: str, stored: str | None, given: str, hint: str = ""):
        self.path, self.stored, self.given = Path(path), stored, given
        why = f": {hint}" if hint else ""
        super().__init__(f"{str(self.path.parent)!r} holds a different {what} (its {self.path.name} differs{why}); "
                         "choose another name= or root=")


def bind_spec(file: str | Path, definition: Mapping[str, Any], *, what: str, hint: str = "",
              extra: Mapping[str, Any] | None = None) -> dict:
    """Bind a study folder to its definition: write it on first use, refuse a different one afterwards.

    The file holds ``{"hash": spec_hash(definition), **definition, **extra}``; ``extra`` (for
    example the full base config or a creation time) is stored but not hashed. The folder is
    created when missing.

    Args:
        file: the definition file (``<study>/spec.json``, ``comparison.json``, ...).
        definition: what makes the study's records valid (JSON-able).
        what: the study's kind in the error message (``"poison comparison"``).
        hint: what the definition covers, for the error message.
        extra: stored beside the definition, not hashed.

    Returns:
        The stored content (the existing file's when it matches).

    Raises:
        SpecMismatchError: the file exists and its ``hash`` differs.
    """
    file = Path(file)
    h = spec_hash(dict(definition))
    if file.exists():
        old = json.loads(file.read_text(encoding="utf-8"))
        stored = old.get("hash") if isinstance(old, dict) else None
        if stored != h:
            raise SpecMismatchError(file, what, stored, h, hint)
        return old
    file.parent.mkdir(parents=True, exist_ok=True)
    content = {"hash": h, **dict(definition), **dict(extra or {})}
    atomic_write_bytes(file, (json.dumps(content, indent=1, default=str) + "\n").encode())
    return content


def latest_by(records: Iterable[dict], key: Callable[[dict], Hashable]) -> dict:
    """``{key(record): record}`` keeping the last record of every key, keys in order of first appearance."""
    out: dict = {}
    for r in records:
        out[key(r)] = r
    return out


class Journal:
    """An append-only JSON-lines log of a study (see the module docstring).

    Args:
        path: the log file (``<study>/trials.jsonl``, ...); its folder must exist when appending.
        key: the field name(s) that identify a unit of work, or a callable ``record -> key``.
            With field names, a record missing one of them is skipped by :meth:`latest` with a
            ``RuntimeWarning``; a single name gives scalar keys, several give tuples.
        default: ``json.dumps`` fallback for values that are not JSON (``str``; ``float`` for numpy scalars).

    Appends from several threads of one process are serialised by a lock.
    """

    def __init__(self, path: str | Path, key: str | Sequence[str] | Callable[[dict], Hashable],
                 *, default: Callable[[Any], Any] | None = str):
        self.path = Path(path)
        self.default = default
        self._lock = threading.Lock()
        if callable(key):
            self._fields: tuple[str, ...] | None = None
            self._key = key
        else:
            fields = (key,) if isinstance(key, str) else tuple(key)
            self._fields = fields
            self._key = (lambda r: r[fields[0]]) if len(fields) == 1 else (lambda r: tuple(r[f] for f in fields))

    def key(self, record: Mapping) -> Hashable:
        """The key of ``record``."""
        return self._key(record)

    def append(self, record: dict) -> dict:
        """Append ``record`` as one line (a torn last line is terminated first) and return it.

        Raises:
            TypeError: the record is not JSON-serialisable with ``default`` (nothing written).
            OSError: the file cannot be written.
        """
        with self._lock:
            append_jsonl(self.path, record, default=self.default)
        return record

    def records(self) -> list[dict]:
        """Every record in file order; torn lines skipped (a line that is JSON but not an object: with a warning)."""
        return read_jsonl(self.path)

    def latest(self) -> dict:
        """``{key: latest record}`` in order of the keys' first appearance."""
        out: dict = {}
        missing = 0
        for r in self.records():
            if self._fields is not None and any(f not in r or r[f] is None for f in self._fields):
                missing += 1
                continue
            out[self._key(r)] = r
        if missing:
            warnings.warn(f"{self.path}: {missing} record(s) without {'/'.join(self._fields or ())} skipped",
                          RuntimeWarning, stacklevel=2)
        return out

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"
