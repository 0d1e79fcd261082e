"""The Predict and Explain pages' image picker: examples, the test-set gallery, uploads, the camera.

The image the Predict page shows is kept in `st.session_state[CURRENT_IMAGE]`, so the Explain
page opens on the same image. An image is decoded once per file (cached by the sha256 of its
bytes) into `alexnet.inputs.ImageForms`, which answers for each model what it is given and what
people are shown; a file that is not a usable image gets its own message and loses nothing else.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
import streamlit as st
from PIL import Image

from alexnet import predict
from alexnet.images import ImageError, load_image
from alexnet.inputs import ImageForms
from alexnet.data import CIFAR10_CLASSES
from pages._shared.dataset import current_source, load_dataset

CURRENT_IMAGE = "current_image"
FROM_PREDICT = "The Predict page's image"
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


@st.cache_data(max_entries=64, show_spinner=False)
def decode(digest: str, _data: bytes, name: str) -> ImageForms | str:
    """The image in the forms the models take and people see, or the ImageError's message (an exception is not
    cached; a message is)."""
    try:
        return ImageForms.of(load_image(_data, name))
    except ImageError as err:
        return str(err)


def decoded_or_error(image: ChosenImage) -> ImageForms | None:
    """The decoded image, or None after showing why it cannot be used."""
    result = decode(image.digest, image.data, image.name)
    if isinstance(result, str):
        st.error(result)
        return None
    return result


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def enlarge(array: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement: a 32x32 image shown large keeps its real, blocky pixels."""
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


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
