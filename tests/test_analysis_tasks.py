"""analyze() on stored runs: every analysis runs, is saved, reloads from cache, reports progress, stops;
the AnalysisPanel and `workbench analyze` drive it."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from workbench.analysis.tasks import ANALYSES, AnalysisStopped, analyze, list_analyses, load_model
from workbench.cli import main
from workbench.presets import quickstart_config
from workbench.training import Trainer
from workbench.viz import progress_figure, result_figure, summary_rows

FAST = {"plane": {"grid": 7}, "sharpness": {"steps": 5, "rhos": [0.0, 0.05, 0.1]}, "trace": {"n_probes": 12},
        "density": {"steps": 20}, "slice": {"n_directions": 2, "alphas": [-1.0, 1.0, 9]},
        "interpolate": {"alphas": [-0.5, 1.5, 9]}, "layerwise": {"n_probes": 6}}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    a = Trainer(quickstart_config("sgd", epochs=3, root=str(root))).run().run_path
    b = Trainer(quickstart_config("sam", epochs=3, root=str(root))).run().run_path
    return root, a, b


@pytest.mark.parametrize("what", ANALYSES)
def test_every_analysis_runs_saves_and_reloads(two_runs, what):
    root, a, b = two_runs
    reports = []
    kw = dict(other=b) if what == "interpolate" else {}
    run = b if what == "cosine" else a
    out = analyze(what, run, count=256, params=FAST.get(what), callback=reports.append, **kw)
    assert not out.cached and out.path.is_file() and reports
    assert all(0 <= r.done <= max(r.total, 1) for r in reports)
    again = analyze(what, run, count=256, params=FAST.get(what), **kw)
    assert again.cached and again.path == out.path
    assert type(again.result) is type(out.result)
    fig = result_figure(what, [out])
    assert len(fig.data) >= 1
    assert summary_rows(what, [out])[0]["run"]
    assert any(d["what"] == what for d in list_analyses(run))


def test_model_is_not_changed_and_results_are_consistent(two_runs):
    root, a, b = two_runs
    model, bundle, rd = load_model(a)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = analyze("hessian", a, count=256, params={"k": 3})
    model2, _, _ = load_model(a)
    for k, v in model2.state_dict().items():
        assert torch.equal(v, before[k])
    vals = np.asarray(out.result.values)
    assert vals[0] >= vals[1] >= vals[2] > 0 and out.result.count == 256
    # the interpolation's endpoints are the two models' own losses (no BatchNorm in LeNet-5)
    from workbench.analysis import ExampleSet
    from workbench.training import evaluate

    it = analyze("interpolate", a, other=b, count=256, params={"alphas": [0.0, 1.0, 2]}).result
    ex = ExampleSet.from_dataset(bundle.train, count=256, seed=0)
    mb, _, _ = load_model(b)
    assert it.loss["train"][1] == pytest.approx(evaluate(model, ex.x, ex.y)[0], rel=1e-5)  # alpha = 1: theta_1 = a
    assert it.loss["train"][0] == pytest.approx(evaluate(mb, ex.x, ex.y)[0], rel=1e-5)     # alpha = 0: theta_2 = b


def test_progress_stop_and_bad_input(two_runs):
    root, a, b = two_runs
    stop = threading.Event()
    seen = []

    def cb(p):
        seen.append(p)
        if p.done >= 3:
            stop.set()

    with pytest.raises(AnalysisStopped):
        analyze("interpolate", a, other=b, count=128, params={"alphas": [-1.0, 2.0, 30]}, callback=cb, stop=stop,
                force=True)
    partial = [p for p in seen if p.data]
    assert partial and len(partial[-1].data["loss"]["train"]) >= 3
    assert len(progress_figure("interpolate", partial[-1].data).data) >= 1
    with pytest.raises(ValueError, match="choose one of"):
        analyze("curvature", a)
    with pytest.raises(ValueError, match="other="):
        analyze("interpolate", a)
    with pytest.raises(ValueError, match="unknown parameter"):
        analyze("hessian", a, params={"kk": 3})
    with pytest.raises(ValueError, match="hessian.method"):
        analyze("hessian", a, params={"method": "magic"})
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        analyze("hessian", a, checkpoint="nope.pt")


def test_cli_analyze(two_runs, tmp_path, capsys):
    root, a, b = two_runs
    assert main(["analyze", str(a), str(b), "--what", "hessian", "--set", "k=2", "--count", "128",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("lambda_1") == 2 and (tmp_path / "hessian.html").is_file()
    assert main(["analyze", str(a), str(b), "--what", "interpolate", "--set", "alphas=[0.0, 1.0, 3]",
                 "--count", "128", "--no-progress"]) == 0
    assert main(["analyze", str(a), "--what", "interpolate", "--no-progress"]) == 2


def test_analysis_panel(two_runs):
    from workbench.ui import AnalysisPanel

    root, a, b = two_runs
    p = AnalysisPanel(root=root, interval=0.05)
    assert {v for _, v in p.w_run.options} == {str(a), str(b)}
    p.select(a, b)
    p.w_count.value = 128
    p.w_what.value = "hessian"
    p._param_widgets["k"].value = 3
    assert p.start() and p.wait(120)
    assert "Saved" in p.w_status.value and len(p.figure.data) == 1
    p.select(b)
    assert p.start() and p.wait(120)
    assert len(p.figure.data) == 2  # SGD and SAM overlaid
    assert "lambda_1" in p.w_table.value
    p.w_what.value = "interpolate"
    p._param_widgets["alphas"].value = "[-0.5, 1.5, 9]"
    p.select(a, b)
    assert p.start() and p.wait(120)
    assert len(p.figure.data[0].x) == 9
    p._param_widgets["alphas"].value = "[oops"
    assert not p.start() and "Invalid parameter" in p.w_status.value
    paths = p.export(root / "exports" / "interp", formats=("html",))
    assert paths[0].is_file()


def test_cosine_to_a_target_example_and_plane_views(two_runs):
    root, a, b = two_runs
    model, bundle, _ = load_model(a)
    target = int(bundle.test.index[0])
    out = analyze("cosine", a, count=128, params={"source": "target", "target": target, "kind": "logits"})
    vals = np.asarray(out.result.values)
    assert vals.shape == (128,) and np.all(np.abs(vals[np.isfinite(vals)]) <= 1 + 1e-6)
    assert out.result.reference == f"example {target}"
    with pytest.raises(ValueError, match="target"):
        analyze("cosine", a, params={"source": "target"})
    plane = analyze("plane", a, count=128, params={"grid": 5})
    assert result_figure("plane", [plane], kind="surface").data[0].type == "surface"
    assert result_figure("plane", [plane], metric="acc").data[0].type == "contour"


# ------------------------------------------------------- non-finite weights / poisons, corrupt caches
def _copy_run(src, dst_root):
    import shutil

    dst = dst_root / src.name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("analysis", ".lock"))
    return dst


def test_nonfinite_weights_or_poison_refuse_the_analysis_and_nothing_is_saved(two_runs, tmp_path):
    import json

    from workbench.analysis.tasks import NonFiniteError
    from workbench.data.poison import Poison, save_poison
    from workbench.runs import load_checkpoint
    from workbench.runs.store import atomic_torch_save

    root, a, b = two_runs
    bad = _copy_run(a, tmp_path)
    ck = load_checkpoint(bad / "checkpoints" / "last.pt")
    total = sum(v.numel() for v in ck["model"].values() if v.is_floating_point())
    name = next(k for k, v in ck["model"].items() if v.is_floating_point() and v.numel() >= 3)
    ck["model"][name].view(-1)[:2] = float("nan")
    ck["model"][name].view(-1)[2] = float("inf")
    atomic_torch_save(ck, bad / "checkpoints" / "last.pt")
    for what, kw in (("hessian", {}), ("interpolate", {"other": bad}), ("sparsity", {})):
        run = a if what == "interpolate" else bad
        with pytest.raises(NonFiniteError,
                           match=rf"^run {bad.name} has non-finite weights \(3 of {total} parameters\)"):
            analyze(what, run, count=64, **kw)
    assert not (bad / "artifacts" / "analysis").exists() or not list((bad / "artifacts" / "analysis").iterdir())
    # a poison with a NaN
    pois = _copy_run(b, tmp_path)
    delta = torch.zeros(4, 1, 8, 8)
    delta[1, 0, 2, 3] = float("nan")
    p = save_poison(Poison(delta=delta, index=torch.arange(4)), tmp_path / "poison.pt")
    cfg = json.loads((pois / "config.json").read_text())
    cfg["data"]["poison"] = str(p)
    (pois / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(NonFiniteError, match=r"poison .* has non-finite values \(1 of 256\)"):
        analyze("hessian", pois, count=64)
    assert not (pois / "artifacts" / "analysis").exists() or not list((pois / "artifacts" / "analysis").iterdir())


@pytest.mark.parametrize("part", ["json", "npz"])
def test_a_corrupt_saved_result_is_recomputed_with_a_warning(two_runs, tmp_path, part):
    root, a, b = two_runs
    run = _copy_run(a, tmp_path)
    out = analyze("hessian", run, count=64, params={"k": 2})
    target = out.path if part == "json" else out.path.with_suffix(".npz")
    assert target.is_file()
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.warns(RuntimeWarning, match=rf"saved analysis result '{target}' is corrupt.*recomputing"):
        again = analyze("hessian", run, count=64, params={"k": 2})
    assert not again.cached and again.path == out.path
    np.testing.assert_allclose(again.result.values, out.result.values, rtol=1e-6)
    third = analyze("hessian", run, count=64, params={"k": 2})  # the rewritten files load again
    assert third.cached
