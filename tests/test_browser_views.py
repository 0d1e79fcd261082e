"""Issue 16's views in a real browser: the Explain page's attribution methods with their sanity check and what
the norm does, on the demo model; and the shipped experiment that a first visit to Compare shows."""
from __future__ import annotations

from playwright.sync_api import expect

from conftest import nav_link, screenshot, wait_for_app

PLOT_TRACES = """selector => { const gd = document.querySelector(selector + ' .js-plotly-plot');
  return gd && gd.data ? gd.data.length : 0; }"""


def traces_of(page, selector: str, timeout: float = 60_000) -> int:
    """How many traces the plotly figure under `selector` holds, once it holds any."""
    page.wait_for_function(f"() => ({PLOT_TRACES})({selector!r}) > 0", timeout=timeout)
    return page.evaluate(PLOT_TRACES, selector)


def open_from_home(page, base: str, title: str) -> None:
    """Home first, then the page by its sidebar link, as a new user gets there (a tall view shows it all)."""
    page.set_viewport_size({"width": 1400, "height": 2400})
    page.goto(base)
    wait_for_app(page)
    nav_link(page, title).click()
    wait_for_app(page)


def test_explain_methods_with_their_sanity_check_and_what_the_norm_does(app_server, page):
    open_from_home(page, app_server, "Explain")

    page.get_by_role("tab", name="Methods and sanity check").click()
    assert traces_of(page, ".st-key-methods_map") >= 2               # the picture and the map over it
    # the randomisation cascade: the trained model's map, then one per layer randomised from the top, in a row
    assert traces_of(page, ".st-key-methods_check", timeout=120_000) == 1
    titles = page.evaluate("() => (document.querySelector('.st-key-methods_check .js-plotly-plot').layout"
                           ".annotations || []).map(a => a.text).join(' | ')")
    assert titles.startswith("trained") and titles.count("random to") >= 2, titles
    assert page.locator("[data-testid=stException]").count() == 0
    screenshot(page, "explain-methods")

    page.get_by_role("tab", name="What the norm does").click()
    wait_for_app(page)
    page.get_by_text("before and after the norm", exact=False).first.wait_for(timeout=60_000)
    assert traces_of(page, '[class*="st-key-norm_stats_"]') >= 2     # channel means and spreads, and the diagonal
    assert page.locator("[data-testid=stException]").count() == 0
    screenshot(page, "explain-norm")


def test_a_first_visit_to_compare_shows_the_shipped_experiment(app_server, page):
    open_from_home(page, app_server, "Compare")
    assert page.locator("[role=tab][aria-selected=true]").inner_text() == "LRN versus BN experiment"
    page.get_by_text("Shipped with the app:").wait_for(timeout=60_000)  # the runs tab names them in lower case
    label = page.locator(".st-key-exp-shipped-label")
    # the label draws in parts (its command last): read it once the whole of it is there
    for part in ("Data:", "Hardware:", "python -m alexnet", "experiment"):
        expect(label).to_contain_text(part, timeout=30_000)
    verdict = page.locator("[data-testid=stAlert]", has_text="Verdict.").first
    verdict.wait_for(timeout=60_000)
    assert "BN" in verdict.inner_text() and "LRN" in verdict.inner_text()
    assert page.get_by_role("button", name="Run it here").is_visible()
    assert page.locator("[data-testid=stException]").count() == 0
    screenshot(page, "compare-shipped")
