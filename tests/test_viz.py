"""Figure builders are pure and carry the run data; export works or explains itself."""
from __future__ import annotations

import re

import pandas as pd
import plotly.graph_objects as go
import pytest

from workbench.viz import (
    CurveData,
    ExportError,
    apply_theme,
    curve_series,
    export_figure,
    static_export_available,
    training_curves,
)


def fake_run(name, n=5, offset=0.0):
    ep = pd.DataFrame({"epoch": range(1, n + 1), "step": [10 * i for i in range(1, n + 1)],
                       **{f"{s}_loss": [1.0 / (i + 1) + offset for i in range(n)] for s in ("train", "val", "test")},
                       **{f"{s}_acc": [i / n for i in range(n)] for s in ("train", "val", "test")}})
    st = pd.DataFrame({"step": range(1, 10 * n + 1), "epoch": [s / 10 for s in range(1, 10 * n + 1)],
                       "loss": [1.0] * (10 * n), "acc": [0.5] * (10 * n)})
    return CurveData(name=name, epochs=ep, steps=st, key=name)


def test_builder_is_pure_and_carries_the_data():
    runs = [fake_run("SGD"), fake_run("SAM", offset=0.1)]
    f1 = training_curves(runs, per_step=True)
    f2 = training_curves(runs, per_step=True)
    assert f1.to_json() == f2.to_json()
    assert len(f1.data) == 2 * 2 * 4  # runs × metrics × (3 splits + per-step)
    sam_val_loss = [t for t in f1.data if t.name == "SAM · validation" and t.xaxis == "x"][0]
    assert list(sam_val_loss.y) == pytest.approx([1.0 / (i + 1) + 0.1 for i in range(5)])
    assert len({t.uid for t in f1.data}) == len(f1.data)
    assert all(t.uid.isalnum() for t in f1.data)  # plotly.js uses uids in CSS selectors


def test_options_and_errors():
    runs = [fake_run("A")]
    f = training_curves(runs, metrics=("loss",), splits=("train",), log_y=True, x="step")
    assert len(f.data) == 1 and f.layout.yaxis.type == "log" and list(f.data[0].x) == [10, 20, 30, 40, 50]
    with pytest.raises(ValueError, match="metric"):
        curve_series(runs, metrics=("f1",))
    with pytest.raises(ValueError, match="split"):
        curve_series(runs, splits=("dev",))
    with pytest.raises(ValueError, match="theme"):
        apply_theme(go.Figure(), "neon")
    empty = training_curves([])
    assert len(empty.data) == 0


def test_paper_theme():
    f = training_curves([fake_run("A")], theme="paper")
    assert f.layout.font.family.startswith("Times") and f.layout.font.size == 9
    assert f.layout.width == int(6.75 * 96)


def test_export_html(tmp_path):
    p = export_figure(training_curves([fake_run("A")]), tmp_path / "f", format="html")
    text = p.read_text()
    assert p.name == "f.html" and "plotly" in text and "A \\u00b7 train" in text
    # plotly.js is shared: one local plotly.min.js next to the HTML files, nothing from a CDN
    assert 'src="plotly.min.js"' in text and (tmp_path / "plotly.min.js").is_file() and "cdn.plot.ly" not in text
    with pytest.raises(ValueError, match="format"):
        export_figure(go.Figure(), tmp_path / "f.gif")


def test_static_export_without_chrome_explains(tmp_path, monkeypatch):
    import workbench.viz.export as ex

    monkeypatch.setattr(ex, "find_chrome", lambda: None)
    with pytest.raises(ExportError, match="apt-get install chromium"):
        export_figure(go.Figure(), tmp_path / "f.png")


@pytest.mark.skipif(not static_export_available()[0], reason=static_export_available()[1] or "ok")
@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG"), ("svg", b"<svg"), ("pdf", b"%PDF")])
def test_static_export_with_kaleido(tmp_path, fmt, magic):
    p = export_figure(training_curves([fake_run("A")]), tmp_path / f"f.{fmt}", theme="paper")
    head = p.read_bytes()[:400]
    assert magic in head


@pytest.mark.skipif(not static_export_available()[0], reason=static_export_available()[1] or "ok")
def test_png_has_the_requested_pixel_size(tmp_path):
    import struct

    def png_size(p):
        head = p.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        return struct.unpack(">II", head[16:24])

    fig = training_curves([fake_run("A")])
    assert png_size(export_figure(fig, tmp_path / "a.png", width=800, height=500, scale=1)) == (800, 500)
    assert png_size(export_figure(fig, tmp_path / "b.png", width_in=3.25, height_in=2.0, dpi=300,
                                  theme="paper")) == (975, 600)
    pdf = export_figure(fig, tmp_path / "c.pdf", width_in=3.25, height_in=2.0, theme="paper")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    box = re.search(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)", pdf.read_bytes())
    assert box and float(box[1]) == pytest.approx(3.25 * 72, rel=0.01)  # the page is 3.25 in, not 3.25 in x scale
    assert float(box[2]) == pytest.approx(2.0 * 72, rel=0.01)
    svg = export_figure(fig, tmp_path / "d.svg", width_in=3.25, height_in=2.0, theme="paper").read_text()
    assert svg.lstrip().startswith("<svg") and 'width="312"' in svg  # 3.25 in x 96 px/in
