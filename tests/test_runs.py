"""Run folders: atomic writes, tolerant readers, safe names, true states of dead processes."""
import json
import os
import subprocess
import sys

import pytest

from alexnet import runs
from alexnet.runs import RunWriter, check_name, list_runs, load_run, read_metrics, slugify


def test_a_half_written_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"event": "step", "global_step": 1}\n{"event": "step", "glo')
    assert read_metrics(path) == [{"event": "step", "global_step": 1}]
    events, offset = runs.iter_new_events(tmp_path, 0)
    assert events == [{"event": "step", "global_step": 1}] and offset == path.read_bytes().index(b"\n") + 1


def test_create_list_load_delete(tmp_path):
    writer = RunWriter.create(tmp_path, "a", {"variant": "cifar"})
    writer.log({"event": "epoch", "epoch": 1, "global_step": 3})
    writer.set_status("finished")
    writer.close()
    RunWriter.create(tmp_path, "b", {"variant": "paper"})
    assert {r.name for r in list_runs(tmp_path)} == {"a", "b"}
    run = load_run(tmp_path / "a")
    assert run.state == "finished" and run.epochs() == [{"event": "epoch", "epoch": 1, "global_step": 3}]
    with pytest.raises(FileExistsError, match="already exists"):
        RunWriter.create(tmp_path, "a", {})
    runs.delete_run(tmp_path, "a")
    assert [r.name for r in list_runs(tmp_path)] == ["b"]
    assert list_runs(tmp_path / "absent") == []


@pytest.mark.parametrize("name", ["..", "../x", "/etc/passwd", "a/b", "", ".hidden", "a b", "x" * 81, "é", "a\x00b",
                                  "-rf", "a..b"])
def test_run_names_never_become_paths_outside_the_runs_folder(name, tmp_path):
    with pytest.raises(ValueError, match="invalid run name"):
        check_name(name)
    with pytest.raises(ValueError):
        RunWriter.create(tmp_path, name, {})
    assert check_name(slugify(name)) == slugify(name)


def test_a_running_status_whose_process_is_gone_reads_as_killed(tmp_path):
    writer = RunWriter.create(tmp_path, "ghost", {})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runs.atomic_write_json(writer.path / "status.json", {"state": "running", "pid": dead.pid, "checkpoint": True})
    run = load_run(writer.path)
    assert run.state == "stopped" and "killed" in run.status["reason"]
    runs.atomic_write_json(writer.path / "status.json", {"state": "running", "pid": dead.pid})
    assert load_run(writer.path).state == "failed"
    runs.atomic_write_json(writer.path / "status.json", {"state": "running", "pid": os.getpid()})
    assert load_run(writer.path).state == "running"


def test_a_pid_reused_by_another_process_does_not_keep_a_dead_run_running(tmp_path):
    """After a reboot the run's pid may belong to some other process: its identity tells them apart."""
    writer = RunWriter.create(tmp_path, "rebooted", {})
    writer.set_status("running", checkpoint=True)  # written by this (live) process, with its identity
    assert load_run(writer.path).state == "running"
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        status = json.loads((writer.path / "status.json").read_text())
        assert status["pid_identity"] == runs.process_identity(os.getpid())
        runs.atomic_write_json(writer.path / "status.json", {**status, "pid": stranger.pid})  # the same pid, reused
        run = load_run(writer.path)
        assert runs.pid_alive(stranger.pid) and run.state == "stopped" and "killed" in run.status["reason"]
        runs.atomic_write_json(writer.path / "status.json", {**status, "pid": stranger.pid,
                                                             "pid_identity": runs.process_identity(stranger.pid)})
        assert load_run(writer.path).state == "running"
    finally:
        stranger.kill()
        stranger.wait()


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    runs.atomic_write_json(tmp_path / "x.json", {"a": 1})
    runs.atomic_write_json(tmp_path / "x.json", {"a": 2})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
