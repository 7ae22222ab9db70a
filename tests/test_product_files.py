"""What users get stands on its own: no development file names, folders, line numbers or issue numbers.

Every product file (the ``workbench`` package with its notebooks, templates and configs, ``notebooks/``,
``README.md``, ``docs/``, ``benchmarks/``, ``configs/``, ``pyproject.toml``, ``environment.yml``) cites its
sources as ``[Author Year, Eq. X / §Y / Fig. Z / Table T]``, and every such key has an entry in
``docs/references.md``. Tests may name the shared test data folder; they are not scanned.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCES = REPO / "docs" / "references.md"

TEXT_SUFFIXES = {".py", ".ipynb", ".yaml", ".yml", ".json", ".md", ".txt", ".toml", ".cfg", ".j2", ".html",
                 ".js", ".css"}
ROOTS = ("workbench", "notebooks", "docs", "benchmarks", "configs")
TOP_FILES = ("README.md", "pyproject.toml", "environment.yml")
#: Large third-party bundles a run may copy into the package (not written by this project).
SKIP_NAMES = {"plotly.min.js"}

#: (what it is, pattern) — each is a development reference a user cannot follow.
FORBIDDEN = [
    ("hashed development file name", re.compile(r"\b\d{3}_[0-9a-f]{16}\b")),
    # ../shared/... or a bare shared/...; a user's own path such as /mnt/shared/ray is fine
    ("development folder", re.compile(r"(?:\.\./|(?<![\w./-]))shared/")),
    ("development digest", re.compile(r"(?<![.\w])digest\b(?!\()", re.I)),
    ("line-number reference", re.compile(r"\bL\d{3,5}\b|\blines? \d+(?:-\d+)? of\b", re.I)),
    ("absolute development path", re.compile(r"/work/")),
    ("issue-number comment", re.compile(r"\bissues? #?\d+\b", re.I)),
    ("numbered seed document", re.compile(r"\b00[0-4] (?:report|thesis|paper|Alg\.|Eqs?\.|Figs?\.|Tables?|§)"
                                          r"|\b(?:report|thesis|paper) 00[0-4]\b|\(00[0-4][:)]")),
]

#: A citation key: a capitalised family name (hyphens and accents allowed), then a year or "n.d.".
KEY = re.compile(r"\s*(?P<key>[A-Z][\w'’-]*(?: [A-Z][\w'’-]*)? (?:\d{4}[a-z]?|n\.d\.))(?=[\s,;\]]|$)")


def product_files() -> list[Path]:
    files = [REPO / name for name in TOP_FILES if (REPO / name).exists()]
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*")):
            if (path.is_file() and path.suffix in TEXT_SUFFIXES and path.name not in SKIP_NAMES
                    and "__pycache__" not in path.parts and not any(p.startswith(".") for p in path.parts[-3:])):
                files.append(path)
    return files


def violations(text: str) -> list[str]:
    """``"line N: <what>: <match>"`` for every forbidden development reference in ``text``."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for what, rx in FORBIDDEN:
            for m in rx.finditer(line):
                found.append(f"line {n}: {what}: {m.group(0)!r}")
    return found


def citation_keys(text: str) -> set[str]:
    """Keys of ``[Author Year, ...]`` citations, also when several share one bracket (``[A 2021; B 2020, §2]``)."""
    keys = set()
    for bracket in re.findall(r"\[([^\[\]\n]{4,300})\]", text):
        for part in bracket.split(";"):
            m = KEY.match(part)
            if m:
                keys.add(m.group("key"))
    return keys


def bibliography() -> dict[str, str]:
    """``{key: entry text}`` of ``docs/references.md`` (entries start with ``**[Key]**``)."""
    entries = {}
    for block in REFERENCES.read_text(encoding="utf-8").split("\n\n"):
        m = re.match(r"\*\*\[([^\]]+)\]\*\*", block.strip())
        if m:
            entries[m.group(1)] = block
    return entries


def test_the_scanner_finds_each_kind_of_development_reference_and_spares_ordinary_text():
    bad = ("see `000_a2438a0e2dba8132.txt` §2", "../shared/notes/anchors.md", "(digest §8)", "thesis L3511",
           "line 3511 of the thesis", "/work/main/x", "# guard (issue 15)", "(issue #12)", "the 000 report's Eq. 3.6",
           "002 Fig. 1b", "thesis 001 Eq. 5.1", "seed001-digest §9",
           "## Thesis reproductions (001: SAM)")
    for text in bad:
        assert violations(text), text
    good = ("h.hexdigest()", "hashlib.blake2b(digest_size=20)", "[Murphy 2025, Eq. 2.5]", "an L2 norm, L1 and L∞",
            "lr 0.001 and 0.003", "10,000 images", "[Yang 2022, Figs. 4–5]", "https://github.com/o/r/issues/10",
            "2,000 test images", "the 003 seconds")
    for text in good:
        assert not violations(text), (text, violations(text))


def test_citation_keys_are_read_from_single_and_shared_brackets():
    text = ("as [Foret 2021, Eq. 1; Murphy 2025, §2.4] and [Carnerero-Cano 2021] did; not [0, 1], [N, C, H, W], "
            "[something](http://x) or ``x[idx, 2021]``; [Anonymous n.d.] too")
    assert citation_keys(text) == {"Foret 2021", "Murphy 2025", "Carnerero-Cano 2021", "Anonymous n.d."}


def test_no_product_file_names_a_development_file_folder_line_number_or_issue():
    files = product_files()
    assert len(files) > 100 and REPO / "README.md" in files            # the scan really covers the product
    assert REPO / "workbench" / "app" / "index.ipynb" in files and (REPO / "docs" / "references.md") in files
    problems = []
    for path in files:
        for v in violations(path.read_text(encoding="utf-8", errors="replace")):
            problems.append(f"{path.relative_to(REPO)} {v}")
    assert not problems, "development references in product files:\n" + "\n".join(problems)


def test_every_citation_key_has_a_bibliography_entry():
    entries = bibliography()
    assert {"Murphy 2025", "Andriushchenko 2024", "Yang 2022", "Carnerero-Cano 2021", "Foret 2021"} <= set(entries)
    cited: dict[str, list[str]] = {}
    for path in product_files():
        if path == REFERENCES:
            continue
        for key in citation_keys(path.read_text(encoding="utf-8", errors="replace")):
            cited.setdefault(key, []).append(str(path.relative_to(REPO)))
    missing = {k: v[:3] for k, v in cited.items() if k not in entries}
    assert not missing, f"cited without an entry in docs/references.md: {missing}"
    assert len(cited) >= 10                                               # the package really cites this way


@pytest.mark.parametrize("key", ["Murphy 2025", "Andriushchenko 2024", "Yang 2022", "Carnerero-Cano 2021"])
def test_the_implemented_works_have_full_entries(key):
    entry = bibliography()[key]
    family = key.split()[0]
    assert family in entry and key.split()[1] in entry                   # author and year
    assert re.search(r"\*[^*\n]{10,}\*", entry)                          # an italic title
    assert re.search(r"thesis|report|ICML|ICLR|NeurIPS|Conference|arxiv", entry, re.I)   # kind or venue


def test_every_entry_has_authors_title_and_year():
    for key, entry in bibliography().items():
        assert re.search(r"\*[^*\n]{8,}\*", entry), key                   # a title in italics
        year = key.split()[-1]
        assert year == "n.d." or year in entry.replace(key, ""), key     # the year stated, not only in the key
