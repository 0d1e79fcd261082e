"""Share a run: the Export button and the Import box of the Train and Compare pages.

Not a page (`navigation.PAGES` lists the pages). What goes into an archive, and every check an imported one
must pass, is `alexnet.archive`'s; this draws the two controls and says what happened.
"""
from __future__ import annotations

from typing import Callable

import streamlit as st

from alexnet import archive
from alexnet import runs as run_records


def export_button(run: run_records.Run, key: str, container=st) -> None:
    """A download of the run as one archive, built only when clicked (a weights file is megabytes)."""
    path = run.path
    container.download_button(
        "Export run", data=lambda: archive.export_run(path), file_name=archive.archive_name(run.name),
        mime="application/zip", key=key, on_click="ignore", icon=":material/ios_share:",
        help="The run's settings, curves, result, environment and weights as one .zip, for a colleague to import "
             "on the Train or Compare page of their AlexNet Lab (python -m alexnet import FILE does the same).")


def import_box(root, key: str, on_imported: Callable[[str], None] | None = None) -> None:
    """An upload box that imports a shared run archive once per upload, then says what became of it."""
    st.file_uploader("Import a shared run (.zip)", type=["zip"], key=key, on_change=_import,
                     args=(root, key, on_imported),
                     help="An archive written by Export. It is checked like any upload (size limits, known files "
                          "only, tensors only, nothing in it is run) and becomes a run you can view, compare and "
                          "explain; it cannot be resumed here.")
    notice = st.session_state.pop(f"{key}.notice", None)
    if notice:
        (st.success if notice[0] == "success" else st.error)(notice[1])


def _import(root, key: str, on_imported: Callable[[str], None] | None) -> None:
    upload = st.session_state.get(key)
    if upload is None:  # the box was cleared
        return
    try:
        name = archive.import_run(upload, root, filename=upload.name)
    except archive.ArchiveError as err:
        st.session_state[f"{key}.notice"] = ("error", f"Not imported: {err}")
        return
    st.session_state[f"{key}.notice"] = ("success", f"Imported **{name}** from {upload.name}.")
    if on_imported is not None:
        on_imported(name)
