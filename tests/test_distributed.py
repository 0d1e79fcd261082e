"""Data-parallel runs with gloo on the CPU: `torchrun --nproc_per_node=2 -m alexnet train` by hand, and a run with
processes=2 started as the Train page starts runs. Records written once, same accuracy, stop and resume."""
import os
import subprocess
import sys
import time

from alexnet.runs import ACTIVE_STATES, load_run

from conftest import THREADS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = ["--epochs", "2", "--max-train-images", "1024", "--batch-size", "64", "--quiet", "--log-every", "4"]


def _train(runs, name, mini_dir, processes):
    """A run of RECIPE in `processes` processes that share two cores."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] \
        if processes > 1 else [sys.executable]  # standalone: a free port, as the app takes
    done = subprocess.run([*launcher, "-m", "alexnet", "--runs", str(runs), "train", "--name", name,
                           "--data-dir", str(mini_dir), *RECIPE, "--threads", str(max(1, THREADS // processes))],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    return load_run(runs / name)


def test_two_gloo_processes_train_like_one(mini_dir, tmp_path):
    one = _train(tmp_path, "one", mini_dir, 1)
    two = _train(tmp_path, "two", mini_dir, 2)
    assert two.state == "finished" and two.metrics[0]["processes"] == 2
    # Written once: every step and epoch appears a single time, in order
    assert [e["epoch"] for e in two.epochs()] == [1, 2]
    steps = [e["global_step"] for e in two.steps()]
    assert steps == sorted(set(steps)) and steps[-1] == 2 * (1024 // 64)
    assert [e["global_step"] for e in one.steps()] == steps
    # Same global batch and schedule: the same accuracy within the noise of 1,017 test images. After 32 steps the
    # pair scored 0.24/0.23, 0.21/0.23, 0.21/0.22 (seeds 0-2); chance is 0.10, and 0.15 is 5 standard errors above it
    a, b = one.result["test_accuracy"], two.result["test_accuracy"]
    assert a > 0.15 and b > 0.15, (a, b)
    assert abs(a - b) < 0.08, (a, b)


def test_a_data_parallel_run_started_as_the_train_page_starts_one_stops_resumes_and_records_once(mini_dir, runs_dir):
    """`jobs.start` with processes=2 (the Train page's "all GPUs", here on the CPU with gloo): one process waits in
    the CPU's queue, then starts two under torchrun; Stop reaches both through the main one, Resume starts them
    again, and the run folder reads as one run."""
    from alexnet import jobs, provenance, queues
    from alexnet.config import TrainConfig

    config = TrainConfig(variant="cifar", norm="bn", epochs=2, batch_size=64, max_train_images=1024, threads=1,
                         log_every=1, schedule="constant", lr=0.01, device="cpu", processes=2, data_dir=str(mini_dir))
    jobs.start(config, "pair", runs_dir)
    deadline = time.monotonic() + 300
    while not load_run(runs_dir / "pair").steps():
        assert time.monotonic() < deadline and load_run(runs_dir / "pair").state in ACTIVE_STATES, \
            load_run(runs_dir / "pair").status
        time.sleep(0.1)
    assert queues.holder(runs_dir, "cpu") == "pair"  # the launcher holds the CPU's queue for both processes
    assert jobs.stop("pair", runs_dir)
    assert jobs.wait("pair", runs_dir, timeout=120) == "stopped"
    stopped = load_run(runs_dir / "pair")
    assert stopped.status["checkpoint"] and stopped.steps()[-1]["global_step"] < 2 * 16
    assert queues.holder(runs_dir, "cpu") is None

    jobs.resume("pair", runs_dir)
    assert jobs.wait("pair", runs_dir, timeout=300) == "finished"
    run = load_run(runs_dir / "pair")
    starts = [e for e in run.metrics if e["event"] == "start"]
    assert [(s["processes"], s["resumed"]) for s in starts] == [(2, False), (2, True)]
    assert [e["epoch"] for e in run.epochs()] == [1, 2]
    steps = [e["global_step"] for e in run.steps()]
    assert steps == list(range(1, 2 * 16 + 1))  # every step once, in order, across the stop
    assert run.epochs()[-1]["train_loss"] < run.steps()[0]["loss"] and run.result["test_images"] == 1017
    sessions = provenance.sessions(run.path)
    assert [(s["processes"], s["resumed"]) for s in sessions] == [(2, False), (2, True)]
    log = (run.path / "log.txt").read_text()
    assert log.count("run pair:") == 4  # the launcher and the main training process, each start
