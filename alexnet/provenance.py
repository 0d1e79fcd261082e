"""Where a run came from: the software, hardware, code and data that trained it (`environment.json`).

The training process writes one entry each time it starts, the first start and every resume from a
checkpoint, so a run resumed under another torch or on another GPU says so: `summary` joins the values
of its sessions ("2.14.1 → 2.15.0"). The data's fingerprint is a SHA-256 of the labels, class names and pixels as
loaded (0.26 s for the full CIFAR-10's 184 MB on a 2-core EPYC, 25 ms for the mini subset), so two
folders that hold the same images agree and any change to an image or label shows.

Compare reads these to warn when runs differ in more than the settings compared (`differences`).
No torch device is touched here beyond asking its name and versions.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from .data import Cifar10
from .runs import atomic_write_json, read_json

ENV_FILE = "environment.json"
REPO = Path(__file__).resolve().parent.parent
NOT_GIT = "not a git checkout"

# What a session records and what Compare calls each field, in reading order.
FIELDS: dict[str, str] = {
    "torch": "torch", "torchvision": "torchvision", "python": "Python", "cuda": "CUDA", "cudnn": "cuDNN",
    "device": "device", "device_key": "device used", "gpus": "GPUs on the machine", "processes": "processes",
    "driver": "GPU driver", "cpu": "CPU", "os": "operating system", "git_commit": "code (git commit)",
    "data": "data", "data_images": "data: images", "data_fingerprint": "data: fingerprint",
}
# Shown but never warned of: which GPU of a machine trained the run changes nothing it computes, and the number
# of processes is a setting of the config (Compare lists it with the settings that differ).
QUIET_FIELDS = ("device_key", "processes")


def data_fingerprint(data: Cifar10) -> str:
    """SHA-256 (first 16 hex digits) of the class names, then each split's labels and pixels with their shapes."""
    digest = hashlib.sha256("\n".join(data.classes).encode())
    for tensor in (data.train_y, data.test_y, data.train_x, data.test_x):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:16]


def git_commit(repo: Path = REPO) -> str:
    """The checkout's commit, marked when files differ from it; NOT_GIT where git cannot say."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD") if (repo / ".git").exists() else None  # not a repository that holds it
    if not commit:
        return NOT_GIT
    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return commit + (" (with uncommitted changes)" if changes else "")


def gpu_driver() -> str:
    """The NVIDIA driver's version, or 'none' on a machine without one."""
    try:
        found = re.search(r"Kernel Module\s+([0-9.]+)", Path("/proc/driver/nvidia/version").read_text())
        if found:
            return found.group(1)
    except OSError:
        pass
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "none"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags as Linux lists them in /proc/cpuinfo (empty elsewhere or unreadable)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return frozenset()
    return frozenset(word for line in lines if line.startswith("flags") for word in line.split(":", 1)[-1].split())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def torchvision_version() -> str:
    """torchvision.__version__ with its build tag ("0.29.1+cu130"; the package metadata says "0.29.1"), read from
    torchvision/version.py without importing torchvision: that import pulls in torch._dynamo, 1.5 s of every
    training process's start."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return "none"
    try:
        for node in ast.parse(Path(spec.origin).with_name("version.py").read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
                return str(ast.literal_eval(node.value))
    except (OSError, SyntaxError, ValueError):
        pass
    return importlib.metadata.version("torchvision")


def describe(device: torch.device, device_name: str, data: Cifar10, processes: int = 1) -> dict[str, Any]:
    """This process's environment for a run training on `device` (named `device_name`) on `data`.

    CUDA and cuDNN are the versions torch was built with and loads, recorded on a CPU-only machine too.
    """
    cuda = torch.cuda.is_available()
    return {
        "time": time.time(),
        "torch": torch.__version__, "torchvision": torchvision_version(), "python": platform.python_version(),
        "cuda": torch.version.cuda or "none",
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none",
        "device": device_name, "device_key": str(device), "gpus": torch.cuda.device_count() if cuda else 0,
        "processes": processes, "driver": gpu_driver() if cuda else "none",
        "cpu": f"{cpu_model()} ({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}"
               " cores usable)",
        "os": platform.platform(), "git_commit": git_commit(),
        "data": data.source.label, "data_images": len(data.train_x) + len(data.test_x),
        "data_fingerprint": data_fingerprint(data),
    }


def sessions(run_dir: str | Path) -> list[dict[str, Any]]:
    """The entries of a run's environment.json, oldest first; [] for a run trained before it was kept."""
    record = read_json(Path(run_dir) / ENV_FILE, {})
    found = record.get("sessions") if isinstance(record, dict) else None
    return [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []


def record(run_dir: str | Path, entry: dict[str, Any], resumed: bool) -> None:
    """Add this process's entry: a resume from a checkpoint appends to the list, a start (or a restart of a run
    killed before its first checkpoint) begins it anew."""
    earlier = sessions(run_dir) if resumed else []
    atomic_write_json(Path(run_dir) / ENV_FILE, {"sessions": [*earlier, {**entry, "resumed": resumed}]})


def summary(entries: list[dict[str, Any]]) -> dict[str, str]:
    """One value per field for a run: the sessions' values, joined with arrows where a resume changed one."""
    out = {}
    for field in FIELDS:
        values = list(dict.fromkeys(str(e[field]) for e in entries if field in e))
        if values:
            out[field] = " → ".join(values)
    return out


NOT_RECORDED = "(not recorded)"


def differences(summaries: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """The fields whose values differ between runs ({field: {run: value}}); a run without a record is left out."""
    recorded = {run: s for run, s in summaries.items() if s}
    differ = {}
    for field in FIELDS:
        values = {run: s.get(field, NOT_RECORDED) for run, s in recorded.items()}
        if len(set(values.values())) > 1:
            differ[field] = values
    return differ


def warning(differ: Mapping[str, Mapping[str, str]], unrecorded: list[str]) -> str | None:
    """What Compare says when runs differ in more than their settings, in plain words; None when they do not."""
    named = [f for f in differ if f not in QUIET_FIELDS]
    parts = []
    if named:
        parts.append("These runs differ in more than the settings compared: "
                     + "; ".join(f"{FIELDS[f]} ({' / '.join(dict.fromkeys(differ[f].values()))})" for f in named)
                     + ". A difference in their results may come from these too.")
    if unrecorded:
        parts.append(f"{', '.join(unrecorded)} {'has' if len(unrecorded) == 1 else 'have'} no record of "
                     "where it came from (trained before runs kept one), so this cannot be checked for "
                     f"{'it' if len(unrecorded) == 1 else 'them'}.")
    return " ".join(parts) or None
