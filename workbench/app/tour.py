"""What the guided tour (``notebooks/10_guided_tour.ipynb``) trains, measures and shows.

One plan serves the tour and the results pack (:mod:`workbench.app.pack`): the
tour calls :func:`prepare`, which finds every run and analysis it needs in the
runs folder (a loaded pack, or an earlier execution of the tour) and computes
only what is missing; ``workbench pack build`` calls the same function in an
empty folder and writes the index. Asking again is free: runs are matched by
their configuration, analyses by :func:`workbench.analysis.tasks.analyze`'s
cache key.

The runs (LeNet-5 on the embedded 8×8 digits, :func:`workbench.presets.quickstart_config`):

=========  ==========================================================================================
sgd        SGD, lr 0.05, momentum 0.9, weight decay 5e-4, batch 64, ``epochs`` epochs, seed 0
sam        the same with SAM, ρ = 0.05 ([Murphy 2025, Eq. 2.7-2.8])
craft      a SAM run (``craft_epochs`` epochs) crafting the sharpness-aware poison Δ ([Murphy 2025,
           Ch. 3, Eq. 3.6]: 5 Adam iterations per batch on 1 − cos(g′, ∇L_{B+Δ}), lr^P = 0.01)
poisoned   the ``sgd`` configuration trained on S′ = S + Δ from the first epoch
=========  ==========================================================================================

and the analyses: 1-D filter-normalised slices (sgd, sam), top-5 Hessian eigenvalues
(sgd, sam, poisoned) and the PCA of per-example (logit) gradients (sgd) on ``count`` seeded
training examples.

No UI imports at module level (:func:`targeted_panel_class` looks the defence panel up on demand).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import RunConfig
from ..presets import quickstart_config

__all__ = ["TourSettings", "TourData", "tour_configs", "prepare", "SLICE_PARAMS", "HESSIAN_PARAMS", "PACK_INDEX"]

PACK_INDEX = "pack.json"
SLICE_PARAMS = {"n_directions": 2, "alphas": [-1.0, 1.0, 21]}
HESSIAN_PARAMS = {"k": 5}
PCA_PARAMS = {"kind": "logits"}


@dataclass(frozen=True)
class TourSettings:
    """Sizes of the tour's work (the pack records them; the test suite shrinks them by environment).

    Attributes:
        epochs: epochs of the sgd, sam and poisoned runs. craft_epochs: epochs of the crafting run.
        count: training examples of every analysis (seeded draw).
    """

    epochs: int = 30
    craft_epochs: int = 3
    count: int = 512

    @classmethod
    def from_env(cls) -> "TourSettings":
        """``WORKBENCH_EPOCHS`` and ``WORKBENCH_COUNT`` override the defaults (crafting: at most ``epochs``)."""
        e = int(os.environ.get("WORKBENCH_EPOCHS", cls.epochs))
        return cls(epochs=e, craft_epochs=min(cls.craft_epochs, e),
                   count=int(os.environ.get("WORKBENCH_COUNT", cls.count)))

    def to_dict(self) -> dict:
        """The settings as a plain dict (``epochs``, ``craft_epochs``, ``count``)."""
        return {"epochs": self.epochs, "craft_epochs": self.craft_epochs, "count": self.count}


def tour_configs(settings: TourSettings, root: str | Path) -> dict[str, RunConfig]:
    """The sgd, sam and craft run configurations (poisoned = sgd + ``data.poison``, made once the poison exists)."""
    root = str(root)
    one = {"train.num_threads": 1}  # a tiny model: one thread is as fast, and safe on a shared, busy CPU
    sgd = quickstart_config("sgd", epochs=settings.epochs, root=root).with_overrides({"tags": ["tour"], **one})
    sam = quickstart_config("sam", epochs=settings.epochs, root=root).with_overrides({"tags": ["tour"], **one})
    craft = quickstart_config("sam", epochs=settings.craft_epochs, root=root).with_overrides(
        {"tags": ["tour", "poison-craft"], **one})
    return {"sgd": sgd, "sam": sam, "craft": craft}


def _poison_config():
    from ..poisoning import PoisonConfig

    return PoisonConfig(drift_epochs=[])  # the report's §5.2 settings (defaults); no drift measurements


def _comparable(cfg: RunConfig) -> dict:
    d = cfg.to_dict()
    d.pop("root", None)
    d.pop("name", None)
    d.get("data", {}).pop("poison", None)
    return d


@dataclass
class TourData:
    """Everything the tour shows.

    Attributes:
        root: the runs folder. settings: the sizes used. runs: ``{role: run folder}``.
        analyses: ``{"slice"|"hessian": {role: AnalysisOutput}}``. computed: roles/analyses
        computed in this call (empty when everything came from a pack or an earlier execution).
        seconds: wall time of :func:`prepare`. pack: the pack index used (None without a pack).
    """

    root: Path
    settings: TourSettings
    runs: dict[str, Path]
    analyses: dict[str, dict] = field(default_factory=dict)
    computed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    pack: dict | None = None

    def path(self, role: str) -> Path:
        """The folder of the tour's run with role ``role`` (KeyError for an unknown role)."""
        return self.runs[role]


def _find_run(root: Path, cfg: RunConfig, poisoned: bool = False) -> Path | None:
    """A finished run under ``root`` with the same configuration (root, name, poison path aside)."""
    from ..runs import list_runs, load_run

    want = _comparable(cfg)
    df = list_runs(root)
    for row in df.itertuples():
        if row.status != "finished":
            continue
        try:
            rd = load_run(row.path)
        except Exception:
            continue
        if _comparable(rd.config) == want and bool(rd.config.data.poison) == poisoned \
                and (Path(row.path) / "checkpoints" / "last.pt").is_file():
            return Path(row.path)
    return None


def read_pack_index(root: str | Path) -> dict | None:
    """The index of a pack loaded into ``root`` (``<root>/pack.json``), or None."""
    p = Path(root) / PACK_INDEX
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def prepare(root: str | Path, settings: TourSettings | None = None, *,
            log: Callable[[str], None] | None = print) -> TourData:
    """Find or compute the tour's runs and analyses under ``root``.

    With a pack loaded into ``root`` (``workbench pack load``) its settings and runs are
    used and nothing is computed. Otherwise finished runs with the planned
    configurations are reused and missing ones trained; analyses come from the runs'
    saved results when present.

    Args:
        root: runs folder.
        settings: sizes (default: the pack's, else :meth:`TourSettings.from_env`).
        log: receives one line per step (None: silent).
    """
    from ..analysis.tasks import analyze
    from ..poisoning import craft_poison
    from ..training import Trainer

    t0 = time.perf_counter()
    say = log or (lambda _m: None)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    index = read_pack_index(root)
    if index is not None and settings is None:
        settings = TourSettings(**index["settings"])
    settings = settings or TourSettings.from_env()
    data = TourData(root=root, settings=settings, runs={}, pack=index)
    if index is not None and index.get("settings") == settings.to_dict():
        for role, rid in index.get("roles", {}).items():
            p = root / rid
            if (p / "checkpoints" / "last.pt").is_file():
                data.runs[role] = p
    cfgs = tour_configs(settings, root)
    for role in ("sgd", "sam"):
        if role not in data.runs:
            found = _find_run(root, cfgs[role])
            if found is None:
                say(f"training {role} ({settings.epochs} epochs) ...")
                found = Trainer(cfgs[role], handle_sigint=False).run().run_path
                data.computed.append(role)
            data.runs[role] = Path(found)
    if "craft" not in data.runs:
        found = _find_run(root, cfgs["craft"])
        if found is None or not (found / "artifacts" / "poison.pt").is_file():
            say(f"crafting the poison ({settings.craft_epochs} SAM epochs) ...")
            res = craft_poison(cfgs["craft"], _poison_config(), handle_sigint=False)
            found = Path(res.run_path)
            data.computed.append("craft")
        data.runs["craft"] = Path(found)
    if "poisoned" not in data.runs:
        poison = data.runs["craft"] / "artifacts" / "poison.pt"
        cfg = cfgs["sgd"].with_overrides({"data.poison": str(poison), "data.poison_from_epoch": 1})
        found = _find_run(root, cfg, poisoned=True)
        if found is not None and Path(load_poison_path(found)).resolve() != poison.resolve():
            found = None
        if found is None:
            say(f"training SGD on the poisoned data ({settings.epochs} epochs) ...")
            found = Trainer(cfg, handle_sigint=False).run().run_path
            data.computed.append("poisoned")
        data.runs["poisoned"] = Path(found)
    for what, params, roles in (("slice", SLICE_PARAMS, ("sgd", "sam")),
                                ("hessian", HESSIAN_PARAMS, ("sgd", "sam", "poisoned")),
                                ("pca", PCA_PARAMS, ("sgd",))):
        data.analyses[what] = {}
        for role in roles:
            out = analyze(what, data.runs[role], count=settings.count, params=params)
            if not out.cached:
                data.computed.append(f"{what}:{role}")
            data.analyses[what][role] = out
    data.seconds = time.perf_counter() - t0
    say(f"tour data ready in {data.seconds:.1f} s" + (f" (computed: {', '.join(data.computed)})"
                                                       if data.computed else " (nothing computed)"))
    return data


def load_poison_path(run: Path) -> str:
    """The ``data.poison`` path of a run's configuration ('' without one)."""
    from ..runs import load_run

    return load_run(run).config.data.poison or ""


# ------------------------------------------------------------------ the numbers the tour quotes
def final_metrics(run: str | Path) -> dict:
    """The last epoch record of a run (``test_acc``, ``train_loss``, ...)."""
    from ..runs import load_run

    rd = load_run(run)
    return rd.epochs.iloc[-1].to_dict() if len(rd.epochs) else {}


def slice_rise(output) -> dict:
    """How much the training loss rises one filter-normalised step away from the minimum.

    Returns ``{"loss_at_0", "loss_at_1", "rise"}``: the training loss at α = 0, its mean
    at α = ±1 over both ends and all directions of a ``slice`` result, and the difference.
    """
    import numpy as np

    rises, at0, at1 = [], [], []
    for s in [output.result] + list(output.extra):
        a = np.asarray(s.alphas, dtype=float)
        loss = np.asarray(s.loss["train"], dtype=float)
        i0, lo, hi = int(np.argmin(np.abs(a))), int(np.argmin(np.abs(a + 1))), int(np.argmin(np.abs(a - 1)))
        at0.append(loss[i0])
        at1.append((loss[lo] + loss[hi]) / 2)
        rises.append(at1[-1] - at0[-1])
    return {"loss_at_0": float(np.mean(at0)), "loss_at_1": float(np.mean(at1)), "rise": float(np.mean(rises))}


def lambda_max(output) -> float:
    """The largest Hessian eigenvalue of a ``hessian`` result."""
    return float(max(output.result.values))


def rescaling_caveat(run: str | Path, count: int, c: float = 4.0, seed: int = 0) -> dict:
    """λ_max of a LeNet-5 before and after a function-preserving rescaling ([Murphy 2025, §2.2.2], [Dinh 2017]).

    The first convolution's weights and biases are multiplied by ``c`` and the second
    convolution's weights divided by ``c``: ReLU(c·z) = c·ReLU(z), so the network computes
    the same function (checked on the examples), yet its Hessian changes.

    Returns:
        ``{"same_function", "max_abs_diff", "lambda_original", "lambda_rescaled", "c", "count"}``.

    Raises:
        ValueError: the run's model is not a LeNet-5 (``features[0]`` and ``features[3]`` convolutions).
    """
    import copy

    import torch

    from ..analysis import ExampleSet
    from ..analysis.curvature import HessianOperator, lanczos
    from ..analysis.tasks import load_model

    model, bundle, _ = load_model(run)
    feats = getattr(model, "features", None)
    if feats is None or not all(isinstance(feats[i], torch.nn.Conv2d) for i in (0, 3)):
        raise ValueError("rescaling_caveat needs a LeNet-5 (model.name='lenet5')")
    ex = ExampleSet.from_dataset(bundle.train, count=count, seed=seed)
    rescaled = copy.deepcopy(model)
    with torch.no_grad():
        rescaled.features[0].weight *= c
        rescaled.features[0].bias *= c
        rescaled.features[3].weight /= c
        diff = float((model(ex.x) - rescaled(ex.x)).abs().max())
    lams = []
    for m in (model, rescaled):
        with HessianOperator(m, ex) as op:
            lams.append(float(lanczos(op, k=1).values[0]))
    return {"same_function": diff < 1e-4, "max_abs_diff": diff, "lambda_original": lams[0],
            "lambda_rescaled": lams[1], "c": c, "count": int(ex.x.shape[0])}


def targeted_panel_class():
    """The targeted-poisoning defence panel (``workbench.ui.targeted_panel``) when it is installed, else None."""
    import importlib
    import inspect

    try:
        mod = importlib.import_module("workbench.ui.targeted_panel")
    except ImportError:
        return None
    from ..ui.base import PanelBase

    names = getattr(mod, "__all__", None) or dir(mod)
    for n in names:
        obj = getattr(mod, n, None)
        if inspect.isclass(obj) and issubclass(obj, PanelBase) and obj.__module__ == mod.__name__:
            return obj
    return None
