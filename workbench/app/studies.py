r"""The study notebooks and what the landing page says about them, read from the notebooks themselves.

Every notebook in ``notebooks/`` is a study. Its first Markdown cell describes
it for a person::

    # Title

    One sentence saying what the study does.

    **You will see:** what the reader will see, in a line or two.

The title is that cell's first heading, the summary the first sentence of the
paragraph after it, and "you will see" the paragraph that starts with
"You will see" (``metadata["workbench"]`` keys ``title``, ``summary`` and
``you_will_see`` override them). All three are turned into plain text: no
Markdown marks, no LaTeX source (``$\min_w$`` becomes ``min w``), no file names.
Nothing is listed by hand, so a notebook added later appears on the landing
page by itself.

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
        title: the first heading. summary: one sentence (at most ~200 characters).
        you_will_see: what the reader will see, plain text (at most ~300 characters; ``""`` when the notebook
            does not say).
    """

    path: Path
    name: str
    title: str
    summary: str
    you_will_see: str = ""


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


_SENTENCE = re.compile(r"(.+?[.!?])(\s|$)", re.S)
_SEE = re.compile(r"^\W*you will see\W*", re.I)
# LaTeX commands that read as a symbol or a word; any other command keeps its name without the backslash
_TEX = {"min": "min", "max": "max", "arg": "arg", "log": "log", "exp": "exp", "cos": "cos", "sin": "sin",
        "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "Delta": "Δ", "epsilon": "ε", "varepsilon": "ε",
        "eta": "η", "theta": "θ", "lambda": "λ", "mu": "μ", "nabla": "∇", "rho": "ρ", "sigma": "σ", "tau": "τ",
        "phi": "φ", "Phi": "Φ", "ell": "ℓ", "infty": "∞", "in": "∈", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥",
        "approx": "≈", "times": "×", "cdot": "·", "|": "‖", "lVert": "‖", "rVert": "‖", "ldots": "…", "dots": "…",
        "to": "→", "mathcal": "", "mathbb": "", "mathrm": "", "text": "", "operatorname": "", "hat": "",
        "tilde": "", "bar": "", "left": "", "right": "", "quad": " ", "qquad": " ", ",": " ", ";": " ", "!": ""}
_FILE = re.compile(r"\b[\w.-]*_[0-9a-f]{8,}\.\w+\b|\b[\w.-]+\.(?:txt|md|ipynb|py|json|yaml)\b")


def _tex(expr: str) -> str:
    """The text of a LaTeX formula: commands as symbols or words, braces and spacing marks removed."""
    expr = re.sub(r"\\([A-Za-z]+|[|,;!])", lambda m: _TEX.get(m.group(1), m.group(1)), expr)
    expr = re.sub(r"[{}]", "", re.sub(r"[_^]", " ", expr))
    return re.sub(r"\s+", " ", expr).strip()


def _plain(md: str) -> str:
    """Markdown -> one line of plain text: links, emphasis, code marks, file names and LaTeX source removed."""
    s = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", md)
    s = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", s)
    s = re.sub(r"\$\$(.+?)\$\$|\$(.+?)\$", lambda m: _tex(m.group(1) or m.group(2)), s, flags=re.S)
    s = _FILE.sub("", s)
    s = re.sub(r"[*_`$\\]", "", s)
    s = re.sub(r"\(\s*\)|\[\s*\]", "", s)
    s = " ".join(s.split())
    return re.sub(r"\s+([,.;:])", r"\1", s)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 3].rsplit(" ", 1)[0] + " …"


def _describe(nb: dict, path: Path) -> tuple[str, str, str]:
    meta = (nb.get("metadata") or {}).get("workbench") or {}
    title, summary, see = meta.get("title"), meta.get("summary"), meta.get("you_will_see")
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
        paras = [p.strip() for p in re.split(r"\n\s*\n", "\n".join(lines)) if p.strip()]
        if see is None:
            found = next((p for p in paras if _SEE.match(_plain(p))), None)
            see = _SEE.sub("", _plain(found)) if found else ""
            see = see[:1].upper() + see[1:]
        if summary is None:
            first = next((p for p in paras if not _SEE.match(_plain(p))), "")
            para = _plain(first)
            m = _SENTENCE.match(para)
            summary = (m.group(1) if m else para).rstrip(":")
        break
    title = _plain(title or path.stem.replace("_", " "))
    return title, _clip(_plain(summary or ""), 200), _clip(_plain(see or ""), 300)


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
        title, summary, see = _describe(nb, p)
        out.append(Study(path=p, name=p.name, title=title, summary=summary, you_will_see=see))
    return out


def landing_markdown(studies: list[Study], href: str = "{name}") -> str:
    """The landing page's list as Markdown: per study its linked title, its sentence and what you will see.

    ``href.format(name=...)`` is each study's link (``name`` is its file name).
    """
    lines = ["| Study | What it does | You will see |", "|---|---|---|"]
    for s in studies:
        cells = [f"[**{s.title}**]({href.format(name=s.name)})", s.summary, s.you_will_see]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)
