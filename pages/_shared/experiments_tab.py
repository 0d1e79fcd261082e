"""The Compare page's LRN-versus-BN tab: the form that starts an experiment, and one experiment at a time, the
user's own (`experiment_view`) or one shipped with the app (`shipped_view`), chosen from one list."""
from __future__ import annotations

import streamlit as st

from alexnet import experiment, shipped
from alexnet.history import LRN_STUDIES
from pages._shared.compare_runs import REFRESH
from pages._shared.experiment_view import experiment_form, experiment_view
from pages._shared.shipped_view import shipped_view


def draw_introduction() -> None:
    (lrn_a, none_a), (lrn_b, none_b) = LRN_STUDIES
    st.markdown(
        "Does the paper's **local response normalisation** (LRN) matter, or is **batch norm** (BN) the change that "
        "counts? This experiment trains pairs of runs that share the variant, data split and order, augmentation, "
        "schedule and initial weights (one seed fixes them all) and differ only in the norm after conv1 and conv2 "
        "(and, with the default recipe, in the peak rate the same range test found for each norm first), over "
        "several seeds, then weighs the difference against the spread between seeds.")
    st.caption(f"For context: two student studies at 224x224 over 10 epochs found LRN against no norm "
               f"{lrn_a:.2%} vs {none_a:.2%} and {lrn_b:.2%} vs {none_b:.2%}: LRN changes little.")


def experiment_tab(root, found_shipped: list[shipped.Shipped]) -> None:
    draw_introduction()
    notice = st.session_state.pop("exp.notice", None)
    if notice:
        (st.success if notice[0] == "success" else st.error)(notice[1])
    found = experiment.list_experiments(root)
    with st.expander("Start a paired experiment", expanded=not found and not found_shipped, icon=":material/science:"):
        experiment_form()
    if not found and not found_shipped:
        st.info("No experiments yet: start one above, or from a terminal with `python -m alexnet experiment`.")
        return
    names = [e.name for e in found]
    by_title = {item.title: item for item in found_shipped}
    if st.session_state.get("exp.chosen") not in [*names, *by_title]:
        st.session_state["exp.chosen"] = (names or list(by_title))[0]
    name = st.selectbox("Experiment", [*names, *by_title], key="exp.chosen",
                        help="Your own experiments, newest first, then those shipped with the app (read-only).")
    if name in by_title:
        shipped_view(by_title[name], found_shipped)
        return
    active = experiment.active_runs(found[names.index(name)], root)
    st.fragment(experiment_view, run_every=REFRESH if active else None)(root, name, active)
