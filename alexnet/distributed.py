"""Data-parallel training under `torchrun`: one process a shard of each batch, records written once.

`torchrun --nproc_per_node=N -m alexnet train ...` sets RANK, WORLD_SIZE and LOCAL_RANK; without
them everything here is a no-op, so the single-process loop pays nothing for it.
NCCL on GPUs, gloo on CPUs. `launch` starts such processes on this machine for a run whose
config asks for several (`processes`), as the app's jobs do.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1   # the processes on this machine (torchrun's --nproc_per_node)

    @property
    def main(self) -> bool:
        """Only the main process writes the run folder and talks to the user."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(tensor)
        return tensor

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process if it is true on one (a stop request reaches one process first)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def broadcast(self, value: object) -> object:
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def setup() -> Group:
    """Join the process group torchrun describes in the environment (once); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    group = Group(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                  int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(group.local_rank)
        dist.init_process_group(backend)
    return group


def current() -> Group:
    if not (dist.is_available() and dist.is_initialized()):
        return Group()
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                 int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size())))


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(args: Sequence[str], processes: int, devices: Sequence[str], stop: threading.Event) -> int:
    """Run `python -m alexnet ARGS` as `processes` data-parallel processes under torchrun on this machine and
    wait for them; returns torchrun's exit code.

    devices: the queues held for them; GPUs (`cuda:N`) become the processes' CUDA_VISIBLE_DEVICES, one a
    process. `stop` set (this process got SIGTERM or SIGINT) is passed on to torchrun, which passes it on to
    every process and gives them time to write their checkpoint.
    """
    env = dict(os.environ)
    gpus = [d.split(":", 1)[1] for d in devices if d.startswith("cuda:")]
    if gpus:
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[int(i)] if visible else i for i in gpus)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "alexnet", *args]
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
    forwarded = False
    while True:
        try:
            return process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            if stop.is_set() and not forwarded:
                process.send_signal(signal.SIGTERM)
                forwarded = True
