"""The Train page's live view of one run: its state, progress, figures, curves and buttons, and the table of all runs.

It is a fragment that polls the run folders while a run is queued or training (`live_view`) and
stops polling once none is; everything it shows is read from the folders with `alexnet.runs` and
`alexnet.progress`.
"""
from __future__ import annotations

import streamlit as st

from alexnet import charts, jobs
from alexnet import runs as run_records
from alexnet.progress import best_epoch, last_start, run_progress, run_row
from alexnet.runs import ACTIVE_STATES as ACTIVE
from pages._shared.curve_controls import curve_controls, off_axis_note
from pages._shared.devices import draw_queues
from pages._shared.sharing import export_button
from pages._shared.train_settings import copy_settings


def draw_state(run: run_records.Run) -> None:
    state, reason = run.state, run.status.get("reason") or ""
    epoch = run.status.get("epoch", 0)
    if state == "queued":
        waiting = reason if reason.startswith("waiting") else "starting the training process"
        st.info(f"**queued**: {waiting}", icon=":material/hourglass_top:")
    elif state == "running":
        epochs = run.config.get("epochs")
        where = (f"all {epochs} epochs done, measuring the test accuracy" if isinstance(epochs, int) and epoch >= epochs
                 else f"epoch {epoch + 1} of {epochs or '?'}")
        st.info(f"**running**: {where}", icon=":material/sprint:")
    elif state == "stopped":
        st.warning(f"**stopped** after {epoch} of {run.config.get('epochs', '?')} epochs: {reason}",
                   icon=":material/pause_circle:")
    elif state == "finished":
        result = run.result or {}
        acc = result.get("test_accuracy")
        st.success(f"**finished**: test accuracy **{acc:.1%}** on {result.get('test_images', 0):,} images of "
                   f"{result.get('dataset', 'the dataset')}" if acc is not None else "**finished**",
                   icon=":material/check_circle:")
    else:
        st.error(f"**failed**: {reason or 'no reason recorded'}", icon=":material/error:")
        log = run.path / "log.txt"
        if log.exists():
            with st.expander("Last lines of the training log"):
                st.code("\n".join(log.read_text(errors="replace").splitlines()[-25:]) or "(empty)")


def draw_compile_failure(run: run_records.Run) -> None:
    failed_compile = next((e for e in reversed(run.metrics) if e.get("event") == "compile_failed"), None)
    if failed_compile:
        st.container(key="train.compile_failed").warning(
            f"**torch.compile failed** in the {failed_compile['during']} at step {failed_compile['global_step']:,}: "
            f"the run went on without it, in eager mode. {failed_compile['reason']}", icon=":material/warning:")


def draw_figures(run: run_records.Run) -> None:
    """The progress bar, the learning rate, the best validation and the test accuracy, and where the run trains."""
    progress = run_progress(run)
    st.progress(progress.fraction, text=progress.text)
    best, start = best_epoch(run), last_start(run)
    test_acc = (run.result or {}).get("test_accuracy")
    a, b, c = st.columns(3)
    a.metric("Learning rate", f"{progress.lr:.3g}" if progress.lr is not None else "–")
    b.metric("Best validation accuracy", f"{best['val_acc']:.1%}" if best else "–",
             delta=f"epoch {best['epoch']}" if best else None, delta_color="off", delta_arrow="off")
    c.metric("Test accuracy", f"{test_acc:.1%}" if test_acc is not None else "–",
             help="Measured once, on the test set, when the run finishes.")
    st.caption(f"**Dataset:** {run.status.get('dataset') or start.get('dataset') or 'not loaded yet'} · "
               f"**device:** {run.status.get('device') or start.get('device') or '–'}"
               + (f" · **precision:** {start['precision']}" if start.get("precision") else "")
               + (f" · imported from `{run.status['imported'].get('archive')}`" if run.imported else ""))


# ---- the buttons' callbacks (see draw_actions)

def stop_run(name: str, root) -> None:
    if jobs.stop(name, root):
        st.toast(f"Stopping {name}: it saves a checkpoint after the current step.")
    else:
        st.toast(f"{name} was not training.")


def resume_run(name: str, root) -> None:
    try:
        jobs.resume(name, root)
    except (RuntimeError, OSError, ValueError) as err:
        st.session_state["train.action_error"] = f"Cannot resume: {err}"


def delete_confirmed(name: str, root) -> None:
    try:
        run_records.delete_run(root, name)
    except (RuntimeError, OSError) as err:
        st.session_state["train.action_error"] = f"Not deleted: {err}"
        return
    st.session_state.pop("train.confirm_delete", None)
    st.session_state.pop("train.run", None)


def ask_to_delete(name: str | None) -> None:
    if name is None:
        st.session_state.pop("train.confirm_delete", None)
    else:
        st.session_state["train.confirm_delete"] = name


def draw_actions(run: run_records.Run, root) -> None:
    """The run's buttons. Each acts in its callback, which Streamlit runs before the script: this view reruns
    every 1.5 s while anything trains, and a poll that preempts the click's rerun would skip an action written
    as `if st.button(...)` (the click's True is not sent again)."""
    a, b, c, d, e = st.columns([1, 1, 1, 2, 1])
    a.button("Stop", key="train.stop", disabled=run.state not in ACTIVE, icon=":material/stop:",
             on_click=stop_run, args=(run.name, root),
             help="Saves a checkpoint after the current step; Resume continues from there.")
    can_resume = (run.state == "stopped" or (run.state == "failed" and run.status.get("checkpoint"))) \
        and not run.imported
    b.button("Resume", key="train.resume", disabled=not can_resume, icon=":material/play_arrow:",
             on_click=resume_run, args=(run.name, root))
    c.button("Delete…", key="train.delete", disabled=run.state in ACTIVE, icon=":material/delete:",
             on_click=ask_to_delete, args=(run.name,), help="Stop a run before deleting it.")
    d.button("New run like this", key="train.copy", icon=":material/content_copy:",
             on_click=copy_settings, args=(run.name, run.config),
             help="Fill the form with this run's settings, to change one knob and compare.")
    export_button(run, "train.export", e)
    error = st.session_state.pop("train.action_error", None)
    if error:
        st.error(error)
    if st.session_state.get("train.confirm_delete") == run.name:
        with st.container(border=True):
            st.warning(f"Delete **{run.name}**, its curves and its weights? This cannot be undone.")
            yes, no, _ = st.columns([1, 1, 4])
            yes.button("Yes, delete", key="train.delete_yes", type="primary", on_click=delete_confirmed,
                       args=(run.name, root))
            no.button("Cancel", key="train.delete_no", on_click=ask_to_delete, args=(None,))


def draw_curves(run: run_records.Run) -> None:
    """Loss, accuracy and the learning rate side by side, on one x axis."""
    choice = curve_controls("train", per="step", smoothing=0.6)
    events = {run.name: run.metrics}
    loss, accuracy, rate = st.columns(3)
    for column, metric in ((loss, "loss"), (accuracy, "acc")):
        fig = charts.curves_figure(events, metric, choice.x, choice.smoothing, choice.log_y, choice.per, height=360)
        fig.update_layout(uirevision=run.name)  # zoom and hidden traces survive each refresh
        column.plotly_chart(fig, key=f"train.chart.{metric}", config={"displaylogo": False})
    fig = charts.rate_figure(events, choice.x, choice.log_rate, height=360).update_layout(uirevision=run.name)
    rate.plotly_chart(fig, key="train.chart.lr", config={"displaylogo": False})
    st.caption("Training dashed, validation solid with a point per epoch, ★ the test set at the end. "
               + charts.rate_caption({run.name: run.config}))
    off_axis_note("train", events, choice.x)


def runs_table(all_runs: list[run_records.Run]) -> None:
    st.dataframe([run_row(r) for r in all_runs], hide_index=True, placeholder="–", column_config={
        "run": st.column_config.TextColumn(pinned=True),
        "test accuracy": st.column_config.NumberColumn(format="%.1f %%"),
        "started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
    })


def live_view(root, active_when_drawn: frozenset[str]) -> None:
    """The run picker, its state, progress, curves and actions, and the table of all runs."""
    all_runs = run_records.list_runs(root)
    active = frozenset(r.name for r in all_runs if r.state in ACTIVE)
    if active != active_when_drawn:
        st.rerun()  # a run started or ended: redraw the page, and refresh only while something trains
    st.subheader("Runs")
    if not all_runs:
        st.info(f"No runs yet in `{root}`. Pick a preset and press **Start training**: the fast CPU demo shows its "
                "first points within a minute. From a terminal: `python -m alexnet train --preset fast-cpu-demo`.",
                icon=":material/info:")
        return
    by_name = {r.name: r for r in all_runs}
    if st.session_state.get("train.run") not in by_name:
        st.session_state["train.run"] = all_runs[0].name  # the newest
    # Names only: the browser keeps the label shown when an option was picked, so a state in it would go stale.
    name = st.selectbox("Run", list(by_name), key="train.run", persist_state="session",
                        help="The newest run unless you pick another; its state is shown below.")
    try:
        run = run_records.load_run(by_name[name].path)
    except FileNotFoundError:  # deleted from another tab a moment ago
        st.session_state.pop("train.run", None)
        st.rerun()
    draw_state(run)
    draw_compile_failure(run)
    draw_figures(run)
    draw_curves(run)
    draw_actions(run, root)
    st.markdown("**All runs**")
    runs_table(all_runs)
    st.markdown("**Devices**")
    draw_queues(root, all_runs)
