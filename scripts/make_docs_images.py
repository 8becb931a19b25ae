"""Regenerate the images under docs/img (shown in the README and the documentation) from real
runs: the default config with SCRUB, WGA and gradient ascent on the bundled Fashion-MNIST
subset, their plots from the saved runs, and a screenshot of the dashboard comparing two of
them (Debian's Chromium driven by Playwright).

    python scripts/make_docs_images.py            # a few minutes on a CPU; overwrites docs/img/*.png
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    import matplotlib.pyplot as plt
    import uvicorn

    from erasus.experiments.config_run import run_unlearn
    from erasus.experiments.configs import apply_overrides, load_config
    from erasus.visualization.dashboard import create_app
    from erasus.visualization.plots import save_figure
    from erasus.visualization.runs import load_run, run_figures

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = load_config(ROOT / "configs" / "default.yaml")
        for name in ("wga", "scrub", "gradient_ascent"):
            cfg = apply_overrides(base, [f"strategy.name={name}", f"task.cache_dir={tmp}/cache"])
            run_unlearn(cfg, f"{tmp}/runs/{name}", progress=False)
        run = load_run(f"{tmp}/runs/wga")
        for view, fname in (("attack", "loss_attack"), ("embeddings", "embeddings"), ("layers", "layers")):
            fig, _ = run_figures(run, (view,), method="tsne" if view == "embeddings" else "pca")[0]
            save_figure(fig, a.out / fname, overwrite=True)
            plt.close(fig)
        srv = uvicorn.Server(uvicorn.Config(create_app([f"{tmp}/runs"]), host="127.0.0.1", port=8765,
                                            log_level="warning"))
        threading.Thread(target=srv.run, daemon=True).start()
        while not srv.started:
            time.sleep(0.05)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=a.chromium, chromium_sandbox=False, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            page.goto("http://127.0.0.1:8765/")
            page.select_option("#run-a", "2")   # wga
            page.select_option("#run-b", "1")   # scrub
            page.wait_for_function("document.body.dataset.rendered === '2,1,test'")
            page.screenshot(path=str(a.out / "dashboard.png"), full_page=False)
            browser.close()
        srv.should_exit = True
    print(f"images written to {a.out}")


if __name__ == "__main__":
    main()
