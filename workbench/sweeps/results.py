"""Study results as tables: one row per trial, and mean ± standard error over seeds per configuration.

The papers report means and standard errors over 5 seeds ([Murphy 2025,
Tables 4.3-4.4]): ``summarize`` computes them with pandas (standard error =
sample standard deviation (ddof=1) / sqrt(n)), ``to_markdown`` and ``to_latex``
lay them out as in those tables (one row per configuration, "mean ± s.e." cells,
the best configuration of each group in bold).

No UI imports.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..runs import load_run
from .runner import read_trials

__all__ = ["trials_table", "summarize", "to_markdown", "to_latex", "metric_value"]


def metric_value(run_path: str | Path, metric: str, value: str = "final", mode: str = "max") -> float:
    """A metric of a stored run.

    Args:
        run_path: the run folder.
        metric: an epoch-record column (``test_acc``, ``val_loss``, ...), or
            ``analysis.<what>.<key>`` for a saved analysis result (e.g.
            ``analysis.hessian.lambda_1``: the newest saved ``hessian`` result's summary value).
        value: ``final`` (last epoch) or ``best`` (best epoch by ``mode``).
        mode: ``max`` or ``min``: which epoch is best for ``value="best"``.
    """
    if metric.startswith("analysis."):
        from ..analysis.common import load_result
        from ..analysis.tasks import list_analyses
        from ..viz.results import summary_rows

        _, what, key = metric.split(".", 2)
        saved = [a for a in list_analyses(run_path) if a["what"] == what]
        if not saved:
            return float("nan")
        newest = max(saved, key=lambda a: a.get("created") or "")
        row = summary_rows(what, {"run": load_result(newest["path"])})[0]
        v = row.get(key)
        return float(v) if isinstance(v, (int, float)) else float("nan")
    ep = load_run(run_path).epochs
    if metric not in ep or ep[metric].dropna().empty:
        return float("nan")
    col = ep[metric].dropna()
    if value == "final":
        return float(col.iloc[-1])
    return float(col.max() if mode == "max" else col.min())


def trials_table(study_path: str | Path, metrics: Iterable[str] = ("test_acc", "val_acc", "train_loss"),
                 value: str = "final") -> pd.DataFrame:
    """One row per trial: id, status, seed, swept fields (one column each), metrics, run path, error.

    Metrics are read from the run folders (so metrics other than the study's
    objective, and analysis results added later, can be tabulated too).
    """
    rows = []
    for r in read_trials(study_path):
        row: dict[str, Any] = {"trial_id": r["trial_id"], "status": r["status"], "seed": r["seed"],
                               **{k: v for k, v in r["params"].items()}, "objective": r.get("value")}
        for m in metrics:
            row[m] = (metric_value(r["run_path"], m, value) if r.get("run_path") and Path(r["run_path"]).exists()
                      else float("nan"))
        row["run_path"] = r.get("run_path")
        row["error"] = r.get("error")
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] = ("test_acc",), *,
              statuses: Sequence[str] = ("finished",)) -> pd.DataFrame:
    """Mean, standard error and count over seeds of each metric, per configuration.

    Args:
        table: :func:`trials_table` output (or any frame with the ``by`` and metric columns).
        by: the columns defining a configuration (the swept fields).
        metrics: columns to aggregate.
        statuses: trial statuses included (default: finished only).

    Returns:
        A frame with the ``by`` columns, and for each metric ``<m>_mean``, ``<m>_se``
        (std with ddof=1 over sqrt(n); NaN for n = 1) and ``<m>_n``.
    """
    t = table[table["status"].isin(statuses)] if "status" in table else table
    if t.empty:
        return pd.DataFrame(columns=list(by) + [f"{m}_{s}" for m in metrics for s in ("mean", "se", "n")])
    g = t.groupby(list(by), dropna=False, sort=False)
    out = pd.DataFrame(index=g.size().index)
    for m in metrics:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_se"] = g[m].std(ddof=1) / np.sqrt(g[m].count())
        out[f"{m}_n"] = g[m].count()
    return out.reset_index()


def _fmt(mean: float, se: float, percent: bool, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    k = 100.0 if percent else 1.0
    if se is None or (isinstance(se, float) and math.isnan(se)):
        return f"{mean * k:.{digits}f}"
    return f"{mean * k:.{digits}f} ± {se * k:.{digits}f}"


def _best_rows(summary: pd.DataFrame, metric: str, group: Sequence[str], mode: str) -> set:
    col = f"{metric}_mean"
    if summary.empty:
        return set()
    groups = summary.groupby(list(group), dropna=False) if group else [(None, summary)]
    best = set()
    for _, sub in groups:
        s = sub[col].dropna()
        if not s.empty:
            best.add(s.idxmax() if mode == "max" else s.idxmin())
    return best


def _layout(summary: pd.DataFrame, by: Sequence[str], metric: str, group: Sequence[str], percent: bool,
            digits: int, mode: str):
    best = _best_rows(summary, metric, group, mode)
    label = metric + (" (%)" if percent else "")
    rows = []
    for i, r in summary.iterrows():
        cell = _fmt(r[f"{metric}_mean"], r[f"{metric}_se"], percent, digits)
        rows.append(([str(r[c]) for c in by], cell, i in best, int(r[f"{metric}_n"])))
    return label, rows


def to_markdown(summary: pd.DataFrame, by: Sequence[str], metric: str = "test_acc", *, group: Sequence[str] = (),
                percent: bool | None = None, digits: int = 2, mode: str = "max") -> str:
    """A Markdown table: one row per configuration, "mean ± s.e." (n seeds), the best per ``group`` in bold.

    ``percent`` defaults to True for accuracy metrics (``*_acc``).
    """
    percent = metric.endswith("acc") if percent is None else percent
    label, rows = _layout(summary, by, metric, group, percent, digits, mode)
    head = "| " + " | ".join(list(by) + [label, "n"]) + " |"
    sep = "|" + "|".join(["---"] * (len(by) + 2)) + "|"
    body = ["| " + " | ".join(keys + [f"**{cell}**" if b else cell, str(n)]) + " |" for keys, cell, b, n in rows]
    return "\n".join([head, sep] + body)


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"),
                 ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        s = s.replace(a, b)
    return s


def to_latex(summary: pd.DataFrame, by: Sequence[str], metric: str = "test_acc", *, group: Sequence[str] = (),
             percent: bool | None = None, digits: int = 2, mode: str = "max", caption: str | None = None,
             label: str | None = None) -> str:
    r"""A booktabs LaTeX table in the papers' layout (``$m \pm s$`` cells, best per ``group`` bold)."""
    percent = metric.endswith("acc") if percent is None else percent
    head_label, rows = _layout(summary, by, metric, group, percent, digits, mode)
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{" + "l" * len(by) + "r}", r"\toprule",
             " & ".join(_tex(c) for c in by) + f" & {_tex(head_label)} \\\\", r"\midrule"]
    for keys, cell, b, _n in rows:
        val = "$" + cell.replace(" ± ", r" \pm ") + "$" if cell != "–" else "--"
        if b and cell != "–":
            val = r"$\mathbf{" + cell.replace(" ± ", r" \pm ") + "}$"
        lines.append(" & ".join(_tex(k) for k in keys) + f" & {val} \\\\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + _tex(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines)
