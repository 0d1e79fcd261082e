"""Shared pieces of the benchmarks: the machine they ran on, interleaved step timing, data, tables.

Benchmarks here run on shared, often busy machines. Two things keep their ratios honest:
the paths compared are timed in alternating blocks within one run (a burst of load hits
both), and each path's process CPU time is kept beside its wall time (CPU seconds per step
move far less with other processes' load than wall seconds do).
"""
from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MINI = (REPO.parent / "shared" / "data" / "cifar-10-mini").resolve()

from alexnet import provenance  # noqa: E402
from alexnet.provenance import cpu_model  # noqa: E402  (after the path: the run records name the CPU the same way)


def cpu_flags() -> str:
    """The vector extensions that decide CPU speed here: AVX-512, its bf16 instructions, AMX."""
    return ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in provenance.cpu_flags())


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min)"


def machine(device: torch.device | None = None) -> str:
    """Lines saying where a figure comes from: CPU (or GPU), cores, torch, threads and the load."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [f"CPU: {cpu_model()} ({cores} cores usable, {os.cpu_count()} online; {cpu_flags() or 'no AVX flags seen'})",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"python {platform.python_version()}, {platform.system()} {platform.release()}"]
    if device is not None and device.type == "cuda":
        lines.append(f"GPU: {torch.cuda.get_device_name(device)}")
    lines.append(f"load average at start: {load_average()}")
    return "\n".join(lines)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Per-step wall and process-CPU seconds of one path."""
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median_wall(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)

    def spread(self) -> str:
        """min-max of the wall times, to show how noisy the row was."""
        return f"{min(self.wall) * 1000:.0f}-{max(self.wall) * 1000:.0f}"


def interleaved(paths: dict[str, Callable[[], object]], steps: int, warmup: int = 2, rounds: int = 3,
                device: torch.device = torch.device("cpu")) -> dict[str, Timing]:
    """Time one step of each path `steps` times, in `rounds` alternating blocks after `warmup` untimed steps each."""
    for fn in paths.values():
        for _ in range(warmup):
            fn()
        sync(device)
    timings = {name: Timing() for name in paths}
    rounds = max(1, min(rounds, steps))
    per_round = [steps // rounds + (1 if r < steps % rounds else 0) for r in range(rounds)]
    for count in per_round:
        for name, fn in paths.items():
            for _ in range(count):
                wall, cpu = time.perf_counter(), time.process_time()
                fn()
                sync(device)
                timings[name].wall.append(time.perf_counter() - wall)
                timings[name].cpu.append(time.process_time() - cpu)
    return timings


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table (it pastes into bench/README.md as it is), columns padded to line up."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print(line(r))


def loop_step(session) -> Callable[[], None]:
    """One step of the training loop at a time, as `alexnet.train.train_one_epoch` takes it: the batch at the
    session's position (`training_batch`), the step (`session_step`), and a new epoch's order after the last."""
    from alexnet.train import epoch_order, session_step, training_batch

    order = epoch_order(session)

    def step() -> None:
        nonlocal order
        if session.position.step_in_epoch == session.steps_per_epoch:
            session.position.next_epoch()
            order = epoch_order(session)
        session_step(session, *training_batch(session, order))

    return step


def as_dataset(images: torch.Tensor, labels: torch.Tensor, label: str):
    """Training images (`load_images`) as the dataset a training session takes; no test images."""
    from alexnet.data import CIFAR10_CLASSES, Cifar10, DatasetSource

    source = DatasetSource("benchmark", Path(label), len(images), 0)  # a kind of its own: never named in a record
    return Cifar10(images, labels, images[:0], labels[:0], CIFAR10_CLASSES, source)


def load_images(data: str, count: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Training images (uint8 N x 3 x 32 x 32) and labels: the mini subset, another folder, or 'synthetic'."""
    if data == "synthetic":
        n = count or 5085
        gen = torch.Generator().manual_seed(0)
        return (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
                torch.randint(0, 10, (n,), generator=gen), f"synthetic ({n:,} random 32x32 images)")
    from alexnet.data import load_cifar10

    dataset = load_cifar10(Path(data) if data else MINI)
    x, y = dataset.train_x, dataset.train_y
    if count:
        x, y = x[:count], y[:count]
    return x, y, f"{dataset.source.label} at {dataset.source.path}, {len(x):,} training images"


def default_data() -> str:
    """The mini subset beside the repo when it is there, else synthetic images of the same shape."""
    return str(MINI) if (MINI / "cifar-10-batches-py" / "test_batch").exists() else "synthetic"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(runs: Path, data: Path, timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` on a free localhost port, as a user starts it; returns the process and its URL."""
    port = free_port()
    env = {**os.environ, "ALEXNET_RUNS": str(runs), "ALEXNET_DATA": str(data),
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--server.fileWatcherType", "none"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("streamlit did not start")
            time.sleep(0.2)


# True once Streamlit has been idle for 400 ms: its status widget shows only after a delay, so
# the app root's script state is read too, and a rerun requested a moment ago has begun by then.
SETTLED = """() => {
  const app = document.querySelector('[data-testid=stApp]');
  const state = app && app.getAttribute('data-test-script-state');
  const idle = app && state !== 'running' && state !== 'rerunRequested'
               && !document.querySelector('[data-testid=stStatusWidget]');
  if (!idle) { window.__idleSince = null; return false; }
  window.__idleSince = window.__idleSince || Date.now();
  return Date.now() - window.__idleSince > 400;
}"""
