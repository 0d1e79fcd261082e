"""Plotly figures shared by the app's pages (plotly only: no streamlit here, so tests can build them).

`curves_figure` draws loss or accuracy curves of one or many runs straight from their
metrics.jsonl events: training dashed, validation solid, one colour per run name that stays
the same in every chart, an optional debiased exponential smoothing with the raw curve kept
faintly behind it, so smoothing can never hide what was measured.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.colors import qualitative

__all__ = ["PALETTE", "run_color", "smooth", "Series", "curve_series", "curves_figure"]

# Distinct, readable on white: Plotly's ten, then D3's and Dark24's further hues.
PALETTE: tuple[str, ...] = tuple(dict.fromkeys(qualitative.Plotly + qualitative.D3 + qualitative.Dark24))

METRICS = {"loss": "loss", "acc": "accuracy"}
X_AXES = {"epoch": "epoch", "step": "step", "time": "training time (s)"}
X_KEYS = {"epoch": "epoch", "step": "global_step", "time": "time"}


def run_color(name: str) -> str:
    """The run's colour: a hash of its name, so it is the same on every page, in every session."""
    return PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average, debiased as TensorBoard does (the first points are not pulled to 0).

    `weight` in [0, 1): 0 returns the values unchanged. Non-finite values pass through and do not
    poison the average.
    """
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {weight}")
    out, last, count = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        last = last * weight + (1 - weight) * v
        count += 1
        out.append(last / (1 - weight ** count))
    return out


@dataclass
class Series:
    """One curve of one run: 'train', 'validation' or 'test', with its points."""
    kind: str
    x: list[float]
    y: list[float]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def curve_series(events: Iterable[dict], metric: str = "loss", x: str = "epoch", per: str = "step") -> list[Series]:
    """The curves one run's events give: training per step (or per epoch), validation per epoch, the test point.

    Points whose value is missing or not finite (no validation split: NaN) are left out.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if x not in X_KEYS:
        raise ValueError(f"x must be one of {', '.join(X_KEYS)}, got {x!r}")
    if per not in ("step", "epoch"):
        raise ValueError(f"per must be 'step' or 'epoch', got {per!r}")
    x_key = X_KEYS[x]
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


def _trace_name(run: str, kind: str, single: bool, per: str) -> str:
    label = {"train": f"train (per {per})", "validation": "validation", "test": "test"}[kind]
    return label if single else f"{run} · {label}"


def curves_figure(runs: Mapping[str, Sequence[dict]] | Iterable[tuple[str, Sequence[dict]]], metric: str = "loss",
                  x: str = "epoch", smoothing: float = 0.0, log_y: bool = False, per: str = "step",
                  title: str | None = None, height: int = 380) -> go.Figure:
    """Loss or accuracy curves of several runs, from their events (e.g. `{run.name: run.metrics}`).

    metric: "loss" | "acc"; x: "epoch" | "step" | "time" (training seconds, resumes included);
    smoothing: 0..0.99, debiased EMA on every curve, the raw curve faint behind; per: the
    training curve from every logged step or from the epoch means. Validation is per epoch.
    """
    items = list(runs.items() if isinstance(runs, Mapping) else runs)
    single = len(items) == 1
    fig = go.Figure()
    value_format = ".1%" if metric == "acc" else ".4f"
    for run, events in items:
        color = run_color(run)
        for s in curve_series(events, metric, x, per):
            name = _trace_name(run, s.kind, single, per)
            hover = (f"<b>{run}</b><br>{s.kind}<br>{X_AXES[x]} %{{x:.2f}}<br>{METRICS[metric]} "
                     f"%{{y:{value_format}}}<extra></extra>")
            if s.kind == "test":
                fig.add_trace(go.Scatter(x=s.x, y=s.y, name=name, legendgroup=run, mode="markers",
                                         marker=dict(color=color, symbol="star", size=13,
                                                     line=dict(color="white", width=1)),
                                         hovertemplate=hover))
                continue
            dash = "dash" if s.kind == "train" else "solid"
            markers = s.kind == "validation" or per == "epoch"
            mode = "lines+markers" if markers else "lines"
            y = s.y
            if smoothing > 0 and len(s.y) > 1:
                fig.add_trace(go.Scatter(x=s.x, y=s.y, mode=mode, legendgroup=run, showlegend=False,
                                         opacity=0.25, line=dict(color=color, dash=dash, width=1),
                                         marker=dict(size=4), hoverinfo="skip", name=f"{name} (raw)"))
                y = smooth(s.y, smoothing)
            fig.add_trace(go.Scatter(x=s.x, y=y, name=name, legendgroup=run, mode=mode,
                                     line=dict(color=color, dash=dash, width=2), marker=dict(size=6),
                                     hovertemplate=hover))
    fig.update_layout(
        title=title, height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),
        xaxis_title=X_AXES[x], yaxis_title=METRICS[metric] + (" (smoothed)" if smoothing > 0 else ""),
        hovermode="closest", template="plotly_white")
    if log_y:
        fig.update_yaxes(type="log")
    if metric == "acc":
        fig.update_yaxes(tickformat=".1~%")  # 14%, 13.5%: no repeated labels on a narrow range
    if not fig.data:
        fig.add_annotation(text="no points yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font=dict(size=16, color="grey"))
    return fig


# ---- Images, attribution maps and class probabilities (Predict and Explain pages) ----
import numpy as np  # noqa: E402  (this section's own imports, kept beside it)

__all__ += ["probability_bars", "image_figure", "overlay_figure", "signed_rgb", "mosaic_figure",
            "feature_maps_figure"]

_TOP_COLOR, _OTHER_COLOR, _TRUE_COLOR = "#1f77b4", "#c7d4e3", "#2ca02c"


def _picture_layout(fig: go.Figure, title: str | None, height: int) -> go.Figure:
    """Square pixels, y downwards as in an image, no ticks."""
    fig.update_layout(title=title, height=height, margin=dict(l=0, r=0, t=30 if title else 0, b=0),
                      template="plotly_white", plot_bgcolor="white")
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", constrain="domain")
    return fig


def probability_bars(probabilities: Sequence[float], classes: Sequence[str], true_label: int | None = None,
                     title: str | None = None, height: int = 330) -> go.Figure:
    """Every class's probability as a horizontal bar, most likely on top; the true class (if known) in green."""
    order = sorted(range(len(classes)), key=lambda i: probabilities[i])
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

    Zero is transparent-blue at the bottom of a one-sided scale; a diverging map gets a
    symmetric red-blue scale with white at zero.
    """
    if heat.shape[:2] != rgb.shape[:2]:
        raise ValueError(f"the map {heat.shape[:2]} and the image {rgb.shape[:2]} differ in size")
    fig = go.Figure(go.Image(z=rgb, hoverinfo="skip"))
    finite = heat[np.isfinite(heat)]
    peak = float(np.abs(finite).max()) if finite.size else 1.0
    peak = peak or 1.0
    scale = dict(colorscale="RdBu_r", zmin=-peak, zmax=peak) if diverging else \
        dict(colorscale="Jet", zmin=0, zmax=peak)
    fig.add_trace(go.Heatmap(z=heat, opacity=opacity, **scale,
                             colorbar=dict(title=dict(text=colorbar, side="right"), orientation="h", thickness=10,
                                           y=-0.02, yanchor="top", len=0.9),
                             hovertemplate="x %{x}, y %{y}<br>%{z:.3g}<extra></extra>"))
    return _picture_layout(fig, title, height)


def signed_rgb(values: np.ndarray) -> np.ndarray:
    """A signed H x W x 3 attribution to an RGB uint8 picture: grey is 0, brighter/darker colours + and -."""
    peak = float(np.abs(values).max()) or 1.0
    return np.clip((0.5 + values / (2 * peak)) * 255, 0, 255).round().astype(np.uint8)


def mosaic_figure(mosaic: np.ndarray, title: str | None = None, diverging: bool = True, height: int = 420,
                  hover: str = "value") -> go.Figure:
    """A tiled grid from `explain.tile`: RGB (values in [0, 1], NaN gaps white) or one value per pixel.

    One-channel mosaics use a red-blue scale centred on zero (kernels) or viridis (activations).
    """
    if mosaic.ndim == 3:
        rgb = np.where(np.isnan(mosaic), 1.0, mosaic)
        fig = go.Figure(go.Image(z=(np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), hoverinfo="skip"))
        return _picture_layout(fig, title, height)
    finite = mosaic[np.isfinite(mosaic)]
    peak = float(np.abs(finite).max()) if finite.size else 1.0
    scale = dict(colorscale="RdBu_r", zmid=0, zmin=-peak, zmax=peak) if diverging else dict(colorscale="Viridis")
    fig = go.Figure(go.Heatmap(z=mosaic, hovertemplate=f"{hover} %{{z:.3g}}<extra></extra>",
                               colorbar=dict(thickness=12), **scale))
    return _picture_layout(fig, title, height)


def feature_maps_figure(maps: np.ndarray, channels: Sequence[int], columns: int = 8, per_map_scale: bool = False,
                        title: str | None = None, height: int | None = None) -> go.Figure:
    """Feature maps (C x H x W, in the order given) as one grid; hover names each pixel's channel.

    One colour scale for all maps by default, so weak channels look weak; `per_map_scale`
    stretches each to its own maximum to show the shape of weak ones.
    """
    count, h, w = maps.shape
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    values = maps / np.maximum(maps.reshape(count, -1).max(axis=1), 1e-12)[:, None, None] if per_map_scale else maps
    grid = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), np.nan, dtype=np.float32)
    labels = np.full(grid.shape, -1, dtype=np.int64)
    for i in range(count):
        r, c = divmod(i, columns)
        grid[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = values[i]
        labels[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = channels[i]
    fig = go.Figure(go.Heatmap(z=grid, customdata=labels, colorscale="Viridis", zmin=0,
                               colorbar=dict(thickness=12, title="of max" if per_map_scale else "activation"),
                               hovertemplate="channel %{customdata}<br>%{z:.3g}<extra></extra>"))
    return _picture_layout(fig, title, height or max(220, int(110 * rows * max(h / w, 0.5))))
