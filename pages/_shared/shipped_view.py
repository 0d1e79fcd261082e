"""A shipped experiment on the Compare page: its label (data, hardware, command, date), its verdict, arms, chosen
rates and curves through the experiment view, read-only, and "Run it here", which launches the same plan on this
machine's dataset under a free name. The records and their label are `alexnet.shipped`'s."""
from __future__ import annotations

import streamlit as st

from alexnet import data as datasets
from alexnet import shipped
from alexnet.cli import experiment_command
from pages._shared.dataset import dataset_in_use, job_data_dir
from pages._shared.devices import where_runs_train
from pages._shared.experiment_view import experiment_view, launch_plan


def run_here(item: shipped.Shipped) -> None:
    """Button callback: the shipped plan, on the dataset in use here."""
    launch_plan(shipped.rerun_plan(item, job_data_dir(dataset_in_use())))


def draw_label(item: shipped.Shipped) -> None:
    label = item.label
    st.info("**Shipped with the app**: the records (settings, curves, results; no weights) of this experiment as "
            "the project's own command made it, read-only. Your own experiments and runs are listed beside it.",
            icon=":material/inventory_2:")
    with st.container(key="exp.shipped.label"):
        st.markdown(f"**Data:** {label.data}  \n**Hardware:** {label.hardware}  \n"
                    f"**Made:** {label.date}, at code commit `{label.code}`, by:")
        st.code(label.command, language="bash", wrap_lines=True)


def draw_run_here(item: shipped.Shipped) -> None:
    source = dataset_in_use()
    if not isinstance(source, datasets.DatasetSource):
        st.warning(f"It cannot run here: no dataset ({source}).")
        return
    plan = shipped.rerun_plan(item, job_data_dir(source))
    search = "a range test per norm, then " if item.record.search is not None else ""
    st.caption(f"**Run it here**: the same plan ({plan.recipe} recipe, {plan.seeds} seeds, {plan.epochs} epochs, "
               f"{plan.variant} variant): {search}{2 * plan.seeds} runs on {source.label}, {where_runs_train()}, "
               f"recorded as an experiment of your own. From a terminal: `{experiment_command(plan)}`")
    st.button("Run it here", key="exp.run_here", on_click=run_here, args=(item,), icon=":material/replay:",
              type="primary")


def draw_not_shipped(found: list[shipped.Shipped]) -> None:
    """The variants whose experiment has not been made yet, with the command that makes it."""
    for variant in shipped.not_shipped(found):
        script, command = shipped.make_command(variant)
        why = ("has not been run on a GPU yet (no GPU was available to this project's sessions)" if variant != "cifar"
               else "has not been made yet")
        st.caption(f"The {variant} variant's experiment {why}, so none ships for it. Make it with `{script}`"
                   f"{' on a machine with a GPU' if variant != 'cifar' else ''}: it runs `{command}` and copies its "
                   "records here.")


def shipped_view(item: shipped.Shipped, found: list[shipped.Shipped]) -> None:
    draw_label(item)
    draw_run_here(item)
    experiment_view(item.root, item.name, frozenset(), shown_as=shipped.marked)
    draw_not_shipped(found)
