"""The controls above the curves of the Train page and of Compare, and the notes under them: one set for both.

The x axis (epoch, step, training seconds, wall clock) applies to loss, accuracy and the learning
rate alike; the training curve per step or per epoch, the smoothing and "log y" to loss and
accuracy; "log rate" to the learning rate. Each page keeps its own choices under its own keys.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from alexnet import charts

X_LABELS = {**charts.X_AXES, "time": "time (s)"}  # the x axes' titles, shorter where a button must be short


@dataclass(frozen=True)
class CurveChoice:
    x: str             # a key of charts.X_AXES
    per: str           # the training curve: "step" or "epoch"
    smoothing: float   # 0 to 0.99
    log_y: bool        # loss and accuracy on a log scale
    log_rate: bool     # the learning rate on a log scale


def curve_controls(prefix: str, per: str = "step", smoothing: float = 0.0) -> CurveChoice:
    """The row of controls, under keys `{prefix}.x`, `.per`, `.smoothing`, `.log_y`, `.log_lr`; `per` and
    `smoothing` are the page's defaults."""
    a, b, c, d = st.columns([3.6, 2, 2.4, 1.2])  # the x axis's four buttons and both checkboxes (stacked) in full
    x = a.segmented_control("x axis", list(X_LABELS), key=f"{prefix}.x", default="epoch", required=True,
                            persist_state="session", format_func=X_LABELS.get,
                            help="time: training seconds of each run (evaluation and waiting in the queue left "
                                 "out). wall clock: the date and time each point was logged, pauses included.")
    per = b.segmented_control("Training curve", ["step", "epoch"], key=f"{prefix}.per", default=per, required=True,
                              format_func=lambda p: f"per {p}", persist_state="session")
    smoothing = c.slider("Smoothing", 0.0, 0.99, smoothing, step=0.01, key=f"{prefix}.smoothing",
                         persist_state="session",
                         help="Debiased exponential moving average, as TensorBoard's; the raw curve stays faint "
                              "behind.")
    log_y = d.checkbox("log y", key=f"{prefix}.log_y", persist_state="session", help="Loss and accuracy on a log "
                                                                                     "scale.")
    log_rate = d.checkbox("log rate", key=f"{prefix}.log_lr", persist_state="session",
                          help="The learning rate on a log scale.")
    return CurveChoice(x, per, smoothing, log_y, log_rate)


def off_axis_note(prefix: str, runs: dict[str, list[dict]], x: str) -> None:
    """Name the runs whose points the chosen axis leaves out (records from before the wall clock was logged),
    in a container keyed `{prefix}.off_axis`."""
    missing = charts.runs_off_axis(runs, x)
    if missing:
        st.container(key=f"{prefix}.off_axis").caption(
            f"Not on the {charts.X_AXES[x]} axis: the points of **{', '.join(missing)}** logged before wall-clock "
            "times were recorded (older records lack them). The epoch, step and time axes show every point.")
