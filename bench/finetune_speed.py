"""Seconds per fine-tuning step of torchvision's ImageNet AlexNet on CIFAR-10, and the epoch they add up to.

    python bench/finetune_speed.py [--device cpu] [--threads N] [--batch-size 64] [--steps 6] [--precision auto]

Times `--steps` real training steps as the training loop takes them (augment on the device, upsample to
224x224, forward, backward, optimizer step) on CIFAR-10 images, frozen conv layers and all layers
trained, after warm-up. Random weights: the speed does not depend on them. The epoch time is an
extrapolation, steps per epoch times the median step, for the dataset `--data` resolves to (the mini
subset by default, as in the tests); it leaves out the validation pass and the checkpoint, which
`--eval` times separately. Say which machine and thread count a number comes from.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alexnet.config import TrainConfig  # noqa: E402
from alexnet.data import Augment, augment_batch, load_cifar10, normalization, resolve_dataset  # noqa: E402
from alexnet.models import build  # noqa: E402
from alexnet.train import autocast, device_label, evaluate, make_optimizer, pick_device, pick_dtype  # noqa: E402

MINI = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar-10-mini"


def step_seconds(freeze: bool, args, data, device, dtype) -> list[float]:
    config = TrainConfig(variant="imagenet", norm="none", batch_size=args.batch_size, freeze_features=freeze,
                         features_lr_scale=0.1, lr=0.01)
    torch.manual_seed(0)
    model = build("imagenet", "none", init="torch")
    if freeze:
        model.features.requires_grad_(False)
    model = model.to(device).to(memory_format=torch.channels_last).train()
    optimizer = make_optimizer(config, model)
    gen = torch.Generator(device=device).manual_seed(0)
    x, y = data.train_x.to(device), data.train_y.to(device)
    times = []
    for step in range(args.warmup + args.steps):
        idx = torch.randint(0, len(x), (args.batch_size,), generator=torch.Generator().manual_seed(step)).to(device)
        start = time.perf_counter()
        inputs = augment_batch(x[idx], Augment(), model.input_size, gen, *normalization(model))
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            loss = F.cross_entropy(model(inputs).float(), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    if args.eval:
        start = time.perf_counter()
        evaluate(model, data.test_x[:args.eval], data.test_y[:args.eval], device, dtype, channels_last=True)
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
    dtype = pick_dtype(args.precision, device)
    data = load_cifar10(resolve_dataset(args.data))
    train_images = len(data.train_x) - int(round(len(data.train_x) * args.val_fraction))
    steps_per_epoch = max(train_images // args.batch_size, 1)
    print(f"{device_label(device)}, {torch.get_num_threads()} threads, {str(dtype).replace('torch.', '')}, "
          f"torch {torch.__version__}; {data.source.label}: {train_images:,} training images, batch {args.batch_size}, "
          f"{steps_per_epoch} steps per epoch; median of {args.steps} steps after {args.warmup} of warm-up")
    for freeze in (True, False):
        times = step_seconds(freeze, args, data, device, dtype)
        median = statistics.median(times)
        print(f"{'frozen conv layers' if freeze else 'all layers trained':20} {median:6.2f} s per step "
              f"({min(times):.2f}-{max(times):.2f}), {args.batch_size / median:6.1f} images/s -> about "
              f"{median * steps_per_epoch / 60:.1f} min per epoch (extrapolated, training steps only)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
