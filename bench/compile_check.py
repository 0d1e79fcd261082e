"""Does torch.compile train and evaluate every variant and norm as eager mode does, under this torch?

    python bench/compile_check.py [--device cpu|cuda] [--variants cifar,paper,imagenet] [--norms lrn,bn,none]
                                  [--precisions fp32,auto] [--batch 8] [--paper-batch 4] [--backend inductor]
                                  [--threads N] [--data DIR|synthetic]

For each variant x norm x precision, a fresh build (no dropout) is compiled as the training loop
compiles it and put through the loop's conditions beside eager mode (alexnet.compile_check): a
training step, a second one, evaluation under no_grad in eval mode at another batch size, a step at
a third batch size. The table says `ok` or the stage and first line of the exception, and the
largest differences from eager mode: of the logits (absolute) and of the parameters' gradients
(relative). Exits 1 when a build fails or differs beyond alexnet.compile_check.TOLERANCE.

Not a timing: it needs no quiet machine. Compiling takes about a minute a build on one CPU thread;
on a GPU run it with --device cuda (the batches default to 128 there, the loop's default).
`--backend aot_eager` (or `eager`) stops after AOTAutograd (or dynamo), to see which stage fails.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback

import torch

from common import default_data, load_images, machine, print_table

from alexnet.compile_check import TOLERANCE, StageResult, agrees, check_compiled, loop_stages
from alexnet.models import VARIANTS, build
from alexnet.train import pick_device, pick_dtype


def first_line(err: BaseException) -> str:
    """The exception's type and first line; for dynamo's bare assertions (whose first line is 'from user code:'),
    the user's frame that dynamo names next."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if lines[0] == "from user code:" and len(lines) > 1:
        return f"{type(err).__name__} at {lines[1]}"
    return f"{type(err).__name__}: {lines[0]}"


def check_row(variant: str, norm: str, dtype: torch.dtype, batch: int, images: torch.Tensor, labels: torch.Tensor,
              device: torch.device, backend: str) -> tuple[list[object], bool]:
    """One table row (and whether it passed): the build compiled and run through the loop's stages."""
    torch.compiler.reset()
    torch.manual_seed(0)
    done: list[StageResult] = []
    started = time.perf_counter()
    try:
        check_compiled(build(variant, norm, dropout=0.0), images, labels, device, dtype, batch, backend,
                       on_stage=done.append)
        failed = [r.stage.name for r in done if not agrees(r, dtype)]
        outcome = f"differs from eager at: {', '.join(failed)}" if failed else "ok"
    except Exception as err:  # any compiler failure is a row of the table, not the end of the check
        stage = loop_stages(batch)[len(done)].name
        outcome = f"failed at '{stage}': {first_line(err)}"
        print(f"--- {variant}/{norm}/{str(dtype)[6:]}: {outcome}\n{traceback.format_exc(limit=-6)}", file=sys.stderr)
    logits = max((r.logits for r in done), default=float("nan"))
    gradients = max((r.gradients for r in done if r.gradients is not None), default=float("nan"))
    return ([variant, norm, str(dtype).replace("torch.", ""), batch, outcome, f"{logits:.2g}", f"{gradients:.2g}",
             f"{time.perf_counter() - started:.0f}"], outcome == "ok")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--norms", default="lrn,bn,none")
    parser.add_argument("--precisions", default="fp32,auto", help="autocast precisions: fp32, bf16, fp16, auto")
    parser.add_argument("--batch", type=int, default=0, help="training batch of the cifar variant (0: 8 on a CPU, "
                                                            "128 on a GPU)")
    parser.add_argument("--paper-batch", type=int, default=0, help="the same for variants larger than 64 pixels "
                                                                  "(paper, imagenet; 0: 4 on a CPU, 128 on a GPU)")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend: inductor, aot_eager, eager")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--data", default=default_data(), help="CIFAR-10 folder, or 'synthetic'")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    on_gpu = device.type == "cuda"
    dtypes = list(dict.fromkeys(pick_dtype(p, device) for p in args.precisions.split(",")))
    images, labels, data_label = load_images(args.data)

    print(f"torch.compile (backend {args.backend}) against eager mode under the training loop's conditions")
    print(machine(device))
    print(f"data: {data_label}")
    rows, all_ok = [], True
    for variant in args.variants.split(","):
        large = VARIANTS[variant].input_size > 64
        batch = (args.paper_batch if large else args.batch) or (128 if on_gpu else 4 if large else 8)
        for norm in args.norms.split(","):
            if norm not in VARIANTS[variant].norms:
                continue
            for dtype in dtypes:
                row, ok = check_row(variant, norm, dtype, batch, images, labels, device, args.backend)
                all_ok &= ok
                rows.append(row)
                print(f"  {' | '.join(map(str, row))}", flush=True)
    print()
    stages = ", ".join(f"{s.name} ({s.batch})" for s in loop_stages(8))
    print(f"Stages, with their batch sizes where a row's batch is 8: {stages}. Differences: the largest over the "
          f"stages run; tolerances (relative): {', '.join(f'{str(d)[6:]} {t:.2g}' for d, t in TOLERANCE.items())}.")
    print_table(["variant", "norm", "precision", "batch", "compiled", "logits max |diff|",
                 "gradients max relative diff", "seconds"], rows)
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
