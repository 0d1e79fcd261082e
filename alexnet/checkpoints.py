"""Saving and safely loading weights: safetensors, or torch files read with weights_only.

A user's file is never unpickled with arbitrary classes: `torch.load(weights_only=True)`
refuses a pickle that would run code, and we say so. A file that does not fit the chosen
variant gets a message naming the first mismatching layers.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .models import AlexNet, NORMS, build


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
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{name} was refused: it contains Python objects other than weights, which could "
                              "run code when loaded. Save the model's state_dict() (or use safetensors).") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{name} is not a checkpoint that can be read (truncated or another format): {err}") from err
    return _find_state_dict(obj, name)


def _find_state_dict(obj: Any, name: str) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict or the common wrappers ({'model': ...}, {'state_dict': ...})."""
    if isinstance(obj, dict):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in ("model", "state_dict", "model_state_dict", "weights"):
            if isinstance(obj.get(key), dict):
                return _find_state_dict(obj[key], name)
    raise CheckpointError(f"{name} holds no weights (expected a state_dict of tensors)")


def guess_architecture(state: dict[str, torch.Tensor]) -> tuple[str, str] | None:
    """The (variant, norm) whose layers this state_dict fits exactly, if any."""
    for variant in ("cifar", "paper"):
        for norm in NORMS:
            expected = build(variant, norm, init="torch").state_dict()
            if expected.keys() == state.keys() and all(expected[k].shape == state[k].shape for k in state):
                return variant, norm
    return None


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
    state = read_state_dict(path)
    meta = read_metadata(path) if path.suffix == ".safetensors" else {}
    if variant is None or norm is None:
        guessed = (meta.get("variant"), meta.get("norm")) if meta.get("variant") else guess_architecture(state)
        if guessed is None:
            raise CheckpointError(f"{path.name} fits none of the variants (cifar or paper, with lrn, bn or none); "
                                  "pick the variant it was trained as to see which layers differ")
        variant, norm = variant or guessed[0], norm or guessed[1]
    model = build(variant, norm, init="torch")
    mismatch = describe_mismatch(model, state)
    if mismatch:
        hint = ""
        guessed = guess_architecture(state)
        if guessed:
            hint = f" It looks like the {guessed[0]} variant with norm={guessed[1]}."
        raise CheckpointError(f"{path.name} does not fit the {variant} variant with norm={norm}: {mismatch}.{hint}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device).eval()
