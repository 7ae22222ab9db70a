"""TrainingPanel: widgets -> configs -> background runs -> live loss/accuracy figure.

Thin wiring only: the panel builds :class:`~workbench.config.RunConfig` objects
from its widgets, hands them to a :class:`~workbench.ui.runner.BackgroundRunner`
and forwards trainer events to :class:`~workbench.ui.live.LiveCurves`.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Sequence

import ipywidgets as W
import torch

from ..app.estimate import estimate_training
from ..config import DATASET_CHOICES, MODEL_CHOICES, RunConfig
from ..runs import load_run
from ..training.events import EpochEnd, RunEnded, RunStarted, StepEnd
from ..viz import training_curves
from .base import ClassroomControls, PanelBase, classroom_mode, figure_widget, guard
from .live import LiveCurves
from .probe_views import ProbeViews
from .runner import BackgroundRunner

__all__ = ["TrainingPanel"]

CLASSROOM_EPOCHS = 30
"""Epochs of the classroom-safe default: SGD + SAM, LeNet-5 on digits, 30 epochs each train in about
50 s on a busy 2-core CPU (timed probe: ~20 steps × 13 ms (SGD) / 34 ms (SAM) + evaluation per epoch)."""

_OPTIMIZERS = (("sgd", "SGD"), ("sam", "SAM"), ("asam", "ASAM"), ("adam", "Adam"))


def _devices() -> list[str]:
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def _fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s}s"


class TrainingPanel(PanelBase):
    """Train and compare optimizers live in a notebook.

    Args:
        root: folder for run folders (created when missing).
        base: configuration the widgets start from (default: LeNet-5 on digits).
        compare: optimizers ticked at start (``sgd``, ``sam``, ``asam``, ``adam``);
            Start trains one run per ticked optimizer, one after the other, with
            the same data, model, seed and hyperparameters.
        epochs: initial epochs (overrides ``base``).
        per_step: also draw per-step (mini-batch) training curves.
        interval: minimum seconds between figure redraws.

    Attributes:
        figure: the live ``FigureWidget``.
        widget: the whole panel (displayed when the panel is the cell's value).
        results: :class:`~workbench.training.TrainResult` of every finished run.
    """

    def __init__(self, root: str | Path = "runs", *, base: RunConfig | None = None,
                 compare: Sequence[str] = ("sgd", "sam"), epochs: int | None = None, per_step: bool = True,
                 interval: float = 0.5, heavier: dict | None = None, classroom: bool | None = None):
        self.root = Path(root)
        self.base = base or RunConfig()
        if epochs is not None:
            self.base = self.base.with_overrides({"train.epochs": int(epochs)})
        given_epochs = self.base.train.epochs
        if classroom_mode(classroom) and given_epochs > CLASSROOM_EPOCHS:
            # classroom-safe default; the given length stays one click away (Heavier)
            self.base = self.base.with_overrides({"train.epochs": CLASSROOM_EPOCHS})
            if heavier is None:
                heavier = {"epochs": given_epochs}
        if heavier is None:
            heavier = {"epochs": max(100, 2 * self.base.train.epochs)}
        b = self.base
        st = {"description_width": "initial"}
        lay = W.Layout(width="auto")
        self.w_dataset = W.Dropdown(options=list(DATASET_CHOICES), value=b.data.name, description="dataset",
                                    style=st, layout=lay)
        self.w_model = W.Dropdown(options=list(MODEL_CHOICES), value=b.model.name, description="model", style=st,
                                  layout=lay)
        self.w_device = W.Dropdown(options=_devices(), value="auto" if b.train.device == "auto" else b.train.device,
                                   description="device", style=st, layout=lay)
        self.w_opts = {k: W.Checkbox(value=k in compare, description=label, indent=False,
                                     layout=W.Layout(width="80px")) for k, label in _OPTIMIZERS}
        self.w_lr = W.BoundedFloatText(value=b.optim.lr, min=1e-6, max=10.0, step=0.005, description="lr", style=st,
                                       layout=W.Layout(width="130px"))
        self.w_momentum = W.BoundedFloatText(value=b.optim.momentum, min=0.0, max=0.999, step=0.05,
                                             description="momentum", style=st, layout=W.Layout(width="160px"))
        self.w_wd = W.BoundedFloatText(value=b.optim.weight_decay, min=0.0, max=1.0, step=1e-4,
                                       description="weight decay", style=st, layout=W.Layout(width="190px"))
        self.w_rho = W.BoundedFloatText(value=b.optim.rho, min=0.0, max=10.0, step=0.01, description="rho",
                                        style=st, layout=W.Layout(width="130px"))
        self.w_asam_rho = W.BoundedFloatText(value=max(b.optim.rho, 0.5), min=0.0, max=10.0, step=0.1,
                                             description="ASAM rho", style=st, layout=W.Layout(width="160px"))
        self.w_adam_lr = W.BoundedFloatText(value=1e-3, min=1e-7, max=1.0, step=1e-4, description="Adam lr",
                                            style=st, layout=W.Layout(width="160px"))
        self.w_m = W.BoundedIntText(value=b.optim.m or 0, min=0, max=1_000_000, description="m (0 = batch)",
                                    style=st, layout=W.Layout(width="170px"))
        self.w_batch = W.BoundedIntText(value=b.train.batch_size, min=1, max=1_000_000, description="batch size",
                                        style=st, layout=W.Layout(width="170px"))
        self.w_epochs = W.BoundedIntText(value=b.train.epochs, min=1, max=100_000, description="epochs", style=st,
                                         layout=W.Layout(width="140px"))
        self.w_seed = W.IntText(value=b.train.seed, description="seed", style=st, layout=W.Layout(width="120px"))
        self.w_start = W.Button(description="Start", button_style="success", icon="play",
                                tooltip="Train one run per ticked optimizer")
        self.w_stop = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True,
                               tooltip="Stop after the current step (a checkpoint is written)")
        self.w_export = W.Button(description="Export", icon="download", tooltip="Save the figure (HTML, PNG)")
        self.w_clear = W.Button(description="Clear", icon="trash", tooltip="Remove finished runs from the figure")
        self.w_progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="", bar_style="info",
                                          layout=W.Layout(width="320px"))
        self.w_progress_text = W.Label(value="idle", layout=W.Layout(width="auto"))
        self.w_status = W.HTML(value=self._html("Ready. Tick optimizers and press Start."))
        # optional live probes (measured at epoch ends; they cost time, so they are off by default)
        self.w_probe_eig = W.Checkbox(value=False, description="λ_max every", indent=False,
                                      layout=W.Layout(width="110px"))
        self.w_probe_eig_every = W.BoundedIntText(value=5, min=1, max=10_000, description="",
                                                  layout=W.Layout(width="60px"))
        self.w_probe_fsc = W.Checkbox(value=False, description="feature sparsity per epoch", indent=False,
                                      layout=W.Layout(width="210px"))
        self.w_probe_cos = W.Checkbox(value=False, description="cos(g, g′) histogram (SAM)", indent=False,
                                      layout=W.Layout(width="220px"))
        self.probe_views = ProbeViews()
        self.probe_views.widget.layout.display = "none"
        for c in (self.w_probe_eig, self.w_probe_fsc, self.w_probe_cos):
            c.observe(lambda _c: self._toggle_probe_views(), names="value")
        self.figure = figure_widget(training_curves([], title="Loss and accuracy (live)"))
        self.live = LiveCurves(self.figure, per_step=per_step, interval=interval, on_refresh=self._refresh)
        self.results = []
        self.errors: list[str] = []
        self.runner: BackgroundRunner | None = None
        self._progress = {"index": 0, "count": 0, "name": "", "step": 0, "total": 1, "t0": 0.0, "s0": 0,
                          "epoch": 0, "epochs": 0, "last": None}
        self._plock = threading.Lock()
        self._done = threading.Event()
        self._done.set()

        self.w_start.on_click(lambda _b: self.start())
        self.w_stop.on_click(lambda _b: self.stop())
        self.w_export.on_click(lambda _b: self._export_clicked())
        self.w_clear.on_click(lambda _b: self.clear())

        # stable CSS classes for tests, themes and app mode
        for name, w in {"dataset": self.w_dataset, "model": self.w_model, "device": self.w_device, "lr": self.w_lr,
                        "momentum": self.w_momentum, "weight-decay": self.w_wd, "rho": self.w_rho,
                        "asam-rho": self.w_asam_rho, "adam-lr": self.w_adam_lr, "m": self.w_m,
                        "batch-size": self.w_batch, "epochs": self.w_epochs, "seed": self.w_seed,
                        "start": self.w_start, "stop": self.w_stop, "export": self.w_export, "clear": self.w_clear,
                        "progress": self.w_progress, "progress-text": self.w_progress_text,
                        "status": self.w_status, "probe-eig": self.w_probe_eig,
                        "probe-eig-every": self.w_probe_eig_every, "probe-fsc": self.w_probe_fsc,
                        "probe-cos": self.w_probe_cos}.items():
            w.add_class(f"wb-{name}")
        for k, w in self.w_opts.items():
            w.add_class(f"wb-opt-{k}")
        self.figure.add_class("wb-figure")
        row1 = W.HBox([self.w_dataset, self.w_model, self.w_device])
        row2 = W.HBox([W.Label("optimizers:")] + list(self.w_opts.values()))
        row3 = W.HBox([self.w_lr, self.w_momentum, self.w_wd, self.w_rho, self.w_m])
        row3b = W.HBox([self.w_asam_rho, self.w_adam_lr])
        row4 = W.HBox([self.w_batch, self.w_epochs, self.w_seed])
        row6 = W.HBox([self.w_progress, self.w_progress_text], layout=W.Layout(flex_flow="row wrap"))
        row_probes = W.HBox([W.Label("probes:"), self.w_probe_eig, self.w_probe_eig_every, W.Label("epochs"),
                             self.w_probe_fsc, self.w_probe_cos], layout=W.Layout(flex_flow="row wrap"))
        fields = {"dataset": self.w_dataset, "model": self.w_model, "device": self.w_device, "lr": self.w_lr,
                  "momentum": self.w_momentum, "weight_decay": self.w_wd, "rho": self.w_rho,
                  "asam_rho": self.w_asam_rho, "adam_lr": self.w_adam_lr, "m": self.w_m, "batch_size": self.w_batch,
                  "epochs": self.w_epochs, "seed": self.w_seed, "probe_eig": self.w_probe_eig,
                  "probe_eig_every": self.w_probe_eig_every, "probe_fsc": self.w_probe_fsc,
                  "probe_cos": self.w_probe_cos, **{f"opt_{k}": w for k, w in self.w_opts.items()}}
        self.classroom = ClassroomControls(
            self, fields, heavier=heavier or None,
            describe=", ".join(f"{v} {k.replace('_', ' ')}" if k == "epochs" else f"{k} {v}"
                               for k, v in (heavier or {}).items()),
            estimate=lambda values: estimate_training(self.configs(values)))
        row5 = W.HBox([self.w_start, self.w_stop, self.w_export, self.w_clear, self.classroom.widget],
                      layout=W.Layout(flex_flow="row wrap"))
        self.widget = W.VBox([row1, row2, row3, row3b, row4, row_probes, row5, row6, self.w_status, guard(self.figure),
                              self.probe_views.widget])
        self.widget.add_class("wb-training-panel")

    # ------------------------------------------------------------ display
    # ------------------------------------------------------------ configs
    def configs(self, values: dict | None = None) -> list[RunConfig]:
        """The run configurations Start would train (validated).

        Args:
            values: settings by field name (``epochs``, ``lr``, ``opt_sam``, ...) used instead
                of the widgets' current values (the Heavier button's estimate uses this).

        Raises:
            ValueError: a widget value is invalid (the message names the field),
                or no optimizer is ticked.
        """
        if values is None:
            values = {k: w.value for k, w in self.classroom.fields.items()} if hasattr(self, "classroom") else {}
        v = lambda key, w: values.get(key, w.value)  # noqa: E731
        chosen = [k for k, w in self.w_opts.items() if v(f"opt_{k}", w)]
        if not chosen:
            raise ValueError("tick at least one optimizer")
        out = []
        for name in chosen:
            rho = v("asam_rho", self.w_asam_rho) if name == "asam" else v("rho", self.w_rho)
            ov = {
                "root": str(self.root), "name": None,
                "data.name": v("dataset", self.w_dataset), "model.name": v("model", self.w_model),
                "optim.name": name, "optim.lr": float(v("lr", self.w_lr)),
                "optim.momentum": float(v("momentum", self.w_momentum)),
                "optim.weight_decay": float(v("weight_decay", self.w_wd)),
                "optim.rho": float(rho), "optim.m": int(v("m", self.w_m)) or None,
                "train.batch_size": int(v("batch_size", self.w_batch)), "train.epochs": int(v("epochs", self.w_epochs)),
                "train.seed": int(v("seed", self.w_seed)), "train.device": v("device", self.w_device),
            }
            if name == "adam":
                ov["optim.lr"] = float(v("adam_lr", self.w_adam_lr))
            out.append(self.base.with_overrides(ov))
        return out

    # ------------------------------------------------------------ actions
    @property
    def running(self) -> bool:
        """Whether the panel's runs are being trained in the background."""
        return self.runner is not None and self.runner.running

    def start(self) -> bool:
        """Start training the ticked optimizers; returns False (with a message) if refused."""
        if self.running:
            self._say("A run is already in progress on this figure: press Stop first (or wait for it).", "#b35900")
            return False
        try:
            configs = self.configs()
        except ValueError as e:
            self._say(f"Invalid setting: {e}", "#b00020")
            return False
        self.errors = []
        self._done.clear()
        with self._plock:
            self._progress.update(index=0, count=len(configs), step=0, total=1, t0=time.monotonic(), s0=0)
        self.runner = BackgroundRunner(configs, callbacks=[self.live, self._on_event, self.probe_views],
                                       on_run_start=self._on_run_start, on_finish=self._on_finish,
                                       on_error=self._on_error, probes=self._make_probes)
        self.w_start.disabled, self.w_stop.disabled = True, False
        self.w_progress.bar_style = "info"
        self._say(f"Starting {len(configs)} run(s): " + ", ".join(c.display_name for c in configs))
        self.live.start()
        self.runner.start()
        return True

    def _make_probes(self, cfg) -> list:
        probes = []
        if self.w_probe_eig.value:
            from ..analysis.curvature import TopEigenvalueProbe

            probes.append(TopEigenvalueProbe(every=int(self.w_probe_eig_every.value)))
        if self.w_probe_fsc.value:
            from ..analysis.features import FeatureSparsityProbe

            probes.append(FeatureSparsityProbe(every=1))
        return probes

    def _toggle_probe_views(self) -> None:
        on = self.w_probe_eig.value or self.w_probe_fsc.value or self.w_probe_cos.value
        self.probe_views.widget.layout.display = None if on else "none"
        if on:
            self.probe_views.redraw(force=True)

    def _refresh(self) -> None:
        self._update_progress()
        if self.probe_views.widget.layout.display != "none":
            self.probe_views.redraw()

    def stop(self) -> None:
        """Stop the current run after its current step; queued runs are skipped."""
        if self.runner is not None:
            self.runner.stop()
            self._say("Stopping after the current step ...", "#b35900")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the started runs are done (for scripts and tests)."""
        return self._done.wait(timeout)

    def clear(self) -> None:
        """Remove finished runs from the figure (the run folders stay on disk)."""
        keep = set()
        if self.running and self.runner.trainer is not None and self.runner.trainer.run_dir is not None:
            keep = {self.runner.trainer.run_id}
        self.live.clear(keep)
        self.probe_views.clear()

    def load_runs(self, paths: Sequence[str | Path]) -> None:
        """Draw finished runs from disk beside the live ones."""
        for p in paths:
            rd = load_run(p)
            self.live.add_history(rd.id, rd.name, rd.epochs.to_dict("records"),
                                  rd.steps.to_dict("records") if self.live.per_step else [])
        self.live.redraw()

    def export(self, path: str | Path | None = None, formats: Sequence[str] = ("html", "png")) -> list[Path]:
        """Write the current figure (default ``<root>/exports/training-curves-<time>``).

        PNG is skipped with a message when no Chrome/Chromium is available.
        """
        stem = Path(path) if path else self.root / "exports" / time.strftime("training-curves-%Y%m%d-%H%M%S")
        fig = training_curves(self.live.curves(), per_step=self.live.per_step)
        return self._export(fig, stem, formats)

    # ------------------------------------------------------------ callbacks
    def _on_run_start(self, i, cfg, trainer) -> None:
        with self._plock:
            self._progress.update(index=i, name=cfg.display_name, step=0, total=1, epoch=0,
                                  epochs=cfg.train.epochs, last=None)
        self._say(f"Run {i + 1}/{len(self.runner.configs)}: {cfg.display_name} - loading data and model ...")

    def _on_event(self, ev) -> None:
        with self._plock:
            p = self._progress
            if isinstance(ev, RunStarted):
                p.update(total=max(ev.total_steps, 1), step=ev.start_step, s0=ev.start_step, t0=time.monotonic())
                p["run_path"] = ev.run_path
            elif isinstance(ev, StepEnd):
                p["step"] = ev.step
            elif isinstance(ev, EpochEnd):
                p["epoch"] = ev.epoch
                p["last"] = ev.metrics
            elif isinstance(ev, RunEnded):
                p["ended"] = ev.status

    def _update_progress(self) -> None:
        with self._plock:
            p = dict(self._progress)
        if not p["count"]:
            return
        frac_run = min(p["step"] / p["total"], 1.0)
        self.w_progress.value = (p["index"] + frac_run) / p["count"]
        rate = (p["step"] - p["s0"]) / max(time.monotonic() - p["t0"], 1e-9)
        eta = (p["total"] - p["step"]) / rate if rate > 0 else float("nan")
        eta_txt = _fmt_seconds(eta) if eta == eta else "?"
        self.w_progress_text.value = (f"run {p['index'] + 1}/{p['count']} · epoch {p['epoch']}/{p['epochs']} · "
                                      f"step {p['step']}/{p['total']} · ETA {eta_txt}")
        last = p.get("last")
        if last and self.running:
            self._say(f"{p['name']}: epoch {p['epoch']}/{p['epochs']} - "
                      f"train loss {last.get('train_loss', float('nan')):.4f}, "
                      f"val acc {last.get('val_acc', float('nan')):.4f}, "
                      f"test acc {last.get('test_acc', float('nan')):.4f}")

    def _on_error(self, i, cfg, exc, tb) -> None:
        self.errors.append(f"{cfg.display_name}: {type(exc).__name__}: {exc}")

    def _on_finish(self, results) -> None:
        self.results.extend(results)
        self.live.stop(final=True)
        self._refresh()
        if results and results[-1].status != "finished":
            self.w_progress_text.value += f" · {results[-1].status}"
        self.w_start.disabled, self.w_stop.disabled = False, True
        statuses = ", ".join(f"{r.status}" + (f" (test acc {r.final_metrics.get('test_acc', float('nan')):.4f})"
                                              if r.final_metrics.get("test_acc") is not None else "")
                             for r in results)
        if self.errors:
            self.w_progress.bar_style = "danger"
            self._say("Failed: " + "; ".join(self.errors) + (f". Others: {statuses}" if statuses else ""), "#b00020")
        else:
            stopped = any(r.status != "finished" for r in results)
            self.w_progress.bar_style = "warning" if stopped else "success"
            where = str(self.root)
            self._say(f"Done: {statuses}. Run folders under {where}/ "
                      f"(resume a stopped one with workbench.training.Trainer.from_run(path).run()).",
                      "#b35900" if stopped else "#1b5e20")
        self._done.set()
