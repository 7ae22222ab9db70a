"""Install and CI files say what the README says."""
from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_dependencies_are_ranges_and_complete():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = meta["dependencies"]
    names = {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0].lower() for d in deps}
    for need in ("jupyterlab", "ipywidgets", "plotly", "anywidget", "torch", "torchvision", "scikit-learn",
                 "pyhessian", "pandas", "tqdm", "pyyaml"):
        assert need in names, need
    assert not [d for d in deps if "==" in d], "use ranges, not exact pins"
    assert "dev" in meta["optional-dependencies"]
    assert meta["scripts"]["workbench"] == "workbench.cli:main"


def test_environment_yml_installs_the_project_with_pip():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip = [d for d in deps if isinstance(d, dict)][0]["pip"]
    assert any(p.startswith("-e .") for p in pip)


def test_ci_and_readme_agree_on_the_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "chromium" in ci
    readme = (REPO / "README.md").read_text()
    setup = readme.split("## Set up and run", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [l.split("#")[0].strip() for l in setup.strip().splitlines()]
    assert commands == ["make lab", "make app", "make test"]
    mk = (REPO / "Makefile").read_text()
    for target in ("lab:", "app:", "test:", "demo:"):
        assert target in mk


def test_named_libraries_import():
    import anywidget  # noqa: F401  (plotly's FigureWidget needs it)
    import plotly.graph_objects as go
    from pyhessian import hessian  # noqa: F401

    go.FigureWidget()
