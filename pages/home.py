"""Home: what AlexNet is, what each variant here changes from the paper, its layers, and how runs compare.

The variant texts come from `alexnet.models` (its descriptions and builders' docstrings), the
diagram from `models.summary`, the published figures from `alexnet.history`, and this
project's figures from finished runs' result.json: nothing on this page is typed in twice.
"""
from __future__ import annotations

import inspect

import streamlit as st

from alexnet import charts, history, imagenet
from alexnet import runs as run_records
from alexnet.models import VARIANTS, build, summary
from alexnet.norms import NORM_LABELS
from pages._shared.navigation import PAGES, run_page


@st.cache_data(show_spinner=False, max_entries=8)
def layer_rows(variant: str, norm: str) -> list:
    return summary(build(variant, norm))


def introduction() -> None:
    paper = history.PAPER
    st.title("AlexNet Lab")
    st.markdown(
        f"In 2012 a convolutional network trained on two gaming GPUs won the ImageNet challenge (ILSVRC-2012) with a "
        f"top-5 error of **{paper['top5_error']:.1%}**, against **{paper['runner_up_top5_error']:.1%}** for the next "
        f"best entry. That network, *AlexNet* ({paper['authors']}, “{paper['title']}”, {paper['venue']}), has five "
        f"convolutional and three fully connected layers and about {paper['parameters']} parameters, trained on "
        f"{paper['hardware']}. Its ingredients became the standard kit: ReLU activations instead of tanh, which train "
        "several times faster; dropout in the fully connected layers; overlapping max-pooling; data augmentation; "
        "and a local response normalisation (LRN) after the first two layers that later networks replaced with batch "
        "norm. It is the result that turned computer vision to deep learning.")
    st.markdown("Here you can **train** AlexNet variants on CIFAR-10 and watch their curves, **predict** classes of "
                "your own images, **explain** what a model looks at, **evaluate** where a model fails and what its "
                "filters respond to, and **compare** runs, LRN against batch norm included.")
    others = [p for p in PAGES if not p.default]
    for column, link in zip(st.columns(len(others)), others):
        column.page_link(f"pages/{link.file}", label=link.title, icon=link.icon)


def variants() -> None:
    st.header("The variants")
    st.markdown("Every variant takes a **norm**: `lrn` (the paper's, with its constants n=5, α=1e-4, β=0.75, k=2), "
                "`bn` (batch norm) or `none`, placed after the ReLU of conv1 and conv2 where the paper put LRN. So "
                "“LRN versus BN” changes one argument and nothing else.")
    for name, variant in VARIANTS.items():
        with st.container(border=True):
            st.markdown(f"**{name}** · input {variant.input_size}×{variant.input_size}  \n{variant.description}")
            st.caption(inspect.getdoc(variant.build) or "")
    st.markdown(f"The AlexNet most people know is torchvision's ImageNet one (`AlexNet_Weights.IMAGENET1K_V1`, "
                f"{imagenet.PARAMETERS / 1e6:.1f} M parameters): on the **Predict** and **Explain** pages it names any "
                f"photo in ImageNet's 1000 classes; its top-1 accuracy of {imagenet.TOP1:.1%} and top-5 of "
                f"{imagenet.TOP5:.1%} are torchvision's own figures on ImageNet's 50,000 validation images (from the "
                "weights' metadata), not measured here.")


def architecture() -> None:
    st.header("Architecture")
    left, right, _ = st.columns([1, 1, 2])
    variant = left.selectbox("Variant", list(VARIANTS), key="home.variant", persist_state="session")
    if st.session_state.get("home.norm") not in VARIANTS[variant].norms:
        st.session_state["home.norm"] = VARIANTS[variant].norms[0]   # torchvision's AlexNet has no norm layers
    norm = right.selectbox("Norm", VARIANTS[variant].norms, key="home.norm", format_func=NORM_LABELS.get,
                           persist_state="session")
    rows = layer_rows(variant, norm)
    a, b, c = st.columns(3)
    a.metric("Parameters", f"{sum(r.parameters for r in rows):,}")
    b.metric("Multiply-adds per image", f"{sum(r.mult_adds for r in rows) / 1e6:,.0f} M")
    c.metric("Layers with weights", sum(1 for r in rows if r.kind in ("Conv2d", "Linear")))
    st.plotly_chart(charts.architecture_figure(rows, title=f"{variant} variant, norm {norm}"), key="home.architecture",
                    config=charts.png_config(f"alexnet-{variant}-{norm}"))
    st.caption("Top: one block per layer, in forward order, its height growing with the size of its output (channels × "
               "height × width, written on it); hover for parameters and multiply-adds. Bottom: where the parameters "
               "are (the fully connected layers) and where the computation is (the convolutions), on a log scale.")
    with st.expander("Every layer as a table"):
        st.dataframe([{"layer": label, "module": r.name, "type": r.kind, "output": " × ".join(map(str, r.output_shape)),
                       "parameters": r.parameters, "multiply-adds": r.mult_adds}
                      for label, r in zip(charts.layer_labels(rows), rows)], hide_index=True,
                     column_config={"parameters": st.column_config.NumberColumn(format="localized"),
                                    "multiply-adds": st.column_config.NumberColumn(format="localized")})


# Columns as history.replication_rows orders them (who, accuracy, measured on, caveat first), short headers, fixed
# widths; rows of three lines, in which Streamlit wraps long texts, so a caveat is read whole, not cut.
TABLE_CONFIG = {
    "source": st.column_config.TextColumn(width=180),
    "accuracy (%)": st.column_config.NumberColumn("acc. %", format="%.2f", width=60, help="CIFAR-10 accuracy (%)."),
    "measured on": st.column_config.TextColumn(width=180, help="The images the figure was measured on."),
    "caveat": st.column_config.TextColumn(width=330, help="What keeps the figure from comparing on equal terms."),
    "hardware": st.column_config.TextColumn(width=120),
    "as reported": st.column_config.TextColumn(width=260, help="The claim in the source's own words."),
    "network and recipe": st.column_config.TextColumn("recipe", width=300,
                                                      help="The network and its training recipe."),
    "full CIFAR-10": st.column_config.CheckboxColumn("full test set", help="Measured on the full CIFAR-10 test set."),
}
TABLE_ROW_HEIGHT = 72  # px: over Streamlit's 4rem, the height from which it wraps text in cells


def as_table(rows: list[dict]) -> list[dict]:
    """Accuracy in percent, as the column name says."""
    return [{("accuracy (%)" if k == "accuracy" else k): (100 * v if k == "accuracy" and v is not None else v)
             for k, v in r.items()} for r in rows]


def replication() -> None:
    st.header("Replication: AlexNet on CIFAR-10")
    st.markdown("What earlier reimplementations report, as their sources print it, beside what this project's own "
                "finished runs measure. Each figure says which data it was measured on and on what hardware: a "
                "figure on a subset, or one where the test set also picked the best epoch, is not the same kind of "
                "figure as a test accuracy measured once on the full CIFAR-10.")
    published, own = history.replication_rows(run_records.list_runs(run_records.runs_root()))
    st.plotly_chart(charts.replication_figure(published + own), key="home.replication",
                    config=charts.png_config("alexnet-cifar10-replication"))
    st.caption("Grey: published figures; coloured by norm: this project's runs (LRN orange, BN red), hatched where "
               "measured on a subset or the embedded sample rather than the full CIFAR-10 test set.")
    st.markdown("**Published**")
    st.dataframe(as_table(published), hide_index=True, column_config=TABLE_CONFIG, row_height=TABLE_ROW_HEIGHT)
    st.markdown("**This project** (the best finished run of each variant and norm)")
    if own:
        st.dataframe(as_table(own), hide_index=True, column_config=TABLE_CONFIG, row_height=TABLE_ROW_HEIGHT)
    else:
        st.info("No finished runs yet in this runs folder, so there is nothing of ours to set beside them. Train one on "
                "the **Train** page (the fast CPU demo takes a few minutes), or run the LRN-versus-BN experiment on the "
                "**Compare** page.", icon=":material/info:")
        st.page_link("pages/train.py", label="Go to the Train page", icon=":material/model_training:")


def page() -> None:
    introduction()
    variants()
    architecture()
    replication()


run_page(page)
