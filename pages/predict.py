"""Predict: classify uploads, camera shots, examples or test images, with one or two models side by side."""
from __future__ import annotations

import math

import streamlit as st

from alexnet import charts
from alexnet.data import CIFAR10_CLASSES, normalization
from alexnet.predict import class_names, image_size, network_view
from pages import pickers

TOP = 5   # bars shown for a model with many classes

st.title("Predict")
st.caption("A model trained here knows only CIFAR-10's ten classes (airplane, automobile, bird, cat, deer, dog, frog, "
           "horse, ship, truck). It must give any image one of them, a coffee cup too: look at how sure it is. "
           "torchvision's ImageNet AlexNet (in the model list) names 1000 classes: put the two side by side.")

left, right = st.columns(2)
with left:
    main = pickers.model_picker("predict_model", "Model")
with right:
    second = pickers.model_picker("predict_model_2", "Second model, side by side (optional)", optional=True)
if main is None:
    st.stop()
models = [m for m in (main, second) if m is not None]

chosen = pickers.image_picker("predict")
usable = [(img, d) for img in chosen if (d := pickers.decoded_or_error(img)) is not None]
if not usable:
    if not chosen:
        st.info("Pick an example, a test image, or upload images to classify them.")
    st.stop()

if len(usable) > 1:
    st.subheader(f"{len(usable)} images")
    columns = st.columns(min(len(usable), 6))
    for n, (img, d) in enumerate(usable):
        p = pickers.prediction(img.digest, main.key, d.pixels(main.model), main.model)
        columns[n % len(columns)].image(d.shown(main.model), caption=f"{img.name}: {p.label} {p.confidence:.0%}",
                                        width=160)  # a thumbnail, also where a phone stacks the columns
    names = [img.name for img, _ in usable]
    picked = st.selectbox("Look closer at", range(len(usable)), format_func=lambda i: names[i],
                          key="predict_closer")
    image, decoded = usable[picked]
else:
    image, decoded = usable[0]
st.session_state[pickers.CURRENT_IMAGE] = image

st.subheader(image.name)
cifar_trained = [m.model for m in models if image_size(m.model) == 32]
upsampled = {m.input_size: m for m in cifar_trained if m.input_size != 32}   # one view per size
views = st.columns(1 + bool(cifar_trained) + len(upsampled) + (len(cifar_trained) < len(models)))
views[0].image(decoded.display, caption=f"your image ({decoded.width}x{decoded.height}, centre crop)",
               width="stretch")
shown = 1
if cifar_trained:
    views[1].plotly_chart(charts.image_figure(decoded.small, "what the network sees: 32x32"), width="stretch",
                          key="view32")
    shown = 2
for column, (size, model) in zip(views[shown:], sorted(upsampled.items())):
    seen = network_view(decoded.small, size, *normalization(model)).seen
    column.plotly_chart(charts.image_figure(seen, f"upsampled to {size}x{size} for the {model.variant} variant"),
                        width="stretch", key=f"view{size}")
if len(cifar_trained) < len(models):
    views[-1].plotly_chart(charts.image_figure(decoded.imagenet, "what the ImageNet model sees: resized to 256, "
                                                                 "centre 224x224"), width="stretch", key="view_imagenet")

for column, loaded in zip(st.columns(len(models)), models):
    with column:
        p = pickers.prediction(image.digest, loaded.key, decoded.pixels(loaded.model), loaded.model)
        many = len(p.classes)
        # The true label is a CIFAR-10 class: it means something only to a model of those ten classes.
        true_label = image.true_label if class_names(loaded.model) == CIFAR10_CLASSES else None
        st.markdown(f"**{loaded.label}**")
        a, b, c = st.columns(3)
        a.metric("Predicted", p.label)
        b.metric("Top probability", f"{p.confidence:.1%}")
        c.metric("Uncertainty", f"{p.entropy_bits:.2f} bits",
                 help=f"Entropy of the {many} probabilities: 0 bits = certain, {math.log2(many):.2f} bits = all "
                      f"{many} equally likely.")
        shown_top = TOP if many > 10 else None
        st.plotly_chart(charts.probability_bars(p.probabilities, p.classes, true_label, top=shown_top,
                                                title=f"top {TOP} of {many} classes" if shown_top else None),
                        width="stretch", key=f"bars_{loaded.key}")
        if true_label is not None:
            st.caption(f"The image shows a {p.classes[true_label]}: the model is "
                       + ("right." if p.index == true_label else "wrong."))
        if p.uncertainty > 0.5 or p.confidence < 0.5:
            st.warning(f"The model is unsure ({p.confidence:.0%} for {p.label})."
                       + ("" if true_label is not None else f" If the image shows none of its {many} classes, no "
                                                            "answer would be right."))

st.page_link("pages/explain.py", label="Why this answer? Open the Explain page with this image", icon=":material/visibility:")
