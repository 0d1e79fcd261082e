"""alexnet.compare (table, differing keys, seed groups, statistics, verdict), the experiment planner and
record, the charts and replication rows they feed, and `python -m alexnet experiment` run for real.

The pure functions get made-up numbers whose right answers are known; the experiment command
trains real runs, in real processes, on a 300-image slice of the CIFAR-10 mini subset.
"""
from __future__ import annotations

import colorsys
import csv
import io
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet import charts, cli, compare, experiment, history
from alexnet import runs as run_records
from alexnet.config import TrainConfig, with_variant
from alexnet.models import build

from conftest import THREADS

REPO = Path(__file__).resolve().parent.parent


def epoch(n: int, val_acc: float, **extra) -> dict:
    return {"event": "epoch", "epoch": n, "global_step": 10 * n, "train_loss": 2.0 / n, "train_acc": val_acc - 0.02,
            "val_loss": 2.1 / n, "val_acc": val_acc, "epoch_seconds": 3.0 + n, "images_per_s": 100.0 * n,
            "time": 4.0 * n, **extra}


def fake_run(name: str, state: str = "finished", result: dict | None = None, metrics: list | None = None,
             **config) -> run_records.Run:
    return run_records.Run(name, Path("/nowhere") / name, {**TrainConfig().to_dict(), **config}, {"state": state},
                           result, metrics or [])


# ---------------------------------------------------------------- smoothing (charts.smooth, shared with Train)

def test_smoothing_is_debiased():
    raw = [5.0, 1.0, 3.0, 2.0]
    for weight in (0.3, 0.6, 0.9, 0.99):
        out = charts.smooth(raw, weight)
        assert out[0] == pytest.approx(raw[0])  # no pull towards zero at the start
        assert charts.smooth([0.7] * 20, weight) == pytest.approx([0.7] * 20)  # a constant stays constant
        assert min(raw) <= min(out) and max(out) <= max(raw)  # a weighted mean never leaves the range
    assert charts.smooth(raw, 0.0) == raw


# ---------------------------------------------------------------- table, keys, epochs to accuracy

def test_epochs_to_accuracy_and_best_validation():
    events = [epoch(1, 0.30), epoch(2, 0.55), epoch(3, 0.52), epoch(4, 0.61), epoch(5, 0.61)]
    assert compare.epochs_to_accuracy(events, 0.5) == 2
    assert compare.epochs_to_accuracy(events, 0.55) == 2  # reaching counts, not only passing
    assert compare.epochs_to_accuracy(events, 0.6) == 4
    assert compare.epochs_to_accuracy(events, 0.7) is None
    assert compare.best_validation(events) == (0.61, 4)  # the earliest epoch of a tie
    no_split = [epoch(1, float("nan")), epoch(2, float("nan"))]
    assert compare.best_validation(no_split) == (None, None)
    assert compare.epochs_to_accuracy(no_split, 0.1) is None


def test_differing_keys_splits_configs_and_names_absent_keys():
    a = {"variant": "cifar", "norm": "lrn", "lr": 0.02, "milestones": [5, 8], "seed": 0}
    b = {"variant": "cifar", "norm": "bn", "lr": 0.02, "milestones": [5, 8], "seed": 0, "warmup": 3}
    differ, shared = compare.differing_keys({"run-a": a, "run-b": b})
    assert differ == {"norm": {"run-a": "lrn", "run-b": "bn"}, "warmup": {"run-a": "(absent)", "run-b": 3}}
    assert shared == {"variant": "cifar", "lr": 0.02, "milestones": [5, 8], "seed": 0}
    assert compare.differing_keys({"one": a}) == ({}, a)
    assert compare.differing_keys({"x": {"lr": 1}, "y": {"lr": 1.0}})[0] == {"lr": {"x": 1, "y": 1.0}}  # 1 is not 1.0


def test_a_key_an_older_record_lacks_reads_as_its_default():
    """A run trained before a TrainConfig field existed trained with that field's default: `processes` (added with
    data-parallel runs) neither differs nor splits a seed group when the newer run holds the default."""
    new = TrainConfig(norm="lrn", seed=1).to_dict()
    old = {k: v for k, v in TrainConfig(norm="lrn", seed=0).to_dict().items() if k != "processes"}
    differ, shared = compare.differing_keys({"old": old, "new": new})
    assert differ == {"seed": {"old": 0, "new": 1}} and shared["processes"] == 1
    differ, _ = compare.differing_keys({"old": old, "new": {**new, "processes": 2, "zoom": 0.1}})
    assert differ["processes"] == {"old": 1, "new": 2} and differ["zoom"] == {"old": 0.0, "new": 0.1}
    runs = [run_records.Run("old", Path("/nowhere/old"), old, {"state": "finished"}, None, []),
            fake_run("new", norm="lrn", seed=1), fake_run("bn", norm="bn", seed=0)]
    assert {tuple(r.name for r in g.runs): g.label for g in compare.group_by_seed(runs)} == {
        ("old", "new"): "norm=lrn", ("bn",): "norm=bn"}


def test_summary_of_a_running_and_a_finished_run():
    start = {"event": "start", "parameters": 3_899_722, "dataset": "CIFAR-10 subset (6,102 images)", "device": "CPU"}
    running = fake_run("running", "running", None, [start, epoch(1, 0.3), epoch(2, 0.5)], epochs=10, norm="lrn")
    s = compare.summarize_run(running, 0.45)
    assert (s.parameters, s.epochs_done, s.epochs, s.best_val_acc, s.best_epoch, s.test_acc) == \
        (3_899_722, 2, 10, 0.5, 2, None)
    assert s.seconds_per_epoch == pytest.approx(4.5) and s.images_per_s == pytest.approx(150)
    assert s.epochs_to_target == 2 and s.dataset == start["dataset"] and s.device == "CPU"
    result = {"test_accuracy": 0.6, "parameters": 3_899_210, "seconds_per_epoch": 7.5, "images_per_s": 222.0,
              "dataset": "CIFAR-10", "device": "NVIDIA H100"}
    done = fake_run("done", "finished", result, [start, epoch(1, 0.4)], norm="bn")
    s = compare.summarize_run(done, 0.45)
    assert (s.test_acc, s.parameters, s.seconds_per_epoch, s.images_per_s, s.device, s.epochs_to_target) == \
        (0.6, 3_899_210, 7.5, 222.0, "NVIDIA H100", None)
    rows = compare.summary_rows([compare.summarize_run(running, 0.45), s], 0.45)
    assert rows[1]["test acc (%)"] == pytest.approx(60.0) and rows[0]["best val acc (%)"] == pytest.approx(50.0)
    assert rows[0]["epochs to 45% val"] == 2 and rows[0]["epochs"] == "2 / 10"
    parsed = list(csv.DictReader(io.StringIO(compare.rows_to_csv(rows))))
    assert [r["run"] for r in parsed] == ["running", "done"]
    assert parsed[0]["test acc (%)"] == "" and float(parsed[1]["test acc (%)"]) == pytest.approx(60.0)


def test_export_holds_configs_and_metrics_but_not_predictions_unless_asked():
    run = fake_run("r", result={"test_accuracy": 0.5, "predictions": [1, 2, 3]}, metrics=[epoch(1, 0.4)])
    out = compare.export_runs([run])
    json.dumps(out)  # JSON-ready
    assert out["runs"][0]["config"]["norm"] == "bn" and out["runs"][0]["metrics"] == [epoch(1, 0.4)]
    assert "predictions" not in out["runs"][0]["result"] and run.result["predictions"] == [1, 2, 3]
    assert compare.export_runs([run], include_predictions=True)["runs"][0]["result"]["predictions"] == [1, 2, 3]


# ---------------------------------------------------------------- seeds and bands

def test_group_by_seed_labels_groups_by_what_tells_them_apart():
    runs = [fake_run(f"{norm}-{seed}", norm=norm, seed=seed, threads=seed) for norm in ("lrn", "bn") for seed in (0, 1, 2)]
    runs.append(fake_run("bn-fast", norm="bn", seed=0, lr=0.1))
    groups = {tuple(r.name for r in g.runs): g for g in compare.group_by_seed(runs)}
    assert {names: g.label for names, g in groups.items()} == {
        ("lrn-0", "lrn-1", "lrn-2"): "norm=lrn, lr=0.05",  # threads differ too, but change no result
        ("bn-0", "bn-1", "bn-2"): "norm=bn, lr=0.05",
        ("bn-fast",): "norm=bn, lr=0.1"}
    assert groups[("lrn-0", "lrn-1", "lrn-2")].seeds == [0, 1, 2]
    assert [g.label for g in compare.group_by_seed(runs[:3])] == ["all runs"]


def test_mean_band_counts_the_runs_at_each_point():
    band = compare.mean_band([([1, 2, 3], [0.2, 0.4, 0.6]), ([1, 2], [0.4, 0.6]), ([1], [float("nan")])])
    assert [(p.x, p.n) for p in band] == [(1, 2), (2, 2), (3, 1)]
    assert band[0].mean == pytest.approx(0.3) and band[0].std == pytest.approx(math.sqrt(0.02))
    assert band[2].mean == pytest.approx(0.6) and band[2].std == 0.0
    assert compare.mean_std([3.0]) == (3.0, 0.0)


# ---------------------------------------------------------------- statistics and the verdict

def test_welch_on_equal_spreads_matches_the_t_distribution_worked_by_hand():
    """Three seeds a side, each with standard deviation 0.01, means 0.03 apart: se = 0.01 * sqrt(2/3), t = 3.674
    and Welch's degrees of freedom are exactly 4, where Student's t has a closed form: P(|T| < t) =
    sin(th) * (1 + cos(th)^2 / 2) with th = atan(t / 2). Its 97.5% quantile at 4 degrees is 2.776 (every table)."""
    test = compare.welch([0.60, 0.61, 0.62], [0.63, 0.64, 0.65])
    se = 0.01 * math.sqrt(2 / 3)
    t = 0.03 / se
    th = math.atan(t / 2)
    assert (test.difference, test.stderr, test.t, test.df) == \
        (pytest.approx(0.03), pytest.approx(se), pytest.approx(t), pytest.approx(4.0))
    assert test.p == pytest.approx(1 - math.sin(th) * (1 + math.cos(th) ** 2 / 2)) == pytest.approx(0.0213, abs=1e-4)
    assert (test.low, test.high) == (pytest.approx(0.03 - 2.7764 * se, abs=1e-5), pytest.approx(0.03 + 2.7764 * se,
                                                                                              abs=1e-5))
    assert compare.verdict([0.60, 0.61, 0.62], [0.63, 0.64, 0.65]).level == "likely"  # 0.01 <= p < 0.05


def test_welch_on_unequal_spreads_and_sizes_uses_welchs_degrees_of_freedom():
    a, b = [0.601, 0.588, 0.612, 0.597], [0.640, 0.655, 0.629]
    va, vb = (compare.mean_std(a)[1] ** 2 / len(a), compare.mean_std(b)[1] ** 2 / len(b))
    test = compare.welch(a, b)
    assert test.t == pytest.approx((sum(b) / 3 - sum(a) / 4) / math.sqrt(va + vb))
    assert test.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2))  # Welch-Satterthwaite
    assert 3 < test.df < 4 and 0.01 < test.p < 0.02 and 0 < test.low < test.difference < test.high


def test_verdict_clear_difference():
    v = compare.verdict([0.60, 0.61, 0.59], [0.64, 0.65, 0.66])
    assert v.level == "clear" and v.difference == pytest.approx(0.05)
    assert v.text.startswith("BN beats LRN on test accuracy by 5.0 points")
    assert "over 3 and 3 seeds" in v.text and "p = 0.0036" in v.text and "+2.7 to +7.3 points" in v.text


def test_verdict_lrn_ahead_is_said_the_right_way_round():
    v = compare.verdict([0.70, 0.71, 0.69], [0.60, 0.61, 0.59])
    assert v.level == "clear" and v.text.startswith("LRN beats BN") and v.difference == pytest.approx(-0.10)


def test_verdict_unclear_when_within_the_seed_spread():
    v = compare.verdict([0.60, 0.62, 0.58], [0.61, 0.59, 0.63])
    assert v.level == "unclear" and "cannot be told apart" in v.text and "interval holds zero" in v.text
    assert v.test.low < 0 < v.test.high


def test_verdict_likely_in_between():
    v = compare.verdict([0.60, 0.605, 0.595], [0.615, 0.62, 0.61])
    assert v.level == "likely" and 0.01 <= v.test.p < 0.05 and "more seeds" in v.text


def test_verdict_with_one_seed_says_it_cannot_tell():
    v = compare.verdict([0.60], [0.64], test_images=1017)
    assert v.level == "cannot tell" and v.test is None
    assert "one run a side" in v.text and "cannot tell" in v.text and "3 or more seeds" in v.text
    assert "1,017 test images" in v.text and "±1.5 points" in v.text  # sqrt(0.62 * 0.38 / 1017)
    assert "only one BN run" in compare.verdict([0.6, 0.61], [0.64]).text
    assert compare.verdict([], [0.64]).level == "no data"


def test_verdict_identical_seeds():
    v = compare.verdict([0.6, 0.6], [0.6, 0.6])
    assert v.level == "unclear" and "every seed gave the same value" in v.text
    assert compare.verdict([0.6, 0.6], [0.7, 0.7]).level == "clear"


# ---------------------------------------------------------------- test-set images

def test_disagreements():
    labels = [0, 1, 2, 3, 4]
    a = [0, 1, 9, 9, 4]
    b = [0, 9, 2, 9, 9]
    assert compare.disagreements(a, b, labels) == ([1, 4], [2])
    with pytest.raises(ValueError, match="differ in length"):
        compare.disagreements(a, b[:4], labels)


def test_dataset_mismatch_catches_count_name_and_class_counts():
    labels = [0, 0, 1, 2]
    result = {"predictions": [0, 1, 1, 2], "test_images": 4, "dataset": "CIFAR-10 subset (8 images)",
              "confusion_matrix": [[1, 1, 0], [0, 1, 0], [0, 0, 1]]}
    assert compare.dataset_mismatch(result, labels, "CIFAR-10 subset (8 images)") is None
    assert "has 5" in compare.dataset_mismatch(result, labels + [1], "CIFAR-10 subset (8 images)")
    assert "the dataset found now is CIFAR-10" in compare.dataset_mismatch(result, labels, "CIFAR-10")
    assert "other class counts" in compare.dataset_mismatch(result, [0, 1, 1, 2], "CIFAR-10 subset (8 images)")
    assert "no per-image predictions" in compare.dataset_mismatch({}, labels, "x")


# ---------------------------------------------------------------- the experiment's plan and record

def test_same_recipe_pairs_differ_only_in_norm():
    plan = experiment.ExperimentPlan(seeds=3, first_seed=5, epochs=4, max_train_images=512, threads=1, recipe="same")
    planned = experiment.planned_runs(plan, "exp")
    assert [(p.run, p.norm, p.seed) for p in planned] == [
        (f"exp-{norm}-s{seed}", norm, seed) for seed in (5, 6, 7) for norm in ("lrn", "bn")]
    for lrn, bn in zip(planned[::2], planned[1::2]):
        differ, _ = compare.differing_keys({"lrn": lrn.config.to_dict(), "bn": bn.config.to_dict()})
        assert set(differ) == {"norm"}
    config = planned[0].config
    assert (config.init, config.optimizer, config.lr, config.schedule, config.epochs, config.max_train_images) == \
        ("lsuv", "sgd", 0.02, "onecycle", 4, 512)  # the recipe LRN trains with (experiment.BASE says why)
    assert experiment.RECIPES["same"].only_norm_differs


def test_other_recipes_change_what_they_say():
    own = experiment.planned_runs(experiment.ExperimentPlan(seeds=1, recipe="own-rate"), "e")
    assert {p.norm: p.config.lr for p in own} == {"lrn": 0.02, "bn": 0.05}
    papers = experiment.planned_runs(experiment.ExperimentPlan(seeds=1, recipe="papers"), "e")
    assert {p.norm: (p.config.optimizer, p.config.lr) for p in papers} == {"lrn": ("sgd", 0.02), "bn": ("adamw", 1e-3)}
    assert not experiment.RECIPES["papers"].only_norm_differs
    with pytest.raises(ValueError, match="seeds must be 1 to 10"):
        experiment.planned_runs(experiment.ExperimentPlan(seeds=0), "e")
    with pytest.raises(ValueError, match="recipe 'adam' is unknown"):
        experiment.planned_runs(experiment.ExperimentPlan(recipe="adam"), "e")


def test_paired_runs_start_from_the_same_weights():
    """What the experiment claims: with one seed, LRN and BN draw identical weights for every layer they share,
    and the default init (lsuv) then scales each such layer by one positive number (its norm's own calibration)."""
    for init in ("kaiming", "lsuv"):
        models = {}
        for norm in ("lrn", "bn"):
            torch.manual_seed(3)  # as train() does before build
            models[norm] = build("cifar", norm, init=init).state_dict()
        shared = set(models["lrn"]) & set(models["bn"])
        assert len(shared) == 16  # 5 conv + 3 linear, weights and biases
        scales = []
        for k in sorted(shared):
            a, b = models["lrn"][k], models["bn"][k]
            if k.endswith("bias") or not a.any():
                assert torch.equal(a, b), k
                continue
            scale = b.norm() / a.norm()
            scales.append(scale.item())
            torch.testing.assert_close(a * scale, b, rtol=1e-5, atol=1e-7)
        assert len(scales) == 7  # every weighted layer but the zero-initialised last one
        if init == "kaiming":
            assert scales == [1.0] * 7
        else:
            assert any(abs(s - 1) > 0.01 for s in scales)   # the calibration does differ between the norms


def write_finished(root: Path, name: str, norm: str, seed: int, acc: float | None, state: str = "finished") -> None:
    config = TrainConfig(norm=norm, seed=seed)
    writer = run_records.RunWriter.create(root, name, config.to_dict())
    writer.log({"event": "start", "parameters": 1})
    writer.log(epoch(1, (acc or 0.1) - 0.05))
    if acc is not None:
        writer.write_result({"test_accuracy": acc, "test_images": 1000, "dataset": "CIFAR-10", "device": "CPU"})
    writer.set_status(state)
    writer.close()


def test_launch_records_the_experiment_and_summarize_reads_it(tmp_path):
    root = tmp_path / "runs"
    accs = {("lrn", 0): 0.60, ("bn", 0): 0.65, ("lrn", 1): 0.61, ("bn", 1): 0.66, ("lrn", 2): 0.59, ("bn", 2): 0.64}
    started = []

    def start(config, name, folder):  # stands in for jobs.start: a finished run with a known result
        started.append((name, config.norm, config.seed))
        write_finished(folder, name, config.norm, config.seed, accs[config.norm, config.seed])
        return name

    plan = experiment.ExperimentPlan(seeds=3, epochs=2, recipe="same")
    assert experiment.free_name(root, plan) == "lrn-vs-bn-cifar"
    e = experiment.launch(plan, root, start=start)
    assert e.name == "lrn-vs-bn-cifar" and len(started) == 6 and e.seeds == [0, 1, 2]
    assert (root / ".experiments" / "lrn-vs-bn-cifar.json").exists()
    assert [r.name for r in run_records.list_runs(root)]  # the runs stay ordinary runs
    assert experiment.free_name(root, plan) == "lrn-vs-bn-cifar-2"
    with pytest.raises(FileExistsError):
        experiment.launch(plan, root, name="lrn-vs-bn-cifar", start=start)
    assert [x.name for x in experiment.list_experiments(root)] == ["lrn-vs-bn-cifar"]

    summary = experiment.summarize(experiment.load(root, e.name), root)
    assert summary.done and summary.finished == 6 and summary.states == {"finished": 6}
    assert [(p["seed"], p["lrn"], p["bn"]) for p in summary.pairs] == [(0, 0.60, 0.65), (1, 0.61, 0.66), (2, 0.59, 0.64)]
    assert summary.pairs[0]["difference"] == pytest.approx(0.05)
    assert summary.verdict.level == "clear" and summary.verdict.text.startswith("BN beats LRN")
    assert summary.datasets == ["CIFAR-10"]
    text = experiment.report(summary)
    assert "BN - LRN" in text and "60.00%" in text and "+5.0p" in text and summary.verdict.text in text

    run_records.delete_run(root, "lrn-vs-bn-cifar-bn-s2")
    summary = experiment.summarize(e, root)
    assert summary.missing == ["lrn-vs-bn-cifar-bn-s2"] and summary.done
    assert summary.pairs[2]["bn"] is None and summary.pairs[2]["difference"] is None


def test_summary_of_an_experiment_in_progress(tmp_path):
    root = tmp_path / "runs"

    def start(config, name, folder):
        if config.seed == 0:
            write_finished(folder, name, config.norm, 0, 0.6 if config.norm == "lrn" else 0.62)
        else:
            write_finished(folder, name, config.norm, config.seed, None, state="stopped")
        return name

    e = experiment.launch(experiment.ExperimentPlan(seeds=2, recipe="papers"), root, name="exp", start=start)
    summary = experiment.summarize(e, root)
    assert summary.done and summary.finished == 2
    assert summary.verdict.level == "cannot tell"
    assert "changes more than the norm" in summary.verdict.text and "2 runs did not finish" in summary.verdict.text
    assert [a.label for a in summary.arms.values()] == ["LRN", "BN"]


def test_the_runs_a_process_holds_are_the_experiments_active_ones(tmp_path):
    root = tmp_path / "runs"

    def start(config, name, folder):  # seed 0 has finished, seed 1 trains (in this very process)
        write_finished(folder, name, config.norm, config.seed, 0.6 if config.seed == 0 else None,
                       state="finished" if config.seed == 0 else "running")
        return name

    e = experiment.launch(experiment.ExperimentPlan(seeds=2, recipe="same"), root, name="exp", start=start)
    assert experiment.active_runs(e, root) == {"exp-lrn-s1", "exp-bn-s1"}
    run_records.RunWriter(root / "exp-bn-s1").set_status("stopped")
    assert experiment.active_runs(e, root) == {"exp-lrn-s1"}


def test_a_failed_start_leaves_a_true_record(tmp_path):
    root = tmp_path / "runs"
    count = []

    def start(config, name, folder):
        if count:
            raise RuntimeError("no more processes")
        count.append(name)
        write_finished(folder, name, config.norm, config.seed, 0.5)
        return name

    with pytest.raises(RuntimeError):
        experiment.launch(experiment.ExperimentPlan(seeds=2, recipe="same"), root, name="broken", start=start)
    assert [r["run"] for r in experiment.load(root, "broken").runs] == count


# ---------------------------------------------------------------- charts and replication rows

def hue_gap(first: str, second: str) -> float:
    """Degrees between two colours' hues on the colour wheel (what `distinct_colors` keeps at 25 or more)."""
    h1, h2 = (colorsys.rgb_to_hls(*(int(c.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)))[0]
              for c in (first, second))
    return min(abs(h1 - h2), 1 - abs(h1 - h2)) * 360


def test_distinct_colors_keep_run_colours_unless_they_look_alike():
    names = ["lrn-vs-bn-cifar-bn-s0", "lrn-vs-bn-cifar-lrn-s0"]  # their hash colours are two reds
    assert hue_gap(charts.run_color(names[0]), charts.run_color(names[1])) < 25
    colors = charts.distinct_colors(names)
    assert colors[names[0]] == charts.run_color(names[0])            # the first keeps its colour
    assert colors[names[1]] != charts.run_color(names[1]) and hue_gap(*colors.values()) >= 25
    many = charts.distinct_colors([f"run-{i}" for i in range(6)])
    assert len(set(many.values())) == 6
    fig = charts.curves_figure({n: [epoch(1, 0.3)] for n in names}, "acc", colors=colors)
    assert {t.line.color for t in fig.data if t.name.endswith("validation")} == set(colors.values())


def test_confusion_and_per_class_figures():
    fig = charts.confusion_figure([[8, 2], [1, 3]], ["cat", "dog"])
    z = np.asarray(fig.data[0].z)
    assert z.sum(axis=1) == pytest.approx([1, 1]) and z[0, 1] == pytest.approx(0.2)
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0, 1)  # one scale for every run
    assert np.asarray(fig.data[0].customdata).tolist() == [[8, 2], [1, 3]]
    bars = charts.per_class_figure({"a": [0.5, 0.25], "b": [0.1, 0.9]}, ["cat", "dog"])
    assert [t.name for t in bars.data] == ["a", "b"] and bars.data[1].y == (0.1, 0.9)


def test_seed_band_figure_draws_mean_band_and_faint_runs():
    groups = [("LRN", {"l0": [epoch(1, 0.2), epoch(2, 0.4)], "l1": [epoch(1, 0.4), epoch(2, 0.6)]}),
              ("BN", {"b0": [epoch(1, 0.5)]})]
    fig = charts.seed_band_figure(groups, "acc", colors=charts.NORM_COLORS)
    means = {t.name: t for t in fig.data if t.showlegend is not False}
    assert set(means) == {"LRN (mean of 2 runs)", "BN (mean of 1 run)"}
    assert means["LRN (mean of 2 runs)"].y == pytest.approx((0.3, 0.5))
    assert means["LRN (mean of 2 runs)"].line.color == charts.NORM_COLORS["LRN"]
    band = [t for t in fig.data if t.fill == "toself" and t.legendgroup == "LRN"][0]
    assert max(band.y) == pytest.approx(0.5 + math.sqrt(0.02))
    assert len([t for t in fig.data if t.opacity == 0.3]) == 3
    assert charts.seed_band_figure([("x", {"r": []})]).layout.annotations[0].text == "no validation points yet"


def test_architecture_figure_has_one_block_per_layer():
    from alexnet.models import summary

    rows = summary(build("cifar", "lrn"))
    fig = charts.architecture_figure(rows)
    blocks = fig.data[0]
    assert len(blocks.x) == len(rows) == 23
    assert charts.layer_labels(rows)[:4] == ["conv1", "relu", "LRN", "pool1"]
    assert charts.layer_labels(rows)[-1] == "fc8" and "64×32×32" in blocks.text
    assert sum(v or 0 for v in fig.data[1].y) == sum(r.parameters for r in rows)
    assert charts.layer_labels(summary(build("paper", "none")))[2] == "(no norm)"


def test_replication_rows_label_dataset_and_hardware():
    full = fake_run("full", result={"test_accuracy": 0.81, "dataset": "CIFAR-10", "dataset_kind": "cifar10",
                                    "device": "NVIDIA H100", "test_images": 10000, "seconds_per_epoch": 3.2},
                    variant="cifar", norm="bn")
    worse = fake_run("worse", result={"test_accuracy": 0.70, "dataset": "CIFAR-10", "dataset_kind": "cifar10",
                                      "device": "CPU", "test_images": 10000}, variant="cifar", norm="bn")
    subset = fake_run("sub", result={"test_accuracy": 0.55, "dataset": "CIFAR-10 subset (6,102 images)",
                                     "dataset_kind": "subset", "device": "CPU", "test_images": 1017},
                      variant="cifar", norm="lrn")
    running = fake_run("running", "running", None, variant="paper", norm="lrn")
    assert [r.name for r in history.own_best([worse, subset, full, running])] == ["full", "sub"]
    published, own = history.replication_rows([worse, subset, full, running])
    assert [p["accuracy"] for p in published] == [0.89, 0.7656, 0.7440, 0.9057]
    assert own[0]["measured on"] == "CIFAR-10 test set" and own[0]["hardware"] == "NVIDIA H100"
    assert own[0]["full CIFAR-10"] and not own[1]["full CIFAR-10"] and "not the full CIFAR-10" in own[1]["caveat"]
    fig = charts.replication_figure(published + own)
    assert list(fig.data[0].marker.pattern.shape) == [""] * 5 + ["/"]  # the subset run is hatched
    assert history.replication_rows([]) == (published, [])


# ---------------------------------------------------------------- the command line, for real

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, mini_data) -> Path:
    """300 training and 100 test images of the mini subset, written as CIFAR-10 python batches."""
    folder = tmp_path_factory.mktemp("tiny") / "cifar-10-batches-py"
    folder.mkdir()
    for name, x, y in (("data_batch_1", mini_data.train_x[:300], mini_data.train_y[:300]),
                       ("test_batch", mini_data.test_x[:100], mini_data.test_y[:100])):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": x.reshape(len(x), -1).numpy(), "labels": y.tolist()}, f)
    return folder


def test_cli_experiment_trains_the_pair_and_prints_the_verdict(tmp_path, tiny_dir, capsys):
    """The default recipe, for real: the background search of each norm's rate, then the runs at those rates."""
    root = tmp_path / "runs"
    cmd = [sys.executable, "-m", "alexnet", "--runs", str(root), "experiment", "--variant", "cifar", "--seeds", "1",
           "--epochs", "1", "--batch-size", "64", "--threads", str(THREADS), "--data", str(tiny_dir), "--name", "cli",
           "--search-steps", "12", "--wait", "--timeout", "240"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "experiment cli: searching each norm's learning rate in the background (range test, 12 steps from " \
           "1e-05 to 10 on the training split), then 2 runs queued" in out.stdout
    record = experiment.load(root, "cli")
    for norm in ("lrn", "bn"):
        run = run_records.load_run(root / f"cli-{norm}-s0")
        assert run.state == "finished" and run.config["norm"] == norm and run.config["data_dir"] == str(tiny_dir)
        assert run.config["lr"] == record.search["results"][norm]["suggestion"]
        assert run.result["test_images"] == 100 and len(run.result["predictions"]) == 100
        assert f"{run.result['test_accuracy']:.2%}" in out.stdout
        assert f"suggested rate {run.config['lr']:.3g}" in out.stdout
    assert "one run a side" in out.stdout and "cannot tell" in out.stdout and "Tuned: each norm's peak" in out.stdout
    # The other forms in-process (the same `main`), to spare three more interpreter starts.
    assert cli.main(["--runs", str(root), "experiment", "--list"]) == 0
    assert "2/2 finished" in capsys.readouterr().out
    assert cli.main(["--runs", str(root), "experiment", "--report", "cli"]) == 0
    assert "cannot tell" in capsys.readouterr().out
    assert cli.main(["--runs", str(root), "experiment", "--seeds", "0"]) == 2
    assert "seeds must be 1 to 10" in capsys.readouterr().err
    assert cli.main(["--runs", str(root), "experiment", "--report", "nothing"]) == 2
    assert "no experiment named 'nothing'" in capsys.readouterr().err


def test_a_rate_follows_the_variant_only_where_it_was_left_at_the_default():
    assert [with_variant(TrainConfig(), v).lr for v in ("cifar", "paper", "imagenet")] == [0.05, 0.02, 0.01]
    assert with_variant(TrainConfig(lr=0.03), "paper").lr == 0.03                       # chosen: stays
    assert with_variant(TrainConfig(optimizer="adam", lr=0.05), "paper").lr == 0.05      # not SGD: stays
    # The experiment's recipes were set on the cifar variant: own-rate's BN 0.05 is the paper variant's 0.02 there
    own = {norm: experiment.recipe_config("own-rate", norm, variant="paper").lr for norm in ("lrn", "bn")}
    assert own == {"lrn": 0.02, "bn": 0.02}
    assert experiment.recipe_config("own-rate", "bn").lr == 0.05
    assert experiment.recipe_config("tuned", "bn", variant="paper", lr=0.007).lr == 0.007  # a searched rate wins
    with pytest.raises(ValueError, match="unknown variant"):
        with_variant(TrainConfig(), "vgg")
