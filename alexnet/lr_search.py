"""Range tests kept once per config, run in the background: the Train page's finder and a tuned experiment's search.

Each test lives in `<runs>/.lr-finder/<key>/`, the key a hash of what decides its steps (the config
as `lr_finder.range_test_config` puts it, the dataset's folder, the range and budget):

  request.json   the config and settings the test runs with
  status.json    queued | running | finished | failed | stopped, with the step reached, the reason,
                 and the pid of the process that runs it (with its identity, as a run's status)
  result.json    the curve and the suggestion (`RangeTest.to_dict`), written once, atomically
  log.txt        the background process's output

Whoever runs a key's test holds `<key>/.lock` while it does: a second process asking for the same
test (another tab, a second experiment, a page reloaded) waits for that lock and reads the result,
so a test runs once. A test waits in its device's queue as a training run does (`jobs.hold_device`, `queues`):
"auto" and "cuda" take the first free GPU, and the test runs on the device it took.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

from . import jobs, queues
from .config import TrainConfig
from .data import batches_folder, resolve_dataset
from .lr_finder import RangeTest, RangeTestSettings, range_test, range_test_config
from .runs import ACTIVE_STATES, atomic_write_json, pid_alive, read_json, runs_root, write_process_status

__all__ = ["FOLDER", "cache_key", "cached", "status", "start", "ensure", "run_job", "RangeTestFailed"]

FOLDER = ".lr-finder"
PROGRESS_EVERY = 2   # steps between status writes

Progress = Callable[[dict], None]


class RangeTestFailed(RuntimeError):
    """The test could not run (no dataset, a bad config, a crash); the message says why."""


def cache_key(config: TrainConfig, settings: RangeTestSettings) -> str:
    """The same key for two configs whose range tests take the same steps on the same data."""
    tested = range_test_config(config, settings).to_dict()
    folder = batches_folder(config.data_dir) if config.data_dir else resolve_dataset(None).path
    tested["data_dir"] = str(folder or config.data_dir)  # a folder without batches: the test says so
    text = json.dumps({"config": tested, "settings": asdict(settings)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _folder(root: str | Path | None, key: str) -> Path:
    return runs_root(root) / FOLDER / key


def cached(root: str | Path | None, config: TrainConfig, settings: RangeTestSettings) -> RangeTest | None:
    """The kept result of this test, if it has run."""
    return _result(_folder(root, cache_key(config, settings)))


def _result(folder: Path) -> RangeTest | None:
    data = read_json(folder / "result.json")
    return RangeTest.from_dict(data) if data else None


def status(root: str | Path | None, config: TrainConfig, settings: RangeTestSettings) -> dict[str, Any]:
    """Where this test is: {'state': 'none' | 'queued' | 'running' | 'finished' | 'failed' | 'stopped', ...};
    'step' and 'steps' while it runs, 'reason' when it waits or failed, 'result' (a RangeTest) once finished.

    A queued or running test whose process is gone reads as failed, with that said.
    """
    folder = _folder(root, cache_key(config, settings))
    result = _result(folder)
    if result is not None:
        return {"state": "finished", "result": result, "step": result.steps, "steps": settings.steps}
    state = read_json(folder / "status.json") or {"state": "none"}
    if state["state"] in ACTIVE_STATES and not pid_alive(state.get("pid"), state.get("pid_identity")):
        state = {**state, "state": "failed", "reason": "the range test's process ended without saying why "
                                                       "(killed or crashed)"}
    return {"steps": settings.steps, "step": 0, **state}


def start(root: str | Path | None, config: TrainConfig, settings: RangeTestSettings) -> str:
    """Run this test in a background process unless it has run or is running; returns its key at once.

    Two clicks, two tabs or a reload in between start one process: the look and the spawn happen
    under one lock, and a live process's test is not started again.
    """
    config.validate()
    settings.validate()
    key = cache_key(config, settings)
    folder = _folder(root, key)
    folder.mkdir(parents=True, exist_ok=True)
    with jobs.one_at_a_time(folder / ".start.lock"):
        current = status(root, config, settings)
        if current["state"] == "finished" or current["state"] in ACTIVE_STATES:
            return key
        atomic_write_json(folder / "request.json", {"config": config.to_dict(), "settings": asdict(settings)})
        with open(folder / "log.txt", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "alexnet", "--runs", str(runs_root(root)), "lr-find", "--job", key],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=Path(__file__).resolve().parent.parent)
        # At once, under the start lock: the child needs seconds to say so, and says it under this lock too.
        write_process_status(folder / "status.json", "queued", pid=process.pid, step=0, steps=settings.steps,
                             reason="starting")
    return key


def run_job(root: str | Path | None, key: str, stop: threading.Event | None = None) -> RangeTest:
    """What the background process of `start` does: the test of `<key>/request.json`, kept in its folder."""
    folder = _folder(root, key)
    request = read_json(folder / "request.json")
    if not request:
        raise FileNotFoundError(f"no range test {key!r} was requested in {folder.parent}")
    config = TrainConfig.from_dict(request["config"])
    settings = RangeTestSettings(**request["settings"])
    return ensure(root, config, settings, stop)


def ensure(root: str | Path | None, config: TrainConfig, settings: RangeTestSettings,
           stop: threading.Event | None = None, on_progress: Progress | None = None) -> RangeTest:
    """This test's result: kept, or run in this process now (waiting first for another process that runs it).

    `on_progress` hears the status as it changes (waiting for the device, each few steps). Raises
    RangeTestFailed when the test cannot run, and InterruptedError when `stop` ends it before its end.
    """
    config.validate()
    settings.validate()
    folder = _folder(root, cache_key(config, settings))
    folder.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    with jobs.one_at_a_time(folder / ".lock"):  # one test of a key at a time, across processes
        kept = _result(folder)
        if kept is not None:
            return kept
        return _run_held(root, folder, config, settings, stop, on_progress)


def _run_held(root: str | Path | None, folder: Path, config: TrainConfig, settings: RangeTestSettings,
              stop: threading.Event, on_progress: Progress | None) -> RangeTest:
    """The test, its status kept as it goes, by the process that holds the key's lock."""
    def say(state: str, **extra: Any) -> None:
        write_process_status(folder / "status.json", state, pid=os.getpid(), steps=settings.steps, **extra)
        if on_progress:
            on_progress({"state": state, "steps": settings.steps, **extra})

    def stepped(step: int, rate: float, loss: float, smoothed: float) -> None:
        if step % PROGRESS_EVERY == 0 or step == settings.steps:
            say("running", step=step, rate=rate, loss=smoothed)

    holder = f"a learning-rate range test ({config.variant}, {config.norm})"
    with jobs.one_at_a_time(folder / ".start.lock"):  # after the starter's own status write
        say("queued", step=0, reason="waiting for the device")
    try:
        want = queues.request(config.device)  # one process, whatever the run's processes
        with jobs.hold_device(root, want, holder, stop, lambda reason: say("queued", step=0, reason=reason)) as held:
            if not held:
                raise InterruptedError("stopped while waiting for the device")
            say("running", step=0)
            result = range_test(replace(config, device=held[0]), settings, on_step=stepped, stop=stop)
    except InterruptedError as err:
        say("stopped", step=0, reason=str(err))
        raise
    except Exception as err:
        say("failed", step=0, reason=f"{type(err).__name__}: {err}" if not isinstance(err, ValueError) else str(err))
        raise RangeTestFailed(f"the range test could not run: {err}") from err
    if result.ended == "stopped":
        say("stopped", step=result.steps, reason=result.stopped)
        raise InterruptedError(result.stopped)
    atomic_write_json(folder / "result.json", result.to_dict())
    say("finished", step=result.steps)
    return result
