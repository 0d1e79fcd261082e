"""The Explain page's "Methods and sanity check" tab: any attribution method at any conv layer, and beside its
map the model-randomisation check (`alexnet.sanity`) with its verdict.

It lives in a folder below pages/ because Streamlit's legacy pages/-folder mode lists every `pages/*.py` as a
page, never a file in a folder below. Results are cached by image digest, model key, method, layer and class.
"""
from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator
from torch import nn

from alexnet import attributions, charts, sanity
from alexnet.explain import Attribution, conv_layers, upsample
from alexnet.inputs import ModelImage
from alexnet.predict import Prediction

PREDICTED = "the predicted class"


def class_choice(container: DeltaGenerator, prediction: Prediction, key: str) -> int:
    """A searchable class box (the predicted class first) in `container`; returns the class index.

    Every option's label is the same for every image: the browser keeps the label an option had when it was
    picked, so one naming this image's prediction would go stale on the next image. The prediction's name
    goes in the caption. With more than ten classes (ImageNet's 1000) the key changes, so a CIFAR-10 choice
    is never offered to the ImageNet model.
    """
    many = len(prediction.classes)
    wanted = container.selectbox("Class to explain" + (f" (type to search {many} names)" if many > 10 else ""),
                                 [PREDICTED, *prediction.classes], key=key if many == 10 else f"{key}_{many}")
    if wanted == PREDICTED:
        container.caption(f"For this image: {prediction.label}")
        return prediction.index
    return prediction.classes.index(wanted)


# `_image` is the image as the model takes it (`ImageForms.for_model`); arguments with a leading _ are not hashed.

@st.cache_data(max_entries=64, show_spinner="Computing the map...")
def method_map(method: str, digest: str, model_key: str, layer: str, target: int, _image: ModelImage,
               _model: nn.Module) -> Attribution:
    return attributions.attribute(_model, _image, target, layer, method=method)


@st.cache_data(max_entries=32, show_spinner="Randomising a copy of the model layer by layer, from the top...")
def randomisation(method: str, digest: str, model_key: str, layer: str, target: int, _image: ModelImage,
                  _model: nn.Module) -> sanity.RandomisationCheck:
    return sanity.randomisation_check(_model, _image, method, target, layer)


@st.fragment
def methods_panel(model: nn.Module, image: ModelImage, prediction: Prediction, digest: str, model_key: str) -> None:
    """Method, layer and class boxes; the map over the image; the sanity check beside it."""
    titles = [layer.title for layer in conv_layers(model)]
    left, middle, right = st.columns([1, 1, 1])
    name = left.selectbox("Method", list(attributions.METHODS), index=1, key="methods_method")
    method = attributions.METHODS[name]
    layer = middle.selectbox("Layer", titles, index=len(titles) - 1, key="methods_layer",
                             disabled=not method.uses_layer,
                             help="The conv layer whose activations the CAM methods weigh. Deeper layers are more "
                                  "about the class but coarser (conv5: 7x7 at 32x32); conv1 keeps the full 32x32.")
    target = class_choice(right, prediction, "methods_target")
    layer = layer if method.uses_layer else None
    result = method_map(name, digest, model_key, layer, target, image, model)
    st.caption(f"**{name}**{f' ({layer})' if layer else ''}, class {prediction.classes[target]}: {result.computes}."
               + ("" if method.class_specific else " The same map for every class."))
    map_column, check_column = st.columns([1, 2])
    with map_column:
        if result.problem:
            st.info(result.problem)
        else:
            heat = upsample(result.values, image.shown.shape[0])
            st.plotly_chart(charts.overlay_figure(image.shown, heat, 0.6, diverging=method.signed,
                                                 colorbar="attribution" if method.signed else name),
                            width="stretch", key="methods_map")
    with check_column:
        check = randomisation(name, digest, model_key, layer, target, image, model)
        labels = ["trained"] + [f"random to {stop}<br>ρ {rho:.2f}" for stop, rho in zip(check.stops, check.similarity)]
        st.plotly_chart(charts.cascade_figure(check.maps, labels), width="stretch", key="methods_check")
        (st.success if check.explains else st.warning)(check.verdict)
        st.caption("Sanity check (Adebayo et al. 2018): on a copy of the model, the weights are randomised layer by "
                   "layer from the top, and the map is drawn again; ρ is the rank correlation of |map| with the "
                   f"trained model's. A method whose map keeps ρ ≥ {check.threshold} with every layer random shows "
                   "the image, not what the network learned.")
