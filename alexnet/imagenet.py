"""torchvision's ImageNet-trained AlexNet: its weights file, its preprocessing and class names, fine-tuning it.

torchvision builds the network (`torchvision.models.alexnet`) and describes its weights
(`AlexNet_Weights.IMAGENET1K_V1`: the URL, the 1000 category names, the resize, centre crop and
normalisation it was trained with, its published accuracy). This module only decides where
the 233 MB file is read from, and never downloads unless asked to:

1. a file the user names (torchvision's .pth, or the same tensors as .safetensors), read with
   weights only (`weight_files.read_state_dict`);
2. torch's hub cache, `torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth`, where
   torchvision's download puts it and where a copy made by hand is used as is;
3. `download()`: torchvision's own download into that cache, hash checked; the command line
   shows its progress bar, the app runs it in a process of its own (`start_download`) and
   follows the growing file (`download_progress`).

Offline, with no file, `WeightsMissing` names the URL to fetch and the folder to put it in.

Modules that a training run or the command line imports (models, inputs, train, cli) import this
one where they use it, not at their top: torchvision's import pulls in torch._dynamo and costs
1.5 s of a process's start (half of it), which a run on CIFAR-10 never needs. tests/test_imports.py
checks that such a process does without torchvision, captum and scipy.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models import AlexNet_Weights, alexnet
from torchvision.transforms import functional as TF

from .runs import read_json, running_pid, write_process_status
from .weight_files import CheckpointError, describe_mismatch, non_finite, read_state_dict

WEIGHTS = AlexNet_Weights.IMAGENET1K_V1
CATEGORIES: tuple[str, ...] = tuple(WEIGHTS.meta["categories"])
PREPROCESS = WEIGHTS.transforms()          # resize the shorter side to 256, centre crop 224, ImageNet mean/std
MEAN: tuple[float, float, float] = tuple(PREPROCESS.mean)
STD: tuple[float, float, float] = tuple(PREPROCESS.std)
CROP = PREPROCESS.crop_size[0]             # 224: the side of the picture the network is given
PARAMETERS: int = WEIGHTS.meta["num_params"]
FILE_MB: float = WEIGHTS.meta["_file_size"]                 # MiB, as torchvision's model tables state it
TOP1 = WEIGHTS.meta["_metrics"]["ImageNet-1K"]["acc@1"] / 100
TOP5 = WEIGHTS.meta["_metrics"]["ImageNet-1K"]["acc@5"] / 100
HEAD = "classifier.6"                      # the last layer: ImageNet's 1000 classes, replaced to fine-tune
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class WeightsMissing(FileNotFoundError):
    """The ImageNet weights are not on this machine; the message says what to fetch and where to put it."""


def build_model(num_classes: int = len(CATEGORIES), dropout: float = 0.5) -> nn.Module:
    """torchvision's AlexNet with random weights, ReLUs not in place, and what the lab's pages read off a model.

    With ImageNet's 1000 classes it takes photos as ImageNet's were prepared (`photo_pixels`,
    `image_size` 224) and names them; with any other head it is a model fine-tuned here on
    CIFAR-10, so it takes 32x32 images upsampled to 224, as it was trained.
    """
    model = alexnet(weights=None, num_classes=num_classes, dropout=dropout)
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False         # captum's Grad-CAM is silently wrong through in-place ReLUs
    imagenet_head = num_classes == len(CATEGORIES)
    model.variant, model.norm, model.input_size = "imagenet", "none", CROP
    model.mean, model.std = MEAN, STD      # its inputs are normalised as for its ImageNet training, fine-tuned too
    model.image_size = CROP if imagenet_head else 32
    if imagenet_head:
        model.classes = CATEGORIES
    return model


def photo_pixels(image: Image.Image | np.ndarray) -> np.ndarray:
    """The uint8 224x224x3 picture the ImageNet model is given: torchvision's resize (shorter side to 256,
    bilinear, antialiased) and centre crop, before normalisation. An array already 224x224x3 is taken as is."""
    if isinstance(image, np.ndarray):
        if image.shape == (CROP, CROP, 3) and image.dtype == np.uint8:
            return image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 array, got {image.shape} {image.dtype}")
        image = Image.fromarray(image)
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image (see images.load_image), got {image.mode}")
    resized = TF.resize(image, PREPROCESS.resize_size, interpolation=PREPROCESS.interpolation,
                        antialias=PREPROCESS.antialias)
    return np.asarray(TF.center_crop(resized, PREPROCESS.crop_size), dtype=np.uint8)


# ---- where the weights come from ----

def hub_file() -> Path:
    """Where torchvision's download puts the weights (and looks for them): follows $TORCH_HOME."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(WEIGHTS.url).path).name


def missing_message() -> str:
    target = hub_file()
    return (f"torchvision's ImageNet AlexNet weights are not on this machine ({target} does not exist). Online: "
            f"download them ({FILE_MB:.0f} MB) with `python -m alexnet download --imagenet` or the download button "
            f"of the ImageNet model on the Predict page. Offline: fetch {WEIGHTS.url} on a machine that is online "
            f"and put the file in {target.parent}/ under its own name, or name the file you have (.pth or "
            f".safetensors) instead.")


def weights_file(path: str | Path | None = None) -> Path:
    """The file the weights will be read from: the one named, else the hub cache's; WeightsMissing if absent."""
    if path is not None and str(path).strip():
        named = Path(path).expanduser()
        if not named.is_file():
            raise WeightsMissing(f"the ImageNet weights file {named} does not exist")
        return named
    target = hub_file()
    if not target.is_file():
        raise WeightsMissing(missing_message())
    return target


def _load_checked(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Copy `state` into `model` (as float32) once it is known to be torchvision's AlexNet with finite weights."""
    mismatch = describe_mismatch(model, state)
    if mismatch:
        raise CheckpointError(f"{source.name} is not torchvision's ImageNet AlexNet: {mismatch}")
    broken = non_finite(state)
    if broken:
        raise CheckpointError(f"{source.name} holds weights that are not finite numbers in {', '.join(broken[:4])}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})


def load_pretrained(path: str | Path | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The 1000-class ImageNet model in eval mode, from a named file or the hub cache (see the module's doc)."""
    source = weights_file(path)
    state = read_state_dict(source)
    model = build_model(len(CATEGORIES))
    _load_checked(model, state, source)
    return model.to(device).eval()


def load_pretrained_body(model: nn.Module, path: str | Path | None = None) -> None:
    """Copy the ImageNet weights into a model built with `build("imagenet", num_classes=n)`: every layer but the
    last, whose n outputs keep the model's own initialisation (the start of fine-tuning)."""
    source = weights_file(path)
    state = read_state_dict(source)
    own = model.state_dict()
    _load_checked(model, {**state, **{k: v for k, v in own.items() if k.startswith(HEAD + ".")}}, source)


# ---- downloading (online only) ----

def _status_file() -> Path:
    target = hub_file()
    return target.with_name(target.name + ".download.json")


def _write_status(state: str, **extra: object) -> None:
    path = _status_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_process_status(path, state, **extra)


def download(progress: bool = True) -> Path:
    """torchvision's download of the weights into the hub cache (hash checked), its state in a status file
    beside it for `download_progress`. Raises WeightsMissing, saying what to do offline, when it fails."""
    _write_status("running", pid=os.getpid())
    try:
        WEIGHTS.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except Exception as err:  # urllib, ssl, hash and disk errors: each means the same to the user
        message = (f"could not download {WEIGHTS.url} ({err}). Offline? Fetch it on a machine that is online and "
                   f"put it in {hub_file().parent}/ under its own name.")
        _write_status("failed", reason=message)
        raise WeightsMissing(message) from err
    _write_status("finished")
    return hub_file()


def start_download() -> int:
    """`python -m alexnet download --imagenet` in a process of its own; returns its pid."""
    target = hub_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".download.log"), "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "alexnet", "download", "--imagenet"],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=PROJECT_ROOT)
    _write_status("running", pid=process.pid)
    return process.pid


def download_progress() -> dict:
    """{"state": none|running|finished|failed, "fraction": 0..1, "reason": ...} of a download in any process.

    While it runs, the fraction is the size of torch's growing `.partial` file over the size torchvision states.
    """
    target = hub_file()
    status = read_json(_status_file())
    if not isinstance(status, dict):
        status = {"state": "none"}
    if status.get("state") == "running":
        if running_pid(status) is None:
            log = target.with_name(target.name + ".download.log")
            return {"state": "failed", "fraction": 0.0,
                    "reason": f"the download process ended before it finished (its output is in {log})"}
        sizes = [p.stat().st_size for p in target.parent.glob(target.name + ".*.partial")]
        return {**status, "fraction": min(max(sizes, default=0) / (FILE_MB * 2**20), 0.99)}
    return {**status, "fraction": 1.0 if target.is_file() else 0.0}
