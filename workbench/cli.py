"""Command-line interface: ``workbench run | resume | runs | figures | demo | lab``.

Over 700 lines, kept whole: the top-level commands and their shared one-line error handling; each package's own
commands live in its ``cli`` module.

Drives the same configs and writes the same run folders and figures as the
notebooks. Run ``workbench --help`` or ``workbench COMMAND --help``.

User errors (a bad argument, config value or type, an unreadable or malformed
config/study file, a missing or corrupt checkpoint, a folder that is not a run,
a refused results pack, ...) print one line ``error: ...`` on stderr and exit
with status 2, before anything is written; ``--debug`` (before or after the
command, or ``WORKBENCH_DEBUG=1``) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]


def _expand_runs(paths: list[str]) -> list[Path]:
    """Run folders from arguments: a run folder, or a root holding run folders."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.json").is_file():
            out.append(p)
        elif p.is_dir():
            found = sorted(q for q in p.iterdir() if (q / "config.json").is_file())
            if not found:
                raise SystemExit(f"error: {str(p)!r} holds no run folders (no */config.json)")
            out.extend(found)
        else:
            raise SystemExit(f"error: run folder {str(p)!r} does not exist")
    return out


def _print_result(res) -> None:
    m = res.final_metrics
    parts = [f"status: {res.status}", f"run folder: {res.run_path}"]
    if m:
        parts.append("final: " + ", ".join(f"{k}={m[k]:.4f}" for k in
                                            ("train_loss", "train_acc", "val_acc", "test_acc") if k in m))
    if res.error:
        parts.append(f"error: {res.error}")
    print("\n".join(parts))


def _exit_code(status: str) -> int:
    return {"finished": 0, "stopped": 130, "diverged": 3}.get(status, 1)


def _positive_int(text: str) -> int:
    """Argparse type: an integer >= 1 (``--epochs``, ``--workers``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: give an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: must be an integer >= 1")
    return value


def _check_root(root: str | os.PathLike, what: str) -> None:
    """Refuse a runs root that is a file, or lies under one, before anything starts.

    ``what`` says how the user gave it, e.g. ``--root`` or ``root`` in the config.
    """
    p = Path(root)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                where = "" if q == p else f" ({str(q)!r} is a file)"
                raise ValueError(f"{what} {str(p)!r} is not a folder{where}: give a folder for the run folders")
            return


def _key_values(items, flag: str, example: str) -> dict:
    """``KEY=VALUE`` arguments of ``flag`` as a dict, values parsed as YAML (``k=10``: an int)."""
    from .config import yaml_error_message, yaml_load

    out = {}
    for item in items or []:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ValueError(f"{flag} {item!r} must look like key=value, e.g. {example}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml_load(v)
        except Exception as e:  # yaml.YAMLError
            raise ValueError(f"{flag} {item!r}: cannot parse the value as YAML: {yaml_error_message(e)}") from None
    return out


#: Entries a checkpoint must hold to resume a run, and to rebuild its model (``analyze``).
_RESUME_KEYS = ("format", "model", "optimizer", "scheduler", "epoch", "batch", "step", "input_shape", "num_classes")
_MODEL_KEYS = ("model", "input_shape", "num_classes")


def _check_checkpoint(run: Path, name: str, keys: tuple[str, ...]) -> None:
    """Load ``run/checkpoints/name`` (``weights_only=True``) and check it before a resume or an analysis uses it.

    It must hold ``keys``, and its model weights must fit the model of the run's config (names and shapes), so
    that a resume or an analysis fails here, with one line naming the file, instead of deep in the set-up.

    Raises:
        CheckpointError: missing (for a run that diverged before its first checkpoint, it says so), corrupt,
            not a plain-tensor checkpoint, missing entries, or weights of another model.
    """
    import torch

    from .runs import Run
    from .runs.store import CheckpointError, load_checkpoint

    r = Run(run)
    path = r.checkpoint_dir / name
    if not path.is_file():
        status = {}
        try:
            status = r.status()
        except Exception:  # a corrupt status.json: the missing checkpoint is the message
            pass
        if status.get("status") == "diverged":
            raise CheckpointError(f"checkpoint {str(path)!r} does not exist: the run diverged before its first "
                                  "checkpoint was written, so there is nothing to resume or analyse (start it again, "
                                  "e.g. with a smaller optim.lr)")
    config = r.config()   # CorruptRunError / ConfigError: one line naming the folder or the field
    ck = load_checkpoint(path, map_location="cpu")
    missing = [k for k in keys if k not in ck]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks the entries {missing}: it is not a checkpoint "
                              "written by the workbench trainer")
    model = ck["model"]
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise CheckpointError(f"checkpoint {str(path)!r}: its 'model' entry is not a state dict of tensors")
    try:
        shape = tuple(int(x) for x in ck["input_shape"])
        classes = int(ck["num_classes"])
    except (TypeError, ValueError):
        raise CheckpointError(f"checkpoint {str(path)!r}: input_shape={ck['input_shape']!r} or "
                              f"num_classes={ck['num_classes']!r} is malformed") from None
    for k in ("epoch", "batch", "step"):
        if k in keys and (isinstance(ck[k], bool) or not isinstance(ck[k], int) or ck[k] < 0):
            raise CheckpointError(f"checkpoint {str(path)!r}: {k}={ck[k]!r} is not a non-negative integer")
    for k in ("optimizer", "scheduler"):
        if k in keys and not isinstance(ck[k], dict):
            raise CheckpointError(f"checkpoint {str(path)!r}: its {k!r} entry is not a state dict")
    from .models import build_model

    try:
        expected = build_model(config.model, shape, classes).state_dict()
    except Exception as e:  # e.g. an input shape the architecture cannot take
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit the run's model {config.model.name!r}: "
                              f"{' '.join(str(e).split())[:200]}") from None
    problems = []
    lacking = [k for k in expected if k not in model]
    extra = [k for k in model if k not in expected]
    if lacking:
        problems.append(f"missing {lacking[:3]}{' ...' if len(lacking) > 3 else ''}")
    if extra:
        problems.append(f"unexpected {extra[:3]}{' ...' if len(extra) > 3 else ''}")
    wrong = [k for k in expected if k in model and tuple(model[k].shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        problems.append(f"{k} has shape {list(model[k].shape)}, expected {list(expected[k].shape)}")
    if problems:
        raise CheckpointError(f"checkpoint {str(path)!r} holds the weights of another model, not the run's "
                              f"{config.model.name!r}: " + "; ".join(problems))


def cmd_run(args) -> int:
    from .config import RunConfig
    from .training import TqdmProgress, Trainer

    cfg = RunConfig.load(args.config)
    if args.root:
        cfg = cfg.with_overrides({"root": args.root})
    if args.set:
        cfg = cfg.with_overrides(args.set)
    _check_root(cfg.root, "--root" if args.root else "root")
    cbs = [] if args.no_progress else [TqdmProgress()]
    res = Trainer(cfg, callbacks=cbs).run()
    _print_result(res)
    return _exit_code(res.status)


def cmd_resume(args) -> int:
    """``workbench resume DIR``: continue a stopped run from its last checkpoint, in the same folder.

    Returns the run's exit status (0 finished, 130 stopped, 3 diverged).

    Raises:
        FileNotFoundError: ``DIR`` does not exist or is not a run folder (no ``config.json``); the message names it.
        ValueError: ``--epochs`` is invalid or not larger than the epochs already done.
    """
    from .training import TqdmProgress, Trainer

    run = Path(args.run)
    if not run.exists():
        raise FileNotFoundError(f"{args.run} does not exist")
    if not (run / "config.json").is_file():
        raise FileNotFoundError(f"{args.run} is not a run folder (no config.json)")
    _check_checkpoint(run, "last.pt", _RESUME_KEYS)   # one line naming the file, before anything is set up
    # the bar appears when the run starts, after from_run has checked the checkpoint and --epochs
    cbs = [] if args.no_progress else [TqdmProgress()]
    res = Trainer.from_run(run, epochs=args.epochs, callbacks=cbs).run()
    _print_result(res)
    return _exit_code(res.status)


def cmd_runs(args) -> int:
    """``workbench runs ROOT``: every run folder under ROOT, one row each (newest first).

    A corrupt run folder (unreadable ``config.json``, ``status.json`` or ``metrics.jsonl``, see
    :mod:`workbench.runs.store`) is a row with status ``corrupt``; the table is followed by one line per
    corrupt run, ``corrupt: <folder>: <reason>`` (csv/json: the ``path`` and ``reason`` columns). Returns 0.
    """
    import pandas as pd

    from .runs import list_runs

    df = list_runs(args.root)
    if args.format == "csv":
        print(df.to_csv(index=False), end="")
    elif args.format == "json":
        print(df.to_json(orient="records", indent=2))
    else:
        if df.empty:
            print(f"no runs under {args.root!r}")
            return 0
        cols = ["run_id", "status", "optimizer", "model", "dataset", "lr", "rho", "epochs_done", "epochs",
                "final_train_loss", "final_test_acc", "best_val_acc"]
        with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 60):
            print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        for row in df[df["status"] == "corrupt"].itertuples():
            print(f"corrupt: {row.path}: {row.reason}")
    return 0


def _write_figures(runs, out: Path, formats, theme: str, per_step: bool, log_y: bool, size: dict | None = None
                   ) -> list[Path]:
    from .runs import load_run
    from .viz import CurveData, training_curves

    curves = [CurveData.from_run(load_run(p)) for p in runs]
    px = _layout_px(size)
    fig = training_curves(curves, per_step=per_step, log_y=log_y, theme=theme, **(px if theme == "paper" else {}))
    size = dict(size or {})
    shared = _shared_plotlyjs(runs, out)
    if shared is not None and "html" in formats and not size.get("self_contained"):
        size["plotlyjs"] = shared
    return _export_all(fig, out / "training-curves", formats, size)


def _shared_plotlyjs(runs, out: Path) -> Path | None:
    """``<runs root>/plotly.min.js`` when ``out`` lies inside the folder that holds all ``runs``, else None.

    The figures of a runs root, or a run's artifacts, then share one plotly.js; with None each HTML file gets
    one next to it.
    """
    parents = {Path(r).resolve().parent for r in runs}
    if len(parents) != 1:
        return None
    root = parents.pop()
    try:
        Path(out).resolve().relative_to(root)
    except ValueError:
        return None
    return root / "plotly.min.js"


def _layout_px(size: dict | None) -> dict:
    """Layout ``width``/``height`` in px (96 per inch) from the ``figures`` size options, where given."""
    size = size or {}
    px = {}
    for k in ("width", "height"):
        if size.get(f"{k}_in") is not None:
            px[k] = int(round(size[f"{k}_in"] * 96))
        elif size.get(k) is not None:
            px[k] = int(size[k])
    return px


def _export_all(fig, stem: Path, formats, size: dict | None = None) -> list[Path]:
    from .viz import ExportError, export_figure

    written = []
    for fmt in formats:
        try:
            written.append(export_figure(fig, Path(f"{stem}.{fmt}"), format=fmt, **(size or {})))
        except ExportError as e:  # one line; the command's exit status says that some file is missing
            print(f"error: {e}", file=sys.stderr)
    return written


def _size_args(args) -> dict:
    size = {}
    for k in ("width", "height", "scale", "width_in", "height_in", "dpi"):
        v = getattr(args, k, None)
        if v is not None:
            size[k] = v
    if getattr(args, "html_standalone", False):
        size["self_contained"] = True
    return size


def _study_figures(study_path: Path, out: Path, formats, theme: str, size: dict, metric: str | None) -> list[Path]:
    """Figures and tables of a study.

    Metric vs hyperparameter (± s.e.), parallel coordinates, ratio-to-baseline histogram, and the mean ± s.e.
    table as Markdown and LaTeX.
    """
    from .sweeps import StudyConfig, summarize, to_latex, to_markdown, trials_table
    from .viz.sweeps import metric_vs_param_figure, parallel_coordinates_figure, ratio_histogram_figure

    study = StudyConfig.load(study_path / "study.yaml")
    metric = metric or study.metric
    table = trials_table(study_path, metrics=(metric,))
    params = list(study.params)
    written: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    if not params or table.empty:
        return written
    numeric = [p for p in params if pd_numeric(table[p])]
    categorical = [p for p in params if p not in numeric]
    summary = summarize(table, params, [metric])
    for ext, text in (("md", to_markdown(summary, params, metric, group=categorical[:1], mode=study.mode)),
                      ("tex", to_latex(summary, params, metric, group=categorical[:1], mode=study.mode,
                                       caption=f"{study.name}: {metric}, mean ± standard error over seeds"))):
        p = out / f"{study.name}-table.{ext}"
        p.write_text(text + "\n")
        written.append(p)
    x = numeric[0] if numeric else params[0]
    group = next((p for p in params if p != x), None)
    figs = {"metric-vs-param": metric_vs_param_figure(summary, x, metric, group, theme=theme),
            "parallel-coordinates": parallel_coordinates_figure(table, params, metric, theme=theme)}
    if categorical and len(study.params[categorical[0]].values or ()) > 1:
        base = {categorical[0]: study.params[categorical[0]].values[0]}
        others = [p for p in params if p != categorical[0]]
        figs["ratio-to-baseline"] = ratio_histogram_figure(
            table, param=others[0] if others else categorical[0], metric=metric, baseline=base,
            match_on=tuple(["seed"] + others), theme=theme)
    for name, fig in figs.items():
        written += _export_all(fig, out / f"{study.name}-{name}", formats, size)
    return written


def pd_numeric(col) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(col)) and not pd.api.types.is_bool_dtype(col)


def cmd_figures(args) -> int:
    from .viz import static_export_session

    out = Path(args.out)
    studies = [Path(p) for p in args.runs if (Path(p) / "study.yaml").is_file()]
    runs = _expand_runs([p for p in args.runs if Path(p) not in studies]) if len(studies) < len(args.runs) else []
    written, expected = [], 0
    with static_export_session():
        if runs:
            written += _write_figures(runs, out, args.format, args.theme, args.per_step, args.log_y, _size_args(args))
            expected += len(args.format)
        for st in studies:
            w = _study_figures(st, out, args.format, args.theme, _size_args(args), args.metric)
            written += w
            expected += len(w)
    for p in written:
        print(p)
    return 0 if len(written) >= expected and written else 2


def cmd_demo(args) -> int:
    from .presets import quickstart_configs
    from .training import TqdmProgress, Trainer

    root = Path(args.root)
    results = []
    for cfg in quickstart_configs(epochs=args.epochs, root=str(root), seed=args.seed):
        cbs = [] if args.no_progress else [TqdmProgress()]
        res = Trainer(cfg, callbacks=cbs).run()
        _print_result(res)
        results.append(res)
    from .viz import static_export_session

    runs = [r.run_path for r in results]
    formats = ["html", "png"]
    written = []
    with static_export_session():
        for r in runs:
            written += _write_figures([r], r / "artifacts", formats, "screen", True, False)
        written += _write_figures(runs, root / "figures", formats + ["pdf"], "screen", True, False)
        written += _write_figures(runs, root / "figures" / "paper", ["pdf", "svg"], "paper", False, False)
    print("figures:\n  " + "\n  ".join(str(p) for p in written))
    return 0 if all(r.status == "finished" for r in results) else 1


def cmd_analyze(args) -> int:
    import yaml as _yaml

    from .analysis.tasks import analyze
    from .analysis_registry import get_entry
    from .training.device import resolve_device
    from .viz import export_figure, result_figure, static_export_session, summary_rows

    params = _key_values(args.set, "--set", "k=10")
    if args.count < -1:
        raise ValueError(f"--count {args.count} is invalid: use a positive number of examples, 0 (the whole split) "
                         "or -1 (the analysis' default)")
    resolve_device(args.device, name="--device")   # 'tpu', 'cuda:abc', or CUDA absent: one line, before loading
    runs = _expand_runs(args.runs)
    if get_entry(args.what).needs_other:
        if len(runs) != 2:
            raise ValueError(f"{args.what} needs exactly two runs: workbench analyze RUN_A RUN_B --what {args.what}")
        jobs = [(runs[0], runs[1])]
    else:
        jobs = [(r, None) for r in runs]
    for run, other in jobs:   # every checkpoint readable and of its run's model before the first analysis starts
        _check_checkpoint(run, args.checkpoint, _MODEL_KEYS)
        if other is not None:
            _check_checkpoint(other, "last.pt", _MODEL_KEYS)
    outputs = []
    bar = None

    def progress(p):
        # the bar appears with the first report after loading, i.e. after the parameters were checked
        nonlocal bar
        if args.no_progress or (bar is None and p.done == 0 and p.message == "loading model and data"):
            return
        if bar is None:
            from tqdm.auto import tqdm

            bar = tqdm(total=1, desc=args.what, unit="step", dynamic_ncols=True)
        bar.total = max(p.total, 1)
        bar.n = p.done
        bar.set_postfix_str(p.message[:40], refresh=False)
        bar.refresh()

    for run, other in jobs:
        count = None if args.count == 0 else args.count
        out = analyze(args.what, run, other=other, checkpoint=args.checkpoint, split=args.split, count=count,
                      seed=args.seed, device=args.device, params=params, callback=progress, force=args.force)
        outputs.append(out)
        if not args.no_progress:
            line = (f"{run.name}: {'loaded saved result' if out.cached else f'computed in {out.seconds:.1f} s'}"
                    f" -> {out.path}")
            bar.write(line) if bar is not None else print(line, file=sys.stderr)
    if bar is not None:
        bar.close()
    for row in summary_rows(args.what, outputs):
        print(_yaml.safe_dump(row, sort_keys=False, allow_unicode=True).rstrip())
    if args.out:
        fig = result_figure(args.what, outputs, theme=args.theme)
        with static_export_session():
            for fmt in args.format:
                print(export_figure(fig, Path(args.out) / f"{args.what}.{fmt}", format=fmt))
    return 0


def cmd_sweep(args) -> int:
    from .sweeps import StudyConfig, run_study

    study = StudyConfig.load(args.study)
    changes = {}
    if args.backend:
        changes["backend"] = args.backend
    if args.workers is not None:
        changes["workers"] = args.workers
    if args.root:
        _check_root(args.root, "--root")
        changes["root"] = args.root
    if args.set:
        study_dict = study.to_dict()
        study_dict["base"] = study.base.with_overrides(args.set).to_dict()
        study = StudyConfig.from_dict({**study_dict, **changes})
    elif changes:
        study = StudyConfig.from_dict({**study.to_dict(), **changes})

    def progress(ev):
        if args.no_progress:
            return
        t = ev.trial
        if ev.kind == "trial_ended":
            val = t.get("value")
            print(f"[{ev.done}/{ev.total if ev.total is not None else '?'}] {t['status']:8s} "
                  f"{t['params']} seed {t['seed']}: {study.metric}="
                  f"{'-' if val is None else f'{val:.4f}'}" + (f"  ({t['error']})" if t.get("error") else ""),
                  flush=True)

    res = run_study(study, callbacks=[progress])
    print(f"study {study.name}: {res.status}; {res.counts()}; skipped {res.skipped} finished before; "
          f"folder {res.path}")
    if res.records:
        _print_study_table(res.path, study, args.metric or study.metric)
    return 0 if res.status == "finished" else 130


def _print_study_table(path, study, metric, fmt: str = "markdown") -> None:
    from .sweeps import summarize, to_latex, to_markdown, trials_table

    table = trials_table(path, metrics=(metric,))
    by = [c for c in study.params]
    summary = summarize(table, by, [metric]) if by else summarize(table.assign(all="all"), ["all"], [metric])
    keys = by or ["all"]
    if fmt == "latex":
        print(to_latex(summary, keys, metric, mode=study.mode))
    elif fmt == "csv":
        print(summary.to_csv(index=False), end="")
    else:
        print(to_markdown(summary, keys, metric, mode=study.mode))


def cmd_table(args) -> int:
    from .sweeps import StudyConfig

    path = Path(args.study)
    if path.is_file():
        study = StudyConfig.load(path)
        path = study.path
    else:
        study = StudyConfig.load(path / "study.yaml")
    _print_study_table(path, study, args.metric or study.metric, args.format)
    return 0


def _poison_cfg(items):
    from .poisoning import PoisonConfig

    return PoisonConfig.from_dict(_key_values(items, "--poison", "iterations=10"))


def cmd_craft(args) -> int:
    from .config import RunConfig
    from .poisoning import craft_poison
    from .training import TqdmProgress

    cfg = RunConfig.load(args.config)
    if args.root:
        cfg = cfg.with_overrides({"root": args.root})
    if args.set:
        cfg = cfg.with_overrides(args.set)
    _check_root(cfg.root, "--root" if args.root else "root")
    res = craft_poison(cfg, _poison_cfg(args.poison), callbacks=[] if args.no_progress else [TqdmProgress()])
    _print_result(res.train)
    print(f"poison: {res.poison_path}")
    if res.poison_path:
        print(f"train SGD on it: workbench run {args.config} --set data.poison={res.poison_path} optim.name=sgd")
    return _exit_code(res.train.status)


#: JupyterLab setting defaults of ``workbench lab``: never ask about, nor fetch, Jupyter news (the pop-up "Would you
#: like to get notified about official Jupyter news?" of JupyterLab 4). A user's own settings still win.
LAB_SETTING_DEFAULTS = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}}


def lab_app_settings(dest: str | Path) -> Path:
    """Fill ``dest`` as the JupyterLab *application* settings folder of ``workbench lab`` and return it.

    JupyterLab takes setting defaults from ``<app settings dir>/overrides.d/*.json`` and ``overrides.json``; the
    user's settings (``~/.jupyter/lab/user-settings``) are applied on top, so nothing of the user's is hidden or
    written. ``dest`` receives a copy of the installation's own folder (``<app dir>/settings``: ``overrides.json``,
    ``overrides.d/``, ``page_config.json``, where present) and ``overrides.d/workbench.json`` with
    :data:`LAB_SETTING_DEFAULTS` (an installation's ``overrides.json`` still takes precedence over it).
    ``workbench lab`` passes the folder as ``--LabApp.app_settings_dir``.

    Raises:
        OSError: ``dest`` cannot be written.
    """
    import json

    dest = Path(dest)
    try:
        from jupyterlab.commands import get_app_dir

        src = Path(get_app_dir()) / "settings"
    except ImportError:  # JupyterLab not installed: the launch reports it
        src = None
    if src is not None and src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True)
    (dest / "overrides.d").mkdir(parents=True, exist_ok=True)
    (dest / "overrides.d" / "workbench.json").write_text(json.dumps(LAB_SETTING_DEFAULTS, indent=1) + "\n")
    return dest


def cmd_lab(args) -> int:
    """Start JupyterLab on 127.0.0.1 with a random token, opening the quickstart notebook.

    JupyterLab's news pop-up is off (:func:`lab_app_settings`, a temporary folder removed on exit). JupyterLab and
    its kernels stop with this command: on SIGTERM, SIGHUP and Ctrl-C it stops them, and on Linux JupyterLab gets
    SIGTERM when this process dies (:func:`workbench.app.server.run_foreground`). Returns JupyterLab's exit status
    (0 after Ctrl-C, 128 + signal after SIGTERM/SIGHUP).

    Raises:
        SystemExit: ``jupyter`` is not installed (``error: ...``, exit status 2).
    """
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if jupyter is None:
        raise SystemExit("error: 'jupyter' not found; install the project with pip install -e . "
                         "(jupyterlab is a dependency)")
    token = args.token or os.environ.get("WORKBENCH_LAB_TOKEN") or secrets.token_hex(24)
    nb = Path(args.notebook)
    settings = tempfile.TemporaryDirectory(prefix="workbench-lab-settings-")
    cmd = [jupyter, "lab", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={args.port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", "--ServerApp.open_browser=" + ("False" if args.no_browser else "True"),
           "--ServerApp.allow_remote_access=False",   # the default, stated: a foreign Host header is refused
           "--LabApp.news_url=None", "--LabApp.app_settings_dir=" + str(lab_app_settings(settings.name)),
           "--ServerApp.root_dir=" + str(Path(args.root_dir).resolve())]
    if os.geteuid() == 0 if hasattr(os, "geteuid") else False:
        cmd.append("--allow-root")
    if nb.exists():
        try:
            cmd.append(str(nb.resolve().relative_to(Path(args.root_dir).resolve())))
        except ValueError:
            cmd.append(str(nb))
    print(f"JupyterLab on http://127.0.0.1:{args.port}/lab?token={token}", flush=True)
    if nb.exists():
        print(f"opening {args.notebook}", flush=True)
    print("(listening on 127.0.0.1 only; the token is required)", flush=True)
    from .app.server import lab_plotly_env, run_foreground

    env = {**os.environ, **lab_plotly_env(args.root_dir)}   # figures load plotly's module once per page
    try:
        return run_foreground(cmd, env=env)
    finally:
        settings.cleanup()


# Study packages contribute their own subcommands: each module defines add_commands(subparsers)
# and imports its heavy dependencies inside the handlers, so `workbench --help` stays fast.
COMMAND_MODULES: tuple[str, ...] = (
    "workbench.targeted.cli",       # targeted craft | evaluate
    "workbench.defenses.cli",       # defense-report (EPIC rounds and figures)
    "workbench.bilevel.cli",        # bilevel illustrate | study | figures | table
    "workbench.poisoning.cli",      # poison-fairness (the §4.2.1 protocol)
    "workbench.thesis.cli_repro",    # thesis repro (the shared ``thesis`` command)
    "workbench.thesis.cli_fastat_schedules",  # thesis fastat | schedules
    "workbench.app.cli",            # app, pack build | load
    "workbench.reproduce.cli",      # reproduce --report | --paper-scale | --store
)


class UsageError(Exception):
    """A command-line mistake found by argparse (unknown option, missing or malformed argument)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and a ``--debug`` flag on every (sub)command.

    Errors raise :class:`UsageError`, printed by :func:`main` as ``error: ...``. Subcommand parsers are of this
    class too.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the traceback of an error (also WORKBENCH_DEBUG=1)")

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="workbench", description="Sharpness & Poisoning Workbench")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train one config (YAML/JSON) headless")
    r.add_argument("config", help="config file (.yaml/.yml/.json), e.g. configs/quickstart_sam.yaml")
    r.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, e.g. optim.rho=0.1 train.epochs=5")
    r.add_argument("--root", help="runs root (overrides the config's root)")
    r.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    r.set_defaults(fn=cmd_run)

    rs = sub.add_parser("resume", help="continue a stopped run from its last checkpoint")
    rs.add_argument("run", help="run folder")
    rs.add_argument("--epochs", type=_positive_int, help="new total number of epochs")
    rs.add_argument("--no-progress", action="store_true")
    rs.set_defaults(fn=cmd_resume)

    ls = sub.add_parser("runs", help="list runs under a root")
    ls.add_argument("root", nargs="?", default="runs")
    ls.add_argument("--format", choices=["table", "csv", "json"], default="table")
    ls.set_defaults(fn=cmd_runs)

    f = sub.add_parser("figures",
                       help="export loss/accuracy curves of runs (overlaid), or a study's figures and tables")
    f.add_argument("runs", nargs="+", help="run folders, a root holding run folders, or study folders")
    f.add_argument("--metric", help="studies: the metric tabulated and drawn (default: the study's)")
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--format", nargs="+", default=["html"], choices=["html", "png", "svg", "pdf"])
    f.add_argument("--theme", default="screen", choices=["screen", "paper"])
    f.add_argument("--per-step", action="store_true", help="add per-step training curves")
    f.add_argument("--log-y", action="store_true", help="logarithmic loss axis")
    f.add_argument("--width", type=int, help="layout width in px (a PNG is width*scale px wide)")
    f.add_argument("--height", type=int, help="layout height in px")
    f.add_argument("--scale", type=float, help="PNG resolution multiplier (default 2)")
    f.add_argument("--width-in", type=float, help="paper width in inches (3.25 one column, 6.75 two columns)")
    f.add_argument("--height-in", type=float, help="paper height in inches")
    f.add_argument("--dpi", type=float, help="PNG dots per inch with --width-in (default 300)")
    f.add_argument("--html-standalone", action="store_true",
                   help="embed plotly.js in each HTML file (4.8 MB each) instead of sharing one local plotly.min.js")
    f.set_defaults(fn=cmd_figures)

    d = sub.add_parser("demo", help="the quickstart comparison (SGD vs SAM, LeNet-5, digits) headless")
    d.add_argument("--root", default="runs/demo")
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(fn=cmd_demo)

    from .analysis_registry import analysis_names, entries  # light: no torch

    two = ", ".join(e.name for e in entries() if e.needs_other)
    an = sub.add_parser("analyze", help="analyse stored runs (Hessian, landscape, sharpness, corruption, ...)")
    an.add_argument("runs", nargs="+", help=f"run folders (two for --what {two}: theta_1 then theta_2)")
    an.add_argument("--what", required=True, choices=list(analysis_names()),
                    help="the analysis (one entry each in workbench.analysis_registry)")
    an.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="analysis parameters, e.g. k=10 method=pyhessian | rhos=[0,0.05,0.1] adaptive=true")
    an.add_argument("--checkpoint", default="last.pt")
    an.add_argument("--split", default="train", choices=["train", "val", "test"])
    an.add_argument("--count", type=int, default=-1,
                    help="examples (seeded draw); -1: the analysis' default; 0: the whole split")
    an.add_argument("--seed", type=int, default=0)
    an.add_argument("--device", default="auto")
    an.add_argument("--force", action="store_true", help="recompute even when a saved result exists")
    an.add_argument("--out", help="write the figure here")
    an.add_argument("--format", nargs="+", default=["html"], choices=["html", "png", "svg", "pdf"])
    an.add_argument("--theme", default="screen", choices=["screen", "paper"])
    an.add_argument("--no-progress", action="store_true")
    an.set_defaults(fn=cmd_analyze)

    sw = sub.add_parser("sweep", help="run (or resume) a study: config fields x seeds, local or on Ray")
    sw.add_argument("study", help="study YAML, e.g. configs/studies/sgd_vs_sam_lr.yaml")
    sw.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the base run config")
    sw.add_argument("--backend", choices=["local", "ray"])
    sw.add_argument("--workers", type=_positive_int,
                    help="local backend: parallel processes (one torch thread each), >= 1")
    sw.add_argument("--root", help="folder holding the study folder")
    sw.add_argument("--metric", help="metric of the printed table (default: the study's)")
    sw.add_argument("--no-progress", action="store_true")
    sw.set_defaults(fn=cmd_sweep)

    tb = sub.add_parser("table", help="mean ± standard error over seeds of a study's trials")
    tb.add_argument("study", help="study folder or study YAML")
    tb.add_argument("--metric", help="epoch metric (test_acc, val_acc, train_loss, ...) or analysis.<what>.<key>")
    tb.add_argument("--format", choices=["markdown", "latex", "csv"], default="markdown")
    tb.set_defaults(fn=cmd_table)

    cr = sub.add_parser("craft", help="train with SAM while crafting a sharpness-aware poison (Murphy 2025, Ch. 3)")
    cr.add_argument("config", help="run config of the crafting run (optim.name sam or asam)")
    cr.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="run config overrides")
    cr.add_argument("--poison", nargs="*", default=[], metavar="KEY=VALUE",
                    help="poison settings, e.g. iterations=5 lr=0.01 epsilon=0.1 norm=linf start_epoch=1")
    cr.add_argument("--root", help="runs root")
    cr.add_argument("--no-progress", action="store_true")
    cr.set_defaults(fn=cmd_craft)

    lab = sub.add_parser("lab", help="start JupyterLab on 127.0.0.1 with a token")
    lab.add_argument("--port", type=int, default=8888)
    lab.add_argument("--token", help="token (default: random; or WORKBENCH_LAB_TOKEN)")
    lab.add_argument("--notebook", default="notebooks/00_quickstart.ipynb")
    lab.add_argument("--root-dir", default=".")
    lab.add_argument("--no-browser", action="store_true")
    lab.set_defaults(fn=cmd_lab)

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return p


def _user_error_message(e: BaseException) -> str:
    """One line for a user error: the exception's message, or a readable one for YAML and OS errors.

    Multi-line messages are joined into one line, and a message never suggests unpickling a checkpoint
    (``torch.load``'s hint to pass ``weights_only=False`` is cut).
    """
    import yaml

    from .config import yaml_error_message

    if isinstance(e, yaml.YAMLError):
        msg = f"not valid YAML: {yaml_error_message(e)}"
    elif isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and e.filename is not None:
        msg = f"{e.strerror or type(e).__name__}: {str(e.filename)!r}"
    else:
        msg = str(e) or type(e).__name__
    return " ".join(_no_unpickling_hint(msg).split())


def _no_unpickling_hint(msg: str) -> str:
    """``msg`` without torch's advice to re-run ``torch.load`` with ``weights_only=False``.

    That advice means arbitrary code execution for an untrusted checkpoint: the detail becomes what happened
    (refused, nothing unpickled).
    """
    import re

    i = msg.find("Weights only load failed")
    if i >= 0:
        j = msg.find(")", i)
        msg = (msg[:i] + "refused: it holds objects other than tensors and plain containers; nothing was unpickled"
               + (msg[j:] if j >= 0 else ""))
    unsafe = re.compile(r"weights_only(?!=True)")
    if unsafe.search(msg):
        msg = ". ".join(part for part in msg.split(". ") if not unsafe.search(part))
    return msg


def _user_errors() -> tuple[type[BaseException], ...]:
    import yaml

    from .runs.store import CheckpointError

    return (ValueError, OSError, yaml.YAMLError, CheckpointError)


def main(argv: list[str] | None = None) -> int:
    """Run the ``workbench`` command line ``argv`` (default ``sys.argv[1:]``) and return its exit status.

    Never raises ``SystemExit``: ``--help`` returns 0. Exit status: 0 success; 2 a user error — a command-line
    mistake (argparse), an invalid config value or type, a missing, unreadable or malformed config/study file, a
    missing or corrupt checkpoint, a folder that is not a run folder, a refused results pack — reported as one
    line ``error: ...`` on stderr without a traceback (with ``--debug`` or ``WORKBENCH_DEBUG=1``: re-raised, with
    its traceback); otherwise the command's own status (e.g. 130 a stopped run, 3 a diverged one). Programming
    errors still raise.
    """
    debug = os.environ.get("WORKBENCH_DEBUG", "").strip() not in ("", "0")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        if debug or "--debug" in argv:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    debug = debug or bool(getattr(args, "debug", False))
    try:
        return int(args.fn(args) or 0)
    except SystemExit as e:  # helpers and subcommands raise SystemExit("error: ...") for user errors
        if debug:
            raise
        if isinstance(e.code, str):
            msg = e.code if e.code.startswith("error:") else f"error: {e.code}"
            print(" ".join(msg.split()), file=sys.stderr)
            return 2
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except _user_errors() as e:
        if debug:
            raise
        print(f"error: {_user_error_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
