"""Training steps on the CPU with large freed blocks kept in the heap (the trainer's default) against glibc as it is.

    python bench/allocator.py [--variants cifar,paper] [--batch 128] [--paper-batch 32] [--steps 8] [--rounds 2]
                              [--threads N]

Each arm runs in a fresh process, since `alexnet.allocator.keep_freed_memory` lasts for the process:
"kept" is the training loop as it runs (`start_session` asks for it), "glibc" the same loop with
ALEXNET_KEEP_FREED_MEMORY=0. The arms alternate, `--rounds` times each, and the figure of an arm is
its median step over all its rounds, with the page faults (minor) and the system CPU time per step
that explain it, and the process's peak resident memory, the price of keeping blocks.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from common import MINI, REPO, loop_step, machine, print_table

from alexnet import allocator

ARMS = {"kept": "1", "glibc": "0"}


def worker(variant: str, batch: int, steps: int, threads: int) -> dict:
    """Time `steps` steps after two of warm-up, in this process, with real images of the mini subset."""
    from alexnet.config import TrainConfig
    from alexnet.data import load_cifar10
    from alexnet.train import start_session

    if threads:
        torch.set_num_threads(threads)
    config = TrainConfig(variant=variant, norm="bn", batch_size=batch, device="cpu", max_train_images=batch * 4)
    step = loop_step(start_session(config, load_cifar10(MINI)))
    for _ in range(2):
        step()
    times, before = [], resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"times": times, "faults": (after.ru_minflt - before.ru_minflt) / steps,
            "system": (after.ru_stime - before.ru_stime) / steps, "peak_mb": after.ru_maxrss / 1024}


def run_arm(arm: str, variant: str, batch: int, args) -> dict:
    env = {**os.environ, allocator.ENV_VAR: ARMS[arm]}
    done = subprocess.run([sys.executable, __file__, "--worker", variant, str(batch), str(args.steps),
                           str(args.threads)], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="cifar,paper")
    parser.add_argument("--batch", type=int, default=128, help="batch of the 32x32 variants")
    parser.add_argument("--paper-batch", type=int, default=32, help="batch of the 227x227 paper variant")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        variant, batch, steps, threads = args.worker[0], *map(int, args.worker[1:])
        print(json.dumps(worker(variant, batch, steps, threads)))
        return 0
    print(machine())
    rows = []
    for variant in args.variants.split(","):
        batch = args.paper_batch if variant == "paper" else args.batch
        results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
        for _ in range(args.rounds):
            for arm in ARMS:
                results[arm].append(run_arm(arm, variant, batch, args))
        median = {arm: statistics.median(t for r in rs for t in r["times"]) for arm, rs in results.items()}
        for arm, rs in results.items():
            rows.append([variant, batch, arm, f"{median[arm] * 1000:.0f}",
                         f"{statistics.mean(r['faults'] for r in rs):,.0f}",
                         f"{statistics.mean(r['system'] for r in rs) * 1000:.0f}",
                         f"{max(r['peak_mb'] for r in rs):,.0f}",
                         f"{median['glibc'] / median[arm]:.2f}x"])
    print_table(["variant", "batch", "malloc", "median step ms", "page faults / step", "system ms / step",
                 "peak RSS MB", "speed vs glibc"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
