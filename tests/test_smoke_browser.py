"""The app opens in a real browser: every page of the navigation renders without an exception."""
from conftest import screenshot, serve_app, wait_for_app


def test_every_page_opens_in_chromium_with_the_sidebar(app_server, page):
    page.goto(app_server)
    page.wait_for_function("document.querySelectorAll('[data-testid=stSidebarNavLink]').length == 6",
                           timeout=60_000)
    wait_for_app(page)
    links = page.locator("[data-testid=stSidebarNavLink]")
    names = [links.nth(i).inner_text().strip() for i in range(links.count())]
    assert len(names) == 6, names
    icon = page.locator("link[rel~=icon]").first.get_attribute("href")
    assert icon and "gstatic" not in icon and "googleapis" not in icon, icon  # served by the app: works offline
    sidebar = page.locator("[data-testid=stSidebar]")
    for i, name in enumerate(names):
        page.locator("[data-testid=stSidebarNavLink]").nth(i).click()
        title = {"Home": "AlexNet Lab"}.get(name.split()[-1], name.split()[-1])
        page.wait_for_selector(f"h1:has-text('{title}')", timeout=60_000)
        wait_for_app(page)
        screenshot(page, f"smoke-{i}-{name.split()[-1].lower()}")
        assert page.locator("[data-testid=stException]").count() == 0, f"{name} page raised an exception"
        text = sidebar.inner_text()  # app.py draws it on every page: device, dataset in use, runs folder
        assert "Device:" in text and "Dataset: CIFAR-10 subset (6,102 images)" in text and "Runs:" in text, text


def test_a_bookmarked_page_on_a_fresh_server_opens_through_app_py(tmp_path_factory, mini_dir, browser):
    """Streamlit runs pages/x.py on its own (legacy folder mode) when the first visit of a fresh server is
    /x; the page script runs the app instead (pages/_shared/navigation.py), whose st.navigation ends that mode and
    draws the page with the sidebar."""
    with serve_app(tmp_path_factory, "fresh-server", ALEXNET_DATA=str(mini_dir)) as url:
        page = browser.new_page()
        page.goto(f"{url}/train")
        wait_for_app(page)
        page.wait_for_selector("text=Device:", timeout=60_000)
        links = page.locator("[data-testid=stSidebarNavLink]")
        names = [links.nth(i).inner_text().split()[-1] for i in range(links.count())]
        assert names == ["Home", "Train", "Predict", "Explain", "Evaluate", "Compare"], names
        assert page.locator("h1", has_text="Train").count() == 1
        page.close()
