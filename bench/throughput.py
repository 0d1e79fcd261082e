"""Training throughput, images per second: this project's engine against the usual reference loop.

    python bench/throughput.py [--variants cifar,paper] [--norms bn,lrn,none] [--steps 15]
                               [--batch 128] [--paper-batch 32] [--paper-steps 4] [--workers 0]
                               [--data DIR|synthetic] [--device cpu] [--threads N] [--precision auto]

Engine: the training loop's own step on a session of `alexnet.train.start_session` (the batch
`training_batch` makes: uint8 images on the device, `augment_batch`, channels_last; then
`session_step`), with the precision `pick_dtype` picks (bf16 autocast on CPUs with AVX-512
bf16) and the project's LRN.

Reference: a loop written the way the earlier reimplementations write it: torchvision
transforms applied image by image to PIL images through a DataLoader, float32, contiguous
(NCHW) tensors, torch's `nn.LocalResponseNorm(5, 1e-4, 0.75, 2)` in LRN builds, Adam.

Both paths train the same variant and norm at the same batch size, timed in alternating blocks
within one run; the figure is the median step. The 227x227 `paper` variant runs at a smaller
batch and fewer steps by default so the script stays within a few minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common import as_dataset, default_data, interleaved, load_images, loop_step, machine, print_table

from alexnet.config import TrainConfig
from alexnet.data import normalization
from alexnet.lrn import LocalResponseNorm
from alexnet.models import VARIANTS, build
from alexnet.train import pick_device, precision_label, start_session


def swap_lrn(model: nn.Module, make_layer: Callable[[], nn.Module]) -> nn.Module:
    """Replace the project's LRN layers of `model` by `make_layer()` (another LRN, to time it in the same step)."""
    for i, layer in enumerate(model.features):
        if isinstance(layer, LocalResponseNorm):
            model.features[i] = make_layer()
    return model


def torch_lrn(alpha: float = 1e-4) -> nn.Module:
    """torch's `nn.LocalResponseNorm(5, alpha, 0.75, 2)`; torch divides alpha by the window size, so 1e-4 is what
    reimplementations write and 5e-4 the paper's formula (the speed is the same)."""
    return nn.LocalResponseNorm(5, alpha, 0.75, 2)


def engine_step(variant: str, norm: str, batch: int, images: torch.Tensor, labels: torch.Tensor,
                device: torch.device, precision: str = "auto", lrn_layer: Callable[[], nn.Module] | None = None
                ) -> tuple[Callable[[], None], torch.dtype]:
    """One step of alexnet.train's loop, on a session it builds with TrainConfig's defaults for all not named here.

    `lrn_layer` makes the layers that replace the project's LRN, to compare LRN implementations alone.
    """
    config = TrainConfig(variant=variant, norm=norm, batch_size=batch, precision=precision, device=str(device))
    session = start_session(config, as_dataset(images, labels, "benchmark images"))
    if lrn_layer:  # LRN layers hold no parameters: the optimizer's are the same
        swap_lrn(session.model, lambda: lrn_layer().to(session.device))
    return loop_step(session), session.dtype


class PILImages(torch.utils.data.Dataset):
    """CIFAR images handed out one by one as PIL images through torchvision transforms, as tutorials do."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.images = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())  # N x 32 x 32 x 3
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def reference_transform(model: nn.Module, train: bool = True):
    from torchvision import transforms as T

    steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
    if model.input_size != 32:
        steps.append(T.Resize((model.input_size, model.input_size)))
    return T.Compose(steps + [T.ToTensor(), T.Normalize(*normalization(model))])


def reference_model(variant: str, norm: str, init: str = "torch") -> nn.Module:
    """The same layers, with torch's LocalResponseNorm as the reimplementations write it."""
    return swap_lrn(build(variant, norm, init=init), torch_lrn)


def reference_loader(images: torch.Tensor, labels: torch.Tensor, model: nn.Module, batch: int, workers: int,
                     seed: int = 0) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(PILImages(images, labels, reference_transform(model)), batch_size=batch,
                                       shuffle=True, num_workers=workers, drop_last=True,
                                       persistent_workers=workers > 0,
                                       generator=torch.Generator().manual_seed(seed))


def reference_step(variant: str, norm: str, batch: int, images: torch.Tensor, labels: torch.Tensor,
                   device: torch.device, workers: int = 0) -> Callable[[], None]:
    """One step of the reference loop: next batch from the DataLoader, fp32 forward, backward, Adam."""
    torch.manual_seed(0)
    model = reference_model(variant, norm).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = reference_loader(images, labels, model, batch, workers)
    batches = iter(loader)

    def step() -> None:
        nonlocal batches
        try:
            xb, yb = next(batches)
        except StopIteration:
            batches = iter(loader)
            xb, yb = next(batches)
        xb, yb = xb.to(device), yb.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="cifar,paper")
    parser.add_argument("--norms", default="bn,lrn,none")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per path and row (cifar)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--paper-batch", type=int, default=32, help="batch of variants larger than 64 pixels (paper, imagenet)")
    parser.add_argument("--paper-steps", type=int, default=4, help="timed steps of variants larger than 64 pixels")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the reference loop")
    parser.add_argument("--data", default=default_data(), help="CIFAR-10 folder, or 'synthetic'")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--precision", default="auto", help="engine precision: auto | fp32 | bf16")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    images, labels, data_label = load_images(args.data)

    print("Training throughput: engine (alexnet.train) against the reference loop")
    print(machine(device))
    print(f"data: {data_label}")
    rows, engine_dtype = [], None
    for variant in args.variants.split(","):
        paper = VARIANTS[variant].input_size > 64  # the 227x227 network: smaller batch, fewer steps
        batch = args.paper_batch if paper else args.batch
        steps = args.paper_steps if paper else args.steps
        warmup = min(args.warmup, 1) if paper else args.warmup
        for norm in args.norms.split(","):
            if norm not in getattr(VARIANTS[variant], "norms", (norm,)):
                continue
            engine, engine_dtype = engine_step(variant, norm, batch, images, labels, device, args.precision)
            reference = reference_step(variant, norm, batch, images, labels, device, args.workers)
            t = interleaved({"engine": engine, "reference": reference}, steps, warmup, rounds=2 if paper else 3,
                            device=device)
            e, r = t["engine"], t["reference"]
            rows.append([variant, norm, batch, steps, f"{batch / e.median_wall:.0f}", f"{batch / r.median_wall:.0f}",
                         f"{r.median_wall / e.median_wall:.2f}x", f"{r.median_cpu / e.median_cpu:.2f}x",
                         e.spread(), r.spread()])
            print(f"  {variant}/{norm}: engine {batch / e.median_wall:.0f} img/s, "
                  f"reference {batch / r.median_wall:.0f} img/s", flush=True)
    print()
    print(f"engine: {precision_label(engine_dtype)} ({args.precision}), channels_last, uint8 batches "
          f"augmented on the device, SGD; reference: float32, NCHW, PIL transforms in a DataLoader "
          f"(num_workers={args.workers}), torch's LRN, Adam. Median step after {args.warmup} warm-up steps "
          f"(variants larger than 64 pixels: 1), paths alternating in blocks.")
    print_table(["variant", "norm", "batch", "steps", "engine img/s", "reference img/s", "speed-up (wall)",
                 "speed-up (CPU time)", "engine step ms (min-max)", "reference step ms (min-max)"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
