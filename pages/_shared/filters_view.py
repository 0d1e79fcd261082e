"""The Evaluate page's second tab, what each filter responds to: a channel's nine strongest test images, cropped to what its units see
(Zeiler and Fergus 2013), and a picture made to excite it (Olah et al. 2017); the same picture for a class.

Both are computed in the background and kept with the model (`alexnet.analysis_jobs`): the top
images of every channel of every layer in one pass over the test set, a picture on request.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from alexnet import analysis_jobs, explain, receptive, visualize
from alexnet.inputs import model_image
from alexnet.predict import class_names, predict
from pages._shared.analysis_subject import Chosen, task_ready
from pages._shared.image_picker import enlarge

TOP_IMAGES = analysis_jobs.Task("top-images")
TILE = 96                  # px: a crop is enlarged by whole pixels to about this side
GREY = 128                 # where a unit's field lies outside the image


def draw_filters(chosen: Chosen) -> None:
    layers = explain.conv_layers(chosen.model)
    left, right = st.columns([1, 3])
    title = left.selectbox("Layer", [c.title for c in layers], key="filters_layer")
    layer = explain.find_layer(chosen.model, title)
    channel = right.number_input(f"Channel (0 to {layer.out_channels - 1})", 0, layer.out_channels - 1, 0,
                                 key=f"filters_channel_{layer.title}")
    images, picture = st.columns([3, 1])
    with images:
        draw_top_images(chosen, layer, int(channel))
    with picture:
        draw_picture(chosen, visualize.Objective(layer.title, int(channel)), f"{layer.title} channel {channel}")
    st.subheader("What a class looks like to the model")
    names = class_names(chosen.model)
    klass = st.selectbox("Class", range(len(names)), format_func=lambda i: names[i], key="filters_class")
    draw_picture(chosen, visualize.Objective(klass=klass), f"class {names[klass]}")


@st.cache_data(show_spinner=False, max_entries=8)
def _top_images(key: str, _chosen: Chosen) -> dict[str, receptive.TopImages] | None:
    return receptive.load_top_images(_chosen.subject)


def draw_top_images(chosen: Chosen, layer: explain.ConvLayer, channel: int) -> None:
    what = f"the top nine test images of every channel (one pass over {len(chosen.data.test_x):,} images)"
    if not task_ready(chosen, TOP_IMAGES, what):
        return
    top = (_top_images(chosen.key(TOP_IMAGES), chosen) or {}).get(layer.title)
    if top is None:
        st.error(f"The top images kept in {TOP_IMAGES.result(chosen.subject)} cannot be read: delete the file to "
                 "compute them again.")
        return
    field = top.field
    st.markdown(f"**The nine test images that excite {layer.title} channel {channel} most**, each cut to the "
                f"{field.size}x{field.size} input pixels one of its units sees (stride {field.stride})")
    if not top.values[channel].any():
        st.info(f"{layer.title} channel {channel} is zero on every test image: a dead filter.")
        return
    found = list(zip(top.images[channel], top.values[channel], top.positions[channel]))
    for row in range(0, len(found), 3):                      # three by three, as Zeiler and Fergus show them
        for column, (image, value, (y, x)) in zip(st.columns(3), found[row:row + 3]):
            tile = field_tile(chosen, int(image), field, int(y), int(x))
            column.image(tile, caption=f"#{image} {chosen.data.classes[int(chosen.data.test_y[image])]}: {value:.3g}",
                         width=tile.shape[1], output_format="PNG")
    st.caption("Strongest first; the number is the channel's largest activation in that image (after its ReLU). "
               "Grey: the part of a unit's field that lies in the zero padding around the image.")


def field_tile(chosen: Chosen, index: int, field: receptive.ReceptiveField, y: int, x: int) -> np.ndarray:
    """The pixels under unit (y, x)'s field in the model's input (upsampled as the model sees it), placed in a
    field-sized grey square where they lie, enlarged by whole pixels."""
    small = chosen.data.test_x[index].permute(1, 2, 0).numpy()
    seen = model_image(small, chosen.model).seen()
    pixels, (top, left, _, _) = receptive.crop(seen, field, y, x)
    tile = np.full((field.size, field.size, 3), GREY, dtype=np.uint8)
    row, col = top - (field.offset + y * field.stride), left - (field.offset + x * field.stride)
    tile[row:row + pixels.shape[0], col:col + pixels.shape[1]] = pixels
    return enlarge(tile, max(1, TILE // field.size))


def draw_picture(chosen: Chosen, objective: visualize.Objective, what: str) -> None:
    task = analysis_jobs.Task("maximise", objective)
    label = "Draw what excites it most" if objective.klass is None else f"Draw what excites {what} most"
    if not task_ready(chosen, task, f"a picture of {what}", automatic=False, button=f"{label} ({task.steps} steps)"):
        return
    found = visualize.load_visualization(chosen.subject, objective)
    if found is None:
        st.error(f"The picture kept in {task.result(chosen.subject)} cannot be read: delete it to draw it again.")
        return
    st.image(enlarge(found.image, max(1, 192 // found.image.shape[0])), output_format="PNG",
             caption=f"{what}: {found.start_value:.3g} on the random start, {found.value:.3g} here")
    if objective.klass is None:
        meaning = "the channel's mean activation."
    else:
        answer = predict(chosen.model, found.image)
        meaning = (f"the class's logit. The model answers this picture as {answer.label} ({answer.confidence:.0%}): "
                   "raising one logit can raise another's more.")
    st.caption(f"{found.steps} Adam steps on a 1/f Fourier picture in decorrelated colours, randomly shifted, "
               f"scaled and rotated at each step (Olah et al. 2017). The numbers: {meaning}")
