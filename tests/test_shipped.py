"""The experiments shipped with the app (alexnet.shipped, assets/experiments/): the loader and its label on a real
tiny experiment made here, the records that ship (no weights, each result what the summary says), and the Compare
page on an empty runs folder: the shipped experiment read-only, and "Run it here" starting the same plan."""
from __future__ import annotations

import datetime
import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from alexnet import experiment, jobs, shipped
from alexnet import runs as run_records
from alexnet.cli import experiment_command
from alexnet.train import train
from conftest import THREADS, open_app_page

APP = Path(__file__).resolve().parent.parent / "app.py"


@pytest.fixture(scope="module")
def made(tmp_path_factory, mini_data):
    """A real finished tuned experiment (two seeds, one epoch on 256 images, range tests of 6 steps), its runs
    trained in this process to the end, and shipped into a folder of its own: (runs folder, record, shipped folder)."""
    root = tmp_path_factory.mktemp("made-runs")
    plan = experiment.ExperimentPlan(seeds=2, epochs=1, batch_size=32, max_train_images=256, threads=THREADS,
                                     search_steps=6, data_dir=str(mini_data.source.path))

    def start(config, name, folder):  # jobs.start, but in this process and to the end
        writer = run_records.RunWriter.create(folder, name, config.to_dict())
        train(config, writer.path, data=mini_data)
        return name

    launched = experiment.launch(plan, root, name="tiny",  # conftest puts the thread count back after the test
                                 conductor=lambda folder, name: experiment.conduct(folder, name, start=start))
    folder = tmp_path_factory.mktemp("shipped")
    shipped.ship(root, launched.name, folder)
    return root, experiment.load(root, launched.name), folder


def test_a_shipped_experiment_loads_read_only_with_its_label(made):
    root, record, folder = made
    (item,) = shipped.list_shipped(folder)
    assert item.name == "tiny" and item.title == "tiny (shipped)" and item.record == record
    summary, original = item.summary(), experiment.summarize(record, root)
    assert summary.done and summary.pairs == original.pairs and summary.verdict.text == original.verdict.text
    assert experiment.search_rows(item.record) == experiment.search_rows(record)  # the chosen rates and curves

    runs = item.runs()
    assert [r.name for r in runs] == [f"tiny-{n}-s{s} (shipped)" for s in (0, 1) for n in ("lrn", "bn")]
    assert all(r.shipped and r.state == "finished" and not r.has_weights for r in runs)
    for run in runs:  # a marked name is no run name: it cannot collide with a run of the user's
        with pytest.raises(ValueError):
            run_records.check_name(run.name)
    assert not any(r.shipped for r in run_records.list_runs(root))

    label = item.label
    start = run_records.load_run(root / "tiny-lrn-s0").metrics[0]
    assert start["event"] == "start" and start["train_images"] == 256
    assert label.data == (f"CIFAR-10 subset (6,102 images): 256 training, {start['val_images']:,} validation and "
                          "1,017 test images a run")
    assert label.hardware.startswith("CPU: ") and f"torch {torch.__version__}" in label.hardware
    assert label.command == experiment_command(item.plan)
    assert "--variant cifar --seeds 2 --epochs 1 --recipe tuned" in label.command
    assert label.date == datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).strftime("%Y-%m-%d")
    assert label.code and label.code != "not recorded"
    assert shipped.rerun_plan(item, "/data/here") == replace(item.plan, data_dir="/data/here", device="auto")


def test_only_records_ship_and_an_unfinished_experiment_does_not(made, tmp_path):
    root, record, folder = made
    assert (root / "tiny-bn-s0" / "weights.safetensors").exists() and (root / "tiny-bn-s0" / "state.pt").exists()
    shipped_files = {p.relative_to(folder / "tiny").as_posix() for p in (folder / "tiny").rglob("*") if p.is_file()}
    assert shipped_files == {".experiments/tiny.json"} | {f"{e['run']}/{f}" for e in record.runs
                                                         for f in shipped.RUN_FILES}

    copy = tmp_path / "runs"  # the same experiment with one run stopped: refused, nothing written
    for path in root.rglob("*"):
        if path.is_file() and ".lr-finder" not in path.parts:
            (copy / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(root)).write_bytes(path.read_bytes())
    status = copy / "tiny-bn-s1" / "status.json"
    status.write_text(json.dumps({**json.loads(status.read_text()), "state": "stopped"}))
    with pytest.raises(ValueError, match="3 of 4"):
        shipped.ship(copy, "tiny", tmp_path / "out")
    assert not (tmp_path / "out" / "tiny").exists()


# ---------------------------------------------------------------- what ships

def test_the_shipped_records_hold_no_weights_and_agree_with_themselves():
    found = shipped.list_shipped()
    assert [item.plan.variant for item in found] == ["cifar"] and shipped.not_shipped(found) == ["paper"]
    files = [p for p in shipped.SHIPPED_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 600_000
    for path in files:
        inside = path.relative_to(shipped.SHIPPED_DIR).parts
        if len(inside) == 1:  # the script and its README beside the experiments
            assert path.name in ("make_shipped.sh", "README.md"), path
        else:
            assert inside[1] == experiment.EXPERIMENTS_DIR or path.name in shipped.RUN_FILES, path
    for item in found:
        plan, summary = item.plan, item.summary()
        assert (plan.seeds, plan.epochs, plan.recipe) == (shipped.MADE_WITH["seeds"], shipped.MADE_WITH["epochs"],
                                                          "tuned")
        assert summary.done and summary.finished == summary.total == 2 * plan.seeds
        assert summary.verdict.level != "no data" and "not recorded" not in str(item.label)
        by_seed = {row["seed"]: row for row in summary.pairs}
        for entry in item.record.runs:
            run = run_records.load_run(item.root / entry["run"])
            end = [e for e in run.metrics if e["event"] == "end"]
            assert by_seed[entry["seed"]][entry["norm"]] == run.result["test_accuracy"] == end[-1]["test_acc"]
            assert run.config["lr"] == item.record.search["results"][entry["norm"]]["suggestion"]
            assert run.result["epochs_run"] == plan.epochs


# ---------------------------------------------------------------- the Compare page

@pytest.fixture
def empty_runs(runs_dir, monkeypatch, mini_dir):
    monkeypatch.setenv("ALEXNET_DATA", str(mini_dir))
    return runs_dir


def open_compare() -> AppTest:
    return open_app_page("pages/compare.py")


def test_an_empty_runs_folder_opens_compare_on_the_shipped_experiment_read_only(empty_runs):
    (item,) = shipped.list_shipped()
    at = open_compare()
    assert at.selectbox(key="exp.chosen").value == item.title
    assert at.session_state["compare.first_tab"] == "LRN versus BN experiment"
    label = item.label
    shown = "\n".join(m.value for m in at.markdown)
    assert f"**Data:** {label.data}" in shown and f"**Hardware:** {label.hardware}" in shown
    assert f"**Made:** {label.date}" in shown and label.command in [c.value for c in at.code]
    assert any("Shipped with the app" in i.value for i in at.info)
    summary = item.summary()
    assert any(f"**Verdict.** {summary.verdict.text}" == box.value
               for kind in ("success", "info", "warning") for box in at.get(kind))
    rates = [d.value for d in at.dataframe if "suggested peak rate" in d.value.columns]
    assert list(rates[0]["suggested peak rate"]) == [r["suggested peak rate"]
                                                     for r in experiment.search_rows(item.record)]
    pairs = [d.value for d in at.dataframe if "BN − LRN (points)" in d.value.columns][0]
    assert list(pairs["seed"]) == [row["seed"] for row in summary.pairs]
    assert {m.label for m in at.metric} >= {"LRN: test accuracy", "BN: test accuracy"}
    assert at.button(key="exp.run_here")  # and nothing that writes to it
    keys = [b.key or "" for b in at.button] + [b.proto.id for b in at.get("download_button")]
    assert not any(word in key for key in keys for word in ("delete", "resume", "continue", "stop", "export"))
    assert any("paper variant's experiment has not been run on a GPU yet" in c.value for c in at.caption)

    # The runs tab lists the shipped runs beside (here: instead of) the user's own, under marked names.
    assert at.multiselect(key="compare.runs").value == [r.name for r in item.runs()][:2]
    assert any("No runs of your own yet" in i.value for i in at.info)
    table = [d.value for d in at.dataframe if {"run", "test acc (%)"} <= set(d.value.columns)][0]
    assert list(table["run"]) == [r.name for r in item.runs()][:2]

    at.button(key="exp.open").click().run()  # the experiment's runs, all of them, in the runs tab
    assert sorted(at.multiselect(key="compare.runs").value) == sorted(r.name for r in item.runs())


def test_run_it_here_starts_the_same_plan_on_this_machines_data(empty_runs, mini_dir):
    (item,) = shipped.list_shipped()
    at = open_compare()
    at.button(key="exp.run_here").click().run()
    assert not at.exception, at.exception
    record = experiment.load(empty_runs, "lrn-vs-bn-cifar")
    try:
        assert experiment.ExperimentPlan(**record.plan) == replace(
            item.plan, data_dir=str(mini_dir / "cifar-10-batches-py"), device="auto")
        assert record.recipe == "tuned" and record.search is not None
        assert any("**lrn-vs-bn-cifar** searches each norm's learning rate" in s.value for s in at.success)
        assert at.selectbox(key="exp.chosen").value == "lrn-vs-bn-cifar"  # the user's own, chosen now
        assert not any("Shipped with the app" in i.value for i in at.info)
    finally:
        stop_experiment(empty_runs, "lrn-vs-bn-cifar")


def stop_experiment(root: Path, name: str) -> None:
    """Stop the experiment's conductor (SIGTERM: it ends its range test and says 'stopped') and any run it queued."""
    pid = experiment.load(root, name).search.get("pid")
    if pid and run_records.pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while pid and run_records.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not run_records.pid_alive(pid), "the experiment's conductor did not stop"
    for entry in experiment.load(root, name).runs:
        jobs.stop(entry["run"], root)
        jobs.wait(entry["run"], root, timeout=60)
