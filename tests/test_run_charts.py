"""The learning-rate curve, the wall-clock axis and the settings-against-accuracy chart, on real runs.

Three runs are trained for real once a session (`conftest.curve_runs`), one epoch on 256
images each: two on the CIFAR-10 mini subset (BN, one-cycle at 0.01, seeds 0 and 1), one on the
embedded sample (LRN, one-cycle at 0.02, the conv layers at half the rate). The builders are checked
against what their run folders hold, then the Train and Compare pages through AppTest, the charts
found by their keys.
"""
from __future__ import annotations

import base64
import json
import math
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import open_app_page
from streamlit.testing.v1 import AppTest

from alexnet import charts, compare
from alexnet import runs as run_records

APP = Path(__file__).resolve().parent.parent / "app.py"


@pytest.fixture
def runs(curve_runs) -> dict[str, run_records.Run]:
    return {r.name: r for r in run_records.list_runs(curve_runs, with_metrics=True)}


def without_wall(run: run_records.Run, root: Path, name: str) -> run_records.Run:
    """A copy of a run as a record from before wall-clock times were logged: its events lack `wall`."""
    folder = shutil.copytree(run.path, root / name)
    events = [{k: v for k, v in e.items() if k != "wall"} for e in run.metrics]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run_records.load_run(folder)


def array(value) -> list:
    """A figure's array as a list: plotly sends numpy arrays base64-encoded ({"bdata", "dtype", "shape"})."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return value


def local_times(seconds: list[float]) -> list[datetime]:
    return [datetime.fromtimestamp(s) for s in seconds]


# ---------------------------------------------------------------- the builders

def test_the_rate_curve_is_the_rate_each_step_logged_on_every_axis(runs):
    events = {name: run.metrics for name, run in runs.items()}
    for name, run in runs.items():
        steps = run.steps()
        assert len(steps) == 4  # 256 images, 64 a step, every step logged
        lrs = [e["lr"] for e in steps]
        assert len(set(lrs)) == 4 and max(lrs) <= run.config["lr"]  # one-cycle: a new rate every step
        for x, key in charts.X_KEYS.items():
            series = charts.rate_series(run.metrics, x)
            assert series.x == [float(e[key]) for e in steps] and series.y == lrs
    fig = charts.rate_figure(events, "step", colors={"mini-bn-s0": "#1f77b4"})  # the others: their own colours
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == set(runs) and all(t.showlegend for t in fig.data)
    assert by_name["mini-bn-s0"].line.color == "#1f77b4"
    assert by_name["sample-lrn"].line.color == charts.run_color("sample-lrn")
    assert list(by_name["mini-bn-s0"].y) == [e["lr"] for e in runs["mini-bn-s0"].steps()]
    assert fig.layout.yaxis.title.text == "learning rate" and fig.layout.xaxis.title.text == "step"
    assert fig.layout.yaxis.type != "log" and charts.rate_figure(events, log_y=True).layout.yaxis.type == "log"
    single = charts.rate_figure({"mini-bn-s0": runs["mini-bn-s0"].metrics})
    assert [t.showlegend for t in single.data] == [False]  # one run: its name is the page's, no legend
    assert charts.rate_figure({}).layout.annotations[0].text == "no points yet"


def test_the_rate_caption_says_whose_rate_a_scaled_or_frozen_run_logs(runs):
    configs = {name: run.config for name, run in runs.items()}
    text = charts.rate_caption(configs)
    assert "sample-lrn (0.5×)" in text and "the head's" in text and "mini-bn" not in text
    plain = charts.rate_caption({"mini-bn-s0": configs["mini-bn-s0"]})
    assert plain == "The learning rate each logged step trained with."
    tuned = {**configs["mini-bn-s0"], "freeze_features": True, "features_lr_scale": 0.1}
    frozen = charts.rate_caption({"tuned": tuned})
    assert "tuned are frozen" in frozen and "0.1×" not in frozen


def test_the_wall_clock_places_each_point_when_it_was_logged(runs):
    run = runs["mini-bn-s0"]
    events = [e for e in run.metrics if e["event"] in ("start", "step", "epoch", "end")]
    walls = [e["wall"] for e in events]
    assert walls == sorted(walls) and [e["event"] for e in events][0] == "start"
    created = run.status["created"]
    assert created <= walls[0] and walls[-1] <= run.status["updated"]
    fig = charts.curves_figure({run.name: run.metrics}, "loss", "wall", per="step")
    assert fig.layout.xaxis.type == "date" and fig.layout.xaxis.title.text == "wall clock"
    by_kind = {t.name: t for t in fig.data}
    assert list(by_kind["train (per step)"].x) == local_times([e["wall"] for e in run.steps()])
    assert list(by_kind["validation"].x) == local_times([e["wall"] for e in run.epochs()])
    end = next(e for e in run.metrics if e["event"] == "end")
    assert list(by_kind["test"].x) == local_times([end["wall"]]) and list(by_kind["test"].y) == [end["test_loss"]]
    assert "%Y-%m-%d %H:%M:%S" in by_kind["validation"].hovertemplate
    rate = charts.rate_figure({run.name: run.metrics}, "wall")
    assert rate.layout.xaxis.type == "date" and list(rate.data[0].x) == local_times([e["wall"] for e in run.steps()])
    assert charts.curves_figure({run.name: run.metrics}, "loss", "time").layout.xaxis.type != "date"


def test_an_older_record_without_wall_times_is_named_and_left_off_that_axis_only(runs, tmp_path):
    old = without_wall(runs["mini-bn-s0"], tmp_path, "old-run")
    events = {old.name: old.metrics, "sample-lrn": runs["sample-lrn"].metrics}
    assert charts.runs_off_axis(events, "wall") == ["old-run"]
    assert all(charts.runs_off_axis(events, x) == [] for x in ("epoch", "step", "time"))
    on_wall = charts.curves_figure(events, "acc", "wall")
    assert not any(t.name.startswith("old-run") for t in on_wall.data)
    assert any(t.name.startswith("sample-lrn") for t in on_wall.data)
    assert [t.name for t in charts.rate_figure(events, "wall").data] == ["sample-lrn"]
    on_time = charts.curves_figure(events, "acc", "time")
    assert "old-run · validation" in {t.name for t in on_time.data}
    assert charts.rate_figure({old.name: old.metrics}, "wall").layout.annotations[0].text == "no points yet"


def test_settings_against_accuracy_of_real_runs(runs, tmp_path):
    stopped = shutil.copytree(runs["mini-bn-s1"].path, tmp_path / "stopped-run")  # as if stopped before the end
    run_records.atomic_write_json(stopped / "status.json", {**runs["mini-bn-s1"].status, "state": "stopped"})
    (stopped / "result.json").unlink()
    chosen = [runs["mini-bn-s0"], runs["sample-lrn"], run_records.load_run(stopped)]
    plot = compare.settings_against_accuracy(chosen)
    assert plot.runs == ["mini-bn-s0", "sample-lrn"]  # the stopped run has no test accuracy to show
    assert plot.accuracy == [runs[n].result["test_accuracy"] for n in plot.runs]
    axes = {a.key: a for a in plot.axes}
    # The keys that differ, and first the test sets, which differ too: 1,017 images of the subset, 972 of the sample.
    assert list(axes) == ["test set", "norm", "features_lr_scale", "data_dir", "lr"]  # in the config's order
    assert axes["test set"].labels == ["CIFAR-10 subset (6,102 images)", "embedded sample (2,972 images)"]
    assert (axes["norm"].labels, axes["norm"].values, axes["norm"].ticks) == (["bn", "lrn"], [0.0, 1.0], [0.0, 1.0])
    assert (axes["lr"].values, axes["lr"].labels, axes["lr"].log) == ([0.01, 0.02], ["0.01", "0.02"], False)
    data_dir = axes["data_dir"]  # a long path keeps its end
    path_label, none_label = (data_dir.labels[int(v)] for v in data_dir.values)
    assert path_label == "…" + runs["mini-bn-s0"].config["data_dir"][-31:] and none_label == "none"
    assert compare.settings_against_accuracy([runs["mini-bn-s0"]]).axes == []  # one run: nothing differs
    steps = compare.setting_axis("lr", [1e-4, 1e-3, 0.05])
    assert steps.log and steps.values == pytest.approx([-4, -3, math.log10(0.05)]) and steps.labels == [
        "0.0001", "0.001", "0.05"]


def test_settings_figure_draws_parallel_coordinates_or_a_scatter(runs):
    plot = compare.settings_against_accuracy([runs["mini-bn-s0"], runs["sample-lrn"]])
    fig = charts.settings_figure(plot)
    (trace,) = fig.data
    assert trace.type == "parcoords"
    labels = [d.label for d in trace.dimensions]
    assert labels == [a.key for a in plot.axes] + ["test accuracy"]  # accuracy last
    assert list(trace.dimensions[-1].values) == plot.accuracy and trace.dimensions[-1].tickformat == ".1%"
    norm = trace.dimensions[labels.index("norm")]
    assert list(norm.ticktext) == ["bn", "lrn"] and list(norm.tickvals) == [0.0, 1.0]
    assert list(trace.line.color) == plot.accuracy and trace.line.showscale
    assert trace.line.colorbar.orientation == "h"  # under the plot, as every colour bar here
    assert fig.layout.margin.l >= 7 * len("embedded sample (2,972 images)")  # the first axis's labels left of it
    one = compare.SettingsAgainstAccuracy(plot.runs, plot.accuracy, [a for a in plot.axes if a.key == "norm"])
    scatter = charts.settings_figure(one, colors={"mini-bn-s0": "#1f77b4"})
    (points,) = scatter.data
    assert points.type == "scatter" and list(points.y) == plot.accuracy and list(points.x) == [0.0, 1.0]
    assert list(points.marker.color) == ["#1f77b4", charts.run_color("sample-lrn")]
    assert list(scatter.layout.xaxis.ticktext) == ["bn", "lrn"] and scatter.layout.xaxis.title.text == "norm"
    assert [list(c) for c in points.customdata] == [["mini-bn-s0", "bn"], ["sample-lrn", "lrn"]]
    none = charts.settings_figure(compare.SettingsAgainstAccuracy(plot.runs, plot.accuracy, []))
    assert not none.data and "no settings differ" in none.layout.annotations[0].text


# ---------------------------------------------------------------- the pages

@pytest.fixture
def pages_env(monkeypatch, mini_dir, runs_dir, curve_runs):
    """The three runs in this test's own runs folder, the mini subset as the app's dataset."""
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    shutil.copytree(curve_runs, runs_dir, dirs_exist_ok=True)
    return runs_dir




def charts_by_key(at: AppTest) -> dict[str, dict]:
    return {element.key: json.loads(element.proto.spec) for element in at.get("plotly_chart")}


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def test_train_page_shows_the_rate_beside_loss_and_accuracy_on_every_axis(pages_env, runs):
    at = open_app_page("pages/train.py")
    at.selectbox(key="train.run").set_value("sample-lrn").run()
    run = runs["sample-lrn"]
    figures = charts_by_key(at)
    assert set(figures) == {"train.chart.loss", "train.chart.acc", "train.chart.lr"}
    (rate,) = figures["train.chart.lr"]["data"]
    assert array(rate["y"]) == [e["lr"] for e in run.steps()]
    assert array(rate["x"]) == [e["epoch"] for e in run.steps()]  # the page's default axis: epochs
    assert "sample-lrn (0.5×)" in captions(at) and "the head's" in captions(at)
    at.segmented_control(key="train.x").set_value("wall")
    at.checkbox(key="train.log_lr").check()
    at.run()
    assert not at.exception
    figures = charts_by_key(at)
    for key, spec in figures.items():
        assert spec["layout"]["xaxis"]["type"] == "date" and spec["layout"]["xaxis"]["title"]["text"] == "wall clock"
    (rate,) = figures["train.chart.lr"]["data"]
    assert rate["x"] == [t.isoformat() for t in local_times([e["wall"] for e in run.steps()])]
    assert figures["train.chart.lr"]["layout"]["yaxis"]["type"] == "log"
    assert figures["train.chart.loss"]["layout"]["yaxis"].get("type") != "log"  # log rate is the rate's own
    assert "Not on the" not in captions(at)


def test_train_page_names_an_older_run_that_the_wall_clock_leaves_out(pages_env, runs):
    without_wall(runs["mini-bn-s0"], pages_env, "old-run")
    at = open_app_page("pages/train.py")
    at.selectbox(key="train.run").set_value("old-run").run()
    at.segmented_control(key="train.x").set_value("wall").run()
    assert not at.exception
    assert "Not on the wall clock axis: the points of **old-run**" in captions(at)
    assert charts_by_key(at)["train.chart.lr"]["data"] == []
    at.segmented_control(key="train.x").set_value("step").run()
    assert "Not on the" not in captions(at)
    steps = [e["global_step"] for e in runs["mini-bn-s0"].steps()]
    assert array(charts_by_key(at)["train.chart.lr"]["data"][0]["x"]) == steps


def test_compare_page_shows_every_runs_rate_and_their_settings_against_accuracy(pages_env, runs):
    at = open_app_page("pages/compare.py")
    at.multiselect(key="compare.runs").set_value(["mini-bn-s0", "sample-lrn"]).run()
    figures = charts_by_key(at)
    rates = {t["name"]: t for t in figures["compare.chart.lr"]["data"]}
    assert set(rates) == {"mini-bn-s0", "sample-lrn"}
    loss_colors = {t["name"].split(" · ")[0]: t["line"]["color"] for t in figures["compare.chart.loss"]["data"]
                   if t["name"].endswith("validation")}
    for name, trace in rates.items():
        assert array(trace["y"]) == [e["lr"] for e in runs[name].steps()]
        assert trace["line"]["color"] == loss_colors[name]  # a run's colour on every chart
    (lines,) = figures["compare.settings"]["data"]
    assert lines["type"] == "parcoords"
    plot = compare.settings_against_accuracy([runs["mini-bn-s0"], runs["sample-lrn"]])
    assert [d["label"] for d in lines["dimensions"]] == [a.key for a in plot.axes] + ["test accuracy"]
    assert array(lines["dimensions"][-1]["values"]) == pytest.approx(plot.accuracy)
    assert "0.5×" in captions(at) and "A line a run" in captions(at)


def test_compare_settings_of_every_finished_run_and_a_scatter_for_one_setting(pages_env, runs):
    at = open_app_page("pages/compare.py")
    at.multiselect(key="compare.runs").set_value(["mini-bn-s0"]).run()
    assert "Needs two finished runs or more: 1 among the chosen runs." in captions(at)
    assert "compare.settings" not in charts_by_key(at)
    at.toggle(key="compare.settings_all").set_value(True).run()
    assert not at.exception
    (lines,) = charts_by_key(at)["compare.settings"]["data"]
    assert lines["type"] == "parcoords" and len(array(lines["dimensions"][-1]["values"])) == 3
    assert "seed" in [d["label"] for d in lines["dimensions"]]
    at.toggle(key="compare.settings_all").set_value(False)
    at.multiselect(key="compare.runs").set_value(["mini-bn-s0", "mini-bn-s1"]).run()  # they differ in the seed alone
    spec = charts_by_key(at)["compare.settings"]
    (points,) = spec["data"]
    assert points["type"] == "scatter" and array(points["x"]) == [0.0, 1.0]
    assert array(points["y"]) == pytest.approx([runs[f"mini-bn-s{s}"].result["test_accuracy"] for s in (0, 1)])
    assert spec["layout"]["xaxis"]["title"]["text"] == "seed" and "A point a run" in captions(at)


def test_compare_page_wall_clock_names_the_older_run(pages_env, runs):
    without_wall(runs["mini-bn-s0"], pages_env, "old-run")
    at = open_app_page("pages/compare.py")
    at.multiselect(key="compare.runs").set_value(["old-run", "sample-lrn"])
    at.segmented_control(key="compare.x").set_value("wall")
    at.run()
    assert not at.exception
    assert "Not on the wall clock axis: the points of **old-run**" in captions(at)
    figures = charts_by_key(at)
    assert [t["name"] for t in figures["compare.chart.lr"]["data"]] == ["sample-lrn"]
    assert figures["compare.chart.acc"]["layout"]["xaxis"]["type"] == "date"
