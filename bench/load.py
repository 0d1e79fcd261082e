"""Several browser sessions at once on Predict and Explain while a run trains: answered, how fast, at what cost.

    python bench/load.py [--sessions 5] [--rounds 2] [--phases 2] [--baseline 20] [--threads 1] [--data DIR]

Starts `streamlit run app.py` on a free localhost port with a fresh runs folder, warms it up with
one session (so the figures are a serving server's, not its first import), starts a training job
as the Train page does (the fast CPU demo recipe on the dataset, `--threads` torch threads), and
measures its speed alone for `--baseline` seconds. Then, `--phases` times, `--sessions` Chromium
contexts at once, each `--rounds` times: open Predict, upload a different image, wait for the
prediction; open Explain, wait for Grad-CAM and Integrated Gradients. Prints: requests answered /
total, median and max page-ready latency per step, training images/s alone and under the load
(from the run's own record), where the machine's CPU went (the job, the server, the rest: the
browsers and anything else running), and the server's resident memory when warm and after each
phase (flat when nothing accumulates). Everything runs on localhost, every loop is bounded, and
the script stops the job, the browsers and the server itself. Say which machine a figure comes from.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import start_app  # noqa: E402
from alexnet import jobs, presets  # noqa: E402
from alexnet import runs as run_records  # noqa: E402
from alexnet.config import TrainConfig  # noqa: E402
from alexnet.data import load_cifar10, resolve_dataset  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
STEP_TIMEOUT_MS = 180_000
IDLE = "() => !document.querySelector('[data-testid=stStatusWidget]')"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (the server: all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """CPU seconds all cores of the machine spent busy (not idle, not waiting for the disk)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuWindow:
    """Where the CPU time of a window went, in cores (CPU seconds per second)."""
    seconds: float
    machine: float
    job: float
    server: float

    @property
    def rest(self) -> float:
        return self.machine - self.job - self.server

    def line(self, what: str) -> str:
        return (f"  {what:15} {self.machine:5.2f} cores busy: training job {self.job:4.2f}, server {self.server:4.2f}, "
                f"the rest (browsers, other processes) {self.rest:4.2f}")


class CpuMeter:
    def __init__(self, job_pid: int, server_pid: int) -> None:
        self.pids = (job_pid, server_pid)

    def sample(self) -> tuple[float, float, float, float]:
        return (time.monotonic(), busy_cpu_seconds(), cpu_seconds(self.pids[0]), cpu_seconds(self.pids[1]))

    def window(self, start: tuple, end: tuple) -> CpuWindow:
        span = end[0] - start[0]
        return CpuWindow(span, *((b - a) / span for a, b in zip(start[1:], end[1:])))


def write_images(data: Path, folder: Path, count: int) -> list[Path]:
    """Test-set images of the dataset, enlarged to 128x128 PNGs: each upload is new work for the server."""
    from PIL import Image

    cifar = load_cifar10(resolve_dataset(str(data)))
    paths = []
    for i in range(count):
        path = folder / f"upload-{i:02d}-{cifar.classes[int(cifar.test_y[i])]}.png"
        Image.fromarray(cifar.test_x[i].permute(1, 2, 0).numpy()).resize((128, 128), Image.BICUBIC).save(path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- the training job's speed, from its record

class TrainingProbe:
    """Reads the run's metrics as they are appended, with the wall-clock time each step was seen."""

    def __init__(self, runs: Path, name: str, batch_size: int) -> None:
        self.folder, self.batch_size = runs / name, batch_size
        self.offset, self.seen = 0, []            # (monotonic time read, global_step)

    def poll(self) -> None:
        events, self.offset = run_records.iter_new_events(self.folder, self.offset)
        now = time.monotonic()
        self.seen += [(now, e["global_step"]) for e in events if e.get("event") == "step"]

    def images_per_s(self, start: float, end: float) -> float | None:
        inside = [(t, step) for t, step in self.seen if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] == inside[0][0]:
            return None
        (t0, s0), (t1, s1) = inside[0], inside[-1]
        return (s1 - s0) * self.batch_size / (t1 - t0)


async def poll_training(probe: TrainingProbe, until: asyncio.Event) -> None:
    while not until.is_set():
        probe.poll()
        await asyncio.sleep(0.25)
    probe.poll()


# ---------------------------------------------------------------- one browser session

@dataclass
class Session:
    number: int
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"open": [], "predict": [], "explain": []})
    answered: int = 0
    failed: list[str] = field(default_factory=list)


async def idle(page) -> None:
    await page.wait_for_function(IDLE, timeout=STEP_TIMEOUT_MS)


async def timed(session: Session, step: str, action) -> bool:
    start = time.monotonic()
    try:
        await action()
    except Exception as err:  # a timeout or a missing element: the request was not answered
        session.failed.append(f"{step}: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
        return False
    session.latencies[step].append(time.monotonic() - start)
    session.answered += 1
    return True


async def run_session(browser, url: str, session: Session, uploads: list[Path]) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 2400})
    page = await context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    nav = page.locator("[data-testid=stSidebarNavLink]")
    try:
        async def open_app():
            await page.goto(url)
            await page.locator("[data-testid=stSidebar]").get_by_text("Device:").wait_for()
            await idle(page)
        if not await timed(session, "open", open_app):
            return
        for image in uploads:
            async def predict_upload():
                await nav.filter(has_text=re.compile(r"Predict$")).click()
                await page.get_by_role("heading", name="Predict").wait_for()
                await idle(page)
                await page.locator("[data-testid=stRadio] label").filter(has_text=re.compile(r"^Upload$")).click()
                await page.locator("[data-testid=stFileUploader] input[type=file]").first.wait_for(state="attached")
                await page.locator("[data-testid=stFileUploader] input[type=file]").first.set_input_files(str(image))
                await page.get_by_role("heading", name=image.name).wait_for()
                await page.locator("[data-testid=stMetric]").filter(has_text="Predicted").first.wait_for()
                await idle(page)
                if await page.locator("[data-testid=stException]").count():
                    raise RuntimeError("the Predict page showed an exception")

            async def explain():
                await nav.filter(has_text=re.compile(r"Explain$")).click()
                await page.get_by_role("heading", name="Explain").wait_for()
                await page.get_by_text(re.compile(r"^Grad-CAM \(conv5, class ")).wait_for()
                maps = page.locator("[data-testid=stPlotlyChart]").filter(
                    has=page.locator("g.heatmaplayer image, g.hm image"))
                await maps.nth(1).wait_for()                  # Grad-CAM and Integrated Gradients drawn
                await idle(page)
                if await page.locator("[data-testid=stException]").count():
                    raise RuntimeError("the Explain page showed an exception")

            await timed(session, "predict", predict_upload)
            await timed(session, "explain", explain)
    finally:
        await context.close()


async def browse(url: str, sessions: list[Session], uploads: list[Path], rounds: int) -> float:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            start = time.monotonic()
            await asyncio.gather(*(run_session(browser, url, s, uploads[s.number * rounds:(s.number + 1) * rounds])
                                   for s in sessions))
            return time.monotonic() - start
        finally:
            await browser.close()


async def load_phase(url: str, sessions: list[Session], uploads: list[Path], rounds: int, probe: TrainingProbe
                     ) -> tuple[float, float, float]:
    done = asyncio.Event()
    poller = asyncio.create_task(poll_training(probe, done))
    start = time.monotonic()
    try:
        await browse(url, sessions, uploads, rounds)
    finally:
        end = time.monotonic()
        done.set()
        await poller
    return start, end, end - start


def wait_steps(probe: TrainingProbe, steps: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(probe.seen) < steps:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the training job logged fewer than {steps} steps in {timeout:.0f}s")
        time.sleep(0.25)
        probe.poll()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="uploads (Predict, then Explain) per session")
    parser.add_argument("--phases", type=int, default=2, help="load phases, back to back (memory after each)")
    parser.add_argument("--baseline", type=float, default=20.0, help="seconds the job trains alone before the load")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training job (0: torch's own)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar-10-mini"))
    return parser.parse_args()


@dataclass
class Measured:
    """What one load test saw: the job's speed and CPU alone, then per phase; the server's memory; the run's end."""
    config: TrainConfig
    probe: TrainingProbe
    alone: tuple[float, float]                  # start and end of the window in which the job trained alone
    cpu_alone: CpuWindow
    phases: list[tuple[list[Session], float | None, CpuWindow]]
    rss: list[tuple[str, float]]
    state: str


def job_config(data: Path, threads: int) -> TrainConfig:
    """The run the Train page's fast CPU demo preset starts, long enough to outlast the load."""
    config = presets.get("fast-cpu-demo").config(epochs=1000)
    config.data_dir, config.threads = str(data), threads
    return config


def train_alone(runs: Path, job: str, batch_size: int, server_pid: int,
                seconds: float) -> tuple[TrainingProbe, CpuMeter, tuple[float, float], CpuWindow]:
    """Once the job trains at its steady pace, measure it alone for `seconds`: its probe, the CPU meter of the job
    and the server, the window's start and end, and where the CPU went in it."""
    probe = TrainingProbe(runs, job, batch_size)
    wait_steps(probe, 5, 180)                              # training at its steady pace
    meter = CpuMeter(run_records.load_run(runs / job, with_metrics=False).status["pid"], server_pid)
    first = meter.sample()
    while time.monotonic() - first[0] < seconds:
        time.sleep(0.25)
        probe.poll()
    last = meter.sample()
    return probe, meter, (first[0], last[0]), meter.window(first, last)


def stop_job(job: str | None, runs: Path) -> None:
    if job is not None:
        jobs.stop(job, runs)
        try:
            jobs.wait(job, runs, timeout=60)
        except TimeoutError:
            pass


def measure(args: argparse.Namespace, tmp: Path) -> Measured:
    """Serve the app from `tmp`, warm it up, train alone, then the load phases; stops the job and the server."""
    data = Path(args.data).resolve()
    runs = tmp / "runs"
    runs.mkdir()
    per_phase = args.sessions * args.rounds
    uploads = write_images(data, tmp, args.phases * per_phase + 1)
    server, url = start_app(runs, data)
    job = None
    try:
        rss_start = rss_mb(server.pid)
        warm = Session(-1)                                     # one round alone: imports, models, caches
        asyncio.run(_warm_up(url, warm, uploads[-1]))
        if warm.failed:
            raise RuntimeError(f"the warm-up session failed: {warm.failed}")
        rss = [("at start", rss_start), ("warm", rss_mb(server.pid))]
        config = job_config(data, args.threads)
        job = jobs.start(config, "under-load", runs)
        probe, meter, alone, cpu_alone = train_alone(runs, job, config.batch_size, server.pid, args.baseline)
        phases = []
        for phase in range(args.phases):
            sessions = [Session(i) for i in range(args.sessions)]
            images = uploads[phase * per_phase:(phase + 1) * per_phase]
            first = meter.sample()
            start, end, seconds = asyncio.run(load_phase(url, sessions, images, args.rounds, probe))
            last = meter.sample()
            rss.append((f"after phase {phase + 1}", rss_mb(server.pid)))
            phases.append((sessions, probe.images_per_s(start, end), meter.window(first, last)))
        state = run_records.load_run(runs / job, with_metrics=False).state
    finally:
        stop_job(job, runs)
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    return Measured(config, probe, alone, cpu_alone, phases, rss, state)


def report(args: argparse.Namespace, m: Measured) -> int:
    """Print the figures; the exit status says whether every request was answered."""
    alone = m.probe.images_per_s(*m.alone)
    sessions = [s for phase in m.phases for s in phase[0]]
    total = sum(1 + 2 * args.rounds for _ in sessions)
    answered = sum(s.answered for s in sessions)
    print(f"{args.phases} phases of {args.sessions} browser sessions x {args.rounds} rounds (Predict upload, then "
          f"Explain) while a {m.config.variant}/{m.config.norm} run trained ({args.threads or 'default'} torch "
          f"thread(s), batch {m.config.batch_size}) on {os.cpu_count()} CPU cores")
    print(f"requests answered: {answered} / {total}")
    for step in ("open", "predict", "explain"):
        times = [t for s in sessions for t in s.latencies[step]]
        if times:
            print(f"  {step:8} page ready: median {statistics.median(times):6.2f} s   max {max(times):6.2f} s"
                  f"   ({len(times)} answered)")
    for s in sessions:
        for failure in s.failed:
            print(f"  session {s.number}: {failure}")
    print(f"training images/s: {alone:.0f} alone" + "".join(
        f", {rate:.0f} in phase {n + 1} ({100 * (1 - rate / alone):.0f}% slower)"
        for n, (_, rate, _) in enumerate(m.phases) if rate))
    print("CPU, in cores (CPU seconds per second):")
    print(m.cpu_alone.line("alone"))
    for n, (_, _, window) in enumerate(m.phases):
        print(window.line(f"phase {n + 1} ({window.seconds:.0f} s)"))
    print("server resident memory: " + ", ".join(f"{mb:.0f} MB {when}" for when, mb in m.rss))
    print(f"the run was {m.state} when the load ended")
    return 0 if answered == total else 1


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="alexnet-load-") as tmp:
        measured = measure(args, Path(tmp))
    return report(args, measured)


async def _warm_up(url: str, session: Session, image: Path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            await run_session(browser, url, session, [image])
        finally:
            await browser.close()


if __name__ == "__main__":
    raise SystemExit(main())
