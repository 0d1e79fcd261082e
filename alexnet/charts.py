"""Plotly figures shared by the app's pages (plotly only: no streamlit here, so tests can build them).

`curves_figure` draws loss or accuracy curves of one or many runs straight from their
metrics.jsonl events: training dashed, validation solid, one colour per run name that stays
the same in every chart, an optional debiased exponential smoothing with the raw curve kept
faintly behind it, so smoothing can never hide what was measured. `rate_figure` draws the
learning rate the same runs logged, on the same x axes: epoch, step, training seconds, or the wall
clock (a date axis; records from before wall-clock times were logged lack it, `runs_off_axis`).
`settings_figure` sets finished runs' differing settings against their test accuracy.
"""
from __future__ import annotations

import colorsys
import math
import textwrap
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from .compare import SettingsAgainstAccuracy, mean_band
from .norms import NORM_SHORT_LABELS
from .smoothing import smooth

__all__ = ["PALETTE", "run_color", "smooth", "Series", "curve_series", "curves_figure", "legend_below",
           "rate_series", "rate_figure", "rate_caption", "runs_off_axis", "X_AXES",
           # images, attribution maps and class probabilities (Predict and Explain pages)
           "probability_bars", "image_figure", "overlay_figure", "signed_rgb", "mosaic_figure", "feature_maps_figure",
           "cascade_figure", "fit_height", "MOSAIC_WIDTH", "HEAT_SCALE", "ACTIVATION_SCALE", "SIGNED_SCALE",
           # comparing runs and the architecture diagram (Compare and Home pages)
           "confusion_figure", "per_class_figure", "seed_band_figure", "architecture_figure", "layer_labels",
           "png_config", "NORM_COLORS", "distinct_colors", "replication_figure", "SHORT_CLASS_NAMES",
           "settings_figure", "ACCURACY_SCALE",
           # what a norm layer does (Explain page)
           "norm_statistics_figure",
           # learning-rate range tests (Train and Compare pages)
           "range_test_figure"]

# Distinct, readable on white: Plotly's ten, then D3's and Dark24's further hues.
PALETTE: tuple[str, ...] = tuple(dict.fromkeys(qualitative.Plotly + qualitative.D3 + qualitative.Dark24))

METRICS = {"loss": "loss", "acc": "accuracy"}
# The x axes of every curve: its title, and the event key it reads ("wall": Unix seconds, drawn as dates).
X_AXES = {"epoch": "epoch", "step": "step", "time": "training time (s)", "wall": "wall clock"}
X_KEYS = {"epoch": "epoch", "step": "global_step", "time": "time", "wall": "wall"}


def run_color(name: str) -> str:
    """The run's colour: a hash of its name, so it is the same on every page, in every session."""
    return PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


@dataclass
class Series:
    """One curve of one run: 'train', 'validation' or 'test', with its points."""
    kind: str
    x: list[float]
    y: list[float]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _x_key(x: str) -> str:
    if x not in X_KEYS:
        raise ValueError(f"x must be one of {', '.join(X_KEYS)}, got {x!r}")
    return X_KEYS[x]


def curve_series(events: Iterable[dict], metric: str = "loss", x: str = "epoch", per: str = "step") -> list[Series]:
    """The curves one run's events give: training per step (or per epoch), validation per epoch, the test point.

    Points whose value is missing or not finite (no validation split: NaN), or that lack the x axis's value
    (an older record's events on the wall clock), are left out.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if per not in ("step", "epoch"):
        raise ValueError(f"per must be 'step' or 'epoch', got {per!r}")
    x_key = _x_key(x)
    train_event, train_key = ("step", metric) if per == "step" else ("epoch", f"train_{metric}")
    wanted = {"train": (train_event, train_key), "validation": ("epoch", f"val_{metric}"),
              "test": ("end", f"test_{metric}")}
    series = {kind: Series(kind, [], []) for kind in wanted}
    for event in events:
        for kind, (name, key) in wanted.items():
            if event.get("event") == name and _finite(event.get(key)) and _finite(event.get(x_key)):
                series[kind].x.append(float(event[x_key]))
                series[kind].y.append(float(event[key]))
    return [s for s in series.values() if s.x]


def rate_series(events: Iterable[dict], x: str = "step") -> Series:
    """The learning rate each step event logged, against `x`: the first parameter group's, which is the head's
    where the conv layers train at a fraction of the rate (`TrainConfig.features_lr_scale`)."""
    x_key = _x_key(x)
    series = Series("rate", [], [])
    for event in events:
        if event.get("event") == "step" and _finite(event.get("lr")) and _finite(event.get(x_key)):
            series.x.append(float(event[x_key]))
            series.y.append(float(event["lr"]))
    return series


def runs_off_axis(runs: Mapping[str, Sequence[dict]], x: str) -> list[str]:
    """The runs some of whose step or epoch events lack the x axis's value, so their curves miss those points:
    on the wall clock, runs recorded (or begun) before wall-clock times were logged."""
    x_key = _x_key(x)
    return [run for run, events in runs.items()
            if any(e.get("event") in ("step", "epoch") and not _finite(e.get(x_key)) for e in events)]


def _plot_x(values: Sequence[float], x: str) -> list:
    """x values as plotly draws them: the wall clock's Unix seconds as local date-times."""
    return [datetime.fromtimestamp(v) for v in values] if x == "wall" else list(values)


def _x_hover(x: str) -> str:
    return f"{X_AXES[x]} %{{x|%Y-%m-%d %H:%M:%S}}" if x == "wall" else f"{X_AXES[x]} %{{x:.2f}}"


def _trace_name(run: str, kind: str, single: bool, per: str) -> str:
    label = {"train": f"train (per {per})", "validation": "validation", "test": "test"}[kind]
    return label if single else f"{run} · {label}"


def legend_below(**extra) -> dict:
    """A horizontal legend at the foot of the figure, under the x axis and its title: on a narrow screen it wraps
    onto more rows and lifts the plot, instead of covering the title or taking the plot's width."""
    return dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left", **extra)


def curves_figure(runs: Mapping[str, Sequence[dict]] | Iterable[tuple[str, Sequence[dict]]], metric: str = "loss",
                  x: str = "epoch", smoothing: float = 0.0, log_y: bool = False, per: str = "step",
                  title: str | None = None, height: int = 380, colors: Mapping[str, str] | None = None,
                  legend: str = "traces") -> go.Figure:
    """Loss or accuracy curves of several runs, from their events (e.g. `{run.name: run.metrics}`).

    metric: "loss" | "acc"; x: "epoch" | "step" | "time" (training seconds, resumes included);
    smoothing: 0..0.99, debiased EMA on every curve, the raw curve faint behind; per: the
    training curve from every logged step or from the epoch means. Validation is per epoch.
    colors: a run's colour where given (e.g. `distinct_colors`), else `run_color`.
    legend: "traces", an entry per curve; "runs", one entry per run of several (a click on it hides all its
    curves; say in a caption that training is dashed, validation solid and the test a star).
    The legend is horizontal, under the plot.
    """
    if legend not in ("traces", "runs"):
        raise ValueError(f"legend must be 'traces' or 'runs', got {legend!r}")
    items = list(runs.items() if isinstance(runs, Mapping) else runs)
    single = len(items) == 1
    by_run = legend == "runs" and not single
    fig = go.Figure()
    value_format = ".1%" if metric == "acc" else ".4f"
    for run, events in items:
        color = (colors or {}).get(run) or run_color(run)
        group = None if single else run  # one run: its three entries side by side, not stacked as a group
        series = curve_series(events, metric, x, per)
        if by_run and series:  # the run's one legend entry, standing for all its curves
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=run, legendgroup=run,
                                     line=dict(color=color, width=3), hoverinfo="skip"))
        for s in series:
            name = _trace_name(run, s.kind, single, per)
            hover = (f"<b>{run}</b><br>{s.kind}<br>{_x_hover(x)}<br>{METRICS[metric]} "
                     f"%{{y:{value_format}}}<extra></extra>")
            xs = _plot_x(s.x, x)
            if s.kind == "test":
                fig.add_trace(go.Scatter(x=xs, y=s.y, name=name, legendgroup=group, mode="markers",
                                         marker=dict(color=color, symbol="star", size=13,
                                                     line=dict(color="white", width=1)),
                                         hovertemplate=hover, showlegend=not by_run))
                continue
            dash = "dash" if s.kind == "train" else "solid"
            markers = s.kind == "validation" or per == "epoch"
            mode = "lines+markers" if markers else "lines"
            y = s.y
            if smoothing > 0 and len(s.y) > 1:
                fig.add_trace(go.Scatter(x=xs, y=s.y, mode=mode, legendgroup=group, showlegend=False,
                                         opacity=0.25, line=dict(color=color, dash=dash, width=1),
                                         marker=dict(size=4), hoverinfo="skip", name=f"{name} (raw)"))
                y = smooth(s.y, smoothing)
            fig.add_trace(go.Scatter(x=xs, y=y, name=name, legendgroup=group, mode=mode,
                                     line=dict(color=color, dash=dash, width=2), marker=dict(size=6),
                                     hovertemplate=hover, showlegend=not by_run))
    fig = _curves_layout(fig, METRICS[metric] + (" (smoothed)" if smoothing > 0 else ""), x, log_y, title, height)
    if metric == "acc":
        fig.update_yaxes(tickformat=".1~%")  # 14%, 13.5%: no repeated labels on a narrow range
    return fig


def rate_figure(runs: Mapping[str, Sequence[dict]], x: str = "step", log_y: bool = False, title: str | None = None,
                height: int = 380, colors: Mapping[str, str] | None = None) -> go.Figure:
    """The learning rate of several runs, one line a run in its colour, from their step events (`rate_series`);
    the same x axes as `curves_figure`. One run: no legend. Ticks as plain numbers (0.05, 2e-7), never SI
    prefixes (200n)."""
    fig = go.Figure()
    for run, events in runs.items():
        series = rate_series(events, x)
        if not series.x:
            continue
        color = (colors or {}).get(run) or run_color(run)
        fig.add_trace(go.Scatter(x=_plot_x(series.x, x), y=series.y, name=run, mode="lines",
                                 line=dict(color=color, width=2), showlegend=len(runs) > 1,
                                 hovertemplate=f"<b>{run}</b><br>{_x_hover(x)}<br>learning rate %{{y:.3g}}"
                                               "<extra></extra>"))
    return _curves_layout(fig, "learning rate", x, log_y, title, height).update_yaxes(tickformat=".2~g")


def rate_caption(configs: Mapping[str, Mapping]) -> str:
    """What the rate chart shows for runs with these configs: the logged rate is the head's where the conv layers
    train at a fraction of it, or not at all."""
    text = "The learning rate each logged step trained with."
    scaled = [f"{run} ({config['features_lr_scale']:g}×)" for run, config in configs.items()
              if config.get("features_lr_scale", 1) != 1 and not config.get("freeze_features")]
    frozen = [run for run, config in configs.items() if config.get("freeze_features")]
    if scaled:
        text += (f" The conv layers of {', '.join(scaled)} train at that fraction of the rate: the curve is the "
                 "classifier's (the head's) rate.")
    if frozen:
        text += f" The conv layers of {', '.join(frozen)} are frozen: the curve is the classifier's rate alone."
    return text


def _curves_layout(fig: go.Figure, y_title: str, x: str, log_y: bool, title: str | None, height: int) -> go.Figure:
    """Axes (a date axis for the wall clock), legend under the plot, and a 'no points yet' note on an empty figure."""
    fig.update_layout(
        title=title, height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10), legend=legend_below(),
        xaxis_title=X_AXES[x], yaxis_title=y_title, hovermode="closest", template="plotly_white")
    if x == "wall":
        fig.update_xaxes(type="date")
    if log_y:
        fig.update_yaxes(type="log")
    if not fig.data:
        fig.add_annotation(text="no points yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font=dict(size=16, color="grey"))
    return fig


# ---- Images, attribution maps and class probabilities (Predict and Explain pages) ----

_TOP_COLOR, _OTHER_COLOR, _TRUE_COLOR = "#1f77b4", "#c7d4e3", "#2ca02c"

# Colour scales whose lightness changes monotonically, so equal steps in value read as equal steps in colour
# (never jet or a rainbow, whose bright yellow band in the middle reads as a peak that is not there).
HEAT_SCALE = "Inferno"      # one-sided attribution maps: black (none) to pale yellow (most)
ACTIVATION_SCALE = "Viridis"  # activations: dark blue (0) to yellow
SIGNED_SCALE = "RdBu_r"     # signed values: ColorBrewer's diverging blue-white-red, as light at 0 as at the
                            # other end is dark, the same lightness for +v and -v
ACCURACY_SCALE = "Viridis"  # runs coloured by test accuracy: dark blue (lowest) to yellow (highest)


def _picture_layout(fig: go.Figure, title: str | None, height: int) -> go.Figure:
    """Square pixels, y downwards as in an image, no ticks."""
    fig.update_layout(title=title, height=height, margin=dict(l=0, r=0, t=30 if title else 0, b=0),
                      template="plotly_white", plot_bgcolor="white")
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", constrain="domain")
    return fig


def probability_bars(probabilities: Sequence[float], classes: Sequence[str], true_label: int | None = None,
                     title: str | None = None, height: int = 330, top: int | None = None) -> go.Figure:
    """Every class's probability as a horizontal bar, most likely on top; the true class (if known) in green.

    With `top`, only the `top` most likely classes (1000 ImageNet names do not fit a chart), and the true one.
    """
    order = sorted(range(len(classes)), key=lambda i: probabilities[i])
    if top is not None:
        order = [i for i in order if i in order[-top:] or i == true_label]
    top = order[-1]
    colors = [_TRUE_COLOR if i == true_label else _TOP_COLOR if i == top else _OTHER_COLOR for i in order]
    names = [f"{classes[i]} (true)" if i == true_label else classes[i] for i in order]
    fig = go.Figure(go.Bar(x=[probabilities[i] for i in order], y=names, orientation="h", marker_color=colors,
                           text=[f"{probabilities[i]:.1%}" for i in order], textposition="outside",
                           cliponaxis=False, hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=40, t=40 if title else 10, b=10),
                      template="plotly_white", xaxis=dict(range=[0, 1.0], tickformat=".0%", title="probability"),
                      showlegend=False)
    return fig


def image_figure(rgb: np.ndarray, title: str | None = None, height: int = 260) -> go.Figure:
    """An RGB uint8 image with square, unsmoothed pixels; hover gives each pixel's position and values."""
    fig = go.Figure(go.Image(z=rgb, hovertemplate="x %{x}, y %{y}<br>RGB %{z}<extra></extra>"))
    return _picture_layout(fig, title, height)


def overlay_figure(rgb: np.ndarray, heat: np.ndarray, opacity: float = 0.5, title: str | None = None,
                   diverging: bool = False, colorbar: str = "", height: int = 320) -> go.Figure:
    """A map laid over the image it explains (same height and width), with `opacity` 0 (image) to 1 (map).

    A one-sided map runs from black (0) to pale yellow (its peak) on inferno; a diverging map gets a
    symmetric red-blue scale with white at zero. The colour bar lies under the picture.
    """
    if heat.shape[:2] != rgb.shape[:2]:
        raise ValueError(f"the map {heat.shape[:2]} and the image {rgb.shape[:2]} differ in size")
    fig = go.Figure(go.Image(z=rgb, hoverinfo="skip"))
    finite = heat[np.isfinite(heat)]
    peak = float(np.abs(finite).max()) if finite.size else 1.0
    peak = peak or 1.0
    scale = dict(colorscale=SIGNED_SCALE, zmin=-peak, zmax=peak) if diverging else \
        dict(colorscale=HEAT_SCALE, zmin=0, zmax=peak)
    fig.add_trace(go.Heatmap(z=heat, opacity=opacity, **scale,  # ticks 0.0001 .. 0.0003 or 1e-6, never 100µ
                             colorbar=dict(title=dict(text=colorbar, side="right"), orientation="h", thickness=10,
                                           y=-0.02, yanchor="top", len=0.9, tickformat=".2~g", nticks=5),
                             hovertemplate="x %{x}, y %{y}<br>%{z:.3g}<extra></extra>"))
    return _picture_layout(fig, title, height)


def signed_rgb(values: np.ndarray) -> np.ndarray:
    """A signed H x W x 3 attribution to an RGB uint8 picture: grey is 0, brighter/darker colours + and -."""
    peak = float(np.abs(values).max()) or 1.0
    return np.clip((0.5 + values / (2 * peak)) * 255, 0, 255).round().astype(np.uint8)


MOSAIC_WIDTH = 860  # px: about a wide page's plot width (the layout is "wide"); a phone shows it narrower


def fit_height(rows: int, columns: int, extra: int = 0, low: int = 100, high: int = 900) -> int:
    """The figure height (px) at which a picture of rows x columns square pixels is MOSAIC_WIDTH px wide, plus
    `extra` (a title, a colour bar), within [low, high]: the height follows the picture's aspect ratio, so a
    wide mosaic gets a low figure, without the blank bands a fixed height leaves above and below it."""
    return int(min(high, max(low, round(MOSAIC_WIDTH * rows / max(columns, 1)) + extra)))


_BAR_BELOW = dict(orientation="h", thickness=10, y=0, yref="container", yanchor="bottom", len=0.6, x=0.5,
                  xanchor="center")  # a colour bar under a picture leaves it the whole width


def mosaic_figure(mosaic: np.ndarray, title: str | None = None, diverging: bool = True, height: int | None = None,
                  hover: str = "value") -> go.Figure:
    """A tiled grid from `explain.tile`: RGB (values in [0, 1], NaN gaps white) or one value per pixel.

    One-channel mosaics use a red-blue scale centred on zero (kernels) or viridis (activations), its colour
    bar under the grid. Height: `fit_height` of the mosaic unless given.
    """
    extra = 30 if title else 0
    if mosaic.ndim == 3:
        rgb = np.where(np.isnan(mosaic), 1.0, mosaic)
        fig = go.Figure(go.Image(z=(np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), hoverinfo="skip"))
        return _picture_layout(fig, title, height or fit_height(*mosaic.shape[:2], extra=extra))
    finite = mosaic[np.isfinite(mosaic)]
    peak = float(np.abs(finite).max()) if finite.size else 1.0
    scale = dict(colorscale=SIGNED_SCALE, zmid=0, zmin=-peak, zmax=peak) if diverging else \
        dict(colorscale=ACTIVATION_SCALE)
    fig = go.Figure(go.Heatmap(z=mosaic, hovertemplate=f"{hover} %{{z:.3g}}<extra></extra>",
                               colorbar=dict(_BAR_BELOW, tickformat=".2~g"), **scale))
    return _picture_layout(fig, title, height or fit_height(*mosaic.shape, extra=extra + 45))


def feature_maps_figure(maps: np.ndarray, channels: Sequence[int], columns: int = 8, per_map_scale: bool = False,
                        title: str | None = None, height: int | None = None, signed: bool = False) -> go.Figure:
    """Feature maps (C x H x W, in the order given) as one grid; hover names each pixel's channel.

    One colour scale for all maps by default, so weak channels look weak; `per_map_scale`
    stretches each to its own maximum to show the shape of weak ones. `signed` maps (after a BN, which
    can turn values negative) get a red-blue scale with white at zero instead of viridis from zero.
    The colour bar lies under the grid; height: `fit_height` of the grid unless given.
    """
    count, h, w = maps.shape
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    peaks = np.abs(maps).reshape(count, -1).max(axis=1) if signed else maps.reshape(count, -1).max(axis=1)
    values = maps / np.maximum(peaks, 1e-12)[:, None, None] if per_map_scale else maps
    grid = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), np.nan, dtype=np.float32)
    labels = np.full(grid.shape, -1, dtype=np.int64)
    for i in range(count):
        r, c = divmod(i, columns)
        grid[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = values[i]
        labels[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = channels[i]
    bar = dict(_BAR_BELOW, title=dict(text="of max" if per_map_scale else "activation", side="right"),
               tickformat=".2~g")
    finite = np.abs(values[np.isfinite(values)])
    peak = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    scale = dict(colorscale=SIGNED_SCALE, zmid=0, zmin=-peak, zmax=peak) if signed else \
        dict(colorscale=ACTIVATION_SCALE, zmin=0)
    fig = go.Figure(go.Heatmap(z=grid, customdata=labels, colorbar=bar, **scale,
                               hovertemplate="channel %{customdata}<br>%{z:.3g}<extra></extra>"))
    return _picture_layout(fig, title, height or fit_height(*grid.shape, extra=(30 if title else 0) + 45))


def cascade_figure(maps: np.ndarray, titles: Sequence[str], height: int | None = None) -> go.Figure:
    """Maps in a row (n x H x W), each as |value| over its own largest and titled above: the model-randomisation
    check's maps (`sanity.RandomisationCheck`), whose shapes are compared, not their sizes (a random
    network's scores have another scale). Inferno, its colour bar under the row."""
    count, h, w = maps.shape
    peaks = np.abs(maps).reshape(count, -1).max(axis=1)
    values = np.abs(maps) / np.where(peaks > 0, peaks, 1)[:, None, None]
    gap = max(1, w // 8)
    grid = np.full((h, count * (w + gap) - gap), np.nan, dtype=np.float32)
    for i in range(count):
        grid[:, i * (w + gap):i * (w + gap) + w] = values[i]
    bar = dict(_BAR_BELOW, title=dict(text="of the map's max", side="right"), tickformat=".1f")
    fig = go.Figure(go.Heatmap(z=grid, colorscale=HEAT_SCALE, zmin=0, zmax=1, colorbar=bar,
                               hovertemplate="%{z:.2f} of the map's max<extra></extra>"))
    for i, text in enumerate(titles):
        fig.add_annotation(x=i * (w + gap) + (w - 1) / 2, y=-0.5, yanchor="bottom", text=text, showarrow=False,
                           font=dict(size=11))
    fig = _picture_layout(fig, None, height or fit_height(h, grid.shape[1], extra=110))
    return fig.update_layout(margin=dict(l=0, r=0, t=40, b=0))


# ---- Comparing runs and the architecture diagram (Compare and Home pages) ----


def png_config(filename: str, scale: int = 2) -> dict:
    """A plotly `config` whose modebar camera button saves the chart as a PNG named `filename`."""
    return {"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": filename, "scale": scale}}


def _hls(color: str) -> tuple[float, float, float]:
    r, g, b = (int(color.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4))
    return colorsys.rgb_to_hls(r, g, b)


def _alike(first: str, second: str) -> bool:
    """Two colours a reader may confuse: greys of similar lightness, or hues less than 25 degrees apart."""
    h1, l1, s1 = _hls(first)
    h2, l2, s2 = _hls(second)
    if s1 < 0.25 or s2 < 0.25:
        return s1 < 0.25 and s2 < 0.25 and abs(l1 - l2) < 0.25
    return min(abs(h1 - h2), 1 - abs(h1 - h2)) < 25 / 360


def distinct_colors(names: Sequence[str]) -> dict[str, str]:
    """Each run's `run_color`, unless an earlier run of `names` already has a look-alike colour: then the first
    palette colour unlike all taken ones. Pass the result to every chart of a page, so a run keeps one colour
    on all of them, and that is its colour on the other pages too whenever no look-alike forces a change."""
    taken: dict[str, str] = {}
    for name in names:
        color = run_color(name)
        if any(_alike(color, c) for c in taken.values()):
            color = next((c for c in PALETTE if not any(_alike(c, t) for t in taken.values())), color)
        taken[name] = color
    return taken


SHORT_CLASS_NAMES = {"airplane": "plane", "automobile": "auto"}  # CIFAR-10's two long names, for narrow axes


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str | None = None,
                     height: int | None = None, cells: str = "shares") -> go.Figure:
    """A confusion matrix as row shares (each true class sums to 100%) on a fixed 0-100% scale; hover gives both
    the count and the share.

    Fixed scale, so two runs' matrices side by side can be compared by eye. Cells are written at 11 px: the share
    (empty below 0.5%), or with `cells="counts"` the number of images (empty at 0); the classes are named
    upright and short ("plane", "auto"; hover gives full names), and the colour bar lies under the matrix, so
    a half-width column still gives the cells room. Height: about 40 px a class unless given.
    """
    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    if cells == "counts":
        text = [[f"{int(v):,}" if v else "" for v in row] for row in counts]
    else:
        text = [[f"{v:.0%}" if v >= 0.005 else "" for v in row] for row in shares]
    names = list(classes)
    fig = go.Figure(go.Heatmap(
        z=shares, x=names, y=names, zmin=0, zmax=1, colorscale="Blues", text=text,
        texttemplate="%{text}", textfont=dict(size=11), customdata=counts.astype(int),
        colorbar=dict(thickness=10, tickformat=".0%", orientation="h", y=0, yref="container", yanchor="bottom",
                      len=0.6, x=0.5, xanchor="center"),
        hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata} images (%{z:.1%} of the %{y}s)<extra></extra>"))
    fig.update_layout(title=title, height=height or 130 + 36 * len(names),
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      template="plotly_white", xaxis_title="predicted", yaxis_title="true")
    fig.update_xaxes(tickvals=names, ticktext=[SHORT_CLASS_NAMES.get(n, n) for n in names], tickangle=0,
                     tickfont=dict(size=11), automargin=True)
    fig.update_yaxes(tickvals=names, ticktext=[SHORT_CLASS_NAMES.get(n, n) for n in names], autorange="reversed",
                     tickfont=dict(size=11), automargin=True)
    return fig


def per_class_figure(per_class: Mapping[str, Sequence[float]], classes: Sequence[str], title: str | None = None,
                     height: int = 360, colors: Mapping[str, str] | None = None) -> go.Figure:
    """Per-class test accuracy of several runs as grouped bars, each run in its own colour; the legend under the
    plot, clear of the title; classes named short ("plane", "auto"), hover gives the full name."""
    fig = go.Figure()
    for run, values in per_class.items():
        color = (colors or {}).get(run) or run_color(run)
        fig.add_trace(go.Bar(x=list(classes), y=list(values), name=run, marker_color=color,
                             hovertemplate=f"<b>{run}</b><br>%{{x}}: %{{y:.1%}}<extra></extra>"))
    fig.update_xaxes(tickvals=list(classes), ticktext=[SHORT_CLASS_NAMES.get(c, c) for c in classes])
    fig.update_layout(title=title, height=height, barmode="group", template="plotly_white",
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10), legend=legend_below(),
                      yaxis=dict(range=[0, 1], tickformat=".0%", title="test accuracy"))
    return fig


def settings_figure(plot: SettingsAgainstAccuracy, height: int = 420, colors: Mapping[str, str] | None = None
                    ) -> go.Figure:
    """Finished runs' settings against their test accuracy (`compare.settings_against_accuracy`).

    Two or more differing settings: parallel coordinates, an axis a setting (categories at their labels, a
    log axis labelled with the values) and test accuracy last, each run a line coloured by its accuracy on
    ACCURACY_SCALE, the colour bar under the plot. One setting: a scatter of accuracy against it, each run
    a point in its own colour (`colors`, else `run_color`), hover naming it. None: a note.
    """
    if len(plot.axes) == 1:
        return _setting_scatter(plot, height, colors)
    fig = go.Figure()
    if plot.axes:
        dimensions = [dict(label=a.key + (" (log)" if a.log else ""), values=a.values, tickvals=a.ticks or None,
                           ticktext=a.labels or None) for a in plot.axes]
        dimensions.append(dict(label="test accuracy", values=plot.accuracy, tickformat=".1%"))
        fig.add_trace(go.Parcoords(
            dimensions=dimensions, labelfont=dict(size=12), tickfont=dict(size=11), rangefont=dict(size=10),
            line=dict(color=plot.accuracy, colorscale=ACCURACY_SCALE, showscale=True,
                      colorbar=dict(_BAR_BELOW, title=dict(text="test accuracy", side="right"), tickformat=".1%"))))
    else:
        fig.add_annotation(text="no settings differ between these finished runs", showarrow=False, xref="paper",
                           yref="paper", x=0.5, y=0.5, font=dict(size=16, color="grey"))
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    # The first axis's tick labels lie left of it, in the margin: room for the longest (about 7 px a character).
    left = max(60, min(240, 7 * max((len(label) for label in plot.axes[0].labels), default=0))) if plot.axes else 60
    return fig.update_layout(height=height, margin=dict(l=left, r=60, t=50, b=80), template="plotly_white")


def _setting_scatter(plot: SettingsAgainstAccuracy, height: int, colors: Mapping[str, str] | None) -> go.Figure:
    axis = plot.axes[0]
    place = {v: label for v, label in zip(axis.ticks, axis.labels)}
    shown = [place.get(v, f"{10 ** v:g}" if axis.log else f"{v:g}") for v in axis.values]
    fig = go.Figure(go.Scatter(
        x=axis.values, y=plot.accuracy, mode="markers", customdata=[[r, v] for r, v in zip(plot.runs, shown)],
        marker=dict(size=13, color=[(colors or {}).get(r) or run_color(r) for r in plot.runs],
                    line=dict(color="white", width=1)),
        hovertemplate=f"<b>%{{customdata[0]}}</b><br>{axis.key} %{{customdata[1]}}<br>test accuracy %{{y:.1%}}"
                      "<extra></extra>"))
    fig.update_xaxes(title=axis.key + (" (log)" if axis.log else ""), tickvals=axis.ticks or None,
                     ticktext=axis.labels or None)
    return fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), template="plotly_white",
                             yaxis=dict(title="test accuracy", tickformat=".1%"), showlegend=False)


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def seed_band_figure(groups: Sequence[tuple[str, Mapping[str, Sequence[dict]]]], metric: str = "acc",
                     title: str | None = None, height: int = 380, colors: Mapping[str, str] | None = None
                     ) -> go.Figure:
    """Validation curves of runs grouped by seed: the mean as a line, ± one standard deviation as a band,
    every run faint behind; the legend says how many runs each band holds (hover: how many at each epoch).

    groups: [(label, {run name: events})]; a group's colour is `colors[label]`, else a hash of its label.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    key = f"val_{metric}"
    value_format = ".1%" if metric == "acc" else ".4f"
    fig = go.Figure()
    for label, runs in groups:
        color = (colors or {}).get(label) or run_color(label)
        curves = []
        for run, events in runs.items():
            points = [(float(e["epoch"]), float(e[key])) for e in events
                      if e.get("event") == "epoch" and _finite(e.get(key))]
            if not points:
                continue
            xs, ys = zip(*points)
            curves.append((xs, ys))
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=1), opacity=0.3,
                                     legendgroup=label, showlegend=False, name=run,
                                     hovertemplate=f"{run}<br>epoch %{{x}}: %{{y:{value_format}}}<extra></extra>"))
        band = mean_band(curves)
        if not band:
            continue
        x = [p.x for p in band]
        upper = [p.mean + p.std for p in band]
        lower = [p.mean - p.std for p in band]
        fig.add_trace(go.Scatter(x=x + x[::-1], y=upper + lower[::-1], fill="toself", fillcolor=_rgba(color, 0.18),
                                 line=dict(width=0), hoverinfo="skip", legendgroup=label, showlegend=False,
                                 name=f"{label} ± 1 sd"))
        fig.add_trace(go.Scatter(
            x=x, y=[p.mean for p in band], mode="lines+markers", line=dict(color=color, width=3),
            marker=dict(size=6), legendgroup=label, name=f"{label} (mean of {len(curves)} run{'s' * (len(curves) > 1)})",
            customdata=[[p.std, p.n] for p in band],
            hovertemplate=(f"<b>{label}</b><br>epoch %{{x}}<br>mean %{{y:{value_format}}} ± %{{customdata[0]:"
                           f"{value_format}}}<br>%{{customdata[1]}} run(s)<extra></extra>")))
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      template="plotly_white", xaxis_title="epoch", yaxis_title=f"validation {METRICS[metric]}",
                      legend=legend_below(), hovermode="closest")
    if metric == "acc":
        fig.update_yaxes(tickformat=".1%")
    if not fig.data:
        fig.add_annotation(text="no validation points yet", showarrow=False, xref="paper", yref="paper", x=0.5,
                           y=0.5, font=dict(size=16, color="grey"))
    return fig


_KIND_COLORS = {"Conv2d": "#1f77b4", "LocalResponseNorm": "#ff7f0e", "BatchNorm2d": "#d62728", "Identity": "#c7c7c7",
                "MaxPool2d": "#2ca02c", "Linear": "#9467bd", "ReLU": "#bcbd22", "Dropout": "#7f7f7f",
                "Flatten": "#8c564b", "AdaptiveAvgPool2d": "#98df8a"}
_KIND_NAMES = {"Conv2d": "convolution", "LocalResponseNorm": "LRN", "BatchNorm2d": "batch norm",
               "Identity": "no norm", "MaxPool2d": "max-pool", "Linear": "fully connected", "ReLU": "ReLU",
               "Dropout": "dropout", "Flatten": "flatten", "AdaptiveAvgPool2d": "average pool"}
_THIN = ("ReLU", "Dropout", "Flatten", "Identity")
NORM_COLORS = {NORM_SHORT_LABELS["lrn"]: _KIND_COLORS["LocalResponseNorm"],  # by label, the same on every page
               NORM_SHORT_LABELS["bn"]: _KIND_COLORS["BatchNorm2d"]}


def layer_labels(rows: Sequence) -> list[str]:
    """Short names in the paper's numbering: conv1..conv5, fc6..fc8, pool1.., and the norm by its kind."""
    labels, conv, fc, pool = [], 0, 5, 0
    for row in rows:
        kind = row.kind
        if kind == "Conv2d":
            conv += 1
            labels.append(f"conv{conv}")
        elif kind == "Linear":
            fc += 1
            labels.append(f"fc{fc}")
        elif kind == "MaxPool2d":
            pool += 1
            labels.append(f"pool{pool}")
        elif kind == "LocalResponseNorm":
            labels.append("LRN")
        elif kind == "BatchNorm2d":
            labels.append("BN")
        elif kind == "Identity":
            labels.append("(no norm)")
        elif kind == "AdaptiveAvgPool2d":  # torchvision's, before its classifier: a long name turns every tick
            labels.append("avgpool")
        else:
            labels.append(kind.lower())
    return labels


def architecture_figure(rows: Sequence, title: str | None = None, height: int = 560) -> go.Figure:
    """One block per layer (rows of `models.summary`): block height grows with the output's size, the shape
    written on it where it fits; below, each layer's parameters and multiply-adds per image on a log scale.

    Made to narrow gracefully: the legend lies under the plot and wraps, a block's shape is written only
    where it fits at a legible size (else hover gives it), the x axis names the wide blocks (convolutions,
    norms, pools, fully connected; upright where they fit, else vertical), and the legend the colours of the
    thin ones it does not name (ReLU, dropout, flatten).
    """
    labels = layer_labels(rows)
    x = list(range(len(rows)))
    sizes = [max(float(np.prod(r.output_shape)), 1.0) for r in rows]
    heights = [math.log10(s) + 0.3 for s in sizes]
    shapes = ["×".join(map(str, r.output_shape)) for r in rows]
    hover = [f"<b>{lab}</b> ({r.name}, {r.kind})<br>output {shape}<br>{r.parameters:,} parameters<br>"
             f"{r.mult_adds:,} multiply-adds" for lab, r, shape in zip(labels, rows, shapes)]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.58, 0.42], vertical_spacing=0.06)
    fig.add_trace(go.Bar(
        x=x, y=heights, base=[-h / 2 for h in heights], width=[0.35 if r.kind in _THIN else 0.85 for r in rows],
        marker_color=[_KIND_COLORS.get(r.kind, "#17becf") for r in rows], hovertext=hover, hoverinfo="text",
        text=[s if r.kind not in _THIN else "" for s, r in zip(shapes, rows)], textposition="inside",
        textangle=-90, insidetextanchor="middle", textfont=dict(color="white", size=12), showlegend=False,
        name="layers"), row=1, col=1)
    params = [r.parameters or None for r in rows]
    macs = [r.mult_adds or None for r in rows]
    # The bars below carry a blank text: plotly.js forgets the blocks' `uniformtext` sizes when a later subplot's
    # bars have no text at all, and then shrinks the shapes that do not fit instead of hiding them.
    fig.add_trace(go.Bar(x=x, y=params, name="parameters", marker_color="#636efa", hovertext=hover,
                         hoverinfo="text", text=" ", textposition="inside"), row=2, col=1)
    fig.add_trace(go.Bar(x=x, y=macs, name="multiply-adds", marker_color="#ef553b", hovertext=hover,
                         hoverinfo="text", text=" ", textposition="inside"), row=2, col=1)
    kinds = dict.fromkeys(r.kind for r in rows if r.kind in _THIN)
    for kind in kinds:  # the colours of the thin blocks the x axis does not name (hover does)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=_KIND_NAMES.get(kind, kind),
                                 marker=dict(symbol="square", size=12, color=_KIND_COLORS.get(kind, "#17becf"))),
                      row=1, col=1)
    fig.update_layout(title=dict(text=title, x=0, xanchor="left"), height=height, template="plotly_white",
                      barmode="group", bargap=0.15, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      legend=legend_below(traceorder="normal"),
                      uniformtext=dict(minsize=10, mode="hide"))  # a shape that fits only smaller is hidden
    fig.update_yaxes(visible=False, row=1, col=1)
    fig.update_yaxes(type="log", title="count (log)", row=2, col=1)
    named = [i for i, r in enumerate(rows) if r.kind not in _THIN]  # ReLU, dropout, flatten: hover names them
    fig.update_xaxes(tickvals=named, ticktext=[labels[i] for i in named],
                     autotickangles=[0, 90], tickfont=dict(size=11), automargin=True, row=2, col=1)
    return fig


def replication_figure(rows: Sequence[Mapping], height: int | None = None) -> go.Figure:
    """Accuracies of `history.replication_rows` as horizontal bars: published figures grey, this project's runs
    in their norm's colour, hatched where measured on a subset or sample (not the full CIFAR-10).

    Each bar's source, and what it was measured on and with, are written above the bar inside the plot (12 and
    11 px, wrapped), not as axis labels, so on a phone the bars keep the whole width. The y axis counts about a
    pixel a unit, each row as tall as its lines of text and its bar need.
    """
    rows = [r for r in rows if r.get("accuracy") is not None]
    own = [r["source"].startswith("this project") for r in rows]
    colors = [NORM_COLORS.get(r["norm"], "#7f7f7f") if mine else "#b0b0b0" for r, mine in zip(rows, own)]
    hatch = ["/" if not r.get("full CIFAR-10", True) else "" for r in rows]
    bar, gap = 24, 14
    centres, top = [], 4.0
    fig = go.Figure()
    for r in rows:
        hardware = str(r["hardware"]).replace(" ", "\u00a0")  # wrapped as one word ("2x Tesla T4")
        detail = textwrap.wrap(f"{r['measured on']} · {hardware}", 58)
        text_height = 17 + 15 * len(detail)
        fig.add_annotation(x=0, xref="paper", xanchor="left", y=top + text_height, yanchor="bottom",
                           showarrow=False, align="left", font=dict(size=12, color="#31333f"),
                           text=f"{r['source']}<br><span style='font-size:11px;color:#666'>{'<br>'.join(detail)}</span>")
        centres.append(top + text_height + 2 + bar / 2)
        top += text_height + 2 + bar + gap
    fig.add_trace(go.Bar(
        x=[r["accuracy"] for r in rows], y=centres, orientation="h", width=bar,
        marker=dict(color=colors, pattern_shape=hatch), text=[f"{r['accuracy']:.1%}" for r in rows],
        textposition="outside", textfont=dict(size=12), cliponaxis=False,
        customdata=[[r["source"], r["as reported"], r["network and recipe"]] for r in rows],
        hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[2]}<br><b>%{customdata[1]}</b><extra></extra>"))
    fig.update_layout(height=height or int(top) + 75, template="plotly_white", showlegend=False,
                      margin=dict(l=10, r=50, t=10, b=10), xaxis=dict(range=[0, 1], tickformat=".0%",
                                                                      title="CIFAR-10 accuracy"))
    fig.update_yaxes(range=[top, 0], showticklabels=False, showgrid=False, zeroline=False, fixedrange=True)
    return fig


# ---- What a norm layer does (Explain page) ----


def norm_statistics_figure(statistics: Mapping[str, Mapping[str, np.ndarray]], colors: Mapping[str, str] | None = None,
                           height: int = 330) -> go.Figure:
    """Each channel's mean (left) and standard deviation (right) over its map, before the norm (x) against after
    it (y), one point a channel, one colour a model; the dashed diagonal is 'unchanged'.

    statistics: {model label: `NormStage.statistics()`}.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("channel mean", "channel standard deviation"),
                        horizontal_spacing=0.12)
    for n, (label, stats) in enumerate(statistics.items()):
        color = (colors or {}).get(label) or PALETTE[n % len(PALETTE)]
        for col, what in ((1, "mean"), (2, "std")):
            before, after = stats[f"{what}_before"], stats[f"{what}_after"]
            fig.add_trace(go.Scatter(
                x=before, y=after, mode="markers", name=label, legendgroup=label, showlegend=col == 1,
                marker=dict(color=color, size=6, opacity=0.7), customdata=np.arange(len(before)),
                hovertemplate=f"<b>{label}</b><br>channel %{{customdata}}<br>before %{{x:.3g}}<br>after %{{y:.3g}}"
                              "<extra></extra>"), row=1, col=col)
            low = float(min(before.min(initial=0), after.min(initial=0)))
            high = float(max(before.max(initial=0), after.max(initial=0)))
            fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", showlegend=False, hoverinfo="skip",
                                     line=dict(color="#999", dash="dash", width=1)), row=1, col=col)
    fig.update_xaxes(title_text="before the norm")
    fig.update_yaxes(title_text="after the norm", col=1)
    fig.update_layout(height=height, template="plotly_white", margin=dict(l=10, r=10, t=30, b=10),
                      legend=legend_below())
    return fig


# ---- Learning-rate range tests (Train and Compare pages) ----


def _shown_losses(curves: Mapping[str, Mapping]) -> tuple[float, float] | None:
    """The loss range worth drawing: from the lowest smoothed loss to a little above the loss before each minimum
    (a diverged tail reaches 1e29 and would flatten the rest)."""
    low, high = math.inf, -math.inf
    for c in curves.values():
        values = [v for v in c["smoothed"] if isinstance(v, (int, float)) and math.isfinite(v)]
        if not values:
            continue
        at = values.index(min(values))
        low, high = min(low, values[at]), max(high, max(values[:at + 1]))
    if not math.isfinite(low):
        return None
    return low - 0.1 * (high - low) - 0.02, high + 0.35 * (high - low) + 0.02


def range_test_figure(curves: Mapping[str, Mapping], colors: Mapping[str, str] | None = None,
                      title: str | None = None, height: int = 380) -> go.Figure:
    """Loss against learning rate on a log axis, one line per range test (`RangeTest.to_dict()`s by label).

    The smoothed loss as the line, the measured one faint behind it; each suggestion a diamond with its rate.
    """
    fig = go.Figure()
    for label, c in curves.items():
        color = (colors or {}).get(label) or run_color(label)
        fig.add_trace(go.Scatter(x=c["rates"], y=c["losses"], mode="lines", name=f"{label} (measured)",
                                 legendgroup=label, showlegend=False, opacity=0.3, line=dict(color=color, width=1),
                                 hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=c["rates"], y=c["smoothed"], mode="lines", name=label, legendgroup=label,
                                 line=dict(color=color, width=2),
                                 hovertemplate=f"<b>{label}</b><br>rate %{{x:.3g}}<br>smoothed loss %{{y:.3f}}"
                                               "<extra></extra>"))
        rate = c.get("suggestion")
        if rate:
            nearest = min(range(len(c["rates"])), key=lambda i: abs(math.log(c["rates"][i] / rate)))
            fig.add_trace(go.Scatter(
                x=[rate], y=[c["smoothed"][nearest]], mode="markers+text", name=f"{label}: suggested {rate:.3g}",
                legendgroup=label, text=[f"{rate:.3g}"], textposition="top center", textfont=dict(color=color),
                marker=dict(color=color, size=12, symbol="diamond", line=dict(color="white", width=1)),
                hovertemplate=f"<b>{label}</b><br>suggested peak rate {rate:.3g}<extra></extra>"))
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      legend=legend_below(), template="plotly_white", hovermode="closest",
                      xaxis=dict(type="log", title="learning rate (log scale)", exponentformat="power"),
                      yaxis=dict(title="training loss (smoothed)"))
    shown = _shown_losses(curves)
    if shown:
        fig.update_yaxes(range=list(shown))
    if not fig.data:
        fig.add_annotation(text="no range test yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font=dict(size=16, color="grey"))
    return fig
