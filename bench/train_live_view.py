"""How fast the Train page shows a new run, and how far its live view trails the run record.

    python bench/train_live_view.py [--data DIR] [--seconds 40] [--runs N]

Starts `streamlit run app.py` on a free port with a fresh runs folder, opens the Train page in
Chromium, presses Start with the fast CPU demo preset, then samples every 50 ms both the run
record (metrics.jsonl, read with the app's own reader) and the points the browser's loss chart
holds. Prints, per run: seconds from the click to the process training, to the first step in
the record and to the first point on screen; and for every point k, the lag between the record
holding k steps and the page showing k points. Each run is stopped after `seconds`.
Say which machine a number comes from: the start-up part is mostly importing torch.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import SETTLED, start_app  # noqa: E402
from alexnet import jobs  # noqa: E402
from alexnet.runs import load_run  # noqa: E402

POINTS = """name => {
  const picked = document.querySelector('.st-key-train-run input');
  if (!picked || picked.value !== name) return 0;  // the live view still shows an older run
  const gd = document.querySelector('.st-key-train-chart-loss .js-plotly-plot');
  if (!gd || !gd.data) return 0;
  return gd.data.filter(t => t.name === 'train (per step)').reduce((n, t) => n + t.x.length, 0);
}"""


def settle(page) -> None:
    page.evaluate("() => { window.__idleSince = null; }")
    page.wait_for_function(SETTLED, timeout=60_000, polling=100)


def measure_one(page, url: str, runs: Path, seconds: float) -> dict:
    page.goto(url)
    page.locator("[data-testid=stSidebar]").get_by_text("Device:").wait_for()
    page.locator("[data-testid=stSidebarNavLink]").filter(has_text=re.compile(r"Train$")).click()
    page.get_by_role("heading", name="Train").wait_for()
    settle(page)
    form = page.locator("[data-testid=stExpander] details", has_text="Start a new run")
    if form.get_attribute("open") is None:
        form.locator("summary").click()
    page.get_by_text(re.compile(r"steps in all")).wait_for()
    settle(page)  # a click during a rerun can be lost to it
    before = {p.name for p in runs.iterdir()}

    page.locator(".st-key-train-start button:visible").click()  # the preset as it is: the fast CPU demo
    t0 = time.monotonic()
    while not (new := [p for p in runs.iterdir() if p.name not in before and (p / "config.json").exists()]):
        if time.monotonic() - t0 > 30:
            raise RuntimeError("pressing Start created no run folder")
        time.sleep(0.01)
    folder = new[0]
    name = folder.name
    running_at = None
    record_at: dict[int, float] = {}
    shown_at: dict[int, float] = {}
    while time.monotonic() - t0 < seconds:
        now = time.monotonic() - t0
        run = load_run(folder)
        if running_at is None and run.state == "running":
            running_at = now
        for k in range(len(record_at) + 1, len(run.steps()) + 1):
            record_at[k] = now
        shown = page.evaluate(POINTS, name)
        for k in range(len(shown_at) + 1, shown + 1):
            shown_at[k] = time.monotonic() - t0
        time.sleep(0.05)
    if not jobs.stop(name, runs):
        raise RuntimeError(f"{name} was not training after {seconds} s: {load_run(folder).status}")
    print(f"{name}: stopped after {seconds:.0f} s, state {jobs.wait(name, runs, timeout=120)}", file=sys.stderr)
    lags = [shown_at[k] - record_at[k] for k in shown_at if k in record_at]
    return {"running": running_at, "first_record": record_at.get(1), "first_shown": shown_at.get(1),
            "points": len(shown_at), "lags": lags}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar-10-mini"))
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    runs = Path(tempfile.mkdtemp(prefix="bench-runs-"))
    server, url = start_app(runs, Path(args.data))
    results = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"),
                                        args=["--no-sandbox", "--disable-gpu"])
            for i in range(args.runs):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                results.append(measure_one(page, url, runs, args.seconds))
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    print(f"fast CPU demo preset on {args.data}, {os.cpu_count()} CPUs, sampling every 50 ms")
    print(f"{'run':6} {'training (s)':>12} {'1st step in record (s)':>23} {'1st point on page (s)':>22} "
          f"{'points':>7} {'lag median (s)':>15} {'lag max (s)':>12}")
    for i, r in enumerate(results, 1):
        lags = r["lags"] or [float("nan")]
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"{i:<6} {fmt(r['running']):>12} {fmt(r['first_record']):>23} {fmt(r['first_shown']):>22} "
              f"{r['points']:>7} {statistics.median(lags):>15.2f} {max(lags):>12.2f}")


if __name__ == "__main__":
    main()
