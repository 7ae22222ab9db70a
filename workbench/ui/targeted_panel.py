"""TargetedPanel: craft a targeted clean-label poison live, train victims with and without a defense, show the views.

Thin wiring (DESIGN: no science in ``ui``): the widgets build a
:class:`~workbench.targeted.ThreatSetup` and an attack (:mod:`workbench.targeted`), a
background thread runs ``attack.craft`` (progress into the live loss figure, Stop
honoured within one iteration), then ``train_victim`` for the clean run, the undefended
victim and the defended one (a defense spec built by :func:`workbench.targeted.study.make_defense`);
the figures come from :mod:`workbench.viz.targeted`.

Usage in a notebook::

    from workbench.ui.targeted_panel import TargetedPanel
    panel = TargetedPanel()          # digits, LeNet-5, pretrained on first use
    panel                            # Craft, then Train victims
"""
from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path
from typing import Sequence

import ipywidgets as W
import plotly.graph_objects as go

from ..viz import targeted as V
from ..viz.theme import finish_figure
from .base import PanelBase, figure_widget, guard

__all__ = ["TargetedPanel"]

#: Figure size in px: two figures side by side fit a 1,000-px notebook column; rows wrap when it is narrower.
FIG_W, FIG_H = 485, 340

_ERR, _OK, _WARN = "#b00020", "#1b5e20", "#8a6d00"
_DEFENSES = {"none": None, "EPIC-0.1": {"name": "epic", "budget": 0.1}, "EPIC-0.2": {"name": "epic", "budget": 0.2},
             "EPIC-0.3": {"name": "epic", "budget": 0.3},
             "Drop highest loss": {"name": "drop_highest_loss", "budget": 0.1},
             "Drop lowest confidence": {"name": "drop_lowest_confidence", "budget": 0.1}}


def _sized(fig: go.Figure) -> go.Figure:
    """``fig`` (already themed) at the panel's size, its legend below the plot so the plot keeps the width."""
    fig.update_layout(width=FIG_W, height=FIG_H, margin=dict(l=55, r=15, t=45, b=40), title_font_size=14,
                      legend=dict(orientation="h", yanchor="top", y=-0.22, x=0))
    return fig


class TargetedPanel(PanelBase):
    """Craft (gradient matching / feature collision / Bullseye Polytope) and evaluate a targeted poison.

    Args:
        data: a :class:`~workbench.data.DataBundle` (default: digits, pooled split).
        pretrained: the clean model (default: LeNet-5 pretrained on ``data`` when first needed).
        root: folder for exports.
        pretrain_epochs: epochs of that pretraining.

    Attributes after the actions: ``setup``, ``poison``, ``attack`` (with ``history``),
    ``results`` (``{"clean": VictimResult, "undefended": ..., "<defense>": ...}``), ``errors``.
    """

    def __init__(self, data=None, *, pretrained=None, root: str | Path = "runs", pretrain_epochs: int = 30):
        self.data, self.pretrained, self.root = data, pretrained, Path(root)
        self.pretrain_epochs = int(pretrain_epochs)
        self.setup = self.poison = self.attack = None
        self.results: dict = {}
        self.errors: list[str] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_draw = 0.0
        st = {"description_width": "initial"}

        def box(w, width="170px"):
            w.layout, w.style = W.Layout(width=width), st
            return w

        self.w_attack = box(W.Dropdown(description="attack", options=[
            ("Bullseye Polytope", "bullseye_polytope"), ("Feature Collision", "feature_collision"),
            ("Gradient Matching", "gradient_matching")], value="bullseye_polytope"), "220px")
        self.w_scenario = box(W.Dropdown(description="victim", options=["transfer", "finetune", "scratch"],
                                         value="transfer"), "170px")
        self.w_eps = box(W.IntSlider(description="ε (/255)", value=64, min=1, max=128), "240px")
        self.w_budget = box(W.BoundedFloatText(description="budget", value=0.04, min=0.001, max=0.1, step=0.01))
        self.w_iterations = box(W.BoundedIntText(description="iterations", value=200, min=1, max=5000))
        self.w_trial = box(W.BoundedIntText(description="trial", value=0, min=0, max=10_000), "110px")
        self.w_seed = box(W.BoundedIntText(description="setup seed", value=0, min=0, max=10_000), "130px")
        self.w_epochs = box(W.BoundedIntText(description="victim epochs", value=20, min=1, max=500), "160px")
        self.w_lr = box(W.BoundedFloatText(description="victim lr", value=0.01, min=1e-5, max=1.0, step=0.005), "150px")
        self.w_defense = box(W.Dropdown(description="defense", options=list(_DEFENSES), value="EPIC-0.2"), "220px")
        self.w_period = box(W.BoundedIntText(description="T", value=1, min=1, max=100), "80px")
        self.w_warmup = box(W.BoundedIntText(description="K", value=1, min=0, max=100), "80px")
        self.w_craft = W.Button(description="Craft", button_style="primary", icon="flask")
        self.w_train = W.Button(description="Train victims", button_style="success", icon="play", disabled=True)
        self.w_stop = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.w_export = W.Button(description="Export", icon="download")
        self.w_progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="300px"))
        self.w_status = W.HTML()
        self.w_table = W.HTML()
        self.w_craft.on_click(lambda _: self.craft())
        self.w_train.on_click(lambda _: self.train())
        self.w_stop.on_click(lambda _: self.stop())
        self.w_export.on_click(lambda _: self._export_clicked())
        self.fig_loss = figure_widget(_sized(V.craft_loss_figure([], title="Crafting objective (after Craft)")))
        self.fig_prob = figure_widget(_sized(V.adv_prob_figure({}, title="Target: p(y_adv) per epoch")))
        self.fig_pca = figure_widget(_sized(finish_figure(go.Figure(), "screen", None,
                                                          "Gradient PCA (after Train victims)")))
        self.fig_hist = figure_widget(_sized(finish_figure(go.Figure(), "screen", None,
                                                           "Poison → target cosine (after Craft)")))
        def row(*children):  # wraps onto a second line rather than overflowing a narrow column
            return W.HBox(list(children), layout=W.Layout(flex_flow="row wrap", align_items="center"))

        self.widget = W.VBox([
            row(self.w_attack, self.w_scenario, self.w_eps, self.w_budget, self.w_iterations),
            row(self.w_seed, self.w_trial, self.w_epochs, self.w_lr, self.w_defense, self.w_period, self.w_warmup),
            row(self.w_craft, self.w_train, self.w_stop, self.w_export, self.w_progress),
            self.w_status,
            row(guard(self.fig_loss), guard(self.fig_prob)),
            row(guard(self.fig_hist), guard(self.fig_pca)), self.w_table],
            layout=W.Layout(max_width="1000px"))
        self.widget.add_class("wb-targeted-panel")
        self._say("Choose an attack and press Craft (the first press pretrains the clean model).")

    # ------------------------------------------------------------ helpers
    @property
    def running(self) -> bool:
        """Whether a background job (pretraining, crafting or victim training) is running."""
        return self._thread is not None and self._thread.is_alive()

    def _ensure(self) -> None:
        from ..config import DataConfig
        from ..data import load_data
        from ..targeted import pretrain

        if self.data is None:
            self._say("Loading digits ...")
            self.data = load_data(DataConfig(name="digits", split="pooled"))
        if self.pretrained is None:
            self._say(f"Pretraining the clean LeNet-5 ({self.pretrain_epochs} epochs) ...")
            self.pretrained = pretrain(self.data, epochs=self.pretrain_epochs, stop=self._stop)

    def _launch(self, job, message: str) -> bool:
        if self.running:
            self._say("Busy: press Stop first (or wait).", _WARN)
            return False
        self._stop.clear()
        self.w_craft.disabled = self.w_train.disabled = True
        self.w_stop.disabled = False
        self.w_progress.value, self.w_progress.bar_style = 0.0, "info"
        self._say(message)

        def main():
            try:
                job()
            except Exception as e:  # shown in the panel, kept for inspection
                self.errors.append(traceback.format_exc())
                self._say(f"Failed: {type(e).__name__}: {e}", _ERR)
                self.w_progress.bar_style = "danger"
            finally:
                self.w_craft.disabled = False
                self.w_train.disabled = self.poison is None
                self.w_stop.disabled = True

        self._thread = threading.Thread(target=main, name="workbench-targeted", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop crafting / training after the current iteration or step."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background job ends; False on timeout."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------ actions
    def craft(self) -> bool:
        """Draw the setup (seed, trial) and craft its poison in the background."""
        from ..targeted import make_setups
        from ..targeted.study import make_attack

        attack_name, iters = self.w_attack.value, int(self.w_iterations.value)
        eps, budget = self.w_eps.value / 255, float(self.w_budget.value)
        seed, trial = int(self.w_seed.value), int(self.w_trial.value)

        def job():
            self._ensure()
            setup = make_setups(self.data, trial + 1, budget=budget, epsilon=eps, seed=seed)[trial]
            kw = {"iterations": iters}
            if attack_name == "gradient_matching":
                kw["restarts"] = 2
            attack = make_attack(attack_name, **kw)
            self.setup, self.attack, self.poison, self.results = setup, attack, None, {}
            self.fig_loss.data = []
            total = iters * kw.get("restarts", 1)
            self._say(f"Crafting {attack_name}: target {setup.target_index} (class {setup.target_class}) → "
                      f"{setup.poison_class}, {setup.num_poisons} poisons, ε = {self.w_eps.value}/255 ...")

            def progress(p):
                done = p.restart * p.iterations + p.iteration
                self.w_progress.value = min(1.0, done / total)
                if time.monotonic() - self._last_draw > 0.3 or done == total:
                    self._last_draw = time.monotonic()
                    self._draw_loss()

            poison = attack.craft(self.pretrained, setup, self.data, callback=progress, stop=self._stop)
            self.poison = poison
            self._draw_loss()
            self._draw_hist()
            self.w_progress.bar_style = "success"
            extra = " (stopped early)" if poison.meta.get("stopped") else ""
            self._say(f"Crafted{extra} in {attack.seconds:.1f} s ({attack.iterations_done} iterations). "
                      "Press Train victims.", _OK)

        return self._launch(job, "Preparing ...")

    def defense_spec(self) -> dict | None:
        """The chosen defense's settings with the period and warm-up from the widgets, or ``None`` for no defense."""
        spec = _DEFENSES[self.w_defense.value]
        if spec is None:
            return None
        return dict(spec, period=int(self.w_period.value), warmup=int(self.w_warmup.value))

    def train(self) -> bool:
        """Train the clean run, the undefended victim and the defended victim on the current poison."""
        if self.poison is None:
            self._say("Craft a poison first.", _WARN)
            return False
        from ..targeted import VictimConfig, train_victim
        from ..targeted.study import make_defense

        try:
            cfg = VictimConfig(scenario=self.w_scenario.value, epochs=int(self.w_epochs.value),
                               lr=float(self.w_lr.value))
            spec = self.defense_spec()
        except ValueError as e:
            self._say(f"Invalid setting: {e}", _ERR)
            return False
        label = self.w_defense.value

        def job():
            self.results = {}
            runs = [("clean", None, None), ("undefended", self.poison, None)]
            if spec is not None:
                runs.append((label, self.poison, make_defense(spec)))
            for k, (name, poison, defense) in enumerate(runs):
                self._say(f"Training victim: {name} ({cfg.scenario}, {cfg.epochs} epochs) ...")

                def on_epoch(model, epoch, rec, k=k):
                    self.w_progress.value = (k + epoch / cfg.epochs) / len(runs)

                r = train_victim(self.data, poison, cfg, setup=self.setup, pretrained=self.pretrained,
                                 defense=defense, on_epoch_end=on_epoch, stop=self._stop)
                self.results[name] = r
                self.fig_prob.data = []
                self.fig_prob.add_traces(V.adv_prob_figure({n: v.history for n, v in self.results.items()}).data)
                if r.status != "finished":
                    self._say("Stopped.", _WARN)
                    return
            self._draw_pca()
            self.w_table.value = self.table().to_html(index=False, float_format=lambda v: f"{v:.3f}")
            self.w_progress.bar_style = "success"
            u = self.results["undefended"]
            msg = (f"Undefended: target → {u.target_pred} (p(y_adv) = {u.adv_prob:.2f}, "
                   f"{'success' if u.success else 'failure'})")
            if label in self.results:
                d = self.results[label]
                msg += f"; {label}: p(y_adv) = {d.adv_prob:.2f} ({'success' if d.success else 'failure'})"
            self._say(msg, _OK)

        return self._launch(job, "Training victims ...")

    # ------------------------------------------------------------ views
    def table(self):
        """One row per trained victim: attack success, p(y_adv), test accuracy, time, dropped (poisons)."""
        import pandas as pd

        rows = []
        pois = set(self.setup.poison_indices) if self.setup else set()
        for name, r in self.results.items():
            log = r.dropped if isinstance(r.dropped, pd.DataFrame) else None
            dropped = set(log["index"].astype(int)) if log is not None and len(log) else set()
            rows.append({"victim": name, "success": r.success, "p(y_adv)": r.adv_prob, "test acc": r.test_acc,
                         "time (s)": r.seconds, "dropped": len(dropped), "poisons dropped": len(dropped & pois)})
        return pd.DataFrame(rows)

    def _draw_loss(self) -> None:
        if self.attack is None:
            return
        f = V.craft_loss_figure(self.attack.history, title=f"Crafting objective ({self.attack.name.replace('_', ' ')})")
        with self.fig_loss.batch_update():
            self.fig_loss.data = []
            self.fig_loss.add_traces(f.data)
            self.fig_loss.layout.title.text = f.layout.title.text

    def _draw_hist(self) -> None:
        from ..targeted.effective import poison_target_cosines

        space = "last" if self.w_scenario.value == "transfer" else "full"
        c = poison_target_cosines(self.pretrained, self.data, self.poison, self.setup, space=space)
        layers = "last layer" if space == "last" else "all layers"
        f = V.cosine_histogram_figure({"poison": c["cosine"], "clean bases": c["clean_cosine"]},
                                      title=f"Poison → target gradient cosine ({layers})")
        with self.fig_hist.batch_update():
            self.fig_hist.data = []
            self.fig_hist.add_traces(f.data)
            self.fig_hist.layout.title.text = f.layout.title.text
            self.fig_hist.layout.update(barmode="overlay", xaxis=f.layout.xaxis, yaxis=f.layout.yaxis)
        self.cosines = c

    def _draw_pca(self) -> None:
        from ..targeted.effective import gradient_pca_frame

        r = self.results.get("undefended")
        if r is None:
            return
        c = getattr(self, "cosines", None)
        eff = None
        if c is not None:  # the cheap proxy marks the poisons best aligned with the target
            k = max(1, len(c) // 5)
            eff = c.sort_values("cosine", ascending=False)["index"].head(k).tolist()
        frame, ev = gradient_pca_frame(r.model, self.data, self.poison, self.setup, effective=eff, n_clean=150)
        f = V.gradient_pca_figure(frame, ev, title="Undefended victim's gradients (effective: top-20 % cosine)")
        with self.fig_pca.batch_update():
            self.fig_pca.data = []
            self.fig_pca.add_traces(f.data)
            self.fig_pca.layout.title.text = f.layout.title.text
            self.fig_pca.layout.update(xaxis=f.layout.xaxis, yaxis=f.layout.yaxis)

    def figures(self) -> dict[str, go.Figure]:
        """Static copies of the panel's figures: ``craft_loss``, ``adv_prob``, ``cosine_hist``, ``gradient_pca``."""
        return {"craft_loss": go.Figure(self.fig_loss), "adv_prob": go.Figure(self.fig_prob),
                "cosine_hist": go.Figure(self.fig_hist), "gradient_pca": go.Figure(self.fig_pca)}

    def export(self, path: str | Path | None = None, formats: Sequence[str] = ("html", "png")) -> list[Path]:
        """Write the panel's figures under ``path`` (default ``<root>/targeted_figures``)."""
        out = Path(path) if path is not None else self.root / "targeted_figures"
        written = []
        for name, fig in self.figures().items():
            written += self._export(fig, out / name, formats)
        return written
