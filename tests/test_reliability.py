"""Faults a training run must survive: SIGKILL at any moment, a full disk, out of memory, data gone, leaks.

Every run here trains for real on a slice of the CIFAR-10 mini subset (60 training and 30 test
images, written in CIFAR's own batch format), small enough that a whole run takes seconds.

Killed processes are real training processes: `python -m alexnet train` started from the shell,
and, so that a dozen kills fit in seconds, the same command line (`alexnet.cli.main`) in processes
forked from a server that has imported torch once (multiprocessing's forkserver). Each is killed
with SIGKILL, which it cannot catch: nothing of its own code runs after the signal.
"""
from __future__ import annotations

import errno
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet import jobs
from alexnet import runs as run_records
from alexnet.checkpoints import load_model
from alexnet.config import TrainConfig
from alexnet.train import TrainingFailed, train
from alexnet.weight_files import load_state

REPO = Path(__file__).resolve().parent.parent
IMPORTED_IN = os.getpid()  # the forkserver's pid in its children when its preload imported this module
# An optimizer's first construction imports torch's compiler stack (1.3 s); done once here, at this module's import,
# the processes forked from the forkserver, which preloads this module, start with it.
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
STEPS_PER_EPOCH = 9           # 54 training images (60 less a 10% validation split) // 6 a batch
FLAGS = ["--batch-size", "6", "--val-fraction", "0.1", "--log-every", "1", "--threads", "1",
         "--schedule", "onecycle", "--optimizer", "adam", "--lr", "0.001"]  # calm enough not to diverge


@pytest.fixture(scope="module")
def forkserver():
    """Processes forked from one that imported torch, the library and this module once: a training process in a
    second. Python 3.11's forkserver leaves the parent's sys.path out of its preload, and skips a module it cannot
    import in silence: so it starts here, with this folder on PYTHONPATH, and a first child says the preload took."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["alexnet.cli", "alexnet.train", "test_reliability"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO / "tests"), str(REPO),
                                                                 os.environ.get("PYTHONPATH")])))
        answer = context.SimpleQueue()
        first = context.Process(target=say_where_this_module_was_imported, args=(answer,))
        first.start()
        first.join()
    assert answer.get() != first.pid, "the forkserver did not preload this module"
    return context


def say_where_this_module_was_imported(answer) -> None:
    answer.put(IMPORTED_IN)


def train_argv(runs: Path, name: str, slice_dir: Path, epochs: int) -> list[str]:
    """The command line of a new run, or of its resumption once the run's record exists."""
    if (runs / name / "config.json").exists():
        return ["--runs", str(runs), "train", "--resume", name, "--quiet"]
    return ["--runs", str(runs), "train", "--name", name, "--data-dir", str(slice_dir), "--epochs", str(epochs),
            *FLAGS, "--quiet"]


def run_cli(argv: list[str], kill_at: str | None = None) -> None:
    """A training process's body: `python -m alexnet ARGV`, killed by SIGKILL at `kill_at` if given."""
    if kill_at:
        KILL_POINTS[kill_at]()
    sys.exit(__import__("alexnet.cli", fromlist=["main"]).main(argv))


def fork_cli(forkserver, argv: list[str], kill_at: str | None = None):
    process = forkserver.Process(target=run_cli, args=(argv, kill_at))
    process.start()
    return process


# ---- where a process can be killed: each patches the library in the forked child only ----

def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _on_call(module, name: str, call: int) -> None:
    """Kill the process at the `call`-th call of module.name, before that call does anything."""
    original, count = getattr(module, name), [0]

    def wrapper(*args, **kwargs):
        count[0] += 1
        if count[0] == call:
            _die()
        return original(*args, **kwargs)
    setattr(module, name, wrapper)


def _kill_in_rename_of_second_state() -> None:
    """The checkpoint's temporary file is written and fsynced, the rename has not happened."""
    original, count = os.replace, [0]

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("state.pt"):
            count[0] += 1
            if count[0] == 2:
                _die()
        return original(src, dst, *args, **kwargs)
    os.replace = replace


def _kill_once_the_status_would_say_checkpoint() -> None:
    from alexnet.runs import RunWriter

    original = RunWriter.set_status

    def set_status(self, state, **extra):
        if state == "running" and extra.get("checkpoint"):
            _die()
        return original(self, state, **extra)
    RunWriter.set_status = set_status


def _kill_in_the_middle_of_a_line(step: int) -> None:
    from alexnet.runs import RunWriter

    original = RunWriter.log

    def log(self, event):
        if event.get("event") == "step" and event["global_step"] == step:
            line = (json.dumps(event) + "\n").encode()
            with open(self.path / "metrics.jsonl", "ab") as metrics:  # appends after every line log() flushed
                metrics.write(line[:len(line) // 2])
            _die()
        return original(self, event)
    RunWriter.log = log


def _train_module():
    import alexnet.train
    return alexnet.train


KILL_POINTS = {
    "after epoch 1 is logged, before its checkpoint": lambda: _on_call(_train_module(), "save_state", 1),
    "between the state's temporary file and its rename": _kill_in_rename_of_second_state,
    "between the state and the weights": lambda: _on_call(_train_module(), "save_weights", 2),
    "after a checkpoint, before the status says so": _kill_once_the_status_would_say_checkpoint,
    "after the end is logged, before the result": lambda: _on_call(
        __import__("alexnet.runs", fromlist=["RunWriter"]).RunWriter, "write_result", 1),
    "half way through a line, before any checkpoint": lambda: _kill_in_the_middle_of_a_line(4),
    "half way through a line, after a checkpoint": lambda: _kill_in_the_middle_of_a_line(STEPS_PER_EPOCH + 4),
}


# ---- what must hold after any kill ----

def line_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def check_record_after_a_kill(folder: Path) -> dict:
    """What must hold whenever a training process has just died, however it died; returns what was found."""
    raw = (folder / "metrics.jsonl").read_bytes() if (folder / "metrics.jsonl").exists() else b""
    *complete, tail = raw.split(b"\n")
    parsed = [json.loads(line) for line in complete]                     # every whole line parses
    events = run_records.read_metrics(folder / "metrics.jsonl")
    assert events == parsed, "the reader's view is every whole line and nothing else"
    if tail:
        with pytest.raises(json.JSONDecodeError):
            json.loads(tail)                                                # only a line cut short is left out
    assert run_records.iter_new_events(folder, 0)[0] == parsed               # the live view reads the same
    epochs = [e["epoch"] for e in events if e["event"] == "epoch"]
    assert epochs == list(range(1, len(epochs) + 1)), epochs                 # each epoch once, in order
    steps = [e["global_step"] for e in events if e["event"] == "step"]
    assert steps == list(range(1, len(steps) + 1)), "no step lost or repeated in the record"

    run = run_records.load_run(folder)
    assert run.state in ("stopped", "failed", "finished"), run.status       # never 'running' once it is dead
    position = None
    if (folder / "state.pt").exists():
        state = load_state(folder / "state.pt")                              # whole, and read without pickle
        position = state["position"]
        assert set(state) >= {"model", "optimizer", "scheduler", "position"}
        assert load_model(folder / "weights.safetensors").variant == "cifar"
        assert run.state in ("stopped", "finished"), f"a run with a checkpoint reads as resumable: {run.status}"
        if run.state == "stopped":
            assert "resume" in run.status["reason"]
    else:
        assert run.state == "failed", run.status
    return {"state": run.state, "epochs": len(epochs), "steps": len(steps), "partial_line": bool(tail),
            "checkpoint_epoch": None if position is None else position["epoch"]}


def check_finished_record(folder: Path, epochs: int) -> run_records.Run:
    run = run_records.load_run(folder)
    assert run.state == "finished", run.status
    assert [e["epoch"] for e in run.epochs()] == list(range(1, epochs + 1))
    assert [e["global_step"] for e in run.steps()] == list(range(1, epochs * STEPS_PER_EPOCH + 1))
    assert [e["event"] for e in run.metrics].count("end") == 1
    assert run.result["epochs_run"] == epochs and len(run.result["predictions"]) == 30
    assert not list(folder.glob(".*.tmp")), "temporary files of interrupted checkpoints are cleaned up"
    return run


def test_sigkill_at_random_moments_leaves_a_readable_resumable_record(slice_dir, forkserver, tmp_path):
    """A real `python -m alexnet train`, killed during its start; then forked copies killed at random moments."""
    epochs, rng = 4, random.Random(7)
    runs, name = tmp_path / "runs", "chaos"
    folder = runs / name
    whole = tmp_path / "whole"      # the same run, never interrupted, trained meanwhile on the other core
    reference = fork_cli(forkserver, ["--runs", str(whole), *train_argv(whole, name, slice_dir, epochs)[2:]])
    first = subprocess.Popen([sys.executable, "-m", "alexnet", *train_argv(runs, name, slice_dir, epochs)],
                             cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (folder / "status.json").exists():                  # torch is imported, the run's folder made
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read().decode()
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.5))                              # taking the locks, reading data, building
    first.kill()
    first.wait()
    seen = [("python -m alexnet, while starting", check_record_after_a_kill(folder))]

    for kill in range(8):
        lines = line_count(folder / "metrics.jsonl")
        process = fork_cli(forkserver, train_argv(runs, name, slice_dir, epochs))
        wanted, started = lines + rng.randint(1, STEPS_PER_EPOCH + 2), time.monotonic()
        while line_count(folder / "metrics.jsonl") < wanted and process.is_alive() and time.monotonic() - started < 60:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.15))                         # a step, a validation, a checkpoint, the test set
        if not process.is_alive():
            assert process.exitcode == 0
            break                                                   # it finished before this kill
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        assert process.exitcode == -signal.SIGKILL
        seen.append((f"fork {kill + 1}, {wanted - lines} lines in", check_record_after_a_kill(folder)))
    print(*seen, sep="\n")
    assert len({s[1]["checkpoint_epoch"] for s in seen}) >= 3, "the kills fell at several stages of the run"

    last = subprocess.run([sys.executable, "-m", "alexnet", *train_argv(runs, name, slice_dir, epochs)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert last.returncode == 0, last.stderr
    run = check_finished_record(folder, epochs)

    # Resuming at a checkpoint continues exactly: the same numbers as the uninterrupted run.
    reference.join(timeout=120)
    assert reference.exitcode == 0
    uninterrupted = check_finished_record(whole / name, epochs)
    assert run.result["predictions"] == uninterrupted.result["predictions"]
    assert [e["val_loss"] for e in run.epochs()] == [e["val_loss"] for e in uninterrupted.epochs()]


@pytest.mark.parametrize("moment", list(KILL_POINTS))
def test_sigkill_at_each_critical_moment_leaves_a_resumable_record(moment, slice_dir, forkserver, tmp_path):
    epochs, runs, name = 2, tmp_path, "run"
    folder = runs / name
    killed = fork_cli(forkserver, train_argv(runs, name, slice_dir, epochs), kill_at=moment)
    killed.join(timeout=120)
    assert killed.exitcode == -signal.SIGKILL, "the process died at that moment, not before or after"
    found = check_record_after_a_kill(folder)
    status = json.loads((folder / "status.json").read_text())
    state = load_state(folder / "state.pt") if (folder / "state.pt").exists() else None
    if moment == "after epoch 1 is logged, before its checkpoint":
        assert found["epochs"] == 1 and state is None and found["state"] == "failed"
    elif moment == "between the state's temporary file and its rename":
        assert state["position"]["epoch"] == 1 and len(list(folder.glob(".state.pt.*.tmp"))) == 1
    elif moment == "between the state and the weights":
        assert state["position"]["epoch"] == 2
        weights = load_model(folder / "weights.safetensors").state_dict()
        assert not torch.equal(weights["features.0.weight"], state["model"]["features.0.weight"])  # epoch 1's
    elif moment == "after a checkpoint, before the status says so":
        assert status["state"] == "running" and not status["checkpoint"]
        assert found["state"] == "stopped"                           # the checkpoint file itself counts
    elif moment == "after the end is logged, before the result":
        assert found["state"] == "stopped" and not (folder / "result.json").exists()
        assert run_records.load_run(folder).metrics[-1]["event"] == "end"
    else:
        assert found["partial_line"]

    resumed = fork_cli(forkserver, train_argv(runs, name, slice_dir, epochs))
    resumed.join(timeout=120)
    assert resumed.exitcode == 0, (folder / "status.json").read_text()
    check_finished_record(folder, epochs)


# ---- a full disk, an unwritable runs folder ----

pytestmark = pytest.mark.usefixtures("one_thread")


def config_for(slice_dir: Path, **changes) -> TrainConfig:
    values = dict(batch_size=6, val_fraction=0.1, log_every=1, schedule="onecycle", optimizer="adam", lr=0.001,
                  epochs=3, threads=1, data_dir=str(slice_dir))
    return TrainConfig(**{**values, **changes})


def test_a_full_disk_fails_the_run_clearly_and_keeps_the_last_checkpoint(slice_dir, tmp_path, monkeypatch):
    config = config_for(slice_dir)
    folder = run_records.RunWriter.create(tmp_path, "full", config.to_dict()).path
    real_save, files = torch.save, []

    def save_on_a_disk_that_fills_up(obj, path, *args, **kwargs):
        files.append(path)
        real_save(obj, path, *args, **kwargs)
        if len(files) > 1:                       # the second checkpoint: the disk fills half way through
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(torch, "save", save_on_a_disk_that_fills_up)
    with pytest.raises(TrainingFailed) as failure:
        train(config, folder)
    message = str(failure.value)
    assert "cannot write the checkpoint" in message and "No space left on device" in message
    assert "the previous checkpoint is kept" in message and "resume" in message
    run = run_records.load_run(folder)
    assert run.state == "failed" and run.status["reason"] == message and run.status["checkpoint"]
    assert Path(files[1]).parent == folder and not Path(files[1]).exists()       # the half-written file is gone
    assert load_state(folder / "state.pt")["position"]["epoch"] == 1             # the old one is whole
    assert load_model(folder / "weights.safetensors").variant == "cifar"
    assert [e["epoch"] for e in run.epochs()] == [1, 2]                           # epoch 2 ran, was not saved

    monkeypatch.undo()                                                            # space is freed: resume
    train(config, folder, resume=True)
    check_finished_record(folder, 3)


def test_a_disk_refusing_every_write_still_reports_why_the_checkpoint_failed(slice_dir, tmp_path, monkeypatch):
    """When the status cannot be written either, the error raised is still the one that says what happened."""
    config = config_for(slice_dir, epochs=2)
    folder = run_records.RunWriter.create(tmp_path, "full", config.to_dict()).path
    real_fsync = os.fsync

    def fill_the_disk(event):
        if event["event"] == "epoch" and event["epoch"] == 2:
            def fsync(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            monkeypatch.setattr(os, "fsync", fsync)

    with pytest.raises(TrainingFailed, match="cannot write the checkpoint .*No space left on device"):
        train(config, folder, on_event=fill_the_disk)
    os.fsync = real_fsync
    assert json.loads((folder / "status.json").read_text())["state"] == "running"  # stale, but whole
    assert load_state(folder / "state.pt")["position"]["epoch"] == 1
    assert not list(folder.glob(".*.tmp"))


def test_an_unwritable_runs_folder_is_named_before_anything_starts(slice_dir, tmp_path):
    not_a_folder = tmp_path / "runs"
    not_a_folder.write_text("a file where the runs folder should be")
    with pytest.raises(NotADirectoryError, match=f"the runs folder {not_a_folder} is a file"):
        jobs.start(config_for(slice_dir), "x", not_a_folder)
    assert not_a_folder.read_text() == "a file where the runs folder should be"


# ---- out of memory, a dataset that goes away ----

def test_out_of_memory_ends_the_run_as_failed_with_what_to_change(slice_dir, tmp_path, monkeypatch):
    import alexnet.train as training

    real_build = training.build

    def build_a_model_that_runs_out(*args, **kwargs):
        model, calls = real_build(*args, **kwargs), [0]

        def forward(module, inputs):
            if module.training:
                calls[0] += 1
                if calls[0] == STEPS_PER_EPOCH + 3:                 # in epoch 2, after the first checkpoint
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        model.register_forward_pre_hook(forward)
        return model

    monkeypatch.setattr(training, "build", build_a_model_that_runs_out)
    config = config_for(slice_dir)
    folder = run_records.RunWriter.create(tmp_path, "oom", config.to_dict()).path
    with pytest.raises(torch.OutOfMemoryError):
        train(config, folder)
    run = run_records.load_run(folder)
    assert run.state == "failed" and run.status["checkpoint"]
    assert run.status["reason"].startswith("the device ran out of memory (CUDA out of memory. Tried to allocate")
    assert "lower the batch size (now 6)" in run.status["reason"]
    assert load_state(folder / "state.pt")["position"]["epoch"] == 1


def test_a_dataset_deleted_mid_run_does_not_stop_it_and_one_missing_at_start_fails_naming_it(slice_dir, tmp_path):
    """The trainer reads the whole dataset into memory when it starts, so only a dataset missing then matters."""
    copy = Path(shutil.copytree(slice_dir, tmp_path / "data"))
    going, missing = tmp_path / "going", tmp_path / "missing"
    jobs.start(config_for(copy, epochs=3), "going", going)
    jobs.start(config_for(tmp_path / "nowhere"), "gone", missing)
    deadline = time.monotonic() + 120
    while not any(e["event"] == "step" for e in run_records.read_metrics(going / "going" / "metrics.jsonl")):
        assert time.monotonic() < deadline, run_records.load_run(going / "going").status
        time.sleep(0.1)
    shutil.rmtree(copy)
    assert jobs.wait("gone", missing, timeout=120) == "failed"
    reason = run_records.load_run(missing / "gone").status["reason"]
    assert f"the dataset folder {tmp_path / 'nowhere'} does not exist" in reason
    assert jobs.wait("going", going, timeout=120) == "finished"
    check_finished_record(going / "going", 3)


# ---- memory ----

def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_stays_flat_over_200_uploads_and_predictions():
    """Decoding and classifying an 800x600 photo 200 times (and refusing a bomb every tenth time) holds nothing."""
    import io
    import gc

    from PIL import Image

    from alexnet.images import ImageError, load_image
    from alexnet.predict import DEMO_WEIGHTS, predict

    model = load_model(DEMO_WEIGHTS)
    noise = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=90)
    photo = buffer.getvalue()
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, "PNG")            # 400 megapixels in a few kB
    bomb = buffer.getvalue()

    def upload(i: int) -> None:
        if i % 10 == 0:
            with pytest.raises(ImageError):
                load_image(bomb, "bomb.png")
        predict(model, load_image(photo, f"photo-{i}.jpg"))

    for i in range(20):
        upload(i)
    gc.collect()
    before = resident_bytes()
    for i in range(200):
        upload(i)
    gc.collect()
    grown = resident_bytes() - before
    assert grown < 25 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MB over 200 uploads"
