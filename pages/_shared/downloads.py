"""A download button for a background process, then its progress: CIFAR-10 in the sidebar, the ImageNet weights
in the model picker."""
from __future__ import annotations

from typing import Callable

import streamlit as st


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
