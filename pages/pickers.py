"""What the Predict and Explain pages share: the model picker, the image picker and per-image caches.

Not a page (app.py lists the pages). The image the Predict page shows is kept in
`st.session_state[CURRENT_IMAGE]`, the model in `CURRENT_MODEL`, so the Explain page
opens on the same image and model. Per-image results are cached by the sha256 of the
image's bytes and the model's key (file, modification time, variant, norm): moving a
slider redraws, it does not recompute.

The picker also offers torchvision's ImageNet AlexNet (alexnet/imagenet.py): from torch's hub
cache or a file named on the server; when it is absent, the message that says where to put it
and a button that downloads it in a background process, with progress.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
import streamlit as st
from PIL import Image
from torch import nn

from alexnet import explain, imagenet, predict
from alexnet.data import CIFAR10_CLASSES
from alexnet.images import ImageError, load_image, to_cifar_array
from alexnet.models import VARIANTS
from alexnet.norms import NORMS
from alexnet.train import pick_device
from alexnet.weight_files import CheckpointError
from pages.common import background_download, current_source, load_dataset, model_from_file, runs_root

CURRENT_IMAGE = "current_image"
CURRENT_MODEL = "current_model"
FROM_PREDICT = "The Predict page's image"
UPLOAD_CHECKPOINT = "Upload a checkpoint file..."
IMAGENET = "ImageNet AlexNet (torchvision, 1000 classes)"
NO_MODEL = "(none)"
DISPLAY_SIZE = 224        # pixels of the centre crop shown beside the network's view and under maps
GALLERY_PAGE = 24


@dataclass(frozen=True)
class ChosenImage:
    """An image picked on a page. `data` is the file's bytes (PNG for a test-set image)."""
    name: str
    data: bytes = field(repr=False)
    source: str                      # "upload" | "camera" | "example" | "test set"
    true_label: int | None = None    # index in CIFAR-10's classes, when known

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Decoded:
    small: np.ndarray       # 32 x 32 x 3 uint8: the input of a model trained on CIFAR-10, before normalisation
    display: np.ndarray     # DISPLAY_SIZE square crop of the same region, for people
    width: int
    height: int
    imagenet: np.ndarray    # 224 x 224 x 3 uint8: the ImageNet model's input (resize 256, centre crop), for both

    def pixels(self, model: nn.Module) -> np.ndarray:
        """What `model` is given of this image (`predict.network_image`)."""
        return self.small if predict.image_size(model) == 32 else self.imagenet

    def shown(self, model: nn.Module) -> np.ndarray:
        """The picture of the region `model` sees, for people and under its maps."""
        return self.display if predict.image_size(model) == 32 else self.imagenet


@dataclass(frozen=True)
class LoadedModel:
    key: str                # identifies the weights in per-image caches
    label: str
    detail: str
    model: nn.Module        # shared by all sessions: never change it


# ---- caches (keyed by digest + model key; arguments with a leading _ are not hashed) ----

@st.cache_data(max_entries=64, show_spinner=False)
def decode(digest: str, _data: bytes, name: str) -> Decoded | str:
    """The decoded image, or the ImageError's message (an exception is not cached; a message is)."""
    try:
        img = load_image(_data, name)
    except ImageError as err:
        return str(err)
    return Decoded(to_cifar_array(img, 32), to_cifar_array(img, DISPLAY_SIZE, sharp_enlargement=True), *img.size,
                   imagenet.photo_pixels(img))


# `_pixels` is `Decoded.pixels(model)`: the image as that model is given it.

@st.cache_data(max_entries=512, show_spinner=False)
def prediction(digest: str, model_key: str, _pixels: np.ndarray, _model: nn.Module) -> predict.Prediction:
    return predict.predict(_model, _pixels)


@st.cache_data(max_entries=128, show_spinner="Computing the attribution...")
def attribution(method: str, digest: str, model_key: str, layer: str | None, target: int,
                _pixels: np.ndarray, _model: nn.Module) -> explain.Attribution:
    if method == "gradcam":
        return explain.grad_cam(_model, _pixels, layer, target)
    if method == "guided":
        return explain.guided_grad_cam(_model, _pixels, layer, target)
    if method == "ig":
        return explain.integrated_gradients(_model, _pixels, target, steps=32)
    raise ValueError(f"unknown attribution method {method!r}")


@st.cache_data(max_entries=64, show_spinner=False)
def activations(digest: str, model_key: str, layer: str, _pixels: np.ndarray, _model: nn.Module
                ) -> explain.FeatureMaps:
    return explain.feature_maps(_model, _pixels, layer)


@st.cache_resource(show_spinner="Loading the ImageNet model (233 MB)...", max_entries=2)
def imagenet_model(path: str, modified: float) -> nn.Module:
    """The 1000-class ImageNet model in eval mode, shared by all sessions: never change it. `modified` keys it."""
    return imagenet.load_pretrained(path, device=pick_device("auto"))


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def enlarge(array: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement: a 32x32 image shown large keeps its real, blocky pixels."""
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


# ---- model picker ----

def model_picker(key: str, label: str = "Model", optional: bool = False) -> LoadedModel | None:
    """A selectbox over the demo, torchvision's ImageNet model, finished and stopped runs, and an uploaded
    checkpoint; None if none loads."""
    choices = predict.available_models(runs_root())
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
    try:
        model = model_from_file(choice.path)
    except (CheckpointError, OSError, ValueError) as err:
        st.error(f"{choice.label} cannot be loaded: {err}")
        return None
    st.caption(f"{choice.variant} variant, norm {choice.norm}; {choice.detail}")
    stamp = choice.path.stat().st_mtime
    return LoadedModel(f"{choice.path}|{stamp}", choice.label, choice.detail, model)


def _uploaded_model(key: str) -> LoadedModel | None:
    file = st.file_uploader("Checkpoint (.safetensors, or a weights-only .pt/.pth)", key=f"{key}_file",
                            help="Only tensors are read: a pickle that would run code is refused. The server "
                                 f"takes files up to {st.get_option('server.maxUploadSize')} MB (server.maxUploadSize "
                                 "in .streamlit/config.toml), so a paper-variant model in fp32 (228 MB) is best used "
                                 "from its run folder.")
    left, right = st.columns(2)
    variant = left.selectbox("Variant", ["detect", *VARIANTS], key=f"{key}_variant",
                             help="detect: from the file's metadata, else from its layer shapes")
    norm = right.selectbox("Norm", ["detect", *NORMS], key=f"{key}_norm")
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


# ---- image picker ----

def image_picker(key: str, sources: tuple[str, ...] = ("Examples", "Test-set gallery", "Upload", "Camera"),
                 default: str | None = None) -> list[ChosenImage]:
    """The images chosen from one source; files that are not usable images get an st.error each."""
    index = sources.index(default) if default in sources else 0
    source = st.radio("Image", sources, index=index, horizontal=True, key=f"{key}_source")
    if source == FROM_PREDICT:
        current = st.session_state.get(CURRENT_IMAGE)
        return [current] if current is not None else []
    if source == "Examples":
        return _example(key)
    if source == "Test-set gallery":
        return _gallery(key)
    if source == "Upload":
        files = st.file_uploader("Image files (PNG, JPEG, WebP, GIF, BMP, TIFF...)", accept_multiple_files=True,
                                 key=f"{key}_upload",
                                 help="Each is centre-cropped to a square and shrunk to 32x32, as CIFAR-10's photos.")
        return [ChosenImage(f.name, f.getvalue(), "upload") for f in files or []]
    if source == "Camera":
        shot = st.camera_input("Take a photo", key=f"{key}_camera")
        return [ChosenImage("camera photo", shot.getvalue(), "camera")] if shot is not None else []
    return []


def _example(key: str) -> list[ChosenImage]:
    examples = predict.example_images()
    if not examples:
        st.warning(f"No example images in {predict.EXAMPLES_DIR}.")
        return []
    names = [e.path.name for e in examples]
    picked = st.selectbox("Example", names, key=f"{key}_example",
                          format_func=lambda n: f"{n}: {examples[names.index(n)].shows}")
    example = examples[names.index(picked)]
    true = CIFAR10_CLASSES.index(example.cifar_class) if example.cifar_class else None
    if true is None:
        st.caption("This photo shows none of CIFAR-10's ten classes: the model must still choose one of them.")
    return [ChosenImage(example.path.name, example.path.read_bytes(), "example", true)]


def _gallery(key: str) -> list[ChosenImage]:
    source = current_source()
    if source is None:
        st.warning("No dataset is available for the gallery (see the sidebar's dataset folder).")
        return []
    data = load_dataset(source)
    left, right = st.columns([2, 1])
    wanted = left.selectbox("Class", ["all classes", *data.classes], key=f"{key}_gallery_class")
    labels = data.test_y.numpy()
    indices = np.arange(len(labels)) if wanted == "all classes" else np.flatnonzero(labels == data.classes.index(wanted))
    pages = max(1, -(-len(indices) // GALLERY_PAGE))
    page = right.number_input(f"Page (of {pages})", 1, pages, 1, key=f"{key}_gallery_page")
    shown = indices[(page - 1) * GALLERY_PAGE:page * GALLERY_PAGE]
    tiles = [enlarge(data.test_x[i].permute(1, 2, 0).numpy(), 3) for i in shown]
    # At their own size (3 x 32 px) and as PNG: any scaling or JPEG would soften the pixels they are about.
    st.image(tiles, caption=[f"#{i} {data.classes[labels[i]]}" for i in shown], width=tiles[0].shape[1] if tiles else 96,
             output_format="PNG")
    picked = st.selectbox("Test image", [int(i) for i in shown], key=f"{key}_gallery_image",
                          format_func=lambda i: f"#{i} ({data.classes[labels[i]]})")
    if picked is None:
        return []
    small = data.test_x[picked].permute(1, 2, 0).numpy()
    return [ChosenImage(f"test image #{picked} of {source.label}", png_bytes(small), "test set", int(labels[picked]))]


def decoded_or_error(image: ChosenImage) -> Decoded | None:
    """The decoded image, or None after showing why it cannot be used."""
    result = decode(image.digest, image.data, image.name)
    if isinstance(result, str):
        st.error(result)
        return None
    return result
