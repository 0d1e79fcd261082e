"""alexnet.analysis_jobs: heavy analysis in a background process, with progress, kept for the next request,
one process per task, and a killed process that reads as failed and can be started again."""
from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from alexnet import analysis, analysis_jobs, evaluation, receptive, visualize
from alexnet.cli import main
from alexnet.data import SAMPLE_DIR, source_at
from alexnet.predict import DEMO_WEIGHTS
from alexnet.runs import pid_alive, read_json

from conftest import THREADS

PROBABILITIES = analysis_jobs.Task("probabilities")


@pytest.fixture
def subject(runs_dir):
    return analysis.subject(DEMO_WEIGHTS, source_at(SAMPLE_DIR), runs_dir)


def wait_for(condition, timeout: float = 120.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)
    return value


def end(pid: int) -> None:
    """Kill a process this test started and reap it if it is our child."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_for(lambda: not pid_alive(pid), timeout=10)


def test_start_progress_finished_then_the_kept_result_answers_at_once(subject, runs_dir):
    assert analysis_jobs.progress(subject, PROBABILITIES)["state"] == "none"
    pid = analysis_jobs.start(subject, PROBABILITIES, runs_dir, threads=THREADS)
    try:
        assert pid is not None
        assert analysis_jobs.progress(subject, PROBABILITIES)["state"] == "running"   # at once: the status says so
        assert analysis_jobs.start(subject, PROBABILITIES, runs_dir) == pid           # a second click: the same one
        state = analysis_jobs.wait(subject, PROBABILITIES, timeout=300)
        wait_for(lambda: not pid_alive(pid))             # it says 'finished' in its status, then ends
    finally:
        end(pid)
    assert state == {"state": "finished", "fraction": 1.0}, (state, subject.path("probabilities.log").read_text())
    probs = evaluation.load_probabilities(subject)
    assert probs.shape == (972, 10)
    status = subject.path("probabilities.status.json")
    written = status.stat().st_mtime_ns
    assert analysis_jobs.start(subject, PROBABILITIES, runs_dir) is None                  # kept: nothing to start
    assert status.stat().st_mtime_ns == written and read_json(status)["state"] == "finished"


def test_progress_is_reported_while_it_runs_and_a_killed_process_reads_as_failed_and_starts_again(subject, runs_dir):
    slow = analysis_jobs.Task("maximise", visualize.Objective("conv2", 0), steps=100_000)
    pid = analysis_jobs.start(subject, slow, runs_dir, threads=THREADS)
    try:
        state = wait_for(lambda: (s := analysis_jobs.progress(subject, slow))["fraction"] > 0 and s)
        assert state["state"] == "running" and 0 < state["fraction"] < 1
    finally:
        end(pid)
    failed = analysis_jobs.progress(subject, slow)
    assert failed["state"] == "failed" and failed["reason"] == analysis_jobs.DIED
    quick = analysis_jobs.Task("maximise", visualize.Objective("conv2", 0), steps=3)
    again = analysis_jobs.start(subject, quick, runs_dir, threads=THREADS)      # the same task: maximise-conv2-0
    try:
        assert again not in (None, pid)
        assert analysis_jobs.wait(subject, quick, timeout=300)["state"] == "finished"
    finally:
        end(again)
    assert visualize.load_visualization(subject, quick.objective).steps == 3


def test_a_failure_is_said_and_new_weights_make_the_result_stale(subject, runs_dir, tmp_path):
    weights = tmp_path / "copy.safetensors"
    shutil.copy(DEMO_WEIGHTS, weights)
    copy = analysis.subject(weights, subject.source, runs_dir)
    bad = analysis_jobs.Task("maximise", visualize.Objective("conv1", 500), steps=3)
    pid = analysis_jobs.start(copy, bad, runs_dir, threads=THREADS)
    try:
        state = analysis_jobs.wait(copy, bad, timeout=300)
    finally:
        end(pid)
    assert state["state"] == "failed" and "conv1 has channels 0 to 63, not 500" in state["reason"]

    assert main(["--runs", str(runs_dir), "analyse", "top-images", "--weights", str(weights), "--data",
                 str(SAMPLE_DIR), "--threads", str(THREADS)]) == 0
    top = analysis_jobs.Task("top-images")
    assert analysis_jobs.is_done(copy, top) and receptive.load_top_images(copy)["conv5"].images.shape == (256, 9)
    later = weights.stat().st_mtime + 60
    os.utime(weights, (later, later))
    assert analysis_jobs.progress(copy, top)["state"] == "none"


def test_the_command_line_analyses_a_run_on_its_own_dataset(tiny_run, runs_dir, mini_data, capsys):
    shutil.copytree(tiny_run, runs_dir / tiny_run.name)
    assert main(["--runs", str(runs_dir), "analyse", "probabilities", "--run", tiny_run.name,
                 "--threads", str(THREADS)]) == 0
    assert "1,017 test images of CIFAR-10 subset (6,102 images)" in capsys.readouterr().out
    kept = analysis.subject(runs_dir / tiny_run.name / "weights.safetensors", mini_data.source, runs_dir)
    assert evaluation.load_probabilities(kept).shape == (1017, 10)
    assert main(["--runs", str(runs_dir), "analyse", "maximise", "--layer", "conv1"]) == 2
    assert "maximise needs --layer and --channel, or --class" in capsys.readouterr().err
    assert main(["--runs", str(runs_dir), "analyse", "top-images", "--data", str(runs_dir / "nowhere")]) == 2
    assert "holds neither CIFAR-10's python batches nor the embedded sample" in capsys.readouterr().err
