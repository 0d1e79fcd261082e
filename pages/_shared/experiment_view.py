"""The Compare page's LRN-versus-BN experiment: the form that queues paired runs over seeds, and each experiment's
progress, per-seed table, seed bands and verdict (`alexnet.experiment`), polled every 2 s while its runs train."""
from __future__ import annotations

import time

import streamlit as st

from alexnet import charts, compare, experiment
from alexnet import data as datasets
from alexnet import runs as run_records
from alexnet.cli import experiment_command
from pages._shared.compare_runs import rerun_if_changed
from pages._shared.dataset import dataset_in_use, job_data_dir
from pages._shared.devices import where_runs_train
from pages._shared.search_view import search_view

NORM_COLORS = charts.NORM_COLORS


def plan_from_form() -> experiment.ExperimentPlan:
    ss = st.session_state
    data_dir = job_data_dir(dataset_in_use())
    return experiment.ExperimentPlan(
        variant=ss["exp.variant"], seeds=int(ss["exp.seeds"]), epochs=int(ss["exp.epochs"]), recipe=ss["exp.recipe"],
        batch_size=int(ss["exp.batch_size"]), max_train_images=int(ss["exp.max_train_images"]), data_dir=data_dir,
        threads=int(ss["exp.threads"]), search_steps=int(ss["exp.search_steps"]))


def start_experiment() -> None:
    """Button callback: the form's plan, launched."""
    launch_plan(plan_from_form())


def launch_plan(plan: experiment.ExperimentPlan) -> None:
    """Record the experiment and queue its runs (or its search) under a free name, once per click; the notice
    and the experiment chosen say what happened."""
    last = st.session_state.get("exp.last_start")
    if last and last[0] == repr(plan) and time.monotonic() - last[1] < 5:
        return  # a double click
    try:
        launched = experiment.launch(plan, run_records.runs_root())
    except (ValueError, OSError, RuntimeError) as err:
        st.session_state["exp.notice"] = ("error", f"Not started: {err}")
        return
    st.session_state["exp.last_start"] = (repr(plan), time.monotonic())
    st.session_state["exp.chosen"] = launched.name
    first = (f"**{launched.name}** searches each norm's learning rate, then queues" if launched.search is not None
             else f"Queued **{launched.name}**:")
    st.session_state["exp.notice"] = ("success", f"{first} {2 * plan.seeds} runs, each on the first free device. "
                                                 "You can close this tab; they go on.")


def experiment_form() -> None:
    ss = st.session_state
    defaults = experiment.ExperimentPlan()
    for name in ("variant", "seeds", "epochs", "recipe", "batch_size", "max_train_images", "threads", "search_steps"):
        ss.setdefault(f"exp.{name}", getattr(defaults, name))
    a, b, c, d = st.columns(4)
    a.selectbox("Variant", experiment.COMPARABLE_VARIANTS, key="exp.variant", persist_state="session",
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
    c.number_input("Search steps per norm", 5, 10_000, step=10, key="exp.search_steps", persist_state="session",
                   disabled=not experiment.RECIPES[ss["exp.recipe"]].searched,
                   help="The tuned recipe's budget: the range test's steps (one batch each), the same for both norms.")
    st.radio("Recipe", list(experiment.RECIPES), key="exp.recipe", persist_state="session", horizontal=True,
             format_func=lambda r: experiment.RECIPES[r].title)
    plan = plan_from_form()
    st.caption(f"**The recipe.** {experiment.RECIPES[plan.recipe].description}")
    problems = plan.problems()
    source = dataset_in_use()
    if not isinstance(source, datasets.DatasetSource):
        problems.append(f"no dataset: {source}")
    else:
        search = f"a range test of {plan.search_steps} steps per norm, then " \
            if experiment.RECIPES[plan.recipe].searched else ""
        st.caption(f"{search}{2 * plan.seeds} runs of {plan.epochs} epochs on {source.label}, {where_runs_train()}. "
                   "The same from a terminal:")
        st.code(experiment_command(plan), language="bash", wrap_lines=True)
    if problems:
        st.error("\n".join(f"- {p}" for p in problems))
    st.button("Start the experiment", type="primary", key="exp.start", on_click=start_experiment,
              disabled=bool(problems), icon=":material/science:")


VERDICT_BOXES = {"clear": st.success, "likely": st.info, "unclear": st.warning, "cannot tell": st.warning,
                 "no data": st.info}


def open_in_comparison(names: list[str]) -> None:
    st.session_state["compare.runs"] = names


def experiment_view(root, name: str, active_when_drawn: frozenset[str], shown_as=None) -> None:
    """The experiment `name` of the runs folder `root`; `shown_as(run_name)`: the names its runs have in the Runs
    tab, where they are not their own (shipped runs)."""
    try:
        record = experiment.load(root, name)
    except FileNotFoundError as err:
        st.error(str(err))
        return
    summary = experiment.summarize(record, root)
    rerun_if_changed(experiment.active_runs(record, root), active_when_drawn)
    states = ", ".join(f"{n} {s}" for s, n in sorted(summary.states.items()))
    if summary.total:  # a tuned experiment has none while it searches
        st.progress(summary.finished / max(summary.total, 1),
                    text=f"{summary.finished} of {summary.total} runs finished ({states})"
                         + (f"; {len(summary.missing)} deleted" if summary.missing else ""))
    plan = record.plan
    st.caption(f"{plan['variant']} variant, {plan['epochs']} epochs, seeds {record.seeds}, "
               f"{'all' if not plan['max_train_images'] else format(plan['max_train_images'], ',')} training "
               f"images. **Recipe:** {record.recipe_description}")
    VERDICT_BOXES.get(summary.verdict.level, st.info)(f"**Verdict.** {summary.verdict.text}",
                                                      icon=":material/balance:")
    if summary.search is not None:
        search_view(root, summary)
    draw_arms(summary)
    draw_pairs(summary)
    bands = [(arm.label, {r.name: r.metrics for r in arm.runs}) for arm in summary.arms.values()]
    left, right = st.columns(2)
    for column, metric in ((left, "acc"), (right, "loss")):
        column.plotly_chart(charts.seed_band_figure(bands, metric, height=360, colors=NORM_COLORS),
                            key=f"exp.band.{metric}", config=charts.png_config(f"{name}-{metric}"))
    st.button("Open these runs in Runs side by side", key="exp.open", on_click=open_in_comparison,
              args=([(shown_as or str)(r.name) for r in summary.runs],), icon=":material/compare_arrows:")


def draw_arms(summary: experiment.ExperimentSummary) -> None:
    """Each norm's test accuracy: mean and spread over the finished seeds."""
    for column, arm in zip(st.columns(len(summary.arms)), summary.arms.values()):
        accs = arm.values("test_accuracy")
        if accs:
            mean, std = compare.mean_std(accs)
            value = f"{mean:.1%}" + (f" ± {std * 100:.1f}" if len(accs) > 1 else "")
        else:
            value = "–"
        column.metric(f"{arm.label}: test accuracy", value, help="Mean ± standard deviation over the finished seeds.",
                      delta=f"{len(accs)} of {len(arm.runs)} seeds finished", delta_color="off", delta_arrow="off")


def draw_pairs(summary: experiment.ExperimentSummary) -> None:
    """One row a seed: the two norms' test accuracies and their difference, in percent."""
    def percent(value: float | None) -> float | None:
        return None if value is None else 100 * value

    st.dataframe([{"seed": p["seed"], "LRN test acc (%)": percent(p["lrn"]), "BN test acc (%)": percent(p["bn"]),
                   "BN − LRN (points)": percent(p["difference"])} for p in summary.pairs], hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.2f")
                                for c in ("LRN test acc (%)", "BN test acc (%)", "BN − LRN (points)")})
