"""Start, queue, stop and resume training processes that outlive the browser tab.

A job is `python -m alexnet train --resume NAME` in its own session, writing only its run
folder. Two file locks keep the one device and each run to a single process: the device lock
(`<runs>/.device.lock`) queues runs in arrival order, and a run's own lock (`<run>/.lock`)
stops a second tab from starting the same run twice. The kernel frees both when a process
dies, however it dies.
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .config import TrainConfig
from .data import download_target, live_download, write_download_status
from .runs import ACTIVE_STATES, DONE_STATES, RunWriter, check_name, load_run, runs_root

POLL_SECONDS = 0.5


def _try_lock(path: Path):
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return handle
    except BlockingIOError:
        handle.close()
        return None


@contextmanager
def one_at_a_time(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`, waiting for it: one look-then-spawn at a time, across threads
    (two tabs of one server) and processes."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@contextmanager
def device_lock(root: str | Path | None, writer: RunWriter, stop: threading.Event) -> Iterator[None]:
    """Hold the run's lock, then wait in the queue (state 'queued') for the device; yields once both are held."""
    run_handle = _try_lock(writer.path / ".lock")
    for _ in range(20):  # is_training() takes the lock for a moment to look: not a second trainer
        if run_handle is not None:
            break
        time.sleep(0.05)
        run_handle = _try_lock(writer.path / ".lock")
    if run_handle is None:
        raise RuntimeError(f"run {writer.path.name!r} is already being trained by another process")
    try:
        with hold_device(root, writer.path.name, stop, lambda reason: writer.set_status("queued", reason=reason)):
            yield
    finally:
        run_handle.close()


@contextmanager
def hold_device(root: str | Path | None, holder: str, stop: threading.Event,
                on_wait: Callable[[str], None]) -> Iterator[bool]:
    """Wait in the queue for the one device, telling `on_wait` why while another process holds it; yields
    True once this process holds it (named `holder` to those waiting), False if `stop` came first.

    A training run waits here (`device_lock`), and so does a learning-rate range test (`lr_search`).
    """
    lock_path = runs_root(root) / ".device.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = None
    try:
        while not stop.is_set():
            handle = _try_lock(lock_path)
            if handle is not None:
                break
            on_wait(f"waiting for the device: {_holder(lock_path) or 'another run'} is training")
            time.sleep(POLL_SECONDS)
        if handle is not None:
            handle.seek(0)
            handle.truncate()
            handle.write(holder)
            handle.flush()
        yield handle is not None
    finally:
        if handle is not None:
            handle.truncate(0)
            handle.close()


def is_training(root: str | Path | None, name: str) -> bool:
    """True while some process holds the run's lock (queued or training)."""
    path = runs_root(root) / check_name(name) / ".lock"
    if not path.exists():
        return False
    handle = _try_lock(path)
    if handle is None:
        return True
    handle.close()
    return False


def _spawn(root: Path, name: str) -> int:
    folder = root / name
    log = open(folder / "log.txt", "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "alexnet", "--runs", str(root), "train", "--resume", name, "--quiet"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        cwd=Path(__file__).resolve().parent.parent)
    log.close()
    return process.pid


def start_download(root: str | Path | None = None) -> int:
    """Download CIFAR-10 in a background process (see data.download_progress); returns its pid.

    While a download into the same folder lives, returns that one's pid instead of starting a
    second writer of the same archive.
    """
    target = download_target(root)
    target.mkdir(parents=True, exist_ok=True)
    with one_at_a_time(target / ".download.lock"):
        running = live_download(target)
        if running is not None:
            return running
        with open(target / "download.log", "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "alexnet", "download", "--data", str(target)],
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, cwd=Path(__file__).resolve().parent.parent)
        write_download_status(target, "running", pid=process.pid)  # at once: the child needs seconds to say so
    return process.pid


def start(config: TrainConfig, name: str, root: str | Path | None = None) -> str:
    """Create the run folder and start its process; returns the run name. Refuses a bad config before anything."""
    config.validate()
    folder = runs_root(root)
    writer = RunWriter.create(folder, check_name(name), config.to_dict())
    writer.set_status("queued", reason="starting")
    pid = _spawn(folder, name)
    writer.set_status("queued", reason="starting", pid=pid)
    return name


def resume(name: str, root: str | Path | None = None) -> int:
    """Continue a stopped (or killed) run from its last checkpoint; returns the pid of the process training it.

    Idempotent: while a process is starting (seconds of importing torch before it takes the run's
    lock) or training the run, returns that process's pid without spawning another, so two Resume
    clicks in a row start one process.
    """
    folder = runs_root(root)
    path = folder / check_name(name)
    load_run(path, with_metrics=False)  # says "not a run folder" before a lock file is made anywhere
    with one_at_a_time(path / ".resume.lock"):
        run = load_run(path, with_metrics=False)  # a queued or running state here has a live pid
        if run.state in ACTIVE_STATES or is_training(folder, name):
            return run.status.get("pid")
        if run.state == "finished":
            raise RuntimeError(f"run {name!r} has finished; start a new run to train more")
        checkpoint = run.status.get("checkpoint", False)
        writer = RunWriter(run.path)
        writer.set_status("queued", reason="resuming", checkpoint=checkpoint)
        try:
            pid = _spawn(folder, name)
        except OSError as err:  # else the status would name this (live) process as the run's, and block resuming
            writer.set_status(run.state, reason=f"could not start the training process: {err}", checkpoint=checkpoint)
            raise
        writer.set_status("queued", reason="resuming", pid=pid, checkpoint=checkpoint)
    return pid


def stop(name: str, root: str | Path | None = None) -> bool:
    """Ask the run's process to save a checkpoint and stop (SIGTERM). False if it was not running."""
    run = load_run(runs_root(root) / check_name(name), with_metrics=False)
    pid = run.status.get("pid")
    if run.state not in ACTIVE_STATES or not pid:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def wait(name: str, root: str | Path | None = None, timeout: float = 600.0,
         states: tuple[str, ...] = DONE_STATES) -> str:
    """Block until the run reaches one of `states` (for the command line and tests); returns the state."""
    deadline = time.monotonic() + timeout
    path = runs_root(root) / check_name(name)
    while time.monotonic() < deadline:
        state = load_run(path, with_metrics=False).state
        if state in states and not is_training(root, name):
            return state
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"run {name!r} did not reach {states} within {timeout:.0f}s")
