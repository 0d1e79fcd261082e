"""The Predict and Explain pages' model picker: the demo, torchvision's ImageNet AlexNet, finished and stopped
runs, and an uploaded checkpoint.

The model chosen on one page is kept in `st.session_state[CURRENT_MODEL]`, so the other opens on
it. Models are cached per process and shared by every session: never change one in place.
torchvision's ImageNet AlexNet comes from torch's hub cache or a file named on the server; when
it is absent, the picker says where to put it and offers a background download, with progress.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from torch import nn

from alexnet import imagenet, predict
from alexnet import runs as run_records
from alexnet.checkpoints import load_model
from alexnet.weight_files import CheckpointError
from alexnet.train import pick_device
from pages._shared.downloads import background_download

CURRENT_MODEL = "current_model"
UPLOAD_CHECKPOINT = "Upload a checkpoint file..."
IMAGENET = "ImageNet AlexNet (torchvision, 1000 classes)"
NO_MODEL = "(none)"


@dataclass(frozen=True)
class LoadedModel:
    key: str                # identifies the weights in per-image caches
    label: str
    detail: str
    model: nn.Module        # shared by all sessions: never change it


@st.cache_resource(show_spinner="Loading the model...", max_entries=8)
def cached_model(path: str, modified: float, variant: str | None = None, norm: str | None = None) -> nn.Module:
    """A model in eval mode, shared by all sessions: never change it in place. `modified` keys the cache."""
    return load_model(path, variant, norm, device=pick_device("auto"))


def model_from_file(path: Path, variant: str | None = None, norm: str | None = None) -> nn.Module:
    return cached_model(str(path), path.stat().st_mtime, variant, norm)


@st.cache_resource(show_spinner="Loading the ImageNet model (233 MB)...", max_entries=2)
def imagenet_model(path: str, modified: float) -> nn.Module:
    """The 1000-class ImageNet model in eval mode, shared by all sessions: never change it. `modified` keys it."""
    return imagenet.load_pretrained(path, device=pick_device("auto"))


def model_picker(key: str, label: str = "Model", optional: bool = False) -> LoadedModel | None:
    """A selectbox over the demo, torchvision's ImageNet model, finished and stopped runs, and an uploaded
    checkpoint; None if none loads."""
    choices = predict.available_models(run_records.runs_root())
    labels = [c.label for c in choices]
    labels = ([NO_MODEL] if optional else []) + labels[:1] + [IMAGENET] + labels[1:] + [UPLOAD_CHECKPOINT]
    remembered = None if optional else st.session_state.get(CURRENT_MODEL)
    index = labels.index(remembered) if remembered in labels else 0
    picked = st.selectbox(label, labels, index=index, key=key,
                          help="The demo model ships with the app; torchvision's ImageNet AlexNet names 1000 "
                               "classes; your finished and stopped runs appear here once they have weights.")
    if picked == NO_MODEL:
        return None
    if picked == UPLOAD_CHECKPOINT:
        return _uploaded_model(key)
    if not optional:
        st.session_state[CURRENT_MODEL] = picked   # the Explain page opens on the same model
    if picked == IMAGENET:
        return _imagenet_model(key)
    choice = choices[[c.label for c in choices].index(picked)]
    loaded = listed_model(choice)
    if loaded is not None:
        st.caption(f"{choice.variant} variant, norm {choice.norm}; {choice.detail}")
    return loaded


def listed_model(choice: predict.ModelChoice) -> LoadedModel | None:
    """The demo's or a run's model (`predict.available_models`), or None after saying why it cannot be loaded."""
    try:
        model = model_from_file(choice.path)
    except (CheckpointError, OSError, ValueError) as err:
        st.error(f"{choice.label} cannot be loaded: {err}")
        return None
    stamp = choice.path.stat().st_mtime
    return LoadedModel(f"{choice.path}|{stamp}", choice.label, choice.detail, model)


def _uploaded_model(key: str) -> LoadedModel | None:
    file = st.file_uploader("Checkpoint (.safetensors, or a weights-only .pt/.pth)", key=f"{key}_file",
                            help="Only tensors are read: a pickle that would run code is refused. The server "
                                 f"takes files up to {st.get_option('server.maxUploadSize')} MB (server.maxUploadSize "
                                 "in .streamlit/config.toml), so a paper-variant model in fp32 (228 MB) is best used "
                                 "from its run folder.")
    left, right = st.columns(2)
    variant = left.selectbox("Variant", ["detect", "cifar", "paper", "imagenet"], key=f"{key}_variant",
                             help="detect: from the file's metadata, else from its layer shapes")
    norm = right.selectbox("Norm", ["detect", "lrn", "bn", "none"], key=f"{key}_norm")
    if file is None:
        st.info("Upload a weights file to use it.")
        return None
    data = file.getvalue()
    path = predict.saved_upload(data, file.name)
    chosen = (None if variant == "detect" else variant, None if norm == "detect" else norm)
    try:
        model = model_from_file(path, *chosen)
    except (CheckpointError, ValueError) as err:
        st.error(str(err))
        return None
    st.caption(f"{file.name}: {model.variant} variant, norm {model.norm}")
    # The folder is the file's hash: two different uploads with one name never share cached results.
    return LoadedModel(f"upload:{path.parent.name}/{path.name}|{model.variant}|{model.norm}", file.name,
                       "uploaded", model)


def imagenet_summary() -> str:
    return (f"torchvision's IMAGENET1K_V1: {imagenet.PARAMETERS / 1e6:.1f} M parameters, a {imagenet.FILE_MB:.0f} MB "
            f"file; top-1 {imagenet.TOP1:.1%}, top-5 {imagenet.TOP5:.1%} on ImageNet's validation set "
            f"(torchvision's figures); photos resized to 256 and centre-cropped to {imagenet.CROP}x{imagenet.CROP}")


def _imagenet_model(key: str) -> LoadedModel | None:
    """torchvision's ImageNet AlexNet from a file named on the server or torch's hub cache; if absent, what to do."""
    named = st.text_input("Weights file on the server (optional)", key=f"{key}_imagenet_file",
                          placeholder=f"empty: {imagenet.hub_file()}",
                          help="torchvision's alexnet-owt-7be5be79.pth, or the same tensors as .safetensors. Only "
                               "tensors are read: a file that would run code is refused.")
    try:
        path = imagenet.weights_file(named or None)
    except imagenet.WeightsMissing as err:
        if named:
            st.error(str(err))
        else:
            st.warning(str(err), icon=":material/cloud_download:")
            imagenet_download_panel(key)
        return None
    stamp = path.stat().st_mtime
    try:
        model = imagenet_model(str(path), stamp)
    except (CheckpointError, OSError) as err:
        st.error(f"{path.name} cannot be loaded: {err}")
        return None
    detail = imagenet_summary()
    st.caption(f"{path}: {detail}")
    return LoadedModel(f"imagenet:{path}|{stamp}", IMAGENET, detail, model)


def imagenet_download_panel(key: str) -> None:
    """A button that downloads the weights into torch's hub cache in a background process, then its progress.
    Once they are there the picker loads them, so a finished download needs no message of its own."""
    background_download(f"{key}_imagenet_fetch", f"Download the weights ({imagenet.FILE_MB:.0f} MB)",
                        f"Into torch's hub cache, {imagenet.hub_file().parent}, where torchvision and this app "
                        "look for them.", imagenet.download_progress, imagenet.start_download,
                        "Downloading the ImageNet weights", None)
