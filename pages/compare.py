"""Compare: runs side by side (curves, table, differing config, confusion, images), and the LRN-versus-BN experiment;
the experiments shipped with the app (`alexnet.shipped`) shown read-only beside the user's own.

Reads run folders only (`alexnet.runs`); the table, the differing keys, the seed bands and the
verdict come from `alexnet.compare` and `alexnet.experiment`. Views of runs that are still
training are fragments that poll every 2 s, and stop polling once nothing trains: the runs
(`pages/_shared/compare_runs.py`, `test_set_view.py`) and the experiment (`experiment_view.py`).
"""
from __future__ import annotations

import streamlit as st

from alexnet import experiment, shipped
from alexnet import runs as run_records
from alexnet.runs import ACTIVE_STATES as ACTIVE
from pages._shared.compare_runs import REFRESH, compare_view
from pages._shared.experiments_tab import experiment_tab
from pages._shared.navigation import run_page
from pages._shared.sharing import import_box
from pages._shared.test_set_view import draw_side_by_side


def add_to_comparison(name: str) -> None:
    """After an import, the imported run joins the chosen ones."""
    st.session_state["compare.runs"] = [*st.session_state.get("compare.runs", []), name]


def runs_tab(root, all_runs: list[run_records.Run], shipped_runs: dict[str, run_records.Run]) -> None:
    """The user's runs, and after them the shipped ones (read-only, under marked names)."""
    with st.expander("Import a shared run", icon=":material/move_to_inbox:"):
        import_box(root, "compare.import", on_imported=add_to_comparison)
    if not all_runs:
        st.info("No runs of your own yet. Train some on the **Train** page, or start the LRN-versus-BN experiment "
                "(the other tab), then come back to compare them"
                + (": meanwhile, the runs shipped with the app are listed." if shipped_runs else "."),
                icon=":material/info:")
        st.page_link("pages/train.py", label="Go to the Train page", icon=":material/model_training:")
        if not shipped_runs:
            return
    by_name = {**{r.name: r for r in all_runs}, **shipped_runs}
    if "compare.runs" not in st.session_state:
        finished = [r.name for r in all_runs if r.state == "finished"]
        st.session_state["compare.runs"] = (finished or [r.name for r in all_runs] or list(shipped_runs))[:2]
    else:  # a run deleted elsewhere leaves the selection
        st.session_state["compare.runs"] = [n for n in st.session_state["compare.runs"] if n in by_name]
    # Names only: the browser keeps the label an option had when it was picked, so a state in it would go stale
    # (a run picked while training would read "running" for ever); the summary table shows each run's state.
    names = st.multiselect("Runs to compare", list(by_name), key="compare.runs", persist_state="session",
                           help="Finished, stopped or still training: a run in progress updates live. Runs marked "
                                "(shipped) came with the app: their records, read-only, without weights.")
    if not names:
        st.info("Pick two or more runs.")
        return
    if len(names) == 1:
        st.caption("One run chosen: pick another to compare.")
    active = frozenset(n for n in names if by_name[n].state in ACTIVE)
    st.fragment(compare_view, run_every=REFRESH if active else None)(root, tuple(names), active, shipped_runs)
    draw_side_by_side([by_name[n] for n in names])


def page() -> None:
    st.title("Compare")
    st.caption("Runs side by side, from their run folders: curves, a summary table, what their configs change, and "
               "where on the test set they differ. The second tab runs the LRN-versus-BN experiment.")
    root = run_records.runs_root()
    all_runs = run_records.list_runs(root)
    found_shipped = shipped.list_shipped()
    tabs = ["Runs side by side", "LRN versus BN experiment"]
    # A first visit to an empty runs folder opens on the shipped experiment; the choice holds for the session,
    # so starting a run of one's own does not move the page to the other tab.
    first = st.session_state.setdefault("compare.first_tab", tabs[1] if found_shipped and not all_runs and not
                                        experiment.list_experiments(root) else tabs[0])
    runs_view, experiment_section = st.tabs(tabs, default=first)
    with runs_view:
        runs_tab(root, all_runs, shipped.shipped_runs(found_shipped))
    with experiment_section:
        experiment_tab(root, found_shipped)


run_page(page)
