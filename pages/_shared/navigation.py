"""The app's pages and the one way into them: app.py's `st.navigation`, whatever URL a visit starts at.

A folder named `pages/` beside app.py puts Streamlit in its legacy folder mode until the process
first calls `st.navigation`: on a fresh server whose first request is a page's URL (a bookmark of
/train), Streamlit runs pages/train.py by itself, without app.py (no sidebar, every pages/*.py
listed as a page). So a page script draws itself through `run_page`: run by the app's navigation,
it draws; run by itself, it runs the app instead, whose `st.navigation` ends the legacy mode (for
the whole process, as Streamlit documents) and runs the same page, sidebar first, in this same
script run. No rerun and no switch of page is needed, so the widgets keep their state.
"""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import streamlit as st

from pages._shared.sidebar import sidebar

PAGES_DIR = Path(__file__).resolve().parent.parent
# A file, not a Material icon: those come from Google's font servers, which an offline classroom lacks.
ICON = PAGES_DIR.parent / "assets" / "icon.png"  # 16 of the demo model's conv1 kernels

# True while the app's navigation runs a page (per script thread: each session runs in its own).
_in_navigation: ContextVar[bool] = ContextVar("in_navigation", default=False)


@dataclass(frozen=True)
class PageFile:
    file: str               # in pages/; its stem is the page's URL path (/train)
    title: str
    icon: str
    default: bool = False


PAGES = (
    PageFile("home.py", "Home", ":material/home:", default=True),
    PageFile("train.py", "Train", ":material/model_training:"),
    PageFile("predict.py", "Predict", ":material/image_search:"),
    PageFile("explain.py", "Explain", ":material/visibility:"),
    PageFile("evaluate.py", "Evaluate", ":material/fact_check:"),
    PageFile("compare.py", "Compare", ":material/compare:"),
)


def run_app() -> None:
    """app.py: the page settings, the navigation, the sidebar, then the page the URL names."""
    st.set_page_config(page_title="AlexNet Lab", page_icon=str(ICON), layout="wide")
    navigation = st.navigation([st.Page(PAGES_DIR / p.file, title=p.title, icon=p.icon, default=p.default)
                                for p in PAGES])
    sidebar()
    entered = _in_navigation.set(True)
    try:
        navigation.run()
    finally:
        _in_navigation.reset(entered)


def run_page(draw: Callable[[], None]) -> None:
    """The last line of a page script: draw the page inside the app's navigation, else run the app."""
    if _in_navigation.get():
        draw()
    else:
        run_app()
