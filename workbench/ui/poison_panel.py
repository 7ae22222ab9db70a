"""PoisonPanel: craft a sharpness-aware poison S′ = S + Δ from a notebook and watch it form.

Over 700 lines, kept whole: the widgets of one panel and their callbacks share the panel's state; the figures
it shows are built in :mod:`workbench.viz`.

Thin wiring over :func:`workbench.poisoning.craft_poison` ([Murphy 2025,
Ch. 3]): the widgets build a SAM :class:`~workbench.config.RunConfig` and a
:class:`~workbench.poisoning.PoisonConfig` (invalid settings go to the status
line), the crafting run trains on a background thread, and its events are only
buffered by :meth:`PoisonPanel._on_event`. A refresher thread redraws, at most
every ``interval`` seconds, with the builders of :mod:`workbench.viz.poisoning`:

* the cosine loss 𝓑 = 1 − cos(g′, ∇L_{B+Δ}) before every inner iteration of every
  crafted batch (report Fig. 5.5) and a zoom on the last batches (Fig. 5.6),
* the Frobenius norm ‖Δ‖ per epoch (Fig. 5.2),
* the drift of 𝓑 at frozen earlier weights (Fig. 5.7),
* SAM's cos(g, g′) per step (Fig. 5.8),

and, when crafting ends (or on demand), a grid of a few training examples x,
their perturbation Δ and x + Δ, read from the run's ``artifacts/poison.pt``.
The status line then says where the poison is and how to train on it
(the run-config override ``data.poison=<path>``).

Compare runs :func:`workbench.poisoning.study.compare_poison` with the same settings:
per seed it crafts a poison with a SAM run of that seed (filling the same live
figures) and trains SGD on S, SGD on S′ and SGD on S + matched noise; SAM on S is the
seed's crafting run (the Table 4.3 protocol [Murphy 2025, §4.2]; Tables 4.3-4.4,
Figs. 5.1, 5.3, 5.4); the table of test accuracies and the loss curves are drawn
when it ends.
"""
from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path
from typing import Sequence

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go

from ..app.estimate import estimate_crafting
from ..config import RunConfig
from ..poisoning.sharpness_aware import POISON_FILE, CraftResult, CraftStep, PoisonConfig, craft_poison
from ..presets import quickstart_config
from ..training.events import EpochEnd, ProbeResult, RunEnded, RunStarted, StepEnd
from ..viz.poison_study import plot_curves
from ..viz.poisoning import craft_loss_figure, delta_norm_figure, drift_figure, image_grid_figure, sam_cosine_figure
from .base import ClassroomControls, PanelBase, classroom_mode, figure_widget, guard
from .live import sync_figure

__all__ = ["PoisonPanel"]

_ERR, _WARN, _OK = "#b00020", "#b35900", "#1b5e20"
CLASSROOM_EPOCHS = 3
"""Crafting epochs of the classroom-safe default: 3 epochs of LeNet-5 on digits with 5 inner iterations per
batch take about 40 s on a busy 2-core CPU (10 epochs took 138 s there)."""


def _fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s}s"


def _parse_epochs(text: str) -> list[int]:
    """``"1, 5, 10, 15"`` (commas or spaces; empty = none) -> ``[1, 5, 10, 15]``."""
    out = []
    for part in str(text).replace(",", " ").split():
        try:
            out.append(int(part))
        except ValueError:
            raise ValueError(f"poison.drift_epochs: {part!r} is not an epoch number; "
                             "write e.g. '1, 5, 10, 15' (empty: no drift report)") from None
    if any(e < 1 for e in out):
        raise ValueError(f"poison.drift_epochs={out} is invalid: epochs are numbered from 1")
    return out


class PoisonPanel(PanelBase):
    """Craft a sharpness-aware poison live in a notebook.

    Args:
        root: folder for run folders (the crafting run's folder holds ``artifacts/poison.pt``).
        base: the crafting run's configuration; it must train with SAM or ASAM (default:
            :func:`workbench.presets.quickstart_config` ``("sam", epochs=10)``: LeNet-5 on digits).
            Dataset, model, batch size and schedule come from it; epochs, seed, lr and ρ
            are widgets.
        poison: the crafting settings the widgets start from (default ``PoisonConfig()``).
        interval: minimum seconds between live redraws (default 0.35: about 3 per second).
        zoom_batches: how many of the last crafted batches the zoomed view shows (Fig. 5.6).
        images: how many training examples the image grid shows.
        seeds: the training seeds Compare trains every variant with (``"0-4"``, ``"0,1,2"`` or a list).

    Attributes:
        widget: the whole panel (displayed when the panel is a cell's value).
        figure_loss, figure_zoom, figure_norm, figure_drift, figure_cosine, figure_images,
        figure_compare: the ``FigureWidget`` objects.
        result: the :class:`~workbench.poisoning.sharpness_aware.CraftResult` of the last
            crafting (None while it runs or when it failed).
        comparison: the :class:`~workbench.poisoning.study.PoisonComparison` of the last
            Compare (None before one ended).
        poison_path: the last poison file written (None before any).
        errors: tracebacks of failed craftings.
    """

    def __init__(self, root: str | Path = "runs", *, base: RunConfig | None = None,
                 poison: PoisonConfig | None = None, interval: float = 0.35, zoom_batches: int = 10,
                 images: int = 8, seeds: str | Sequence[int] = "0", heavier: dict | None = None,
                 classroom: bool | None = None):
        self.root = Path(root)
        self.base = base if base is not None else quickstart_config("sam", epochs=10, root=str(self.root))
        if not isinstance(self.base, RunConfig):
            raise TypeError(f"base must be a RunConfig, got {type(self.base).__name__}")
        given_epochs = self.base.train.epochs
        if classroom_mode(classroom) and given_epochs > CLASSROOM_EPOCHS:
            # classroom-safe default; the given length stays one click away (Heavier)
            self.base = self.base.with_overrides({"train.epochs": CLASSROOM_EPOCHS})
            if heavier is None:
                heavier = {"epochs": given_epochs}
        if heavier is None:
            heavier = {"epochs": max(10, 2 * self.base.train.epochs)}
        p = poison if poison is not None else PoisonConfig()
        self.poison_base = p
        self.interval = float(interval)
        self.zoom_batches = int(zoom_batches)
        self.images = int(images)
        b = self.base
        st = {"description_width": "initial"}

        def box(w: W.Widget, width: str) -> W.Widget:
            w.layout = W.Layout(width=width)
            w.style = st
            return w

        # ----------------------------------------------------- crafting run
        self.w_base = W.HTML()
        self.w_epochs = box(W.IntText(value=b.train.epochs, description="epochs"), "130px")
        self.w_seed = box(W.IntText(value=b.train.seed, description="seed"), "110px")
        self.w_lr = box(W.FloatText(value=b.optim.lr, description="lr", step=0.005), "130px")
        self.w_rho = box(W.FloatText(value=b.optim.rho, description="ρ", step=0.01), "120px")
        # ------------------------------------------------------------ poison
        self.w_plr = box(W.FloatText(value=p.lr, description="lr^P", step=0.001,
                                     tooltip="learning rate on Δ"), "140px")
        self.w_popt = box(W.Dropdown(options=["adam", "sgd"], value=p.optimizer, description="optimizer"), "170px")
        self.w_iterations = box(W.IntText(value=p.iterations, description="iterations",
                                          tooltip="inner iterations n per batch"), "150px")
        self.w_start_epoch = box(W.IntText(value=p.start_epoch, description="start epoch"), "150px")
        self.w_init_noise = box(W.FloatText(value=p.init_noise, description="init noise σ", step=0.01), "170px")
        self.w_epsilon = box(W.FloatText(value=p.epsilon, description="ε (0 = free)", step=0.01), "170px")
        self.w_norm = box(W.Dropdown(options=["linf", "l2"], value=p.norm, description="norm"), "130px")
        self.w_relative = W.Checkbox(value=p.relative, description="ε relative to ‖x‖", indent=False,
                                     layout=W.Layout(width="150px"))
        self.w_cosine = box(W.Dropdown(options=["global", "per_tensor"], value=p.cosine, description="cosine"),
                            "190px")
        self.w_bn = box(W.Dropdown(options=["train", "eval"], value=p.bn, description="BN mode"), "160px")
        self.w_ensemble = box(W.IntText(value=p.ensemble, description="ensemble m"), "150px")
        self.w_augment = W.Checkbox(value=p.augment, description="augment (flip + crop)", indent=False,
                                    layout=W.Layout(width="170px"))
        self.w_train_on_poison = W.Checkbox(value=p.train_on_poison, description="train on poison", indent=False,
                                            layout=W.Layout(width="140px"))
        self.w_drift = box(W.Text(value=", ".join(str(e) for e in p.drift_epochs), description="drift epochs"),
                           "210px")
        # ----------------------------------------------------------- actions
        self.w_start = W.Button(description="Craft", button_style="success", icon="play",
                                tooltip="Train with SAM and craft Δ batch by batch")
        self.w_stop = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True,
                               tooltip="Stop after the current batch (poison.pt is written)")
        self.w_show = W.Button(description="Show images", icon="image",
                               tooltip="x, Δ and x + Δ of a few training examples (from poison.pt)")
        self.w_export = W.Button(description="Export", icon="download", tooltip="Save the figures (HTML, PNG)")
        self.w_compare = W.Button(description="Compare", icon="balance-scale",
                                  tooltip="For every seed: craft with SAM (= SAM on S), then train SGD on S, "
                                          "SGD on S′ and SGD on S + noise (compare_poison)")
        self.w_seeds = box(W.Text(value=seeds if isinstance(seeds, str) else ", ".join(map(str, seeds)),
                                     description="compare seeds", placeholder="0-4"), "200px")
        self.w_table = W.HTML(value=self._html("Press Compare: per seed, craft a poison, then train the other "
                                               "variants; the table of test accuracies appears here.", "#555"))
        self.w_progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                          layout=W.Layout(width="260px"))
        self.w_progress_text = W.Label(value="idle")
        self.w_status = W.HTML(value=self._html("Set the crafting options and press Craft."))
        self.w_hint = W.HTML(value="")
        # ----------------------------------------------------------- figures
        self.figure_loss = figure_widget(craft_loss_figure([]))
        self.figure_zoom = figure_widget(craft_loss_figure([], zoom=None))
        self.figure_norm = figure_widget(delta_norm_figure([], []))
        self.figure_drift = figure_widget(drift_figure([]))
        self.figure_cosine = figure_widget(sam_cosine_figure([]))
        self.figure_images = figure_widget()
        self.figure_images.layout.title.text = "x, Δ and x + Δ: shown when crafting ends (or press Show images)"
        self.figure_compare = figure_widget()
        self.figure_compare.layout.title.text = "Loss curves of the four variants: shown when Compare ends"
        self.w_tabs = W.Tab(children=[W.VBox([guard(self.figure_loss), guard(self.figure_zoom)]),
                                      guard(self.figure_norm), guard(self.figure_drift), guard(self.figure_cosine),
                                      guard(self.figure_images), W.VBox([self.w_table, guard(self.figure_compare)])])
        for i, t in enumerate(["cosine loss 𝓑", "‖Δ‖ per epoch", "drift", "SAM cos(g, g′)", "images",
                               "comparison"]):
            self.w_tabs.set_title(i, t)

        # ------------------------------------------------------------- state
        self.result: CraftResult | None = None
        self.comparison = None
        self.poison_path: Path | None = None
        self.errors: list[str] = []
        self.run_config: RunConfig | None = None
        self.poison_config: PoisonConfig | None = None
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._done = threading.Event()
        self._done.set()
        self._over = threading.Event()
        self._over.set()
        self._thread: threading.Thread | None = None
        self._refresher: threading.Thread | None = None
        self._stop_requested = False
        self._stop_event = threading.Event()
        self._mode = "craft"
        self._study: dict | None = None
        self._accept_run = True
        self._craft_run_id: str | None = None
        self._last_full = 0.0
        self._drawn: dict[str, object] = {}
        self.redraws = 0
        self._reset_buffers()

        self.w_start.on_click(lambda _b: self.start())
        self.w_stop.on_click(lambda _b: self.stop())
        self.w_show.on_click(lambda _b: self._show_clicked())
        self.w_export.on_click(lambda _b: self._export_clicked())
        self.w_compare.on_click(lambda _b: self.compare())

        for name, w in {"base": self.w_base, "epochs": self.w_epochs, "seed": self.w_seed, "lr": self.w_lr,
                        "rho": self.w_rho, "poison-lr": self.w_plr, "optimizer": self.w_popt,
                        "iterations": self.w_iterations, "start-epoch": self.w_start_epoch,
                        "init-noise": self.w_init_noise, "epsilon": self.w_epsilon, "norm": self.w_norm,
                        "relative": self.w_relative, "cosine": self.w_cosine, "bn": self.w_bn,
                        "ensemble": self.w_ensemble, "augment": self.w_augment,
                        "train-on-poison": self.w_train_on_poison, "drift-epochs": self.w_drift,
                        "start": self.w_start, "stop": self.w_stop, "show-images": self.w_show,
                        "export": self.w_export, "compare": self.w_compare, "seeds": self.w_seeds,
                        "table": self.w_table, "progress": self.w_progress,
                        "progress-text": self.w_progress_text, "status": self.w_status, "hint": self.w_hint,
                        "tabs": self.w_tabs}.items():
            w.add_class(f"wb-po-{name}")
        for name, f in {"craft-loss": self.figure_loss, "craft-zoom": self.figure_zoom,
                        "delta-norm": self.figure_norm, "drift": self.figure_drift,
                        "sam-cosine": self.figure_cosine, "images": self.figure_images,
                        "compare-curves": self.figure_compare}.items():
            f.add_class(f"wb-po-{name}")
        fields = {"epochs": self.w_epochs, "seed": self.w_seed, "lr": self.w_lr, "rho": self.w_rho,
                  "poison_lr": self.w_plr, "optimizer": self.w_popt, "iterations": self.w_iterations,
                  "start_epoch": self.w_start_epoch, "init_noise": self.w_init_noise, "epsilon": self.w_epsilon,
                  "norm": self.w_norm, "relative": self.w_relative, "cosine": self.w_cosine, "bn": self.w_bn,
                  "ensemble": self.w_ensemble, "augment": self.w_augment, "train_on_poison": self.w_train_on_poison,
                  "drift_epochs": self.w_drift, "seeds": self.w_seeds}
        self.classroom = ClassroomControls(
            self, fields, heavier=heavier or None, prefix="wb-po",
            describe=", ".join(f"{v} epochs" if k == "epochs" else f"{k} {v}" for k, v in (heavier or {}).items()),
            estimate=lambda values: estimate_crafting(*self.configs(values)))
        wrap = W.Layout(flex_flow="row wrap")
        self.widget = W.VBox([
            self.w_base,
            W.HBox([W.Label("crafting run (SAM):"), self.w_epochs, self.w_seed, self.w_lr, self.w_rho],
                   layout=wrap),
            W.HBox([W.Label("poison:"), self.w_plr, self.w_popt, self.w_iterations, self.w_start_epoch,
                    self.w_init_noise], layout=wrap),
            W.HBox([self.w_epsilon, self.w_norm, self.w_relative, self.w_cosine, self.w_bn], layout=wrap),
            W.HBox([self.w_ensemble, self.w_augment, self.w_train_on_poison, self.w_drift], layout=wrap),
            W.HBox([self.w_start, self.w_stop, self.w_show, self.w_export, self.w_compare, self.w_seeds,
                    self.classroom.widget], layout=wrap),
            W.HBox([self.w_progress, self.w_progress_text], layout=wrap),
            self.w_status, self.w_hint, self.w_tabs,
        ])
        self.widget.add_class("wb-poison-panel")
        self._describe_base()

    # ------------------------------------------------------------- configs
    def _describe_base(self) -> None:
        b = self.base
        warn = "" if b.optim.is_sam else " — crafting needs SAM or ASAM: pass a SAM base config"
        self.w_base.value = self._html(
            f"dataset {b.data.name} · model {b.model.name} · optimizer {b.optim.name} · batch size "
            f"{b.train.batch_size} · schedule {b.schedule.name} · runs under {self.root}/{warn}",
            _ERR if warn else "#555")

    def configs(self, values: dict | None = None) -> tuple[RunConfig, PoisonConfig]:
        """The crafting run's configuration and the poison settings Craft would use (validated).

        Args:
            values: settings by field name (``epochs``, ``iterations``, ...) used instead of the
                widgets' current values (the Heavier button's estimate uses this).

        Raises:
            ValueError: a widget value is invalid (the message names the field), or the
                base configuration does not train with SAM/ASAM.
        """
        if not self.base.optim.is_sam:
            raise ValueError(f"optim.name={self.base.optim.name!r} is invalid for poison crafting: the crafting "
                             "run trains with SAM (pass base=quickstart_config('sam', ...) or another SAM/ASAM config)")
        if self.base.data.poison:
            raise ValueError("data.poison must be empty for the crafting run (it crafts the poison)")
        values = values or {}
        v = lambda key, w: values.get(key, w.value)  # noqa: E731
        tags = list(self.base.tags) + ([] if "poison-craft" in self.base.tags else ["poison-craft"])
        run_cfg = self.base.with_overrides({
            "root": str(self.root), "train.epochs": int(v("epochs", self.w_epochs)),
            "train.seed": int(v("seed", self.w_seed)), "optim.lr": float(v("lr", self.w_lr)),
            "optim.rho": float(v("rho", self.w_rho)), "tags": tags})
        d = self.poison_base.to_dict()
        d.update(lr=float(v("poison_lr", self.w_plr)), optimizer=v("optimizer", self.w_popt),
                 iterations=int(v("iterations", self.w_iterations)), epsilon=float(v("epsilon", self.w_epsilon)),
                 norm=v("norm", self.w_norm), relative=bool(v("relative", self.w_relative)),
                 start_epoch=int(v("start_epoch", self.w_start_epoch)),
                 init_noise=float(v("init_noise", self.w_init_noise)), cosine=v("cosine", self.w_cosine),
                 bn=v("bn", self.w_bn), ensemble=int(v("ensemble", self.w_ensemble)),
                 augment=bool(v("augment", self.w_augment)),
                 train_on_poison=bool(v("train_on_poison", self.w_train_on_poison)),
                 drift_epochs=_parse_epochs(v("drift_epochs", self.w_drift)))
        return run_cfg, PoisonConfig.from_dict(d)

    # ------------------------------------------------------------- actions
    @property
    def running(self) -> bool:
        """Whether crafting or training is running in the background."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Start crafting in the background; returns False (with a message in the status line) if refused."""
        if self.running:
            self._say("A crafting run is already in progress on these figures: press Stop first (or wait for it).",
                      _WARN)
            return False
        try:
            run_cfg, poison_cfg = self.configs()
        except (ValueError, TypeError) as e:
            self._say(f"Invalid setting: {e}", _ERR)
            return False

        def job():
            return craft_poison(run_cfg, poison_cfg, callbacks=[self._on_event], handle_sigint=False,
                                stop=self._stop_event)

        self._launch("craft", run_cfg, poison_cfg, job,
                     f"Crafting: {run_cfg.display_name}, {run_cfg.train.epochs} epoch(s), "
                     f"{poison_cfg.iterations} iteration(s) per batch ({poison_cfg.optimizer}, "
                     f"lr^P={poison_cfg.lr:g}) ...")
        return True

    def compare(self) -> bool:
        """Run :func:`~workbench.poisoning.study.compare_poison` with the panel's settings in the background.

        The comparison crafts the poison (seed: the seed widget; the live figures show it),
        then trains SGD on S, SGD on S′, SAM on S and SGD on S + noise for every seed of the
        seeds widget, under ``<root>/poison/``. Pressing Compare again with the same settings
        resumes it (finished runs are skipped). Returns False (with a message) if refused.
        """
        if self.running:
            self._say("A crafting run is already in progress: press Stop first.", _WARN)
            return False
        try:
            from ..poisoning.study import compare_poison
            from .sweep_panel import parse_seeds

            run_cfg, poison_cfg = self.configs()
            seeds = parse_seeds(self.w_seeds.value)
            base = run_cfg.with_overrides({"optim.name": run_cfg.optim.base, "tags": list(self.base.tags)})
        except (ValueError, TypeError) as e:
            self._say(f"Invalid setting: {e}", _ERR)
            return False
        root = self.root / "poison"

        def job():
            return compare_poison(base, poison_cfg, seeds=seeds, root=root, craft_seed=run_cfg.train.seed,
                                  callbacks=[self._on_event], stop=self._stop_event, handle_sigint=False)

        self._launch("compare", run_cfg, poison_cfg, job,
                     f"Comparing on {base.data.name}/{base.model.name}: crafting, then {base.optim.name.upper()} "
                     f"on S, on S′, on S + noise and SAM on S for seed(s) {seeds} (under {root}/) ...")
        return True

    def _launch(self, mode: str, run_cfg: RunConfig, poison_cfg: PoisonConfig, job, message: str) -> None:
        self.run_config, self.poison_config = run_cfg, poison_cfg
        self._mode = mode
        if mode == "craft":
            self.result = None
        else:
            self.comparison = None
        self._stop_requested = False
        self._stop_event.clear()
        self._study = {"total": 1, "done": 0, "label": ""} if mode == "compare" else None
        self._accept_run = mode == "craft"
        self._craft_run_id = None
        self._reset_buffers()
        self._done.clear()
        self._over.clear()
        self.w_start.disabled, self.w_compare.disabled, self.w_stop.disabled = True, True, False
        self.w_progress.value, self.w_progress.bar_style = 0.0, "info"
        self.w_progress_text.value = "loading data and model ..."
        self.w_hint.value = ""
        self._say(message)
        self.redraw(force=True)
        self._thread = threading.Thread(target=self._main, args=(job,), name="workbench-poison", daemon=True)
        self._refresher = threading.Thread(target=self._refresh_loop, name="workbench-poison-live", daemon=True)
        self._refresher.start()  # before the job: a job that ends at once joins the refresher in _main
        self._thread.start()

    def load_run(self, path: str | Path) -> None:
        """Show a finished crafting run from its folder (e.g. from a results pack), without recomputation.

        The figures are drawn from the run's ``craft`` and ``poison`` records and the image grid
        from its ``artifacts/poison.pt`` (read with ``weights_only=True``).

        Raises:
            FileNotFoundError: not a crafting run folder (no ``craft`` records).
        """
        from ..poisoning.study import craft_records, poison_probes
        from ..runs import load_run

        if self.running:
            self._say("A crafting run is in progress on these figures: press Stop first.", _WARN)
            return
        path = Path(path)
        crafts = craft_records(path) if (path / "metrics.jsonl").is_file() else []
        if not crafts:
            raise FileNotFoundError(f"{str(path)!r} is not a crafting run (no craft records in metrics.jsonl)")
        probes = poison_probes(path)
        rd = load_run(path)
        with self._lock:
            self._craft = [{k: r.get(k) for k in ("step", "epoch", "losses", "iterations", "delta_change")}
                           for r in crafts]
            self._steps = rd.steps.to_dict("records") if len(rd.steps) else []
            self._probes = [dict(r) for r in probes]
            self._norm_epochs = [int(r["epoch"]) for r in probes]
            self._norms = [r.get("delta_frobenius") for r in probes]
            self._progress.update(craft_run_path=str(path), run_path=str(path), started=True)
        self.redraw(force=True)
        poison = path / "artifacts" / POISON_FILE
        if poison.is_file():
            self.poison_path = poison
            self.show_images(poison, quiet=True)
            self.w_hint.value = self._hint(poison)
        self._say(f"Showing the stored crafting run {path.name}: {len(crafts)} crafted batch(es)", _OK)

    def stop(self) -> None:
        """Stop after the current batch (the poison so far is written to ``poison.pt``); Compare starts no new run."""
        if not self.running:
            self._say("Nothing is being crafted.", "#555")
            return
        self._stop_requested = True
        self._stop_event.set()
        self._say("Stopping after the current batch ...", _WARN)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the crafting run has ended and the panel is updated (for scripts and tests)."""
        ok = self._done.wait(timeout)
        if ok and self._thread is not None:
            self._thread.join(timeout)
        return ok

    # ------------------------------------------------------------ events
    def _reset_buffers(self) -> None:
        with self._lock:
            self._craft: list[dict] = []
            self._steps: list[dict] = []
            self._norm_epochs: list[int] = []
            self._norms: list[float] = []
            self._probes: list[dict] = []
            self._progress = {"step": 0, "s0": 0, "total": 1, "epoch": 0, "epochs": 0, "t0": time.monotonic(),
                              "run_path": None, "started": False, "last": None}

    def _on_event(self, ev) -> None:
        """Trainer / study callback (training thread): buffer the event, nothing else.

        Progress follows every run; the figures only the crafting run (Compare also
        trains the four variants).
        """
        if type(ev).__name__ == "PoisonStudyEvent":
            self._on_study_event(ev)
            return
        with self._lock:
            p = self._progress
            if isinstance(ev, RunStarted):
                p.update(total=max(ev.total_steps, 1), step=ev.start_step, s0=ev.start_step, t0=time.monotonic(),
                         run_path=ev.run_path, started=True, epochs=ev.config["train"]["epochs"],
                         epoch=ev.start_epoch, last=None)
                p.pop("ended", None)
                p.pop("ended_at", None)
                if self._accept_run:
                    self._craft_run_id = ev.run_id
                    p["craft_run_path"] = ev.run_path
                self._dirty.set()
                return
            craft = getattr(ev, "run_id", None) == self._craft_run_id
            if isinstance(ev, CraftStep):
                if craft:
                    self._craft.append({"step": ev.step, "epoch": ev.epoch, "losses": list(ev.losses),
                                        "iterations": ev.iterations, "delta_change": ev.delta_change})
                p["step"] = max(p["step"], ev.step)
            elif isinstance(ev, StepEnd):
                if craft:
                    self._steps.append({"step": ev.step, "epoch": ev.epoch, **ev.metrics})
                p["step"] = max(p["step"], ev.step)
            elif isinstance(ev, ProbeResult) and ev.name == "poison" and craft:
                self._norm_epochs.append(ev.epoch)
                self._norms.append(ev.values.get("delta_frobenius"))
                self._probes.append(dict(ev.values, epoch=ev.epoch))
            elif isinstance(ev, EpochEnd):
                p["epoch"], p["last"] = ev.epoch, dict(ev.metrics)
            elif isinstance(ev, RunEnded):
                p["ended"], p["ended_at"] = ev.status, time.monotonic()
            else:
                return
        self._dirty.set()

    def _on_study_event(self, ev) -> None:
        rec = ev.record or {}
        loaded = None
        if ev.kind == "skipped" and rec.get("kind") == "craft" and rec.get("run_path"):
            try:  # the comparison reuses a finished crafting run: show it from its records
                from ..poisoning.study import craft_records, poison_probes

                loaded = (craft_records(rec["run_path"]), poison_probes(rec["run_path"]))
            except Exception:
                loaded = None
        with self._lock:
            st = self._study
            if st is None:
                return
            st.update(total=max(int(ev.total), 1), done=int(ev.done))
            if ev.kind == "run_started":
                self._accept_run = rec.get("kind") == "craft"
                st["label"] = ("crafting (SAM)" if rec.get("kind") == "craft"
                               else f"{rec.get('label') or rec.get('variant')}, seed {rec.get('seed')}")
            if loaded is not None:
                crafts, probes = loaded
                self._craft = [{k: r.get(k) for k in ("step", "epoch", "losses", "iterations", "delta_change")}
                               for r in crafts]
                self._probes = [dict(r) for r in probes]
                self._norm_epochs = [int(r["epoch"]) for r in probes]
                self._norms = [r.get("delta_frobenius") for r in probes]
                self._progress["craft_run_path"] = rec["run_path"]
        self._dirty.set()

    # ------------------------------------------------------------ worker
    def _main(self, job) -> None:
        res, error = None, None
        try:
            res = job()
        except Exception as e:
            self.errors.append(traceback.format_exc())
            error = f"{type(e).__name__}: {e}"
        finally:
            self._over.set()
            if self._refresher is not None:
                self._refresher.join(timeout=30)
            try:
                if self._mode == "compare":
                    self._finish_compare(res, error)
                else:
                    self._finish(res, error)
            finally:
                self._done.set()

    def _refresh_loop(self) -> None:
        while not self._over.is_set():
            self._over.wait(self.interval)
            if self._over.is_set():
                break
            try:
                if self._dirty.is_set():
                    self.redraw()
                self._update_progress()
            except Exception:  # a redraw problem must never kill the loop (reported once)
                tb = traceback.format_exc()
                if not self.errors or self.errors[-1] != tb:
                    self.errors.append(tb)

    def _final_redraw(self) -> None:
        self.w_start.disabled, self.w_compare.disabled, self.w_stop.disabled = False, False, True
        try:
            self.redraw(force=True)
            self._update_progress()
        except Exception:
            self.errors.append(traceback.format_exc())

    def _finish(self, res: CraftResult | None, error: str | None) -> None:
        self.result = res
        self._final_redraw()
        path = res.poison_path if res is not None else None
        if path is None:  # a failed run may still have written one (at an epoch end or in on_end)
            rp = self._progress.get("craft_run_path")
            cand = Path(rp) / "artifacts" / POISON_FILE if rp else None
            path = cand if cand is not None and cand.is_file() else None
        if path is not None:
            self.poison_path = Path(path)
        if error is not None:
            self.w_progress.bar_style = "danger"
            where = f" A partial poison is at {path}." if path else ""
            self._say(f"Failed: {error}.{where}", _ERR)
            return
        status = res.train.status
        shown = ""
        if path is not None:
            try:
                self.show_images(path, quiet=True)
            except Exception as e:  # the poison is fine; only the preview failed
                shown = f" (image preview failed: {type(e).__name__}: {e})"
        ep, steps = res.train.epochs_done, res.train.steps
        crafted = res.poisoner.crafted_batches
        if status == "finished":
            self.w_progress.bar_style = "success"
            self._say(f"Finished: {ep} epoch(s), {crafted} crafted batch(es). Poison written to {path}{shown}", _OK)
        else:
            self.w_progress.bar_style = "warning" if status == "stopped" else "danger"
            where = f"Poison so far written to {path}" if path else "No poison was written"
            why = f" ({res.train.error})" if res.train.error else ""
            self._say(f"{status.capitalize()}{why} after {ep} epoch(s), step {steps}, {crafted} crafted batch(es). "
                      f"{where}{shown}", _WARN if status == "stopped" else _ERR)
        if path is not None:
            self.w_hint.value = self._hint(Path(path))

    def _finish_compare(self, comp, error: str | None) -> None:
        self.comparison = comp
        self._final_redraw()
        if error is not None:
            self.w_progress.bar_style = "danger"
            self._say(f"Comparison failed: {error}", _ERR)
            return
        status = comp.status
        self.w_progress.bar_style = {"finished": "success", "stopped": "warning"}.get(status, "danger")
        st = self._study or {}
        with self._lock:
            crafted = len(self._craft)
        self.w_progress_text.value = (f"{st.get('done', 0)}/{st.get('total', 0)} run(s) done"
                                      f"{f' ({comp.skipped} found finished)' if comp.skipped else ''} · "
                                      f"{crafted} batch(es) crafted · {status}")
        notes = []
        try:
            self.w_table.value = self._comparison_table(comp)
        except Exception as e:
            notes.append(f"table failed: {type(e).__name__}: {e}")
        try:
            if len(comp.trials) and (comp.trials["status"] == "finished").any():
                seed = int(comp.trials.loc[comp.trials["status"] == "finished", "seed"].iloc[0])
                sync_figure(self.figure_compare, plot_curves(comp, seed))
        except Exception as e:
            notes.append(f"curves failed: {type(e).__name__}: {e}")
        if comp.poison_path is not None:
            self.poison_path = Path(comp.poison_path)
            self.w_hint.value = self._hint(self.poison_path)
            try:
                self.show_images(self.poison_path, quiet=True)
            except Exception as e:
                notes.append(f"image preview failed: {type(e).__name__}: {e}")
        what = {"finished": "Comparison finished", "stopped": "Comparison stopped (press Compare to resume)",
                "incomplete": "Comparison incomplete (a run failed)"}.get(status, f"Comparison {status}")
        self._say(f"{what}: {comp.path} — see the comparison tab." + (" " + "; ".join(notes) if notes else ""),
                  _OK if status == "finished" else _WARN)
        if status == "finished":
            self.w_tabs.selected_index = 5

    @staticmethod
    def _comparison_table(comp) -> str:
        import html as _h

        t = comp.table("test_acc")
        trials = comp.trials
        rows = []
        for r in t.itertuples():
            mean, se, n = r.test_acc_mean, r.test_acc_se, r.test_acc_n
            cell = "–" if mean != mean else (f"{100 * mean:.2f}" + ("" if se != se else f" ± {100 * se:.2f}"))
            rows.append(f"<tr><td style='padding:2px 10px'>{_h.escape(str(r.variant))}</td>"
                        f"<td style='padding:2px 10px;text-align:right'>{cell}</td>"
                        f"<td style='padding:2px 10px;text-align:right'>{int(n)}</td></tr>")
        counts = trials["status"].value_counts().to_dict() if len(trials) else {}
        runs = ", ".join(f"{v} {k}" for k, v in counts.items()) or "no runs"
        return ("<table style='font-size:13px'><tr><th style='padding:2px 10px;text-align:left'>variant</th>"
                "<th style='padding:2px 10px'>test accuracy % (mean ± s.e.)</th><th style='padding:2px 10px'>"
                f"seeds</th></tr>{''.join(rows)}</table><div style='font-size:12px;color:#555'>{len(trials)} "
                f"trial(s): {_h.escape(runs)}. Study folder: {_h.escape(str(comp.path))}</div>")

    def _hint(self, path: Path) -> str:
        import html as _h

        p = _h.escape(str(path))
        return ("<div style='font-size:12px;color:#333;line-height:1.4'><b>Use this poison</b>: train plain SGD on "
                f"S′ = S + Δ with the run-config override <code>data.poison={p}</code> (also in "
                "<code>PoisonPanel.poison_path</code>), e.g. <code>cfg.with_overrides({'optim.name': 'sgd', "
                "'data.poison': str(panel.poison_path)})</code> or <code>workbench run CONFIG --set "
                "data.poison=PATH optim.name=sgd</code>; the data settings must be the crafting run's "
                "(they are checked).</div>")

    # ------------------------------------------------------------ drawing
    def _snapshot(self) -> dict:
        with self._lock:
            return {"craft": list(self._craft), "steps": list(self._steps), "epochs": list(self._norm_epochs),
                    "norms": list(self._norms), "probes": list(self._probes)}

    def _zoom(self, craft: list[dict]) -> tuple[int, int] | None:
        if not craft:
            return None
        last = craft[-min(self.zoom_batches, len(craft)):]
        return (last[0]["step"], last[-1]["step"])

    def redraw(self, force: bool = False) -> None:
        """Copy the buffered data into the figures whose data changed since they were last drawn.

        The full cosine-loss figure grows by ``iterations`` points per batch; beyond
        ~100k points it is redrawn less often (every ``points / 50,000`` seconds) unless ``force``.
        """
        self._dirty.clear()
        s = self._snapshot()
        craft = s["craft"]
        points = sum(len(r["losses"]) for r in craft)
        now = time.monotonic()
        first = craft[0]["step"] if craft else None

        def due(name: str, key) -> bool:
            if not force and self._drawn.get(name) == key:
                return False
            self._drawn[name] = key
            return True

        if (force or now - self._last_full >= max(self.interval, points / 50_000)) and due("loss", (first, points)):
            sync_figure(self.figure_loss, craft_loss_figure(craft))
            self._last_full = now
        if due("zoom", (first, points)):
            sync_figure(self.figure_zoom, craft_loss_figure(craft, zoom=self._zoom(craft)))
        if due("norm", tuple(s["epochs"])):
            sync_figure(self.figure_norm, delta_norm_figure(s["epochs"], s["norms"]))
        if due("drift", tuple(r.get("epoch") for r in s["probes"])):
            sync_figure(self.figure_drift, drift_figure(s["probes"]))
        if due("cosine", (s["steps"][0]["step"] if s["steps"] else None, len(s["steps"]))):
            sync_figure(self.figure_cosine, sam_cosine_figure(s["steps"]))
        self.redraws += 1

    def _update_progress(self) -> None:
        with self._lock:
            p = dict(self._progress)
            crafted = len(self._craft)
            norm = self._norms[-1] if self._norms else None
        if not p["started"]:
            return
        frac = min(p["step"] / p["total"], 1.0)
        with self._lock:
            st = dict(self._study) if self._study is not None else None
        prefix = ""
        if st is not None:
            frac = min((st["done"] + (frac if p.get("ended") is None else 0.0)) / st["total"], 1.0)
            prefix = f"run {min(st['done'] + 1, st['total'])}/{st['total']} ({st['label']}) · "
        self.w_progress.value = frac
        elapsed = p.get("ended_at", time.monotonic()) - p["t0"]
        rate = (p["step"] - p["s0"]) / max(elapsed, 1e-9)
        ended = p.get("ended")
        if ended is None:
            tail = "ETA " + (_fmt_seconds((p["total"] - p["step"]) / rate) if rate > 0 else "?")
        else:
            tail = ended
        self.w_progress_text.value = (f"{prefix}epoch {p['epoch']}/{p['epochs']} · step {p['step']}/{p['total']} · "
                                      f"{crafted} batch(es) crafted · {_fmt_seconds(elapsed)} · {tail}")
        last = p.get("last")
        if last and self.running and not self._stop_requested:
            who = f"Comparing, {st['label']}" if st is not None else f"Crafting {self.run_config.display_name}"
            self._say(f"{who}: epoch {p['epoch']}/{p['epochs']} - train loss "
                      f"{last.get('train_loss', float('nan')):.4f}, test acc {last.get('test_acc', float('nan')):.4f}"
                      + (f", ‖Δ‖_F {norm:.4g}" if norm is not None else ""))

    # ------------------------------------------------------------ images
    def _current_poison_path(self) -> Path | None:
        if self.result is not None and self.result.poison_path is not None:
            return Path(self.result.poison_path)
        rp = self._progress.get("craft_run_path")
        if rp and (Path(rp) / "artifacts" / POISON_FILE).is_file():
            return Path(rp) / "artifacts" / POISON_FILE
        return self.poison_path

    def _show_clicked(self) -> None:
        try:
            self.show_images()
        except Exception as e:
            self._say(f"Show images failed: {type(e).__name__}: {e}", _ERR)

    def show_images(self, path: str | Path | None = None, *, n: int | None = None, quiet: bool = False) -> None:
        """Draw x, Δ and x + Δ of ``n`` training examples (one per class first) from a poison file.

        Args:
            path: a ``poison.pt`` (default: the current or last crafting run's).
            n: number of examples (default: the panel's ``images``).
            quiet: do not report in the status line.

        Raises:
            FileNotFoundError: no poison file yet.
            ValueError: not image data.
        """
        from ..data.poison import load_poison
        from ..training.trainer import load_data_cached

        path = Path(path) if path is not None else self._current_poison_path()
        if path is None or not path.is_file():
            raise FileNotFoundError("no poison.pt yet: it is written at the end of every epoch and when crafting ends")
        poison = load_poison(path)
        rc = poison.meta.get("run_config")
        data_cfg = RunConfig.from_dict(rc).data if rc else (self.run_config or self.base).data
        bundle = load_data_cached(data_cfg)
        train = bundle.train
        if train.x.dim() != 4:
            raise ValueError(f"the image grid needs image data; {data_cfg.name} inputs have shape "
                             f"{tuple(train.x.shape[1:])}")
        mask, _ = poison.rows_for(train.index)
        rows = np.flatnonzero(mask.numpy())  # training rows the poison covers (in index order)
        n = int(n or self.images)
        y = train.y.numpy()
        chosen: list[int] = []
        seen: set[int] = set()
        for r in rows:  # one example per class first, then the next ones
            if int(y[r]) not in seen:
                seen.add(int(y[r]))
                chosen.append(int(r))
            if len(chosen) >= n:
                break
        for r in rows:
            if len(chosen) >= n:
                break
            if int(r) not in chosen:
                chosen.append(int(r))
        chosen.sort()
        sel = np.asarray(chosen, dtype=np.int64)
        idx = train.index[sel]
        _, delta = poison.rows_for(idx)
        names = list(getattr(bundle, "class_names", None) or [])
        labels = [f"#{int(i)} · {names[int(c)] if int(c) < len(names) else int(c)}"
                  for i, c in zip(idx.tolist(), y[sel].tolist())]
        fig = image_grid_figure(train.x[sel].cpu().numpy(), delta.cpu().numpy(), n=len(sel), labels=labels)
        sync_figure(self.figure_images, fig)
        self._images_from = path
        if not quiet:
            self._say(f"Images: {len(sel)} training examples from {path}", "#555")

    # ------------------------------------------------------------ export
    def figures(self) -> dict[str, go.Figure]:
        """Static figures (same builders) of what the panel shows: loss, zoom, norm, drift, cosine."""
        s = self._snapshot()
        return {"craft-loss": craft_loss_figure(s["craft"]),
                "craft-zoom": craft_loss_figure(s["craft"], zoom=self._zoom(s["craft"])),
                "delta-norm": delta_norm_figure(s["epochs"], s["norms"]),
                "drift": drift_figure(s["probes"]), "sam-cosine": sam_cosine_figure(s["steps"])}

    def export(self, path: str | Path | None = None, formats: Sequence[str] = ("html", "png")) -> list[Path]:
        """Write every figure as ``<stem>-<figure>.<fmt>`` (default stem ``<root>/exports/poison-<time>``)."""
        stem = Path(path) if path else self.root / "exports" / time.strftime("poison-%Y%m%d-%H%M%S")
        figs = self.figures()
        if len(self.figure_images.data):
            figs["images"] = go.Figure(self.figure_images)
        written: list[Path] = []
        for name, fig in figs.items():
            written += self._export(fig, Path(f"{stem}-{name}"), formats)
        self._say(f"Exported {len(written)} file(s) to {stem.parent}/", _OK)
        return written
