"""CIFAR-10 from a folder to uint8 tensors, and augmentation on whole batches on the device.

Where the data comes from is decided in one place, `resolve_dataset`:
a folder the user names (argument or $ALEXNET_DATA) > a full CIFAR-10 in the usual
places > the small sample embedded in assets/. Every figure says which one it used.
"""
from __future__ import annotations

import json
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .runs import read_json, running_pid, write_process_status

BATCHES = "cifar-10-batches-py"
FULL_TRAIN, FULL_TEST = 50_000, 10_000
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = PROJECT_ROOT / "assets" / "cifar10-sample"
DEFAULT_DOWNLOAD_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "alexnet-lab"
ENV_VAR = "ALEXNET_DATA"

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel statistics of the CIFAR-10 training set, for normalisation.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class DatasetMissing(FileNotFoundError):
    """No readable dataset where the user pointed; the message says where we looked and what to do."""


class _BatchUnpickler(pickle.Unpickler):
    """Reads CIFAR's python batches, which name only numpy's array reconstruction; refuses anything else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: not part of a CIFAR-10 batch")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = _BatchUnpickler(f, encoding="latin1").load()
    data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, np.asarray(batch["labels"], dtype=np.int64)


@dataclass(frozen=True)
class DatasetSource:
    """Which dataset is in use, and how to name it in every figure."""
    kind: str          # "cifar10" (full), "subset", or "sample" (embedded)
    path: Path         # the folder holding the batches (or the sample files)
    train_count: int
    test_count: int

    @property
    def label(self) -> str:
        total = self.train_count + self.test_count
        if self.kind == "sample":
            return f"embedded sample ({total:,} images)"
        if self.kind == "subset":
            return f"CIFAR-10 subset ({total:,} images)"
        return "CIFAR-10"


@dataclass
class Cifar10:
    """The whole dataset as uint8 N x 3 x 32 x 32 tensors and int64 labels."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    source: DatasetSource


def _batches_folder(path: Path) -> Path | None:
    for candidate in (path, path / BATCHES):
        if (candidate / "data_batch_1").is_file() and (candidate / "test_batch").is_file():
            return candidate
    return None


def batches_folder(path: str | Path) -> Path | None:
    """The folder of CIFAR-10's python batches that `path` names (itself or its cifar-10-batches-py), else None;
    reads no pixels, so it can name a dataset on every rerun of a page."""
    folder = _batches_folder(Path(path).expanduser())
    return folder.resolve() if folder is not None else None


def _count_batches(folder: Path) -> tuple[int, int]:
    """Image counts without reading pixels: the batches' sizes differ only by subset."""
    train = sum(_read_batch(p)[1].size for p in sorted(folder.glob("data_batch_*")))
    return train, _read_batch(folder / "test_batch")[1].size


def _source_for(folder: Path) -> DatasetSource:
    train, test = _count_batches(folder)
    kind = "cifar10" if (train, test) == (FULL_TRAIN, FULL_TEST) else "subset"
    return DatasetSource(kind, folder, train, test)


def _sample_source(folder: Path = SAMPLE_DIR) -> DatasetSource | None:
    meta = folder / "sample.json"
    if not meta.is_file():
        return None
    info = json.loads(meta.read_text())
    return DatasetSource("sample", folder, info["train_count"], info["test_count"])


def usual_places() -> list[Path]:
    return [DEFAULT_DOWNLOAD_DIR, Path.cwd() / "data", Path.home() / "data"]


def resolve_dataset(data_dir: str | Path | None = None) -> DatasetSource:
    """The dataset to use: named folder (argument, then $ALEXNET_DATA) > full CIFAR-10 in usual places > sample."""
    named = data_dir or os.environ.get(ENV_VAR)
    if named:
        path = Path(named).expanduser()
        folder = _batches_folder(path)
        if folder is None:
            what = "does not exist" if not path.exists() else f"holds no {BATCHES}/ with data_batch_1..5 and test_batch"
            raise DatasetMissing(
                f"the dataset folder {path} {what}. Point --data (or ${ENV_VAR}) at a folder holding "
                f"CIFAR-10's python batches, or run `python -m alexnet download --data {path}` on a machine "
                "that is online.")
        try:
            return _source_for(folder)
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as err:
            raise DatasetMissing(f"the dataset folder {folder} cannot be read: {err}") from err
    for place in usual_places():
        folder = _batches_folder(place)
        if folder is not None:
            try:
                source = _source_for(folder)
            except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError):
                continue
            if source.kind == "cifar10":
                return source
    sample = _sample_source()
    if sample is not None:
        return sample
    looked = ", ".join(str(p) for p in usual_places())
    raise DatasetMissing(f"no CIFAR-10 found (looked in {looked}) and the embedded sample {SAMPLE_DIR} is missing. "
                         f"Point --data or ${ENV_VAR} at a folder, or run `python -m alexnet download`.")


def source_at(folder: str | Path) -> DatasetSource:
    """The dataset in one folder, named as `resolve_dataset` names it: CIFAR-10's batches (the full set or a
    subset) or the embedded sample's files. Lets another process be told exactly which dataset to read."""
    path = Path(folder).expanduser()
    sample = _sample_source(path)
    if sample is not None:
        return sample
    batches = _batches_folder(path)
    if batches is None:
        raise DatasetMissing(f"{path} holds neither CIFAR-10's python batches nor the embedded sample")
    try:
        return _source_for(batches)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as err:
        raise DatasetMissing(f"the dataset folder {batches} cannot be read: {err}") from err


def _read_sample(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The embedded sample: lossless WebP mosaics of 32x32 tiles, labels in sample.json."""
    from PIL import Image

    info = json.loads((folder / "sample.json").read_text())
    arrays = []
    for split in ("train", "test"):
        count = info[f"{split}_count"]
        with Image.open(folder / f"{split}.webp") as img:
            mosaic = np.asarray(img.convert("RGB"))
        cols = mosaic.shape[1] // 32
        tiles = mosaic.reshape(-1, 32, cols, 32, 3).transpose(0, 2, 4, 1, 3).reshape(-1, 3, 32, 32)
        arrays += [np.ascontiguousarray(tiles[:count]), np.asarray(info[f"{split}_labels"], dtype=np.int64)]
    return tuple(arrays)  # type: ignore[return-value]


def write_sample(data: "Cifar10", folder: Path, train_per_class: int, test_per_class: int, columns: int = 50) -> None:
    """Write the embedded sample: the first N images of each class of each split, as lossless WebP mosaics."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    info: dict = {"classes": list(data.classes), "source": str(data.source.label)}
    for split, x, y, per_class in (("train", data.train_x, data.train_y, train_per_class),
                                   ("test", data.test_x, data.test_y, test_per_class)):
        keep = torch.cat([torch.nonzero(y == c).flatten()[:per_class] for c in range(len(data.classes))]).sort().values
        tiles = x[keep].numpy()
        rows = math.ceil(len(tiles) / columns)
        padded = np.zeros((rows * columns, 3, 32, 32), dtype=np.uint8)
        padded[:len(tiles)] = tiles
        mosaic = padded.reshape(rows, columns, 3, 32, 32).transpose(0, 3, 1, 4, 2).reshape(rows * 32, columns * 32, 3)
        # Lossless at effort 50: 0.8 s for train.webp where 100 takes 18 s to save 0.4% of the bytes
        Image.fromarray(mosaic).save(folder / f"{split}.webp", lossless=True, quality=50, method=6)
        info[f"{split}_count"] = len(tiles)
        info[f"{split}_labels"] = y[keep].tolist()
        info[f"{split}_indices"] = keep.tolist()
    (folder / "sample.json").write_text(json.dumps(info))


def load_cifar10(source: DatasetSource | str | Path | None = None) -> Cifar10:
    """Read the whole dataset into memory (uint8); `source` may be a resolved source or a folder."""
    if not isinstance(source, DatasetSource):
        source = resolve_dataset(source)
    if source.kind == "sample":
        train_x, train_y, test_x, test_y = _read_sample(source.path)
    else:
        parts = [_read_batch(p) for p in sorted(source.path.glob("data_batch_*"))]
        train_x = np.concatenate([p[0] for p in parts])
        train_y = np.concatenate([p[1] for p in parts])
        test_x, test_y = _read_batch(source.path / "test_batch")
    return Cifar10(torch.from_numpy(train_x), torch.from_numpy(train_y), torch.from_numpy(test_x),
                   torch.from_numpy(test_y), CIFAR10_CLASSES, source)


ARCHIVE_BYTES = 170_498_071  # cifar-10-python.tar.gz
DOWNLOAD_STATUS = "download.json"
DOWNLOAD_DIED = "the download process ended without finishing; press Download again"


def download_target(root: str | Path | None = None) -> Path:
    return Path(root).expanduser() if root else DEFAULT_DOWNLOAD_DIR


def write_download_status(target: Path, state: str, **extra: object) -> None:
    write_process_status(target / DOWNLOAD_STATUS, state, **extra)


def live_download(root: str | Path | None = None) -> int | None:
    """The pid of the download writing into `root`'s target now, else None (none, ended, or killed)."""
    return running_pid(read_json(download_target(root) / DOWNLOAD_STATUS))


def download_cifar10(root: str | Path | None = None) -> DatasetSource:
    """Download the full CIFAR-10 with torchvision (online only) where `resolve_dataset` finds it next time.

    The archive grows at `download_target(root)/cifar-10-python.tar.gz` while it downloads, so
    another process can show progress (`download_progress`). Refuses to start while another
    process downloads into the same folder: two writers would corrupt the one archive.
    """
    from torchvision.datasets import CIFAR10

    target = download_target(root)
    target.mkdir(parents=True, exist_ok=True)
    other = live_download(target)
    if other is not None and other != os.getpid():
        raise RuntimeError(f"another download (process {other}) is already writing into {target}; "
                           "wait for it to end, or end it first")
    write_download_status(target, "running", pid=os.getpid())
    try:
        CIFAR10(str(target), train=True, download=True)
        source = _source_for(target / BATCHES)
    except Exception as err:  # urllib and tarfile raise many kinds; each means the same to the user
        message = (f"could not download CIFAR-10 into {target}: {err}. Offline? Copy the {BATCHES}/ folder of "
                   "CIFAR-10's python version there instead.")
        write_download_status(target, "failed", reason=message)
        raise DatasetMissing(message) from err
    write_download_status(target, "finished")
    return source


def download_progress(root: str | Path | None = None) -> dict:
    """{"state": none|running|finished|failed, "fraction": 0..1, "reason": ...} of a download in any process.

    A download whose status says running but whose process is gone (killed, or the machine restarted)
    reads as failed: its status file would otherwise say running forever.
    """
    target = download_target(root)
    status = read_json(target / DOWNLOAD_STATUS)
    if not isinstance(status, dict):
        return {"state": "none", "fraction": 0.0}
    archive = target / "cifar-10-python.tar.gz"
    fraction = min((archive.stat().st_size if archive.exists() else 0) / ARCHIVE_BYTES, 1.0)
    if status.get("state") == "running" and running_pid(status) is None:
        return {"state": "failed", "fraction": fraction, "reason": DOWNLOAD_DIED}
    return {**status, "fraction": fraction}


def validation_size(count: int, fraction: float) -> int:
    """How many of `count` training images `split_validation` holds out."""
    return int(round(count * fraction))


def split_validation(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A seeded random split of the training set into train and validation parts."""
    count = validation_size(len(x), fraction)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, train = order[:count], order[count:]
    return x[train], y[train], x[val], y[val]


@dataclass(frozen=True)
class Augment:
    """Batch augmentation knobs; all default to the classic CIFAR recipe (crop with padding, flip)."""
    crop_padding: int = 4          # pixels of reflect padding before a random 32x32 crop; 0 = off
    flip: bool = True              # random horizontal flip
    rotate_degrees: float = 0.0    # random rotation in +-degrees (the 95.7% report used about 36)
    zoom: float = 0.0              # random zoom in 1 +- zoom (the report used 0.1)


Stats = tuple[float, float, float]


def normalization(model: torch.nn.Module) -> tuple[Stats, Stats]:
    """The (mean, std) a model's inputs are normalised with: its own `mean`/`std` where it has them
    (torchvision's ImageNet AlexNet: ImageNet's), else CIFAR-10's (the variants trained from scratch here)."""
    return getattr(model, "mean", CIFAR10_MEAN), getattr(model, "std", CIFAR10_STD)


def normalize(x: torch.Tensor, mean: Stats = CIFAR10_MEAN, std: Stats = CIFAR10_STD) -> torch.Tensor:
    mean_ = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std_ = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_) / std_


def inference_batch_size(device: torch.device) -> int:
    """Images per forward pass when a model only predicts. On a CPU a batch of 64 keeps the activations in
    cache: the cifar variant takes 1.4x the images per second it takes in batches of 500 (one thread; the
    paper variant the same either way); a GPU fills its cores with more."""
    return 64 if device.type == "cpu" else 512


def to_model_input(x: torch.Tensor, input_size: int, mean: Stats = CIFAR10_MEAN, std: Stats = CIFAR10_STD,
                   channels_last: bool = False) -> torch.Tensor:
    """uint8 N x 3 x H x W -> normalised float at the variant's input size: the one path for eval and predict.

    `mean`/`std` are the model's (`normalization(model)`); CIFAR-10's unless it was pretrained elsewhere.
    `channels_last` lays the batch out NHWC, which a model's convolutions take faster whatever its weights' layout
    (1.4x on the cifar variant, 1.6x on the paper one, inference on a CPU), with the same values up to rounding.
    """
    out = scaled_to_model_input(x.float().div_(255), input_size, mean, std)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def scaled_to_model_input(x: torch.Tensor, input_size: int, mean: Stats = CIFAR10_MEAN, std: Stats = CIFAR10_STD
                          ) -> torch.Tensor:
    """`to_model_input` for float pictures already in [0, 1] (differentiable: activation maximisation's)."""
    out = normalize(x, mean, std)
    if out.shape[-1] != input_size:
        out = F.interpolate(out, size=(input_size, input_size), mode="bilinear", align_corners=False)
    return out


def _random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=gen.device).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=gen.device).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def _rotate_zoom(x: torch.Tensor, degrees: float, zoom: float, size: int, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen, device=gen.device) * 2 - 1) * math.radians(degrees)
    scale = 1 + (torch.rand(n, generator=gen, device=gen.device) * 2 - 1) * zoom
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                         torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def augment_batch(x: torch.Tensor, aug: Augment, input_size: int, gen: torch.Generator,
                  mean: Stats = CIFAR10_MEAN, std: Stats = CIFAR10_STD) -> torch.Tensor:
    """uint8 batch on the device -> augmented, normalised float batch at `input_size`, all on the device."""
    out = x.float().div_(255)
    if aug.crop_padding:
        out = _random_crop(out, aug.crop_padding, gen)
    if aug.flip:
        mask = torch.rand(len(out), generator=gen, device=gen.device).to(out.device) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(-1), out)
    out = normalize(out, mean, std)
    if aug.rotate_degrees or aug.zoom:
        return _rotate_zoom(out, aug.rotate_degrees, aug.zoom, input_size, gen)
    if out.shape[-1] != input_size:
        out = F.interpolate(out, size=(input_size, input_size), mode="bilinear", align_corners=False)
    return out


