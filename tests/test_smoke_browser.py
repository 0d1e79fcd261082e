"""The app opens in a real browser: every page of the navigation renders without an exception."""
from conftest import screenshot, wait_for_app


def test_every_page_opens_in_chromium(app_server, page):
    page.goto(app_server)
    page.wait_for_function("document.querySelectorAll('[data-testid=stSidebarNavLink]').length == 5",
                           timeout=60_000)
    wait_for_app(page)
    links = page.locator("[data-testid=stSidebarNavLink]")
    names = [links.nth(i).inner_text().strip() for i in range(links.count())]
    assert len(names) == 5, names
    for i, name in enumerate(names):
        page.locator("[data-testid=stSidebarNavLink]").nth(i).click()
        title = {"Home": "AlexNet Lab"}.get(name.split()[-1], name.split()[-1])
        page.wait_for_selector(f"h1:has-text('{title}')", timeout=60_000)
        wait_for_app(page)
        screenshot(page, f"smoke-{i}-{name.split()[-1].lower()}")
        assert page.locator("[data-testid=stException]").count() == 0, f"{name} page raised an exception"


def test_a_bookmarked_page_on_a_fresh_server_opens_through_app_py(tmp_path, mini_dir, browser):
    """Streamlit runs pages/x.py on its own (legacy folder mode) when the first visit of a fresh server is
    /x; pages.common routes it back through app.py's navigation, sidebar included."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import REPO, _free_port

    port = _free_port()
    env = {**os.environ, "ALEXNET_RUNS": str(tmp_path), "ALEXNET_DATA": str(mini_dir)}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                               "--server.port", str(port), "--server.address", "127.0.0.1"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/train")
        wait_for_app(page)
        page.wait_for_selector("text=Device:", timeout=60_000)
        links = page.locator("[data-testid=stSidebarNavLink]")
        names = [links.nth(i).inner_text().split()[-1] for i in range(links.count())]
        assert names == ["Home", "Train", "Predict", "Explain", "Compare"], names
        assert page.locator("h1", has_text="Train").count() == 1
        page.close()
    finally:
        server.terminate()
        server.wait(10)
