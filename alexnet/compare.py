"""Comparing runs: the summary table, the config keys that differ, seed groups, and a verdict in words.

Pure functions over what run folders hold (config, status, result, metrics events): no
streamlit, no plotly, no tensors, so the Compare page, the command line and the tests share
them. A config key that an older record lacks (a field added since it trained) reads as
TrainConfig's default for it: the value that run trained with. The smoothing of curves is
`charts.smooth` (the curves' own module).

The verdict compares two sets of per-seed results with Welch's t-test (scipy): the difference of
the means against how much results move from seed to seed. With one run a side there is no
measure of that spread, and the verdict says so instead of guessing.
"""
from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import TrainConfig
from .runs import Run

__all__ = ["RunSummary", "summarize_run", "summary_rows", "rows_to_csv", "epochs_to_accuracy", "best_validation",
           "differing_keys", "SeedGroup", "group_by_seed", "BandPoint", "mean_band", "Verdict", "verdict",
           "Welch", "welch", "mean_std", "disagreements", "dataset_mismatch",
           "export_runs", "MACHINE_KEYS", "SettingAxis", "SettingsAgainstAccuracy", "setting_axis",
           "settings_against_accuracy"]

# Config keys that change neither the maths nor the data: runs differing only in these (and the seed) are repeats.
MACHINE_KEYS = ("threads", "log_every")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------- one row per run

def epochs_to_accuracy(epoch_events: Iterable[dict], target: float, key: str = "val_acc") -> int | None:
    """The first epoch (1-based) whose validation accuracy reached `target` (a fraction), else None."""
    for event in epoch_events:
        if _finite(event.get(key)) and event[key] >= target:
            return int(event["epoch"])
    return None


def best_validation(epoch_events: Iterable[dict]) -> tuple[float | None, int | None]:
    """The best validation accuracy and its epoch (the earliest on a tie); (None, None) without a validation split."""
    best, epoch = None, None
    for event in epoch_events:
        acc = event.get("val_acc")
        if _finite(acc) and (best is None or acc > best):
            best, epoch = float(acc), int(event["epoch"])
    return best, epoch


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if _finite(v)]
    return sum(values) / len(values) if values else None


@dataclass
class RunSummary:
    """What the Compare table shows for one run; fields still unknown (a run in progress) are None."""
    run: str
    state: str
    variant: str | None
    norm: str | None
    optimizer: str | None
    schedule: str | None
    lr: float | None
    seed: int | None
    parameters: int | None
    epochs_done: int
    epochs: int | None
    best_val_acc: float | None
    best_epoch: int | None
    test_acc: float | None
    seconds_per_epoch: float | None
    images_per_s: float | None
    epochs_to_target: int | None
    dataset: str | None
    device: str | None


def summarize_run(run: Run, target: float) -> RunSummary:
    """One run's row, from result.json when it has finished, else from its events so far."""
    result = run.result or {}
    epochs = run.epochs()
    start = next((e for e in reversed(run.metrics) if e.get("event") == "start"), {})
    best, best_epoch = best_validation(epochs)
    config = run.config
    return RunSummary(
        run=run.name, state=run.state, variant=config.get("variant"), norm=config.get("norm"),
        optimizer=config.get("optimizer"), schedule=config.get("schedule"), lr=config.get("lr"),
        seed=config.get("seed"),
        parameters=result.get("parameters") or start.get("parameters"),
        epochs_done=len(epochs), epochs=config.get("epochs"),
        best_val_acc=best, best_epoch=best_epoch,
        test_acc=result.get("test_accuracy"),
        seconds_per_epoch=result.get("seconds_per_epoch") if result else _mean([e.get("epoch_seconds") for e in epochs]),
        images_per_s=result.get("images_per_s") if result.get("images_per_s") else
        _mean([e.get("images_per_s") for e in epochs]),
        epochs_to_target=epochs_to_accuracy(epochs, target),
        dataset=result.get("dataset") or run.status.get("dataset") or start.get("dataset"),
        device=result.get("device") or run.status.get("device") or start.get("device"),
    )


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


def summary_rows(summaries: Iterable[RunSummary], target: float) -> list[dict[str, Any]]:
    """The table's rows (the page's table and the CSV alike), accuracies in percent as the column names say.

    Columns in reading order, what most comparisons look at first: the run, its accuracies and how fast it
    reached the target, its speed, then what it is (variant, norm, recipe) and where it ran.
    """
    reach = f"epochs to {100 * target:g}% val"
    return [{
        "run": s.run, "test acc (%)": _percent(s.test_acc), "best val acc (%)": _percent(s.best_val_acc),
        reach: s.epochs_to_target, "best epoch": s.best_epoch,
        "epochs": f"{s.epochs_done} / {s.epochs if s.epochs is not None else '?'}",
        "s / epoch": s.seconds_per_epoch, "images / s": s.images_per_s,
        "state": s.state, "variant": s.variant, "norm": s.norm, "optimizer": s.optimizer, "schedule": s.schedule,
        "peak lr": s.lr, "seed": s.seed, "parameters": s.parameters, "dataset": s.dataset, "device": s.device,
    } for s in summaries]


def rows_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of dicts (same keys) as CSV text; None becomes an empty cell."""
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


# ---------------------------------------------------------------- configs

_ABSENT = "(absent)"
_DEFAULTS = TrainConfig().to_dict()  # what a field added since an older run trained held for that run


def differing_keys(configs: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Split config keys into those whose values differ between runs ({key: {run: value}}) and shared ones.

    A key that one run lacks (an older config) reads as TrainConfig's default for it; a key TrainConfig has no
    field for counts as differing, shown as '(absent)'.
    """
    keys = list(dict.fromkeys(k for c in configs.values() for k in c))
    differ, shared = {}, {}
    for key in keys:
        values = {run: config.get(key, _DEFAULTS.get(key, _ABSENT)) for run, config in configs.items()}
        distinct = {repr(v) for v in values.values()}
        if len(distinct) > 1:
            differ[key] = values
        elif values:
            shared[key] = next(iter(values.values()))
    return differ, shared


# ---------------------------------------------------------------- settings against test accuracy

@dataclass
class SettingAxis:
    """One config key as an axis: each run's place on it, and where its labels go.

    Numbers sit at their value (at its log10 when the values span two decades or more, `log`); any other
    values (names, None, lists, '(absent)') are categories at 0, 1, 2... in the order of their labels.
    """
    key: str
    values: list[float]        # each run's place, in the runs' order
    ticks: list[float]         # where labels go; empty: the plot's own ticks
    labels: list[str]
    log: bool = False


@dataclass
class SettingsAgainstAccuracy:
    """Finished runs' differing settings and their test accuracy, one entry a run in each list."""
    runs: list[str]
    accuracy: list[float]      # test accuracy, a fraction
    axes: list[SettingAxis]    # the config keys that differ between these runs (machine keys left out)


_MAX_TICKS = 8     # distinct numbers labelled one by one; more get the plot's own ticks (or powers of ten)
_MAX_LABEL = 32    # characters of a category's label (a long path keeps its end)


def _label(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        text = ", ".join(_short(v) for v in value) or "none"
    else:
        text = _short(value)
    return text if len(text) <= _MAX_LABEL else "…" + text[-(_MAX_LABEL - 1):]


def setting_axis(key: str, values: Sequence[Any]) -> SettingAxis:
    """The axis of one config key from the runs' values of it (see `SettingAxis`)."""
    if all(_finite(v) for v in values):
        distinct = sorted({float(v) for v in values})
        log = distinct[0] > 0 and distinct[-1] / distinct[0] >= 100
        place = math.log10 if log else float
        if len(distinct) <= _MAX_TICKS:
            ticks = distinct
        elif log:
            ticks = [10.0 ** k for k in range(math.ceil(place(distinct[0])), math.floor(place(distinct[-1])) + 1)]
        else:
            ticks = []
        return SettingAxis(key, [place(float(v)) for v in values], [place(t) for t in ticks],
                           [f"{t:g}" for t in ticks], log)
    by_repr = {repr(v): v for v in values}
    order = sorted(by_repr, key=lambda r: (_label(by_repr[r]), r))
    index = {r: i for i, r in enumerate(order)}
    return SettingAxis(key, [float(index[repr(v)]) for v in values], [float(i) for i in range(len(order))],
                       [_label(by_repr[r]) for r in order])


def settings_against_accuracy(runs: Sequence[Run]) -> SettingsAgainstAccuracy:
    """The finished runs among `runs` (those with a test accuracy), their test accuracy, and an axis for each
    config key that differs between them but for keys that change no result (MACHINE_KEYS). Runs tested on
    different test sets get a first axis, "test set", naming each one's: their accuracies do not compare
    directly."""
    done = [r for r in runs if r.state == "finished" and _finite((r.result or {}).get("test_accuracy"))]
    differ = differing_keys({r.name: r.config for r in done})[0] if len(done) > 1 else {}
    axes = [setting_axis(key, [by_run[r.name] for r in done]) for key, by_run in differ.items()
            if key not in MACHINE_KEYS]
    tested_on = [r.result.get("dataset") for r in done]
    if len(set(tested_on)) > 1:
        axes.insert(0, setting_axis("test set", tested_on))
    return SettingsAgainstAccuracy([r.name for r in done], [float(r.result["test_accuracy"]) for r in done], axes)


# ---------------------------------------------------------------- seed groups and bands

@dataclass
class SeedGroup:
    """Runs whose configs are equal but for the seed (and keys that change no result)."""
    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def seeds(self) -> list[Any]:
        return [r.config.get("seed") for r in self.runs]


def _group_key(config: Mapping[str, Any]) -> str:
    """The config but its seed and machine keys, with TrainConfig's defaults for the keys an older record lacks."""
    return repr(sorted((k, repr(v)) for k, v in {**_DEFAULTS, **config}.items()
                       if k != "seed" and k not in MACHINE_KEYS))


def group_by_seed(runs: Sequence[Run]) -> list[SeedGroup]:
    """Group runs that differ only by seed; each group is labelled by the keys that tell the groups apart."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(_group_key(run.config), []).append(run)
    firsts = {key: members[0].config for key, members in groups.items()}
    differ, _ = differing_keys({key: {k: v for k, v in c.items() if k != "seed" and k not in MACHINE_KEYS}
                                for key, c in firsts.items()})
    out = []
    for key, members in groups.items():
        label = ", ".join(f"{k}={_short(values[key])}" for k, values in differ.items()) if differ else "all runs"
        out.append(SeedGroup(label, members))
    return out


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass
class BandPoint:
    x: float
    mean: float
    std: float     # sample standard deviation over the runs at this x (0 with one run)
    n: int         # how many runs have a point at this x


def mean_band(curves: Iterable[tuple[Sequence[float], Sequence[float]]]) -> list[BandPoint]:
    """Mean and spread of several curves at each x that any of them has (runs in progress have fewer points)."""
    at: dict[float, list[float]] = {}
    for xs, ys in curves:
        for x, y in zip(xs, ys):
            if _finite(x) and _finite(y):
                at.setdefault(float(x), []).append(float(y))
    band = []
    for x in sorted(at):
        mean, std = mean_std(at[x])
        band.append(BandPoint(x, mean, std, len(at[x])))
    return band


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the deviation of one value is 0."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_std of no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


# ---------------------------------------------------------------- statistics

@dataclass
class Welch:
    """What the test found: the difference, its standard error, t with its degrees of freedom, p and the interval."""
    difference: float   # mean(b) - mean(a)
    stderr: float
    t: float
    df: float
    p: float            # two-sided
    low: float          # 95% interval of the difference
    high: float


def welch(a: Sequence[float], b: Sequence[float]) -> Welch:
    """Welch's unequal-variance t-test of mean(b) - mean(a) (scipy's `ttest_ind`) and the 95% interval of the
    difference (Student's t at Welch's degrees of freedom); needs two values a side."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's test needs at least two values on each side")
    ma, sa = mean_std(a)
    mb, sb = mean_std(b)
    va, vb = sa * sa / len(a), sb * sb / len(b)
    diff, se = mb - ma, math.sqrt(va + vb)
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
        return Welch(diff, 0.0, 0.0 if diff == 0 else math.copysign(math.inf, diff), math.inf, p, diff, diff)
    from scipy import stats  # here, not at the top: it is 0.3 s of every `python -m alexnet` start

    test = stats.ttest_ind(b, a, equal_var=False)
    half = float(stats.t.ppf(0.975, test.df)) * se
    return Welch(diff, se, float(test.statistic), float(test.df), float(test.pvalue), diff - half, diff + half)


# ---------------------------------------------------------------- the verdict in words

@dataclass
class Verdict:
    level: str          # "clear" | "likely" | "unclear" | "cannot tell" | "no data"
    text: str
    difference: float | None = None   # mean(b) - mean(a), as a fraction
    test: Welch | None = None


def _pts(fraction: float) -> str:
    return f"{abs(fraction) * 100:.1f} point" + ("" if abs(round(fraction * 100, 1)) == 1 else "s")


def verdict(a: Sequence[float], b: Sequence[float], a_name: str = "LRN", b_name: str = "BN",
            metric: str = "test accuracy", test_images: int | None = None) -> Verdict:
    """What per-seed accuracies (fractions) of two arms show, and how sure that is, in plain words."""
    if not a or not b:
        missing = " and ".join(n for n, v in ((a_name, a), (b_name, b)) if not v)
        return Verdict("no data", f"No finished {missing} run yet: nothing to compare.")
    ma, sa = mean_std(a)
    mb, sb = mean_std(b)
    diff = mb - ma
    better, worse = (b_name, a_name) if diff > 0 else (a_name, b_name)
    if len(a) < 2 or len(b) < 2:
        noise = ""
        if test_images:
            p = min(max((ma + mb) / 2, 0.0), 1.0)
            noise = (f" The {test_images:,} test images alone move an accuracy near {p:.0%} by about "
                     f"±{_pts(math.sqrt(p * (1 - p) / test_images))} (one standard deviation), and a new seed moves "
                     "it further.")
        single = [n for n, v in ((a_name, a), (b_name, b)) if len(v) < 2]
        who = "one run a side" if len(single) == 2 else f"only one {single[0]} run"
        return Verdict("cannot tell",
                       f"{b_name} {mb:.1%} against {a_name} {ma:.1%} on {metric} ({'equal' if diff == 0 else f'{_pts(diff)} apart'}). "
                       f"With {who} there is no measure of how much a result moves "
                       f"from seed to seed, so this cannot tell whether the norm or the seed made the difference."
                       f"{noise} Repeat with 3 or more seeds.", diff)
    test = welch(a, b)
    means = (f"{b_name} {mb:.1%} ± {sb * 100:.1f} against {a_name} {ma:.1%} ± {sa * 100:.1f} "
             f"(mean ± standard deviation over {len(b)} and {len(a)} seeds)")
    stats = (f"Welch t = {test.t:.1f}, p = {test.p:.2g}; 95% interval of the difference "
             f"{test.low * 100:+.1f} to {test.high * 100:+.1f} points")
    if test.stderr == 0:
        stats = "every seed gave the same value on each side"
    if test.p < 0.01:
        return Verdict("clear", f"{better} beats {worse} on {metric} by {_pts(diff)}: {means}. The gap is "
                                f"{abs(test.t):.1f} times its standard error ({stats}): a clear difference for "
                                "this recipe, dataset and number of epochs.", diff, test)
    if test.p < 0.05:
        return Verdict("likely", f"{better} is ahead of {worse} on {metric} by {_pts(diff)}: {means}. The gap is "
                                 f"larger than the seed-to-seed spread would usually give ({stats}), but not by much: "
                                 "likely real; more seeds would make it sure.", diff, test)
    return Verdict("unclear", f"{b_name} and {a_name} cannot be told apart on {metric}: {means}. The difference of "
                              f"{_pts(diff)} is within what changing the seed alone gives ({stats}); the interval "
                              "holds zero.", diff, test)


# ---------------------------------------------------------------- test-set images

def disagreements(pred_a: Sequence[int], pred_b: Sequence[int], labels: Sequence[int]) -> tuple[list[int], list[int]]:
    """Indices of test images that A gets right and B wrong, and those B gets right and A wrong."""
    if not len(pred_a) == len(pred_b) == len(labels):
        raise ValueError(f"predictions ({len(pred_a)}, {len(pred_b)}) and labels ({len(labels)}) differ in length")
    a_only = [i for i, (pa, pb, y) in enumerate(zip(pred_a, pred_b, labels)) if pa == y != pb]
    b_only = [i for i, (pa, pb, y) in enumerate(zip(pred_a, pred_b, labels)) if pb == y != pa]
    return a_only, b_only


def dataset_mismatch(result: Mapping[str, Any], test_labels: Sequence[int], dataset_label: str) -> str | None:
    """Why a loaded test set is not the one a run was tested on, or None when it is.

    Checks the count, the dataset's name, and that each class has as many images as the run's
    confusion matrix counted (its row sums): a different subset of the same size fails that.
    """
    predictions = result.get("predictions") or []
    if not predictions:
        return "the run's result holds no per-image predictions"
    expected = result.get("test_images", len(predictions))
    if len(test_labels) != expected or len(predictions) != expected:
        return (f"the run was tested on {expected:,} images of {result.get('dataset', '?')}, the dataset found now "
                f"({dataset_label}) has {len(test_labels):,}")
    if result.get("dataset") and result["dataset"] != dataset_label:
        return f"the run was tested on {result['dataset']}, the dataset found now is {dataset_label}"
    confusion = result.get("confusion_matrix")
    if confusion:
        counts = [0] * len(confusion)
        for y in test_labels:
            if 0 <= y < len(counts):
                counts[y] += 1
        if counts != [sum(row) for row in confusion]:
            return (f"the test images found now ({dataset_label}) have other class counts than the run's confusion "
                    "matrix: a different test set of the same size")
    return None


# ---------------------------------------------------------------- export

def export_runs(runs: Iterable[Run], include_predictions: bool = False) -> dict[str, Any]:
    """The chosen runs' configs, states, results and every metrics event, as one JSON-ready dict."""
    out = []
    for run in runs:
        result = dict(run.result) if run.result else None
        if result is not None and not include_predictions:
            result.pop("predictions", None)
        out.append({"name": run.name, "config": run.config, "status": run.status, "result": result,
                    "metrics": run.metrics})
    return {"exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": out}

