"""The Train form's settings, kept in session state under `train.<field>`: filled from a preset or a run, read back
as a `TrainConfig` with everything wrong with it, and started as a run.

The functions that write the widgets' values run where Streamlit allows it: before the form is
drawn, or in a widget's callback.
"""
from __future__ import annotations

import time
from dataclasses import fields

import streamlit as st

from alexnet import data as datasets
from alexnet import imagenet, jobs, presets, queues
from alexnet import runs as run_records
from alexnet.config import TrainConfig, with_variant
from pages._shared import devices
from pages._shared.dataset import dataset_in_use, job_data_dir

FORM_FIELDS = [f.name for f in fields(TrainConfig) if f.name not in ("data_dir", "processes")]  # processes: device


def key(field: str) -> str:
    return f"train.{field}"


def fill_form(config: TrainConfig) -> None:
    """Write a config into the form's widgets (before they are drawn, i.e. at the top or in a callback)."""
    for name in FORM_FIELDS:
        value = getattr(config, name)
        st.session_state[key(name)] = ", ".join(map(str, value)) if name == "milestones" else value
    st.session_state[key("device")] = devices.option_for(config.device, config.processes)
    st.session_state["train.milestones_ref"] = (list(config.milestones), config.epochs)
    st.session_state["train.rate_variant"] = config.variant


def variant_changed() -> None:
    """Variant box callback: an SGD rate left at the previous variant's default follows the variant
    (`config.with_variant` says why: rates do not carry across widths); a rate someone typed stays."""
    ss = st.session_state
    before = TrainConfig(variant=ss.get("train.rate_variant", "cifar"), optimizer=ss[key("optimizer")],
                         lr=ss[key("lr")])
    after = with_variant(before, ss[key("variant")])
    if after.lr != before.lr:
        ss[key("lr")] = after.lr
        ss["train.notice"] = ("info", f"Learning rate set to {after.lr:g}, the {after.variant} variant's default "
                                      f"for SGD ({before.lr:g} is the {before.variant} variant's).")
    ss["train.rate_variant"] = after.variant


def apply_preset() -> None:
    fill_form(presets.get(st.session_state[key("preset")]).config())
    st.session_state.pop("train.copied_from", None)


def copy_settings(run_name: str, run_config: dict) -> None:
    """Button callback: the form takes a run's settings, to change a knob and train again.

    The button lies in the live view's fragment and the form outside it, so the callback asks for a rerun of
    the whole page (`st.rerun()` in a callback: queued with this interaction, so a poll cannot drop it)."""
    known = {name: value for name, value in run_config.items() if name in FORM_FIELDS or name == "processes"}
    try:
        config = TrainConfig.from_dict(known)  # keys a newer or older version lacks keep their defaults
    except (TypeError, ValueError) as err:
        st.session_state["train.notice"] = ("error", f"Could not read the settings of {run_name}: {err}")
    else:
        fill_form(config)
        st.session_state[key("preset")] = None  # the form no longer holds a preset: its box must not say it does
        st.session_state["train.name"] = ""
        st.session_state["train.form_open"] = True
        st.session_state["train.copied_from"] = run_name
    st.rerun()


def parse_milestones(text: str) -> list[int]:
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"milestones must be whole epochs separated by commas, got {text!r}") from None


def milestones_edited() -> None:
    try:
        st.session_state["train.milestones_ref"] = (parse_milestones(st.session_state[key("milestones")]),
                                                    st.session_state[key("epochs")])
    except ValueError:
        pass  # the problem is listed under the form


def epochs_edited() -> None:
    """Milestones keep their place in the run: 5,8 of 10 epochs become 1,2 of 2."""
    reference, reference_epochs = st.session_state.get("train.milestones_ref", ([], 0))
    scaled = presets.scale_milestones(reference, reference_epochs, st.session_state[key("epochs")])
    st.session_state[key("milestones")] = ", ".join(map(str, scaled))


def form_config() -> tuple[TrainConfig, list[str]]:
    """The config the form describes and everything wrong with it (empty list: it can start)."""
    values = {name: st.session_state[key(name)] for name in FORM_FIELDS}
    problems = []
    try:
        values["milestones"] = parse_milestones(values["milestones"])
    except ValueError as err:
        problems.append(str(err))
        values["milestones"] = []
    if values["schedule"] != "step":
        values["milestones"] = []
    source = dataset_in_use()
    values["data_dir"] = job_data_dir(source)  # the job trains on what the sidebar shows
    values["pretrained_path"] = (values["pretrained_path"] or "").strip() or None
    values["device"], values["processes"] = devices.to_config(values["device"])
    config = TrainConfig.from_dict(values)
    if config.variant == "imagenet":
        try:
            imagenet.weights_file(config.pretrained_path)
        except imagenet.WeightsMissing as err:
            problems.append(str(err))
    if not isinstance(source, datasets.DatasetSource):
        problems.append(f"no dataset: {source}")
    try:
        queues.request(config.device, config.processes)  # what this machine's devices can train
    except ValueError as err:
        problems.append(str(err))
    name = st.session_state.get("train.name", "").strip()
    if name:
        try:
            run_records.check_name(name)
        except ValueError as err:
            problems.append(str(err))
    return config, problems + config.problems()


def default_name(config: TrainConfig) -> str:
    return f"{config.variant}-{config.norm}-{config.optimizer}"


def start_run() -> None:
    """Button callback: start the form's config as a new run under a free name, once."""
    config, problems = form_config()
    if problems:
        st.session_state["train.notice"] = ("error", "Not started: " + "; ".join(problems))
        return
    root = run_records.runs_root()
    base = st.session_state.get("train.name", "").strip() or default_name(config)
    fingerprint = (base, repr(config.to_dict()))
    last = st.session_state.get("train.last_start")
    if last and last[0] == fingerprint and time.monotonic() - last[1] < 5:
        return  # a double click: the first click has started this run already
    try:
        name = _start_under_a_free_name(config, base, root)
    except (ValueError, OSError, RuntimeError) as err:
        st.session_state["train.notice"] = ("error", f"Not started: {err}")
        return
    st.session_state["train.last_start"] = (fingerprint, time.monotonic())
    st.session_state.pop("train.copied_from", None)
    st.session_state["train.run"] = name
    st.session_state["train.notice"] = ("success", f"Started **{name}**. It trains in its own process: you can "
                                                   "close this tab and come back.")


def _start_under_a_free_name(config: TrainConfig, base: str, root) -> str:
    for _ in range(5):  # another tab may take the same free name between our look and our create
        try:
            return jobs.start(config, run_records.unique_name(root, base), root)
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run name near {base!r}")
