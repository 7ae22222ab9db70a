"""One entry point for every analysis of a stored run: ``analyze(what, run, ...)``.

The analysis panel and ``workbench analyze`` both go through :func:`analyze`:
it loads the model from a run's checkpoint, draws the fixed, seeded example
sets, runs the analysis with progress reports (and a stop flag), and saves the
result as an artifact of the run (``artifacts/analysis/<what>-<key>.json`` +
``.npz``). The key hashes everything that determines the result (run,
checkpoint file, other run, split, count, seed, parameters), so asking again
loads the saved result instead of recomputing.

Analyses (``what``) and their parameters (defaults in :data:`DEFAULTS`):

=============  ==================================================================================
hessian        top-k (and/or bottom-k) Hessian eigenvalues: ``k``, ``method`` (lanczos, eigsh,
               power, pyhessian), ``which`` (LA, SA, both), ``tol``
trace          Hessian trace: ``method`` (hutchpp, hutchinson, pyhessian), ``n_probes``
density        spectral density by stochastic Lanczos quadrature: ``steps``, ``n_probes``
layerwise      per-layer top eigenvalue and trace
interpolate    θ(α) = αθ₁ + (1−α)θ₂ between ``run`` (θ₁) and ``other`` (θ₂); ``alphas``
               (start, stop, num), ``bn`` (recompute, keep)  [Murphy 2025, Eq. 2.5]
slice          1-D slices along ``n_directions`` filter-normalised random directions
               (``direction="random"``) or the top Hessian eigenvector (``"eigenvector"``)
plane          2-D plane spanned by two filter-normalised random directions: ``grid`` (num per axis)
sparsity       feature sparsity coefficient per ReLU layer: ``tau``, ``max_units``
sharpness      worst- or average-case m-sharpness vs ρ: ``rhos``, ``kind``, ``norm``,
               ``adaptive``, ``m``, ``method``, ``steps``
pca            PCA of per-example gradients (``kind``: logits, last_input, weights, full)
               coloured by class
cosine         gradient cosines: ``source="sam"`` (cos(g, g′) of every SAM step, from the run's
               metrics), ``"class_mean"``, ``"target"`` (vs the gradient of the example with dataset
               index ``target``, from any split) or ``"pairwise"`` (within class), per-example
               gradients in the space ``kind``
corruption     parameter corruption: loss increase vs the number ``n`` of corrupted weights, random vs
               gradient-based n-sparse corruption of p-norm ``epsilon``: ``sizes``, ``epsilon``, ``norm``
               (l2, linf, l1), ``n_random`` (:mod:`.corruption`)  [Sun 2020, Alg. 1-2]
=============  ==================================================================================

Each analysis is one :class:`~workbench.analysis_registry.AnalysisEntry` (runner, defaults, parameter
choices, default example count, headline numbers, figure builder): :func:`analyze`, ``workbench analyze``,
the analysis panel, :func:`workbench.viz.summary_rows` and :func:`workbench.viz.result_figure` all read the
registry (:mod:`workbench.analysis_registry`), so an analysis is added in one place.

Before anything is computed (or a saved result is returned), the weights of the
checkpoint(s) and the run's poison (``data.poison``) are checked: a NaN or inf
refuses the analysis with one line (:class:`NonFiniteError`, e.g. ``run X has
non-finite weights (N of M parameters)``), so no NaN result is ever computed or
saved. A saved result that cannot be read (a truncated ``.json`` or ``.npz``) is
recomputed with a ``RuntimeWarning`` naming the file.

No UI imports.
"""
from __future__ import annotations

import json
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..analysis_registry import BUILTIN, get_entry, resolve
from ..runs import load_run
from ..runs.store import RunData
from .common import ExampleSet, ResultRecord, load_result, save_result

__all__ = ["ANALYSES", "DEFAULTS", "PARAM_CHOICES", "Progress", "AnalysisOutput", "AnalysisStopped", "NonFiniteError",
           "analyze", "load_model", "list_analyses", "check_finite_weights", "check_finite_poison", "example_set"]

ANALYSES = tuple(e.name for e in BUILTIN)
"""The built-in analyses (a snapshot; :func:`~workbench.analysis_registry.analysis_names` also lists analyses
registered later)."""

DEFAULTS: dict[str, dict[str, Any]] = {e.name: dict(e.defaults) for e in BUILTIN}
"""Default parameters of the built-in analyses (from their registry entries)."""
PARAM_CHOICES: dict[str, dict[str, list]] = {e.name: {k: list(v) for k, v in e.choices.items()} for e in BUILTIN
                                             if e.choices}
"""Allowed values of the string parameters of the built-in analyses (for widgets and validation)."""


class AnalysisStopped(RuntimeError):
    """Raised inside an analysis when its stop flag was set."""


class NonFiniteError(ValueError):
    """A run's weights or poison hold NaN or inf: the analysis is refused (one-line message)."""


_FINITE_OK: dict[tuple, bool] = {}  # (file, stamp) of checked files -> True (finite)


def _nonfinite_count(tensors) -> tuple[int, int]:
    bad = total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
            total += t.numel()
            bad += int((~torch.isfinite(t)).sum())
    return bad, total


def check_finite_weights(run: str | Path, checkpoint: str = "last.pt") -> None:
    """Refuse a checkpoint whose floating-point weights (parameters and buffers) are not all finite.

    Raises:
        NonFiniteError: ``run <folder> has non-finite weights (N of M parameters) in checkpoints/<file>``.
        CheckpointError: the checkpoint cannot be loaded.
    """
    from ..runs.store import load_checkpoint

    run = Path(run)
    ck_path = run / "checkpoints" / checkpoint
    key = (str(ck_path.resolve()), tuple(_stamp(ck_path)))
    if _FINITE_OK.get(key):
        return
    ck = load_checkpoint(ck_path)
    model = ck.get("model")
    bad, total = _nonfinite_count(model.values() if isinstance(model, dict) else [])
    if bad:
        raise NonFiniteError(f"run {run.name} has non-finite weights ({bad} of {total} parameters) in "
                             f"checkpoints/{checkpoint}: the run diverged or the file was damaged; "
                             "analyse an earlier checkpoint")
    _FINITE_OK[key] = True


def check_finite_poison(rd: RunData) -> None:
    """Refuse a run whose poison (``data.poison``) holds NaN or inf (a missing file is left to the data loader).

    Raises:
        NonFiniteError: ``run <folder>'s poison <file> has non-finite values (N of M)``.
    """
    from ..data.poison import load_poison

    src = getattr(rd.config.data, "poison", None)
    if not src or not Path(src).is_file():
        return
    path = Path(src)
    key = (str(path.resolve()), tuple(_stamp(path)))
    if _FINITE_OK.get(key):
        return
    poison = load_poison(path)
    bad, total = _nonfinite_count([poison.delta])
    if bad:
        raise NonFiniteError(f"run {rd.id}'s poison {str(path)!r} has non-finite values ({bad} of {total}): "
                             "craft it again")
    _FINITE_OK[key] = True


def _load_saved(json_path: Path) -> list:
    """The saved result ``json_path`` and its extras, or None (with a warning naming the file) when one is corrupt."""
    files = [json_path] + sorted(json_path.parent.glob(f"{json_path.name[:-len('.json')]}.extra*.json"))
    out = []
    for f in files:
        npz = f.with_suffix(".npz")
        try:
            json.loads(f.read_text(encoding="utf-8"))
        except Exception as e:
            bad, err = f, e
        else:
            try:
                out.append(load_result(f))
                continue
            except Exception as e:
                bad, err = (npz if npz.exists() else f), e
        msg = str(err).splitlines()[0] if str(err) else ""
        warnings.warn(f"saved analysis result {str(bad)!r} is corrupt ({type(err).__name__}: {msg}); recomputing",
                      RuntimeWarning, stacklevel=3)
        return None
    return out


@dataclass
class Progress:
    """A progress report: ``done`` of ``total`` units; ``data`` is what the figure can show so far."""

    what: str
    done: int
    total: int
    data: dict = field(default_factory=dict)
    message: str = ""


@dataclass
class AnalysisOutput:
    """Result of :func:`analyze`.

    Attributes:
        what: the analysis; label: run name (for legends).
        result: the result record (see the analysis modules).
        path: the artifact's JSON path (None when not saved).
        cached: loaded from a saved artifact instead of computed.
        params: the full parameter set used (defaults filled in).
        extra: secondary results (e.g. one slice per direction).
        seconds: wall time of this call.
    """

    what: str
    label: str
    result: ResultRecord
    path: Path | None
    cached: bool
    params: dict
    extra: list = field(default_factory=list)
    seconds: float = 0.0


def list_analyses(run: str | Path) -> list[dict]:
    """The analysis artifacts saved in a run: ``[{what, key, path, params, created}]``."""
    d = Path(run) / "artifacts" / "analysis"
    out = []
    for meta in sorted(d.glob("*.params.json")) if d.is_dir() else []:
        try:
            m = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        out.append({"what": m.get("what"), "key": m.get("key"), "path": str(meta.with_name(m["file"])),
                    "params": m.get("params"), "created": m.get("created")})
    return out


def load_model(run: str | Path | RunData, checkpoint: str = "last.pt", device: str | torch.device = "cpu"):
    """Rebuild a run's model from a checkpoint and load its data.

    Returns:
        ``(model, bundle, run_data)``; the model is in eval mode on ``device``.

    Raises:
        FileNotFoundError: not a run folder; CheckpointError: bad checkpoint.
    """
    from ..training.device import resolve_device
    from ..training.trainer import load_data_cached

    rd = run if isinstance(run, RunData) else load_run(run)
    dev = resolve_device(device)
    model = rd.load_model(checkpoint, device=dev).eval()
    bundle = load_data_cached(rd.config.data)
    return model, bundle, rd


def example_set(bundle, split: str, count: int | None, seed: int, device) -> ExampleSet:
    """The seeded example set a runner analyses: ``count`` examples of ``split`` (``None``: all) on ``device``.

    Raises:
        ValueError: ``split`` is not train, val or test.
    """
    splits = {"train": bundle.train, "val": bundle.val, "test": bundle.test}
    if split not in splits:
        raise ValueError(f"split={split!r} is invalid: choose one of {sorted(splits)}")
    return ExampleSet.from_dataset(splits[split], count=count, seed=seed, split=split).to(device)


_examples = example_set


def _grid(spec) -> np.ndarray:
    if isinstance(spec, (list, tuple)) and len(spec) == 3 and isinstance(spec[2], int):
        return np.linspace(float(spec[0]), float(spec[1]), int(spec[2]))
    return np.asarray(spec, dtype=float)


def _key(**parts) -> str:
    from .landscape import cache_key

    return cache_key(**parts)[:16]


def _stamp(path: Path) -> list:
    st = path.stat()
    return [path.name, st.st_size, st.st_mtime_ns]


def analyze(what: str, run: str | Path, *, other: str | Path | None = None, checkpoint: str = "last.pt",
            other_checkpoint: str = "last.pt", split: str = "train", count: int | None = -1, seed: int = 0,
            device: str = "auto", params: Mapping[str, Any] | None = None,
            callback: Callable[[Progress], Any] | None = None, stop: threading.Event | None = None,
            save: bool = True, force: bool = False) -> AnalysisOutput:
    """Run one analysis on a stored run (see the module docstring for ``what`` and ``params``).

    Args:
        what: a registered analysis (:func:`~workbench.analysis_registry.analysis_names`; the built-in
            ones are :data:`ANALYSES`).
        run: run folder (θ₁ for ``interpolate``).
        other: second run folder (θ₂), required for ``interpolate``.
        checkpoint: checkpoint file name of ``run`` in ``checkpoints/``.
        other_checkpoint: checkpoint file name of ``other`` in ``checkpoints/``.
        split: split the example set is drawn from (``train``, ``val``, ``test``).
        count: number of examples (seeded draw; ``None`` = whole split; ``-1`` =
            the analysis' default: 2,048 for curvature and landscapes, 1,024 for
            sparsity and sharpness, capped by the split size).
        seed: seed of the example draw and of every stochastic estimate.
        device: ``auto``, ``cpu``, ``cuda``, ...
        params: analysis parameters overriding the entry's defaults (:data:`DEFAULTS` for the built-in ones).
        callback: receives :class:`Progress` reports (from the computing thread).
        stop: when set, the analysis raises :class:`AnalysisStopped` at its next report.
        save: write the result to the run's ``artifacts/analysis/``.
        force: recompute even when a saved result with the same key exists.

    Raises:
        ValueError: unknown analysis or parameter, missing ``other`` for interpolation.
        NonFiniteError: NaN/inf in the checkpoint's weights (either run's for ``interpolate``) or in
            the run's poison; checked before anything is computed or loaded from the cache.
        CorruptRunError: a run folder whose files cannot be read.
        AnalysisStopped: stopped through ``stop``.

    A saved result that cannot be read is recomputed (``RuntimeWarning`` naming the file) and
    overwritten.
    """
    entry = get_entry(what)  # ValueError: what=... is invalid: choose one of ...
    p = dict(entry.defaults)
    unknown = sorted(set(params or {}) - set(p))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {what!r}: choose from {sorted(p)}")
    p.update(params or {})
    for name, allowed in entry.choices.items():
        if p.get(name) not in allowed:
            raise ValueError(f"{what}.{name}={p.get(name)!r} is invalid: choose one of {list(allowed)}")
    if count == -1:
        count = entry.count
    if entry.needs_other and other is None:
        raise ValueError(f"{what} needs a second run: other=<run folder> (θ₂; the first run is θ₁)")
    runner = resolve(entry.runner)  # imports the analysis' module: its result type can be loaded from the cache
    t0 = time.perf_counter()
    run = Path(run)
    rd = load_run(run)
    ck = run / "checkpoints" / checkpoint
    if not ck.is_file():
        raise FileNotFoundError(f"checkpoint {str(ck)!r} does not exist; available: {[c.name for c in rd.checkpoints]}")
    key_parts = dict(what=what, run=rd.id, ck=_stamp(ck), split=split, count=count, seed=seed, params=p)
    if other is not None:
        other = Path(other)
        key_parts.update(other=load_run(other).id, other_ck=_stamp(other / "checkpoints" / other_checkpoint))
    key = _key(**key_parts)
    out_dir = run / "artifacts" / "analysis"
    stem = f"{what}-{key}"
    label = rd.name if other is None else f"{rd.name} → {load_run(other).name}"
    check_finite_weights(run, checkpoint)
    if other is not None:
        check_finite_weights(other, other_checkpoint)
    check_finite_poison(rd)
    if not force and (out_dir / f"{stem}.json").is_file():
        saved = _load_saved(out_dir / f"{stem}.json")
        if saved is not None:
            return AnalysisOutput(what, label, saved[0], out_dir / f"{stem}.json", True, p, saved[1:],
                                  time.perf_counter() - t0)

    def report(done, total, data=None, message=""):
        if stop is not None and stop.is_set():
            raise AnalysisStopped(f"{what} stopped after {done}/{total}")
        if callback is not None:
            callback(Progress(what, int(done), int(total), data or {}, message))

    report(0, 1, message="loading model and data")
    model, bundle, rd = load_model(rd, checkpoint, device)
    dev = next(model.parameters()).device
    result, extra = runner(model, bundle, rd, p, split=split, count=count, seed=seed, device=dev,
                           report=report, other=other, other_checkpoint=other_checkpoint)
    path = None
    if save:
        path = save_result(result, out_dir, stem)
        for i, e in enumerate(extra):
            save_result(e, out_dir, f"{stem}.extra{i:02d}")
        meta = {"what": what, "key": key, "file": f"{stem}.json", "params": p, "split": split, "count": count,
                "seed": seed, "checkpoint": checkpoint, "other": str(other) if other else None,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        from ..runs.store import atomic_write_bytes

        atomic_write_bytes(out_dir / f"{stem}.params.json", (json.dumps(meta, indent=1, default=str) + "\n").encode())
    return AnalysisOutput(what, label, result, path, False, p, extra, time.perf_counter() - t0)


# --------------------------------------------------------------------- runners
def _run_hessian(model, bundle, rd, p, *, split, count, seed, device, report, **_):
    from . import curvature as C

    ex = _examples(bundle, split, count, seed, device)
    k, method = int(p["k"]), p["method"]
    max_iter = max(4 * k + 40, 60)

    def cb(it, ritz):
        vals = sorted((float(v) for v in ritz), reverse=True)
        report(it, max_iter, {"values": vals[:k] if p["which"] != "SA" else vals[-k:]})

    if method == "pyhessian":
        r = C.pyhessian_eigenvalues(model, ex, k=k, tol=float(p["tol"]))
        report(1, 1, {"values": [float(v) for v in r.values]})
        return r, []
    with C.HessianOperator(model, ex) as op:
        if method == "lanczos":
            r = C.lanczos(op, k=k, which=p["which"], tol=float(p["tol"]), seed=seed, callback=cb)
        elif method == "eigsh":
            r = C.eigsh_eigenvalues(op, k=k, which="SA" if p["which"] == "SA" else "LA", tol=float(p["tol"]),
                                    seed=seed)
        elif method == "power":
            r = C.power_iteration(op, k=k, tol=float(p["tol"]), seed=seed)
        else:
            raise ValueError(f"method={method!r} is invalid: choose lanczos, eigsh, power or pyhessian")
    report(1, 1, {"values": [float(v) for v in r.values]})
    return r, []


def _run_trace(model, bundle, rd, p, *, split, count, seed, device, report, **_):
    from . import curvature as C

    ex = _examples(bundle, split, count, seed, device)
    n = int(p["n_probes"])
    if p["method"] == "pyhessian":
        return C.pyhessian_trace(model, ex, max_iter=n), []
    with C.HessianOperator(model, ex) as op:
        if p["method"] == "hutchinson":
            r = C.hutchinson_trace(op, n_probes=n, seed=seed)
        elif p["method"] == "hutchpp":
            r = C.hutchpp_trace(op, n_matvecs=n, seed=seed)
        else:
            raise ValueError(f"method={p['method']!r} is invalid: choose hutchpp, hutchinson or pyhessian")
    report(1, 1)
    return r, []


def _run_density(model, bundle, rd, p, *, split, count, seed, device, report, **_):
    from . import curvature as C

    ex = _examples(bundle, split, count, seed, device)
    with C.HessianOperator(model, ex) as op:
        r = C.spectral_density(op, n_probes=int(p["n_probes"]), steps=int(p["steps"]), seed=seed)
    report(1, 1, {"grid": r.grid, "density": r.density})
    return r, []


def _run_layerwise(model, bundle, rd, p, *, split, count, seed, device, report, **_):
    from . import curvature as C

    ex = _examples(bundle, split, count, seed, device)
    r = C.layerwise(model, ex, what=p["what"], n_probes=int(p["n_probes"]), seed=seed)
    report(1, 1)
    return r, []


def _split_sets(bundle, splits, count, seed, device) -> dict[str, ExampleSet]:
    return {s: _examples(bundle, s, count, seed, device) for s in splits}


def _grid_reporter(report, n, alphas, splits):
    loss = {s: [] for s in splits}
    acc = {s: [] for s in splits}

    def cb(i, alpha, values):
        for s, (l, a) in values.items():
            loss[s].append(l)
            acc[s].append(a)
        report(i + 1, n, {"alphas": list(alphas), "loss": {s: list(v) for s, v in loss.items()},
                          "acc": {s: list(v) for s, v in acc.items()}})
    return cb


def _run_interpolate(model, bundle, rd, p, *, split, count, seed, device, report, other, other_checkpoint, **_):
    from .landscape import interpolate

    model_b, _, _ = load_model(other, other_checkpoint, device)
    alphas = _grid(p["alphas"])
    sets = _split_sets(bundle, p["splits"], count, seed, device)
    r = interpolate(model, model_b, sets, alphas=alphas, bn=p["bn"], bn_data=sets.get("train"),
                    callback=_grid_reporter(report, len(alphas), alphas, p["splits"]))
    return r, []


def _run_slice(model, bundle, rd, p, *, split, count, seed, device, report, **_):
    from . import landscape as L

    alphas = _grid(p["alphas"])
    sets = _split_sets(bundle, p["splits"], count, seed, device)
    if p["direction"] == "eigenvector":
        from . import curvature as C

        with C.HessianOperator(model, sets.get("train", next(iter(sets.values())))) as op:
            e = C.lanczos(op, k=1, seed=seed, return_vectors=True)
        dirs = [L.eigenvector_direction(model, e.vectors[0], param_names=op.param_names)]
    elif p["direction"] == "random":
        dirs = [L.random_direction(model, seed=seed + i, normalization=p["normalization"], bias_bn=p["bias_bn"])
                for i in range(int(p["n_directions"]))]
    else:
        raise ValueError(f"direction={p['direction']!r} is invalid: choose 'random' or 'eigenvector'")
    results = []
    n = len(alphas) * len(dirs)
    for j, d in enumerate(dirs):
        inner = _grid_reporter(lambda done, total, data, j=j: report(j * len(alphas) + done, n,
                                                                     {**data, "direction": j,
                                                                      "previous": [_slice_data(r) for r in results]}),
                               len(alphas), alphas, p["splits"])
        results.append(L.slice_1d(model, d, sets, alphas=alphas, bn=p["bn"], callback=inner))
    return results[0], results[1:]


def _slice_data(r) -> dict:
    return {"alphas": list(map(float, r.alphas)), "loss": {s: list(map(float, v)) for s, v in r.loss.items()}}


def _run_plane(model, bundle, rd, p, *, split, count, seed, device, report, **_):
    from . import landscape as L

    g = np.linspace(-float(p["span"]), float(p["span"]), int(p["grid"]))
    sets = _split_sets(bundle, p["splits"], count, seed, device)
    d1 = L.random_direction(model, seed=seed, normalization=p["normalization"], bias_bn=p["bias_bn"])
    d2 = L.random_direction(model, seed=seed + 1, normalization=p["normalization"], bias_bn=p["bias_bn"])
    first = p["splits"][0]
    z = np.full((len(g), len(g)), np.nan)

    def cb(k, coord, values):
        j, i = divmod(k, len(g))
        z[j, i] = values[first][0]
        if k % len(g) == len(g) - 1 or k == len(g) ** 2 - 1:
            report(k + 1, len(g) ** 2, {"alphas": g.tolist(), "betas": g.tolist(), "z": z.tolist(), "split": first})
    r = L.plane_2d(model, d1, d2, sets, alphas=g, betas=g, bn=p["bn"], callback=cb)
    return r, []


def _run_sparsity(model, bundle, rd, p, *, split, count, seed, device, report, **_):
    from .features import feature_sparsity

    ex = _examples(bundle, split, count, seed, device)
    r = feature_sparsity(model, ex, tau=float(p["tau"]), max_units=p["max_units"], seed=seed)
    report(1, 1)
    return r, []


def _run_sharpness(model, bundle, rd, p, *, split, count, seed, device, report, **_):
    from .sharpness import sharpness_curve

    ex = _examples(bundle, split, count, seed, device)
    rhos = sorted(float(r) for r in p["rhos"])

    def cb(b, nb, running, per):
        report(b + 1, nb, {"rhos": rhos, "values": [float(v) for v in running]})
    r = sharpness_curve(model, ex, rhos, kind=p["kind"], norm=p["norm"], adaptive=bool(p["adaptive"]),
                        m=p["m"], method=p["method"], steps=p["steps"], seed=seed, callback=cb)
    return r, []


def _run_pca(model, bundle, rd, p, *, split, count, seed, device, report, **_):
    from .projections import gradient_pca

    ex = _examples(bundle, split, count, seed, device)
    r = gradient_pca(model, ex, kind=p["kind"], seed=seed)
    report(1, 1)
    return r, []


def _example_by_index(bundle, index: int, device) -> ExampleSet:
    for name, ds in (("train", bundle.train), ("val", bundle.val), ("test", bundle.test)):
        hit = (ds.index == index).nonzero().flatten()
        if len(hit):
            i = hit[:1].to(ds.x.device)
            return ExampleSet(x=ds.x[i].to(device), y=ds.y[i].to(device), index=ds.index[i].cpu(), split=name,
                              seed=None, count=1)
    raise ValueError(f"cosine.target={index} is not a dataset index of any split")


def _run_cosine(model, bundle, rd, p, *, split, count, seed, device, report, **_):
    from . import gradients as G

    if p["source"] == "sam":
        r = G.sam_cosines_from_steps(rd.steps)
    elif p["source"] in ("class_mean", "target", "pairwise"):
        ex = _examples(bundle, split, count, seed, device)
        if p["source"] == "class_mean":
            r = G.gradient_cosines(model, ex, kind=p["kind"], reference="class_mean")
        elif p["source"] == "target":
            if p["target"] is None:
                raise ValueError("cosine.target is required with source='target': a dataset index")
            tgt = _example_by_index(bundle, int(p["target"]), device)
            mat = G.gradients_of_kind(model, ex, p["kind"])
            ref = G.gradients_of_kind(model, tgt, p["kind"])[0]
            r = G.GradientCosineResult(values=G.cosine_to_reference(mat, ref), labels=ex.y.cpu().numpy(),
                                       index=ex.index.cpu().numpy(), reference=f"example {int(p['target'])}",
                                       kind=p["kind"], count=ex.count, seed=ex.seed, split=split)
        else:
            mat = G.gradients_of_kind(model, ex, p["kind"])
            pairs = G.pairwise_within_class_cosines(mat, ex.y.cpu(), seed=seed)
            vals = np.concatenate([v for v in pairs.values()]) if pairs else np.array([])
            labels = np.concatenate([np.full(len(v), c) for c, v in pairs.items()]) if pairs else np.array([])
            r = G.GradientCosineResult(values=vals, labels=labels.astype(np.int64),
                                       index=np.array([], dtype=np.int64), reference="pairwise within class",
                                       kind=p["kind"], count=ex.count, seed=seed, split=split)
    else:
        raise ValueError(f"source={p['source']!r} is invalid: choose 'sam', 'class_mean' or 'pairwise'")
    report(1, 1)
    return r, []



# ------------------------------------------------------------------- headline numbers (one table row each)
def _headline_hessian(r, extra) -> dict:
    vals = np.asarray(r.values, dtype=float)
    row: dict[str, Any] = {f"lambda_{i + 1}": float(v) for i, v in enumerate(vals[:8])}
    if r.which != "SA" and len(vals) >= 5 and vals[4] != 0:
        row["lambda_1/lambda_5"] = float(vals[0] / vals[4])
    row.update(n_matvecs=r.n_matvecs, converged=r.converged, count=r.count, seconds=r.seconds)
    return row


def _headline_trace(r, extra) -> dict:
    return dict(trace=r.estimate, std_error=r.std_error, n_matvecs=r.n_matvecs, method=r.method)


def _headline_density(r, extra) -> dict:
    return dict(trace_estimate=r.trace_estimate, steps=r.steps, n_probes=r.n_probes, sigma=r.sigma)


def _headline_layerwise(r, extra) -> dict:
    row = {}
    for n, t, tr in zip(r.names, np.asarray(r.top_eigenvalues), np.asarray(r.traces)):
        row[f"{n}: lambda_max"] = float(t)
        row[f"{n}: trace"] = float(tr)
    return row


def _headline_interpolate(r, extra) -> dict:
    row = {}
    for s in r.loss:
        i_mid = int(np.argmin(np.abs(np.asarray(r.alphas) - 0.5)))
        row[f"{s} loss at alpha=0.5"] = float(r.loss[s][i_mid])
        row[f"max {s} loss on [0,1]"] = float(np.max(np.asarray(r.loss[s])[(r.alphas >= 0) & (r.alphas <= 1)]))
    return row


def _headline_slice(r, extra) -> dict:
    row = {}
    for j, s in enumerate([r] + list(extra)):
        for sp, v in s.loss.items():
            row[f"dir {j + 1} {sp} loss range"] = float(np.max(v) - np.min(v))
    return row


def _headline_plane(r, extra) -> dict:
    return {f"{sp} loss min/max": f"{np.nanmin(v):.4g} / {np.nanmax(v):.4g}" for sp, v in r.loss.items()}


def _headline_sparsity(r, extra) -> dict:
    row = {}
    for n, f, a in zip(r.layers, r.feature_sparsity_coefficient, r.active_fraction):
        row[f"{n}: fsc"] = float(f)
        row[f"{n}: active"] = float(a)
    return row


def _headline_sharpness(r, extra) -> dict:
    return {f"rho={rho:g}": float(v) for rho, v in zip(r.rhos, r.values)}


def _headline_pca(r, extra) -> dict:
    return {f"PC{i + 1} var": float(v) for i, v in enumerate(r.explained_variance_ratio)}


def _headline_cosine(r, extra) -> dict:
    vals = np.asarray(r.cosines if hasattr(r, "cosines") else r.values, dtype=float)
    return dict(mean=float(np.nanmean(vals)), median=float(np.nanmedian(vals)), n=int(np.isfinite(vals).sum()))
