"""Shared fixtures: the real CIFAR-10 subset, isolated run folders, and a real app in a real browser."""
from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest
import torch
from streamlit.testing.v1 import AppTest

from bench.common import SETTLED  # the JS that says Streamlit has settled, shared with the benchmarks

if TYPE_CHECKING:
    from alexnet.data import Cifar10

REPO = Path(__file__).resolve().parent.parent
MINI = (REPO.parent / "shared" / "data" / "cifar-10-mini").resolve()
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
STARTING_THREADS = torch.get_num_threads()  # before any test or fixture sets it
# The threads of a test's own training run (in this process or one it starts): both of the machine's two cores, or
# one where tests/run.sh shares the cores between two workers (it sets OMP_NUM_THREADS=1, which torch reads here).
THREADS = min(2, STARTING_THREADS)


@pytest.fixture(scope="session")
def mini_dir() -> Path:
    """The real 6,102-image CIFAR-10 subset that lies beside the repo on our machines and in CI."""
    if not (MINI / "cifar-10-batches-py" / "test_batch").exists():
        pytest.fail(f"the CIFAR-10 mini subset is missing at {MINI}")
    return MINI


@pytest.fixture(scope="session")
def mini_data(mini_dir):
    from alexnet.data import load_cifar10

    return load_cifar10(mini_dir)


def write_slice(data: Cifar10, folder: Path, train: int = 60, test: int = 30) -> Path:
    """The first images of a loaded dataset (`mini_data`) as a CIFAR-10 python-batch folder of its own."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name, x, y in (("data_batch_1", data.train_x[:train], data.train_y[:train]),
                       ("test_batch", data.test_x[:test], data.test_y[:test])):
        with open(batches / name, "wb") as f:  # protocol 4 names only numpy's array reconstruction
            pickle.dump({"data": x.reshape(len(x), -1).numpy(), "labels": y.tolist()}, f, protocol=4)
    return folder


@pytest.fixture(scope="session")
def slice_dir(mini_data, tmp_path_factory) -> Path:
    """60 training and 30 test images: a whole run in about a second, for tests that start and kill many."""
    return write_slice(mini_data, tmp_path_factory.mktemp("slice"))


@pytest.fixture(scope="session")
def short_test_dir(mini_data, tmp_path_factory) -> Path:
    """The mini subset's first 800 training and 100 test images, for runs started in a process of their own whose
    test says nothing of the test split: a validation and test pass of 180 images instead of 1,525."""
    return write_slice(mini_data, tmp_path_factory.mktemp("short-test"), train=800, test=100)


@pytest.fixture(scope="session")
def sample_data():
    """The embedded sample, as the app finds it with no dataset named and no CIFAR-10 in the usual places."""
    from alexnet import data as datasets

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(datasets.ENV_VAR, raising=False)
        patch.setattr(datasets, "usual_places", lambda: [])
        source = datasets.resolve_dataset()
    assert source.kind == "sample"
    return datasets.load_cifar10(source)


@pytest.fixture(scope="session")
def curve_runs(tmp_path_factory, mini_data, sample_data) -> Path:
    """A folder of three real finished runs, one epoch on 256 images each, every step logged, oldest first: two on
    the mini subset ("mini-bn-s0", "mini-bn-s1": BN, one-cycle at 0.01, seeds 0 and 1) and one on the embedded
    sample ("sample-lrn": LRN, one-cycle at 0.02, the conv layers at half the rate). Trained once a session: copy
    the runs (`shutil.copytree`, which keeps their order) into a folder a test may change."""
    from alexnet.config import TrainConfig
    from alexnet.runs import RunWriter
    from alexnet.train import train

    root = tmp_path_factory.mktemp("curve-runs")
    tiny = dict(variant="cifar", epochs=1, batch_size=64, max_train_images=256, threads=THREADS, log_every=1,
                schedule="onecycle")
    for name, data, settings in [
            *((f"mini-bn-s{seed}", mini_data, dict(norm="bn", lr=0.01, seed=seed, data_dir=str(mini_data.source.path)))
              for seed in (0, 1)),
            ("sample-lrn", sample_data, dict(norm="lrn", lr=0.02, features_lr_scale=0.5))]:
        config = TrainConfig(**tiny, **settings)
        train(config, RunWriter.create(root, name, config.to_dict()).path, data=data)
    return root


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    """A fresh runs folder, also given to the app and to child processes through $ALEXNET_RUNS."""
    folder = tmp_path / "runs"
    folder.mkdir()
    monkeypatch.setenv("ALEXNET_RUNS", str(folder))
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_app(tmp_path_factory, name: str, **env_extra: str) -> Iterator[str]:
    """`streamlit run app.py` on a free localhost port with its own runs folder; yields the base URL.

    The server's runs folder is the URL's `runs` attribute and its log its `log` (a str subclass).
    """
    runs = tmp_path_factory.mktemp(f"{name}-runs")
    port = _free_port()
    env = {**os.environ, "ALEXNET_RUNS": str(runs), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", **env_extra}
    log = open(tmp_path_factory.mktemp(f"{name}-log") / "streamlit.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--server.fileWatcherType", "none"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"streamlit did not start; see {log.name}")
            time.sleep(0.3)

    class Url(str):
        pass

    base = Url(url)
    base.runs = runs
    base.log = Path(log.name)
    try:
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory, mini_dir):
    """One `streamlit run app.py` for the whole session (starting one costs seconds); tests take `app_server`."""
    with serve_app(tmp_path_factory, "server", ALEXNET_DATA=str(mini_dir)) as url:
        yield url


@pytest.fixture
def app_server(shared_server):
    """The app as `streamlit run app.py` serves it, reading the mini subset, with an empty runs folder.

    The server outlives each test, its runs folder must not: a run left there (above all one marked as
    running) would keep every page that lists runs polling, and a later test would find it in its tables.
    """
    empty_runs_folder(shared_server.runs)
    yield shared_server
    empty_runs_folder(shared_server.runs)


def empty_runs_folder(root: Path) -> None:
    """Stop what trains there (checkpoint and exit, as Stop does), then delete every run and record.

    A status that names this very process was faked by a test to show a run in progress: nothing to stop.
    """
    from alexnet import jobs
    from alexnet.runs import list_runs

    active = [r for r in list_runs(root) if r.state in ("queued", "running") and r.status.get("pid") != os.getpid()]
    for run in active:
        jobs.stop(run.name, root)
    for run in active:
        jobs.wait(run.name, root, timeout=60)
    for child in Path(root).iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def training_processes(under: Path) -> list[tuple[int, str]]:
    """Live `python -m alexnet --runs FOLDER train ...` processes whose runs folder lies under `under`
    (pid, command line): with pytest's temporary folder, the processes a test started."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # it ended while we looked
            continue
        if state == "Z" or "alexnet" not in argv or "train" not in argv or "--runs" not in argv:
            continue
        if Path(argv[argv.index("--runs") + 1]).resolve().is_relative_to(under):
            found.append((int(proc.name), " ".join(argv)))
    return found


@pytest.fixture(autouse=True)
def no_training_process_left_behind(tmp_path_factory):
    """Fails the test that leaves a training process alive, after a grace period for a run that was asked to
    stop and is writing its checkpoint; the process is killed so that it cannot disturb the tests after it."""
    under = tmp_path_factory.getbasetemp().resolve()
    yield
    deadline = time.monotonic() + 20
    while (left := training_processes(under)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        pytest.fail("the test left training processes running: " + "; ".join(f"{pid}: {cmd}" for pid, cmd in left),
                    pytrace=False)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: apt-get install chromium (tests/run.sh does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that takes the browser (`page` does) as `browser` and put them in one xdist group, first: with
    tests/run.sh's `--dist loadgroup` they run one at a time on one worker (one Chromium, one app server) from the
    start, while the other worker takes the tests that drive no browser."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.xdist_group("browser"))
    items.sort(key=lambda item: item.get_closest_marker("browser") is None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def page(browser, request):
    """A fresh browser page at 1400x1000; on failure its screenshot is saved in test-artifacts/."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()


def wait_for_app(pg, timeout: float = 60_000) -> None:
    """Wait until Streamlit has finished running the script and the page has settled."""
    pg.wait_for_selector("[data-testid=stApp]", timeout=timeout)
    pg.evaluate("() => { window.__idleSince = null; }")
    pg.wait_for_function(SETTLED, timeout=timeout, polling=100)


def only(pg, selector: str, timeout: float = 15_000):
    """The one element that matches: while a rerun moves a widget, its old copy lingers until the run ends."""
    pg.wait_for_function("s => document.querySelectorAll(s).length === 1", arg=selector, timeout=timeout)
    return pg.locator(selector)


def screenshot(pg, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    return path


def nav_link(pg, title: str):
    """The app's own navigation link. Until app.py has run st.navigation, Streamlit lists every file in
    pages/ in lower case; has_text with a string ignores case, a regex does not."""
    link = pg.locator("[data-testid=stSidebarNavLink]").filter(has_text=re.compile(title))
    link.wait_for()
    return link


def metric_value(pg, label: str) -> str:
    box = pg.locator("[data-testid=stMetric]").filter(has_text=label).first
    return box.locator("[data-testid=stMetricValue]").inner_text().strip()


@pytest.fixture
def empty_machine(monkeypatch, runs_dir, tmp_path):
    """A fresh machine, as the README's first command leaves it: no dataset named, none in the usual places, no
    ImageNet weights, no runs (the embedded sample is what the app finds); yields the runs folder."""
    import streamlit as st

    from alexnet import data as datasets

    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    for var in ("HOME", "XDG_CACHE_HOME", "TORCH_HOME"):  # no CIFAR-10 and no ImageNet weights where they are looked for
        monkeypatch.setenv(var, str(tmp_path / "home"))
    monkeypatch.setattr(datasets, "DEFAULT_DOWNLOAD_DIR", tmp_path / "home" / "alexnet-lab")
    st.cache_data.clear()  # another test's resolution must not answer for this machine
    yield runs_dir
    st.cache_data.clear()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, mini_data) -> Path:
    """A finished run folder (cifar, BN, one epoch on 512 images of the mini subset): copy it into a test's runs
    folder (`shutil.copytree`) to have a real run record with weights and a result."""
    from alexnet.config import TrainConfig
    from alexnet.runs import RunWriter
    from alexnet.train import train

    config = TrainConfig(variant="cifar", norm="bn", epochs=1, max_train_images=512, batch_size=64, threads=THREADS,
                         data_dir=str(mini_data.source.path), log_every=4)
    writer = RunWriter.create(tmp_path_factory.mktemp("tiny-run"), "tiny-bn", config.to_dict())
    train(config, writer.path, data=mini_data)
    return writer.path


@pytest.fixture
def one_thread():
    """One torch thread, as the runs use (two threads on two busy cores spin against each other); the count is
    put back after the test by `torch_threads_put_back`."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def torch_threads_put_back():
    """Every test starts and ends with the thread count the process started with, so that it runs (and is timed)
    as it would alone. A fixture or test that trains in this process with `threads=N` sets torch's count for the
    whole process, and a session fixture does that before any function fixture can read the count."""
    torch.set_num_threads(STARTING_THREADS)
    yield
    torch.set_num_threads(STARTING_THREADS)


def open_app_page(page: str | None = None, timeout: float = 120) -> AppTest:
    """The app as a browser opens it (app.py's navigation first), then `page` (None: its default, Home), run through
    AppTest, without errors."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=timeout)
    at.run()
    if page is not None:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at
