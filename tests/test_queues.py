"""One queue per device: runs on different devices train at once, runs on one device take turns, "auto" takes the
first free GPU, a data-parallel run takes its GPUs all at once, and an experiment spread over two devices gives
what its runs give one by one.

Real processes and real file locks. A queue is keyed by the device's name and never touches the device, so on
this CPU-only machine `cuda:0` and `cuda:1` are two real queues (tests/queued_process.py waits in one, as
`python -m alexnet train` does) whose runs train on the CPU.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alexnet import experiment, jobs, queues
from alexnet.runs import RunWriter, load_run

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "queued_process.py"


def spawn(root: Path, name: str, device: str, *mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), str(root), name, device, *mode], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)


def finish(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err


def held(root: Path, name: str) -> tuple[float, float]:
    record = json.loads((root / name / "held.json").read_text())
    return record["began"], record["ended"]


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


# ---------------------------------------------------------------- which queues a run waits in

def test_each_device_is_a_queue_and_auto_may_take_any_gpu():
    assert queues.request("auto", gpus=0, mps=False) == queues.Request(("cpu",))
    assert queues.request("auto", gpus=0, mps=True) == queues.Request(("mps",))
    assert queues.request("auto", gpus=3) == queues.Request(("cuda:0", "cuda:1", "cuda:2"), 1)
    assert queues.request("cuda", gpus=2) == queues.request("auto", gpus=2)
    assert queues.request("cuda:1", gpus=2) == queues.Request(("cuda:1",))
    assert queues.request("cpu", gpus=8) == queues.Request(("cpu",))  # the CPU never waits for a GPU
    assert queues.request("cuda", processes=4, gpus=8) == queues.Request(tuple(f"cuda:{i}" for i in range(8)), 4)
    assert queues.request("cpu", processes=2, gpus=0) == queues.Request(("cpu",))  # gloo shares the CPU's queue
    for device, processes, gpus, message in (("cuda", 1, 0, "no CUDA GPU is available"),
                                             ("cuda:2", 1, 2, "there is no GPU 'cuda:2'"),
                                             ("cuda", 3, 2, "3 data-parallel processes need 3 GPUs"),
                                             ("cuda:0", 2, 2, "takes whole GPUs"),
                                             ("tpu", 1, 0, "unknown device")):
        with pytest.raises(ValueError, match=message):
            queues.request(device, processes, gpus=gpus, mps=False)


def test_auto_takes_the_first_free_gpu_and_a_data_parallel_run_all_its_gpus_or_none(tmp_path):
    busy = queues.try_take(tmp_path, queues.Request(("cuda:0",)), "busy-run")
    try:
        any_gpu = queues.request("auto", gpus=2)
        got = queues.try_take(tmp_path, any_gpu, "new-run")
        assert got.keys == ["cuda:1"]
        assert queues.holder(tmp_path, "cuda:1") == "new-run" and queues.holder(tmp_path, "cuda:0") == "busy-run"
        assert queues.try_take(tmp_path, any_gpu, "third-run") is None  # both busy: it waits
        assert queues.waiting_reason(tmp_path, any_gpu) == ("waiting for a free device among cuda:0, cuda:1: "
                                                            "busy-run on cuda:0, new-run on cuda:1 are training")
        got.release()
        assert queues.holder(tmp_path, "cuda:1") is None
        # Two GPUs of three at once: with only cuda:2 free the run takes nothing, not the one free GPU.
        more = queues.try_take(tmp_path, queues.Request(("cuda:1",)), "other-run")
        pair = queues.request("cuda", processes=2, gpus=3)
        assert queues.try_take(tmp_path, pair, "ddp-run") is None
        assert queues.holder(tmp_path, "cuda:2") is None
        more.release()
        taken = queues.try_take(tmp_path, pair, "ddp-run")
        assert taken.keys == ["cuda:1", "cuda:2"]
        taken.release()
    finally:
        busy.release()


def wait_until(condition, message: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, message
        time.sleep(0.05)
    return found


def release(root: Path, name: str) -> None:
    (root / name / "release").touch()


def test_runs_on_two_devices_train_at_once(tmp_path):
    for name in ("a", "b"):
        RunWriter.create(tmp_path, name, {})
    processes = [spawn(tmp_path, "a", "cuda:0", "hold"), spawn(tmp_path, "b", "cuda:1", "hold")]
    try:
        wait_until(lambda: queues.holder(tmp_path, "cuda:0") == "a" and queues.holder(tmp_path, "cuda:1") == "b",
                   "the two runs never held their devices at the same time")
    finally:
        for name in ("a", "b"):
            release(tmp_path, name)
        finish(processes)
    assert overlap(held(tmp_path, "a"), held(tmp_path, "b")) > 0


def test_runs_on_one_device_take_turns_and_the_waiting_one_says_for_whom(tmp_path):
    for name in ("a", "b"):
        RunWriter.create(tmp_path, name, {})
    processes = [spawn(tmp_path, "a", "cuda:0", "hold"), spawn(tmp_path, "b", "cuda:0", "hold")]
    try:
        def one_holds_one_waits():
            first = queues.holder(tmp_path, "cuda:0")
            other = {"a": "b", "b": "a"}.get(first)
            return other and load_run(tmp_path / other).status.get("reason", "").startswith("waiting") and first
        first = wait_until(one_holds_one_waits, "no process took the device while the other waited")
        waiting = {"a": "b", "b": "a"}[first]
        status = load_run(tmp_path / waiting).status
        assert status["state"] == "queued" and status["waiting_for"] == ["cuda:0"]
        assert status["reason"] == f"waiting for the device cuda:0: {first} is training"
        shown = queues.device_queues(tmp_path, [load_run(tmp_path / n) for n in "ab"], ["cpu", "cuda:0", "cuda:1"])
        assert [(q.device, q.training, q.waiting) for q in shown] == [
            ("cpu", None, []), ("cuda:0", first, [waiting]), ("cuda:1", None, [])]
        time.sleep(1.0)  # long enough for the waiting one to have taken the device, were it able to
        assert queues.holder(tmp_path, "cuda:0") == first
        release(tmp_path, first)
        wait_until(lambda: queues.holder(tmp_path, "cuda:0") == waiting, "the waiting run never took the device")
    finally:
        for name in ("a", "b"):
            release(tmp_path, name)
        finish(processes)
    assert overlap(held(tmp_path, "a"), held(tmp_path, "b")) < 0  # one after the other


# ---------------------------------------------------------------- an experiment over two devices

def test_an_experiment_spread_over_two_devices_gives_the_results_of_one_by_one(short_test_dir, tmp_path):
    """One by one: the product's path, `experiment.launch` through `jobs.start`, every run in the CPU's queue.
    Spread: the same plan, each run in a queue of its own (cuda:0, cuda:1), so both train at once."""
    plan = experiment.ExperimentPlan(seeds=1, epochs=1, max_train_images=256, batch_size=64, threads=1,
                                     log_every=2, data_dir=str(short_test_dir), recipe="same")  # no search: runs alone
    one_by_one, spread = tmp_path / "one-by-one", tmp_path / "spread"
    sequential = experiment.wait(experiment.launch(plan, one_by_one, name="pair"), one_by_one, timeout=600, poll=0.5)

    devices, processes = iter(["cuda:0", "cuda:1"]), []

    def start_in_own_queue(config, name, root):
        RunWriter.create(root, name, config.to_dict())
        processes.append(spawn(root, name, next(devices), "train"))
        return name

    record = experiment.launch(plan, spread, name="pair", start=start_in_own_queue)
    finish(processes)
    together = experiment.wait(record, spread, timeout=60, poll=0.5)

    def span(run) -> tuple[float, float]:
        start = next(e for e in run.metrics if e["event"] == "start")
        return start["time"], run.status["updated"]

    runs_a = {r.name: r for r in sequential.runs}
    runs_b = {r.name: r for r in together.runs}
    assert sorted(runs_a) == sorted(runs_b) == ["pair-bn-s0", "pair-lrn-s0"]
    assert overlap(*(span(r) for r in runs_b.values())) > 0          # side by side
    assert overlap(*(span(r) for r in runs_a.values())) < 0          # one after the other
    for name, a in runs_a.items():
        b = runs_b[name]
        assert a.state == b.state == "finished"
        assert b.result["test_accuracy"] == a.result["test_accuracy"]
        assert b.result["predictions"] == a.result["predictions"]
        assert [e["loss"] for e in b.steps()] == [e["loss"] for e in a.steps()]
    assert together.verdict.text == sequential.verdict.text
    assert together.pairs == sequential.pairs


def test_a_run_this_machine_cannot_train_is_refused_before_a_process_starts(tmp_path):
    from alexnet.config import TrainConfig

    config = TrainConfig(device="cuda:999")  # a valid config, for a machine with a thousand GPUs
    with pytest.raises(ValueError, match="GPU"):
        jobs.start(config, "big-machine", tmp_path)
    assert not (tmp_path / "big-machine").exists()
    writer = RunWriter.create(tmp_path, "big-machine", config.to_dict())  # as if shared from that machine
    writer.set_status("stopped", checkpoint=True)
    with pytest.raises(ValueError, match="GPU"):
        jobs.resume("big-machine", tmp_path)
    assert load_run(writer.path).state == "stopped" and not (writer.path / "log.txt").exists()  # nothing started
