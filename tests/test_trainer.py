"""Trainer, run store, resume, stop/pause, divergence, failures, checkpoints."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pandas as pd
import pytest
import torch
from conftest import SHARED_DATA

from workbench.config import RunConfig
from workbench.presets import quickstart_config
from workbench.runs import CheckpointError, Run, list_runs, load_checkpoint, load_run
from workbench.runs.store import atomic_torch_save
from workbench.training import EpochEnd, RunEnded, StepEnd, Trainer, resolve_device


def cfg_for(root, **ov) -> RunConfig:
    base = quickstart_config("sgd", epochs=3, root=str(root))
    return base.with_overrides(ov)


@pytest.mark.parametrize("opt", ["sgd", "sam"])
def test_lenet5_on_digits_reaches_95_percent(run_root, opt):
    res = Trainer(quickstart_config(opt, epochs=30, root=str(run_root))).run()
    assert res.status == "finished"
    assert res.final_metrics["test_acc"] >= 0.95, res.final_metrics


def test_run_folder_round_trip(run_root):
    events = []
    res = Trainer(cfg_for(run_root, **{"optim.name": "sam"}), callbacks=[events.append]).run()
    path = res.run_path
    assert (path / "config.json").is_file() and (path / "status.json").is_file()
    st = json.loads((path / "status.json").read_text())
    assert st["status"] == "finished" and st["attempt"] == 1 and st["device"] == "cpu"
    lines = [json.loads(l) for l in (path / "metrics.jsonl").read_text().splitlines()]
    kinds = {l["kind"] for l in lines}
    assert kinds == {"step", "epoch"}
    steps = [l for l in lines if l["kind"] == "step"]
    assert {"loss", "acc", "lr", "grad_norm", "sam_grad_norm", "cosine"} <= set(steps[0])
    assert len(steps) == res.steps
    # events mirror the records
    assert sum(isinstance(e, StepEnd) for e in events) == len(steps)
    assert [e.epoch for e in events if isinstance(e, EpochEnd)] == [1, 2, 3]
    assert isinstance(events[-1], RunEnded) and events[-1].status == "finished"
    # checkpoint readable with weights_only=True and restores the model
    ck = load_checkpoint(path / "checkpoints" / "last.pt")
    assert ck["epoch"] == 3 and ck["batch"] == 0 and ck["step"] == res.steps
    rd = load_run(path)
    assert rd.config == RunConfig.from_json(path / "config.json")
    assert list(rd.epochs["epoch"]) == [1, 2, 3]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"} <= set(rd.epochs.columns)
    model = rd.load_model()
    for a, b in zip(model.state_dict().values(), res.model.state_dict().values()):
        assert torch.equal(a, b.cpu())
    df = list_runs(run_root)
    assert isinstance(df, pd.DataFrame) and len(df) == 1
    row = df.iloc[0]
    assert row["status"] == "finished" and row["optimizer"] == "sam" and row["epochs_done"] == 3
    assert row["final_test_acc"] == pytest.approx(res.final_metrics["test_acc"])


def test_list_runs_empty_and_missing_root(tmp_path):
    assert list_runs(tmp_path / "nope").empty
    assert list(list_runs(tmp_path).columns)[:3] == ["run_id", "name", "status"]


@pytest.mark.parametrize("opt, model", [("sam", "lenet5"), ("sgd", "mlp")])
def test_stop_then_resume_equals_uninterrupted(run_root, opt, model):
    ov = {"optim.name": opt, "model.name": model, "model.dropout": 0.2 if model == "mlp" else 0.0,
          "train.epochs": 4}
    full = Trainer(cfg_for(run_root / "a", **ov)).run()

    stop_at = 31  # mid-epoch (20 steps per epoch)
    holder = {}

    def stopper(ev):
        if isinstance(ev, StepEnd) and ev.step == stop_at:
            holder["t"].stop()

    t = Trainer(cfg_for(run_root / "b", **ov), callbacks=[stopper])
    holder["t"] = t
    part = t.run()
    assert part.status == "stopped" and part.steps == stop_at
    st = Run(part.run_path).status()
    assert st["status"] == "stopped"
    ck = load_checkpoint(part.run_path / "checkpoints" / "last.pt")
    assert (ck["epoch"], ck["batch"], ck["step"]) == (1, stop_at - 20, stop_at)

    rest = Trainer.from_run(part.run_path).run()
    assert rest.status == "finished" and rest.steps == full.steps
    for a, b in zip(full.model.state_dict().values(), rest.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert rest.final_metrics["test_acc"] == pytest.approx(full.final_metrics["test_acc"])
    rd = load_run(part.run_path)
    assert list(rd.epochs["epoch"]) == [1, 2, 3, 4]
    assert rd.steps["step"].is_unique and rd.steps["step"].is_monotonic_increasing
    assert Run(part.run_path).status()["attempt"] == 2


def test_resume_after_killed_kernel_drops_abandoned_records(run_root):
    res = Trainer(cfg_for(run_root, **{"train.epochs": 2})).run()
    path = res.run_path
    # a kernel died during epoch 3: records beyond the last checkpoint, and a truncated line
    with open(path / "metrics.jsonl", "a") as f:
        for s in range(res.steps + 1, res.steps + 6):
            f.write(json.dumps({"kind": "step", "attempt": 1, "step": s, "epoch": s / 20, "loss": 9.0,
                                "acc": 0.0, "lr": 0.05, "grad_norm": 1.0}) + "\n")
        f.write('{"kind": "step", "attempt": 1, "st')
    Run(path).set_status("running")
    rest = Trainer.from_run(path, epochs=4).run()
    assert rest.status == "finished"
    rd = load_run(path)
    assert list(rd.epochs["epoch"]) == [1, 2, 3, 4]
    assert rd.steps["step"].is_unique and (rd.steps["loss"] < 9.0).all()
    assert len(rd.steps) == rest.steps


def test_resume_refuses_finished_run_without_more_epochs(run_root):
    res = Trainer(cfg_for(run_root, **{"train.epochs": 1})).run()
    with pytest.raises(ValueError, match="train.epochs"):
        Trainer.from_run(res.run_path)


def test_corrupted_and_truncated_checkpoints_give_clear_errors(run_root):
    res = Trainer(cfg_for(run_root, **{"train.epochs": 1})).run()
    ck = res.run_path / "checkpoints" / "last.pt"
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted, truncated"):
        Trainer.from_run(res.run_path, epochs=2)
    ck.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(ck)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(ck.parent / "missing.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoints_are_never_unpickled(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"model": _Evil()}, p)
    with pytest.raises(CheckpointError):
        load_checkpoint(p)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    p = tmp_path / "last.pt"
    atomic_torch_save({"a": torch.ones(3)}, p)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_torch_save({"a": torch.zeros(3)}, p)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(p)["a"], torch.ones(3))  # old file intact
    assert [q.name for q in tmp_path.iterdir()] == ["last.pt"]  # no temp files left


def test_nonfinite_loss_ends_run_as_diverged(run_root):
    res = Trainer(cfg_for(run_root, **{"optim.lr": 1e8, "optim.momentum": 0.0, "train.epochs": 5})).run()
    assert res.status == "diverged" and "non-finite" in res.error
    st = Run(res.run_path).status()
    assert st["status"] == "diverged" and "non-finite" in st["error"]
    assert res.steps < 5 * 20


def test_exception_marks_run_failed_and_keeps_metrics(run_root, monkeypatch):
    import workbench.training.trainer as tr

    real = tr.sam_step
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 25:
            raise RuntimeError("simulated CUDA error")
        return real(*a, **k)

    monkeypatch.setattr(tr, "sam_step", flaky)
    t = Trainer(cfg_for(run_root))
    with pytest.raises(RuntimeError, match="simulated"):
        t.run()
    st = Run(t.run_path).status()
    assert st["status"] == "failed" and "simulated CUDA error" in st["error"] and "Traceback" in st["traceback"]
    assert len(load_run(t.run_path).steps) == 24  # everything before the failure is on disk


def test_pause_and_stop_from_another_thread(run_root):
    t = Trainer(cfg_for(run_root, **{"train.epochs": 200}), handle_sigint=False)
    th = threading.Thread(target=t.run)
    th.start()
    try:
        deadline = time.time() + 60
        while (getattr(t, "step", 0) < 5) and time.time() < deadline:
            time.sleep(0.01)
        t.pause()
        time.sleep(0.3)
        assert Run(t.run_path).status()["status"] == "paused"
        s1 = t.step
        time.sleep(0.3)
        assert t.step == s1  # honoured within one step: nothing advances while paused
        t.resume()
        deadline = time.time() + 30
        while t.step <= s1 + 3 and time.time() < deadline:
            time.sleep(0.01)
        assert t.step > s1
    finally:
        t.stop()
        th.join(60)
    assert not th.is_alive()
    st = Run(t.run_path).status()
    assert st["status"] == "stopped"
    ck = load_checkpoint(t.run_path / "checkpoints" / "last.pt")
    assert ck["step"] == t.step


def test_sigint_on_main_thread_stops_gracefully(run_root):
    def interrupt(ev):
        if isinstance(ev, StepEnd) and ev.step == 7:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    res = Trainer(cfg_for(run_root, **{"train.epochs": 50}), callbacks=[interrupt]).run()
    assert res.status == "stopped" and 7 <= res.steps <= 9
    assert load_checkpoint(res.run_path / "checkpoints" / "last.pt")["step"] == res.steps
    assert len(load_run(res.run_path).steps) == res.steps
    assert signal.getsignal(signal.SIGINT) is before  # the trainer restores the previous handler


def test_same_seed_same_run_different_seed_differs(run_root):
    a = Trainer(cfg_for(run_root), store=False).run()
    b = Trainer(cfg_for(run_root), store=False).run()
    c = Trainer(cfg_for(run_root, **{"train.seed": 1}), store=False).run()
    assert a.run_path is None
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert [h["train_loss"] for h in a.history] != [h["train_loss"] for h in c.history]


def test_missing_dataset_offline_fails_before_work(tmp_path, run_root):
    cfg = cfg_for(run_root, **{"data.name": "mnist", "data.root": str(tmp_path / "nodata"), "data.split": "official"})
    with pytest.raises(FileNotFoundError) as e:
        Trainer(cfg).run()
    msg = str(e.value)
    assert str(tmp_path / "nodata") in msg and "download" in msg
    assert list(run_root.iterdir()) == []  # no run folder for a run that could not start


def test_device_resolution():
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_msam_asam_adam_schedules_train(run_root):
    for ov in ({"optim.name": "sam", "optim.m": 16}, {"optim.name": "asam", "optim.rho": 0.5},
               {"optim.name": "adam", "optim.lr": 1e-3},
               {"schedule.name": "cosine", "schedule.warmup_epochs": 1, "optim.nesterov": True}):
        res = Trainer(cfg_for(run_root, **ov), store=False).run()
        assert res.status == "finished"
        assert res.history[-1]["train_loss"] < res.history[0]["train_loss"] or res.history[-1]["train_acc"] > 0.5


@pytest.mark.skipif(not (SHARED_DATA / "mnist" / "raw").is_dir(), reason="../shared/data/mnist is not present")
def test_real_mnist_end_to_end(run_root):
    cfg = cfg_for(run_root, **{"data.name": "mnist", "data.root": str(SHARED_DATA), "data.split": "pooled",
                               "data.max_train": 3000, "train.epochs": 4, "train.batch_size": 64})
    res = Trainer(cfg).run()
    assert res.status == "finished" and res.final_metrics["test_acc"] > 0.85
    assert Run(res.run_path).status()["split_sizes"]["test"] == 2000


def test_run_of_a_dead_process_is_listed_as_interrupted(run_root):
    res = Trainer(cfg_for(run_root, **{"train.epochs": 1})).run()
    run = Run(res.run_path)
    st = run.status()
    assert st["pid"] == os.getpid()
    run.set_status("running", pid=2**22 + 12345)  # a pid that does not exist
    assert list_runs(run_root).iloc[0]["status"] == "interrupted"
    run.set_status("running", pid=os.getpid())
    assert list_runs(run_root).iloc[0]["status"] == "running"


def test_tensorboard_scalars(run_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = Trainer(cfg_for(run_root, **{"train.tensorboard": True, "optim.name": "sam", "train.epochs": 2})).run()
    ea = EventAccumulator(str(res.run_path / "tensorboard"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"train/loss", "train/cosine", "epoch/test_acc", "epoch/train_loss"} <= tags
    assert [e.step for e in ea.Scalars("epoch/test_acc")] == [1, 2]
    assert ea.Scalars("epoch/test_acc")[-1].value == pytest.approx(res.final_metrics["test_acc"], abs=1e-6)
    assert len(ea.Scalars("train/loss")) == res.steps
