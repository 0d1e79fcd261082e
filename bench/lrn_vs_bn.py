"""What LRN costs next to batch norm: the training step of each variant built with each norm.

    python bench/lrn_vs_bn.py [--variants cifar,paper] [--steps 10] [--batch 128] [--paper-batch 32]
                              [--paper-steps 3] [--precision auto] [--device cpu] [--threads N]
                              [--data DIR|synthetic] [--no-layers] [--compare-lrn OLD_LRN.py]

Every row is the engine's real step (`alexnet.train.train_step` on a batch made as the loop makes
it: see bench/throughput.py) for the BN, LRN and no-norm builds of one variant, and the LRN build
again with torch's `nn.LocalResponseNorm` (with the paper's alpha) in place of the project's.
The builds are timed in alternating blocks in one run; ratios are of median steps. With
--compare-lrn FILE, the LocalResponseNorm of another lrn.py (say `git show REV:alexnet/lrn.py`)
is timed in the same step too.

A second table times the LRN layers alone, forward and backward, at the shapes each variant
feeds them (channels_last, in the engine's precision): the project's, torch's and BatchNorm2d.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from common import default_data, interleaved, load_images, machine, print_table
from throughput import engine_step, torch_lrn

from alexnet.lrn import LocalResponseNorm
from alexnet.models import VARIANTS, build, summary
from alexnet.train import autocast, pick_device, pick_dtype


def load_module(path: str):
    """A Python file loaded as a module of its own (an lrn.py from another commit, say)."""
    spec = importlib.util.spec_from_file_location(f"compared_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lrn_input_shapes(variant: str, batch: int) -> list[tuple[int, ...]]:
    """The N x C x H x W shapes the LRN layers of `variant` see at this batch size."""
    return [(batch, *row.output_shape) for row in summary(build(variant, "lrn", init="torch"))
            if row.kind == "LocalResponseNorm"]


def layer_ms(layer: nn.Module, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype,
             repeats: int = 5) -> float:
    """Median ms of forward + backward through `layer` on a channels_last ReLU-like input, under autocast."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).relu_().mul_(3).to(device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(shape, generator=gen).to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    layer = layer.to(device).to(memory_format=torch.channels_last)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        with autocast(device, dtype):
            y = layer(x)
        y.backward(grad.to(y.dtype))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first call warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="cifar,paper")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per build (cifar)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--paper-batch", type=int, default=32)
    parser.add_argument("--paper-steps", type=int, default=3)
    parser.add_argument("--precision", default="auto", help="auto | fp32 | bf16")
    parser.add_argument("--data", default=default_data(), help="CIFAR-10 folder, or 'synthetic'")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--no-layers", action="store_true", help="skip the table of the layers alone")
    parser.add_argument("--compare-lrn", metavar="FILE", help="another lrn.py (e.g. an older version from git) "
                        "whose LocalResponseNorm is timed in the same step, as one more column")
    return parser.parse_args()


def step_row(variant: str, batch: int, steps: int, args: argparse.Namespace, images: torch.Tensor,
             labels: torch.Tensor, device: torch.device, other) -> list:
    """One row of the step table: every build of `variant` timed in alternating blocks."""
    large = VARIANTS[variant].input_size > 64
    builds = {"bn": engine_step(variant, "bn", batch, images, labels, device, args.precision)[0],
              "lrn": engine_step(variant, "lrn", batch, images, labels, device, args.precision)[0],
              "torch lrn": engine_step(variant, "lrn", batch, images, labels, device, args.precision,
                                       lrn_layer=lambda: torch_lrn(5e-4))[0],
              "none": engine_step(variant, "none", batch, images, labels, device, args.precision)[0]}
    if other is not None:
        builds["other lrn"] = engine_step(variant, "lrn", batch, images, labels, device, args.precision,
                                          lrn_layer=other.LocalResponseNorm)[0]
    t = interleaved(builds, steps, min(args.warmup, 1) if large else args.warmup, rounds=2 if large else 3,
                    device=device)
    bn, lrn, tl, none = (t[k] for k in ("bn", "lrn", "torch lrn", "none"))
    row = [variant, batch, steps, f"{bn.median_wall * 1000:.0f}", f"{lrn.median_wall * 1000:.0f}",
           f"{lrn.median_wall / bn.median_wall:.2f}x", f"{lrn.median_cpu / bn.median_cpu:.2f}x",
           f"{tl.median_wall * 1000:.0f}", f"{tl.median_wall / bn.median_wall:.2f}x",
           f"{none.median_wall * 1000:.0f}"]
    if other is not None:
        o = t["other lrn"]
        row[-1:-1] = [f"{o.median_wall * 1000:.0f}", f"{o.median_wall / bn.median_wall:.2f}x"]
    print(f"  {variant}: BN {bn.median_wall * 1000:.0f} ms, LRN {lrn.median_wall * 1000:.0f} ms, "
          f"torch LRN {tl.median_wall * 1000:.0f} ms, none {none.median_wall * 1000:.0f} ms", flush=True)
    return row


def layer_table_rows(variant: str, batch: int, device: torch.device, dtype: torch.dtype) -> list[list]:
    """The LRN layers of `variant` alone (ours, torch's, and BatchNorm2d at the same shape), one row each."""
    rows = []
    for shape in lrn_input_shapes(variant, batch):
        ours = layer_ms(LocalResponseNorm(), shape, device, dtype)
        theirs = layer_ms(nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0), shape, device, dtype)
        batch_norm = layer_ms(nn.BatchNorm2d(shape[1]), shape, device, dtype)
        rows.append([variant, "x".join(map(str, shape)), f"{ours:.1f}", f"{theirs:.1f}",
                     f"{batch_norm:.1f}", f"{theirs / ours:.1f}x", f"{ours / batch_norm:.1f}x"])
    return rows


def main() -> int:
    args = parse_args()
    other = load_module(args.compare_lrn) if args.compare_lrn else None
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    images, labels, data_label = load_images(args.data)
    print("LRN against BN: step time of each build (engine path)")
    print(machine(device))
    print(f"data: {data_label}; precision {str(dtype).replace('torch.', '')} ({args.precision}), channels_last")

    rows, layer_rows = [], []
    for variant in args.variants.split(","):
        large = VARIANTS[variant].input_size > 64
        batch, steps = (args.paper_batch, args.paper_steps) if large else (args.batch, args.steps)
        rows.append(step_row(variant, batch, steps, args, images, labels, device, other))
        if not args.no_layers:
            layer_rows += layer_table_rows(variant, batch, device, dtype)
    print()
    print("Median step (ms) after warm-up, builds alternating in blocks; 'LRN / BN (CPU time)' compares process "
          "CPU seconds, steadier than wall time on a busy machine.")
    name = Path(args.compare_lrn).name if other is not None else ""
    other_columns = [f"{name} ms", f"{name} / BN"] if other is not None else []
    print_table(["variant", "batch", "steps", "BN ms", "LRN ms", "LRN / BN", "LRN / BN (CPU time)",
                 "torch LRN ms", "torch LRN / BN", *other_columns, "no norm ms"], rows)
    if layer_rows:
        print()
        note = "; torch's LRN runs in float32 under autocast (it has no bf16 CPU kernel)" \
            if dtype != torch.float32 and device.type == "cpu" else ""
        print(f"The layers alone, forward + backward (median of 5, ms){note}.")
        print_table(["variant", "input", "LRN", "torch LRN", "BatchNorm2d", "LRN speed-up over torch",
                     "LRN / BN"], layer_rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
