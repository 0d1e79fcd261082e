"""Where a run stands, read from its record: its progress and time left, its best epoch, its row in the runs table.

The Train page shows these beside the run's curves; they hold no widget, so a test or the
command line gets the same text from the same run folder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from .config import TrainConfig
from .data import validation_size
from .runs import ACTIVE_STATES, Run



@dataclass(frozen=True)
class Progress:
    fraction: float         # of all planned steps, 0 to 1
    text: str               # epoch, step, speed and time left, for the progress bar
    lr: float | None        # the learning rate of the last logged step


def duration(seconds: float) -> str:
    """A duration as people read it: '42 s', '3 min 05 s', '2 h 07 min'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def last_start(run: Run) -> dict:
    """The run's latest start event (a resumed run has one per start), or {} before the process wrote one."""
    return next((e for e in reversed(run.metrics) if e.get("event") == "start"), {})


def run_progress(run: Run) -> Progress:
    """Where the run is, from its last start and step events: epoch, step, speed, time left, rate."""
    start, steps = last_start(run), run.steps()
    if not start:
        return Progress(0.0, "waiting for the training process to load the data and build the model"
                        if run.state in ACTIVE_STATES else "no training step was recorded", None)
    total = max(start["steps_per_epoch"] * start["epochs"], 1)
    if run.state == "finished":
        result = run.result or {}
        return Progress(1.0, f"finished: {result.get('epochs_run', start['epochs'])} epochs, "
                             f"{result.get('global_step', total):,} steps", steps[-1]["lr"] if steps else None)
    if not steps:
        return Progress(0.0, f"epoch 0 / {start['epochs']}: waiting for the first logged step", None)
    last = steps[-1]
    where = f"epoch {last['epoch']:.2f} / {start['epochs']} · step {last['global_step']:,} / {total:,}"
    fraction = min(last["global_step"] / total, 1.0)
    if run.state != "running":  # stopped, failed, or queued again by a resume: no speed to speak of
        return Progress(fraction, f"{run.state} at {where}", last["lr"])
    if last["global_step"] >= total:
        return Progress(1.0, f"{where} · all steps done: measuring the test accuracy", last["lr"])
    recent = [e["images_per_s"] for e in steps[-5:] if e.get("images_per_s")]
    speed = sum(recent) / len(recent) if recent else 0.0
    images_per_step = start["train_images"] / max(start["steps_per_epoch"], 1)
    left = (total - last["global_step"]) * images_per_step / speed if speed else None
    text = f"{where} · {speed:,.0f} images/s" + (f" · about {duration(left)} left" if left is not None else "")
    return Progress(fraction, text, last["lr"])


def best_epoch(run: Run) -> dict | None:
    """The epoch event with the highest finite validation accuracy, or None before the first epoch ends."""
    scored = [e for e in run.epochs() if isinstance(e.get("val_acc"), float) and math.isfinite(e["val_acc"])]
    return max(scored, key=lambda e: e["val_acc"], default=None)


def planned_steps(config: TrainConfig, train_count: int) -> tuple[int, int]:
    """The training images and steps per epoch of `config` on a dataset of `train_count` training images
    (before the validation split), as the training loop counts them."""
    images = train_count - validation_size(train_count, config.val_fraction)
    if config.max_train_images:
        images = min(images, config.max_train_images)
    return images, max(images // config.batch_size, 1)


def run_row(run: Run) -> dict:
    """The run's row in the runs table: what a narrow screen should show first comes first, the long message last.
    Test accuracy in percent; None where there is none yet."""
    acc = (run.result or {}).get("test_accuracy")
    created = run.status.get("created")
    return {
        "run": run.name, "state": run.state, "test accuracy": None if acc is None else 100 * acc,
        "epochs": f"{run.status.get('epoch', 0)} / {run.config.get('epochs', '?')}",
        "variant": run.config.get("variant"), "norm": run.config.get("norm"), "optimizer": run.config.get("optimizer"),
        "started": datetime.fromtimestamp(created) if created else None,
        "message": run.status.get("reason", "") if run.state in ("queued", "failed", "stopped") else "",
    }
