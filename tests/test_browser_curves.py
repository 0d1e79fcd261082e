"""The learning-rate chart on the Train page and the settings against test accuracy on Compare, in a real browser.

Three real runs, trained in this process (`conftest.curve_runs`), are copied into the server's runs folder:
two on the mini subset, one on the embedded sample with its conv layers at half the rate. The test
reads what plotly holds in the page (`gd.data`, `gd.layout`) and what it drew (the parallel
coordinates' axis titles). Screenshots go to test-artifacts/curves-*.png.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from conftest import screenshot, wait_for_app

from alexnet import compare
from alexnet import runs as run_records

FIGURE = """key => {
  const gd = document.querySelector(`.st-key-${key} .js-plotly-plot`);
  if (!gd || !gd.data || !gd.layout) return null;
  return {traces: gd.data.map(t => ({type: t.type, name: t.name, x: t.x ? Array.from(t.x) : null,
                                     y: t.y ? Array.from(t.y) : null,
                                     dimensions: (t.dimensions || []).map(d => [d.label, Array.from(d.values)])})),
          xaxis: gd.layout.xaxis ? gd.layout.xaxis.type : null, yaxis: gd.layout.yaxis ? gd.layout.yaxis.type : null};
}"""


def figure(page, key: str, until: str = "f => f && f.traces.length > 0") -> dict:
    """The chart under `key` once `until` (a JS test of FIGURE's answer) holds."""
    return page.wait_for_function(f"() => {{ const f = ({FIGURE})('{key}'); return ({until})(f) && f; }}",
                                  timeout=30_000).json_value()


def open_page(page, base: str, path: str) -> None:
    page.goto(f"{base}/{path}")
    wait_for_app(page)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=stSidebarNavLink]').length > 1")
    wait_for_app(page)


def test_rate_chart_on_train_and_settings_against_accuracy_on_compare(app_server, page, curve_runs):
    root = Path(app_server.runs)
    shutil.copytree(curve_runs, root, dirs_exist_ok=True)
    runs = {r.name: r for r in run_records.list_runs(root, with_metrics=True)}

    # Train: the newest run (the one on the embedded sample) is shown; its rate beside loss and accuracy.
    open_page(page, app_server, "train")
    run = runs["sample-lrn"]
    rate = figure(page, "train-chart-lr")
    (line,) = rate["traces"]
    assert line["y"] == [e["lr"] for e in run.steps()] and line["x"] == [e["epoch"] for e in run.steps()]
    assert page.get_by_text("sample-lrn (0.5×)", exact=False).first.is_visible()
    screenshot(page, "curves-1-train-rate")
    page.locator(".st-key-train-x").get_by_text("wall clock").click()
    wait_for_app(page)
    page.locator(".st-key-train-log_lr label").click()
    wait_for_app(page)
    rate = figure(page, "train-chart-lr", "f => f && f.xaxis === 'date' && f.yaxis === 'log'")
    assert len(rate["traces"][0]["x"]) == len(run.steps())
    assert figure(page, "train-chart-loss", "f => f && f.xaxis === 'date'")["yaxis"] != "log"
    assert page.locator("[data-testid=stException]").count() == 0
    screenshot(page, "curves-2-train-wall-clock")

    # Compare: the two newest runs chosen; their settings against test accuracy as parallel coordinates, then
    # every finished run's.
    open_page(page, app_server, "compare")
    chosen = [runs["sample-lrn"], runs["mini-bn-s1"]]
    rates = {t["name"]: t["y"] for t in figure(page, "compare-chart-lr")["traces"]}
    assert rates == {r.name: [e["lr"] for e in r.steps()] for r in chosen}
    plot = compare.settings_against_accuracy(chosen)
    (lines,) = figure(page, "compare-settings")["traces"]
    assert lines["type"] == "parcoords"
    assert [d[0] for d in lines["dimensions"]] == [a.key for a in plot.axes] + ["test accuracy"]
    assert lines["dimensions"][-1][1] == plot.accuracy
    titles = page.locator(".st-key-compare-settings .axis-title").all_text_contents()  # drawn, not only held
    assert "test accuracy" in titles and "norm" in titles, titles
    page.locator(".st-key-compare-settings_all label").click()
    wait_for_app(page)
    (lines,) = figure(page, "compare-settings", "f => f && f.traces[0].dimensions.length > 0 && "
                                                "f.traces[0].dimensions[0][1].length === 3")["traces"]
    everyone = compare.settings_against_accuracy(list(runs.values()))
    assert sorted(lines["dimensions"][-1][1]) == sorted(everyone.accuracy)
    assert page.locator("[data-testid=stException]").count() == 0
    page.locator(".st-key-compare-settings").scroll_into_view_if_needed()
    screenshot(page, "curves-3-compare-settings")
