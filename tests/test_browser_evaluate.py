"""The Evaluate page and the Explain page's norm view in a real browser, on the demo model and the mini subset:
the background pass ends by itself and the page shows its result, a mistake opens in Explain, the filters'
top images appear, and the norm view draws both statistics panels."""
from __future__ import annotations

import re

from conftest import metric_value, nav_link, screenshot, wait_for_app

BACKGROUND = 180_000   # ms: a background process imports torch, then passes over 1,017 test images


def no_exception(page) -> None:
    assert page.locator("[data-testid=stException]").count() == 0


def test_evaluate_the_demo_then_explain_its_surest_mistake(app_server, page):
    page.set_viewport_size({"width": 1400, "height": 2400})
    page.goto(app_server)
    wait_for_app(page)
    nav_link(page, "Evaluate").click()
    page.get_by_role("button", name=re.compile("Explain")).first.wait_for(timeout=BACKGROUND)   # no reload needed
    wait_for_app(page)
    no_exception(page)
    assert metric_value(page, "Test accuracy") == "66.7%"                  # the model card's 678 of 1,017
    matrix = page.locator("[data-testid=stPlotlyChart]").filter(has=page.locator("g.heatmaplayer, g.hm"))
    matrix.first.wait_for()                                             # plotly draws after the script has run
    assert matrix.count() == 1
    caption = page.locator("[data-testid=stImage]").first.inner_text()   # "#513 truck → airplane 99%"
    answered = re.search(r"→ (\w+)", caption).group(1)
    screenshot(page, "evaluate-demo")

    page.get_by_role("button", name=re.compile("Explain")).first.click()
    page.locator("h1", has_text="Explain").wait_for()
    wait_for_app(page)
    checked = page.locator("[data-testid=stRadio] input:checked").first
    assert checked.evaluate("e => e.closest('label').innerText").strip() == "The Predict page's image"
    assert metric_value(page, "Predicted") == answered
    page.get_by_role("tab", name="What the norm does").click()
    wait_for_app(page)
    page.get_by_text("channel standard deviation").first.wait_for()
    assert page.get_by_text(re.compile("BN, batch normalisation")).count() >= 1
    no_exception(page)
    screenshot(page, "explain-norm")


def test_what_each_filter_responds_to(app_server, page):
    page.set_viewport_size({"width": 1400, "height": 2400})
    page.goto(app_server + "/evaluate")
    wait_for_app(page)
    page.get_by_role("tab", name="What each filter responds to").click()
    page.get_by_text(re.compile(r"The nine test images that excite conv1 channel 0 most")).wait_for(timeout=BACKGROUND)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=stImage] img').length === 9")
    wait_for_app(page)
    no_exception(page)
    screenshot(page, "evaluate-filters")
