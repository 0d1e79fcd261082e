"""What several pages share: the sidebar, the settings it holds, and the per-process caches.

Not a page itself (app.py lists the pages). Cached objects are shared by every session of
the server, so nothing here hands out an object that a caller may change in place.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import streamlit as st
import torch

from alexnet import data as datasets
from alexnet import jobs
from alexnet import runs as run_records
from alexnet.checkpoints import load_model
from alexnet.train import device_label, pick_device

DATA_KEY = "data_dir"


def data_dir() -> str | None:
    """The dataset folder named in the app's setting, else None (environment, usual places, sample)."""
    return st.session_state.get(DATA_KEY) or None


def runs_root() -> Path:
    return run_records.runs_root()


@st.cache_data(ttl=30, show_spinner=False)
def dataset_source(named: str | None) -> datasets.DatasetSource | str:
    """The resolved dataset, or the message that says why there is none."""
    try:
        return datasets.resolve_dataset(named)
    except datasets.DatasetMissing as err:
        return str(err)


def current_source() -> datasets.DatasetSource | None:
    source = dataset_source(data_dir() or os.environ.get(datasets.ENV_VAR))
    return source if isinstance(source, datasets.DatasetSource) else None


@st.cache_resource(show_spinner="Reading the dataset...", max_entries=2)
def load_dataset(source: datasets.DatasetSource) -> datasets.Cifar10:
    return datasets.load_cifar10(source)


@st.cache_resource(show_spinner="Loading the model...", max_entries=8)
def cached_model(path: str, modified: float, variant: str | None = None, norm: str | None = None) -> torch.nn.Module:
    """A model in eval mode, shared by all sessions: never change it in place. `modified` keys the cache."""
    return load_model(path, variant, norm, device=pick_device("auto"))


def model_from_file(path: Path, variant: str | None = None, norm: str | None = None) -> torch.nn.Module:
    return cached_model(str(path), path.stat().st_mtime, variant, norm)


def sidebar() -> None:
    with st.sidebar:
        device = pick_device("auto")
        st.caption(f"**Device:** {device_label(device)}")
        source = dataset_source(data_dir() or os.environ.get(datasets.ENV_VAR))
        if isinstance(source, datasets.DatasetSource):
            st.caption(f"**Dataset:** {source.label}  \n`{source.path}`")
        else:
            st.caption("**Dataset:** missing")
            st.warning(source)
        st.caption(f"**Runs:** `{runs_root().resolve()}`")
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
        on_finished=dataset_source.clear)  # the sidebar's next look finds the new folder


def background_download(key: str, label: str, help: str | None, progress: Callable[[], dict],
                        start: Callable[[], object], running_text: str, finished_text: str | None,
                        on_finished: Callable[[], None] | None = None) -> None:
    """A download button for a background process, then its progress (`progress()` reads its status).

    The button is off while a download lives, so a second click cannot start a second writer of the same
    file; a download that died reads as failed (its progress function says so), never as a frozen bar.
    """
    state = progress()
    running = state["state"] == "running"
    if st.button(label, key=key, disabled=running, icon=":material/download:",
                 help="A download is running" if running else help):
        try:
            start()
        except OSError as err:  # the target folder cannot be created or written
            st.error(f"The download cannot start: {err}")
            return
        st.rerun()  # draw the button off and the progress bar now
    if running:
        _download_progress(progress, running_text, on_finished)
    elif state["state"] == "failed":
        st.error(f"The last download failed: {state['reason']}")
    elif state["state"] == "finished" and finished_text:
        st.success(finished_text)


@st.fragment(run_every="1s")
def _download_progress(progress: Callable[[], dict], text: str, on_finished: Callable[[], None] | None) -> None:
    """The progress bar of a running download; when it ends, the whole app reruns to show the outcome."""
    state = progress()
    if state["state"] == "running":
        st.progress(state["fraction"], text=f"{text}: {state['fraction']:.0%}")
        return
    if state["state"] == "finished" and on_finished is not None:
        on_finished()
    st.rerun(scope="app")


def _route_through_app() -> None:
    """On a fresh server, a page opened by its own URL (a bookmark of /train) is run by Streamlit's
    legacy pages/-folder mode, without app.py: no sidebar, every file of pages/ listed. Switch the
    server to app.py's st.navigation and rerun, which then opens the same page through app.py."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_route_through_app()
