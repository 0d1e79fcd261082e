"""The run lock: one trainer per run, and a reader's look at the lock never turns a trainer away.

The lock is the kernel's `flock` on `<run>/.lock` (jobs.py's contract between processes), so these tests
hold it the way another process would: their own open file and `fcntl.flock`.
"""
from __future__ import annotations

import fcntl
import threading
from pathlib import Path
from typing import IO

import pytest

from alexnet import jobs, queues
from alexnet.runs import RunWriter

from conftest import THREADS

CPU = queues.Request(("cpu",))


def hold_lock(path: Path) -> IO:
    """The run's lock taken as another process takes it; closing the file frees it."""
    handle = open(path, "a+")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_a_second_trainer_of_the_same_run_is_refused(tmp_path):
    writer = RunWriter.create(tmp_path, "taken", {})
    with jobs.device_lock(tmp_path, writer, CPU, threading.Event()):  # the first trainer
        assert jobs.is_training(tmp_path, "taken")
        with pytest.raises(RuntimeError, match="already being trained"):
            with jobs.device_lock(tmp_path, writer, CPU, threading.Event()):
                pass
    assert not jobs.is_training(tmp_path, "taken")


def test_a_trainer_starting_while_someone_looks_at_the_lock_still_starts(tmp_path):
    """is_training() holds the lock for an instant; a trainer that starts in that instant waits it out."""
    writer = RunWriter.create(tmp_path, "looked-at", {})
    looker = hold_lock(writer.path / ".lock")  # a look that lasts far longer than a real one
    threading.Timer(0.3, looker.close).start()
    with jobs.device_lock(tmp_path, writer, CPU, threading.Event()):
        assert jobs.is_training(tmp_path, "looked-at")
    assert not jobs.is_training(tmp_path, "looked-at")


def test_two_resumes_in_a_row_start_one_process_and_the_run_finishes_once(runs_dir, mini_data):
    """The second Resume comes while the first's process still imports torch, before it holds the run's lock."""
    from alexnet.config import TrainConfig
    from alexnet.runs import load_run
    from alexnet.train import train

    config = TrainConfig(variant="cifar", norm="bn", epochs=2, batch_size=64, max_train_images=256, threads=THREADS,
                         log_every=1, schedule="constant", lr=0.01, data_dir=str(mini_data.source.path))
    writer = RunWriter.create(runs_dir, "twice", config.to_dict())
    stop = threading.Event()

    def stop_after_epoch_1(event: dict) -> None:
        if event["event"] == "epoch":
            stop.set()

    train(config, writer.path, on_event=stop_after_epoch_1, stop=stop, data=mini_data)
    assert load_run(writer.path).state == "stopped"

    first = jobs.resume("twice", runs_dir)
    second = jobs.resume("twice", runs_dir)
    assert second == first
    assert jobs.wait("twice", runs_dir, timeout=300) == "finished"
    run = load_run(writer.path)
    assert [e["epoch"] for e in run.epochs()] == [1, 2]
    assert (writer.path / "log.txt").read_text().count("run twice:") == 1  # each process says so at its start
