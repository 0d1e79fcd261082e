"""Start, queue, stop and resume training processes that outlive the browser tab.

A job is `python -m alexnet train --resume NAME` in its own session, writing only its run
folder (a data-parallel run's process starts its torchrun processes once its devices are free).
File locks keep each device and each run to a single process: each device's queue
(`queues.py`) lets a run wait only for the device it trains on, and a run's own lock
(`<run>/.lock`) stops a second tab from starting the same run twice. The kernel frees both
when a process dies, however it dies.
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

from . import queues
from .config import TrainConfig
from .data import download_target, live_download, write_download_status
from .queues import try_lock
from .runs import ACTIVE_STATES, DONE_STATES, RunWriter, check_name, load_run, runs_root

POLL_SECONDS = 0.5


@contextmanager
def one_at_a_time(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`, waiting for it: one look-then-spawn at a time, across threads
    (two tabs of one server) and processes."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextmanager
def device_lock(root: str | Path | None, writer: RunWriter, want: queues.Request, stop: threading.Event
                ) -> Iterator[list[str]]:
    """Hold the run's lock, then wait in the queues of the devices it wants (state 'queued', saying whom it
    waits for); yields the devices taken once the run holds both, or [] if `stop` came first."""
    run_handle = try_lock(writer.path / ".lock")
    for _ in range(20):  # is_training() takes the lock for a moment to look: not a second trainer
        if run_handle is not None:
            break
        time.sleep(0.05)
        run_handle = try_lock(writer.path / ".lock")
    if run_handle is None:
        raise RuntimeError(f"run {writer.path.name!r} is already being trained by another process")
    waiting_for = list(want.candidates)
    try:
        with hold_device(root, want, writer.path.name, stop,
                         lambda reason: writer.set_status("queued", reason=reason, waiting_for=waiting_for)) as taken:
            if taken:
                writer.set_status("queued", reason=f"starting on {', '.join(taken)}")
            yield taken
    finally:
        run_handle.close()


@contextmanager
def hold_device(root: str | Path | None, want: queues.Request, holder: str, stop: threading.Event,
                on_wait: Callable[[str], None]) -> Iterator[list[str]]:
    """Wait in the queues of the devices `want` names, telling `on_wait` why while others hold them; yields the
    devices taken once this process holds them (named `holder` to those waiting), or [] if `stop` came first.

    A training run waits here (`device_lock`), and so does a learning-rate range test (`lr_search`).
    """
    held = None
    try:
        while not stop.is_set():
            held = queues.try_take(root, want, holder)
            if held is not None:
                break
            on_wait(queues.waiting_reason(root, want))
            time.sleep(POLL_SECONDS)
        yield held.keys if held is not None else []
    finally:
        if held is not None:
            held.release()


def is_training(root: str | Path | None, name: str) -> bool:
    """True while some process holds the run's lock (queued or training)."""
    path = runs_root(root) / check_name(name) / ".lock"
    if not path.exists():
        return False
    handle = try_lock(path)
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
    """Create the run folder and start its process; returns the run name. Refuses a bad config, or one this
    machine's devices cannot train, before anything."""
    config.validate()
    queues.request(config.device, config.processes)
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
        if run.imported:
            raise RuntimeError(f"run {name!r} was imported from an archive, which holds no training state: start "
                               "a new run like it to train more")
        queues.request(run.config.get("device", "auto"), run.config.get("processes", 1))  # this machine can do it
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
