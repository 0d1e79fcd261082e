"""The Compare page's runs side by side on the test set: per-class accuracy, confusion matrices, and the test
images one run gets right and the other wrong (when both were tested on the images found here)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from alexnet import charts, compare
from alexnet import data as datasets
from alexnet import runs as run_records
from pages._shared.dataset import dataset_in_use, load_dataset
from pages._shared.image_picker import enlarge

GALLERY = 12


@st.cache_data(show_spinner=False, max_entries=16)
def _mismatch(run_path: str, modified: float, source: datasets.DatasetSource) -> str | None:
    result = run_records.read_json(Path(run_path) / "result.json", {}) or {}
    labels = load_dataset(source).test_y.tolist()
    return compare.dataset_mismatch(result, labels, source.label)


def test_set_for(run: run_records.Run) -> tuple[datasets.Cifar10 | None, str | None]:
    """The test images the run was evaluated on, or why they cannot be shown."""
    source = dataset_in_use(run.config.get("data_dir"))
    if not isinstance(source, datasets.DatasetSource) and (run.imported or run.shipped):  # its folder was elsewhere
        source = dataset_in_use()
    if not isinstance(source, datasets.DatasetSource):
        return None, f"its dataset is not available here: {source}"
    problem = _mismatch(str(run.path), (run.path / "result.json").stat().st_mtime, source)
    if problem:
        return None, f"the dataset differs: {problem}"
    return load_dataset(source), None


def draw_gallery(title: str, indices: list[int], data: datasets.Cifar10, a: run_records.Run,
                 b: run_records.Run) -> None:
    st.markdown(f"**{title}**: {len(indices):,} images")
    if not indices:
        return
    pa, pb = a.result["predictions"], b.result["predictions"]
    shown = indices[:GALLERY]
    labels = data.test_y.tolist()
    st.image([enlarge(data.test_x[i].permute(1, 2, 0).numpy(), 3) for i in shown], width=96, output_format="PNG",
             caption=[f"#{i} {data.classes[labels[i]]} · A: {data.classes[pa[i]]} · B: {data.classes[pb[i]]}"
                      for i in shown])
    if len(indices) > GALLERY:
        st.caption(f"The first {GALLERY} of {len(indices):,}, in test-set order.")


def draw_side_by_side(chosen: list[run_records.Run]) -> None:
    done = [r for r in chosen if r.state == "finished" and r.result]
    st.subheader("Side by side on the test set")
    if len(done) < 2:
        st.info("Confusion matrices, per-class accuracy and the images one run gets right and the other wrong "
                "appear when two of the chosen runs have finished.")
        return
    per_class = {r.name: r.result["per_class_accuracy"] for r in done if r.result.get("per_class_accuracy")}
    classes = done[0].result.get("classes", [])
    st.plotly_chart(charts.per_class_figure(per_class, classes, title="Per-class test accuracy",
                                            colors=charts.distinct_colors([r.name for r in chosen])),
                    key="compare.per_class", config=charts.png_config("compare-per-class"))
    a, b = draw_confusions(done)
    if a.name == b.name:
        st.info("Pick two different runs to see the images on which they disagree.")
        return
    draw_disagreements(a, b)


def draw_confusions(done: list[run_records.Run]) -> tuple[run_records.Run, run_records.Run]:
    """Runs A and B, picked among the finished ones, and their confusion matrices."""
    names = [r.name for r in done]
    left, right = st.columns(2)
    a_name = left.selectbox("Run A", names, index=0, key="compare.a")
    b_name = right.selectbox("Run B", names, index=1, key="compare.b")
    a, b = (done[names.index(n)] for n in (a_name, b_name))
    for column, run, side in ((left, a, "a"), (right, b, "b")):  # A and B may be one run: keyed by side
        column.plotly_chart(charts.confusion_figure(run.result["confusion_matrix"], run.result["classes"],
                                                    title=f"{run.name}: {run.result['test_accuracy']:.1%} test"),
                            key=f"compare.confusion.{side}",
                            config=charts.png_config(f"confusion-{run.name}"))
    st.caption("Rows: the true class, each summing to 100%; hover for the counts. Same colour scale for both.")
    return a, b


def draw_disagreements(a: run_records.Run, b: run_records.Run) -> None:
    """The test images one run gets right and the other wrong, when both were tested on the images shown here."""
    data, problem = test_set_for(a)
    if data is None:
        st.warning(f"The test images of **{a.name}** cannot be shown: {problem}")
        return
    other, problem = test_set_for(b)
    if other is None or other.source != data.source:
        st.warning(f"**{b.name}** was not tested on the same images as **{a.name}**"
                   + (f": {problem}" if problem else "") + ". Image-by-image comparison needs the same test set.")
        return
    klass = st.selectbox("True class", ["all classes", *data.classes], key="compare.gallery_class")
    labels = data.test_y.tolist()
    a_only, b_only = compare.disagreements(a.result["predictions"], b.result["predictions"], labels)
    if klass != "all classes":
        wanted = data.classes.index(klass)
        a_only, b_only = [i for i in a_only if labels[i] == wanted], [i for i in b_only if labels[i] == wanted]
    left, right = st.columns(2)
    with left:
        draw_gallery("A right, B wrong", a_only, data, a, b)
    with right:
        draw_gallery("B right, A wrong", b_only, data, a, b)
    st.caption(f"Test images of {data.source.label}, enlarged with their real pixels; captions: index in the test "
               f"set, true class, then the answers of A ({a.name}) and B ({b.name}).")
