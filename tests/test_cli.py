"""The command-line interface drives the same configs and run folders."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.runs import list_runs, load_run

REPO = Path(__file__).resolve().parents[1]


def test_run_with_overrides_then_list_figures_and_resume(run_root, tmp_path, capsys):
    rc = main(["run", str(REPO / "configs" / "quickstart_sam.yaml"), "--root", str(run_root), "--no-progress",
               "--set", "train.epochs=2", "optim.rho=0.1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "status: finished" in out
    (row,) = list_runs(run_root).itertuples()
    rd = load_run(row.path)
    assert rd.config.optim.rho == 0.1 and rd.config.train.epochs == 2 and len(rd.epochs) == 2

    assert main(["runs", str(run_root)]) == 0
    assert "sam" in capsys.readouterr().out
    assert main(["runs", str(run_root), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["optimizer"] == "sam"

    assert main(["figures", str(run_root), "--out", str(tmp_path / "figs"), "--format", "html"]) == 0
    assert (tmp_path / "figs" / "training-curves.html").is_file()

    assert main(["resume", row.path, "--epochs", "3", "--no-progress"]) == 0
    assert len(load_run(row.path).epochs) == 3


def test_bad_input_exit_codes(run_root, capsys):
    assert main(["run", str(REPO / "configs" / "quickstart_sgd.yaml"), "--set", "optim.lr=-1"]) == 2
    assert "optim.lr" in capsys.readouterr().err
    assert main(["run", "nope.yaml"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "workbench"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("run", "runs", "figures", "lab", "demo", "resume"):
        assert cmd in out


def test_demo_writes_run_folders_and_figures(tmp_path, capsys):
    from workbench.viz import static_export_available

    root = tmp_path / "demo"
    assert main(["demo", "--root", str(root), "--epochs", "2", "--no-progress"]) == 0
    runs = list_runs(root)
    assert sorted(runs["optimizer"]) == ["sam", "sgd"] and set(runs["status"]) == {"finished"}
    assert (root / "figures" / "training-curves.html").is_file()
    for p in runs["path"]:
        assert (Path(p) / "artifacts" / "training-curves.html").is_file()
    if static_export_available()[0]:
        assert (root / "figures" / "training-curves.png").stat().st_size > 10_000
        assert (root / "figures" / "paper" / "training-curves.pdf").is_file()


def test_craft_command_writes_a_poison(tmp_path, capsys):
    from workbench.poisoning import load_poison

    assert main(["craft", str(REPO / "configs" / "quickstart_sam.yaml"), "--root", str(tmp_path), "--no-progress",
                 "--set", "train.epochs=1", "--poison", "iterations=2", "epsilon=0.1"]) == 0
    out = capsys.readouterr().out
    path = Path(out.split("poison: ", 1)[1].split()[0])
    p = load_poison(path)
    assert p.meta["poison_config"]["iterations"] == 2 and p.norms()["frobenius"] > 0
    assert main(["craft", str(REPO / "configs" / "quickstart_sgd.yaml"), "--root", str(tmp_path)]) == 2
    assert "sam" in capsys.readouterr().err
    assert main(["craft", str(REPO / "configs" / "quickstart_sam.yaml"), "--poison", "iterations=0"]) == 2


# ----------------------------------------------------------------------------- user errors: exit 2, one line
def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "%|" not in err, err   # no traceback, no tqdm bar before the error
    return lines[0]


def test_resume_on_a_folder_that_is_not_a_run_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    assert main(["resume", str(tmp_path)]) == 2
    assert _one_error_line(capsys.readouterr().err) == f"error: {tmp_path} is not a run folder (no config.json)"
    assert main(["resume", str(tmp_path / "missing")]) == 2
    assert _one_error_line(capsys.readouterr().err) == f"error: {tmp_path / 'missing'} does not exist"


@pytest.mark.parametrize("override, names", [
    ("optim.lr=-1", "optim.lr"), ("train.epochs=abc", "train.epochs"), ("train.batch_size=0", "train.batch_size"),
    ("optim.name=nope", "optim.name"), ("data.name=nope", "data.name"), ("foo.bar=1", "foo"),
    ("optim.lr", "key=value")])
def test_invalid_config_values_exit_2_with_one_line(override, names, tmp_path, capsys):
    assert main(["run", str(REPO / "configs" / "quickstart_sgd.yaml"), "--root", str(tmp_path),
                 "--set", override]) == 2
    assert names in _one_error_line(capsys.readouterr().err)
    assert not any(tmp_path.iterdir())   # nothing was started


def test_missing_or_malformed_config_file_exits_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in _one_error_line(capsys.readouterr().err)
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    assert main(["run", str(bad)]) == 2
    assert "not valid YAML" in _one_error_line(capsys.readouterr().err)
    assert main(["figures", str(tmp_path / "no-runs-here"), "--out", str(tmp_path / "figs")]) == 2
    assert "does not exist" in _one_error_line(capsys.readouterr().err)


def test_console_script_reports_an_invalid_value_before_any_progress_bar(tmp_path):
    exe = Path(sys.executable).parent / "workbench"
    p = subprocess.run([str(exe), "run", str(REPO / "configs" / "quickstart_sgd.yaml"), "--root", str(tmp_path),
                        "--set", "train.epochs=0"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert "train.epochs=0 is invalid" in _one_error_line(p.stderr)
    assert not any(tmp_path.iterdir())
