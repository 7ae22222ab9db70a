"""The Trainer's public plugin API (issue 16, part 2): probes, steppers, defenses, callbacks and panels use
``loss_fn``, ``splits``, ``run_dir``, ``artifact_dir``, ``run_id``, ``log`` and ``emit``; nothing outside the
Trainer's own module touches a private Trainer attribute."""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import workbench
from workbench.presets import quickstart_config
from workbench.runs import Run
from workbench.training.events import ProbeResult
from workbench.training.trainer import Probe, Stepper, Trainer

PACKAGE = Path(workbench.__file__).parent
TRAINER_MODULE = PACKAGE / "training" / "trainer.py"


def _is_trainer(node: ast.AST) -> bool:
    """``trainer``, ``self.trainer``, ``self.runner.trainer``, ``t.trainer`` ... (any name or attribute 'trainer')."""
    return (isinstance(node, ast.Name) and node.id == "trainer") or \
        (isinstance(node, ast.Attribute) and node.attr == "trainer")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_trainer_uses(source: str) -> list[str]:
    """``trainer._x`` attribute reads/writes and ``getattr/hasattr/setattr(trainer, "_x")`` calls in ``source``."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _private(node.attr) and _is_trainer(node.value):
            hits.append(f"line {node.lineno}: .{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) >= 2
              and _is_trainer(node.args[0]) and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and _private(node.args[1].value)):
            hits.append(f"line {node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    return hits


def test_the_scanner_finds_private_trainer_access():
    src = ("def f(trainer, self):\n"
           "    a = trainer._loss_fn()\n"
           "    b = self.runner.trainer._run.id\n"
           "    c = getattr(trainer, '_splits', None)\n"
           "    d = trainer.loss_fn, trainer.__class__, self._run\n")
    hits = private_trainer_uses(src)
    assert sorted(hits) == ["line 2: ._loss_fn", "line 3: ._run", "line 4: getattr(..., '_splits')"], hits


def test_no_module_outside_the_trainer_touches_a_private_trainer_attribute():
    bad = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == TRAINER_MODULE:
            continue
        hits = private_trainer_uses(path.read_text(encoding="utf-8"))
        if hits:
            bad[str(path.relative_to(PACKAGE.parent))] = hits
    assert not bad, f"private Trainer attributes used outside workbench/training/trainer.py: {bad}"


# ------------------------------------------------------------------ the accessors on a real Trainer
@dataclass(frozen=True)
class Marked:
    """A plugin's own event type: callbacks receive it through Trainer.emit."""

    run_id: str
    epoch: int
    train_size: int


class PublicProbe(Probe):
    """Uses only the public API: splits, loss_fn, run_dir/artifact_dir/run_id, log, emit."""

    name = "public"

    def setup(self, trainer):
        self.train = trainer.splits["train"]
        self.seen = {"run_dir": trainer.run_dir, "artifact_dir": trainer.artifact_dir, "run_id": trainer.run_id}

    def measure(self, model, trainer):
        with torch.no_grad():
            x, y = self.train.x[:32], self.train.y[:32]
            loss = float(trainer.loss_fn(model(x), y))
        trainer.log({"kind": "public_probe", "epoch": 1, "loss": loss})
        trainer.emit(Marked(trainer.run_id, 1, len(self.train)))
        if trainer.artifact_dir is not None:
            (trainer.artifact_dir / "public.json").write_text(json.dumps({"loss": loss}))
        return {"loss": loss}


class PublicStepper(Stepper):
    """The default step through the public loss (counts its calls)."""

    name = "public_stepper"

    def __init__(self):
        self.calls = 0

    def step(self, trainer, x, y, index, epoch):
        self.calls += 1
        assert trainer.loss_fn is not None and trainer.run_id is not None
        return super().step(trainer, x, y, index, epoch)


def _cfg(root, **ov):
    return quickstart_config("sgd", epochs=1, root=str(root)).with_overrides(
        {"data.max_train": 128, **ov})


def test_a_plugin_on_the_public_api_in_a_stored_run(tmp_path):
    events = []
    probe, stepper = PublicProbe(), PublicStepper()
    t = Trainer(_cfg(tmp_path, **{"train.label_smoothing": 0.1}), callbacks=[events.append], probes=[probe],
                stepper=stepper, handle_sigint=False)
    assert t.run_id is None and t.run_dir is None and t.artifact_dir is None
    with pytest.raises(RuntimeError, match="set up"):
        _ = t.splits
    res = t.run()
    assert res.status == "finished" and stepper.calls == t.steps_per_epoch
    # the accessors, as the probe saw them at set-up
    assert probe.seen["run_dir"] == res.run_path == t.run_dir == t.run_path
    assert probe.seen["artifact_dir"] == res.run_path / "artifacts" and probe.seen["run_id"] == t.run_id
    assert set(t.splits) == {"train", "val", "test"} and len(t.splits["train"]) == 128
    with pytest.raises(TypeError):
        t.splits["train"] = None  # read-only view
    # loss_fn is the training loss: label smoothing included
    out, y = torch.randn(5, 10), torch.tensor([0, 1, 2, 3, 4])
    assert torch.equal(t.loss_fn(out, y), F.cross_entropy(out, y, label_smoothing=0.1))
    # log -> metrics.jsonl, emit -> callbacks, artifact_dir -> a file in the run
    recs = [json.loads(line) for line in (res.run_path / "metrics.jsonl").read_text().splitlines()]
    mine = [r for r in recs if r["kind"] == "public_probe"]
    assert len(mine) == 1 and mine[0]["loss"] > 0
    marked = [e for e in events if isinstance(e, Marked)]
    assert marked == [Marked(t.run_id, 1, 128)] and t.run_id == Run(res.run_path).id
    assert any(isinstance(e, ProbeResult) and e.name == "public" for e in events)
    assert json.loads((res.run_path / "artifacts" / "public.json").read_text())["loss"] == mine[0]["loss"]
    with pytest.raises(ValueError, match="kind"):
        t.log({"epoch": 1})
    with pytest.raises(ValueError, match="kind"):
        t.log({"kind": ""})


def test_the_public_api_in_memory(tmp_path):
    probe = PublicProbe()
    t = Trainer(_cfg(tmp_path), store=False, probes=[probe], handle_sigint=False)
    res = t.run()
    assert res.status == "finished" and res.run_path is None
    assert t.run_dir is None and t.artifact_dir is None and t.run_id.startswith("memory-")
    assert probe.seen["run_id"] == t.run_id
    t.log({"kind": "anything"})  # no run folder: nothing written, no error
    assert t.loss_fn is F.cross_entropy
    broken = []

    def bad(ev):
        broken.append(ev)
        raise RuntimeError("boom")

    t.add_callback(bad)
    with pytest.warns(RuntimeWarning, match="boom"):
        t.emit(Marked(t.run_id, 0, 0))
    t.emit(Marked(t.run_id, 0, 0))  # disabled after the first failure
    assert len(broken) == 1
