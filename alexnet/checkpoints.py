"""Loading a CIFAR-10 model from a weights file: which variant and norm its tensors fit, with the mismatch named.

The file itself is read by `weight_files` (safetensors, or torch files with weights only); this
module knows the variants (`models`), so it can tell which one a file fits and name the first
mismatching layers when it fits none.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from .models import VARIANTS, AlexNet, build
from .norms import NORMS
from .weight_files import CheckpointError, describe_mismatch, non_finite, read_metadata, read_state_dict

__all__ = ["guess_architecture", "is_imagenet_classifier", "load_model"]


@functools.lru_cache(maxsize=None)
def _shapes(variant: str, norm: str, num_classes: int = 10) -> dict[str, torch.Size]:
    """The state_dict shapes of a build (read only: the dict is shared by every caller)."""
    with torch.device("meta"):  # shapes only: no memory, no time spent initialising 57 M weights
        return {k: v.shape for k, v in build(variant, norm, num_classes=num_classes, init="torch").state_dict().items()}


def _fits(state: dict[str, torch.Tensor], variant: str, norm: str, num_classes: int = 10) -> bool:
    expected = _shapes(variant, norm, num_classes)
    return expected.keys() == state.keys() and all(expected[k] == state[k].shape for k in state)


def guess_architecture(state: dict[str, torch.Tensor]) -> tuple[str, str] | None:
    """The (variant, norm) whose layers this state_dict fits exactly, if any."""
    return next(((variant, norm) for variant, spec in VARIANTS.items() for norm in spec.norms
                 if _fits(state, variant, norm)), None)


def is_imagenet_classifier(state: dict[str, torch.Tensor]) -> bool:
    """torchvision's ImageNet AlexNet itself (1000 classes), which the ImageNet model entry loads, not this.

    Its shapes come from building torchvision's model, whose import costs a process a second (imagenet.py's
    note), so a file with no 1000-row matrix (no 1000-class layer: every CIFAR-10 model) is told apart first.
    """
    if not any(t.ndim == 2 and t.shape[0] == 1000 for t in state.values()):
        return False
    return _fits(state, "imagenet", "none", num_classes=1000)


def load_model(path: str | Path, variant: str | None = None, norm: str | None = None,
               device: str | torch.device = "cpu") -> AlexNet:
    """A model in eval mode from a weights file; variant and norm come from the file's metadata when not given."""
    path = Path(path)
    if variant is not None and variant not in VARIANTS:
        raise CheckpointError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    if variant is not None and norm is not None and norm not in VARIANTS[variant].norms:
        raise CheckpointError(f"the {variant} variant has no {norm} layers: choose norm "
                              f"{' or '.join(VARIANTS[variant].norms)}, or detect")
    state = read_state_dict(path)
    if is_imagenet_classifier(state):
        raise CheckpointError(f"{path.name} is torchvision's ImageNet AlexNet (1000 classes), not a CIFAR-10 model: "
                              "pick the ImageNet model in the model picker and name this file as its weights file "
                              "(or put it in torch's hub cache)")
    meta = read_metadata(path) if path.suffix == ".safetensors" else {}
    if variant is None or norm is None:
        # The metadata is the file's own word, so it is used only when it names a known variant and norm.
        known = meta.get("variant") in VARIANTS and meta.get("norm") in NORMS
        guessed = (meta["variant"], meta["norm"]) if known else guess_architecture(state)
        if guessed is None:
            raise CheckpointError(f"{path.name} fits none of the variants ({', '.join(VARIANTS)}, with their norms); "
                                  "pick the variant it was trained as to see which layers differ")
        variant, norm = variant or guessed[0], norm or guessed[1]
        if norm not in VARIANTS[variant].norms:  # a variant named, the norm detected for another variant
            raise CheckpointError(f"{path.name} does not fit the {variant} variant: its layers are those of the "
                                  f"{guessed[0]} variant with norm={guessed[1]}")
    model = build(variant, norm, init="torch")
    mismatch = describe_mismatch(model, state)
    if mismatch:
        hint = ""
        guessed = guess_architecture(state)
        if guessed:
            hint = f" It looks like the {guessed[0]} variant with norm={guessed[1]}."
        raise CheckpointError(f"{path.name} does not fit the {variant} variant with norm={norm}: {mismatch}.{hint}")
    broken = non_finite(state)
    if broken:
        raise CheckpointError(f"{path.name} holds weights that are not finite numbers (NaN or infinity) in "
                              f"{', '.join(broken[:4])}{' ...' if len(broken) > 4 else ''}: a diverged run's weights "
                              "cannot classify anything")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device).eval()
