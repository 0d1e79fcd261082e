"""Any uploaded file to an 8-bit RGB image, or one clear error.

Uploads come from users, so this module assumes nothing about them: every
failure (not an image, damaged, truncated, far too large) becomes an
`ImageError` whose message can be shown as is. Predict and Explain share
`to_cifar_array`, so the network always sees an upload the same way.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

MAX_BYTES = 25 * 1024 * 1024
"""Larger uploads are refused before Pillow sees them."""

MAX_PIXELS = 40_000_000
"""Larger images are refused from their header, before any pixel is decoded."""

_HIGH_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_WHITE = (255, 255, 255, 255)
# What Pillow raises on broken input; anything else is a bug and should show.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError,
                  struct.error, zlib.error)


class ImageError(ValueError):
    """An upload that cannot become an image; the message is for the user."""


def load_image(data: bytes | str | Path | BinaryIO,
               name: str | None = None) -> Image.Image:
    """Decode `data` (bytes, a path or a binary file) into an 8-bit RGB image.

    `name` is used in error messages; it defaults to the path's or the file
    object's name. Raises `ImageError` for anything that is not a usable image.
    """
    raw, name = _read_bytes(data, name)
    try:
        with Image.open(io.BytesIO(raw)) as img:
            _check_pixels(img, name)
            img.load()
            return _to_rgb8(ImageOps.exif_transpose(img))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # the warning: a caller's filter
        raise ImageError(_too_large(name, str(e))) from e
    except ImageError:
        raise
    except _DECODE_ERRORS as e:
        raise ImageError(_decode_message(name, e)) from e


def to_cifar_array(img: Image.Image, size: int = 32, sharp_enlargement: bool = False) -> np.ndarray:
    """Centre-crop `img` to a square and resize it: uint8 `size` x `size` x 3.

    Cropping instead of squashing keeps shapes as in CIFAR-10's photos;
    Lanczos antialiasing keeps a large photo from aliasing into noise at 32 px.
    sharp_enlargement: a picture for people of an image smaller than `size` (a 32x32 test
    image shown at 224) keeps its pixels square instead of blurring them.
    """
    if img.mode != "RGB":
        raise ValueError(f"expected an RGB image (see load_image), got {img.mode}")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = img.crop((left, top, left + side, top + side))
    sharp = sharp_enlargement and side < size
    small = square.resize((size, size), Image.Resampling.NEAREST if sharp else Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.uint8)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 array to a 1x3xHxW uint8 tensor, the layout models take.

    No normalisation here: the library normalises in one place elsewhere.
    """
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 array, got "
                         f"{array.shape} {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def _read_bytes(data: bytes | str | Path | BinaryIO,
                name: str | None) -> tuple[bytes, str]:
    """Read at most MAX_BYTES + 1 bytes, so a huge upload is never held whole."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw, default = bytes(data), "the upload"
    elif isinstance(data, (str, Path)):
        path = Path(data)
        default = path.name
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except OSError as e:
            raise ImageError(f"{name or default} cannot be read: "
                             f"{e.strerror or e}") from e
    else:
        raw = data.read(MAX_BYTES + 1)
        default = Path(getattr(data, "name", None) or "the upload").name
    name = name or default
    if not raw:
        raise ImageError(f"{name} is an empty file")
    if len(raw) > MAX_BYTES:
        raise ImageError(f"{name} is over {MAX_BYTES // 2**20} MB; larger "
                         "files are refused to protect the server")
    return raw, name


def _check_pixels(img: Image.Image, name: str) -> None:
    """Refuse from the header alone, before decoding can exhaust memory: over our limit, or over Pillow's.

    Between its limit and twice it Pillow only warns (above, `open` raises). The warning is not made an
    error: that takes a warnings filter, and filters are process-wide (explain.py says why none is set
    per call), so Pillow's limit is checked here instead.
    """
    w, h = img.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and w * h > limit:
        raise ImageError(_too_large(name, f"{w}x{h} = {w * h:,} pixels, over Pillow's limit of {limit:,}"))
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name} is {w}x{h} = {_megapixels(w * h)}; images "
                         f"over {_megapixels(MAX_PIXELS)} are refused to "
                         "protect the server")


def _too_large(name: str, why: str) -> str:
    return f"{name} is far too large ({why}); images over {_megapixels(MAX_PIXELS)} are refused to protect the server"


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f} megapixels"


def _decode_message(name: str, error: Exception) -> str:
    if isinstance(error, Image.UnidentifiedImageError):
        return f"{name} is not an image (or is damaged): cannot identify image file"
    if "truncated" in str(error):
        return f"{name} is truncated: the file ends before the image does"
    return f"{name} is damaged or unsupported: {error}"


def _to_rgb8(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB, without the silent traps of convert()."""
    if img.mode in _HIGH_DEPTH_MODES:
        img = _to_8bit_grey(img)
    if img.has_transparency_data:
        # Dropping alpha would expose whatever colour hides under it.
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba)
    return img.convert("RGB")


def _to_8bit_grey(img: Image.Image) -> Image.Image:
    """Scale 16/32-bit and float greyscale to 8 bits.

    convert("L") clips these at 255, so a 16-bit photo comes out almost white.
    16-bit modes keep their brightness (divide by 257); I and F have no fixed
    range, so their actual range is stretched to 0..255.
    """
    values = np.asarray(img, dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    if img.mode.startswith("I;16"):
        scaled = values / 257.0
    elif hi > lo:
        scaled = (values - lo) * (255.0 / (hi - lo))
    else:                                   # flat image: no range to stretch
        scaled = np.clip(values, 0, 255)
    return Image.fromarray(np.rint(scaled).astype(np.uint8))
