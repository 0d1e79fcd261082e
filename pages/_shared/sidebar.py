"""The sidebar app.py draws on every page: the device, the dataset in use (and its folder setting), the runs folder."""
from __future__ import annotations

import streamlit as st

from alexnet import data as datasets
from alexnet import jobs
from alexnet import runs as run_records
from alexnet.train import device_label, pick_device
from pages._shared.dataset import DATA_KEY, dataset_in_use, forget_resolved
from pages._shared.downloads import background_download


def sidebar() -> None:
    with st.sidebar:
        st.caption(f"**Device:** {device_label(pick_device('auto'))}")
        source = dataset_in_use()
        if isinstance(source, datasets.DatasetSource):
            st.caption(f"**Dataset:** {source.label}  \n`{source.path}`")
        else:
            st.caption("**Dataset:** missing")
            st.warning(source)
        st.caption(f"**Runs:** `{run_records.runs_root().resolve()}`")
        full = isinstance(source, datasets.DatasetSource) and source.kind == "cifar10"
        with st.expander("Dataset folder", expanded=not isinstance(source, datasets.DatasetSource)):
            st.text_input("Folder holding cifar-10-batches-py", key=DATA_KEY,
                          placeholder="empty: $ALEXNET_DATA, ~/.cache/alexnet-lab, or the embedded sample",
                          help="A folder you name wins over a CIFAR-10 found in the usual places and over the "
                               "small sample that ships with the app.")
            if not full:
                download_panel()


def download_panel() -> None:
    """Fetch the full CIFAR-10 (online) in a background process, where resolve_dataset finds it next time."""
    background_download(
        "download_cifar10", f"Download CIFAR-10 (163 MB) to {datasets.download_target()}", None,
        datasets.download_progress, jobs.start_download, "Downloading CIFAR-10",
        f"CIFAR-10 is downloaded in {datasets.download_target()}: the app uses it when no folder is named.",
        on_finished=forget_resolved)  # the sidebar's next look finds the new folder
