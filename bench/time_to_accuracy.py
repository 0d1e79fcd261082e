"""Wall time until the cifar BN variant first reaches a test accuracy (55%), engine against reference.

    python bench/time_to_accuracy.py [--target 0.55] [--max-epochs 15] [--engine-epochs N] [--precision fp32]
                                     [--data DIR] [--device cpu] [--threads N] [--workers 0] [--skip-reference]

Engine: the training loop's own parts (`alexnet.train.start_session`, `train_one_epoch`,
`end_epoch`: all that `train` runs but the run folder) with the "fast-cpu-demo" preset (cifar
variant, BN, SGD one-cycle, batch 64, bf16 autocast where the CPU has it, channels_last; 10% of
the training images held out for validation), run for the preset's own length (its schedule
depends on it) unless --engine-epochs says otherwise. Reference: the loop of bench/throughput.py
(torchvision transforms on PIL images, float32, NCHW) with Adam at 1e-3, batch 128, PyTorch's
default init, all training images, up to --max-epochs.

Both are evaluated on the test batch at the end of every epoch; evaluation is not counted. The
clock is training time only: steps with their data loading and augmentation (for the engine, the
time its epoch events report, which leaves out its own validation pass too). A recipe that does
not get there says "not reached".
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from common import MINI, machine, print_table
from throughput import reference_loader, reference_model

from alexnet.data import load_cifar10
from alexnet.presets import get as get_preset
from alexnet.train import (end_epoch, evaluate, evaluate_split, pick_device, precision_label, start_session,
                           train_one_epoch)


@dataclass
class Curve:
    """Test accuracy after each epoch, and the training seconds spent by then."""
    recipe: str
    target: float
    points: list[tuple[int, float, float]] = field(default_factory=list)  # (epoch, seconds, test accuracy)

    def add(self, epoch: int, seconds: float, accuracy: float) -> bool:
        self.points.append((epoch, seconds, accuracy))
        print(f"  {self.recipe}: epoch {epoch}, {seconds:.1f} s, test accuracy {accuracy:.1%}", flush=True)
        return accuracy >= self.target

    @property
    def reached(self) -> tuple[int, float] | None:
        return next(((e, s) for e, s, a in self.points if a >= self.target), None)

    @property
    def median_epoch(self) -> float:
        """Seconds of the median epoch: a burst of load from other processes moves it far less than a sum."""
        ends = [s for _, s, _ in self.points]
        return statistics.median(b - a for a, b in zip([0.0] + ends, ends)) if ends else float("nan")

    def row(self) -> list[str]:
        reached = self.reached
        best = max((a for _, _, a in self.points), default=float("nan"))
        seconds = self.points[-1][1] if self.points else 0.0
        return [self.recipe, f"{reached[1]:.0f} s" if reached else "not reached",
                f"{reached[0] * self.median_epoch:.0f} s" if reached else "not reached",
                str(reached[0]) if reached else f"not in {len(self.points)}", f"{len(self.points)}",
                f"{seconds:.0f} s", f"{self.median_epoch:.1f} s", f"{best:.1%}",
                " ".join(f"{a:.0%}" for _, _, a in self.points)]


def engine_curve(data, target: float, device_name: str, epochs: int | None, precision: str | None = None
                 ) -> tuple[Curve, str]:
    """The preset's run through the training loop's own parts, the test set measured after each epoch."""
    config = get_preset("fast-cpu-demo").config(epochs=epochs)
    config.device = device_name
    config.precision = precision or config.precision
    session = start_session(config, data)
    curve = Curve(f"engine, fast-cpu-demo preset ({config.epochs} epochs, {precision_label(session.dtype)})", target)
    while session.position.epoch < config.epochs:
        end_epoch(session, train_one_epoch(session))
        _, accuracy, _ = evaluate_split(session, data.test_x, data.test_y)
        if curve.add(session.position.epoch, session.position.elapsed, accuracy):
            break
    detail = (f"{config.optimizer.upper()} lr {config.lr} {config.schedule}, batch {config.batch_size}, "
              f"dropout {config.dropout}, {precision_label(session.dtype)}, channels_last, "
              f"{1 - config.val_fraction:.0%} of the training images")
    return curve, detail


def reference_curve(data, target: float, device: torch.device, max_epochs: int, workers: int) -> Curve:
    curve = Curve(f"reference, Adam 1e-3 (up to {max_epochs} epochs)", target)
    torch.manual_seed(0)
    model = reference_model("cifar", "bn").to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = reference_loader(data.train_x, data.train_y, model, 128, workers)
    seconds = 0.0
    for epoch in range(1, max_epochs + 1):
        start = time.perf_counter()
        model.train()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
        seconds += time.perf_counter() - start
        _, accuracy, _ = evaluate(model, data.test_x, data.test_y, device)
        if curve.add(epoch, seconds, accuracy):
            break
    return curve


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.55, help="test accuracy to reach (0..1)")
    parser.add_argument("--max-epochs", type=int, default=15, help="cap of the reference loop")
    parser.add_argument("--engine-epochs", type=int, default=None, help="engine run length (default: the preset's)")
    parser.add_argument("--precision", default=None, help="engine precision instead of the preset's (auto): fp32 | bf16")
    parser.add_argument("--data", default=str(MINI), help="CIFAR-10 folder (the mini subset by default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the reference loop")
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    data = load_cifar10(args.data)
    print(f"Time to {args.target:.0%} test accuracy, cifar variant with BN")
    print(machine(device))
    print(f"data: {data.source.label} at {data.source.path}: {len(data.train_x):,} training, "
          f"{len(data.test_x):,} test images")
    engine, detail = engine_curve(data, args.target, args.device, args.engine_epochs, args.precision)
    curves = [engine]
    if not args.skip_reference:
        curves.append(reference_curve(data, args.target, device, args.max_epochs, args.workers))
    print()
    reference = "" if args.skip_reference else (
        f"; reference: float32, NCHW, PIL transforms (crop 4 + flip) in a DataLoader (num_workers={args.workers}), "
        "batch 128, dropout 0.5, all training images")
    print(f"engine: {detail}{reference}. Seconds are training time (steps and their data), evaluation left out.")
    print_table(["recipe", f"time to {args.target:.0%}", "epochs x median epoch", "epoch", "epochs run",
                 "training time", "median epoch", "best", "test accuracy by epoch"], [c.row() for c in curves])
    if len(curves) == 2 and all(c.reached for c in curves):
        engine, reference = curves
        print(f"\nspeed-up to {args.target:.0%}: {reference.reached[1] / engine.reached[1]:.2f}x measured, "
              f"{reference.reached[0] * reference.median_epoch / (engine.reached[0] * engine.median_epoch):.2f}x "
              "from epochs x median epoch (steadier when other processes load the machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
