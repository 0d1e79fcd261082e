"""The run lock: one trainer per run, and a reader's look at the lock never turns a trainer away."""
from __future__ import annotations

import threading

import pytest

from alexnet import jobs
from alexnet.runs import RunWriter


def test_a_second_trainer_of_the_same_run_is_refused(tmp_path):
    writer = RunWriter.create(tmp_path, "taken", {})
    holder = jobs._try_lock(writer.path / ".lock")  # the first trainer
    try:
        assert jobs.is_training(tmp_path, "taken")
        with pytest.raises(RuntimeError, match="already being trained"):
            with jobs.device_lock(tmp_path, writer, threading.Event()):
                pass
    finally:
        holder.close()
    assert not jobs.is_training(tmp_path, "taken")


def test_a_trainer_starting_while_someone_looks_at_the_lock_still_starts(tmp_path):
    """is_training() holds the lock for an instant; a trainer that starts in that instant waits it out."""
    writer = RunWriter.create(tmp_path, "looked-at", {})
    looker = jobs._try_lock(writer.path / ".lock")  # a look that lasts far longer than a real one
    threading.Timer(0.3, looker.close).start()
    with jobs.device_lock(tmp_path, writer, threading.Event()):
        assert jobs.is_training(tmp_path, "looked-at")
    assert not jobs.is_training(tmp_path, "looked-at")
