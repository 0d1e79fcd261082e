"""The AlexNet variants, each a layer list to read top to bottom against the paper.

Krizhevsky, Sutskever and Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks", NIPS 2012 (section 3 and figure 2).

Every variant takes `norm` = "lrn" | "bn" | "none": the layer that follows the
ReLU of conv1 and conv2, where the paper put local response normalisation.
So "LRN versus BN" is one argument and nothing else changes. ReLUs are never
in place: captum's Grad-CAM silently gives wrong maps through in-place ReLUs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .initialization import init_weights
from .lrn import LocalResponseNorm
from .norms import NORMS

__all__ = ["AlexNet", "VARIANTS", "Variant", "build", "summary", "LayerRow", "count_parameters"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "lrn":
        return LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)  # the paper's n, alpha, beta, k
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}: choose one of {', '.join(NORMS)}")


class AlexNet(nn.Module):
    """`features` (conv stack) and `classifier` (dropout + FC) as in torchvision, so `features[i]` can be explained."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, input_size: int,
                 variant: str, norm: str) -> None:
        super().__init__()
        self.features = features
        self.flatten = nn.Flatten(1)
        self.classifier = classifier
        self.input_size = input_size  # side of the square image the first conv expects
        self.variant, self.norm = variant, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


def _classifier(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden),    # fc6
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),         # fc7
        nn.ReLU(),
        nn.Linear(hidden, num_classes),    # fc8
    )


def paper_alexnet(norm: str = "lrn", num_classes: int = 10, dropout: float = 0.5) -> AlexNet:
    """The 2012 network at 227x227 (224 in the paper's text does not give 55x55 after conv1 without padding).

    conv2, conv4 and conv5 are grouped (groups=2): each GPU of the paper saw only its half
    of the previous layer's kernels; conv3 and the FC layers connect across both.
    """
    features = nn.Sequential(
        nn.Conv2d(3, 96, kernel_size=11, stride=4),                  # conv1  -> 96 x 55 x 55
        nn.ReLU(),
        _norm(norm, 96),
        nn.MaxPool2d(kernel_size=3, stride=2),                       # overlapping pool -> 27 x 27
        nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2),      # conv2  -> 256 x 27 x 27
        nn.ReLU(),
        _norm(norm, 256),
        nn.MaxPool2d(kernel_size=3, stride=2),                       # -> 13 x 13
        nn.Conv2d(256, 384, kernel_size=3, padding=1),               # conv3 (across both GPUs)
        nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2),     # conv4
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2),     # conv5
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),                       # -> 256 x 6 x 6
    )
    return AlexNet(features, _classifier(256 * 6 * 6, 4096, num_classes, dropout), 227, "paper", norm)


def cifar_alexnet(norm: str = "bn", num_classes: int = 10, dropout: float = 0.5) -> AlexNet:
    """AlexNet's 5 conv + 3 FC at 32x32: 5x5 and 3x3 kernels with stride 1 instead of 11x11/4.

    Channel widths are those of torchvision's one-GPU AlexNet (64-192-384-256-256); the same
    overlapping 3/2 pools and norm positions as the paper; FC layers of 512 keep it near 4 M
    parameters so it trains in minutes on a CPU.
    """
    features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=5, padding=2),                  # conv1  -> 64 x 32 x 32
        nn.ReLU(),
        _norm(norm, 64),
        nn.MaxPool2d(kernel_size=3, stride=2),                       # -> 15 x 15
        nn.Conv2d(64, 192, kernel_size=5, padding=2),                # conv2  -> 192 x 15 x 15
        nn.ReLU(),
        _norm(norm, 192),
        nn.MaxPool2d(kernel_size=3, stride=2),                       # -> 7 x 7
        nn.Conv2d(192, 384, kernel_size=3, padding=1),               # conv3
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),               # conv4
        nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),               # conv5
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),                       # -> 256 x 3 x 3
    )
    return AlexNet(features, _classifier(256 * 3 * 3, 512, num_classes, dropout), 32, "cifar", norm)


@dataclass(frozen=True)
class Variant:
    name: str
    input_size: int
    build: Callable[..., nn.Module]
    description: str
    norms: tuple[str, ...] = NORMS   # the norms it can be built with
    sgd_lr: float = 0.05             # the peak SGD rate it trains with unless one is chosen (config.with_variant)


def imagenet_alexnet(norm: str = "none", num_classes: int = 10, dropout: float = 0.5) -> nn.Module:
    """torchvision's own AlexNet at 224x224, the one-GPU layout of Krizhevsky's 2014 "One weird trick" paper:
    64-192-384-256-256 channels, ungrouped, no norm layers, FC 4096-4096. Its ImageNet weights and
    their preprocessing come from torchvision too (alexnet/imagenet.py)."""
    from . import imagenet  # here, not at the top: see imagenet.py's note on torchvision

    return imagenet.build_model(num_classes, dropout)


VARIANTS: dict[str, Variant] = {
    "paper": Variant("paper", 227, paper_alexnet,
                     "AlexNet as published in 2012: 227x227 input (CIFAR images upsampled), 11x11/4 conv1, "
                     "grouped conv2/4/5, FC 4096-4096, about 57 M parameters.", sgd_lr=0.02),
    "cifar": Variant("cifar", 32, cifar_alexnet,
                     "A 32x32-native AlexNet: the same 5 conv + 3 FC layers with 5x5/3x3 kernels and stride 1, "
                     "FC 512-512, about 3.9 M parameters; trains in minutes on a CPU."),
    "imagenet": Variant("imagenet", 224, imagenet_alexnet,
                        "torchvision's AlexNet with its ImageNet-trained weights: names photos in ImageNet's 1000 "
                        "classes, or is fine-tuned on CIFAR-10 (images upsampled to 224x224, a new 10-class last "
                        "layer); 224x224 input, no norm layers, about 57 M parameters with 10 classes.",
                        norms=("none",), sgd_lr=0.01),
}


def build(name: str, norm: str = "bn", num_classes: int = 10, dropout: float = 0.5,
          init: str = "lsuv") -> AlexNet:
    """Build a variant by name; `init` is a scheme of `initialization.INITS` (lsuv, kaiming, paper, torch)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}: choose one of {', '.join(VARIANTS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: choose one of {', '.join(NORMS)}")
    if norm not in VARIANTS[name].norms:
        raise ValueError(f"the {name} variant has no {norm} layers: choose norm {' or '.join(VARIANTS[name].norms)}")
    model = VARIANTS[name].build(norm=norm, num_classes=num_classes, dropout=dropout)
    init_weights(model, init)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class LayerRow:
    name: str            # e.g. "features.0"
    kind: str            # e.g. "Conv2d"
    output_shape: tuple[int, ...]  # without the batch dimension
    parameters: int
    mult_adds: int       # multiply-accumulates for one image


def _mult_adds(module: nn.Module, output: torch.Tensor) -> int:
    per_image = output[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_image * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def summary(model: nn.Module, input_size: int | None = None) -> list[LayerRow]:
    """Each leaf layer's output shape, parameters and multiply-adds for one image, in forward order."""
    side = input_size or getattr(model, "input_size", 32)
    rows: list[LayerRow] = []
    names = {m: n for n, m in model.named_modules()}

    def record(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        rows.append(LayerRow(names[module], type(module).__name__, tuple(output.shape[1:]),
                             sum(p.numel() for p in module.parameters(recurse=False)),
                             _mult_adds(module, output)))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return rows
