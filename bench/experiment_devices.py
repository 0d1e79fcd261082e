"""Wall time of the LRN-versus-BN experiment with its runs spread over this machine's GPUs, against one at a time.

    python bench/experiment_devices.py [--seeds 3] [--epochs 4] [--variant cifar] [--max-train-images 0]
                                       [--batch-size 128] [--recipe same] [--data DIR] [--runs DIR] [--keep]

One at a time: the plan with device "cuda:0", so every run waits in that GPU's queue, as every run
did before there was a queue per device. Spread: the same plan with device "auto", so each run takes
the first free GPU (alexnet/queues.py). Both go through `experiment.launch` and `jobs.start`, real
training processes, exactly as the Compare page's button starts them; the clock runs from the launch
to the last run's end (process start, data loading and the test evaluation included). The script
also checks that the two give the same verdict and prints how far each run's test accuracy moved
(GPU kernels are not bitwise deterministic, so a few test images may change).

The recipe is "same" unless --recipe says otherwise: the figure is the runs' spread. The default
recipe of the app, "tuned", first runs each norm's range test (one after the other, each in a free
GPU's queue) in both plans, which adds the same time to both and lets the two plans' rates differ
by the GPUs' rounding.

On a machine with one device there is nothing to spread, and the script says so: the CPU is one
device (its cores are one pool that parallel runs would only share), so no CPU figure is made.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from common import MINI, machine, print_table

from alexnet import experiment
from alexnet.config import gpu_count


def run_plan(plan: experiment.ExperimentPlan, root: Path, label: str) -> tuple[float, experiment.ExperimentSummary]:
    start = time.perf_counter()
    record = experiment.launch(plan, root, name=label)
    summary = experiment.wait(record, root, poll=0.5, on_change=lambda s: print(
        f"  {label}: " + ", ".join(f"{n} {state}" for state, n in sorted(s.states.items())), flush=True))
    return time.perf_counter() - start, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--variant", default="cifar", choices=experiment.COMPARABLE_VARIANTS)
    parser.add_argument("--max-train-images", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--recipe", default="same", choices=list(experiment.RECIPES),
                        help="the experiment's recipe (default same: the figure is the runs' alone)")
    parser.add_argument("--data", default=str(MINI), help="dataset folder (default: the mini subset)")
    parser.add_argument("--runs", default=None, help="runs folder (default: a temporary one, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the runs folder")
    args = parser.parse_args()

    gpus = gpu_count()
    print(machine(torch.device("cuda") if gpus else torch.device("cpu")))
    if gpus < 2:
        found = "one GPU (cuda:0)" if gpus else "one device (the CPU)"
        print(f"\nFound {found}: an experiment's runs take turns on it, so there is nothing to spread. The figure "
              "needs a machine with two or more GPUs.")
        return
    root = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="experiment-devices-"))
    common = dict(variant=args.variant, seeds=args.seeds, epochs=args.epochs, batch_size=args.batch_size,
                  max_train_images=args.max_train_images, recipe=args.recipe, data_dir=str(Path(args.data).resolve()))
    print(f"\n{2 * args.seeds} runs ({args.variant}, {args.epochs} epochs, seeds 0-{args.seeds - 1}) on {gpus} GPUs, "
          f"runs folder {root}\n")
    try:
        spread_s, spread = run_plan(experiment.ExperimentPlan(**common, device="auto"), root, "spread")
        single_s, single = run_plan(experiment.ExperimentPlan(**common, device="cuda:0"), root, "one-at-a-time")
    finally:
        if not args.keep and not args.runs:
            shutil.rmtree(root, ignore_errors=True)
    accuracy = {(r.config["norm"], r.config["seed"]): (r.result or {}).get("test_accuracy") for r in single.runs}
    moved = [abs(a - accuracy[(r.config["norm"], r.config["seed"])]) for r in spread.runs
             if (a := (r.result or {}).get("test_accuracy")) is not None
             and accuracy.get((r.config["norm"], r.config["seed"])) is not None]
    print()
    print_table(["runs", "GPUs", "one at a time (s)", "spread (s)", "speed-up", "largest test accuracy change",
                 "same verdict level"],
                [[2 * args.seeds, gpus, f"{single_s:.0f}", f"{spread_s:.0f}", f"{single_s / spread_s:.2f}x",
                  f"{max(moved) * 100:.2f} points" if moved else "-",
                  "yes" if spread.verdict.level == single.verdict.level else "NO"]])
    print(f"\none at a time: {single.verdict.text}\nspread:        {spread.verdict.text}")


if __name__ == "__main__":
    main()
