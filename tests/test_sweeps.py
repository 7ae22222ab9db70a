"""Studies on the local backend: run folders, tables, failures, resume, Optuna pruning, validation."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from workbench.presets import quickstart_config
from workbench.runs import list_runs, load_run
from workbench.sweeps import StudyConfig, read_trials, run_study, summarize, to_latex, to_markdown, trials_table


def small_study(tmp_path, **kw) -> StudyConfig:
    d = dict(name="grid", base=quickstart_config("sgd", epochs=2), root=str(tmp_path),
             params={"optim.name": ["sgd", "sam"], "optim.lr": [0.05, 0.1]}, seeds=[0, 1])
    d.update(kw)
    return StudyConfig(**d)


def test_2x2x2_grid_gives_8_runs_and_a_correct_table(tmp_path):
    study = small_study(tmp_path)
    events = []
    res = run_study(study, callbacks=[events.append])
    assert res.status == "finished" and res.counts() == {"finished": 8}
    runs = list_runs(study.path / "runs")
    assert len(runs) == 8 and set(runs["status"]) == {"finished"}
    assert [e.kind for e in events].count("trial_ended") == 8 and events[-1].kind == "study_ended"
    assert sum(e.kind == "epoch" for e in events) == 16
    table = trials_table(study.path, metrics=("test_acc", "val_acc"))
    assert len(table) == 8
    for r in table.itertuples():  # the study objective (final val_acc) is the run's own
        assert r.objective == pytest.approx(load_run(r.run_path).epochs["val_acc"].iloc[-1])
    summary = summarize(table, ["optim.name", "optim.lr"], ["test_acc"])
    assert len(summary) == 4 and (summary["test_acc_n"] == 2).all()
    for r in summary.itertuples():
        vals = table[(table["optim.name"] == r[1]) & (table["optim.lr"] == r[2])]["test_acc"].to_numpy()
        assert r.test_acc_mean == pytest.approx(np.mean(vals))
        assert r.test_acc_se == pytest.approx(np.std(vals, ddof=1) / np.sqrt(len(vals)))
    md = to_markdown(summary, ["optim.name", "optim.lr"], "test_acc", group=["optim.name"])
    assert md.count("\n") == 5 and md.count("**") == 4 and " ± " in md  # 2 bold cells (best per optimizer)
    tex = to_latex(summary, ["optim.name", "optim.lr"], "test_acc", caption="SGD vs SAM")
    assert r"\pm" in tex and r"\mathbf" in tex and r"\toprule" in tex
    # resume: nothing left to do
    again = run_study(study)
    assert again.skipped == 8 and len(list_runs(study.path / "runs")) == 8


def test_failing_trial_is_recorded_and_the_study_finishes(tmp_path):
    study = small_study(tmp_path, name="fail", params={"data.name": ["digits", "mnist"]}, seeds=[0],
                        base=quickstart_config("sgd", epochs=1).with_overrides({"data.root": str(tmp_path / "none")}))
    res = run_study(study)
    st = {r["params"]["data.name"]: r for r in res.records}
    assert st["digits"]["status"] == "finished"
    assert st["mnist"]["status"] == "failed" and "FileNotFoundError" in st["mnist"]["error"]
    assert res.status == "finished"
    # resume re-tries the failed trial only
    res2 = run_study(study)
    assert res2.skipped == 1 and len(read_trials(study.path)) == 2


def test_stop_then_resume_skips_finished_trials(tmp_path):
    study = small_study(tmp_path, name="resume", base=quickstart_config("sgd", epochs=2))
    stop = threading.Event()

    def stopper(ev):
        if ev.kind == "trial_ended" and ev.done == 3:
            stop.set()

    first = run_study(study, callbacks=[stopper], stop=stop)
    assert first.status == "stopped" and first.counts() == {"finished": 3}
    status = json.loads((study.path / "status.json").read_text())
    assert status["status"] == "stopped"
    started = []
    second = run_study(study, callbacks=[lambda e: started.append(e) if e.kind == "trial_started" else None])
    assert second.status == "finished" and second.skipped == 3 and len(started) == 5
    assert second.counts() == {"finished": 8} and len(list_runs(study.path / "runs")) == 8


def test_process_pool_runs_trials_in_parallel(tmp_path):
    study = small_study(tmp_path, name="pool", params={"optim.name": ["sgd", "sam"]}, seeds=[0], workers=2)
    res = run_study(study)
    assert res.counts() == {"finished": 2}
    seq = run_study(small_study(tmp_path, name="seq", params={"optim.name": ["sgd", "sam"]}, seeds=[0]))
    by = {r["params"]["optim.name"]: r["value"] for r in seq.records}
    for r in res.records:  # one torch thread per worker gives the same numbers (deterministic CPU kernels)
        assert r["value"] == pytest.approx(by[r["params"]["optim.name"]], abs=0.02)


def test_optuna_median_pruner_stops_a_bad_trial_early(tmp_path):
    study = StudyConfig(name="optuna", base=quickstart_config("sgd", epochs=6), root=str(tmp_path), search="optuna",
                        params={"optim.lr": [0.05, 1e-6]}, n_trials=3, pruner="median", grace_epochs=1,
                        enqueue=[{"optim.lr": 0.05}, {"optim.lr": 0.05}, {"optim.lr": 1e-6}], seeds=[0])
    res = run_study(study)
    bad = [r for r in res.records if r["params"]["optim.lr"] == 1e-6]
    assert bad and bad[0]["status"] == "pruned" and bad[0]["epochs"] < 6
    good = [r for r in res.records if r["params"]["optim.lr"] == 0.05]
    assert good and good[0]["status"] == "finished"
    import optuna

    from workbench.sweeps.runner import open_optuna_study

    _, ostudy = open_optuna_study(study)
    states = [t.state for t in ostudy.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == 1 and states.count(optuna.trial.TrialState.COMPLETE) == 2
    again = run_study(study)  # resumes: all 3 Optuna trials already done
    assert again.skipped == 3


def test_random_search_and_yaml_round_trip(tmp_path):
    study = StudyConfig(name="rand", base=quickstart_config("sgd", epochs=1), root=str(tmp_path), search="random",
                        params={"optim.lr": {"low": 1e-3, "high": 0.3, "log": True}, "optim.name": ["sgd", "sam"]},
                        n_trials=3, seeds=[0], sampler_seed=1)
    confs = study.configurations()
    assert len(confs) == 3 and all(1e-3 <= c["optim.lr"] <= 0.3 for c in confs)
    assert StudyConfig.from_yaml(study.to_yaml()).configurations() == confs
    p = tmp_path / "study.yaml"
    p.write_text("name: fromfile\nbase: " + str(tmp_path / "base.yaml") + "\nparams:\n  optim.rho: [0.05, 0.1]\n"
                 "seeds: [0, 1]\n")
    quickstart_config("sam").save(tmp_path / "base.yaml")
    s2 = StudyConfig.load(p)
    assert len(s2.trials()) == 4 and s2.base.optim.name == "sam"


@pytest.mark.parametrize("kw, field", [
    (dict(search="bayes"), "search"), (dict(params={"optim.lrr": [0.1]}), "optim.lrr"),
    (dict(params={"optim.lr": [-1.0]}), "optim.lr"),
    (dict(params={"optim.lr": {"low": 0.1, "high": 0.01}}), "optim.lr"),
    (dict(seeds=[]), "seeds"), (dict(search="random"), "n_trials"), (dict(backend="slurm"), "backend"),
    (dict(params={"optim.lr": {"low": 0.0, "high": 1.0, "log": True}}), "low"),
    (dict(params={"train.seed": [1, 2]}), "train.seed"), (dict(mode="up"), "mode"),
])
def test_bad_studies_name_the_field(tmp_path, kw, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        small_study(tmp_path, **kw)


def test_example_studies_load_and_cli(tmp_path, capsys):
    from pathlib import Path

    from workbench.cli import main

    repo = Path(__file__).resolve().parents[1]
    files = sorted((repo / "configs" / "studies").glob("*.yaml"))
    assert len(files) >= 2
    for f in files:
        StudyConfig.load(f)
    assert main(["sweep", str(repo / "configs" / "studies" / "sgd_vs_sam_lr.yaml"), "--root", str(tmp_path),
                 "--set", "train.epochs=1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "{'finished': 30}" in out and out.count(" ± ") == 6
    assert main(["table", str(tmp_path / "sgd-vs-sam-lr"), "--format", "latex", "--metric", "val_acc"]) == 0
    assert r"\pm" in capsys.readouterr().out

    from workbench.viz import static_export_available

    formats = ["html", "png", "svg", "pdf"] if static_export_available()[0] else ["html"]
    out = tmp_path / "figs"
    assert main(["figures", str(tmp_path / "sgd-vs-sam-lr"), "--out", str(out), "--format", *formats,
                 "--width", "640", "--height", "400", "--scale", "1"]) == 0
    stem = out / "sgd-vs-sam-lr"
    assert " ± " in (out / "sgd-vs-sam-lr-table.md").read_text()
    assert r"\begin{tabular}" in (out / "sgd-vs-sam-lr-table.tex").read_text()
    for name in ("metric-vs-param", "parallel-coordinates", "ratio-to-baseline"):
        assert Path(f"{stem}-{name}.html").is_file()
        if "png" in formats:
            import struct

            head = Path(f"{stem}-{name}.png").read_bytes()[:24]
            assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (640, 400)
            assert Path(f"{stem}-{name}.pdf").read_bytes()[:5] == b"%PDF-"
            assert Path(f"{stem}-{name}.svg").read_text().lstrip().startswith("<svg")


def test_tables_can_use_analysis_results(tmp_path):
    from workbench.analysis.tasks import analyze
    from workbench.sweeps import metric_value

    study = small_study(tmp_path, name="ana", params={"optim.name": ["sgd", "sam"]}, seeds=[0])
    res = run_study(study)
    for r in res.records:
        out = analyze("hessian", r["run_path"], count=128, params={"k": 2})
        assert metric_value(r["run_path"], "analysis.hessian.lambda_1") == pytest.approx(float(out.result.values[0]))
    table = trials_table(study.path, metrics=("analysis.hessian.lambda_1", "test_acc"))
    assert table["analysis.hessian.lambda_1"].notna().all()
    summary = summarize(table, ["optim.name"], ["analysis.hessian.lambda_1"])
    assert len(summary) == 2
