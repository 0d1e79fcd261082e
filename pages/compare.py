"""Compare: runs side by side (curves, table, differing config, confusion, images), and the LRN-versus-BN experiment.

Reads run folders only (`alexnet.runs`); the table, the differing keys, the seed bands and the
verdict come from `alexnet.compare` and `alexnet.experiment`. Views of runs that are still
training are fragments that poll every 2 s, and stop polling once nothing trains.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import streamlit as st

from alexnet import charts, compare, experiment, queues
from alexnet import data as datasets
from alexnet import runs as run_records
from alexnet.history import LRN_STUDIES
from pages import common, environment, sharing

REFRESH = "2s"
ACTIVE = ("queued", "running")
GALLERY = 12
NORM_COLORS = charts.NORM_COLORS


def rerun_if_changed(active_now: frozenset[str], active_when_drawn: frozenset[str]) -> None:
    """A run started or ended: redraw the whole page, so polling starts or stops with it."""
    if active_now != active_when_drawn:
        st.rerun()


# ---------------------------------------------------------------- runs side by side

def default_choice(all_runs: list[run_records.Run]) -> list[str]:
    finished = [r.name for r in all_runs if r.state == "finished"]
    return (finished or [r.name for r in all_runs])[:2]


def curve_controls() -> tuple[str, str, float, bool]:
    a, b, c, d = st.columns([2, 2, 3, 1])
    x = a.segmented_control("x axis", ["epoch", "step", "time"], key="compare.x", default="epoch", required=True,
                            persist_state="session", format_func=lambda v: "time (s)" if v == "time" else v,
                            help="time: training seconds of each run (evaluation and waiting in the queue left out).")
    per = b.segmented_control("Training curve", ["step", "epoch"], key="compare.per", default="epoch",
                              required=True, format_func=lambda p: f"per {p}", persist_state="session")
    smoothing = c.slider("Smoothing", 0.0, 0.99, 0.0, step=0.01, key="compare.smoothing", persist_state="session",
                         help="Debiased exponential moving average, as TensorBoard's; the raw curve stays faint behind.")
    log_y = d.checkbox("log y", key="compare.log_y", persist_state="session")
    return x, per, smoothing, log_y


def draw_curves(chosen: list[run_records.Run], colors: dict[str, str]) -> None:
    x, per, smoothing, log_y = curve_controls()
    events = {r.name: r.metrics for r in chosen}
    revision = "|".join(sorted(events))
    for metric in ("loss", "acc"):  # full width; one legend entry a run, under the plot, so it keeps its width
        fig = charts.curves_figure(events, metric, x, smoothing, log_y, per, height=380, colors=colors,
                                   legend="runs")
        fig.update_layout(uirevision=revision)
        st.plotly_chart(fig, key=f"compare.chart.{metric}", config=charts.png_config(f"compare-{metric}"))
    st.caption("Training dashed, validation solid, ★ the test accuracy at the end. Each run keeps its colour on "
               "every chart and page; click a run in the legend to hide its curves. The camera icon of a chart "
               "saves it as PNG.")
    groups = compare.group_by_seed(chosen)
    if any(len(g.runs) > 1 for g in groups):
        if st.toggle("Group runs that differ only by seed (mean and spread)", key="compare.group",
                     persist_state="session"):
            bands = [(g.label, {r.name: r.metrics for r in g.runs}) for g in groups]
            band_colors = charts.distinct_colors([g.label for g in groups])
            left, right = st.columns(2)
            for column, metric in ((left, "loss"), (right, "acc")):
                column.plotly_chart(charts.seed_band_figure(bands, metric, height=380, colors=band_colors),
                                    key=f"compare.band.{metric}",
                                    config=charts.png_config(f"compare-seeds-{metric}"))
            st.caption("Line: the mean over seeds; band: ± one standard deviation; each run faint behind. The legend "
                       "says how many runs a band holds.")


def summary_columns(target: float) -> dict:
    """The summary table's column labels and help: short headers (the CSV keeps the full names), the run pinned
    while the rest scrolls sideways."""
    column = st.column_config
    return {
        "run": column.TextColumn(pinned=True),
        "test acc (%)": column.NumberColumn("test %", format="%.2f",
                                            help="Test accuracy (%), measured once when the run finished."),
        "best val acc (%)": column.NumberColumn("best val %", format="%.2f",
                                                help="Best validation accuracy (%) over the epochs."),
        f"epochs to {100 * target:g}% val": column.NumberColumn(
            f"epochs to {100 * target:g}%", help=f"The first epoch whose validation accuracy reached "
                                                 f"{100 * target:g}% (the target above); empty: not reached."),
        "best epoch": column.NumberColumn(help="The epoch of the best validation accuracy."),
        "epochs": column.TextColumn(help="Epochs done / planned."),
        "s / epoch": column.NumberColumn("s/epoch", format="%.1f", help="Training seconds per epoch."),
        "images / s": column.NumberColumn("img/s", format="%.0f", help="Training images per second."),
        "peak lr": column.NumberColumn(format="%g"),
        "parameters": column.NumberColumn(format="localized"),
    }


def draw_table(chosen: list[run_records.Run]) -> list[dict]:
    a, _ = st.columns([1, 3])
    target = a.number_input("Target validation accuracy (%)", 1.0, 100.0, 50.0, step=5.0, key="compare.target",
                            persist_state="session",
                            help="The table's 'epochs to' column: the first epoch that reached it.") / 100
    rows = compare.summary_rows([compare.summarize_run(r, target) for r in chosen], target)
    st.container(key="compare.summary").dataframe(rows, hide_index=True, column_config=summary_columns(target),
                                                  placeholder="–")
    return rows


def draw_config_diff(chosen: list[run_records.Run]) -> None:
    if len(chosen) == 1:  # nothing to set it against: its own config, and how to get a comparison
        run = chosen[0]
        st.markdown(f"**Config of {run.name}**: pick a second run above to see which keys differ.")
        with st.expander(f"Its {len(run.config)} config keys"):
            st.dataframe([{"key": k, "value": str(v)} for k, v in run.config.items()], hide_index=True)
        return
    differ, shared = compare.differing_keys({r.name: r.config for r in chosen})
    if differ:
        st.markdown(f"**Config keys that differ** ({len(differ)})")
        st.container(key="compare.differ").dataframe(
            [{"key": k, **{run: str(v) for run, v in values.items()}} for k, values in differ.items()], hide_index=True)
    else:
        st.markdown("**The configs are identical** (a rerun: any difference is noise, timing or hardware).")
    with st.expander(f"{len(shared)} config keys they share"):
        st.dataframe([{"key": k, "value": str(v)} for k, v in shared.items()], hide_index=True)


def draw_exports(chosen: list[run_records.Run], rows: list[dict]) -> None:
    a, b, c, d = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
    a.download_button("Table as CSV", compare.rows_to_csv(rows), file_name="runs.csv", mime="text/csv",
                      icon=":material/table:", key="compare.csv")
    b.download_button("Metrics + configs (JSON)", json.dumps(compare.export_runs(chosen), indent=1),
                      file_name="runs.json", mime="application/json", icon=":material/download:",
                      key="compare.json", help="Every chosen run's config, status, result and metrics events.")
    names = [r.name for r in chosen]
    shared = c.selectbox("Run to share", names, key="compare.share", label_visibility="collapsed") \
        if len(names) > 1 else names[0]
    sharing.export_button(chosen[names.index(shared)], "compare.export", d)


def compare_view(root, names: tuple[str, ...], active_when_drawn: frozenset[str]) -> None:
    chosen = [run_records.load_run(root / n) for n in names if (root / n).is_dir()]
    rerun_if_changed(frozenset(r.name for r in chosen if r.state in ACTIVE), active_when_drawn)
    draw_curves(chosen, charts.distinct_colors(names))
    st.subheader("Summary")
    rows = draw_table(chosen)
    draw_config_diff(chosen)
    environment.draw_environment(chosen)
    draw_exports(chosen, rows)


@st.cache_data(show_spinner=False, max_entries=16)
def _mismatch(run_path: str, modified: float, source: datasets.DatasetSource) -> str | None:
    result = run_records.read_json(Path(run_path) / "result.json", {}) or {}
    labels = common.load_dataset(source).test_y.tolist()
    return compare.dataset_mismatch(result, labels, source.label)


def test_set_for(run: run_records.Run) -> tuple[datasets.Cifar10 | None, str | None]:
    """The test images the run was evaluated on, or why they cannot be shown."""
    named = run.config.get("data_dir") or common.data_dir() or os.environ.get(datasets.ENV_VAR)
    source = common.dataset_source(named)
    if not isinstance(source, datasets.DatasetSource) and run.imported:  # its folder was on the exporting machine
        source = common.dataset_source(common.data_dir() or os.environ.get(datasets.ENV_VAR))
    if not isinstance(source, datasets.DatasetSource):
        return None, f"its dataset is not available here: {source}"
    problem = _mismatch(str(run.path), (run.path / "result.json").stat().st_mtime, source)
    if problem:
        return None, f"the dataset differs: {problem}"
    return common.load_dataset(source), None


def enlarge(image: np.ndarray, factor: int = 3) -> np.ndarray:
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def draw_gallery(title: str, indices: list[int], data: datasets.Cifar10, a: run_records.Run,
                 b: run_records.Run) -> None:
    st.markdown(f"**{title}**: {len(indices):,} images")
    if not indices:
        return
    pa, pb = a.result["predictions"], b.result["predictions"]
    shown = indices[:GALLERY]
    labels = data.test_y.tolist()
    st.image([enlarge(data.test_x[i].permute(1, 2, 0).numpy()) for i in shown], width=96, output_format="PNG",
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
    names = [r.name for r in done]
    left, right = st.columns(2)
    a_name = left.selectbox("Run A", names, index=0, key="compare.a")
    b_name = right.selectbox("Run B", names, index=1, key="compare.b")
    a, b = (done[names.index(n)] for n in (a_name, b_name))
    for column, run in ((left, a), (right, b)):
        column.plotly_chart(charts.confusion_figure(run.result["confusion_matrix"], run.result["classes"],
                                                    title=f"{run.name}: {run.result['test_accuracy']:.1%} test"),
                            key=f"compare.confusion.{'a' if run is a else 'b'}",
                            config=charts.png_config(f"confusion-{run.name}"))
    st.caption("Rows: the true class, each summing to 100%; hover for the counts. Same colour scale for both.")
    if a.name == b.name:
        st.info("Pick two different runs to see the images on which they disagree.")
        return
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
    a_only, b_only = compare.disagreements(a.result["predictions"], b.result["predictions"], data.test_y.tolist())
    if klass != "all classes":
        wanted = data.classes.index(klass)
        labels = data.test_y.tolist()
        a_only, b_only = [i for i in a_only if labels[i] == wanted], [i for i in b_only if labels[i] == wanted]
    left, right = st.columns(2)
    with left:
        draw_gallery("A right, B wrong", a_only, data, a, b)
    with right:
        draw_gallery("B right, A wrong", b_only, data, a, b)
    st.caption(f"Test images of {data.source.label}, enlarged with their real pixels; captions: index in the test "
               f"set, true class, then the answers of A ({a.name}) and B ({b.name}).")


def add_to_comparison(name: str) -> None:
    st.session_state["compare.runs"] = [*st.session_state.get("compare.runs", []), name]


def runs_tab(root, all_runs: list[run_records.Run]) -> None:
    with st.expander("Import a shared run", icon=":material/move_to_inbox:"):
        sharing.import_box(root, "compare.import", on_imported=add_to_comparison)
    if not all_runs:
        st.info("No runs yet. Train some on the **Train** page, or start the LRN-versus-BN experiment "
                "(the other tab), then come back to compare them.", icon=":material/info:")
        st.page_link("pages/train.py", label="Go to the Train page", icon=":material/model_training:")
        return
    by_name = {r.name: r for r in all_runs}
    if "compare.runs" not in st.session_state:
        st.session_state["compare.runs"] = default_choice(all_runs)
    else:  # a run deleted elsewhere leaves the selection
        st.session_state["compare.runs"] = [n for n in st.session_state["compare.runs"] if n in by_name]
    # Names only: the browser keeps the label an option had when it was picked, so a state in it would go stale
    # (a run picked while training would read "running" for ever); the summary table shows each run's state.
    names = st.multiselect("Runs to compare", list(by_name), key="compare.runs", persist_state="session",
                           help="Finished, stopped or still training: a run in progress updates live.")
    if not names:
        st.info("Pick two or more runs.")
        return
    if len(names) == 1:
        st.caption("One run chosen: pick another to compare.")
    active = frozenset(n for n in names if by_name[n].state in ACTIVE)
    st.fragment(compare_view, run_every=REFRESH if active else None)(root, tuple(names), active)
    draw_side_by_side([by_name[n] for n in names])


# ---------------------------------------------------------------- the LRN-versus-BN experiment

def plan_from_form() -> experiment.ExperimentPlan:
    ss = st.session_state
    source = common.dataset_source(common.data_dir() or os.environ.get(datasets.ENV_VAR))
    data_dir = str(source.path) if isinstance(source, datasets.DatasetSource) and source.kind != "sample" \
        else common.data_dir()
    return experiment.ExperimentPlan(
        variant=ss["exp.variant"], seeds=int(ss["exp.seeds"]), epochs=int(ss["exp.epochs"]), recipe=ss["exp.recipe"],
        batch_size=int(ss["exp.batch_size"]), max_train_images=int(ss["exp.max_train_images"]), data_dir=data_dir,
        threads=int(ss["exp.threads"]))


def start_experiment() -> None:
    """Button callback: record the experiment and queue its runs, once per click."""
    plan = plan_from_form()
    last = st.session_state.get("exp.last_start")
    if last and last[0] == repr(plan) and time.monotonic() - last[1] < 5:
        return  # a double click
    try:
        launched = experiment.launch(plan, common.runs_root())
    except (ValueError, OSError, RuntimeError) as err:
        st.session_state["exp.notice"] = ("error", f"Not started: {err}")
        return
    st.session_state["exp.last_start"] = (repr(plan), time.monotonic())
    st.session_state["exp.chosen"] = launched.name
    st.session_state["exp.notice"] = ("success", f"Queued **{launched.name}**: {len(launched.runs)} runs, each on the "
                                                 "first free device. You can close this tab; they go on.")


def command_line(plan: experiment.ExperimentPlan) -> str:
    parts = ["python -m alexnet experiment", f"--variant {plan.variant}", f"--seeds {plan.seeds}",
             f"--epochs {plan.epochs}", f"--recipe {plan.recipe}"]
    if plan.batch_size != 128:
        parts.append(f"--batch-size {plan.batch_size}")
    if plan.max_train_images:
        parts.append(f"--max-train-images {plan.max_train_images}")
    if plan.threads:
        parts.append(f"--threads {plan.threads}")
    if plan.data_dir:
        parts.append(f"--data {plan.data_dir}")
    return " ".join(parts) + " --wait"


def experiment_form() -> None:
    ss = st.session_state
    for name, value in (("variant", "cifar"), ("seeds", 3), ("epochs", 12), ("recipe", "same"), ("batch_size", 128),
                        ("max_train_images", 0), ("threads", 0)):
        ss.setdefault(f"exp.{name}", value)
    a, b, c, d = st.columns(4)
    a.selectbox("Variant", ["cifar", "paper"], key="exp.variant", persist_state="session",
                help="cifar: 32x32-native, minutes per run on a CPU. paper: 227x227, a GPU job.")
    b.number_input("Seeds", 1, 10, step=1, key="exp.seeds", persist_state="session",
                   help="Each seed is one LRN run and one BN run with the same split, order, augmentation and "
                        "initial weights. Three or more seeds let the verdict weigh the difference against the "
                        "spread between seeds.")
    c.number_input("Epochs", 1, 1000, step=1, key="exp.epochs", persist_state="session")
    d.number_input("Max training images", 0, step=512, key="exp.max_train_images", persist_state="session", help="0 = all")
    a, b, c, _ = st.columns(4)
    a.number_input("Batch size", 1, 8192, step=32, key="exp.batch_size", persist_state="session")
    b.number_input("CPU threads per run", 0, 1024, step=1, key="exp.threads", persist_state="session", help="0 = torch's default")
    st.radio("Recipe", list(experiment.RECIPES), key="exp.recipe", persist_state="session", horizontal=True,
             format_func=lambda r: experiment.RECIPES[r].title)
    plan = plan_from_form()
    st.caption(f"**The recipe.** {experiment.RECIPES[plan.recipe].description}")
    problems = plan.problems()
    source = common.dataset_source(common.data_dir() or os.environ.get(datasets.ENV_VAR))
    if not isinstance(source, datasets.DatasetSource):
        problems.append(f"no dataset: {source}")
    else:
        devices = queues.machine_devices()[1:] or ["the CPU"]  # where "auto" trains: the GPUs, else MPS or the CPU
        where = f"spread over the free GPUs ({', '.join(devices)})" if len(devices) > 1 else \
            f"one after the other on {devices[0]}"
        st.caption(f"{2 * plan.seeds} runs of {plan.epochs} epochs on {source.label}, {where}. The same from a "
                   "terminal:")
        st.code(command_line(plan), language="bash", wrap_lines=True)
    if problems:
        st.error("\n".join(f"- {p}" for p in problems))
    st.button("Start the experiment", type="primary", key="exp.start", on_click=start_experiment,
              disabled=bool(problems), icon=":material/science:")


VERDICT_BOXES = {"clear": st.success, "likely": st.info, "unclear": st.warning, "cannot tell": st.warning,
                 "no data": st.info}


def open_in_comparison(names: list[str]) -> None:
    st.session_state["compare.runs"] = names


def experiment_view(root, name: str, active_when_drawn: frozenset[str]) -> None:
    try:
        record = experiment.load(root, name)
    except FileNotFoundError as err:
        st.error(str(err))
        return
    summary = experiment.summarize(record, root)
    rerun_if_changed(frozenset(r.name for r in summary.runs if r.state in ACTIVE), active_when_drawn)
    states = ", ".join(f"{n} {s}" for s, n in sorted(summary.states.items()))
    st.progress(summary.finished / max(summary.total, 1),
                text=f"{summary.finished} of {summary.total} runs finished ({states})"
                     + (f"; {len(summary.missing)} deleted" if summary.missing else ""))
    plan = record.plan
    st.caption(f"{plan['variant']} variant, {plan['epochs']} epochs, seeds {record.seeds}, "
               f"{'all' if not plan['max_train_images'] else format(plan['max_train_images'], ',')} training "
               f"images. **Recipe:** {record.recipe_description}")
    VERDICT_BOXES.get(summary.verdict.level, st.info)(f"**Verdict.** {summary.verdict.text}",
                                                      icon=":material/balance:")
    columns = st.columns(len(summary.arms))
    for column, arm in zip(columns, summary.arms.values()):
        accs = arm.values("test_accuracy")
        if accs:
            mean, std = compare.mean_std(accs)
            value = f"{mean:.1%}" + (f" ± {std * 100:.1f}" if len(accs) > 1 else "")
        else:
            value = "–"
        column.metric(f"{arm.label}: test accuracy", value, help="Mean ± standard deviation over the finished seeds.",
                      delta=f"{len(accs)} of {len(arm.runs)} seeds finished", delta_color="off", delta_arrow="off")
    st.dataframe([{"seed": p["seed"], "LRN test acc (%)": None if p["lrn"] is None else 100 * p["lrn"],
                   "BN test acc (%)": None if p["bn"] is None else 100 * p["bn"],
                   "BN − LRN (points)": None if p["difference"] is None else 100 * p["difference"]}
                  for p in summary.pairs], hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.2f")
                                for c in ("LRN test acc (%)", "BN test acc (%)", "BN − LRN (points)")})
    bands = [(arm.label, {r.name: r.metrics for r in arm.runs}) for arm in summary.arms.values()]
    left, right = st.columns(2)
    for column, metric in ((left, "acc"), (right, "loss")):
        column.plotly_chart(charts.seed_band_figure(bands, metric, height=360, colors=NORM_COLORS),
                            key=f"exp.band.{metric}", config=charts.png_config(f"{name}-{metric}"))
    st.button("Open these runs in Runs side by side", key="exp.open", on_click=open_in_comparison,
              args=([r.name for r in summary.runs],), icon=":material/compare_arrows:")


def experiment_tab(root) -> None:
    (lrn_a, none_a), (lrn_b, none_b) = LRN_STUDIES
    st.markdown(
        "Does the paper's **local response normalisation** (LRN) matter, or is **batch norm** (BN) the change that "
        "counts? This experiment trains pairs of runs that share the variant, data split and order, augmentation, "
        "schedule and initial weights (one seed fixes them all) and differ only in the norm after conv1 and conv2, "
        "over several seeds, then weighs the difference against the spread between seeds.")
    st.caption(f"For context: two student studies at 224x224 over 10 epochs found LRN against no norm "
               f"{lrn_a:.2%} vs {none_a:.2%} and {lrn_b:.2%} vs {none_b:.2%}: LRN changes little.")
    notice = st.session_state.pop("exp.notice", None)
    if notice:
        (st.success if notice[0] == "success" else st.error)(notice[1])
    found = experiment.list_experiments(root)
    with st.expander("Start a paired experiment", expanded=not found, icon=":material/science:"):
        experiment_form()
    if not found:
        st.info("No experiments yet: start one above, or from a terminal with `python -m alexnet experiment`.")
        return
    names = [e.name for e in found]
    if st.session_state.get("exp.chosen") not in names:
        st.session_state["exp.chosen"] = names[0]
    name = st.selectbox("Experiment", names, key="exp.chosen")
    record = found[names.index(name)]
    active = frozenset(r["run"] for r in record.runs
                       if (root / r["run"]).is_dir()
                       and run_records.load_run(root / r["run"], with_metrics=False).state in ACTIVE)
    st.fragment(experiment_view, run_every=REFRESH if active else None)(root, name, active)


# ---------------------------------------------------------------- the page

st.title("Compare")
st.caption("Runs side by side, from their run folders: curves, a summary table, what their configs change, and "
           "where on the test set they differ. The second tab runs the LRN-versus-BN experiment.")
root = common.runs_root()
all_runs = run_records.list_runs(root)
runs_view, experiment_section = st.tabs(["Runs side by side", "LRN versus BN experiment"])
with runs_view:
    runs_tab(root, all_runs)
with experiment_section:
    experiment_tab(root)
