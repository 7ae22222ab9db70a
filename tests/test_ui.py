"""TrainingPanel wiring, exercised in-process (no browser): the figure receives the run's data."""
from __future__ import annotations

import time

import pytest

from workbench.presets import quickstart_config
from workbench.runs import Run, list_runs
from workbench.ui import TrainingPanel


def epoch_traces(fig):
    return [t for t in fig.data if not (t.name or "").endswith("(batches)")]


def test_panel_trains_selected_optimizers_and_keeps_finished_runs(run_root):
    panel = TrainingPanel(root=run_root, base=quickstart_config("sgd", epochs=3), interval=0.05)
    assert [k for k, w in panel.w_opts.items() if w.value] == ["sgd", "sam"]
    assert panel.start()
    assert panel.wait(120)
    assert [r.status for r in panel.results] == ["finished", "finished"]
    fig = panel.figure
    names = {t.name.split(" · ")[0] for t in epoch_traces(fig)}
    assert names == {"SGD", "SAM, ρ = 0.05"}   # labels from the optimizer and its hyperparameters
    # every epoch trace has all 3 epochs; per-step traces have every step
    for t in epoch_traces(fig):
        assert list(t.x) == [1, 2, 3]
    batch = [t for t in fig.data if (t.name or "").endswith("(batches)")]
    assert batch and all(len(t.x) == panel.results[0].steps for t in batch)
    assert "Done" in panel.w_status.value and panel.w_progress.value == pytest.approx(1.0)
    assert not panel.w_start.disabled and panel.w_stop.disabled
    # a second comparison adds to the figure (finished runs stay)
    panel.w_opts["sam"].value = False
    panel.w_seed.value = 1
    assert panel.start() and panel.wait(120)
    assert len({t.meta["run"] for t in fig.data}) == 3
    panel.clear()
    assert len(fig.data) == 0
    assert len(list_runs(run_root)) == 3


def test_panel_stop_refuses_second_start_and_reports_bad_settings(run_root):
    panel = TrainingPanel(root=run_root, base=quickstart_config("sgd", epochs=500), interval=0.05)
    panel.w_m.value = 5  # does not divide the batch size 64
    assert not panel.start()
    assert "optim.m" in panel.w_status.value and not panel.running
    panel.w_m.value = 0
    panel.w_opts["sam"].value = False
    assert panel.start()
    assert not panel.start() and "already in progress" in panel.w_status.value
    deadline = time.time() + 60
    while not any(len(t.x or ()) >= 2 for t in epoch_traces(panel.figure)) and time.time() < deadline:
        time.sleep(0.05)
    panel.stop()
    assert panel.wait(60)
    (res,) = panel.results
    assert res.status == "stopped" and res.epochs_done < 500
    assert Run(res.run_path).status()["status"] == "stopped"
    assert (res.run_path / "checkpoints" / "last.pt").is_file()


def test_panel_export_writes_html(run_root):
    panel = TrainingPanel(root=run_root, base=quickstart_config("sgd", epochs=1), compare=("sgd",), interval=0.05)
    panel.start()
    panel.wait(60)
    paths = panel.export(run_root / "exports" / "curves", formats=("html",))
    assert paths[0].suffix == ".html" and paths[0].stat().st_size > 2_000
    assert (paths[0].parent / "plotly.min.js").stat().st_size > 1_000_000  # one local plotly.js beside the exports
    assert "Exported" in panel.w_status.value


def test_panel_reports_failures(run_root, tmp_path):
    panel = TrainingPanel(root=run_root, base=quickstart_config("sgd", epochs=1).with_overrides(
        {"data.root": str(tmp_path / "none")}), compare=("sgd",), interval=0.05)
    panel.w_dataset.value = "mnist"
    panel.start()
    panel.wait(60)
    assert "Failed" in panel.w_status.value and "mnist" in panel.w_status.value.lower()


def test_kernel_stays_responsive_while_panel_trains(tmp_path):
    """In a real kernel: Start returns at once and other cells run while the run trains."""
    import time as _t

    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        def run(code, timeout=120):
            t0 = _t.perf_counter()
            reply = kc.execute_interactive(code, timeout=timeout, output_hook=lambda msg: None)
            assert reply["content"]["status"] == "ok", reply["content"]
            return _t.perf_counter() - t0

        run(f"""
from workbench.presets import quickstart_config
from workbench.ui import TrainingPanel
panel = TrainingPanel(root={str(tmp_path)!r}, base=quickstart_config("sgd", epochs=400), compare=("sgd",))
""")
        start = run("assert panel.start()")
        assert start < 2.0
        run("import time\nwhile panel.live.redraws < 2: time.sleep(0.05)")
        latencies = [run("x = sum(range(1000)); assert panel.running") for _ in range(5)]
        assert max(latencies) < 1.0, latencies
        run("panel.stop(); assert panel.wait(60); assert panel.results[0].status == 'stopped'")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_panel_cosine_histogram_probe_view(run_root):
    panel = TrainingPanel(root=run_root, base=quickstart_config("sgd", epochs=2), compare=("sam",), interval=0.05)
    panel.w_probe_cos.value = True
    assert panel.probe_views.widget.layout.display != "none"
    assert panel.start() and panel.wait(120)
    pv = panel.probe_views
    assert (pv.w_epoch.min, pv.w_epoch.max, pv.w_epoch.value) == (1, 2, 2)
    (bars,) = pv.fig_cos.data
    assert sum(bars.y) == pytest.approx(1.0)  # fractions of the 20 steps of epoch 2
    pv.w_epoch.value = 1
    assert sum(pv.fig_cos.data[0].y) == pytest.approx(1.0)


def test_panel_live_probes_lambda_max_and_sparsity(run_root):
    panel = TrainingPanel(root=run_root, base=quickstart_config("sgd", epochs=2), compare=("sgd",), interval=0.05)
    panel.w_probe_eig.value = True
    panel.w_probe_eig_every.value = 1
    panel.w_probe_fsc.value = True
    assert panel.start() and panel.wait(180)
    pv = panel.probe_views
    (eig,) = pv.fig_eig.data
    assert list(eig.x) == [1, 2] and all(v > 0 for v in eig.y)
    assert len(pv.fig_fsc.data) == 4  # one trace per ReLU layer of LeNet-5
    assert all(0 <= v <= 1 for t in pv.fig_fsc.data for v in t.y)
    from workbench.runs import load_run

    probes = load_run(panel.results[0].run_path).probes
    assert set(probes["name"]) == {"top_eigenvalue", "feature_sparsity"} and len(probes) == 4
