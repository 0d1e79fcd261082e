"""Predict: classify uploads, camera shots, examples or test images, with one or two models side by side."""
from __future__ import annotations

import math

import streamlit as st

from alexnet import charts
from alexnet.inputs import CIFAR_SIZE, ImageForms
from alexnet.data import CIFAR10_CLASSES
from alexnet.predict import class_names
from pages._shared.image_picker import CURRENT_IMAGE, ChosenImage, decoded_or_error, image_picker
from pages._shared.image_results import prediction
from pages._shared.model_picker import LoadedModel, model_picker
from pages._shared.navigation import run_page

TOP = 5   # bars shown for a model with many classes


def closer_look(usable: list[tuple[ChosenImage, ImageForms]], main: LoadedModel) -> tuple[ChosenImage, ImageForms]:
    """The one image to look at: of several, a row of thumbnails with the main model's answer, and a picker."""
    if len(usable) == 1:
        return usable[0]
    st.subheader(f"{len(usable)} images")
    columns = st.columns(min(len(usable), 6))
    for n, (img, forms) in enumerate(usable):
        prepared = forms.for_model(main.model)
        p = prediction(img.digest, main.key, prepared, main.model)
        columns[n % len(columns)].image(prepared.shown, caption=f"{img.name}: {p.label} {p.confidence:.0%}",
                                        width=160)  # a thumbnail, also where a phone stacks the columns
    names = [img.name for img, _ in usable]
    picked = st.selectbox("Look closer at", range(len(usable)), format_func=lambda i: names[i], key="predict_closer")
    return usable[picked]


def network_views(forms: ImageForms, models: list[LoadedModel]) -> None:
    """The image for people beside what each kind of model computes on: 32x32, upsampled, or ImageNet's crop."""
    prepared = [(m.model, forms.for_model(m.model)) for m in models]
    small = [p for _, p in prepared if len(p.pixels) == CIFAR_SIZE]
    upsampled = {p.input_size: (m, p) for m, p in prepared if len(p.pixels) == CIFAR_SIZE and p.input_size != CIFAR_SIZE}
    photos = [p for _, p in prepared if len(p.pixels) != CIFAR_SIZE]
    views = [(small[0].pixels, "what the network sees: 32x32", "view32")] if small else []
    views += [(p.seen(), f"upsampled to {size}x{size} for the {m.variant} variant", f"view{size}")
              for size, (m, p) in sorted(upsampled.items())]
    if photos:
        views.append((photos[0].pixels, "what the ImageNet model sees: resized to 256, centre 224x224", "view_imagenet"))
    columns = st.columns(1 + len(views))
    columns[0].image(forms.picture, caption=f"your image ({forms.width}x{forms.height}, centre crop)", width="stretch")
    for column, (picture, title, key) in zip(columns[1:], views):
        column.plotly_chart(charts.image_figure(picture, title), width="stretch", key=key)


def verdict(image: ChosenImage, forms: ImageForms, loaded: LoadedModel) -> None:
    """One model's answer: the predicted class, how sure it is, and its probabilities."""
    p = prediction(image.digest, loaded.key, forms.for_model(loaded.model), loaded.model)
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


def page() -> None:
    st.title("Predict")
    st.caption("A model trained here knows only CIFAR-10's ten classes (airplane, automobile, bird, cat, deer, dog, "
               "frog, horse, ship, truck). It must give any image one of them, a coffee cup too: look at how sure it "
               "is. torchvision's ImageNet AlexNet (in the model list) names 1000 classes: put the two side by side.")
    left, right = st.columns(2)
    with left:
        main = model_picker("predict_model", "Model")
    with right:
        second = model_picker("predict_model_2", "Second model, side by side (optional)", optional=True)
    if main is None:
        return
    models = [m for m in (main, second) if m is not None]
    chosen = image_picker("predict")
    usable = [(img, d) for img in chosen if (d := decoded_or_error(img)) is not None]
    if not usable:
        if not chosen:
            st.info("Pick an example, a test image, or upload images to classify them.")
        return
    image, forms = closer_look(usable, main)
    st.session_state[CURRENT_IMAGE] = image
    st.subheader(image.name)
    network_views(forms, models)
    for column, loaded in zip(st.columns(len(models)), models):
        with column:
            verdict(image, forms, loaded)
    st.page_link("pages/explain.py", label="Why this answer? Open the Explain page with this image",
                 icon=":material/visibility:")


run_page(page)
