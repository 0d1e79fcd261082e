"""Explain: where the network looks (Grad-CAM, other attribution methods and their sanity check), its feature maps,
its filters, and what its norm layers do to the maps (`pages/_shared/norm_view.py`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from alexnet import charts, explain
from alexnet.inputs import ModelImage
from alexnet.data import CIFAR10_CLASSES
from alexnet.predict import Prediction, class_names
from pages._shared.attribution_view import class_choice, methods_panel
from pages._shared.image_picker import CURRENT_IMAGE, FROM_PREDICT, ChosenImage, decoded_or_error, image_picker
from pages._shared.image_results import activations, attribution, prediction
from pages._shared.model_picker import LoadedModel, model_picker
from pages._shared.navigation import run_page
from pages._shared.norm_view import norm_panel


@dataclass(frozen=True)
class Subject:
    """The image explained, as the chosen model sees it, and the model's answer."""
    image: ChosenImage
    loaded: LoadedModel
    prepared: ModelImage      # the image as the model takes it; the maps are laid over its picture for people
    prediction: Prediction
    titles: list[str]         # the model's conv layers

    def cached(self) -> tuple:
        """The arguments that key the per-image caches."""
        return self.image.digest, self.loaded.key


def header(subject: Subject, display: np.ndarray) -> None:
    model, p, image = subject.loaded.model, subject.prediction, subject.image
    head = st.columns([1, 1, 2])
    head[0].image(display, caption=image.name, width="stretch")
    pixels = subject.prepared.pixels
    head[1].plotly_chart(charts.image_figure(pixels, f"network input, {len(pixels)}x{len(pixels)}", height=200),
                         width="stretch", key="explain_small")
    with head[2]:
        st.metric("Predicted", f"{p.label}", f"{p.confidence:.1%} probability", delta_color="off", delta_arrow="off")
        if image.true_label is not None and class_names(model) == CIFAR10_CLASSES:
            st.caption(f"True class: {p.classes[image.true_label]}")
        st.caption(f"{subject.loaded.label}: {model.variant} variant, norm {model.norm}, input {model.input_size}x"
                   f"{model.input_size}")


def _show_map(result: explain.Attribution, figure) -> None:
    if result.problem:
        st.info(result.problem)
    else:
        st.plotly_chart(figure, width="stretch", key=f"map_{result.method}")


def attribution_controls(subject: Subject) -> tuple[str, int, float]:
    """The layer, the class to explain (by default the predicted one) and the maps' opacity."""
    left, middle, right = st.columns([1, 1, 1])
    titles, p = subject.titles, subject.prediction
    layer = left.selectbox("Layer", titles, index=len(titles) - 1, key="cam_layer",
                           help="Grad-CAM weighs this layer's rectified feature maps by the class score's mean "
                                "gradient. The last conv layer (the default) is the usual choice: coarse but "
                                "most about the class.")
    target = class_choice(middle, p, "cam_target")
    opacity = right.slider("Map opacity", 0.0, 1.0, 0.5, 0.05, key="cam_opacity")
    return layer, target, opacity


@st.fragment
def attribution_panel(subject: Subject) -> None:
    layer, target, opacity = attribution_controls(subject)
    name, model, prepared = subject.prediction.classes[target], subject.loaded.model, subject.prepared
    cam = attribution("gradcam", *subject.cached(), layer, target, prepared, model)
    guided = attribution("guided", *subject.cached(), layer, target, prepared, model)
    ig = attribution("ig", *subject.cached(), None, target, prepared, model)
    shown = prepared.shown
    size = shown.shape[0]
    columns = st.columns(3)
    with columns[0]:
        st.markdown(f"**Grad-CAM** ({layer}, class {name})")
        _show_map(cam, charts.overlay_figure(shown, explain.upsample(cam.values, size), opacity, colorbar="evidence"))
        st.caption("Bright: the regions whose features raised the score most (positive evidence only).")
    with columns[1]:
        st.markdown(f"**Guided Grad-CAM** ({layer}, class {name})")
        _show_map(guided, charts.image_figure(charts.signed_rgb(guided.values)))
        st.caption("Guided backpropagation times Grad-CAM: the pixels' detail inside those regions; grey is 0.")
    with columns[2]:
        st.markdown(f"**Integrated Gradients** (class {name})")
        _show_map(ig, charts.overlay_figure(shown, explain.upsample(ig.values, size), opacity, diverging=True,
                                            colorbar="attribution"))
        st.caption(f"Each pixel's share of the class score's rise from a black image ({ig.score_gap:.2f}); red "
                   f"raises, blue lowers it. 32 steps: the shares add up to that rise within {abs(ig.delta):.2g}.")


@st.fragment
def feature_map_panel(subject: Subject) -> None:
    left, middle, right = st.columns([1, 1, 1])
    layer = left.selectbox("Layer", subject.titles, index=0, key="fm_layer")
    maps = activations(*subject.cached(), layer, subject.prepared, subject.loaded.model)
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
def filter_panel(subject: Subject) -> None:
    model = subject.loaded.model
    first = explain.conv_layers(model)[0]
    st.markdown(f"**{first.title}**: {first.out_channels} kernels of {first.kernel_size}x{first.kernel_size}x3, "
                "as colours (each scaled to its own largest weight; grey = 0)")
    st.plotly_chart(charts.mosaic_figure(explain.tile(explain.rgb_filters(model), columns=16)),
                    width="stretch", key="filters_rgb")
    left, middle, right = st.columns([1, 1, 1])
    deeper = left.selectbox("Deeper layer, channel by channel", subject.titles[1:], key="filters_layer")
    weights = explain.filter_weights(model, deeper)
    start = middle.number_input("First filter", 0, len(weights) - 1, 0, key="filters_start")
    count = right.slider("Filters", 1, 16, 6, key="filters_count")
    rows = list(range(start, min(start + count, len(weights))))
    mosaic = explain.kernel_mosaic(weights, rows, columns=32)
    st.plotly_chart(charts.mosaic_figure(mosaic, hover="weight"), width="stretch", key="filters_deep")
    st.caption(f"{deeper}: filters {rows[0]} to {rows[-1]} of {len(weights)}, one block each, top to bottom; a "
               f"block holds the {weights.shape[2]}x{weights.shape[3]} kernel for each of the filter's "
               f"{weights.shape[1]} input channels, 32 to a row. Red positive, blue negative.")


def page() -> None:
    st.title("Explain")
    st.caption("Why did the network answer what it did? Grad-CAM shows which regions raised the chosen class's "
               "score; other methods show it their way, each with a check that its map depends on what the network "
               "learned; feature maps show what each channel of a layer responds to in this image; filters show the "
               "weights themselves.")
    loaded = model_picker("explain_model", "Model")
    if loaded is None:
        return
    sources = (FROM_PREDICT,) if st.session_state.get(CURRENT_IMAGE) else ()
    chosen = image_picker("explain", sources + ("Examples", "Test-set gallery", "Upload"))
    usable = [(img, d) for img in chosen if (d := decoded_or_error(img)) is not None]
    if not usable:
        if not chosen:
            st.info("Pick an example or a test image, or upload one.")
        return
    image, forms = usable[0]
    if len(usable) > 1:
        st.caption(f"Explaining the first usable file, {image.name}; the Predict page classifies several at once.")
    model = loaded.model
    prepared = forms.for_model(model)
    subject = Subject(image, loaded, prepared, prediction(image.digest, loaded.key, prepared, model),
                      [layer.title for layer in explain.conv_layers(model)])
    header(subject, forms.picture)
    grad_tab, methods_tab, maps_tab, filters_tab, norm_tab = st.tabs(
        ["Grad-CAM", "Methods and sanity check", "Feature maps", "Filters", "What the norm does"])
    with grad_tab:
        attribution_panel(subject)
    with methods_tab:
        methods_panel(model, prepared, subject.prediction, image.digest, loaded.key)
    with maps_tab:
        feature_map_panel(subject)
    with filters_tab:
        filter_panel(subject)
    with norm_tab:
        norm_panel(loaded, prepared.pixels)


run_page(page)
