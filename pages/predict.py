"""Predict: classify uploads, camera shots, examples or test images, with one or two models side by side."""
from __future__ import annotations

import streamlit as st

from alexnet import charts
from alexnet.predict import network_view
from pages import pickers

st.title("Predict")
st.caption("The model knows only CIFAR-10's ten classes (airplane, automobile, bird, cat, deer, dog, frog, horse, "
           "ship, truck). It must give any image one of them, a coffee cup too: look at how sure it is.")

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
        p = pickers.prediction(img.digest, main.key, d.small, main.model)
        columns[n % len(columns)].image(d.display, caption=f"{img.name}: {p.label} {p.confidence:.0%}",
                                        width="stretch")
    names = [img.name for img, _ in usable]
    picked = st.selectbox("Look closer at", range(len(usable)), format_func=lambda i: names[i],
                          key="predict_closer")
    image, decoded = usable[picked]
else:
    image, decoded = usable[0]
st.session_state[pickers.CURRENT_IMAGE] = image

st.subheader(image.name)
sizes = sorted({m.model.input_size for m in models} - {32})
views = st.columns(2 + len(sizes))
views[0].image(decoded.display, caption=f"your image ({decoded.width}x{decoded.height}, centre crop)",
               width="stretch")
views[1].plotly_chart(charts.image_figure(decoded.small, "what the network sees: 32x32"), width="stretch",
                      key="view32")
for column, size in zip(views[2:], sizes):
    seen = network_view(decoded.small, size).seen
    column.plotly_chart(charts.image_figure(seen, f"upsampled to {size}x{size} for the paper variant"),
                        width="stretch", key=f"view{size}")

true_label = image.true_label
for column, loaded in zip(st.columns(len(models)), models):
    with column:
        p = pickers.prediction(image.digest, loaded.key, decoded.small, loaded.model)
        st.markdown(f"**{loaded.label}**")
        a, b, c = st.columns(3)
        a.metric("Predicted", p.label)
        b.metric("Top probability", f"{p.confidence:.1%}")
        c.metric("Uncertainty", f"{p.entropy_bits:.2f} bits",
                 help="Entropy of the ten probabilities: 0 bits = certain, 3.32 bits = all ten equally likely.")
        st.plotly_chart(charts.probability_bars(p.probabilities, p.classes, true_label), width="stretch",
                        key=f"bars_{loaded.key}")
        if true_label is not None:
            verdict = "right" if p.index == true_label else f"wrong: it is a {p.classes[true_label]}"
            st.caption(f"True class known ({p.classes[true_label]}): the model is {verdict}.")
        if p.uncertainty > 0.5 or p.confidence < 0.5:
            st.warning(f"The model is unsure ({p.confidence:.0%} for {p.label}). If the image shows none of its "
                       "ten classes, no answer would be right.")

st.page_link("pages/explain.py", label="Why this answer? Open the Explain page with this image", icon="🔍")
