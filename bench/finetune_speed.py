"""Seconds per fine-tuning step of torchvision's ImageNet AlexNet on CIFAR-10, and the epoch they add up to.

    python bench/finetune_speed.py [--device cpu] [--threads N] [--batch-size 64] [--steps 6] [--precision auto]

Times `--steps` steps of the training loop itself (`alexnet.train`'s session and step: augment on the
device, upsample to 224x224, forward, backward, optimizer step) on CIFAR-10 images, frozen conv layers and all layers
trained, after warm-up. Random weights: the speed does not depend on them. The epoch time is an
extrapolation, steps per epoch times the median step, for the dataset `--data` resolves to (the mini
subset by default, as in the tests); it leaves out the validation pass and the checkpoint, which
`--eval` times separately. Say which machine and thread count a number comes from.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import MINI, loop_step, sync

from alexnet.config import TrainConfig
from alexnet.data import load_cifar10, resolve_dataset
from alexnet.train import Session, device_label, evaluate_split, pick_device, precision_label, start_session


def fine_tuning_session(freeze: bool, args, data, device: torch.device) -> Session:
    """The imagenet-finetune recipe's session, with random weights (the speed does not depend on them)."""
    config = TrainConfig(variant="imagenet", norm="none", batch_size=args.batch_size, freeze_features=freeze,
                         features_lr_scale=0.1, lr=0.01, init="torch", precision=args.precision, device=str(device),
                         val_fraction=args.val_fraction)
    return start_session(config, data, pretrained=False)


def step_seconds(session: Session, args) -> list[float]:
    """Seconds of each timed step of the training loop's own step (`common.loop_step`), after warm-up."""
    step, times = loop_step(session), []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        step()
        sync(session.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    if args.eval:
        data = session.data
        start = time.perf_counter()
        evaluate_split(session, data.test_x[:args.eval], data.test_y[:args.eval])
        print(f"  evaluation: {(time.perf_counter() - start) / args.eval * 1000:.1f} ms per image")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--data", default=str(MINI) if MINI.exists() else None)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--eval", type=int, default=0, help="also time evaluation on this many test images")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    data = load_cifar10(resolve_dataset(args.data))
    for freeze in (True, False):
        session = fine_tuning_session(freeze, args, data, device)
        if freeze:
            print(f"{device_label(device)}, {torch.get_num_threads()} threads, {precision_label(session.dtype)}, "
                  f"torch {torch.__version__}; {data.source.label}: {len(session.train_x):,} training images, "
                  f"batch {args.batch_size}, {session.steps_per_epoch} steps per epoch; median of {args.steps} "
                  f"steps after {args.warmup} of warm-up")
        times = step_seconds(session, args)
        median = statistics.median(times)
        print(f"{'frozen conv layers' if freeze else 'all layers trained':20} {median:6.2f} s per step "
              f"({min(times):.2f}-{max(times):.2f}), {args.batch_size / median:6.1f} images/s -> about "
              f"{median * session.steps_per_epoch / 60:.1f} min per epoch (extrapolated, training steps only)")
        del session  # one 57 M-parameter model and its optimizer at a time
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
