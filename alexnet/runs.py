"""Run folders: the one contract between a training process and everything that reads it.

runs/<name>/
  config.json         every knob, written once before the first step
  metrics.jsonl       one event a line, appended and flushed as it happens
  status.json         queued | running | stopped | finished | failed (+ reason, pid and its identity)
  weights.safetensors the latest weights (float32)
  state.pt            optimizer, schedule and position, for resume (tensors and plain types only)
  result.json         the test-set evaluation

Whole files are replaced atomically (temporary file, fsync, rename), so a reader, or a
process killed at any moment, never leaves half a file behind; metrics are only appended
and a reader ignores a last line that is not yet complete.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

STATES = ("queued", "running", "stopped", "finished", "failed")
ACTIVE_STATES = ("queued", "running")              # a process holds the run, or is about to
DONE_STATES = ("finished", "stopped", "failed")    # no process will touch the run again unless it is resumed
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
DEFAULT_ROOT = "runs"


def runs_root(root: str | Path | None = None) -> Path:
    """The runs folder: the argument, else $ALEXNET_RUNS, else ./runs."""
    return Path(root or os.environ.get("ALEXNET_RUNS") or DEFAULT_ROOT).expanduser()


def check_name(name: str) -> str:
    """A run name is one plain path component: letters, digits, '.', '_' and '-', not '..'."""
    if not NAME_PATTERN.match(name or "") or ".." in name:
        raise ValueError(f"invalid run name {name!r}: use 1-80 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


def slugify(text: str) -> str:
    """Turn any text (a form field, an uploaded file's name) into a valid run name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-_")[:60]
    slug = re.sub(r"\.{2,}", ".", slug)
    return slug or "run"


def atomic_write(path: Path, content: bytes | Callable[[str], None]) -> None:
    """Replace `path` whole or not at all: a temporary file beside it gets the content, is fsynced, then renamed
    over it. `content` is the bytes, or a function that writes the file whose name it is given (`torch.save`,
    safetensors' `save_file`). The one atomic writer of the package: run records, checkpoints, uploads."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if callable(content):
            content(tmp)
        else:
            Path(tmp).write_bytes(content)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def read_metrics(path: Path) -> list[dict]:
    """Every complete line of a metrics.jsonl; a half-written last line is skipped, not an error."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    events = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def process_identity(pid: int) -> str | None:
    """This boot's id and the process's start in clock ticks since boot: unlike a pid, never reused.

    None where there is no /proc (then a pid is all there is to go by).
    """
    try:
        ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except (OSError, IndexError):
        return None
    return f"{boot}:{ticks}"


def pid_alive(pid: int | None, identity: str | None = None) -> bool:
    """Whether process `pid` lives (a zombie does not).

    identity: what `process_identity` said of the run's process; a live process with that pid but
    another identity reuses the pid (after a reboot, say), and the run's own process is gone.
    """
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # A zombie child of this process still answers kill(0): look at /proc where there is one.
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        return True
    if identity is not None:
        now = process_identity(pid)
        if now is not None and now != identity:
            return False
    return True


def write_process_status(path: Path, state: str, **extra: Any) -> None:
    """A background process's status (a run's, a download's), replaced whole; its pid comes with the
    process's identity, so a pid reused by another process never passes for it (see `running_pid`)."""
    status = {"state": state, **extra}
    if status.get("pid"):
        status["pid_identity"] = process_identity(int(status["pid"]))
    atomic_write_json(path, status)


def running_pid(status: Any) -> int | None:
    """The pid a status names if it says running and that very process still lives, else None."""
    if not isinstance(status, dict) or status.get("state") != "running":
        return None
    pid = status.get("pid")
    return pid if pid_alive(pid, status.get("pid_identity")) else None


@dataclass
class Run:
    """What a reader knows about one run folder."""
    name: str
    path: Path
    config: dict
    status: dict
    result: dict | None = None
    metrics: list[dict] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.status.get("state", "failed")

    @property
    def imported(self) -> bool:
        """Read from a shared archive (archive.py): no process and no resume state behind it."""
        return bool(self.status.get("imported"))

    @property
    def shipped(self) -> bool:
        """Shipped with the app (shipped.py): records only, read-only, no weights and no process behind it."""
        return bool(self.status.get("shipped"))

    @property
    def has_weights(self) -> bool:
        return (self.path / "weights.safetensors").exists()

    def epochs(self) -> list[dict]:
        return [e for e in self.metrics if e.get("event") == "epoch"]

    def steps(self) -> list[dict]:
        return [e for e in self.metrics if e.get("event") == "step"]


class RunWriter:
    """The training process's side of a run folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._metrics = None

    @classmethod
    def create(cls, root: str | Path | None, name: str, config: dict, exist_ok: bool = False) -> "RunWriter":
        folder = runs_root(root) / check_name(name)
        if folder.parent.exists() and not folder.parent.is_dir():  # else mkdir's FileExistsError reads as a taken name
            raise NotADirectoryError(f"the runs folder {folder.parent} is a file, not a folder")
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir(exist_ok=exist_ok)
        except FileExistsError:
            raise FileExistsError(f"a run named {name!r} already exists in {folder.parent}") from None
        writer = cls(folder)
        atomic_write_json(folder / "config.json", config)
        writer.set_status("queued")
        return writer

    def set_status(self, state: str, **extra: Any) -> None:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        previous = read_json(self.path / "status.json", {}) or {}
        write_process_status(self.path / "status.json", state, **{
            "pid": os.getpid(), "updated": time.time(), "created": previous.get("created", time.time()), **extra})

    def log(self, event: dict) -> None:
        """Append one event as one line and flush it, so another process can read it at once."""
        if self._metrics is None:
            self._metrics = open(self.path / "metrics.jsonl", "ab")
        self._metrics.write((json.dumps(event) + "\n").encode())
        self._metrics.flush()

    def truncate_metrics_after(self, global_step: int) -> None:
        """On resume, drop events logged after the checkpoint so the record reads as one unbroken run.

        An 'end' goes too: a process killed after logging it but before writing the result resumes
        and evaluates again, and the record must end once.
        """
        events = read_metrics(self.path / "metrics.jsonl")
        kept = [e for e in events if e.get("global_step", 0) <= global_step and e.get("event") != "end"]
        atomic_write(self.path / "metrics.jsonl", "".join(json.dumps(e) + "\n" for e in kept).encode())

    def write_result(self, result: dict) -> None:
        atomic_write_json(self.path / "result.json", result)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None


def _true_status(status: dict, has_checkpoint: bool = False) -> dict:
    """A 'running' or 'queued' run whose process is gone was killed: report it as such.

    The checkpoint file itself counts, not only the status's flag: a process killed between
    writing a checkpoint and saying so in status.json is still resumable.
    """
    if status.get("state") in ACTIVE_STATES and not pid_alive(status.get("pid"), status.get("pid_identity")):
        resumable = bool(status.get("checkpoint")) or has_checkpoint
        return {**status, "state": "stopped" if resumable else "failed", "checkpoint": resumable,
                "reason": "the training process ended without saying why (killed or crashed)"
                          + ("; resume continues from the last checkpoint" if resumable else "")}
    return status


def load_run(path: str | Path, with_metrics: bool = True) -> Run:
    """Read one run folder (never unpickles anything)."""
    folder = Path(path)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} is not a run folder (no config.json)")
    status = _true_status(read_json(folder / "status.json", {}) or {"state": "failed", "reason": "no status.json"},
                          (folder / "state.pt").exists())
    return Run(name=folder.name, path=folder, config=read_json(folder / "config.json", {}) or {},
               status=status, result=read_json(folder / "result.json"),
               metrics=read_metrics(folder / "metrics.jsonl") if with_metrics else [])


def list_runs(root: str | Path | None = None, with_metrics: bool = False) -> list[Run]:
    """All runs under the root, newest first."""
    folder = runs_root(root)
    if not folder.is_dir():
        return []
    runs = []
    for child in folder.iterdir():
        if child.is_dir() and not child.name.startswith(".") and (child / "config.json").exists():
            runs.append(load_run(child, with_metrics))
    return sorted(runs, key=lambda r: r.status.get("created", 0), reverse=True)


def iter_new_events(path: Path, offset: int) -> tuple[list[dict], int]:
    """Events appended to metrics.jsonl since byte `offset`; returns them and the new offset (whole lines only)."""
    try:
        with open(path / "metrics.jsonl", "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = [json.loads(line) for line in data[:end].split(b"\n") if line.strip()]
    return events, offset + end


def delete_run(root: str | Path | None, name: str) -> None:
    folder = runs_root(root) / check_name(name)
    run = load_run(folder, with_metrics=False)
    if run.state == "running":
        raise RuntimeError(f"run {name!r} is still training: stop it before deleting it")
    shutil.rmtree(folder)


def unique_name(root: str | Path | None, base: str) -> str:
    """`base`, or `base-2`, `base-3`... whichever is free."""
    folder = runs_root(root)
    base = slugify(base)
    name, n = base, 1
    while (folder / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


