"""Paper-ready training curves: labels from the runs' configs, a compact legend, exact PDF page sizes, embedded
fonts, a shared plotly.js for HTML, and one-line errors when kaleido fails."""
from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import workbench.viz.export as ex
from workbench.cli import main
from workbench.config import RunConfig
from workbench.runs import Run
from workbench.viz import CurveData, ExportError, export_figure, static_export_available, static_export_session
from workbench.viz.curves import curve_labels, curve_series, run_label, training_curves
from workbench.viz.theme import PAPER_HEIGHT_IN, PAPER_WIDTHS_IN, layout_compact_legend, text_width_px

WIDTHS_IN = (PAPER_WIDTHS_IN["one-column"], PAPER_WIDTHS_IN["two-column"])
POPPLER = all(shutil.which(t) for t in ("pdftoppm", "pdfinfo", "pdffonts", "pdftotext"))
needs_chrome = pytest.mark.skipif(not static_export_available()[0], reason=static_export_available()[1] or "ok")
needs_poppler = pytest.mark.skipif(not POPPLER, reason="poppler-utils (pdftoppm, pdfinfo, pdffonts) not installed")


def cfg(**over) -> RunConfig:
    return RunConfig().with_overrides({"train.epochs": 2, **over})


def curve(config: RunConfig | None, key: str, name: str | None = None, n: int = 5, shift: float = 0.0):
    ep = pd.DataFrame({"epoch": range(1, n + 1),
                       **{f"{s}_loss": [2.0 / (i + 1) + shift for i in range(n)] for s in ("train", "val", "test")},
                       **{f"{s}_acc": [0.5 + i / (3 * n) - shift / 10 for i in range(n)]
                          for s in ("train", "val", "test")}})
    return CurveData(name=name or (config.display_name if config else key), epochs=ep, key=key, config=config)


FIVE = [cfg(), cfg(**{"optim.name": "sam"}), cfg(**{"optim.name": "asam", "optim.rho": 0.5}),
        cfg(**{"optim.name": "sam", "optim.m": 16}), cfg(**{"optim.name": "sam", "optim.lr": 0.1})]


def five_runs():
    return [curve(c, f"20261203-12420{i}-run-{i}", shift=0.1 * i) for i, c in enumerate(FIVE)]


# ------------------------------------------------------------------ labels
def test_labels_from_optimizer_and_hyperparameters():
    assert [run_label(c) for c in FIVE] == ["SGD", "SAM, ρ = 0.05", "ASAM, ρ = 0.5", "SAM, ρ = 0.05, m = 16",
                                            "SAM, ρ = 0.05"]
    assert run_label(cfg(**{"optim.name": "adam"})) == "Adam"
    assert run_label(cfg(**{"optim.name": "sam", "optim.base": "adam"})) == "SAM (Adam), ρ = 0.05"
    assert run_label(cfg(name="my baseline")) == "my baseline"  # an explicit name is kept
    # runs known by name only (the live panel): the automatic names are read the same way
    assert run_label(None, "SAM(rho=0.05, m=16)-lenet5-digits") == "SAM, ρ = 0.05, m = 16"
    assert run_label(None, "ASAM(rho=0.5)-wide_resnet-cifar10") == "ASAM, ρ = 0.5"
    assert run_label(None, "SGD on S′") == "SGD on S′"
    # equal labels: the differing field, most telling first
    assert curve_labels(five_runs()) == ["SGD", "SAM, ρ = 0.05, lr = 0.05", "ASAM, ρ = 0.5",
                                         "SAM, ρ = 0.05, m = 16", "SAM, ρ = 0.05, lr = 0.1"]
    seeds = [curve(cfg(**{"train.seed": s}), f"k{s}") for s in (0, 1)]
    assert curve_labels(seeds) == ["SGD, seed = 0", "SGD, seed = 1"]
    mixed = [curve(cfg(), "a"), curve(cfg(**{"model.name": "mlp", "data.name": "moons"}), "b")]
    assert curve_labels(mixed) == ["SGD, lenet5, digits", "SGD, mlp, moons"]


def test_preloaded_and_new_run_of_the_same_name_get_distinct_entries():
    # the training panel knows runs by name and run id only: a stored run and a new one of the same config
    old = curve(None, "20261203-124156-SGD-lenet5-digits-86598a", name="SGD-lenet5-digits")
    new = curve(None, "20261203-131502-SGD-lenet5-digits-1f2e3d", name="SGD-lenet5-digits")
    assert curve_labels([old, new]) == ["SGD (12:41:56)", "SGD (13:15:02)"]
    other_day = curve(None, "20261204-124156-SGD-lenet5-digits-aaaaaa", name="SGD-lenet5-digits")
    assert curve_labels([old, other_day]) == ["SGD (2026-12-03 12:41:56)", "SGD (2026-12-04 12:41:56)"]
    # equal configs (same seed) from disk: the time too
    a, b = curve(cfg(), "20261203-101010-x"), curve(cfg(), "20261203-111111-y")
    assert curve_labels([a, b]) == ["SGD (10:10:10)", "SGD (11:11:11)"]
    # no key at all: numbered; uids stay distinct
    twins = [curve(None, None, name="SGD-lenet5-digits"), curve(None, None, name="SGD-lenet5-digits")]
    assert curve_labels(twins) == ["SGD", "SGD #2"]
    series = curve_series(twins)
    assert len({s.uid for s in series}) == len(series)
    fig = training_curves([old, new])
    shown = [t for t in fig.data if t.showlegend]
    assert len({t.name for t in shown}) == len(shown) and len({t.legendgroup for t in shown}) == 2


# ---------------------------------------------------------- compact legend
def _plot_fraction(fig: go.Figure) -> float:
    m = fig.layout.margin
    return (fig.layout.height - m.t - m.b) / fig.layout.height


@pytest.mark.parametrize("width_in", WIDTHS_IN)
def test_compact_legend_fits_above_the_plots(width_in):
    W = int(round(width_in * 96))
    fig = training_curves(five_runs(), theme="paper", width=W)
    assert fig.layout.showlegend is False and fig.layout.width == W
    assert fig.layout.height == int(PAPER_HEIGHT_IN * 96)
    assert _plot_fraction(fig) >= 0.6
    notes = [a for a in fig.layout.annotations if a.name == "compact-legend"]
    assert [a.text for a in notes][:5] == curve_labels(five_runs())
    assert [a.text for a in notes][5:] == ["train", "validation", "test"]
    m = fig.layout.margin
    pw = W - m.l - m.r
    rows: dict[float, list] = {}
    for a in notes:
        assert a.y > 1.0  # in the top margin, above the plot area
        x0 = m.l + a.x * pw
        x1 = x0 + text_width_px(a.text, a.font.size)
        assert 0 <= x0 and x1 <= W  # inside the figure (estimated text width, an upper bound)
        rows.setdefault(round(a.y, 6), []).append((x0, x1))
    for spans in rows.values():  # no two labels of a row overlap
        spans.sort()
        assert all(b[0] > a[1] for a, b in zip(spans, spans[1:]))
    # the subplots keep a fixed gap (room for the second y axis' labels and title) at any export width
    for w in (312, 648, 1000):
        g = go.Figure(fig)
        g.update_layout(width=w)
        layout_compact_legend(g)
        d1, d2 = g.layout.xaxis.domain, g.layout.xaxis2.domain
        assert (d2[0] - d1[1]) * (w - m.l - m.r) == pytest.approx(50, abs=0.5)
        assert _plot_fraction(g) >= 0.6


# ------------------------------------------------------------ static export
@pytest.fixture(scope="module")
def export_session():
    with static_export_session():
        yield


def _page_size_in(pdf: Path) -> tuple[float, float]:
    out = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    w, h = map(float, re.search(r"Page size:\s+([\d.]+) x ([\d.]+) pts", out).groups())
    return w / 72, h / 72


def _fonts_embedded(pdf: Path) -> list[tuple[str, str]]:
    lines = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout.splitlines()
    col = lines[0].index("emb")
    return [(ln.split()[0], ln[col:col + 3].strip()) for ln in lines[2:] if ln.strip()]


def _render_gray(pdf: Path, dpi: int, tmp: Path) -> np.ndarray:
    subprocess.run(["pdftoppm", "-gray", "-r", str(dpi), "-singlefile", str(pdf), str(tmp / "page")], check=True)
    data = (tmp / "page.pgm").read_bytes()
    m = re.match(rb"P5\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
    w, h = int(m[1]), int(m[2])
    return np.frombuffer(data[m.end():m.end() + w * h], dtype=np.uint8).reshape(h, w)


def _longest_runs(mask: np.ndarray) -> np.ndarray:
    """Per column: (length, start row) of the longest vertical run of True."""
    h, w = mask.shape
    out = np.zeros((w, 2), dtype=int)
    for j in range(w):
        col = np.concatenate([[0], mask[:, j].astype(np.int8), [0]])
        d = np.diff(col)
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        if len(starts):
            k = int(np.argmax(ends - starts))
            out[j] = ends[k] - starts[k], starts[k]
    return out


def _words(pdf: Path) -> list[tuple[str, float, float, float, float]]:
    xml = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    return [(w, float(a), float(b), float(c), float(d)) for a, b, c, d, w in re.findall(
        r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>', xml)]


@needs_chrome
@needs_poppler
@pytest.mark.parametrize("width_in", WIDTHS_IN)
def test_paper_pdf_page_fonts_and_plot_area(width_in, tmp_path, export_session):
    fig = training_curves(five_runs(), theme="paper")  # laid out at 6.75 in, exported at width_in
    pdf = export_figure(fig, tmp_path / "curves.pdf", width_in=width_in)
    w, h = _page_size_in(pdf)
    assert w == pytest.approx(width_in, rel=0.01) and h == pytest.approx(PAPER_HEIGHT_IN, rel=0.01)
    fonts = _fonts_embedded(pdf)
    assert fonts and all(emb == "yes" for _, emb in fonts), fonts
    dpi = 192  # 2 device px per layout px
    img = _render_gray(pdf, dpi, tmp_path)
    H, W = img.shape
    assert W == pytest.approx(width_in * dpi, abs=2) and H == pytest.approx(PAPER_HEIGHT_IN * dpi, abs=3)
    # the y axes are the long vertical near-black lines; they span the plot area
    runs = _longest_runs(img < 70)
    axes = np.flatnonzero(runs[:, 0] >= 0.3 * H)
    assert len(axes), "no y axis found"
    length, top = runs[axes[0]]
    assert length / H >= 0.6, f"plot area is {length / H:.0%} of the height"
    assert axes[0] == pytest.approx(2 * 44, abs=4)  # the left margin: no page margin, no shrinking
    legend_rows = np.flatnonzero((img[:top] < 160).any(axis=1))
    assert len(legend_rows) and legend_rows.max() < top  # the legend is drawn, wholly above the plot area
    # no two words overlap, all lie on the page; the second y title sits between the two plots
    words = _words(pdf)
    texts = [t for t, *_ in words]
    assert {"SGD", "train", "validation", "test", "loss", "accuracy"} <= set(texts) and texts.count("epoch") == 2
    pt_w, pt_h = width_in * 72, PAPER_HEIGHT_IN * 72
    for t, x0, y0, x1, y1 in words:
        assert -0.5 <= x0 and x1 <= pt_w + 0.5 and -0.5 <= y0 and y1 <= pt_h * 1.01, t
    boxes = [(x0, y0 + 0.2 * (y1 - y0), x1, y1 - 0.2 * (y1 - y0)) for _, x0, y0, x1, y1 in words]  # glyph core
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (words[i], words[j])
    second = [a for a in axes if a > axes[0] + 20]
    assert second, "no second y axis found"
    ax2_px = second[0] / 2  # layout px
    (_, x0, _, x1, _), = [wd for wd in words if wd[0] == "accuracy"]
    x_axis = img[top + length - 1:top + length + 1].min(axis=0) < 70  # the x axes' row
    end1 = np.flatnonzero(x_axis[: second[0] - 2]).max() / 2  # right end of the first plot, layout px
    assert end1 * 0.75 < x0 and x1 < ax2_px * 0.75


@needs_chrome
@needs_poppler
def test_cli_paper_figures_one_column(run_root, tmp_path, capsys, export_session):
    for c in FIVE[:3]:
        run = Run.create(run_root, c)
        for e in (1, 2):
            run.append({"kind": "epoch", "epoch": e, "step": 10 * e,
                        **{f"{s}_{m}": 1.0 / e for s in ("train", "val", "test") for m in ("loss", "acc")}})
        run.close()
        run.set_status("finished")
    out = tmp_path / "figs"
    assert main(["figures", str(run_root), "--out", str(out), "--format", "pdf", "png", "html",
                 "--theme", "paper", "--width-in", "3.25"]) == 0
    w, h = _page_size_in(out / "training-curves.pdf")
    assert w == pytest.approx(3.25, rel=0.01) and h == pytest.approx(PAPER_HEIGHT_IN, rel=0.01)
    head = (out / "training-curves.png").read_bytes()[:24]
    assert int.from_bytes(head[16:20], "big") == 975  # 3.25 in at 300 dpi
    html = (out / "training-curves.html").read_text()
    assert (out / "plotly.min.js").is_file() and len(html) < 200_000
    assert 'src="plotly.min.js"' in html and not re.search(r'(src|href)="(https?:)?//', html)
    assert "SAM, ρ = 0.05" in html or "SAM, \\u03c1 = 0.05" in html


# -------------------------------------------------------------------- HTML
def test_html_shares_one_local_plotly_js(tmp_path):
    fig = training_curves(five_runs()[:2])
    a = export_figure(fig, tmp_path / "a.html")
    b = export_figure(fig, tmp_path / "b.html")
    bundle = tmp_path / "plotly.min.js"
    assert bundle.stat().st_size > 1_000_000 and a.stat().st_size < 100_000 and b.stat().st_size < 100_000
    for p in (a, b):
        text = p.read_text()
        assert 'src="plotly.min.js"' in text and not re.search(r'(src|href)="(https?:)?//', text)
    shared = tmp_path / "runs" / "plotly.min.js"
    c = export_figure(fig, tmp_path / "runs" / "r1" / "artifacts" / "c.html", plotlyjs=shared)
    assert shared.is_file() and 'src="../../plotly.min.js"' in c.read_text()
    bundle.write_text("/** plotly.js v0.0.1 */")  # a stale bundle of another version is replaced
    export_figure(fig, tmp_path / "a.html")
    assert bundle.stat().st_size > 1_000_000
    solo = export_figure(fig, tmp_path / "solo" / "s.html", self_contained=True)
    assert solo.stat().st_size > 1_000_000 and not (tmp_path / "solo" / "plotly.min.js").exists()


# ------------------------------------------------------ transient failures
@pytest.fixture
def fake_kaleido(monkeypatch):
    monkeypatch.setattr(ex, "static_export_available", lambda: (True, ""))
    monkeypatch.setattr(ex, "find_chrome", lambda: None)
    calls = []
    # no real browser: the export session and its restart after a failure are recorded, not run
    monkeypatch.setattr(ex, "_restart_session", lambda: calls.append("restart"))
    monkeypatch.setattr("workbench.viz.static_export_session", contextlib.nullcontext)

    def install(failures: int, message: str = "ReferenceError: kaleido_scopes is not defined\n    at <anonymous>:1:8"):
        def write(fig, path, fmt, width, height, scale):
            calls.append((fmt, width, height, scale))
            if sum(c != "restart" for c in calls) <= failures:
                raise RuntimeError(message)
            Path(path).write_bytes(b"%PDF-1.4 fake")
        monkeypatch.setattr(ex, "_write_image", write)
        return calls
    return install


def test_transient_kaleido_failure_is_retried_once(fake_kaleido, tmp_path):
    calls = fake_kaleido(failures=1)
    p = export_figure(go.Figure(), tmp_path / "f.pdf", width_in=3.25, height_in=2.2)
    assert p.read_bytes().startswith(b"%PDF") and len(calls) == 3 and calls[1] == "restart"
    assert calls[0] == ("pdf", 312, 211, 1.0)  # a PDF is printed at scale 1: page = layout px / 96 in


def test_repeated_kaleido_failure_is_one_line(fake_kaleido, tmp_path, run_root, capsys):
    calls = fake_kaleido(failures=99)
    with pytest.raises(ExportError) as err:
        export_figure(go.Figure(), tmp_path / "f.png")
    msg = str(err.value)
    assert len(calls) == 3 and "\n" not in msg
    assert "kaleido failed twice" in msg and "kaleido_scopes is not defined" in msg and "f.png" in msg
    run = Run.create(run_root, cfg())
    run.append({"kind": "epoch", "epoch": 1, "train_loss": 1.0})
    run.close()
    capsys.readouterr()
    assert main(["figures", str(run_root), "--out", str(tmp_path / "figs"), "--format", "pdf"]) != 0
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith("error: kaleido failed twice")
    assert "Traceback" not in err_lines[0]
