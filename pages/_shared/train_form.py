"""The Train page's form: a preset or a run's settings to start from, every knob of `TrainConfig`, and Start.

Each field's widget holds its value under `train.<field>` (`train_settings`) with
`persist_state="session"`, so the form survives a visit to another page. Start hands the config
to `jobs.start`: the run trains in its own process and the page only reads its folder.
"""
from __future__ import annotations

import streamlit as st

from alexnet import data as datasets
from alexnet import imagenet, presets
from alexnet.config import INITS, OPTIMIZERS, PRECISIONS, SCHEDULES
from alexnet.models import VARIANTS
from alexnet.norms import NORM_LABELS
from alexnet.progress import planned_steps
from alexnet.train import pick_device
from pages._shared import devices
from pages._shared.lr_finder_view import lr_finder_panel
from pages._shared.train_settings import (apply_preset, default_name, epochs_edited, form_config, key,
                                          milestones_edited, start_run, variant_changed)

PERSIST = dict(persist_state="session")  # the form survives a visit to another page

OPTIMIZER_LABELS = {"sgd": "SGD + momentum", "adam": "Adam", "adamw": "AdamW"}
SCHEDULE_LABELS = {"constant": "constant", "step": "step (x gamma)",
                   "plateau": "reduce on plateau", "onecycle": "one-cycle"}


# ---------------------------------------------------------------- the fields

def preset_row() -> None:
    """The preset picker, or the name of the run whose settings the form holds."""
    ss = st.session_state
    copied_box = st.container()  # a block of its own, so the fields below keep their place when it empties
    if ss.get("train.copied_from"):
        copied_box.info(f"The form holds the settings of **{ss['train.copied_from']}**: change what you want to try "
                        "and press **Start training** to compare.", icon=":material/content_copy:")
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


def model_fields() -> None:
    ss = st.session_state
    st.markdown("**Model**")
    a, b, c, d = st.columns(4)
    a.selectbox("Variant", list(VARIANTS), key=key("variant"), on_change=variant_changed, **PERSIST,
                format_func=lambda v: f"{v} ({VARIANTS[v].input_size}x{VARIANTS[v].input_size})",
                help=" ".join(f"**{v}**: {VARIANTS[v].description}" for v in VARIANTS))
    norms = VARIANTS[ss[key("variant")]].norms
    if ss[key("norm")] not in norms:
        ss[key("norm")] = norms[0]                     # torchvision's ImageNet AlexNet has no norm layers
    b.selectbox("Norm", norms, key=key("norm"), format_func=NORM_LABELS.get, **PERSIST,
                help="After the ReLU of conv1 and conv2, as in the paper.")
    c.selectbox("Init", INITS, key=key("init"), **PERSIST,
                help="lsuv: He-normal, each layer then scaled to unit output (the default: every norm starts at "
                     "one scale). kaiming: He-normal as drawn. paper: N(0, 0.01), biases 1. torch: PyTorch's defaults. All but "
                     "torch start the last layer at zero, so the loss starts at ln 10.")
    d.number_input("Dropout", min_value=0.0, max_value=0.99, step=0.1, key=key("dropout"), **PERSIST,
                   help="Before fc6 and fc7, as in the paper.")
    if ss[key("variant")] == "imagenet":
        pretrained_fields()


def pretrained_fields() -> None:
    a, b, c = st.columns([2, 1, 1])
    a.text_input("ImageNet weights file", key=key("pretrained_path"), **PERSIST,
                 placeholder=f"empty: {imagenet.hub_file()}",
                 help="torchvision's alexnet-owt-7be5be79.pth (or the same tensors as .safetensors). All layers "
                      "but the last start from it; the last gets CIFAR-10's 10 classes.")
    b.checkbox("Freeze the conv layers", key=key("freeze_features"), **PERSIST,
               help="Train the classifier only: the pretrained conv layers stay as they are (and each step is "
                    "faster: no gradients through them).")
    c.number_input("Conv layers' rate (x lr)", min_value=0.001, max_value=1.0, step=0.05, format="%g",
                   key=key("features_lr_scale"), disabled=bool(st.session_state[key("freeze_features")]), **PERSIST,
                   help="The pretrained conv layers learn at this fraction of the learning rate; the new "
                        "classifier at the full rate.")


def optimisation_fields() -> None:
    st.markdown("**Optimisation**")
    sgd = st.session_state[key("optimizer")] == "sgd"
    a, b, c, d = st.columns(4)
    a.selectbox("Optimizer", OPTIMIZERS, key=key("optimizer"), format_func=OPTIMIZER_LABELS.get, **PERSIST)
    b.number_input("Learning rate", min_value=0.0, step=1e-4, format="%g", key=key("lr"), **PERSIST,
                   help="The peak rate (one-cycle rises to it, then anneals).")
    c.number_input("Momentum", min_value=0.0, max_value=0.999, step=0.05, key=key("momentum"), **PERSIST,
                   disabled=not sgd, help="SGD only.")
    d.number_input("Weight decay", min_value=0.0, step=1e-4, format="%g", key=key("weight_decay"), **PERSIST,
                   help="L2 penalty on weights (not on biases and norm parameters); decoupled for AdamW.")
    schedule_fields()
    a, b, c, d = st.columns(4)
    a.number_input("Epochs", min_value=1, step=1, key=key("epochs"), on_change=epochs_edited, **PERSIST)
    b.number_input("Batch size", min_value=1, step=32, key=key("batch_size"), **PERSIST)
    c.number_input("Seed", min_value=0, step=1, key=key("seed"), **PERSIST,
                   help="The split, order, augmentation, init and dropout all follow it.")
    options = devices.device_options()
    if st.session_state[key("device")] not in options:
        st.session_state[key("device")] = "auto"
    d.selectbox("Device", options, key=key("device"), format_func=devices.label, **PERSIST,
                help="Each device has its own queue: a run waits only for its device. auto: the first free CUDA "
                     "GPU, else Apple's MPS, else the CPU. All GPUs: one run trained data-parallel under torchrun, "
                     "one process a GPU, each a share of every batch.")


def schedule_fields() -> None:
    schedule = st.session_state[key("schedule")]
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


def augmentation_fields() -> None:
    st.markdown("**Augmentation** (on whole batches, on the device)")
    a, b, c, d = st.columns(4)
    a.number_input("Crop padding (px)", min_value=0, step=1, key=key("crop_padding"), **PERSIST,
                   help="Pad by this many pixels, then crop back at a random place; 0 = off.")
    b.slider("Rotation (+- degrees)", 0.0, 180.0, step=1.0, key=key("rotate_degrees"), **PERSIST)
    c.slider("Zoom (1 +- x)", 0.0, 0.9, step=0.05, key=key("zoom"), **PERSIST)
    d.checkbox("Horizontal flip", key=key("flip"), **PERSIST)


def advanced_fields() -> None:
    with st.container():  # one block whether open or not, so the fields below keep their place
        if not st.toggle("Advanced settings", key="train.advanced", **PERSIST):
            return
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


def start_row(source: datasets.DatasetSource | str) -> None:
    """The run's name, what it will train on, what is wrong with the form, and Start."""
    config, problems = form_config()
    a, b = st.columns([1, 3], vertical_alignment="bottom")
    a.text_input("Run name", key="train.name", placeholder=default_name(config), **PERSIST,
                 help="Empty: variant-norm-optimizer. A taken name gets a number (-2, -3...).")
    if isinstance(source, datasets.DatasetSource):
        images, steps = planned_steps(config, source.train_count)
        b.caption(f"On {source.label}: {images:,} training images, {steps:,} steps per epoch, "
                  f"{steps * config.epochs:,} steps in all.")
    if config.variant in ("paper", "imagenet") and pick_device(config.device).type == "cpu":
        size = VARIANTS[config.variant].input_size
        st.warning(f"The {config.variant} variant upsamples every image to {size}x{size} and has about 57 M "
                   "parameters: on a CPU an epoch of the full CIFAR-10 takes hours. For a quick look use the cifar "
                   "variant, a GPU, or a cap on the training images (Advanced settings).")
    if problems:
        st.error("Fix these before starting:\n" + "\n".join(f"- {p}" for p in problems))
    st.button("Start training", key="train.start", type="primary", on_click=start_run, disabled=bool(problems),
              icon=":material/play_arrow:")


def draw_form(source: datasets.DatasetSource | str) -> None:
    if key("variant") not in st.session_state:
        st.session_state[key("preset")] = presets.DEFAULT
        apply_preset()
    preset_row()
    model_fields()
    optimisation_fields()
    augmentation_fields()
    advanced_fields()
    lr_finder_panel()
    start_row(source)
