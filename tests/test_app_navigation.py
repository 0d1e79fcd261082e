"""The app's navigation in Streamlit's AppTest: every page opens through app.py, with the sidebar app.py draws.

A folder named pages/ puts Streamlit in its legacy folder mode until the process first calls
st.navigation, and AppTest starts every run in that mode: each run here is the case of a
bookmarked page opened on a fresh server, which Streamlit would run without app.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pages._shared.navigation import PAGES

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "app.py"
TITLES = {"home.py": "AlexNet Lab", "train.py": "Train", "predict.py": "Predict", "explain.py": "Explain",
          "evaluate.py": "Evaluate", "compare.py": "Compare"}


@pytest.fixture
def env(monkeypatch, mini_dir, runs_dir):
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    return runs_dir


def check_page(at: AppTest, file: str) -> None:
    """No exception, the page's own title, and app.py's sidebar: device, dataset in use, runs folder."""
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == [TITLES[file]]
    sidebar = "\n".join(c.value for c in at.sidebar.caption)
    assert "**Device:**" in sidebar and "**Dataset:** CIFAR-10 subset (6,102 images)" in sidebar, sidebar
    assert "**Runs:**" in sidebar, sidebar


def test_the_pages_are_the_page_scripts_and_only_they():
    """Streamlit's legacy folder mode lists every pages/*.py as a page: the shared modules lie below, in a package."""
    assert sorted(p.name for p in (REPO / "pages").glob("*.py")) == sorted(TITLES) == sorted(p.file for p in PAGES)


@pytest.mark.parametrize("file", list(TITLES))
def test_a_page_opened_by_its_url_first_runs_through_app_py(env, file):
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.switch_page(f"pages/{file}")  # before any run: the first request of a session names the page
    at.run()
    check_page(at, file)


def test_every_run_and_every_page_switch_keeps_the_sidebar(env):
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.run()
    check_page(at, "home.py")
    for file in ["train.py", "predict.py", "explain.py", "compare.py", "home.py"]:
        at.switch_page(f"pages/{file}").run()
        check_page(at, file)
        at.run()  # the same page again
        check_page(at, file)


def test_widgets_keep_their_values_across_runs(env, mini_dir):
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.switch_page("pages/train.py").run()
    at.number_input(key="train.epochs").set_value(3).run()
    at.sidebar.text_input(key="data_dir").set_value(str(mini_dir)).run()
    at.run()
    check_page(at, "train.py")
    assert at.number_input(key="train.epochs").value == 3
    assert at.sidebar.text_input(key="data_dir").value == str(mini_dir)


def test_the_home_page_links_every_other_page(env):
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.run()
    others = [p for p in PAGES if not p.default]
    row = [link.proto for link in at.get("page_link")][:len(others)]   # the row under the introduction comes first
    assert [(link.label, link.page) for link in row] == [(p.title, p.file.removesuffix(".py")) for p in others]
