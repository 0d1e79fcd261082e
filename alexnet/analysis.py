"""Where results derived from a trained model are kept: test-set probabilities, top-nine images, pictures.

A run's derived results live in its own folder, `runs/<name>/analysis/`: new files beside the
run record, never a change to what `result.json` or any other record file means. A model
without a run folder (the demo model, which ships in assets/, read-only for the app) gets
`runs/.analysis/<first 16 hex digits of its weights' sha256>/<dataset>/`.

Every entry names what it was computed from (`Subject.identity`: the weights file's size and
modification time, the dataset and its number of test images). An entry that names anything
else is stale and reads as missing, so a resumed or retrained run (its weights newer than the
cache) is analysed again. Arrays are safetensors with that identity in their metadata; a
picture is a PNG with a JSON file beside it, written after it; each file is replaced
atomically. Nothing here is ever unpickled.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as save_safetensors

from .data import DatasetSource
from .runs import atomic_write, atomic_write_json, read_json, runs_root, slugify

FOLDER = "analysis"            # inside a run's folder
SHARED = ".analysis"           # inside the runs folder, for weights without a run
_META_KEY = "identity"


@dataclass(frozen=True)
class Subject:
    """A model's weights and the test set they are analysed on, with the folder that keeps what is derived."""
    weights: Path
    source: DatasetSource
    folder: Path
    run: str | None = None     # the run's name, None for weights without a run folder

    def identity(self) -> dict[str, Any]:
        """What an entry must have been computed from to be used."""
        stat = self.weights.stat()
        return {"weights_bytes": stat.st_size, "weights_mtime_ns": stat.st_mtime_ns,
                "dataset": self.source.label, "test_images": self.source.test_count}

    def path(self, name: str) -> Path:
        return self.folder / name


def weights_digest(path: Path) -> str:
    """The sha256 of a weights file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def subject(weights: str | Path, source: DatasetSource, root: str | Path | None = None) -> Subject:
    """The subject for a weights file: a run's `weights.safetensors` keeps its results in the run's folder,
    any other file (the demo) in the runs folder's `.analysis/`, keyed by the file's hash and the dataset."""
    weights = Path(weights).resolve()
    base = runs_root(root).resolve()
    if weights.name == "weights.safetensors" and weights.parent.parent == base:
        return Subject(weights, source, weights.parent / FOLDER, weights.parent.name)
    return Subject(weights, source, base / SHARED / weights_digest(weights)[:16] / slugify(source.label))


def _identity_of(meta: Any) -> Any:
    return meta.get(_META_KEY) if isinstance(meta, dict) else None


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], subject: Subject) -> None:
    """Named arrays as one safetensors file, with `meta` and the subject's identity as its metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    header = {"meta": json.dumps({**meta, _META_KEY: subject.identity()})}
    atomic_write(path, save_safetensors(data, metadata=header))


def _read_arrays(path: Path, subject: Subject, with_arrays: bool
                 ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    try:
        with safe_open(str(path), framework="np") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
            if _identity_of(meta) != subject.identity():
                return None
            return ({k: f.get_tensor(k) for k in f.keys()} if with_arrays else {}), meta
    except (FileNotFoundError, SafetensorError, json.JSONDecodeError, OSError):
        return None


def load_arrays(path: Path, subject: Subject) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The arrays and metadata of an entry computed from this subject; None if missing, unreadable or stale."""
    return _read_arrays(path, subject, with_arrays=True)


def is_fresh(path: Path, subject: Subject) -> bool:
    """Whether the entry at `path` (an arrays file, or a picture's PNG) was computed from this subject."""
    if path.suffix == ".png":
        return _identity_of(read_json(path.with_suffix(".json"))) == subject.identity() and path.is_file()
    return _read_arrays(path, subject, with_arrays=False) is not None


def save_picture(path: Path, rgb: np.ndarray, meta: Mapping[str, Any], subject: Subject) -> None:
    """An RGB uint8 picture as PNG, then its metadata as JSON beside it (`path` with .json): the JSON's
    presence says the picture is complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    atomic_write(path, buffer.getvalue())
    atomic_write_json(path.with_suffix(".json"), {**meta, _META_KEY: subject.identity()})


def load_picture(path: Path, subject: Subject) -> tuple[np.ndarray, dict[str, Any]] | None:
    """A picture and its metadata computed from this subject; None if missing, unreadable or stale."""
    meta = read_json(path.with_suffix(".json"))
    if _identity_of(meta) != subject.identity():
        return None
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB")), meta
    except (OSError, ValueError):
        return None
