"""Heavy analysis in a background process, its progress, and its result kept for the next visit.

A pass over the test set or hundreds of ascent steps take seconds to minutes, so the app runs
them as `python -m alexnet analyse TASK --weights ... --data ...`, a process of its own that
writes only into the subject's analysis folder (`analysis.py`), as a training process writes
only its run folder. The tasks:

  probabilities        every test image's class probabilities (evaluation.py)
  top-images           the top nine test images of every channel of every conv layer, one pass (receptive.py)
  maximise-LAYER-N     activation maximisation of a channel; maximise-class-K of a class (visualize.py)

Beside its result, a task has `<task>.status.json` (running, with the process's id and identity
and the fraction done; finished; failed, with the reason) and `<task>.log`. `start` is idempotent:
nothing when the result is there and fresh, the running process's id while one computes it (one
process per subject and task), else a new process. A process killed midway leaves a status that
names a dead process: it reads as failed, and `start` begins again.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import analysis, evaluation, receptive, visualize
from .checkpoints import load_model
from .data import PROJECT_ROOT, load_cifar10
from .jobs import one_at_a_time
from .runs import read_json, running_pid, runs_root, write_process_status
from .train import pick_device

KINDS = ("probabilities", "top-images", "maximise")
DIED = "the analysis process ended before it finished (killed, or the server restarted); start it again"
PROGRESS_EVERY = 0.25     # seconds between progress writes


@dataclass(frozen=True)
class Task:
    """One piece of heavy analysis of a subject."""
    kind: str                                    # one of KINDS
    objective: visualize.Objective | None = None  # for "maximise"
    steps: int = visualize.STEPS                  # for "maximise"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown analysis {self.kind!r}: choose one of {', '.join(KINDS)}")
        if (self.kind == "maximise") != (self.objective is not None):
            raise ValueError("activation maximisation, and only it, needs a channel or a class")

    @property
    def name(self) -> str:
        if self.objective is not None:
            return Path(visualize.picture_name(self.objective)).stem
        return self.kind

    def result(self, subject: analysis.Subject) -> Path:
        if self.kind == "probabilities":
            return subject.path(evaluation.PROBABILITIES)
        if self.kind == "top-images":
            return subject.path(receptive.TOP_IMAGES)
        return subject.path(visualize.picture_name(self.objective))

    def arguments(self) -> list[str]:
        """Its part of the command line: `python -m alexnet analyse` + these."""
        if self.objective is None:
            return [self.kind]
        o = self.objective
        target = ["--class", str(o.klass)] if o.klass is not None else ["--layer", o.layer, "--channel", str(o.channel)]
        return [self.kind, *target, "--steps", str(self.steps)]


def _status_path(subject: analysis.Subject, task: Task) -> Path:
    return subject.path(f"{task.name}.status.json")


def is_done(subject: analysis.Subject, task: Task) -> bool:
    """Whether the task's result is there, computed from these weights and this test set."""
    return analysis.is_fresh(task.result(subject), subject)


def progress(subject: analysis.Subject, task: Task) -> dict:
    """{"state": none | running | finished | failed, "fraction": 0..1, "reason": ...}, read from files only."""
    if is_done(subject, task):
        return {"state": "finished", "fraction": 1.0}
    status = read_json(_status_path(subject, task))
    if not isinstance(status, dict):
        return {"state": "none", "fraction": 0.0}
    if status.get("state") == "running":
        if running_pid(status) is None:
            return {"state": "failed", "fraction": status.get("fraction", 0.0), "reason": DIED}
        return {"state": "running", "fraction": status.get("fraction", 0.0)}
    if status.get("state") == "failed":
        return {"state": "failed", "fraction": 0.0, "reason": status.get("reason", "unknown")}
    return {"state": "none", "fraction": 0.0}   # finished once, but for other weights or another test set


def start(subject: analysis.Subject, task: Task, root: str | Path | None = None, threads: int = 0) -> int | None:
    """Compute `task` in a background process; returns its pid, or None when the result is already there.

    While a process computes this task for this subject, returns that process's pid instead of
    starting a second one.
    """
    subject.folder.mkdir(parents=True, exist_ok=True)
    with one_at_a_time(subject.path(f".{task.name}.lock")):
        if is_done(subject, task):
            return None
        live = running_pid(read_json(_status_path(subject, task)))
        if live is not None:
            return live
        # Absolute paths: the process runs in the project's folder, whatever this one's working folder is.
        command = [sys.executable, "-m", "alexnet", "--runs", str(runs_root(root).resolve()), "analyse",
                   *task.arguments(), "--weights", str(subject.weights), "--data", str(subject.source.path.resolve())]
        if threads:
            command += ["--threads", str(threads)]
        with open(subject.path(f"{task.name}.log"), "ab") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, cwd=PROJECT_ROOT,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        write_process_status(_status_path(subject, task), "running", pid=process.pid, fraction=0.0)
    return process.pid


def _reporter(path: Path) -> Callable[[int, int], None]:
    """A progress handler that writes the fraction done into the status file, at most every PROGRESS_EVERY s."""
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < PROGRESS_EVERY:
            return
        last[0] = now
        write_process_status(path, "running", pid=os.getpid(), fraction=done / max(total, 1), done=done, total=total)
    return report


def compute(subject: analysis.Subject, task: Task, device: str = "auto") -> str:
    """Compute `task` here and keep its result (the background process's work); returns a line saying what
    was done. Refuses while another live process computes the same task."""
    status = _status_path(subject, task)
    subject.folder.mkdir(parents=True, exist_ok=True)
    with one_at_a_time(subject.path(f".{task.name}.lock")):
        other = running_pid(read_json(status))
        if other is not None and other != os.getpid():
            raise RuntimeError(f"process {other} is already computing {task.name} for {subject.weights}")
        write_process_status(status, "running", pid=os.getpid(), fraction=0.0)
    try:
        model = load_model(subject.weights, device=pick_device(device))
        report = _reporter(status)
        if task.kind == "maximise":
            result = visualize.maximize(model, task.objective, steps=task.steps, on_step=report)
            visualize.save_visualization(subject, result)
            said = f"{task.objective.describe()}: {result.start_value:.3g} -> {result.value:.3g} in {task.steps} steps"
        else:
            data = load_cifar10(subject.source)
            if task.kind == "probabilities":
                evaluation.save_probabilities(subject, evaluation.test_probabilities(model, data, on_progress=report))
            else:
                receptive.save_top_images(subject, receptive.top_images(model, data.test_x, on_progress=report))
            said = f"{task.kind} of {len(data.test_x):,} test images of {data.source.label}"
    except Exception as err:
        write_process_status(status, "failed", reason=f"{type(err).__name__}: {err}")
        raise
    write_process_status(status, "finished")
    return f"{said}, in {task.result(subject)}"


def wait(subject: analysis.Subject, task: Task, timeout: float = 600.0) -> dict:
    """Block until `task` is no longer running (for the command line, benchmarks and tests); its progress."""
    deadline = time.monotonic() + timeout
    while (state := progress(subject, task))["state"] == "running":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{task.name} did not finish within {timeout:.0f}s")
        time.sleep(0.2)
    return state
