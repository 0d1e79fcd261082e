"""One queue per device: a run waits only for the device it trains on.

Each device (`cpu`, `mps`, `cuda:0`, `cuda:1`...) has a lock file, `<runs>/.queues/<device>.lock`,
holding the name of the run that trains there. A run that asks for "auto" or "cuda" on a machine
with several GPUs may take any of them and takes the first whose queue is empty; a data-parallel
run needs as many GPUs as it has processes and takes them all at once or none (taken one by one,
two such runs could each hold half and wait for ever). The CPU is one device of its own, so a
CPU run never waits for a GPU run. The kernel frees a lock when its process dies, however it dies.

Queues are keyed by strings alone: nothing here touches a device, so the mechanism is the same for
`cuda:7` on a GPU server and for any two keys a test holds.
"""
from __future__ import annotations

import fcntl
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Sequence

from .config import gpu_count, mps_available
from .runs import Run, runs_root

QUEUES_DIR = ".queues"
KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,30}(:[0-9]{1,4})?$")


@dataclass(frozen=True)
class Request:
    """The queues a run may take and how many of them it needs at once."""
    candidates: tuple[str, ...]
    count: int = 1

    def describe(self) -> str:
        if len(self.candidates) == 1:
            return f"the device {self.candidates[0]}"
        if self.count == 1:
            return f"a free device among {', '.join(self.candidates)}"
        return f"{self.count} free devices at once among {', '.join(self.candidates)}"


def machine_devices() -> list[str]:
    """This machine's devices, each a queue: the CPU, every CUDA GPU, Apple's MPS."""
    return ["cpu", *(f"cuda:{i}" for i in range(gpu_count())), *(["mps"] if mps_available() else [])]


def request(device: str, processes: int = 1, gpus: int | None = None, mps: bool | None = None) -> Request:
    """The queues a run on `device` with `processes` data-parallel processes waits for.

    gpus, mps: what the machine has (default: this one's), so a plan for another machine can be checked.
    Raises ValueError, in a user's words, for what this machine cannot do.
    """
    gpus = gpu_count() if gpus is None else gpus
    mps = mps_available() if mps is None else mps
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if device == "auto":
        device = "cuda" if gpus else "mps" if mps and processes == 1 else "cpu"
    if device == "cpu":
        return Request(("cpu",))  # a data-parallel CPU run (gloo) shares the CPU's cores: one queue
    if device == "mps":
        if processes > 1:
            raise ValueError("a data-parallel run needs CUDA GPUs or the CPU; MPS is one device")
        return Request(("mps",))
    if device == "cuda" or device.startswith("cuda:"):
        if not gpus:
            raise ValueError(f"device {device!r} was asked for but no CUDA GPU is available; use 'auto' or 'cpu'")
        if device == "cuda":
            if processes > gpus:
                raise ValueError(f"{processes} data-parallel processes need {processes} GPUs; this machine has {gpus}")
            return Request(tuple(f"cuda:{i}" for i in range(gpus)), processes)
        index = device.split(":", 1)[1]
        if not index.isdigit() or int(index) >= gpus:
            raise ValueError(f"there is no GPU {device!r} here: this machine has cuda:0 to cuda:{gpus - 1}")
        if processes > 1:
            raise ValueError("a data-parallel run takes whole GPUs: choose device 'cuda' (any free GPUs), "
                             f"not {device!r}")
        return Request((device,))
    raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")


def request_for_ranks(device: str, local_processes: int) -> Request:
    """What the main process of a run started by torchrun itself holds: the GPUs its node's processes use
    (torchrun gives local rank r `cuda:r`), all of them, or the CPU."""
    if device in ("auto", "cuda") and gpu_count():
        return Request(tuple(f"cuda:{i}" for i in range(local_processes)), local_processes)
    return request(device)


def lock_path(root: str | Path | None, key: str) -> Path:
    if not KEY_PATTERN.match(key):
        raise ValueError(f"invalid device key {key!r}")
    return runs_root(root) / QUEUES_DIR / f"{key}.lock"


def try_lock(path: Path) -> IO | None:
    """The open, exclusively locked file, or None when another open file holds its lock."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return handle
    except BlockingIOError:
        handle.close()
        return None


@dataclass
class Held:
    """The queues a process holds, with their open lock files (closing them frees the devices)."""
    keys: list[str]
    handles: list[IO]

    def release(self) -> None:
        for handle in self.handles:
            handle.truncate(0)
            handle.close()
        self.handles = []


def try_take(root: str | Path | None, want: Request, owner: str) -> Held | None:
    """Take `want.count` free queues among the candidates, in their order, and write `owner` into each; all or
    none: None (holding nothing) while too few are free."""
    taken: list[tuple[str, IO]] = []
    (runs_root(root) / QUEUES_DIR).mkdir(parents=True, exist_ok=True)
    for key in want.candidates:
        handle = try_lock(lock_path(root, key))
        if handle is not None:
            taken.append((key, handle))
            if len(taken) == want.count:
                break
    if len(taken) < want.count:
        for _, handle in taken:
            handle.close()
        return None
    for _, handle in taken:
        handle.seek(0)
        handle.truncate()
        handle.write(owner)
        handle.flush()
    return Held([k for k, _ in taken], [h for _, h in taken])


def holder(root: str | Path | None, key: str) -> str | None:
    """The run training on the device, or None when its queue is free.

    Looking takes the lock for an instant when it is free; a trainer that tries in that instant tries again
    at its next poll.
    """
    path = lock_path(root, key)
    if not path.exists():
        return None
    handle = try_lock(path)
    if handle is not None:
        handle.close()
        return None
    try:
        return path.read_text().strip() or "another run"
    except OSError:
        return "another run"


def waiting_reason(root: str | Path | None, want: Request) -> str:
    """Why a run waits, naming the runs that hold what it wants."""
    holders = [f"{h} on {k}" if len(want.candidates) > 1 else h
               for k in want.candidates if (h := holder(root, k)) is not None]
    who = ", ".join(holders) or "another run"
    return f"waiting for {want.describe()}: {who} {'is' if len(holders) <= 1 else 'are'} training"


@dataclass
class DeviceQueue:
    device: str
    training: str | None     # the run holding the device
    waiting: list[str]       # queued runs that may take it, oldest first


def device_queues(root: str | Path | None, runs: Iterable[Run], devices: Sequence[str] | None = None
                  ) -> list[DeviceQueue]:
    """Each device's queue: this machine's devices, then any other that a waiting run or a held lock names.

    Who trains comes from the locks (the truth, whatever a status says); who waits from the statuses of
    queued runs (`waiting_for`, written while they wait).
    """
    queued = sorted((r for r in runs if r.state == "queued"), key=lambda r: r.status.get("created", 0))
    folder = runs_root(root) / QUEUES_DIR
    keys = list(devices if devices is not None else machine_devices())
    named = [k for r in queued for k in r.status.get("waiting_for") or [] if isinstance(k, str)]
    locked = sorted(p.stem for p in folder.glob("*.lock")) if folder.is_dir() else []
    for key in [*named, *locked]:
        if key not in keys and KEY_PATTERN.match(key) and (key in named or holder(root, key) is not None):
            keys.append(key)
    return [DeviceQueue(key, holder(root, key),
                        [r.name for r in queued if key in (r.status.get("waiting_for") or [])]) for key in keys]
