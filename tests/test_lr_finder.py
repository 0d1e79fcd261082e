"""The learning-rate range test, its background job and cache, and the tuned LRN-versus-BN recipe.

Real steps of the cifar variant on the CIFAR-10 mini subset, a few hundred images and one thread;
the background jobs are real processes.
"""
from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from alexnet import cli, experiment, jobs, lr_search, queues
from alexnet import runs as run_records
from alexnet.config import TrainConfig
from alexnet.lr_finder import RangeTest, RangeTestSettings, range_test, rates
from alexnet.train import train
from conftest import THREADS, open_app_page

REPO = Path(__file__).resolve().parent.parent


def small(mini_dir: Path, **changes) -> TrainConfig:
    return TrainConfig(**{"variant": "cifar", "norm": "bn", "batch_size": 32, "max_train_images": 256,
                          "threads": THREADS, "data_dir": str(mini_dir), **changes})


def listing(*folders: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for folder in folders for p in folder.rglob("*")}


# ---------------------------------------------------------------- the range test

def test_rates_rise_exponentially_the_curve_follows_the_seed_and_nothing_is_written(
        mini_dir, mini_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALEXNET_RUNS", str(tmp_path / "runs"))
    settings = RangeTestSettings(start=1e-4, end=1e-1, steps=10)
    before = listing(tmp_path, mini_dir)
    first = range_test(small(mini_dir), settings)  # reading the dataset itself
    assert listing(tmp_path, mini_dir) == before  # no run folder, no cache, nothing beside the data
    assert first.ended == "end of range" and first.steps == 10 and first.images == 320
    ratios = [b / a for a, b in zip(first.rates, first.rates[1:])]
    assert first.rates[0] == pytest.approx(1e-4) and first.rates[-1] == pytest.approx(1e-1)
    assert ratios == pytest.approx([10 ** (3 / 9)] * 9)
    assert first.rates == pytest.approx(rates(settings))
    # Same seed, same curve; and it never looked at the test images (here replaced by blanks).
    blank = replace(mini_data, test_x=torch.zeros_like(mini_data.test_x), test_y=torch.zeros_like(mini_data.test_y))
    again = range_test(small(mini_dir), settings, data=blank)
    assert again.losses == first.losses and again.smoothed == first.smoothed
    other_seed = range_test(small(mini_dir, seed=1), settings, data=mini_data)
    assert other_seed.losses != first.losses
    assert all(math.isfinite(v) for v in first.losses) and first.losses[0] == first.smoothed[0]


def test_the_test_stops_when_the_loss_diverges(mini_dir, mini_data):
    result = range_test(small(mini_dir, norm="none"), RangeTestSettings(start=0.3, end=100, steps=40, smoothing=0.5),
                        data=mini_data)
    assert result.ended in ("diverged", "not finite") and result.steps < 40
    low = min(v for v in result.smoothed if math.isfinite(v))
    last = result.smoothed[-1]
    assert not math.isfinite(last) or last > 4 * low
    assert ("diverged at rate" in result.stopped) or ("the loss became" in result.stopped)


def test_bn_diverges_at_a_lower_rate_than_lrn_on_the_cifar_variant(mini_dir, mini_data):
    """What the range test shows on the cifar variant, measured rather than assumed.

    Measured on the mini subset (40 steps from 1e-4 to 10, batch 32, 1,024 images, LSUV init, seeds 0, 1, 2):
    BN's test diverged at rates 0.70, 0.94 and 0.94, no norm's at 0.94, 3.07 and 2.29, LRN's at 3.07 each
    time. The suggestions at this budget moved more between seeds than between norms (and at the default
    budget BN and no norm got the same suggestion), so the ordering tested is where each blows up.
    """
    settings = RangeTestSettings(start=1e-4, end=10, steps=40)
    bn, lrn = (range_test(small(mini_dir, norm=norm, max_train_images=1024), settings, data=mini_data)
               for norm in ("bn", "lrn"))
    assert bn.ended == "diverged" and bn.rates[-1] < lrn.rates[-1] / 2


def test_bad_settings_get_a_message():
    with pytest.raises(ValueError, match="the range must rise"):
        RangeTestSettings(start=1.0, end=0.1).validate()
    with pytest.raises(ValueError, match="steps must be 5 to 10,000"):
        RangeTestSettings(steps=2).validate()


# ---------------------------------------------------------------- in the background, kept per config

def wait_for(check, timeout: float = 120.0, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("gave up waiting")


def test_a_background_test_runs_once_and_is_kept_for_its_config(mini_dir, runs_dir):
    config, settings = small(mini_dir, lr=0.05, epochs=7), RangeTestSettings(steps=6)
    assert lr_search.status(runs_dir, config, settings)["state"] == "none"
    key = lr_search.start(runs_dir, config, settings)
    assert lr_search.start(runs_dir, config, settings) == key  # a second click while it starts: the same process
    pid = lr_search.status(runs_dir, config, settings)["pid"]
    done = wait_for(lambda: (s := lr_search.status(runs_dir, config, settings))["state"] == "finished" and s)
    result = done["result"]
    assert result.steps == 6 and result.config["schedule"] == "constant"
    assert result.to_dict() == lr_search.cached(runs_dir, config, settings).to_dict()
    # What the test does not depend on (the peak rate, epochs, threads) finds the same result at once.
    same = replace(config, lr=0.2, epochs=30, threads=config.threads + 1)
    kept = (runs_dir / lr_search.FOLDER / key / "result.json").stat().st_mtime
    assert lr_search.start(runs_dir, same, settings) == key
    assert lr_search.status(runs_dir, same, settings)["state"] == "finished"
    assert (runs_dir / lr_search.FOLDER / key / "result.json").stat().st_mtime == kept
    assert [p.name for p in (runs_dir / lr_search.FOLDER).iterdir()] == [key]
    # The process says its summary after it keeps the result: read its log once it has ended.
    wait_for(lambda: not run_records.pid_alive(pid))
    log = (runs_dir / lr_search.FOLDER / key / "log.txt").read_text()
    assert log.count("training images") == 1 and pid  # one process ran it, and said its summary once
    other = replace(config, norm="lrn")
    assert lr_search.cache_key(other, settings) != key
    assert lr_search.cached(runs_dir, other, settings) is None


def test_a_test_waits_in_its_devices_queue_and_runs_in_one_process(mini_dir, runs_dir):
    """A range test holds one device whatever the config's processes (the batch is global: one process takes the
    same steps), so a data-parallel config shares its one-process twin's key; it waits while another holds that
    device's queue, and names itself to whoever waits once it holds it."""
    config, settings = small(mini_dir, device="cpu", processes=2), RangeTestSettings(steps=5)
    assert lr_search.cache_key(config, settings) == lr_search.cache_key(replace(config, processes=1), settings)
    heard, results = [], []

    def progress(update: dict) -> None:
        heard.append({**update, "holder": queues.holder(runs_dir, "cpu")})

    tester = threading.Thread(target=lambda: results.append(lr_search.ensure(runs_dir, config, settings,
                                                                            on_progress=progress)))
    with jobs.hold_device(runs_dir, queues.request("cpu"), "another run", threading.Event(), lambda reason: None):
        tester.start()
        waiting = wait_for(lambda: next((h for h in heard if "is training" in h.get("reason", "")), None))
        assert waiting["reason"] == "waiting for the device cpu: another run is training"
        assert not any(h["state"] == "running" for h in heard)
    tester.join(timeout=120)
    assert results and results[0].steps == 5 and results[0].config["processes"] == 1
    running = [h for h in heard if h["state"] == "running"]
    assert running and {h["holder"] for h in running} == {"a learning-rate range test (cifar, bn)"}
    assert queues.holder(runs_dir, "cpu") is None  # released once it ended


def test_the_command_line_prints_the_curve_and_the_suggestion(mini_dir, capsys):
    assert cli.main(["lr-find", "--variant", "cifar", "--norm", "bn", "--batch-size", "32", "--max-train-images",
                     "256", "--threads", str(THREADS), "--data-dir", str(mini_dir), "--steps", "6", "--start", "1e-4",
                     "--end", "0.1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "range test of the cifar variant, norm bn" in out and "6 steps, 192 training images" in out
    assert "suggested peak learning rate" in out or "no suggestion" in out
    assert "ended: reached the end of the range (0.1)" in out
    assert cli.main(["lr-find", "--steps", "2"]) == 2
    assert "steps must be 5 to 10,000" in capsys.readouterr().err


# ---------------------------------------------------------------- the tuned recipe

def tuned_plan(mini_dir: Path, **changes) -> experiment.ExperimentPlan:
    return experiment.ExperimentPlan(**{"seeds": 2, "epochs": 1, "batch_size": 32, "max_train_images": 256,
                                        "threads": THREADS, "search_steps": 6, "data_dir": str(mini_dir), **changes})


def finished_runs(accuracies: dict[tuple[str, int], float]):
    """jobs.start, standing in: each run folder at once, as finished with a known accuracy; records the starts."""
    started = []

    def start(config, name, folder):
        writer = run_records.RunWriter.create(folder, name, config.to_dict())
        writer.write_result({"test_accuracy": accuracies[config.norm, config.seed], "test_images": 1017,
                             "dataset": "CIFAR-10 subset (6,102 images)"})
        writer.set_status("finished")
        started.append((name, config))
        return name

    return start, started


def test_tuned_recipe_searches_once_per_norm_and_its_runs_take_the_recorded_rates(mini_dir, runs_dir):
    assert experiment.ExperimentPlan().recipe == "tuned"  # the default, here and on the Compare page's button
    start, started = finished_runs({("lrn", 0): 0.50, ("bn", 0): 0.60, ("lrn", 1): 0.51, ("bn", 1): 0.62})
    launched = experiment.launch(tuned_plan(mini_dir), runs_dir,
                                 conductor=lambda root, name: experiment.conduct(root, name, start=start))
    record = experiment.load(runs_dir, launched.name)
    results = record.search["results"]
    assert set(results) == {"lrn", "bn"} and record.search["state"] == "finished"
    assert len(list((runs_dir / lr_search.FOLDER).iterdir())) == 2  # one search per norm, not per seed
    for norm, result in results.items():  # the same budget and range for both, on the training split
        assert result["settings"] == {**results["lrn"]["settings"], "steps": 6}
        assert result["config"]["norm"] == norm and result["config"]["seed"] == 0
    assert [(name, c.norm, c.seed) for name, c in started] == [
        (f"{launched.name}-{n}-s{s}", n, s) for s in (0, 1) for n in ("lrn", "bn")]
    assert all(c.lr == results[c.norm]["suggestion"] for _, c in started)
    differ = {k for k in started[0][1].to_dict() if getattr(started[0][1], k) != getattr(started[1][1], k)}
    assert differ <= {"norm", "lr"}  # everything else shared
    # A second conductor (a reload, a second tab, a crash recovery) finds nothing left to do.
    experiment.conduct(runs_dir, launched.name, start=start)
    assert len(started) == 4 and len(list((runs_dir / lr_search.FOLDER).iterdir())) == 2

    summary = experiment.summarize(experiment.load(runs_dir, launched.name), runs_dir)
    assert summary.done and summary.verdict.level in ("clear", "likely", "unclear")
    text = summary.verdict.text
    rates_said = ", ".join(f"{label} {results[n]['suggestion']:.3g}" for n, label in (("lrn", "LRN"), ("bn", "BN")))
    assert ("Tuned: each norm's peak learning rate, by the same range test (6 steps from 1e-05 to 10 on the "
            f"training split, seed 0; the rate at the smoothed loss's minimum, divided by 3): {rates_said}.") in text
    assert ("Shared: the init (lsuv), the optimizer (SGD, momentum 0.9, weight decay 0.0005), the schedule "
            "(one-cycle), the augmentation (crops and flips), 1 epochs, batch 32, the data split and seeds 0-1.") in text
    rows = experiment.search_rows(summary.experiment)
    assert [(r["norm"], r["suggested peak rate"]) for r in rows] == [
        ("LRN", results["lrn"]["suggestion"]), ("BN", results["bn"]["suggestion"])]
    assert f"suggested rate {results['bn']['suggestion']:.3g}" in experiment.report(summary)


def test_the_same_recipe_says_its_one_rate_may_favour_a_norm(mini_dir, runs_dir):
    start, _ = finished_runs({("lrn", 0): 0.50, ("bn", 0): 0.60, ("lrn", 1): 0.52, ("bn", 1): 0.61})
    launched = experiment.launch(tuned_plan(mini_dir, recipe="same"), runs_dir, start=start)
    assert launched.search is None
    text = experiment.summarize(launched, runs_dir).verdict.text
    assert "one shared peak rate of 0.02, which may favour one norm" in text


def test_a_search_killed_midway_keeps_what_it_found_and_continues_without_searching_twice(mini_dir, runs_dir):
    plan = tuned_plan(mini_dir, seeds=1)
    launched = experiment.launch(plan, runs_dir, conductor=lambda root, name: None)
    assert experiment.summarize(launched, runs_dir).searching is False  # no conductor lives: it reads stopped
    settings = experiment.search_settings(plan)
    lrn_test = lr_search.ensure(runs_dir, experiment.search_config(plan, "lrn"), settings)  # kept from before
    may_take = queues.request(plan.device).candidates  # every device BN's test may take, held by "another run"
    with jobs.hold_device(runs_dir, queues.Request(may_take, len(may_take)), "another run", threading.Event(),
                          lambda reason: None):
        conductor = subprocess.Popen([sys.executable, "-m", "alexnet", "--runs", str(runs_dir), "experiment",
                                      "--resume", launched.name], cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:  # the kept LRN test is recorded at once; BN's waits for the device this test holds
            waiting = wait_for(lambda: (s := experiment.search_state(experiment.load(runs_dir, launched.name)))
                               .get("norm") == "bn" and "is training" in s.get("reason", "") and s)
            assert waiting["state"] == "running" and waiting["reason"] == queues.waiting_reason(
                runs_dir, queues.request(plan.device))  # "waiting for the device cpu: another run is training"
            assert experiment.summarize(experiment.load(runs_dir, launched.name), runs_dir).searching
        finally:
            conductor.kill()
            conductor.wait()
    record = experiment.load(runs_dir, launched.name)
    assert experiment.search_state(record)["state"] == "stopped" and record.runs == []
    assert record.search["results"]["lrn"] == lrn_test.to_dict()
    summary = experiment.summarize(record, runs_dir)
    assert summary.done and "The learning-rate search stopped" in summary.verdict.text
    kept = (runs_dir / lr_search.FOLDER / lr_search.cache_key(experiment.search_config(plan, "lrn"), settings)
            / "result.json").stat().st_mtime
    start, started = finished_runs({("lrn", 0): 0.5, ("bn", 0): 0.6})
    experiment.conduct(runs_dir, launched.name, start=start)
    record = experiment.load(runs_dir, launched.name)
    assert record.search["results"]["lrn"] == lrn_test.to_dict() and set(record.search["results"]) == {"lrn", "bn"}
    assert len(list((runs_dir / lr_search.FOLDER).iterdir())) == 2
    assert (runs_dir / lr_search.FOLDER / lr_search.cache_key(experiment.search_config(plan, "lrn"), settings)
            / "result.json").stat().st_mtime == kept
    assert [c.lr for _, c in started] == [record.search["results"][n]["suggestion"] for n in ("lrn", "bn")]


# ---------------------------------------------------------------- the pages (AppTest)



def figure(at: AppTest, x_title: str) -> dict:
    specs = [json.loads(e.proto.spec) for e in at.get("plotly_chart")]
    found = [s for s in specs if (s["layout"].get("xaxis", {}).get("title") or {}).get("text") == x_title]
    assert len(found) == 1, [s["layout"].get("xaxis") for s in specs]
    return found[0]


def array(value) -> list:
    """A figure's array as a list: plotly sends numpy arrays base64-encoded."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


def test_compare_shows_each_norms_chosen_rate_and_range_test_beside_the_verdict(mini_dir, mini_data, runs_dir,
                                                                               monkeypatch):
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))

    def start(config, name, folder):  # jobs.start, but in this process and to the end
        train(replace(config, log_every=1), run_records.RunWriter.create(folder, name, config.to_dict()).path,
              data=mini_data)
        return name

    launched = experiment.launch(tuned_plan(mini_dir, seeds=1, batch_size=64), runs_dir,
                                 conductor=lambda root, name: experiment.conduct(root, name, start=start))
    results = experiment.load(runs_dir, launched.name).search["results"]
    at = open_app_page("pages/compare.py")
    assert at.radio(key="exp.recipe").value == "tuned" and "--recipe tuned" in at.code[0].value  # the button's default
    assert at.selectbox(key="exp.chosen").value == launched.name
    verdict = [w.value for w in at.warning if "Verdict" in w.value]
    assert verdict and "one run a side" in verdict[0]
    assert "Tuned: each norm's peak learning rate, by the same range test (6 steps" in verdict[0]
    table = [d.value for d in at.dataframe if "suggested peak rate" in d.value.columns]
    assert len(table) == 1 and list(table[0]["norm"]) == ["LRN", "BN"]
    assert list(table[0]["suggested peak rate"]) == pytest.approx([results["lrn"]["suggestion"],
                                                                    results["bn"]["suggestion"]])
    spec = figure(at, "learning rate (log scale)")
    assert spec["layout"]["xaxis"]["type"] == "log"
    lines = {t["name"]: t for t in spec["data"] if t.get("mode") == "lines" and t.get("showlegend") is not False}
    assert set(lines) == {"LRN", "BN"}
    assert array(lines["BN"]["x"]) == pytest.approx(results["bn"]["rates"])
    assert array(lines["LRN"]["y"]) == pytest.approx(results["lrn"]["smoothed"])
    marks = {t["name"]: array(t["x"]) for t in spec["data"] if "suggested" in t.get("name", "")}
    assert marks == {f"BN: suggested {results['bn']['suggestion']:.3g}": [pytest.approx(results["bn"]["suggestion"])],
                     f"LRN: suggested {results['lrn']['suggestion']:.3g}": [
                         pytest.approx(results["lrn"]["suggestion"])]}


def test_train_page_finds_a_rate_in_the_background_and_fills_it_into_the_form(mini_dir, runs_dir, monkeypatch):
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    at = open_app_page("pages/train.py")
    at.toggle(key="train.advanced").set_value(True).run()
    at.number_input(key="train.max_train_images").set_value(256)
    at.number_input(key="train.batch_size").set_value(32)
    at.toggle(key="train.lr_finder").set_value(True).run()
    at.number_input(key="train.lr_steps").set_value(6).run()
    assert not at.get("plotly_chart") and at.number_input(key="train.lr").value == 0.05  # the preset's rate
    at.button(key="train.lr_find_start").click().run()
    assert not at.exception, at.exception

    def shown() -> bool:
        at.run()
        return any(b.key == "train.lr_use" for b in at.button)

    wait_for(shown, every=1.0)
    (test,) = list((runs_dir / lr_search.FOLDER).iterdir())  # one test, kept in the runs folder
    result = RangeTest.from_dict(run_records.read_json(test / "result.json"))
    assert result.config["max_train_images"] == 256 and result.steps == 6 and result.suggestion
    spec = figure(at, "learning rate (log scale)")
    assert [array(t["x"]) for t in spec["data"] if "suggested" in t.get("name", "")] == [
        [pytest.approx(result.suggestion)]]
    at.button(key="train.lr_use").click().run()
    assert not at.exception, at.exception
    assert at.number_input(key="train.lr").value == pytest.approx(float(f"{result.suggestion:.3g}"))
    at.button(key="train.lr_find_start").click().run()  # again: kept, so no second process
    assert list((runs_dir / lr_search.FOLDER).iterdir()) == [test]
    wait_for(lambda: not run_records.pid_alive(run_records.read_json(test / "status.json")["pid"]))  # its summary
    assert (test / "log.txt").read_text().count("training images") == 1
