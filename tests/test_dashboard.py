"""The comparison dashboard, end to end in a real headless browser: Debian's Chromium driven by
Playwright (installed by ./install.sh; no browser is downloaded). The page loads, the two-run
comparison renders from the runs' saved views, choosing another run changes the plots'
data, and the console stays free of errors. A screenshot is saved (``tmp_path``, and
``$ERASUS_SCREENSHOT_DIR`` when set)."""
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from erasus.experiments.config_run import run_unlearn
    from erasus.experiments.configs import resolve_config

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name in ("scrub", "negative_gradient", "wga"):
        cfg = resolve_config({"task": {"name": "digits", "forget_class": 3, "cache_dir": str(root / "cache")},
                              "strategy": {"name": name}})
        out[name] = run_unlearn(cfg, str(root / "runs" / name), progress=False)
    return root / "runs", out


def _browser_or_reason():
    if not Path(CHROMIUM).exists():
        return None, ("Debian's chromium is not installed (./install.sh installs it when run as root: "
                      "apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        return None, "the playwright package is not installed (pip install -e '.[dev]')"
    return CHROMIUM, ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(runs):
    import uvicorn

    from erasus.visualization.dashboard import create_app

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app([runs[0]]), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "the dashboard server did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(timeout=10)


def test_the_api_serves_every_run_with_its_views(server, runs):
    import json
    import urllib.error
    import urllib.request

    get = lambda path: urllib.request.urlopen(server + path, timeout=30).read().decode()  # noqa: E731
    listing = json.loads(get("/api/runs"))
    assert [r["label"].split(": ", 1)[1].split(" (")[0] for r in listing] == sorted(runs[1])
    one = json.loads(get("/api/runs/0"))
    assert one["views"]["per_class"]["test"]["classes"] == list(range(10))
    assert one["verification"]["verdict"] == runs[1][one["name"]]["verdict"]
    with pytest.raises(urllib.error.HTTPError, match="404"):
        get("/api/runs/99")
    assert len(get("/plotly.min.js")) > 1_000_000  # plotly's bundle, served locally


def test_the_dashboard_renders_and_a_selection_changes_the_plots(server, runs, tmp_path):
    exe, why = _browser_or_reason()
    if exe is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            pytest.fail(f"{why}: ./install.sh should have installed it on this machine")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, chromium_sandbox=False, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "/")
        page.wait_for_function("document.body.dataset.rendered === '0,1,test'", timeout=30_000)
        # every plot drew, with data
        n_plots = page.evaluate("document.querySelectorAll('.js-plotly-plot').length")
        assert n_plots == 7
        verdicts = page.eval_on_selector_all("[data-verdict]", "els => els.map(e => e.dataset.verdict)")
        names = sorted(runs[1])
        assert verdicts == [runs[1][names[0]]["verdict"], runs[1][names[1]]["verdict"]]
        # the per-class bars show run B's unlearned accuracy as saved
        b_test = runs[1][names[1]]
        shown = page.evaluate("document.getElementById('per-class').data[1].y")
        saved = __import__("json").loads((runs[0] / names[1] / "views.json").read_text())
        want = saved["per_class"]["test"]["accuracy"]["unlearned"]
        assert want[3] is None and shown[3] is None  # the class forgotten is left out of the test data
        assert [v for v in shown if v is not None] == pytest.approx([100 * v for v in want if v is not None])
        assert b_test["verdict"] in ("PASS", "FAIL", "PARTIAL", "INCONCLUSIVE")
        before = page.evaluate("document.getElementById('embed-b').data[0].x")
        # choose another run B: the plots follow
        page.select_option("#run-b", "2")
        page.wait_for_function("document.body.dataset.rendered === '0,2,test'", timeout=30_000)
        after = page.evaluate("document.getElementById('embed-b').data[0].x")
        assert after != before
        page.select_option("#split", "forget")
        page.wait_for_function("document.body.dataset.rendered === '0,2,forget'", timeout=30_000)
        forget_bars = page.evaluate("document.getElementById('per-class').data[0].y")
        assert sum(v is not None for v in forget_bars) == 1  # class forgetting: only class 3 is in the forget set
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 50_000
        if os.environ.get("ERASUS_SCREENSHOT_DIR"):
            shutil.copy(shot, Path(os.environ["ERASUS_SCREENSHOT_DIR"]) / "dashboard.png")
        browser.close()
    assert not errors, errors
