"""Evaluate: a model's test-set evaluation and what each of its filters responds to.

The model and its test set, and the background analysis, are `pages/_shared/analysis_subject.py`;
the tabs are `evaluate_view.py` (confusion, per-class figures, mistakes) and `filters_view.py`
(each channel's top nine test images, pictures that excite a channel or a class).
"""
from __future__ import annotations

import streamlit as st

from pages._shared.analysis_subject import pick
from pages._shared.evaluate_view import EVALUATION, FILTERS, draw_evaluation
from pages._shared.filters_view import draw_filters
from pages._shared.navigation import run_page


def page() -> None:
    st.title("Evaluate")
    st.caption("How a model does on the test set, class by class, where it is wrong and most sure of itself, and "
               "what its filters respond to. For a finished run or the demo model.")
    chosen = pick("evaluate_model")
    if chosen is None:
        return
    # Lazy: only the open tab runs, so opening the page does not start the filters' pass over the test set.
    evaluation_tab, filters_tab = st.tabs([EVALUATION, FILTERS], key="evaluate_view", on_change="rerun")
    if evaluation_tab.open:
        with evaluation_tab:
            draw_evaluation(chosen)
    if filters_tab.open:
        with filters_tab:
            draw_filters(chosen)


run_page(page)
