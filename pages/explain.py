"""Explain: where the network looks (Grad-CAM and two more captum maps), its feature maps and its filters."""
from __future__ import annotations

import streamlit as st

from alexnet import charts, explain
from alexnet.models import CIFAR10_CLASSES
from alexnet.predict import class_names, image_size
from pages import pickers
from pages._views import norm

PREDICTED = "the predicted class"

st.title("Explain")
st.caption("Why did the network answer what it did? Grad-CAM shows which regions raised the chosen class's score; "
           "feature maps show what each channel of a layer responds to in this image; filters show the weights "
           "themselves.")

loaded = pickers.model_picker("explain_model", "Model")
if loaded is None:
    st.stop()
model = loaded.model

sources = (pickers.FROM_PREDICT,) if st.session_state.get(pickers.CURRENT_IMAGE) else ()
sources += ("Examples", "Test-set gallery", "Upload")
chosen = pickers.image_picker("explain", sources)
usable = [(img, d) for img in chosen if (d := pickers.decoded_or_error(img)) is not None]
if not usable:
    if not chosen:
        st.info("Pick an example or a test image, or upload one.")
    st.stop()
image, decoded = usable[0]
if len(usable) > 1:
    st.caption(f"Explaining the first usable file, {image.name}; the Predict page classifies several at once.")
pixels = decoded.pixels(model)            # what this model is given of the image (32x32, or 224x224 for ImageNet)
shown = decoded.shown(model)              # the same region for people; the maps are laid over it
prediction = pickers.prediction(image.digest, loaded.key, pixels, model)
layers = explain.conv_layers(model)
titles = [layer.title for layer in layers]

head = st.columns([1, 1, 2])
head[0].image(decoded.display, caption=image.name, width="stretch")
side = image_size(model)
input_title = f"network input, {side}x{side}"
head[1].plotly_chart(charts.image_figure(pixels, input_title, height=200), width="stretch", key="explain_small")
with head[2]:
    st.metric("Predicted", f"{prediction.label}", f"{prediction.confidence:.1%} probability", delta_color="off",
              delta_arrow="off")
    if image.true_label is not None and class_names(model) == CIFAR10_CLASSES:
        st.caption(f"True class: {prediction.classes[image.true_label]}")
    st.caption(f"{loaded.label}: {model.variant} variant, norm {model.norm}, input {model.input_size}x"
               f"{model.input_size}")


def _show_map(attribution: explain.Attribution, figure) -> None:
    if attribution.problem:
        st.info(attribution.problem)
    else:
        st.plotly_chart(figure, width="stretch", key=f"map_{attribution.method}")


@st.fragment
def attribution_panel() -> None:
    left, middle, right = st.columns([1, 1, 1])
    layer = left.selectbox("Layer", titles, index=len(titles) - 1, key="cam_layer",
                           help="Grad-CAM weighs this layer's rectified feature maps by the class score's mean "
                                "gradient. The last conv layer (the default) is the usual choice: coarse but "
                                "most about the class.")
    many = len(prediction.classes)
    # A selectbox is searchable: type a few letters of any of ImageNet's 1000 names. Every option's label is
    # the same for every image: the browser keeps the label an option had when it was picked, so one naming
    # this image's prediction would go stale on the next image. The prediction's name goes in the caption.
    wanted = middle.selectbox("Class to explain" + (f" (type to search {many} names)" if many > 10 else ""),
                              [PREDICTED, *prediction.classes],
                              key="cam_target" if many == 10 else f"cam_target_{many}")
    if wanted == PREDICTED:
        middle.caption(f"For this image: {prediction.label}")
    opacity = right.slider("Map opacity", 0.0, 1.0, 0.5, 0.05, key="cam_opacity")
    target = prediction.index if wanted == PREDICTED else prediction.classes.index(wanted)
    name = prediction.classes[target]

    args = (image.digest, loaded.key)
    cam = pickers.attribution("gradcam", *args, layer, target, pixels, model)
    guided = pickers.attribution("guided", *args, layer, target, pixels, model)
    ig = pickers.attribution("ig", *args, None, target, pixels, model)
    size = shown.shape[0]
    columns = st.columns(3)
    with columns[0]:
        st.markdown(f"**Grad-CAM** ({layer}, class {name})")
        _show_map(cam, charts.overlay_figure(shown, explain.upsample(cam.values, size), opacity,
                                             colorbar="evidence"))
        st.caption("Red: the regions whose features raised the score most (positive evidence only).")
    with columns[1]:
        st.markdown(f"**Guided Grad-CAM** ({layer}, class {name})")
        _show_map(guided, charts.image_figure(charts.signed_rgb(guided.values)))
        st.caption("Guided backpropagation times Grad-CAM: the pixels' detail inside those regions; grey is 0.")
    with columns[2]:
        st.markdown(f"**Integrated Gradients** (class {name})")
        _show_map(ig, charts.overlay_figure(shown, explain.upsample(ig.values, size), opacity,
                                            diverging=True, colorbar="attribution"))
        st.caption(f"Each pixel's share of the class score's rise from a black image ({ig.score_gap:.2f}); red "
                   f"raises, blue lowers it. 32 steps: the shares add up to that rise within {abs(ig.delta):.2g}.")


@st.fragment
def feature_map_panel() -> None:
    left, middle, right = st.columns([1, 1, 1])
    layer = left.selectbox("Layer", titles, index=0, key="fm_layer")
    maps = pickers.activations(image.digest, loaded.key, layer, pixels, model)
    total = len(maps.channels)
    count = middle.slider("Channels", 1, total, min(32, total), key="fm_count",
                          help="The strongest channels first (mean activation over the map).")
    own_scale = right.toggle("Scale each map to its own maximum", key="fm_scale")
    h, w = maps.maps.shape[1:]
    st.plotly_chart(charts.feature_maps_figure(maps.maps[:count], maps.channels[:count], columns=8,
                                               per_map_scale=own_scale), width="stretch", key="fm_figure")
    silent = int((maps.strength == 0).sum())
    st.caption(f"{layer} after its ReLU: {total} channels of {h}x{w}, strongest first; {silent} channels are zero "
               "everywhere for this image. Hover to see a channel's number.")


@st.fragment
def filter_panel() -> None:
    first = layers[0]
    st.markdown(f"**{first.title}**: {first.out_channels} kernels of {first.kernel_size}x{first.kernel_size}x3, "
                "as colours (each scaled to its own largest weight; grey = 0)")
    st.plotly_chart(charts.mosaic_figure(explain.tile(explain.rgb_filters(model), columns=16)),
                    width="stretch", key="filters_rgb")
    left, middle, right = st.columns([1, 1, 1])
    deeper = left.selectbox("Deeper layer, channel by channel", titles[1:], key="filters_layer")
    weights = explain.filter_weights(model, deeper)
    start = middle.number_input("First filter", 0, len(weights) - 1, 0, key="filters_start")
    count = right.slider("Filters", 1, 16, 6, key="filters_count")
    rows = list(range(start, min(start + count, len(weights))))
    mosaic = explain.kernel_mosaic(weights, rows, columns=32)
    st.plotly_chart(charts.mosaic_figure(mosaic, hover="weight"), width="stretch", key="filters_deep")
    st.caption(f"{deeper}: filters {rows[0]} to {rows[-1]} of {len(weights)}, one block each, top to bottom; a "
               f"block holds the {weights.shape[2]}x{weights.shape[3]} kernel for each of the filter's "
               f"{weights.shape[1]} input channels, 32 to a row. Red positive, blue negative.")


grad_tab, maps_tab, filters_tab, norm_tab = st.tabs(["Grad-CAM", "Feature maps", "Filters", "What the norm does"])
with grad_tab:
    attribution_panel()
with maps_tab:
    feature_map_panel()
with filters_tab:
    filter_panel()
with norm_tab:
    st.fragment(norm.render)(model, loaded.label, loaded.key, decoded.small)
