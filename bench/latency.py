"""Latency of one prediction and one attribution map, per variant: the Predict and Explain pages' work per image.

    python bench/latency.py [--device cpu] [--threads N] [--repeats 20] [--variants cifar,paper,imagenet]

A second table times every method of `alexnet.attributions` on the cifar variant (conv5 where a method takes a
layer) against issue 16's budget (300 ms a map on a 2-core CPU with one thread, Score-CAM excepted), and the
model-randomisation sanity check of Grad-CAM (six maps and a deep copy of the model).

Prints the median (and the spread) of `repeats` calls after warm-up, for one image as the model is
given it: 32x32 for the variants trained on CIFAR-10, torchvision's 224x224 crop for the ImageNet
model. The cifar variant uses the demo model's weights; the paper variant and torchvision's ImageNet
AlexNet (1000 classes) random weights (their speed does not depend on them). Say which machine and
thread count a number comes from.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alexnet import attributions, explain, imagenet, sanity  # noqa: E402
from alexnet.checkpoints import load_model  # noqa: E402
from alexnet.images import load_image  # noqa: E402
from alexnet.inputs import model_image  # noqa: E402
from alexnet.models import build  # noqa: E402
from alexnet.predict import DEMO_WEIGHTS, EXAMPLES_DIR, predict  # noqa: E402
from alexnet.train import device_label, pick_device  # noqa: E402


def timed(fn, repeats: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--variants", default="cifar,paper,imagenet", help="comma-separated, of cifar, paper, imagenet")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    photo = load_image(EXAMPLES_DIR / "chelsea.png")
    torch.manual_seed(0)
    builders = {"cifar": lambda: load_model(DEMO_WEIGHTS, device=device),
                "paper": lambda: build("paper", "lrn", init="torch").to(device).eval(),
                "imagenet": lambda: imagenet.build_model().to(device).eval()}
    models = {name: builders[name]() for name in args.variants.split(",")}
    print(f"{device_label(device)}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"median of {args.repeats} calls after warm-up, ms (min-max)")
    header = ["variant", "prediction", "Grad-CAM (conv5)", "Guided Grad-CAM", f"Integrated Gradients ({args.ig_steps})"]
    print(" | ".join(f"{h:>24}" if i else f"{h:8}" for i, h in enumerate(header)))
    for name, model in models.items():
        image = model_image(photo, model)        # prepared once, as the pages cache it: 32x32, or 224x224
        calls = [lambda: predict(model, image),
                 lambda: explain.grad_cam(model, image, None, 3),
                 lambda: explain.guided_grad_cam(model, image, None, 3),
                 lambda: explain.integrated_gradients(model, image, 3, steps=args.ig_steps)]
        cells = []
        for call in calls:
            ms = timed(call, args.repeats)
            cells.append(f"{statistics.median(ms):8.1f} ({min(ms):.1f}-{max(ms):.1f})")
        print(" | ".join([f"{name:8}"] + [f"{c:>24}" for c in cells]))
    cifar = models.get("cifar") or builders["cifar"]()
    attribution_table(cifar, model_image(photo, cifar), args.repeats)
    return 0


BUDGET_MS = 300  # issue 16: each map but Score-CAM's, cifar variant, one thread on a 2-core CPU


def attribution_table(model, image, repeats: int) -> None:
    print(f"\nattribution maps, cifar variant (demo weights), class 3, conv5 where a method takes a layer; "
          f"ms per map, median of {repeats} (min-max); budget {BUDGET_MS} ms but Score-CAM")
    for name, method in attributions.METHODS.items():
        ms = timed(lambda: attributions.attribute(model, image, 3, "conv5", method=name), repeats)
        verdict = "no budget" if name == "Score-CAM" else ("within" if statistics.median(ms) < BUDGET_MS else "OVER")
        print(f"{name:22} {statistics.median(ms):8.1f} ({min(ms):.1f}-{max(ms):.1f})  {verdict}")
    checks = max(1, repeats // 4)
    ms = timed(lambda: sanity.randomisation_check(model, image, "Grad-CAM", 3, "conv5"), checks, warmup=1)
    print(f"{'sanity check, Grad-CAM':22} {statistics.median(ms):8.1f} ({min(ms):.1f}-{max(ms):.1f})  "
          f"({checks} runs: a copy of the model and 6 maps)")


if __name__ == "__main__":
    raise SystemExit(main())
