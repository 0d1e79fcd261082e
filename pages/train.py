"""Train: pick a recipe, start a run that outlives the tab, watch it live, stop, resume, delete.

Training runs in its own process (`alexnet.jobs`); this page only hands a config to
`jobs.start` and reads run folders. Closing or reloading the tab, or a second tab, never
touches a run, and the live view is a fragment that polls the run record while a run is
queued or training and stops polling once none is.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, fields
from datetime import datetime

import streamlit as st

from alexnet import charts, imagenet, jobs, presets, queues
from alexnet import data as datasets
from alexnet import runs as run_records
from alexnet.config import INITS, OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig
from alexnet.models import VARIANTS
from alexnet.train import pick_device
from pages import common, devices, sharing

REFRESH_SECONDS = 1.5
ACTIVE = ("queued", "running")
FORM_FIELDS = [f.name for f in fields(TrainConfig) if f.name not in ("data_dir", "processes")]  # processes: device
PERSIST = dict(persist_state="session")  # the form survives a visit to another page

NORM_LABELS = {"lrn": "LRN (paper)", "bn": "batch norm", "none": "none"}
OPTIMIZER_LABELS = {"sgd": "SGD + momentum", "adam": "Adam", "adamw": "AdamW"}
SCHEDULE_LABELS = {"constant": "constant", "step": "step (x gamma)",
                   "plateau": "reduce on plateau", "onecycle": "one-cycle"}
STATE_COLORS = {"queued": "orange", "running": "blue", "stopped": "gray", "finished": "green", "failed": "red"}


def key(field: str) -> str:
    return f"train.{field}"


# ---------------------------------------------------------------- form state

def fill_form(config: TrainConfig) -> None:
    """Write a config into the form's widgets (before they are drawn, i.e. at the top or in a callback)."""
    for name in FORM_FIELDS:
        value = getattr(config, name)
        st.session_state[key(name)] = ", ".join(map(str, value)) if name == "milestones" else value
    st.session_state[key("device")] = devices.option_for(config.device, config.processes)
    st.session_state["train.milestones_ref"] = (list(config.milestones), config.epochs)


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


def source_message() -> datasets.DatasetSource | str:
    return common.dataset_source(common.data_dir() or os.environ.get(datasets.ENV_VAR))


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
    source = source_message()
    # The job trains on what the sidebar shows: the named folder, else what the server resolves.
    values["data_dir"] = str(source.path) if isinstance(source, datasets.DatasetSource) and source.kind != "sample" \
        else common.data_dir()
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
        queues.request(config.device, config.processes)
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
    root = common.runs_root()
    base = st.session_state.get("train.name", "").strip() or default_name(config)
    fingerprint = (base, repr(config.to_dict()))
    last = st.session_state.get("train.last_start")
    if last and last[0] == fingerprint and time.monotonic() - last[1] < 5:
        return  # a double click: the first click has started this run already
    name = None
    for _ in range(5):  # another tab may take the same free name between our look and our create
        candidate = run_records.unique_name(root, base)
        try:
            name = jobs.start(config, candidate, root)
            break
        except FileExistsError:
            continue
        except (ValueError, OSError, RuntimeError) as err:
            st.session_state["train.notice"] = ("error", f"Not started: {err}")
            return
    if name is None:
        st.session_state["train.notice"] = ("error", f"Not started: no free run name near {base!r}")
        return
    st.session_state["train.last_start"] = (fingerprint, time.monotonic())
    st.session_state.pop("train.copied_from", None)
    st.session_state["train.run"] = name
    st.session_state["train.notice"] = ("success", f"Started **{name}**. It trains in its own process: you can "
                                                   "close this tab and come back.")


# ---------------------------------------------------------------- the form

def draw_form(source: datasets.DatasetSource | str) -> None:
    if key("variant") not in st.session_state:
        st.session_state[key("preset")] = presets.DEFAULT
        apply_preset()
    ss = st.session_state
    copied_box = st.container()  # a block of its own, so the fields below keep their place when it empties
    if ss.get("train.copied_from"):
        copied_box.info(f"The form holds the settings of **{ss['train.copied_from']}**: change what you want to try and "
                "press **Start training** to compare.", icon=":material/content_copy:")
    a, b = st.columns([1, 2], vertical_alignment="bottom")
    a.selectbox("Preset", presets.names(), key=key("preset"), on_change=apply_preset, **PERSIST,
                format_func=lambda n: presets.PRESETS[n].title, placeholder="settings of a run",
                help="Picking a preset fills the form; every field stays yours to change.")
    if ss[key("preset")] is None:
        b.caption(f"The settings of **{ss.get('train.copied_from') or 'a run'}**; pick a preset to start from it "
                  "instead.")
    else:
        preset = presets.get(ss[key("preset")])
        b.caption(f"{preset.description}  \n*Source: {preset.source}*")

    st.markdown("**Model**")
    a, b, c, d = st.columns(4)
    a.selectbox("Variant", list(VARIANTS), key=key("variant"), **PERSIST,
                format_func=lambda v: f"{v} ({VARIANTS[v].input_size}x{VARIANTS[v].input_size})",
                help=" ".join(f"**{v}**: {VARIANTS[v].description}" for v in VARIANTS))
    norms = VARIANTS[ss[key("variant")]].norms
    if ss[key("norm")] not in norms:
        ss[key("norm")] = norms[0]                     # torchvision's ImageNet AlexNet has no norm layers
    b.selectbox("Norm", norms, key=key("norm"), format_func=NORM_LABELS.get, **PERSIST,
                help="After the ReLU of conv1 and conv2, as in the paper.")
    c.selectbox("Init", INITS, key=key("init"), **PERSIST,
                help="kaiming: He-normal, zero biases. paper: N(0, 0.01), biases 1. torch: PyTorch's defaults.")
    d.number_input("Dropout", min_value=0.0, max_value=0.99, step=0.1, key=key("dropout"), **PERSIST,
                   help="Before fc6 and fc7, as in the paper.")

    if ss[key("variant")] == "imagenet":
        a, b, c = st.columns([2, 1, 1])
        a.text_input("ImageNet weights file", key=key("pretrained_path"), **PERSIST,
                     placeholder=f"empty: {imagenet.hub_file()}",
                     help="torchvision's alexnet-owt-7be5be79.pth (or the same tensors as .safetensors). All layers "
                          "but the last start from it; the last gets CIFAR-10's 10 classes.")
        b.checkbox("Freeze the conv layers", key=key("freeze_features"), **PERSIST,
                   help="Train the classifier only: the pretrained conv layers stay as they are (and each step is "
                        "faster: no gradients through them).")
        c.number_input("Conv layers' rate (x lr)", min_value=0.001, max_value=1.0, step=0.05, format="%g",
                       key=key("features_lr_scale"), disabled=bool(ss[key("freeze_features")]), **PERSIST,
                       help="The pretrained conv layers learn at this fraction of the learning rate; the new "
                            "classifier at the full rate.")

    st.markdown("**Optimisation**")
    sgd, schedule = ss[key("optimizer")] == "sgd", ss[key("schedule")]
    a, b, c, d = st.columns(4)
    a.selectbox("Optimizer", OPTIMIZERS, key=key("optimizer"), format_func=OPTIMIZER_LABELS.get, **PERSIST)
    b.number_input("Learning rate", min_value=0.0, step=1e-4, format="%g", key=key("lr"), **PERSIST,
                   help="The peak rate (one-cycle rises to it, then anneals).")
    c.number_input("Momentum", min_value=0.0, max_value=0.999, step=0.05, key=key("momentum"), **PERSIST,
                   disabled=not sgd, help="SGD only.")
    d.number_input("Weight decay", min_value=0.0, step=1e-4, format="%g", key=key("weight_decay"), **PERSIST,
                   help="L2 penalty on weights (not on biases and norm parameters); decoupled for AdamW.")
    a, b, c, d = st.columns(4)
    a.selectbox("Schedule", SCHEDULES, key=key("schedule"), format_func=SCHEDULE_LABELS.get, **PERSIST)
    if schedule == "plateau":
        b.number_input("Plateau factor", min_value=0.0, max_value=1.0, step=0.05, key=key("plateau_factor"),
                       **PERSIST, help="Multiply the rate by this when the validation loss stops improving.")
        c.number_input("Plateau patience (epochs)", min_value=0, step=1, key=key("plateau_patience"), **PERSIST)
    else:
        b.text_input("Milestones (epochs)", key=key("milestones"), on_change=milestones_edited, **PERSIST,
                     disabled=schedule != "step", placeholder="e.g. 5, 8",
                     help="Step schedule: multiply the rate by gamma at these epochs. They move with the epochs.")
        c.number_input("Gamma", min_value=0.0, max_value=1.0, step=0.05, key=key("gamma"), **PERSIST,
                       disabled=schedule != "step")
    d.number_input("Early stopping (epochs)", min_value=0, step=1, key=key("early_stopping"), **PERSIST,
                   help="Stop after this many epochs without a better validation loss; 0 = off.")
    a, b, c, d = st.columns(4)
    a.number_input("Epochs", min_value=1, step=1, key=key("epochs"), on_change=epochs_edited, **PERSIST)
    b.number_input("Batch size", min_value=1, step=32, key=key("batch_size"), **PERSIST)
    c.number_input("Seed", min_value=0, step=1, key=key("seed"), **PERSIST,
                   help="The split, order, augmentation, init and dropout all follow it.")
    options = devices.device_options()
    if ss[key("device")] not in options:
        ss[key("device")] = "auto"
    d.selectbox("Device", options, key=key("device"), format_func=devices.label, **PERSIST,
                help="Each device has its own queue: a run waits only for its device. auto: the first free CUDA "
                     "GPU, else Apple's MPS, else the CPU. All GPUs: one run trained data-parallel under torchrun, "
                     "one process a GPU, each a share of every batch.")

    st.markdown("**Augmentation** (on whole batches, on the device)")
    a, b, c, d = st.columns(4)
    a.number_input("Crop padding (px)", min_value=0, step=1, key=key("crop_padding"), **PERSIST,
                   help="Pad by this many pixels, then crop back at a random place; 0 = off.")
    b.slider("Rotation (+- degrees)", 0.0, 180.0, step=1.0, key=key("rotate_degrees"), **PERSIST)
    c.slider("Zoom (1 +- x)", 0.0, 0.9, step=0.05, key=key("zoom"), **PERSIST)
    d.checkbox("Horizontal flip", key=key("flip"), **PERSIST)

    with st.container():  # one block whether open or not, so the fields below keep their place
        if st.toggle("Advanced settings", key="train.advanced", **PERSIST):
            a, b, c, d = st.columns(4)
            a.number_input("Max training images", min_value=0, step=256, key=key("max_train_images"), **PERSIST,
                           help="0 = all; a cap for quick experiments.")
            b.number_input("Validation fraction", min_value=0.0, max_value=0.95, step=0.05, key=key("val_fraction"),
                           **PERSIST, help="Held out from the training images, split with the seed.")
            c.number_input("Label smoothing", min_value=0.0, max_value=0.99, step=0.05, key=key("label_smoothing"),
                           **PERSIST)
            d.number_input("Plateau min lr", min_value=0.0, step=1e-6, format="%g", key=key("min_lr"), **PERSIST)
            a, b, c, d = st.columns(4)
            a.selectbox("Precision", PRECISIONS, key=key("precision"), **PERSIST,
                        help="auto: bf16 autocast where the hardware runs it fast, else fp32.")
            b.number_input("CPU threads", min_value=0, step=1, key=key("threads"), **PERSIST, help="0 = torch's default.")
            c.number_input("Log every (steps)", min_value=1, step=1, key=key("log_every"), **PERSIST,
                           help="Steps between points of the training curve.")
            d.checkbox("channels-last layout", key=key("channels_last"), **PERSIST)
            d.checkbox("torch.compile", key=key("compile"), **PERSIST, help="Pays off on long GPU runs.")

    config, problems = form_config()
    a, b = st.columns([1, 3], vertical_alignment="bottom")
    a.text_input("Run name", key="train.name", placeholder=default_name(config), **PERSIST,
                 help="Empty: variant-norm-optimizer. A taken name gets a number (-2, -3...).")
    if isinstance(source, datasets.DatasetSource):
        train_images = int(source.train_count * (1 - config.val_fraction))
        if config.max_train_images:
            train_images = min(train_images, config.max_train_images)
        steps = max(train_images // config.batch_size, 1)
        b.caption(f"On {source.label}: {train_images:,} training images, {steps:,} steps per epoch, "
                  f"{steps * config.epochs:,} steps in all.")
    if config.variant in ("paper", "imagenet") and pick_device(config.device).type == "cpu":
        size = VARIANTS[config.variant].input_size
        st.warning(f"The {config.variant} variant upsamples every image to {size}x{size} and has about 57 M "
                   "parameters: on a CPU an epoch of the full CIFAR-10 takes hours. For a quick look use the cifar variant, a GPU, or a cap "
                   "on the training images (Advanced settings).")
    if problems:
        st.error("Fix these before starting:\n" + "\n".join(f"- {p}" for p in problems))
    st.button("Start training", key="train.start", type="primary", on_click=start_run, disabled=bool(problems),
              icon=":material/play_arrow:")


# ---------------------------------------------------------------- the live view

@dataclass
class Progress:
    fraction: float
    text: str
    lr: float | None


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def run_progress(run: run_records.Run) -> Progress:
    """Where the run is, from its last start and step events: epoch, step, speed, time left, rate."""
    starts = [e for e in run.metrics if e.get("event") == "start"]
    steps = run.steps()
    if not starts:
        return Progress(0.0, "waiting for the training process to load the data and build the model"
                        if run.state in ACTIVE else "no training step was recorded", None)
    start = starts[-1]
    total = max(start["steps_per_epoch"] * start["epochs"], 1)
    if run.state == "finished":
        result = run.result or {}
        return Progress(1.0, f"finished: {result.get('epochs_run', start['epochs'])} epochs, "
                             f"{result.get('global_step', total):,} steps", steps[-1]["lr"] if steps else None)
    if not steps:
        return Progress(0.0, f"epoch 0 / {start['epochs']}: waiting for the first logged step", None)
    last = steps[-1]
    where = f"epoch {last['epoch']:.2f} / {start['epochs']} · step {last['global_step']:,} / {total:,}"
    fraction = min(last["global_step"] / total, 1.0)
    if run.state != "running":  # stopped, failed, or queued again by a resume: no speed to speak of
        return Progress(fraction, f"{run.state} at {where}", last["lr"])
    if last["global_step"] >= total:
        return Progress(1.0, f"{where} · all steps done: measuring the test accuracy", last["lr"])
    recent = [e["images_per_s"] for e in steps[-5:] if e.get("images_per_s")]
    speed = sum(recent) / len(recent) if recent else 0.0
    images_per_step = start["train_images"] / max(start["steps_per_epoch"], 1)
    left = (total - last["global_step"]) * images_per_step / speed if speed else None
    text = f"{where} · {speed:,.0f} images/s" + (f" · about {duration(left)} left" if left is not None else "")
    return Progress(fraction, text, last["lr"])


def draw_state(run: run_records.Run) -> None:
    state, reason = run.state, run.status.get("reason") or ""
    epoch = run.status.get("epoch", 0)
    if state == "queued":
        waiting = reason if reason.startswith("waiting") else "starting the training process"
        st.info(f"**queued**: {waiting}", icon=":material/hourglass_top:")
    elif state == "running":
        epochs = run.config.get("epochs")
        where = (f"all {epochs} epochs done, measuring the test accuracy" if isinstance(epochs, int) and epoch >= epochs
                 else f"epoch {epoch + 1} of {epochs or '?'}")
        st.info(f"**running**: {where}", icon=":material/sprint:")
    elif state == "stopped":
        st.warning(f"**stopped** after {epoch} of {run.config.get('epochs', '?')} epochs: {reason}",
                   icon=":material/pause_circle:")
    elif state == "finished":
        result = run.result or {}
        acc = result.get("test_accuracy")
        st.success(f"**finished**: test accuracy **{acc:.1%}** on {result.get('test_images', 0):,} images of "
                   f"{result.get('dataset', 'the dataset')}" if acc is not None else "**finished**",
                   icon=":material/check_circle:")
    else:
        st.error(f"**failed**: {reason or 'no reason recorded'}", icon=":material/error:")
        log = run.path / "log.txt"
        if log.exists():
            with st.expander("Last lines of the training log"):
                st.code("\n".join(log.read_text(errors="replace").splitlines()[-25:]) or "(empty)")


def stop_run(name: str, root) -> None:
    if jobs.stop(name, root):
        st.toast(f"Stopping {name}: it saves a checkpoint after the current step.")
    else:
        st.toast(f"{name} was not training.")


def resume_run(name: str, root) -> None:
    try:
        jobs.resume(name, root)
    except (RuntimeError, OSError, ValueError) as err:
        st.session_state["train.action_error"] = f"Cannot resume: {err}"


def delete_confirmed(name: str, root) -> None:
    try:
        run_records.delete_run(root, name)
    except (RuntimeError, OSError) as err:
        st.session_state["train.action_error"] = f"Not deleted: {err}"
        return
    st.session_state.pop("train.confirm_delete", None)
    st.session_state.pop("train.run", None)


def ask_to_delete(name: str | None) -> None:
    if name is None:
        st.session_state.pop("train.confirm_delete", None)
    else:
        st.session_state["train.confirm_delete"] = name


def draw_actions(run: run_records.Run, root) -> None:
    """The run's buttons. Each acts in its callback, which Streamlit runs before the script: this view reruns
    every 1.5 s while anything trains, and a poll that preempts the click's rerun would skip an action written
    as `if st.button(...)` (the click's True is not sent again)."""
    a, b, c, d, e = st.columns([1, 1, 1, 2, 1])
    a.button("Stop", key="train.stop", disabled=run.state not in ACTIVE, icon=":material/stop:",
             on_click=stop_run, args=(run.name, root),
             help="Saves a checkpoint after the current step; Resume continues from there.")
    can_resume = (run.state == "stopped" or (run.state == "failed" and run.status.get("checkpoint"))) \
        and not run.imported
    b.button("Resume", key="train.resume", disabled=not can_resume, icon=":material/play_arrow:",
             on_click=resume_run, args=(run.name, root))
    c.button("Delete…", key="train.delete", disabled=run.state in ACTIVE, icon=":material/delete:",
             on_click=ask_to_delete, args=(run.name,), help="Stop a run before deleting it.")
    d.button("New run like this", key="train.copy", icon=":material/content_copy:",
             on_click=copy_settings, args=(run.name, run.config),
             help="Fill the form with this run's settings, to change one knob and compare.")
    sharing.export_button(run, "train.export", e)
    error = st.session_state.pop("train.action_error", None)
    if error:
        st.error(error)
    if st.session_state.get("train.confirm_delete") == run.name:
        with st.container(border=True):
            st.warning(f"Delete **{run.name}**, its curves and its weights? This cannot be undone.")
            yes, no, _ = st.columns([1, 1, 4])
            yes.button("Yes, delete", key="train.delete_yes", type="primary", on_click=delete_confirmed,
                       args=(run.name, root))
            no.button("Cancel", key="train.delete_no", on_click=ask_to_delete, args=(None,))


def draw_curves(run: run_records.Run) -> None:
    a, b, c, d = st.columns([2, 2, 3, 1])
    x = a.segmented_control("x axis", ["epoch", "step", "time"], key="train.x", default="epoch", required=True,
                            persist_state="session")
    per = b.segmented_control("Training curve", ["step", "epoch"], key="train.per", default="step", required=True,
                              format_func=lambda p: f"per {p}", persist_state="session")
    smoothing = c.slider("Smoothing", 0.0, 0.99, 0.6, step=0.01, key="train.smoothing", persist_state="session",
                         help="Debiased exponential average; the raw curve stays faint behind.")
    log_y = d.checkbox("log y", key="train.log_y", persist_state="session")
    events = {run.name: run.metrics}
    left, right = st.columns(2)
    for column, metric in ((left, "loss"), (right, "acc")):
        fig = charts.curves_figure(events, metric, x, smoothing, log_y, per, height=360)
        fig.update_layout(uirevision=run.name)  # zoom and hidden traces survive each refresh
        column.plotly_chart(fig, key=f"train.chart.{metric}", config={"displaylogo": False})
    st.caption("Training dashed, validation solid with a point per epoch, ★ the test set at the end.")


def runs_table(all_runs: list[run_records.Run]) -> None:
    rows = []
    for r in all_runs:
        message = r.status.get("reason", "") if r.state in ("queued", "failed", "stopped") else ""
        acc = (r.result or {}).get("test_accuracy")
        rows.append({  # what a narrow screen should show first comes first; the long message last
            "run": r.name, "state": r.state, "test accuracy": None if acc is None else 100 * acc,
            "epochs": f"{r.status.get('epoch', 0)} / {r.config.get('epochs', '?')}",
            "variant": r.config.get("variant"), "norm": r.config.get("norm"), "optimizer": r.config.get("optimizer"),
            "started": datetime.fromtimestamp(r.status["created"]) if r.status.get("created") else None,
            "message": message,
        })
    st.dataframe(rows, hide_index=True, placeholder="–", column_config={
        "run": st.column_config.TextColumn(pinned=True),
        "test accuracy": st.column_config.NumberColumn(format="%.1f %%"),
        "started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
    })


def live_view(root, active_when_drawn: frozenset[str]) -> None:
    """The run picker, its state, progress, curves and actions, and the table of all runs."""
    all_runs = run_records.list_runs(root)
    active = frozenset(r.name for r in all_runs if r.state in ACTIVE)
    if active != active_when_drawn:
        st.rerun()  # a run started or ended: redraw the page, and refresh only while something trains
    st.subheader("Runs")
    if not all_runs:
        st.info(f"No runs yet in `{root}`. Pick a preset and press **Start training**: the fast CPU demo shows its "
                "first points within a minute. From a terminal: `python -m alexnet train --preset fast-cpu-demo`.",
                icon=":material/info:")
        return
    by_name = {r.name: r for r in all_runs}
    if st.session_state.get("train.run") not in by_name:
        st.session_state["train.run"] = all_runs[0].name  # the newest
    # Names only: the browser keeps the label shown when an option was picked, so a state in it would go stale.
    name = st.selectbox("Run", list(by_name), key="train.run", persist_state="session",
                        help="The newest run unless you pick another; its state is shown below.")
    try:
        run = run_records.load_run(by_name[name].path)
    except FileNotFoundError:  # deleted from another tab a moment ago
        st.session_state.pop("train.run", None)
        st.rerun()
    draw_state(run)
    progress = run_progress(run)
    st.progress(progress.fraction, text=progress.text)
    start = next((e for e in reversed(run.metrics) if e.get("event") == "start"), {})
    epochs = run.epochs()
    best = max((e for e in epochs if isinstance(e.get("val_acc"), float) and math.isfinite(e["val_acc"])),
               key=lambda e: e["val_acc"], default=None)
    test_acc = (run.result or {}).get("test_accuracy")
    a, b, c = st.columns(3)
    a.metric("Learning rate", f"{progress.lr:.3g}" if progress.lr is not None else "–")
    b.metric("Best validation accuracy", f"{best['val_acc']:.1%}" if best else "–",
             delta=f"epoch {best['epoch']}" if best else None, delta_color="off", delta_arrow="off")
    c.metric("Test accuracy", f"{test_acc:.1%}" if test_acc is not None else "–",
             help="Measured once, on the test set, when the run finishes.")
    st.caption(f"**Dataset:** {run.status.get('dataset') or start.get('dataset') or 'not loaded yet'} · "
               f"**device:** {run.status.get('device') or start.get('device') or '–'}"
               + (f" · **precision:** {start['precision']}" if start.get("precision") else "")
               + (f" · imported from `{run.status['imported'].get('archive')}`" if run.imported else ""))
    draw_curves(run)
    draw_actions(run, root)
    st.markdown("**All runs**")
    runs_table(all_runs)
    st.markdown("**Devices**")
    devices.draw_queues(root, all_runs)


# ---------------------------------------------------------------- the page

st.title("Train")
st.caption("Each run trains in its own process and writes its own folder: close or reload this tab, open a second "
           "one, the run goes on. Each device has its queue: a run started while another trains on its device "
           "waits for it.")
notice = st.session_state.pop("train.notice", None)
if notice:
    (st.success if notice[0] == "success" else st.error)(notice[1])

source = source_message()
if not isinstance(source, datasets.DatasetSource):
    st.warning(f"**No dataset.** {source}  \nNext step: name a folder holding `cifar-10-batches-py` under "
               "**Dataset folder** in the sidebar, or run `python -m alexnet download` on a machine that is online.",
               icon=":material/dataset:")

root = common.runs_root()
existing = run_records.list_runs(root)
active_now = frozenset(r.name for r in existing if r.state in ACTIVE)
if "train.form_open" not in st.session_state:
    st.session_state["train.form_open"] = not existing
with st.expander("Start a new run", key="train.form_open", on_change="rerun", icon=":material/add_circle:"):
    draw_form(source)
st.fragment(live_view, run_every=REFRESH_SECONDS if active_now else None)(root, active_now)
sharing.import_box(root, "train.import", on_imported=lambda name: st.session_state.update({"train.run": name}))
