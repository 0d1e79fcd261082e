"""A tuned experiment's search on the Compare page, beside the verdict: its progress while it runs, each norm's
chosen peak rate, and both range tests on one figure (`alexnet.experiment`'s record)."""
from __future__ import annotations

import streamlit as st

from alexnet import charts, experiment


def continue_experiment(root, name: str) -> None:
    """Button callback: start the experiment's conductor again after its process was killed."""
    try:
        experiment.resume(root, name)
    except (OSError, ValueError) as err:
        st.session_state["exp.notice"] = ("error", f"Could not continue {name}: {err}")


def search_view(root, summary: experiment.ExperimentSummary) -> None:
    search, record = summary.search, summary.experiment
    if summary.searching:
        st.progress(experiment.search_progress(search), text=experiment.search_news(search))
    elif search["state"] == "stopped":
        st.button("Continue the experiment", key="exp.continue", on_click=continue_experiment,
                  args=(root, record.name), icon=":material/play_arrow:",
                  help="The range tests not yet recorded, then the runs not yet queued.")
    rows = experiment.search_rows(record)
    if not rows:
        return
    left, right = st.columns([2, 3])
    left.markdown("**The chosen peak rates** (one range test per norm, the same for both)")
    left.container(key="exp.rates").dataframe(rows, hide_index=True, column_config={
        "suggested peak rate": st.column_config.NumberColumn(format="%.3g"),
        "lowest loss at": st.column_config.NumberColumn(format="%.3g"),
        "lowest smoothed loss": st.column_config.NumberColumn(format="%.3f"),
        "images": st.column_config.NumberColumn(format="localized")})
    curves = {experiment.NORM_SHORT_LABELS[n]: r for n, r in search.get("results", {}).items()}
    right.plotly_chart(charts.range_test_figure(curves, colors=charts.NORM_COLORS, height=340),
                       key="exp.range_tests", config=charts.png_config(f"{record.name}-range-tests"))
