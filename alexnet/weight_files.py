"""Weight and state files, written atomically and read without running code; no knowledge of the models.

A user's file is never unpickled with arbitrary classes: `torch.load(weights_only=True)`
refuses a pickle that would run code, and we say so. What a file's tensors mean for a model
(which variant they fit, loading them into one) is `checkpoints.load_model`'s job, and the
ImageNet weights' is `imagenet`'s; both read files through this module.
"""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .runs import atomic_write

__all__ = ["CheckpointError", "discard_partial_writes", "save_state", "load_state", "save_weights", "read_metadata",
           "read_state_dict", "describe_mismatch", "non_finite"]


class CheckpointError(ValueError):
    """The file cannot be used; the message says why in a user's words."""


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
    atomic_write(path, lambda tmp: torch.save(state, tmp))


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
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_metadata(path: str | Path) -> dict[str, str]:
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


def describe_mismatch(model: nn.Module, state: dict[str, torch.Tensor], limit: int = 4) -> str | None:
    """Which of a file's tensors do not fit `model` (wrong shapes, missing, unexpected), or None when all fit."""
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


def _finite(tensor: torch.Tensor) -> bool:
    """A NaN or infinity makes the sum one: summing is the fast test, the element-wise one settles an overflow."""
    return not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """The names of the tensors holding a NaN or an infinity (a diverged run's weights, a damaged file)."""
    return [k for k, v in state.items() if not _finite(v)]
