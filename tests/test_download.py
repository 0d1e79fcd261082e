"""The CIFAR-10 download: one writer per archive, a dead download reads as failed, and the sidebar says so.

Real processes only: `jobs.start_download` spawns `python -m alexnet download`, which fails on its own
because every URL goes through a proxy where nothing listens (so these tests never fetch 163 MB, even
on a machine that is online).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from alexnet import data, jobs
from alexnet.runs import atomic_write_json, process_identity, read_json

REPO = Path(__file__).resolve().parent.parent
NOWHERE = "http://127.0.0.1:9"  # nothing listens on the discard port


@pytest.fixture
def offline(monkeypatch):
    """Every urllib request of this process and its children fails at once, as it does offline."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, NOWHERE)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


def wait_for_exit(pid: int, timeout: float = 120.0) -> None:
    """Reap a download process this test started (it is our child), killing it if it outlives `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # already reaped
            return
        if done:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"download process {pid} did not end within {timeout:.0f}s")


def a_dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_second_start_while_one_lives_returns_the_running_download(tmp_path, offline):
    first = jobs.start_download(tmp_path)
    second = jobs.start_download(tmp_path)
    assert second == first
    assert data.download_progress(tmp_path)["state"] == "running"
    wait_for_exit(first)
    progress = data.download_progress(tmp_path)
    assert progress["state"] == "failed" and "Offline?" in progress["reason"], progress
    assert (tmp_path / "download.log").read_text().count("could not download CIFAR-10") == 1


def test_a_killed_download_reads_as_failed_and_download_again_starts_a_new_one(tmp_path, offline):
    first = jobs.start_download(tmp_path)
    os.kill(first, signal.SIGKILL)
    wait_for_exit(first)
    progress = data.download_progress(tmp_path)
    assert progress == {**progress, "state": "failed", "reason": data.DOWNLOAD_DIED}
    assert data.live_download(tmp_path) is None
    second = jobs.start_download(tmp_path)
    try:
        assert second != first and data.live_download(tmp_path) == second
    finally:
        os.kill(second, signal.SIGKILL)
        wait_for_exit(second)


def test_a_running_status_whose_pid_now_names_another_process_reads_as_failed(tmp_path):
    data.write_download_status(tmp_path, "running", pid=os.getpid())
    assert data.download_progress(tmp_path)["state"] == "running" and data.live_download(tmp_path) == os.getpid()
    if process_identity(os.getpid()) is None:
        pytest.skip("no /proc here: a pid is all there is to go by")
    # The same pid, but started at another time (or boot): the download's own process is gone.
    data.write_download_status(tmp_path, "running", pid=os.getpid())
    status = read_json(tmp_path / data.DOWNLOAD_STATUS)
    atomic_write_json(tmp_path / data.DOWNLOAD_STATUS, {**status, "pid_identity": "another-boot:1"})
    assert data.download_progress(tmp_path)["reason"] == data.DOWNLOAD_DIED


def test_download_on_the_command_line_offline_fails_at_once_naming_the_folder(tmp_path, offline):
    target = tmp_path / "cifar"
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "alexnet", "download", "--data", str(target)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 60  # torch's import included; no network timeout to sit through
    assert out.returncode == 2, out.stderr
    assert f"could not download CIFAR-10 into {target}" in out.stderr and "Offline?" in out.stderr
    assert "Traceback" not in out.stderr
    assert data.download_progress(target)["state"] == "failed"


# ---------------------------------------------------------------- the sidebar

@pytest.fixture
def sidebar_env(monkeypatch, mini_dir, runs_dir, tmp_path) -> Path:
    """The app reads the mini subset (so the sidebar offers the download) and downloads into a fresh folder."""
    monkeypatch.setenv(data.ENV_VAR, str(mini_dir))
    target = tmp_path / "download"
    target.mkdir()
    monkeypatch.setattr(data, "DEFAULT_DOWNLOAD_DIR", target)
    return target


def open_app() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_sidebar_says_a_dead_download_failed_instead_of_a_frozen_bar(sidebar_env):
    data.write_download_status(sidebar_env, "running", pid=a_dead_pid())
    at = open_app()
    errors = [e.value for e in at.sidebar.error]
    assert any("download failed" in e and data.DOWNLOAD_DIED in e for e in errors), errors
    assert not at.sidebar.get("progress")
    assert at.sidebar.button(key="download_cifar10").disabled is False


def test_the_sidebar_shows_a_live_download_with_its_button_off(sidebar_env):
    data.write_download_status(sidebar_env, "running", pid=os.getpid())  # this process stands in for it
    at = open_app()
    assert at.sidebar.button(key="download_cifar10").disabled is True
    bars = at.sidebar.get("progress")
    assert len(bars) == 1 and "Downloading CIFAR-10" in bars[0].proto.text
    assert not at.sidebar.error
