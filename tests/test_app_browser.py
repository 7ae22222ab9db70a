"""Real-browser test of app mode: the guided tour as a Voilà dashboard in headless Chromium, offline.

Voilà serves the repository's notebooks; the tour's data are prepared beforehand in a
temporary runs folder (as a loaded pack would be), so the page renders without
training. Every request that is not for the local server is blocked and recorded:
the page must render, the training panel's Start must train, and its figure must
gain the new runs' curves, with nothing fetched from the network.
"""
from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

import pytest
from browser_util import CHROMIUM, CHROMIUM_ARGS
from browser_util import wait_for as _wait

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"

pytestmark = pytest.mark.browser

_FIGURE_JS = """
() => {
  const panel = document.querySelector('.wb-training-panel');
  if (!panel) return null;
  const gd = panel.querySelector('.wb-figure .js-plotly-plot') || panel.querySelector('.js-plotly-plot.wb-figure');
  if (!gd || !gd.data) return {rendered: false, traces: []};
  const len = v => (v == null ? 0 : (v.length !== undefined ? v.length : 0));
  return {rendered: true, drawn: panel.querySelectorAll('.js-plotly-plot g.trace').length,
          traces: gd.data.map(t => ({name: t.name || '', n: len(t.x),
                                     last: len(t.y) ? Number(Array.from(t.y)[len(t.y) - 1]).toFixed(6) : null}))};
}
"""




@pytest.mark.timeout(600)
def test_guided_tour_in_app_mode_start_updates_the_figure_offline(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found")
    from playwright.sync_api import sync_playwright

    from workbench.app.server import serve
    from workbench.app.tour import TourSettings, prepare

    runs = tmp_path / "runs"
    prepare(runs, TourSettings(epochs=2, craft_epochs=2, count=64), log=None)  # what the page will find
    env = {"WORKBENCH_EPOCHS": "2", "WORKBENCH_COUNT": "64", "WORKBENCH_RUNS": str(runs), "OMP_NUM_THREADS": "1",
           "WORKBENCH_ESTIMATE": "0", "JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrt"), "IPYTHONDIR": str(tmp_path / "ipy")}
    external: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(env=env, log=tmp_path / "voila.log") as srv, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            def route(r):
                url = r.request.url
                host = urllib.parse.urlsplit(url).hostname
                if url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
                    r.continue_()
                else:
                    external.append(url)
                    r.abort()

            page.route("**/*", route)
            events: list[str] = []
            page.on("console", lambda m: events.append(f"console {m.type}: {m.text}"[:300]))
            page.on("framenavigated", lambda f: events.append(f"navigated {f.url[:120]}"))
            page.on("crash", lambda p: events.append("page crashed"))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)[:300]))
            page.on("websocket", lambda ws: ws.on("close", lambda w: events.append(f"websocket closed {w.url[:80]}")))
            page.goto(srv.notebook_url("10_guided_tour.ipynb"), wait_until="domcontentloaded", timeout=300_000)
            panel = page.locator(".wb-training-panel").first
            panel.wait_for(state="visible", timeout=300_000)
            assert "Guided tour" in page.title() or page.locator("h1", has_text="Guided tour").count()
            # code is hidden: no input areas, no source text
            assert page.locator(".jp-InputArea-editor").count() == 0
            assert "prepare(RUNS)" not in page.content()
            before = _wait(lambda: (lambda s: s if s and s["rendered"] and len(s["traces"]) >= 2 else None)(
                page.evaluate(_FIGURE_JS)), 120, "the pack's curves in the training figure")
            # a different seed, typed like a user, so the new runs' curves differ from the loaded ones
            seed_box = panel.locator(".wb-seed input")
            seed_box.fill("1")
            seed_box.press("Enter")
            time.sleep(1.0)
            old = {(t["name"], t["n"], t["last"]) for t in before["traces"]}

            def new_curves():
                s = page.evaluate(_FIGURE_JS)
                seen.append(s)
                fresh = [t for t in (s or {}).get("traces", []) if (t["name"], t["n"], t["last"]) not in old]
                return fresh or None

            panel.locator("button.wb-start").click()
            seen: list = []
            try:
                _wait(new_curves, 300, "new runs' curves after Start")
            except AssertionError as e:
                page.screenshot(path=str(ARTIFACTS / "app-guided-tour-failure.png"), full_page=False)
                raise AssertionError(f"before {before}, last seen {seen[-1:]}\n" + "\n".join(events[-10:])) from e
            status = panel.locator(".wb-status")
            _wait(lambda: "Done" in status.inner_text(), 300, "the runs to finish")
            assert status.inner_text().count("finished") == 2
            # the new runs' epoch curves end with both epochs, the loaded runs' curves stay
            fresh = _wait(
                lambda: (lambda f: f if f and sum(t["n"] == 2 and "·" in t["name"] for t in f) >= 6 else None)(
                    new_curves()), 60, "the final redraw")
            after = seen[-1]
            assert old <= {(t["name"], t["n"], t["last"]) for t in after["traces"]}, "the loaded runs' curves vanished"
            assert all(t["n"] >= 1 for t in fresh)
            page.screenshot(path=str(ARTIFACTS / "app-guided-tour.png"), full_page=False)
            # every figure's front end initialised (anywidget gives each 2 s; the shared plotly module URL)
            assert not [e for e in errors if "Failed to initialize" in e], errors
        finally:
            browser.close()
    assert external == [], f"the app fetched from the network: {external}"
    trained = [p for p in runs.iterdir() if p.is_dir() and (p / "status.json").is_file()]
    assert len(trained) >= 6  # 4 prepared + SGD and SAM from Start
