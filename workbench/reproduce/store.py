"""Stored reproduction results: one JSON file per measured claim, read by the claims ledger.

A stored result is what a reproduction measured, in plain JSON so that it can be reviewed in a diff::

    {"format": 1, "name": "fig5.1", "claim": "...", "verdict": "partial", "verdict_reason": "...",
     "measured": "...", "metrics": {"err_erm": 0.031, ...}, "settings": {...}, "notes": [...],
     "seconds": 1520.3, "created": "2026-12-03T16:10:00", "command": "workbench thesis repro ...",
     "tables": {"runs": [{...}, ...]}}

:func:`save_result` writes it (from a :class:`~workbench.thesis.registry.Reproduction` or any object with the
same attributes), :func:`load_result` reads it back. Non-finite floats are stored as ``null``.

Core module: no plotly / ipywidgets.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["save_result", "load_result", "RESULT_FORMAT"]

RESULT_FORMAT = 1


def _plain(v: Any) -> Any:
    """JSON-ready copy of ``v`` (numpy scalars/arrays, DataFrames, non-finite floats -> None)."""
    try:
        import numpy as np
        import pandas as pd
    except ImportError:  # pragma: no cover
        np = pd = None
    if pd is not None and isinstance(v, pd.DataFrame):
        return [_plain(r) for r in v.to_dict(orient="records")]
    if np is not None and isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if np is not None and isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is None or isinstance(v, (str, int, bool)):
        return v
    return repr(v)


def save_result(rep, path: str | Path, *, command: str = "", tables: dict[str, Any] | None = None) -> Path:
    """Write the result of reproduction ``rep`` to ``path`` (JSON, parents created).

    Args:
        rep: an object with ``name, claim, verdict, verdict_reason, measured, metrics, settings, notes, seconds``
            (a :class:`~workbench.thesis.registry.Reproduction`).
        path: the ``.json`` file.
        command: the command line that produced it (for the record).
        tables: extra tables to keep (DataFrames or lists of records), e.g. ``{"runs": df}``.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": RESULT_FORMAT, "name": rep.name, "claim": rep.claim, "verdict": rep.verdict,
           "verdict_reason": getattr(rep, "verdict_reason", ""), "measured": rep.measured,
           "metrics": _plain(dict(rep.metrics)), "settings": _plain(dict(rep.settings)),
           "notes": list(rep.notes), "seconds": float(getattr(rep, "seconds", 0.0)),
           "created": _dt.datetime.now().replace(microsecond=0).isoformat(), "command": command,
           "tables": _plain(tables or {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def load_result(path: str | Path) -> dict:
    """Read a stored result.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a stored result (bad JSON, unknown format, missing ``verdict``/``metrics``).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != RESULT_FORMAT or "verdict" not in doc \
            or not isinstance(doc.get("metrics"), dict):
        raise ValueError(f"{path}: not a stored reproduction result (format {RESULT_FORMAT} with verdict and metrics)")
    return doc
