"""The Explain page's "What the norm does" tab: conv1's and conv2's maps just before and just after the norm layer,
for the chosen model and a model with another norm side by side (an LRN run beside a BN run)."""
from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st
from torch import nn

from alexnet import charts, norm_effect, predict
from alexnet import runs as run_records
from alexnet.inputs import CIFAR_SIZE, image_size
from alexnet.norms import NORM_SHORT_LABELS
from pages._shared.model_picker import LoadedModel, listed_model

CHANNELS = 16     # maps shown, the strongest before the norm first


@st.cache_data(max_entries=64, show_spinner=False)
def _stages(digest: str, model_key: str, _image: np.ndarray, _model: nn.Module) -> list[norm_effect.NormStage]:
    return norm_effect.norm_effect(_model, _image)


def _others(current: str) -> list[predict.ModelChoice]:
    """The demo and the runs that have norm positions (not the ImageNet variant), other than the current model."""
    return [c for c in predict.available_models(run_records.runs_root())
            if c.label != current and c.variant != "imagenet"]


def _beside(current_label: str, current_norm: str) -> LoadedModel | None:
    """The model to show beside the chosen one: a picker whose default has another norm."""
    others = _others(current_label)
    if not others:
        return None
    default = next((i for i, c in enumerate(others) if c.norm != current_norm), 0)
    labels = [c.label for c in others]
    picked = st.selectbox("Beside it", labels, index=default, key="norm_other",
                          help="A model with another norm: an LRN run beside a BN run shows what each does.")
    return listed_model(others[labels.index(picked)])


@st.fragment
def norm_panel(loaded: LoadedModel, image: np.ndarray) -> None:
    """The chosen model and, beside it, another, on `image` (the 32x32x3 uint8 a CIFAR-10 model is given)."""
    model, label = loaded.model, loaded.label
    if image_size(model) != CIFAR_SIZE:
        st.info("torchvision's ImageNet AlexNet has no norm layers (its one-GPU design dropped LRN). Pick the demo "
                "model or a run to see what LRN or BN does.")
        return
    digest = hashlib.sha256(image.tobytes()).hexdigest()
    shown = [(label, _stages(digest, loaded.key, image, model))]
    if not shown[0][1]:
        st.info("This model has no norm layer after conv1 or conv2 (torchvision's layout has none).")
        return
    other = _beside(label, model.norm)
    if other is None:
        st.caption("Train a run with another norm (the Train page's norm setting) to see it beside this model.")
    else:
        shown.append((other.label, _stages(digest, other.key, image, other.model)))
    for position in range(len(shown[0][1])):
        layer = shown[0][1][position].layer
        st.markdown(f"#### {layer}: before and after the norm")
        for column, (name, stages) in zip(st.columns(len(shown)), shown):
            with column:
                draw_stage(name, stages[position], key=f"norm_{layer}_{len(shown)}_{name}")
        statistics = {f"{name} ({NORM_SHORT_LABELS[stages[position].norm]})": stages[position].statistics()
                      for name, stages in shown}
        st.plotly_chart(charts.norm_statistics_figure(statistics), key=f"norm_stats_{layer}")
        st.caption(f"One point a channel of {layer}: its mean and spread over the map before the norm (x) and "
                   "after it (y). On the dashed diagonal the norm changed nothing.")


def draw_stage(name: str, stage: norm_effect.NormStage, key: str) -> None:
    st.markdown(f"**{name}**: {NORM_SHORT_LABELS[stage.norm]}")
    st.caption(stage.description)
    order = np.argsort(-stage.before.mean(axis=(1, 2)), kind="stable")[:CHANNELS]
    st.plotly_chart(charts.feature_maps_figure(stage.before[order], order, columns=8, title="before (after the ReLU)"),
                    key=f"{key}_before")
    st.plotly_chart(charts.feature_maps_figure(stage.after[order], order, columns=8, title="after the norm",
                                               signed=bool((stage.after < 0).any())), key=f"{key}_after")
