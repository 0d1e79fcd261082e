"""The Compare page in a real browser: two real runs' curves and table, the experiment's verdict, and a run
in progress whose curve grows on the open page.

The pair is a real LRN-versus-BN experiment trained in this process (256 images of the mini
subset, one epoch) into the server's runs folder. The run in progress replays, line by line,
the events of a real BN run (conftest's curve runs) into a folder marked as running, so the
test controls when each point arrives. Screenshots go to test-artifacts/compare-*.png.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from conftest import THREADS, screenshot, wait_for_app

from alexnet import experiment
from alexnet import runs as run_records
from alexnet.train import train

TRACES = """key => {
  const gd = document.querySelector(`.st-key-${key} .js-plotly-plot`);
  return gd && gd.data ? gd.data.map(t => [t.name, t.x.length]) : [];
}"""


def open_compare(page, base: str) -> None:
    """Open the Compare page by its URL, as a bookmark does, and check it came through app.py's navigation."""
    page.goto(base + "/compare")
    wait_for_app(page)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=stSidebarNavLink]').length === 6")
    wait_for_app(page)
    assert page.locator("[data-testid=stSidebarNavLink]", has_text="Compare").count() == 1


def traces(page, key: str) -> dict[str, int]:
    return dict(page.evaluate(TRACES, key))


def make_pair(root: Path, data) -> dict[str, run_records.Run]:
    # recipe "same": no range tests, as the page is what is tested
    plan = experiment.ExperimentPlan(seeds=1, epochs=1, max_train_images=256, batch_size=64, threads=THREADS,
                                     log_every=1, data_dir=str(data.source.path), recipe="same")

    def start(config, name, folder):
        writer = run_records.RunWriter.create(folder, name, config.to_dict())
        train(config, writer.path, data=data)
        return name

    record = experiment.launch(plan, root, name="browser-cmp", start=start)
    return {e["norm"]: run_records.load_run(root / e["run"]) for e in record.runs}


def test_compare_page_shows_both_runs_and_the_verdict(app_server, page, mini_data):
    root = Path(app_server.runs)
    runs = make_pair(root, mini_data)
    names = {r.name for r in runs.values()}
    open_compare(page, app_server)
    page.wait_for_function(f"() => ({TRACES})('compare-chart-acc').length > 0", timeout=60_000)
    for key in ("compare-chart-loss", "compare-chart-acc"):
        shown = traces(page, key)
        for name in names:
            assert shown[f"{name} · validation"] == 1 and shown[f"{name} · test"] == 1, shown
    table = page.locator(".st-key-compare-summary [data-testid=stDataFrame]")
    table.wait_for()
    cells = page.wait_for_function(  # the grid's accessible copy of its canvas, once it holds both rows
        "names => { const cells = [...document.querySelectorAll('.st-key-compare-summary [role=gridcell]')]"
        ".map(c => c.textContent); return names.every(n => cells.includes(n)) && cells; }",
        arg=sorted(names), timeout=30_000).json_value()
    for run in runs.values():  # raw numbers (the canvas shows two decimals); only the columns in view are there
        assert run.name in cells and repr(100 * run.result["best_val_acc"]) in cells, str(cells)
    assert page.get_by_text("Config keys that differ").first.is_visible()
    assert page.get_by_text("A right, B wrong", exact=False).first.is_visible()
    assert page.locator("[data-testid=stException]").count() == 0
    screenshot(page, "compare-1-runs")

    page.get_by_role("tab", name="LRN versus BN experiment").click()
    verdict = page.locator("[data-testid=stAlert]", has_text="Verdict.").first
    verdict.wait_for()
    assert "one run a side" in verdict.inner_text()
    page.wait_for_function("() => document.querySelector('.st-key-exp-band-acc .js-plotly-plot')")
    screenshot(page, "compare-2-experiment")


def test_a_run_in_progress_grows_on_the_open_page(app_server, page, curve_runs):
    root = Path(app_server.runs)
    source = run_records.load_run(shutil.copytree(curve_runs / "mini-bn-s0", root / "mini-bn-s0"))  # every step logged
    events = source.metrics
    first_steps = [i for i, e in enumerate(events) if e["event"] == "step"]
    live = root / "browser-cmp-live"
    live.mkdir()
    shutil.copy(source.path / "config.json", live / "config.json")
    run_records.atomic_write_json(live / "status.json", {"state": "running", "pid": os.getpid(), "epoch": 0,
                                                         "created": time.time()})
    with open(live / "metrics.jsonl", "w") as f:  # the start and the first two steps
        f.writelines(json.dumps(e) + "\n" for e in events[:first_steps[1] + 1])

    open_compare(page, app_server)
    box = page.locator(".st-key-compare-runs input")
    box.click()
    box.fill("browser-cmp-live")
    page.get_by_role("option", name="browser-cmp-live").click()
    page.keyboard.press("Escape")
    wait_for_app(page)
    page.locator(".st-key-compare-per").get_by_text("per step").click()
    wait_for_app(page)
    trace = "browser-cmp-live · train (per step)"
    page.wait_for_function(f"() => (new Map(({TRACES})('compare-chart-loss'))).get('{trace}') === 2", timeout=30_000)
    screenshot(page, "compare-3-live-2-steps")

    with open(live / "metrics.jsonl", "a") as f:  # the rest of the epoch arrives while the page is open
        f.writelines(json.dumps(e) + "\n" for e in events[first_steps[1] + 1:])
    steps = len(first_steps)
    page.wait_for_function(f"() => (new Map(({TRACES})('compare-chart-loss'))).get('{trace}') === {steps}",
                           timeout=30_000)
    assert traces(page, "compare-chart-loss")["browser-cmp-live · validation"] == 1
    screenshot(page, "compare-4-live-grown")
    assert page.locator("[data-testid=stException]").count() == 0
