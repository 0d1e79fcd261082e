"""The machine's devices as the pages offer and show them: the Train form's device choices, each device's queue,
and where an experiment's runs train.

Not a page (`navigation.PAGES` lists the pages). Which device a run takes and how runs wait for one is
`alexnet.queues`; this only draws it.
"""
from __future__ import annotations

import streamlit as st

from alexnet import queues
from alexnet import runs as run_records
from alexnet.config import device_choices, gpu_count

ALL_GPUS = "all-gpus"   # the form's choice for a data-parallel run over every GPU (device "cuda", one process each)


def device_options() -> list[str]:
    """The config's device choices (`config.device_choices`), and all GPUs at once where there are several."""
    choices = device_choices()
    return [*choices, ALL_GPUS] if gpu_count() > 1 else choices


def label(option: str) -> str:
    if option == ALL_GPUS:
        return f"all {gpu_count()} GPUs of this machine (data-parallel)"
    return {"auto": "auto (a free GPU, else MPS, else the CPU)", "cuda": "cuda (a free GPU)"}.get(option, option)


def to_config(option: str) -> tuple[str, int]:
    """The (device, processes) of a form choice: all GPUs is device cuda with one process a GPU."""
    return ("cuda", gpu_count()) if option == ALL_GPUS else (option, 1)


def option_for(device: str, processes: int) -> str:
    """The form choice nearest a config's device and processes: a data-parallel GPU run becomes all GPUs (the
    form offers no other), a data-parallel CPU run (the command line's) the CPU."""
    return ALL_GPUS if processes > 1 and device in ("auto", "cuda") else device


def where_runs_train() -> str:
    """Where runs on "auto" (an experiment's) train on this machine, in words: spread over its GPUs, else in turn."""
    devices = queues.machine_devices()[1:] or ["the CPU"]  # the GPUs, else MPS, else the CPU
    return f"spread over the free GPUs ({', '.join(devices)})" if len(devices) > 1 else \
        f"one after the other on {devices[0]}"


def draw_queues(root, all_runs: list[run_records.Run]) -> None:
    """One row a device: the run training there and the runs waiting for it."""
    rows = [{"device": q.device, "training": q.training or "–", "waiting": len(q.waiting),
             "queue": ", ".join(q.waiting)} for q in queues.device_queues(root, all_runs)]
    st.dataframe(rows, hide_index=True, column_config={
        "device": st.column_config.TextColumn(pinned=True),
        "waiting": st.column_config.NumberColumn(help="Runs waiting for this device, oldest first under queue."),
    })
    st.caption("Each device has its own queue: a run waits only for the device it trains on, and a run on "
               "auto takes the first GPU that is free.")
