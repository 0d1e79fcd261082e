"""The Compare page's runs side by side: their curves (and seed bands), the summary table, the config keys that
differ, where they came from, and the exports. A fragment that polls every 2 s while a chosen run trains
(`compare_view`).

The table, the differing keys and the bands come from `alexnet.compare`.
"""
from __future__ import annotations

import json

import streamlit as st

from alexnet import charts, compare
from alexnet import runs as run_records
from alexnet.runs import ACTIVE_STATES as ACTIVE
from pages._shared.curve_controls import curve_controls, off_axis_note
from pages._shared.environment import draw_environment
from pages._shared.sharing import export_button

REFRESH = "2s"  # how often a view of runs that train reads their folders again


def rerun_if_changed(active_now: frozenset[str], active_when_drawn: frozenset[str]) -> None:
    """A run started or ended: redraw the whole page, so polling starts or stops with it."""
    if active_now != active_when_drawn:
        st.rerun()


def draw_curves(chosen: list[run_records.Run], colors: dict[str, str]) -> None:
    choice = curve_controls("compare", per="epoch", smoothing=0.0)
    events = {r.name: r.metrics for r in chosen}
    revision = "|".join(sorted(events))
    for metric in ("loss", "acc"):  # full width; one legend entry a run, under the plot, so it keeps its width
        fig = charts.curves_figure(events, metric, choice.x, choice.smoothing, choice.log_y, choice.per, height=380,
                                   colors=colors, legend="runs")
        fig.update_layout(uirevision=revision)
        st.plotly_chart(fig, key=f"compare.chart.{metric}", config=charts.png_config(f"compare-{metric}"))
    fig = charts.rate_figure(events, choice.x, choice.log_rate, height=320, colors=colors)
    st.plotly_chart(fig.update_layout(uirevision=revision), key="compare.chart.lr",
                    config=charts.png_config("compare-lr"))
    st.caption("Training dashed, validation solid, ★ the test accuracy at the end. Each run keeps its colour on "
               "every chart and page; click a run in the legend to hide its curves. The camera icon of a chart "
               "saves it as PNG. " + charts.rate_caption({r.name: r.config for r in chosen}))
    off_axis_note("compare", events, choice.x)
    draw_seed_bands(chosen)


def draw_settings(root, chosen: list[run_records.Run], colors: dict[str, str]) -> None:
    """The finished runs' differing settings against their test accuracy: the chosen runs, or every finished run."""
    st.subheader("Settings against test accuracy")
    every = st.toggle("All finished runs", key="compare.settings_all", persist_state="session",
                      help="Every finished run in the runs folder, not only the chosen ones.")
    plot = compare.settings_against_accuracy(run_records.list_runs(root) if every else chosen)
    if len(plot.runs) < 2:
        st.caption(f"Needs two finished runs or more: {len(plot.runs) or 'none'} "
                   f"{'in the runs folder' if every else 'among the chosen runs'}.")
        return
    if not plot.axes:
        st.caption("These finished runs share every setting that changes a result: nothing to set against their "
                   "accuracy.")
        return
    st.plotly_chart(charts.settings_figure(plot, colors=colors), key="compare.settings",
                    config=charts.png_config("compare-settings"))
    st.caption("A line a run, through its value of each setting that differs and then its test accuracy, coloured "
               "by that accuracy; drag along an axis to pick the runs in a range." if len(plot.axes) > 1 else
               "A point a run, in its colour: its test accuracy against the one setting that differs (hover names "
               "the run).")


def draw_seed_bands(chosen: list[run_records.Run]) -> None:
    """Runs that differ only by seed, as one mean curve with its spread, on request."""
    groups = compare.group_by_seed(chosen)
    if not any(len(g.runs) > 1 for g in groups):
        return
    if not st.toggle("Group runs that differ only by seed (mean and spread)", key="compare.group",
                     persist_state="session"):
        return
    bands = [(g.label, {r.name: r.metrics for r in g.runs}) for g in groups]
    band_colors = charts.distinct_colors([g.label for g in groups])
    left, right = st.columns(2)
    for column, metric in ((left, "loss"), (right, "acc")):
        column.plotly_chart(charts.seed_band_figure(bands, metric, height=380, colors=band_colors),
                            key=f"compare.band.{metric}", config=charts.png_config(f"compare-seeds-{metric}"))
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
    own = [r for r in chosen if not r.shipped]  # a shipped run has no weights to share: its records came with the app
    if not own:
        c.caption("Shipped runs are records without weights: only your own runs export.")
        return
    names = [r.name for r in own]
    shared = c.selectbox("Run to share", names, key="compare.share", label_visibility="collapsed") \
        if len(names) > 1 else names[0]
    export_button(own[names.index(shared)], "compare.export", d)


def compare_view(root, names: tuple[str, ...], active_when_drawn: frozenset[str],
                 shipped: dict[str, run_records.Run]) -> None:
    """The chosen runs: the user's, read again from `root` at each poll, and the shipped ones as they are."""
    chosen = [shipped[n] if n in shipped else run_records.load_run(root / n) for n in names
              if n in shipped or (root / n).is_dir()]
    rerun_if_changed(frozenset(r.name for r in chosen if r.state in ACTIVE), active_when_drawn)
    colors = charts.distinct_colors(names)
    draw_curves(chosen, colors)
    draw_settings(root, chosen, colors)
    st.subheader("Summary")
    rows = draw_table(chosen)
    draw_config_diff(chosen)
    draw_environment(chosen)
    draw_exports(chosen, rows)
