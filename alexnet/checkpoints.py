"""Saving and safely loading weights: safetensors, or torch files read with weights_only.

A user's file is never unpickled with arbitrary classes: `torch.load(weights_only=True)`
refuses a pickle that would run code, and we say so. A file that does not fit the chosen
variant gets a message naming the first mismatching layers.
"""
from __future__ import annotations

import functools
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .models import NORMS, VARIANTS, AlexNet, build


class CheckpointError(ValueError):
    """The file cannot be used; the message says why in a user's words."""


def _atomic(path: Path, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def discard_partial_writes(folder: Path) -> None:
    """Remove the temporary files of checkpoints (and of the environment record) whose process was killed before
    renaming them.

    Only the run's one training process writes these, so it calls this when it starts.
    """
    for pattern in (".state.pt.*.tmp", ".weights.safetensors.*.tmp", ".environment.json.*.tmp"):
        for leftover in Path(folder).glob(pattern):
            leftover.unlink(missing_ok=True)


def save_state(path: Path, state: dict) -> None:
    """The resumable state (tensors and plain types only, so weights_only loading reads it)."""
    _atomic(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"the resume state {path} cannot be read ({err}); start the run again") from err


def save_weights(path: Path, model: nn.Module, config: dict | None = None, half: bool = False) -> None:
    """Weights as safetensors, with the variant and norm in the metadata so a loader can check them."""
    tensors = {k: (v.half() if half and v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in model.state_dict().items()}
    meta = {"variant": getattr(model, "variant", ""), "norm": getattr(model, "norm", ""),
            "config": json.dumps(config or {})}
    _atomic(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{Path(path).name} is not a readable safetensors file ({err})") from err


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors or a torch .pt/.pth file, never running code from the file."""
    path = Path(path)
    name = path.name
    if not path.is_file() or path.stat().st_size == 0:
        raise CheckpointError(f"{name} is empty or missing")
    with open(path, "rb") as f:
        head = f.read(8)
    try:
        if path.suffix == ".safetensors" or (len(head) == 8 and int.from_bytes(head, "little") < 100_000_000
                                             and path.suffix not in (".pt", ".pth", ".bin", ".ckpt")):
            return load_file(str(path))
    except SafetensorError as err:
        raise CheckpointError(f"{name} is not a valid safetensors file ({err})") from err
    _refuse_compressed_archive(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):
            raise CheckpointError(f"{name} was refused: it contains Python objects other than weights, which could "
                                  "run code when loaded. Save the model's state_dict() (or use safetensors).") from err
        raise CheckpointError(f"{name} is not a PyTorch checkpoint (or it is damaged)") from err
    except Exception as err:  # torch.load meets damaged files with KeyError, IndexError, AssertionError...
        raise CheckpointError(f"{name} is not a checkpoint that can be read (truncated or another format): "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    return _find_state_dict(obj, name)


def _refuse_compressed_archive(path: Path) -> None:
    """torch.save writes its zip archive uncompressed; a compressed one can expand a small upload into gigabytes."""
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            packed = [i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED]
    except Exception as err:  # zipfile meets damaged archives with several kinds of error
        raise CheckpointError(f"{path.name} is a damaged archive: {err}") from err
    if packed:
        raise CheckpointError(f"{path.name} was refused: it holds compressed entries ({packed[0]}), which torch.save "
                              "never writes and which could expand to fill the server's memory")


def _find_state_dict(obj: Any, name: str) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict or the common wrappers ({'model': ...}, {'state_dict': ...})."""
    if isinstance(obj, dict):
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            odd = [k for k, v in obj.items() if v.layout != torch.strided or v.device.type != "cpu" or v.is_complex()]
            if odd:
                raise CheckpointError(f"{name} holds tensors that are not plain weights ({odd[0]}: "
                                      f"{obj[odd[0]].layout}, {obj[odd[0]].dtype} on {obj[odd[0]].device})")
            return obj
        for key in ("model", "state_dict", "model_state_dict", "weights"):
            if isinstance(obj.get(key), dict):
                return _find_state_dict(obj[key], name)
    raise CheckpointError(f"{name} holds no weights (expected a state_dict of tensors)")


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
    """torchvision's ImageNet AlexNet itself (1000 classes), which the ImageNet model entry loads, not this."""
    return _fits(state, "imagenet", "none", num_classes=1000)


def describe_mismatch(model: nn.Module, state: dict[str, torch.Tensor], limit: int = 4) -> str | None:
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in state and state[k].shape != expected[k].shape]
    if shapes:
        problems.append("wrong shapes: " + "; ".join(shapes[:limit]) + (" ..." if len(shapes) > limit else ""))
    if missing:
        problems.append("missing: " + ", ".join(missing[:limit]) + (" ..." if len(missing) > limit else ""))
    if unexpected:
        problems.append("unexpected: " + ", ".join(unexpected[:limit]) + (" ..." if len(unexpected) > limit else ""))
    return "; ".join(problems) or None


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
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{path.name} holds weights that are not finite numbers (NaN or infinity) in "
                              f"{', '.join(broken[:4])}{' ...' if len(broken) > 4 else ''}: a diverged run's weights "
                              "cannot classify anything")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device).eval()
