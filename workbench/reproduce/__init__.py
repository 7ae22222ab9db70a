"""Reproductions across the five works: stored results, the claims ledger and paper-scale configurations.

* :mod:`~workbench.reproduce.store`: one JSON file per measured claim (:func:`save_result`, :func:`load_result`);
* :mod:`~workbench.reproduce.ledger`: :data:`CLAIMS` and :func:`build_ledger` / :func:`write_ledger`, the page
  ``docs/reproductions.md`` generated from the stored results (``workbench reproduce --report``);
* :mod:`~workbench.reproduce.paper_scale`: the GPU-only rows at the papers' scale, one command each
  (``workbench reproduce --paper-scale NAME``).

Core package: no plotly / ipywidgets.
"""
from .ledger import CLAIMS, build_ledger, ledger_rows, verdict_counts, write_ledger
from .store import load_result, save_result

__all__ = ["CLAIMS", "build_ledger", "ledger_rows", "verdict_counts", "write_ledger", "load_result", "save_result"]
