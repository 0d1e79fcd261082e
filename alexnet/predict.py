"""Classifying images: class probabilities, and which models the pages can pick.

Every image, whatever its source (upload, camera, example, test set), reaches a model as
`inputs.model_image(image, model)`: the 32x32 centre crop for a model trained on CIFAR-10,
torchvision's resize and centre crop to 224x224 for the ImageNet model, each normalised with
the model's own statistics. So the Predict page, the Explain page and `python -m alexnet
predict` see the same pixels.

Models loaded by the app are shared by every browser session (one Python process,
one thread per session), and captum attaches hooks to a model while it explains.
So every function here and in `explain.py` that runs a model does it inside
`model_in_use(model)`: one caller at a time per model, in eval mode.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from . import runs as run_records
from .checkpoints import load_model
from .data import CIFAR10_CLASSES, PROJECT_ROOT, inference_batch_size, normalization, to_model_input
from .inputs import ImageLike, ModelImage, model_image
from .weight_files import read_metadata, save_weights

DEMO_DIR = PROJECT_ROOT / "assets" / "demo"
DEMO_WEIGHTS = DEMO_DIR / "demo-cifar-bn.safetensors"
"""The small pretrained model that ships with the app (cifar variant, BN, fp16); see MODEL_CARD."""
MODEL_CARD = DEMO_DIR / "MODEL_CARD.md"
EXAMPLES_DIR = PROJECT_ROOT / "assets" / "examples"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")

_locks: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


@contextmanager
def model_in_use(model: nn.Module) -> Iterator[nn.Module]:
    """Exclusive use of `model` in eval mode for the duration of the block.

    A cached model is already in eval mode, so for it this changes nothing; a model in
    training mode (a test's fresh `build`) is switched to eval and switched back after.
    The lock keeps one session's forward pass out of another's captum hooks.
    """
    with _locks_guard:
        lock = _locks.setdefault(model, threading.RLock())
    with lock:
        was_training = model.training
        if was_training:
            model.eval()
        try:
            yield model
        finally:
            if was_training:
                model.train()


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def class_names(model: nn.Module) -> tuple[str, ...]:
    """The model's own names (the ImageNet model's 1000), else CIFAR-10's for a 10-class model; 'class i' otherwise."""
    if getattr(model, "classes", None):
        return tuple(model.classes)
    count = model.classifier[-1].out_features if hasattr(model, "classifier") else len(CIFAR10_CLASSES)
    return CIFAR10_CLASSES if count == len(CIFAR10_CLASSES) else tuple(f"class {i}" for i in range(count))


@dataclass(frozen=True)
class Prediction:
    """One image's class probabilities, with the measures of how sure the model is."""
    probabilities: tuple[float, ...]
    classes: tuple[str, ...]

    @property
    def index(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def label(self) -> str:
        return self.classes[self.index]

    @property
    def confidence(self) -> float:
        """The top probability."""
        return float(max(self.probabilities))

    @property
    def entropy_bits(self) -> float:
        return float(-sum(p * math.log2(p) for p in self.probabilities if p > 0))

    @property
    def uncertainty(self) -> float:
        """Entropy over its maximum, log2(classes): 0 = all mass on one class, 1 = every class equally likely."""
        return self.entropy_bits / math.log2(len(self.classes))

    def ranked(self) -> list[tuple[str, float]]:
        order = np.argsort(self.probabilities)[::-1]
        return [(self.classes[i], float(self.probabilities[i])) for i in order]

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        return self.ranked()[:k]


def probabilities(model: nn.Module, batch: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Softmax probabilities (N x classes, float32 on the CPU) for a uint8 N x 3 x S x S batch of the pixels
    `model` is given (`ModelImage.batch`; S = `inputs.image_size(model)`: 32, or 224 for the ImageNet model),
    `batch_size` (default: the device's `inference_batch_size`) at a time."""
    device = model_device(model)
    mean, std = normalization(model)
    batch_size = batch_size or inference_batch_size(device)
    out = []
    with model_in_use(model), torch.no_grad():
        for i in range(0, len(batch), batch_size):
            inputs = to_model_input(batch[i:i + batch_size].to(device), model.input_size, mean, std,
                                    channels_last=True)
            out.append(torch.softmax(model(inputs).float(), dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, len(class_names(model)))


def predict(model: nn.Module, image: ImageLike | ModelImage) -> Prediction:
    probs = probabilities(model, model_image(image, model).batch())[0]
    return Prediction(tuple(float(p) for p in probs), class_names(model))


def predict_images(model: nn.Module, images: Iterable[ImageLike | ModelImage], top: int = 3
                   ) -> list[list[tuple[str, float]]]:
    """The `top` (label, probability) pairs of each image, most likely first."""
    batches = [model_image(img, model).batch() for img in images]
    if not batches:
        return []
    names = class_names(model)
    return [Prediction(tuple(float(p) for p in row), names).top(top) for row in probabilities(model, torch.cat(batches))]


# ---- which models can be picked ----

@dataclass(frozen=True)
class ModelChoice:
    """A model the pages can load: the demo or a run's weights."""
    label: str           # what a picker shows
    path: Path
    kind: str            # "demo" | "run"
    variant: str
    norm: str
    detail: str          # test accuracy and dataset, for a caption


def available_models(root: str | Path | None = None) -> list[ModelChoice]:
    """The demo model first (if present), then every finished or stopped run with weights, newest first."""
    choices = []
    if DEMO_WEIGHTS.is_file():
        meta = read_metadata(DEMO_WEIGHTS)
        choices.append(ModelChoice("demo (cifar, BN, shipped with the app)", DEMO_WEIGHTS, "demo",
                                   meta.get("variant", "cifar"), meta.get("norm", "bn"), demo_summary()))
    for run in run_records.list_runs(root):
        if run.state not in ("finished", "stopped") or not run.has_weights:
            continue
        variant, norm = run.config.get("variant", "?"), run.config.get("norm", "?")
        acc = (run.result or {}).get("test_accuracy")
        if run.state == "finished" and acc is not None:
            detail = f"test accuracy {acc:.1%} on {run.result.get('dataset', 'its dataset')}"
        else:
            detail = f"stopped after epoch {run.status.get('epoch', '?')} of {run.config.get('epochs', '?')}"
        choices.append(ModelChoice(f"{run.name} ({variant}, {norm.upper()}, {run.state})",
                                   run.path / "weights.safetensors", "run", variant, norm, detail))
    return choices


def demo_summary() -> str:
    """The model card's one-line accuracy statement (the line starting 'Test accuracy')."""
    try:
        for line in MODEL_CARD.read_text().splitlines():
            if line.lower().startswith("test accuracy"):
                line = line.replace("**", "").strip()
                # as the runs' captions write it: a percentage (the card keeps the figure the tests recompute)
                return re.sub(r"^test accuracy:\s*([01]\.\d+)", lambda m: f"test accuracy {float(m[1]):.1%}", line,
                              flags=re.IGNORECASE)
    except OSError:
        pass
    return "see assets/demo/MODEL_CARD.md"


@dataclass(frozen=True)
class Example:
    """An example photo; `cifar_class` is its CIFAR-10 class when it shows one, else None."""
    path: Path
    shows: str
    cifar_class: str | None


def example_images() -> list[Example]:
    """The photos in assets/examples/, described and ordered by the table in its README (file | shows | class | ...)."""
    if not EXAMPLES_DIR.is_dir():
        return []
    described: dict[str, tuple[str, str | None]] = {}
    readme = EXAMPLES_DIR / "README.md"
    for line in readme.read_text().splitlines() if readme.is_file() else []:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and (EXAMPLES_DIR / cells[0]).is_file():
            label = cells[2].split()[0] if cells[2] else ""
            described[cells[0]] = (cells[1], label if label in CIFAR10_CLASSES else None)
    files = [p for p in sorted(EXAMPLES_DIR.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    order = list(described)                         # the README's order first (it opens with the cat)
    files.sort(key=lambda p: order.index(p.name) if p.name in order else len(order))
    return [Example(p, *described.get(p.name, (p.stem, None))) for p in files]


def saved_upload(data: bytes, filename: str, folder: str | Path | None = None) -> Path:
    """Store an uploaded checkpoint in a folder named by its hash, so loaders can read it from a path.

    The file keeps a cleaned-up copy of the user's name (loaders' messages name it) and only a
    known suffix (it tells safetensors from torch files); the same bytes and name always land
    on the same path, so the model cache recognises a re-upload.
    """
    root = Path(folder or Path(tempfile.gettempdir()) / "alexnet-lab-uploads")
    name = Path(filename).name
    suffix = Path(name).suffix.lower()
    suffix = suffix if suffix in CHECKPOINT_SUFFIXES else ""
    stem = run_records.slugify(Path(name).stem if suffix else name).replace(".", "-")
    path = root / hashlib.sha256(data).hexdigest()[:32] / (stem + suffix)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        run_records.atomic_write(path, data)
    return path


# ---- remaking the demo model ----

def export_demo(weights: str | Path, target: str | Path = DEMO_WEIGHTS) -> Path:
    """Write a run's weights as the demo model: fp16 safetensors with variant, norm and config in the metadata."""
    weights, target = Path(weights), Path(target)
    model = load_model(weights)
    config = json.loads(read_metadata(weights).get("config") or "{}") if weights.suffix == ".safetensors" else {}
    target.parent.mkdir(parents=True, exist_ok=True)
    save_weights(target, model, config, half=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alexnet.predict", description="Remake the demo model's file.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export-demo", help="write a run's weights.safetensors as the fp16 demo model")
    p.add_argument("weights")
    p.add_argument("--to", default=str(DEMO_WEIGHTS))
    args = parser.parse_args(argv)
    target = export_demo(args.weights, args.to)
    print(f"{target}: {os.path.getsize(target) / 2**20:.1f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
