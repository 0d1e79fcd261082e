"""Train: pick a recipe, start a run that outlives the tab, watch it live, stop, resume, delete.

Training runs in its own process (`alexnet.jobs`); this page only hands a config to
`jobs.start` (the form, `pages/_shared/train_form.py`) and reads run folders (the live view,
`pages/_shared/run_view.py`). Closing or reloading the tab, or a second tab, never touches a
run, and the live view is a fragment that polls the run record while a run is queued or
training and stops polling once none is.
"""
from __future__ import annotations

import streamlit as st

from alexnet import data as datasets
from alexnet import runs as run_records
from alexnet.runs import ACTIVE_STATES as ACTIVE
from pages._shared.dataset import dataset_in_use
from pages._shared.navigation import run_page
from pages._shared.run_view import live_view
from pages._shared.sharing import import_box
from pages._shared.train_form import draw_form

REFRESH_SECONDS = 1.5


def page() -> None:
    st.title("Train")
    st.caption("Each run trains in its own process and writes its own folder: close or reload this tab, open a second "
               "one, the run goes on. Each device has its queue: a run started while another trains on its device "
               "waits for it.")
    notice = st.session_state.pop("train.notice", None)
    if notice:
        {"success": st.success, "info": st.info}.get(notice[0], st.error)(notice[1])
    source = dataset_in_use()
    if not isinstance(source, datasets.DatasetSource):
        st.warning(f"**No dataset.** {source}  \nNext step: name a folder holding `cifar-10-batches-py` under "
                   "**Dataset folder** in the sidebar, or run `python -m alexnet download` on a machine that is online.",
                   icon=":material/dataset:")
    root = run_records.runs_root()
    existing = run_records.list_runs(root)
    active_now = frozenset(r.name for r in existing if r.state in ACTIVE)
    if "train.form_open" not in st.session_state:
        st.session_state["train.form_open"] = not existing
    with st.expander("Start a new run", key="train.form_open", on_change="rerun", icon=":material/add_circle:"):
        draw_form(source)
    st.fragment(live_view, run_every=REFRESH_SECONDS if active_now else None)(root, active_now)
    import_box(root, "train.import", on_imported=show_run)


def show_run(name: str) -> None:
    """After an import, the live view shows the imported run."""
    st.session_state["train.run"] = name


run_page(page)
