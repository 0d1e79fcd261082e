"""The Train page in a real browser: start a short run, watch its curve grow, stop, resume, see it finish.

Screenshots of each stage go to test-artifacts/train-*.png. The run is tiny (512 images of the
mini subset, batch 64, one CPU thread) but real: a separate training process, the page only
polls its run folder.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout

from conftest import only, screenshot, wait_for_app

from alexnet import jobs
from alexnet.config import TrainConfig
from alexnet.runs import RunWriter, atomic_write_json, load_run

RUN = "browser-demo"
# Points of the loss chart's training curve, as plotly holds them in the page, once the chart shows run `name`
# (the page keys its zoom state, plotly's uirevision, by the run): -1 while it shows another run or none, as it
# does for a moment after Start, while the page still draws the run it showed before.
TRAIN_POINTS = """name => {
  const gd = document.querySelector('.st-key-train-chart-loss .js-plotly-plot');
  if (!gd || !gd.data || !gd.layout || gd.layout.uirevision !== name) return -1;
  return gd.data.filter(t => t.name === 'train (per step)').reduce((n, t) => n + t.x.length, 0);
}"""
PROGRESS = "() => { const bar = document.querySelector('[data-testid=stProgress]'); return bar ? bar.innerText : ''; }"


def set_number(page, key: str, value) -> None:
    box = only(page, f".st-key-train-{key} input")
    box.fill(str(value))
    box.press("Enter")
    wait_for_app(page)


def click(page, key: str) -> None:
    """Click a keyed button (Streamlit keeps a hidden copy of a button with help text for measuring)."""
    page.locator(f".st-key-train-{key} button:visible").click()


def snap(page, name: str) -> None:
    """A screenshot of the whole page: Streamlit scrolls inside its main block, so grow the window for it."""
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": 2200})
    page.wait_for_timeout(300)  # let plotly resize to the new window
    screenshot(page, name)
    page.set_viewport_size(size)


def points_above(page, count: int, timeout: float) -> int:
    """Wait until the chart shows more than `count` points of this test's run; returns how many."""
    return page.wait_for_function(f"n => {{ const c = ({TRAIN_POINTS})('{RUN}'); return c > n ? c : false; }}",
                                  arg=count, timeout=timeout).json_value()


def points_equal(page, count: int, timeout: float) -> None:
    page.wait_for_function(f"n => ({TRAIN_POINTS})('{RUN}') === n", arg=count, timeout=timeout)


def record(runs: Path, name: str) -> tuple[str, int]:
    """The run folder's state and how many step events it holds, read as the app reads it."""
    run = load_run(runs / name)
    return run.state, len(run.steps())


def open_the_form_for_a_short_run(page, base: str) -> None:
    """From the entry page to the Train page's form, filled in for a 4-epoch run of 512 images at one thread."""
    page.goto(base)  # the entry page first: app.py's navigation, not Streamlit's folder listing
    page.locator("[data-testid=stSidebar]").get_by_text("Device:").wait_for()
    page.locator("[data-testid=stSidebarNavLink]").filter(has_text=re.compile(r"Train$")).click()
    wait_for_app(page)
    page.get_by_role("heading", name="Train").wait_for()
    assert page.locator("[data-testid=stException]").count() == 0
    wait_for_app(page)
    form = page.locator("[data-testid=stExpander] details", has_text="Start a new run")
    if form.get_attribute("open") is None:  # collapsed when the server already holds runs
        form.locator("summary").click()
    page.locator(".st-key-train-preset").wait_for()
    page.locator(".st-key-train-preset button[aria-label=Open]").click()
    page.get_by_role("option", name="fast CPU demo (cifar variant)").click()
    wait_for_app(page)
    set_number(page, "epochs", 4)
    set_number(page, "batch_size", 64)
    page.locator(".st-key-train-advanced label").click()
    wait_for_app(page)
    set_number(page, "max_train_images", 512)
    set_number(page, "log_every", 2)
    set_number(page, "threads", 1)
    name_box = only(page, ".st-key-train-name input")
    name_box.fill(RUN)
    name_box.press("Enter")
    wait_for_app(page)
    # The page's summary of the form shows that every field reached the server.
    page.get_by_text("512 training images, 8 steps per epoch, 32 steps in all").wait_for(timeout=30_000)
    wait_for_app(page)


def test_start_watch_stop_resume_finish(app_server, page):
    open_the_form_for_a_short_run(page, app_server)
    snap(page, "train-1-form")

    click(page, "start")
    first = points_above(page, 0, timeout=90_000)
    snap(page, "train-2-first-points")
    points_above(page, first, timeout=60_000)
    # While it trains, the progress bar names the step and the speed (read as the page polls, not in mid-redraw).
    page.wait_for_function(f"() => /step .* images\\/s/.test(({PROGRESS})())", timeout=10_000)
    snap(page, "train-3-growing")

    click(page, "stop")
    # The chosen run's status box (other tests' runs may share the server's table)
    page.get_by_text("stopped after").first.wait_for(timeout=60_000)
    state, steps_at_stop = record(app_server.runs, RUN)
    assert state == "stopped" and 0 < steps_at_stop < 16, (state, steps_at_stop)  # stopped before the end
    points_equal(page, steps_at_stop, timeout=10_000)
    snap(page, "train-4-stopped")

    click(page, "resume")
    points_above(page, steps_at_stop, timeout=90_000)
    snap(page, "train-5-resumed")
    page.get_by_text("finished: test accuracy").first.wait_for(timeout=120_000)
    wait_for_app(page)
    state, steps = record(app_server.runs, RUN)
    assert state == "finished" and steps >= 16  # 4 epochs x 8 steps, a point every 2 (and one at the stop)
    assert load_run(app_server.runs / RUN).steps()[-1]["global_step"] == 32
    points_equal(page, steps, timeout=10_000)
    assert page.get_by_text("test accuracy", exact=False).first.is_visible()
    assert page.locator("[data-testid=stException]").count() == 0
    snap(page, "train-6-finished")

    # Train again with one knob changed: the finished run's settings go back into the form.
    page.reload()
    wait_for_app(page)
    page.locator(".st-key-train-run input").wait_for()
    click(page, "copy")
    page.get_by_text(f"The form holds the settings of {RUN}").wait_for(timeout=30_000)
    wait_for_app(page)
    assert only(page, ".st-key-train-epochs input").input_value() == "4"
    assert only(page, ".st-key-train-batch_size input").input_value() == "64"
    assert page.locator("[data-testid=stException]").count() == 0


def test_opening_advanced_settings_leaves_no_ghost_copy_of_the_fields_below(app_server, page, mini_dir):
    """While a rerun moves a widget, Streamlit shows its old copy until the run ends: the form keeps
    the advanced fields in one block, so the run name below them never moves and never shows twice.
    A run trains meanwhile, as when a user sets up the next one: the live view's polling and the busy
    CPU make each rerun long enough for a ghost to be seen."""
    config = TrainConfig(variant="cifar", norm="bn", epochs=2, batch_size=64, max_train_images=1024, threads=1,
                         data_dir=str(mini_dir), log_every=1)
    name = jobs.start(config, "ghost-check-background", app_server.runs)
    page.goto(app_server + "/train")
    wait_for_app(page)
    form = page.locator("[data-testid=stExpander] details", has_text="Start a new run")
    if form.get_attribute("open") is None:
        form.locator("summary").click()
    counts = []
    for _ in range(4):  # open, close, open, close
        page.locator(".st-key-train-advanced label").click()
        for _ in range(20):
            counts.append(page.evaluate("() => document.querySelectorAll('.st-key-train-name input').length"))
            page.wait_for_timeout(50)
        wait_for_app(page)
    jobs.stop(name, app_server.runs)
    assert set(counts) == {1}, counts


def test_new_run_like_this_is_never_lost_while_the_live_view_polls(app_server, page):
    """The live view reruns every 1.5 s while a run trains; a poll that arrives while the click's own rerun is
    under way preempts it. Written as `if st.button(...)`, an action then never happened (4 clicks of 10 were
    lost on a run with a long record, whose redraw takes long); as a callback it always does."""
    config = TrainConfig(variant="cifar", norm="bn", epochs=4, batch_size=64).to_dict()
    live = RunWriter.create(app_server.runs, "long-record", config)
    steps = 20_000  # a long run's record: each redraw of its chart takes a while, as on a busy machine
    with open(live.path / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"event": "start", "global_step": 0, "epoch": 0, "steps_per_epoch": steps, "epochs": 4,
                            "train_images": 512, "device": "CPU", "dataset": "test", "time": 0}) + "\n")
        f.writelines(json.dumps({"event": "step", "epoch": i / steps, "global_step": i, "loss": 2.0, "acc": 0.1,
                                 "lr": 0.01, "images_per_s": 100.0, "time": i / 10}) + "\n" for i in range(1, steps))
    # Marked as trained by this (live) process, so the page polls it; there is no training process to stop.
    atomic_write_json(live.path / "status.json", {"state": "running", "pid": os.getpid(), "epoch": 0,
                                                  "created": time.time()})
    page.goto(app_server + "/train")
    for attempt in range(6):
        page.reload()
        page.locator(".st-key-train-copy button:visible").wait_for(timeout=60_000)
        page.wait_for_timeout(300 + 250 * attempt)  # clicks at different moments of the polling cycle
        click(page, "copy")
        try:
            page.get_by_text("The form holds the settings of long-record").wait_for(timeout=10_000)
        except PlaywrightTimeout:  # rare (once in a full browser pass): keep what the server said, for the next look
            log = app_server.log.read_text(errors="replace").splitlines()[-20:]
            raise AssertionError(f"attempt {attempt}: the click showed nothing in 10 s; the server's log ends:\n"
                                 + "\n".join(log)) from None
    assert page.locator("[data-testid=stException]").count() == 0
