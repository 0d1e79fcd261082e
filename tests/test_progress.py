"""Where a run stands, read from real run folders: progress text and time left while it trains, the finished
state, the best epoch, the runs-table row, and the training images a config plans."""
from __future__ import annotations

import math
import threading

import pytest

from alexnet import runs as run_records
from alexnet.config import TrainConfig
from alexnet.progress import best_epoch, duration, planned_steps, run_progress, run_row
from alexnet.train import train

from conftest import THREADS

TINY = dict(variant="cifar", norm="bn", epochs=2, batch_size=64, max_train_images=256, threads=THREADS, log_every=1,
            schedule="constant", lr=0.01)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mini_data):
    """A real two-epoch run, and the run folder as a reader saw it at each of its logged steps."""
    config = TrainConfig(**TINY, data_dir=str(mini_data.source.path))
    writer = run_records.RunWriter.create(tmp_path_factory.mktemp("progress"), "tiny", config.to_dict())
    seen = []

    def look(event: dict) -> None:
        if event.get("event") == "step":
            seen.append(run_records.load_run(writer.path))  # what the Train page reads while the run trains

    train(config, writer.path, on_event=look, data=mini_data)
    return run_records.load_run(writer.path), seen


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (42, "42 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")])
def test_durations_read_as_people_write_them(seconds, text):
    assert duration(seconds) == text


def test_while_it_trains_the_progress_says_where_how_fast_and_how_long_still(trained):
    _, seen = trained
    assert len(seen) == 8 and all(r.state == "running" for r in seen)  # 256 images / 64 a step, two epochs
    middle = seen[3]
    step = middle.steps()[-1]
    progress = run_progress(middle)
    assert progress.fraction == pytest.approx(step["global_step"] / 8)
    assert f"step {step['global_step']:,} / 8" in progress.text and "images/s" in progress.text
    assert "left" in progress.text and progress.lr == pytest.approx(step["lr"])
    last = run_progress(seen[-1])
    assert last.fraction == 1.0 and "measuring the test accuracy" in last.text


def test_a_finished_run_reads_as_finished_with_its_best_epoch_and_row(trained):
    run, _ = trained
    progress = run_progress(run)
    assert progress.fraction == 1.0 and progress.text == "finished: 2 epochs, 8 steps"
    best = best_epoch(run)
    assert best["val_acc"] == max(e["val_acc"] for e in run.epochs() if math.isfinite(e["val_acc"]))
    row = run_row(run)
    assert row["run"] == "tiny" and row["state"] == "finished" and row["epochs"] == "2 / 2"
    assert row["test accuracy"] == pytest.approx(100 * run.result["test_accuracy"]) and row["message"] == ""


def test_a_run_before_its_first_event_waits_for_the_process(tmp_path):
    writer = run_records.RunWriter.create(tmp_path, "queued", TrainConfig().to_dict())
    writer.set_status("queued", reason="waiting for another run to finish")
    run = run_records.load_run(writer.path)
    assert run_progress(run).text.startswith("waiting for the training process")
    assert best_epoch(run) is None and run_row(run)["message"] == "waiting for another run to finish"


@pytest.mark.parametrize("changes", [{}, {"val_fraction": 0.25}, {"max_train_images": 1000, "batch_size": 100}])
def test_the_planned_images_and_steps_are_those_the_training_loop_counts(mini_data, tmp_path, changes):
    config = TrainConfig(**{**TINY, "epochs": 1, "max_train_images": 0, **changes},
                         data_dir=str(mini_data.source.path))
    starts = []
    stop = threading.Event()
    stop.set()  # the loop records its start, then stops before its first step
    train(config, on_event=lambda e: starts.append(e) if e.get("event") == "start" else None, data=mini_data, stop=stop)
    assert planned_steps(config, mini_data.source.train_count) == (starts[0]["train_images"],
                                                                   starts[0]["steps_per_epoch"])

