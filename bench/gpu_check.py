"""Does every build learn here? Each variant and norm, eager and compiled, a few epochs of real training.

    python bench/gpu_check.py [--device cuda] [--epochs 4] [--data DIR] [--variants paper,cifar]
                              [--norms lrn,bn,none] [--modes eager,compiled] [--max-train-images N]

Meant for a machine with a GPU (under 5 minutes on one H100/H200 with the defaults and the CIFAR-10 mini
subset carried beside the repo), and runnable anywhere in a smaller mode. Every row is a real run of the
training loop users run (`alexnet.train.train` with the default recipe of `TrainConfig` for the variant,
`config.with_variant`, and the norm set), on the data named, writing nothing. It prints, per build:

- the loss of the first logged step (a fresh classifier starts near ln 10 = 2.30),
- the training images per second of the epochs after the first (the first pays for compilation),
- whether compilation fell back to eager (the run's `compile_failed` event, if any),
- the final test accuracy,

and exits 1 when any build does not learn: a first loss outside ln 10 +- 0.25, a run that fails, a mean
training loss of the last epoch not clearly below the first step's, or a test accuracy not above chance by
`--margin`. The ImageNet variant needs torchvision's ImageNet weights (`python -m alexnet download
--imagenet`); without them its rows say so and do not count as failures.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, replace

import torch

from common import default_data, machine, print_table

from alexnet import imagenet, presets
from alexnet.config import TrainConfig, with_variant
from alexnet.data import load_cifar10
from alexnet.models import VARIANTS
from alexnet.train import pick_device, train

CHANCE_LOSS = math.log(10)


@dataclass
class Row:
    variant: str
    norm: str
    mode: str
    first_loss: float = math.nan
    last_loss: float = math.nan
    images_per_s: float = math.nan
    test_acc: float = math.nan
    seconds: float = 0.0
    note: str = ""

    def problems(self, margin: float) -> list[str]:
        """Why this build did not learn (empty: it did)."""
        if self.note.startswith(("failed", "skipped")):
            return [self.note] if self.note.startswith("failed") else []
        found = []
        if not abs(self.first_loss - CHANCE_LOSS) <= 0.25:
            found.append(f"first loss {self.first_loss:.2f} is not within ln 10 +- 0.25")
        if not self.last_loss < self.first_loss - 0.1:
            found.append(f"the last epoch's loss {self.last_loss:.3f} is not below the first step's {self.first_loss:.3f}")
        if not self.test_acc > 0.1 + margin:
            found.append(f"test accuracy {self.test_acc:.1%} is not above chance (10%) by {margin:.0%}")
        return found


def imagenet_weights_present() -> bool:
    try:
        imagenet.weights_file()
    except imagenet.WeightsMissing:
        return False
    return True


def recipe(variant: str, norm: str, mode: str, args) -> TrainConfig:
    """The default recipe (`TrainConfig()` at the variant's default rate), or for the ImageNet model the
    fine-tuning preset, at this size."""
    base = presets.get("imagenet-finetune").config() if variant == "imagenet" else TrainConfig()
    return replace(with_variant(base, variant), norm=norm, epochs=args.epochs, batch_size=args.batch_size,
                   device=args.device, compile=mode == "compiled", log_every=1, threads=args.threads,
                   max_train_images=args.max_train_images, seed=args.seed)


def run_build(variant: str, norm: str, mode: str, args, data) -> Row:
    row = Row(variant, norm, mode)
    events: list[dict] = []
    config = recipe(variant, norm, mode, args)
    start = time.perf_counter()
    try:
        result = train(config, None, on_event=events.append, data=data)
    except Exception as err:  # a build that cannot train is a row of the table, not the end of the check
        row.note = f"failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:160]
        return row
    row.seconds = time.perf_counter() - start
    steps = [e for e in events if e["event"] == "step"]
    epochs = [e for e in events if e["event"] == "epoch"]
    row.first_loss = steps[0]["loss"] if steps else math.nan
    row.last_loss = epochs[-1]["train_loss"] if epochs else math.nan
    later = [e["images_per_s"] for e in epochs[1:]] or [e["images_per_s"] for e in epochs]
    row.images_per_s = sum(later) / len(later) if later else math.nan
    row.test_acc = result.get("test_accuracy", math.nan)
    fallback = [e for e in events if e["event"] == "compile_failed"]
    if fallback:
        row.note = f"compile fell back to eager: {fallback[0].get('reason', '')}"[:160]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--data", default=default_data(), help="folder holding cifar-10-batches-py")
    parser.add_argument("--variants", default="paper,cifar,imagenet")
    parser.add_argument("--norms", default="lrn,bn,none")
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-train-images", type=int, default=0, help="0 = all of the data's training split")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margin", type=float, default=0.1, help="test accuracy must beat 10%% by this much")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    print(machine(device))
    data = load_cifar10(args.data)
    print(f"data: {data.source.label} at {data.source.path}; {args.epochs} epochs, batch {args.batch_size}, "
          "the default recipe of TrainConfig (SGD one-cycle to each variant's default rate: "
          f"{', '.join(f'{v} {VARIANTS[v].sgd_lr:g}' for v in VARIANTS if v != 'imagenet')}; LSUV init); "
          "the ImageNet model with the imagenet-finetune preset\n")
    rows = []
    for variant in args.variants.split(","):
        for norm in args.norms.split(","):
            if norm not in VARIANTS[variant].norms:
                continue
            for mode in args.modes.split(","):
                if variant == "imagenet" and not imagenet_weights_present():
                    rows.append(Row(variant, norm, mode, note="skipped: no ImageNet weights on this machine"))
                    continue
                rows.append(run_build(variant, norm, mode, args, data))
                print(f"  {variant}/{norm}/{mode}: done in {rows[-1].seconds:.0f} s", file=sys.stderr)
    print_table(["variant", "norm", "mode", "first loss", "last epoch loss", "img/s", "test acc", "s", "verdict"],
                [[r.variant, r.norm, r.mode, f"{r.first_loss:.3f}", f"{r.last_loss:.3f}", f"{r.images_per_s:,.0f}",
                  f"{r.test_acc:.1%}", f"{r.seconds:.0f}",
                  "; ".join(r.problems(args.margin)) or ("learns" + (f" ({r.note})" if r.note else "")
                                                         if not r.note.startswith("skipped") else r.note)]
                 for r in rows])
    failed = [r for r in rows if r.problems(args.margin)]
    print(f"\n{len(failed)} of {len(rows)} builds did not learn" if failed else f"\nall {len(rows)} builds learn")
    return 1 if failed else 0


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    sys.exit(main())
