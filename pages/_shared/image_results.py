"""Per-image results, cached by the image's sha256 and the model's key (file, modification time, variant, norm):
moving a slider redraws, it does not recompute. Arguments with a leading _ are not hashed."""
from __future__ import annotations

import streamlit as st
from torch import nn

from alexnet import explain, predict
from alexnet.inputs import ModelImage

# `_image` is the image as the model takes it (`ImageForms.for_model`), identified by its digest.


@st.cache_data(max_entries=512, show_spinner=False)
def prediction(digest: str, model_key: str, _image: ModelImage, _model: nn.Module) -> predict.Prediction:
    return predict.predict(_model, _image)


@st.cache_data(max_entries=128, show_spinner="Computing the attribution...")
def attribution(method: str, digest: str, model_key: str, layer: str | None, target: int,
                _image: ModelImage, _model: nn.Module) -> explain.Attribution:
    if method == "gradcam":
        return explain.grad_cam(_model, _image, layer, target)
    if method == "guided":
        return explain.guided_grad_cam(_model, _image, layer, target)
    if method == "ig":
        return explain.integrated_gradients(_model, _image, target, steps=32)
    raise ValueError(f"unknown attribution method {method!r}")


@st.cache_data(max_entries=64, show_spinner=False)
def activations(digest: str, model_key: str, layer: str, _image: ModelImage, _model: nn.Module
                ) -> explain.FeatureMaps:
    return explain.feature_maps(_model, _image, layer)
