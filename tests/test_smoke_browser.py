"""The app opens in a real browser: every page of the navigation renders without an exception."""
from conftest import screenshot, wait_for_app


def test_every_page_opens_in_chromium(app_server, page):
    page.goto(app_server)
    wait_for_app(page)
    links = page.locator("[data-testid=stSidebarNavLink]")
    names = [links.nth(i).inner_text().strip() for i in range(links.count())]
    assert len(names) == 5, names
    for i, name in enumerate(names):
        page.locator("[data-testid=stSidebarNavLink]").nth(i).click()
        wait_for_app(page)
        screenshot(page, f"smoke-{i}-{name.split()[-1].lower()}")
        assert page.locator("[data-testid=stException]").count() == 0, f"{name} page raised an exception"
