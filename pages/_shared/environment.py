"""Where compared runs came from: their environments side by side, and a warning when they differ.

Not a page (`navigation.PAGES` lists the pages). The record and the comparison are `alexnet.provenance`'s.
"""
from __future__ import annotations

import streamlit as st

from alexnet import provenance
from alexnet import runs as run_records


def draw_environment(chosen: list[run_records.Run]) -> None:
    summaries = {r.name: provenance.summary(provenance.sessions(r.path)) for r in chosen}
    recorded = {name: s for name, s in summaries.items() if s}
    if len(chosen) > 1:
        text = provenance.warning(provenance.differences(summaries), [n for n, s in summaries.items() if not s])
        if text:
            st.warning(text, icon=":material/difference:")
    if not recorded:
        return
    with st.expander("Where the runs came from: software, hardware, code and data"):
        st.dataframe([{"environment": label, **{name: s.get(field, "–") for name, s in recorded.items()}}
                      for field, label in provenance.FIELDS.items()], hide_index=True)
        st.caption("Recorded by each run's training process when it started (and at each resume: an arrow marks "
                   "a value a resume changed). The data's fingerprint hashes its labels and pixels.")
