"""The figures' layout, where a phone (about 370 px of chart width) and a wide page (about 1000 px) differ.

Plotly lays figures out in the browser, so these check what decides the layout in the figure itself:
legends horizontal and under the plot (never beside it, never on the title), no font under 10 px,
labels that hide where they do not fit, short class names, heights that follow a picture's shape,
colour-bar ticks without SI prefixes (no "100µ").
"""
from __future__ import annotations

import inspect

import numpy as np
import plotly.graph_objects as go
import pytest
from plotly import colors as plotly_colors

from alexnet import charts, compare, history
from alexnet.data import CIFAR10_CLASSES
from alexnet.models import build, summary

CLASSES = list(CIFAR10_CLASSES)


def epoch(n: int, acc: float) -> dict:
    return {"event": "epoch", "epoch": n, "global_step": 10 * n, "time": float(n), "train_loss": 2.0, "train_acc": acc,
            "val_loss": 2.0, "val_acc": acc}


def events(acc: float) -> list[dict]:
    return [{"event": "step", "epoch": 0.5, "global_step": 5, "time": 0.5, "loss": 2.2, "acc": acc},
            epoch(1, acc), epoch(2, acc + 0.1), {"event": "end", "epoch": 2, "global_step": 20, "time": 2.0,
                                                  "test_loss": 1.9, "test_acc": acc + 0.05}]


def assert_legend_below(fig) -> None:
    legend = fig.layout.legend
    assert legend.orientation == "h" and legend.yref == "container" and legend.y == 0 and legend.yanchor == "bottom"


def font_sizes(node) -> list[float]:
    """Every font size set anywhere in a figure's JSON (textfont, tickfont, title fonts...)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "size" and isinstance(value, (int, float)) and not isinstance(value, bool):
                found.append(value)
            else:
                found += font_sizes(value)
    elif isinstance(node, list):
        for value in node:
            found += font_sizes(value)
    return found


def text_font_sizes(fig) -> list[float]:
    spec = fig.to_plotly_json()
    fonts = [t.get("textfont", {}) for t in spec["data"]] + [spec["layout"]]
    return [s for s in font_sizes(fonts)] + [a.font.size for a in fig.layout.annotations if a.font.size]


def test_curves_legend_lies_under_the_plot_and_runs_get_one_entry_each():
    runs = {"run-a": events(0.2), "run-b": events(0.3)}
    fig = charts.curves_figure(runs, "acc", title="accuracy")
    assert_legend_below(fig)  # never beside the plot (a phone keeps the plot's width), never on the title
    by_run = charts.curves_figure(runs, "acc", legend="runs", colors={"run-a": "#1f77b4"})
    assert_legend_below(by_run)
    entries = [t for t in by_run.data if t.showlegend is not False]
    assert [t.name for t in entries] == ["run-a", "run-b"]
    assert entries[0].line.color == "#1f77b4" and entries[1].line.color == charts.run_color("run-b")
    curves = [t for t in by_run.data if t.showlegend is False]
    assert {t.name for t in curves} == {f"{r} · {k}" for r in runs for k in ("train (per step)", "validation", "test")}
    assert {t.legendgroup for t in by_run.data} == {"run-a", "run-b"}  # a click on a run hides all its curves
    single = charts.curves_figure({"run-a": events(0.2)}, "acc", legend="runs")  # one run: its three curves
    assert [t.name for t in single.data] == ["train (per step)", "validation", "test"]
    assert {t.legendgroup for t in single.data} == {None}  # side by side, not stacked as a group
    with pytest.raises(ValueError, match="legend"):
        charts.curves_figure(runs, legend="beside")


def test_per_class_and_seed_band_legends_keep_off_the_title():
    fig = charts.per_class_figure({"a": [0.5] * 10, "b": [0.2] * 10}, CLASSES, title="Per-class test accuracy")
    assert_legend_below(fig)
    assert list(fig.layout.xaxis.ticktext[:2]) == ["plane", "auto"] and list(fig.layout.xaxis.tickvals) == CLASSES
    assert fig.data[0].x == tuple(CLASSES)  # hover names the class in full
    assert_legend_below(charts.seed_band_figure([("LRN", {"r": [epoch(1, 0.2)]})], title="bands"))


def test_confusion_matrix_cells_and_labels_are_legible_in_half_a_page():
    counts = np.arange(100).reshape(10, 10)
    fig = charts.confusion_figure(counts, CLASSES, title="run: 10% test")
    heat = fig.data[0]
    assert heat.textfont.size >= 10 and min(text_font_sizes(fig)) >= 10
    assert fig.layout.xaxis.tickangle == 0 and list(fig.layout.xaxis.ticktext[:2]) == ["plane", "auto"]
    assert list(fig.layout.yaxis.ticktext[:2]) == ["plane", "auto"] and heat.y == tuple(CLASSES)
    assert fig.layout.height >= 36 * len(CLASSES)  # rows tall enough for their 11 px text
    assert heat.colorbar.orientation == "h"  # under the matrix: the cells keep the column's width
    assert charts.confusion_figure(counts, CLASSES, height=300).layout.height == 300


def test_architecture_degrades_gracefully_when_narrow():
    rows = summary(build("paper", "lrn"))
    fig = charts.architecture_figure(rows, title="paper variant, norm lrn")
    assert_legend_below(fig)
    assert fig.layout.title.text == "paper variant, norm lrn"
    assert fig.layout.uniformtext.mode == "hide" and fig.layout.uniformtext.minsize >= 10
    blocks = fig.data[0]
    assert blocks.textposition == "inside" and blocks.textfont.size >= fig.layout.uniformtext.minsize
    bars = [t for t in fig.data if t.type == "bar"]
    assert all(t.text is not None for t in bars)  # else plotly.js shrinks the shapes instead of hiding them
    labels = charts.layer_labels(rows)
    axis = fig.layout.xaxis2
    named = [labels[i] for i in axis.tickvals]
    assert named == list(axis.ticktext) and "relu" not in named and "dropout" not in named
    assert named[:4] == ["conv1", "LRN", "pool1", "conv2"] and named[-1] == "fc8"
    assert 90 in axis.autotickangles and axis.tickfont.size >= 10
    legend = {t.name for t in fig.data if t.showlegend is not False and t.name != "layers"}
    assert legend == {"parameters", "multiply-adds", "ReLU", "dropout", "flatten"}  # what the axis does not name
    assert min(text_font_sizes(fig)) >= 10
    imagenet = charts.layer_labels(summary(build("imagenet", "none")))
    assert "avgpool" in imagenet and max(map(len, imagenet)) <= 8  # one long tick label turns them all vertical


def test_replication_labels_sit_above_their_bars_at_a_legible_size():
    published, _ = history.replication_rows([])
    fig = charts.replication_figure(published)
    assert fig.layout.yaxis.showticklabels is False  # no label column eating a phone's width
    notes = fig.layout.annotations
    assert len(notes) == len(published)
    assert all(n.font.size >= 11 and n.xref == "paper" and n.x == 0 for n in notes)
    assert all("font-size:1" in n.text and "font-size:7" not in n.text for n in notes)
    assert [n.text.split("<br>")[0] for n in notes] == [p["source"] for p in published]
    bars = fig.data[0]
    assert bars.textfont.size >= 11
    # each label just above its own bar: rows top to bottom in order, a label's foot above its bar's top
    for note, centre in zip(notes, bars.y):
        assert note.yanchor == "bottom" and note.y < centre - bars.width / 2
    assert list(bars.y) == sorted(bars.y) and fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]
    assert "2x\u00a0Tesla\u00a0T4" in notes[3].text  # the hardware is never split over two lines


def test_map_colour_bars_have_plain_ticks():
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    fig = charts.overlay_figure(rgb, np.full((8, 8), 3e-4), colorbar="evidence")
    bar = fig.data[1].colorbar
    assert bar.tickformat == ".2~g" and bar.title.text == "evidence"  # 0.0001, 0.0002: not 100µ, 200µ


def test_mosaic_heights_follow_the_picture_shape():
    wide = np.zeros((23, 95, 3))        # 64 RGB kernels, 16 to a row
    tall = np.zeros((95, 23))
    low, high = charts.mosaic_figure(wide).layout.height, charts.mosaic_figure(tall).layout.height
    assert low == charts.fit_height(23, 95) < 250 and high > 2 * low
    assert charts.mosaic_figure(wide, height=320).layout.height == 320  # a height the caller gives is kept
    assert charts.mosaic_figure(tall).data[0].colorbar.orientation == "h"
    maps = np.random.default_rng(0).random((32, 16, 16)).astype(np.float32)
    fig = charts.feature_maps_figure(maps, list(range(32)), columns=8)
    grid = fig.data[0].z
    assert fig.layout.height == charts.fit_height(len(grid), len(grid[0]), extra=45)
    assert charts.feature_maps_figure(maps[:8], list(range(8)), columns=8).layout.height < fig.layout.height
    assert fig.data[0].colorbar.orientation == "h" and fig.data[0].colorbar.title.text == "activation"


# ---- colour scales of heat maps ----

def lightness(color: str) -> float:
    """CIELAB L* (0 black .. 100 white) of a plotly colour, "rgb(r, g, b)" or "#rrggbb"."""
    linear = [(c / 255) / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb_of(color)]
    y = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 116 * (y ** (1 / 3) if y > (6 / 29) ** 3 else y / (3 * (6 / 29) ** 2) + 4 / 29) - 16


def rgb_of(color: str) -> tuple[float, ...]:
    return plotly_colors.hex_to_rgb(color) if color.startswith("#") else plotly_colors.unlabel_rgb(color)


def ordered_by_lightness(scale, signed: bool) -> bool:
    """A one-sided scale's lightness rises or falls all the way. A signed one is as light as white and grey
    at its middle (0) and falls to equally dark ends. Jet and other rainbows are neither: their lightness
    peaks at a saturated cyan-yellow in the middle and the two ends differ."""
    colors = [color for _, color in sorted(scale)]
    levels = np.array([lightness(color) for color in colors])
    steps = np.diff(levels)
    if not signed:
        return bool(np.all(steps > 0) or np.all(steps < 0))
    middle = int(np.argmax(levels))
    centre = rgb_of(colors[middle])
    return bool(abs(middle - (len(levels) - 1) / 2) <= 1 and np.all(steps[:middle] > 0)
                and np.all(steps[middle:] < 0) and max(centre) - min(centre) < 30
                and abs(levels[0] - levels[-1]) < 10)


def coloured_figures() -> dict[str, list]:
    """Every figure builder in charts that draws a heat map or colours by a colour scale, each in each of its modes
    that does."""
    rgb = np.zeros((8, 8, 3), np.uint8)
    heat = np.linspace(-1, 1, 64).reshape(8, 8)
    settings = compare.SettingsAgainstAccuracy(["a", "b", "c"], [0.3, 0.5, 0.4], [
        compare.setting_axis("norm", ["bn", "lrn", "bn"]), compare.setting_axis("lr", [0.01, 0.05, 0.001])])
    return {
        "overlay_figure": [charts.overlay_figure(rgb, np.abs(heat)), charts.overlay_figure(rgb, heat, diverging=True)],
        "mosaic_figure": [charts.mosaic_figure(heat), charts.mosaic_figure(np.abs(heat), diverging=False)],
        "feature_maps_figure": [charts.feature_maps_figure(np.abs(heat)[None].repeat(4, 0), [0, 1, 2, 3]),
                                charts.feature_maps_figure(heat[None].repeat(4, 0), [0, 1, 2, 3], signed=True)],
        "confusion_figure": [charts.confusion_figure([[8, 2], [1, 3]], ["cat", "dog"]),
                             charts.confusion_figure([[8, 2], [1, 3]], ["cat", "dog"], cells="counts")],
        "cascade_figure": [charts.cascade_figure(np.stack([heat, -heat]), ["trained", "random"])],
        "settings_figure": [charts.settings_figure(settings)],
    }


def colour_scales(trace) -> list[tuple]:
    """(scale, signed, colour bar) of each colour scale a trace colours by: a heat map's own, or its lines' or
    markers' (parallel coordinates, scatter)."""
    if trace.type == "heatmap":
        return [(trace.colorscale, trace.zmid == 0 or (None not in (trace.zmin, trace.zmax)
                                                         and trace.zmin == -trace.zmax != 0),
                 trace.colorbar if trace.showscale is not False else None)]
    found = []
    for part in (getattr(trace, "line", None), getattr(trace, "marker", None)):
        if part is not None and "colorscale" in part and part.colorscale is not None:
            signed = part.cmid == 0 or (None not in (part.cmin, part.cmax) and part.cmin == -part.cmax != 0)
            found.append((part.colorscale, signed, part.colorbar if part.showscale else None))
    return found


def test_every_colour_scale_is_perceptually_ordered_and_shown():
    drawing = {name for name, fn in inspect.getmembers(charts, inspect.isfunction)
               if fn.__module__ == charts.__name__ and any(word in inspect.getsource(fn)
                                                           for word in ("go.Heatmap", "colorscale"))}
    figures = coloured_figures()
    assert set(figures) == drawing              # a new builder with a colour scale must be added here
    for name, figs in figures.items():
        for fig in figs:
            scales = [scale for trace in fig.data for scale in colour_scales(trace)]
            assert scales, name
            for scale, signed, bar in scales:
                assert ordered_by_lightness(scale, signed), (name, scale[:3])
                assert bar is not None and bar.thickness, name


def test_jet_fails_the_lightness_order():
    jet = go.Heatmap(z=[[0, 1]], colorscale="Jet").colorscale
    assert not ordered_by_lightness(jet, signed=False) and not ordered_by_lightness(jet, signed=True)
    assert ordered_by_lightness(go.Heatmap(z=[[0, 1]], colorscale=charts.HEAT_SCALE).colorscale, signed=False)
