"""The Evaluate page's first tab: a model's test-set evaluation (confusion, per-class recall and precision, the most
confident mistakes, each opening the Explain page on that image and model).

The evaluation of a finished run is its record (`result.json`: confusion matrix, each test image's
answer) with, once computed in the background, how sure it was of each answer; the demo model's
is computed from one background pass over the test set in use (`alexnet.evaluation`).
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from alexnet import analysis_jobs, charts, evaluation
from alexnet.data import CIFAR10_CLASSES
from pages._shared.analysis_subject import Chosen, task_ready
from pages._shared.image_picker import CURRENT_IMAGE, ChosenImage, enlarge, png_bytes
from pages._shared.model_picker import CURRENT_MODEL

GALLERY = 18          # mistakes shown
COLUMNS = 6
ALL = "any class"
PROBABILITIES = analysis_jobs.Task("probabilities")
EVALUATION, FILTERS = "Evaluation", "What each filter responds to"   # the tabs


@st.cache_data(show_spinner=False, max_entries=8)
def _evaluation(key: str, _chosen: Chosen) -> evaluation.Evaluation | None:
    """The evaluation, with each answer's confidence once the probabilities are kept; None (for the demo) before."""
    probs = evaluation.load_probabilities(_chosen.subject)
    labels = _chosen.data.test_y.numpy()
    if _chosen.result is not None:
        return evaluation.from_result(_chosen.result, labels, probs)
    return None if probs is None else evaluation.from_probabilities(probs, labels, _chosen.data.classes)


def draw_evaluation(chosen: Chosen) -> None:
    task_ready(chosen, PROBABILITIES, "every test image's class probabilities")
    result = _evaluation(chosen.key(PROBABILITIES), chosen)
    if result is None:
        return
    a, b, c = st.columns(3)
    a.metric("Test accuracy", f"{result.accuracy:.1%}")
    b.metric("Test images", f"{int(result.counts.sum()):,}")
    c.metric("Wrong answers", f"{int(result.counts.sum() - np.trace(result.counts)):,}")
    left, right = st.columns([3, 2])
    with left:
        cells = st.segmented_control("Cells show", ["shares", "counts"], default="shares", key="evaluate_cells",
                                     required=True, help="Hover over a cell for both.")
        st.plotly_chart(charts.confusion_figure(result.counts, result.classes, cells=cells), key="evaluate_confusion",
                        config=charts.png_config(f"confusion-{chosen.choice.label.split()[0]}"))
        st.caption("Rows: the true class, each summing to 100%; columns: the model's answer.")
    with right:
        draw_class_table(result)
    st.subheader("Most confident mistakes")
    if result.recorded:
        st.caption("The answers are the run's record (result.json)."
                   + (f" A fresh fp32 pass gives the same answer on {result.agreement:,} of {len(result.labels):,} "
                      "images; the confidence shown is its probability for the recorded answer."
                      if result.agreement is not None else ""))
    if result.confidence is None:
        st.info("The mistakes can be ordered by confidence once the probabilities above are computed; "
                "until then they are in test-set order.")
    draw_mistakes(chosen, result)


def draw_class_table(result: evaluation.Evaluation) -> None:
    images, answered = result.counts.sum(axis=1), result.counts.sum(axis=0)
    rows = [{"class": name, "images": int(images[i]), "recall": "–" if r is None else f"{r:.1%}",
             "precision": "undefined (never answered)" if p is None else f"{p:.1%}", "answered": int(answered[i])}
            for i, (name, r, p) in enumerate(zip(result.classes, result.recall, result.precision))]
    st.dataframe(rows, hide_index=True, key="evaluate_classes", column_config={
        "recall": st.column_config.TextColumn(help="Of the class's images, the share answered right: the run's "
                                                   "per-class accuracy"),
        "precision": st.column_config.TextColumn(help="Of the answers naming the class, the share that are right"),
        "answered": st.column_config.NumberColumn(help="How often the model answered this class")})
    never = [n for n, p in zip(result.classes, result.precision) if p is None]
    if never:
        st.caption(f"Never answered: {', '.join(never)}. Their precision is undefined (no answer to be right or "
                   "wrong), not 0.")


def draw_mistakes(chosen: Chosen, result: evaluation.Evaluation) -> None:
    classes = list(result.classes)
    left, right = st.columns(2)
    true = left.selectbox("True class", [ALL, *classes], key="evaluate_true")
    answered = right.selectbox("Answered as", [ALL, *classes], key="evaluate_answer")
    mistakes = result.mistakes(None if true == ALL else classes.index(true),
                               None if answered == ALL else classes.index(answered))
    if not mistakes:
        st.info("No mistake of that kind.")
        return
    shown = mistakes[:GALLERY]
    st.caption(f"{len(mistakes):,} mistakes; the {len(shown)} the model was surest of. Click **Explain** under a "
               "picture to see why it answered so.")
    for start in range(0, len(shown), COLUMNS):
        for column, mistake in zip(st.columns(COLUMNS), shown[start:start + COLUMNS]):
            with column:
                draw_mistake(chosen, mistake, classes)


def draw_mistake(chosen: Chosen, mistake: evaluation.Mistake, classes: list[str]) -> None:
    small = chosen.data.test_x[mistake.index].permute(1, 2, 0).numpy()
    sure = "" if np.isnan(mistake.confidence) else f" {mistake.confidence:.0%}"
    st.image(enlarge(small, 3), output_format="PNG", width=96,
             caption=f"#{mistake.index} {classes[mistake.true]} → {classes[mistake.predicted]}{sure}")
    if st.button("Explain", key=f"evaluate_explain_{mistake.index}", icon=":material/visibility:"):
        open_in_explain(chosen, mistake.index, small, mistake.true)


def open_in_explain(chosen: Chosen, index: int, small: np.ndarray, true: int) -> None:
    """The Explain page, on this test image and this model (its pickers read both from the session)."""
    true_label = true if tuple(chosen.data.classes) == CIFAR10_CLASSES else None
    st.session_state[CURRENT_IMAGE] = ChosenImage(
        f"test image #{index} of {chosen.subject.source.label}", png_bytes(small), "test set", true_label)
    st.session_state[CURRENT_MODEL] = chosen.choice.label
    st.switch_page("pages/explain.py")
