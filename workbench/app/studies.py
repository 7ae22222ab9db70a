"""The study notebooks and what the landing page says about them, read from the notebooks themselves.

Every notebook in ``notebooks/`` is a study. Its title is the first Markdown
heading of its first Markdown cell and its one-line summary is, in order of
preference, ``metadata["workbench"]["summary"]`` or the first sentence of the
paragraph after that heading. Nothing is listed by hand, so a notebook added
later appears on the landing page by itself.

No UI imports.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Study", "list_studies", "find_notebooks_dir", "landing_markdown"]

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Study:
    """One study notebook.

    Attributes:
        path: the notebook file. name: its file name (``00_quickstart.ipynb``).
        title: the first heading. summary: one line (at most ~200 characters).
    """

    path: Path
    name: str
    title: str
    summary: str


def find_notebooks_dir(path: str | Path | None = None) -> Path:
    """The study notebooks folder: ``path``, else ``./notebooks``, else the checkout's ``notebooks/``.

    Raises:
        FileNotFoundError: no folder with ``.ipynb`` files was found (the message lists where it looked).
    """
    tried = [Path(path)] if path is not None else [Path.cwd() / "notebooks", REPO / "notebooks"]
    for d in tried:
        if d.is_dir() and any(d.glob("*.ipynb")):
            return d.resolve()
    raise FileNotFoundError("no study notebooks found in " + ", ".join(repr(str(d)) for d in tried)
                            + "; run from the repository root or pass the notebooks folder")


_SENTENCE = re.compile(r"(.+?[.!?:])(\s|$)", re.S)


def _plain(md: str) -> str:
    """Markdown -> one line of plain text (links, emphasis, code marks and LaTeX dollars removed)."""
    s = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", md)
    s = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", s)
    s = re.sub(r"[*_`$]", "", s)
    return " ".join(s.split())


def _describe(nb: dict, path: Path) -> tuple[str, str]:
    meta = (nb.get("metadata") or {}).get("workbench") or {}
    title, summary = meta.get("title"), meta.get("summary")
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        lines = src.strip().splitlines()
        if not lines:
            continue
        if title is None and lines[0].lstrip().startswith("#"):
            title = lines[0].lstrip("# ").strip()
            lines = lines[1:]
        if summary is None:
            para = _plain(" ".join(lines).strip())
            m = _SENTENCE.match(para)
            summary = (m.group(1) if m else para).rstrip(":")
        break
    title = _plain(title or path.stem.replace("_", " "))
    summary = summary or ""
    if len(summary) > 200:
        summary = summary[:197].rsplit(" ", 1)[0] + " …"
    return title, summary


def list_studies(notebooks: str | Path | None = None) -> list[Study]:
    """Every ``*.ipynb`` in the notebooks folder (sorted by name) with its title and one-line summary.

    Raises:
        FileNotFoundError: see :func:`find_notebooks_dir`.
    """
    d = find_notebooks_dir(notebooks)
    out = []
    for p in sorted(d.glob("*.ipynb")):
        try:
            nb = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        title, summary = _describe(nb, p)
        out.append(Study(path=p, name=p.name, title=title, summary=summary))
    return out


def landing_markdown(studies: list[Study], href: str = "{name}") -> str:
    """The landing page's list: one Markdown line per study, linked with ``href.format(name=...)``."""
    lines = ["| Study | What it shows |", "|---|---|"]
    for s in studies:
        lines.append(f"| [**{s.title}**]({href.format(name=s.name)}) | {s.summary.replace('|', '/')} |")
    return "\n".join(lines)
