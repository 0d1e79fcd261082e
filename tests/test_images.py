"""alexnet.images: every upload becomes an 8-bit RGB image or one clear ImageError.

All files are generated here with Pillow, in memory, so each case is explicit.
"""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from alexnet import images
from alexnet.images import ImageError, load_image, to_cifar_array, to_tensor

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
RED, GREEN, BLUE = (220, 30, 30), (30, 200, 30), (30, 30, 220)


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def mean_colour(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64).reshape(-1, 3).mean(axis=0)


def assert_rgb(img: Image.Image, size: tuple[int, int]) -> None:
    assert img.mode == "RGB"
    assert img.size == size
    assert np.asarray(img).dtype == np.uint8


def png_of_zeros(width: int, height: int) -> bytes:
    """A valid 1-bit PNG built row by row: a bomb this test never holds decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    rows, z = bytes(1 + (width + 7) // 8) * 1000, zlib.compressobj(6)
    idat = b"".join(z.compress(rows) for _ in range(height // 1000))
    idat += z.compress(rows[: (height % 1000) * (len(rows) // 1000)]) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


# --- formats and modes -------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_common_formats_keep_size_and_colour(fmt):
    data = encode(Image.new("RGB", (40, 30), RED), fmt)
    img = load_image(data, name=f"x.{fmt.lower()}")
    assert_rgb(img, (40, 30))
    assert np.abs(mean_colour(img) - RED).max() < 12


@pytest.mark.parametrize("mode, fmt, value, expected", [
    ("L", "PNG", 90, (90, 90, 90)),
    ("1", "PNG", 1, (255, 255, 255)),
    ("1", "BMP", 0, (0, 0, 0)),
    ("YCbCr", "TIFF", (128, 128, 128), (128, 128, 128)),
    ("CMYK", "TIFF", (255, 0, 0, 0), (0, 255, 255)),   # pure cyan
    ("CMYK", "JPEG", (255, 0, 0, 0), (0, 255, 255)),
])
def test_other_modes_come_out_as_their_colour(mode, fmt, value, expected):
    img = load_image(encode(Image.new(mode, (16, 8), value), fmt), name="m")
    assert_rgb(img, (16, 8))
    assert np.abs(mean_colour(img) - expected).max() < 12


def test_palette_without_transparency():
    pal = Image.new("RGB", (10, 10), BLUE).convert("P", palette=Image.Palette.ADAPTIVE)
    img = load_image(encode(pal, "PNG"))
    assert_rgb(img, (10, 10))
    assert np.abs(mean_colour(img) - BLUE).max() < 4


def ramp16() -> np.ndarray:
    """16-bit values 24..65525: convert("RGB") would clip this to near white."""
    return np.linspace(24, 65525, 64 * 32).reshape(32, 64).astype(np.uint16)


@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("I;16", "TIFF"),
                                       ("I;16B", "TIFF"), ("I", "TIFF")])
def test_16_bit_greyscale_is_scaled_not_clipped(mode, fmt):
    src = Image.fromarray(ramp16())
    if mode != src.mode:
        src = src.convert(mode) if mode == "I" else Image.frombytes(
            mode, src.size, ramp16().astype(">u2").tobytes())
    img = load_image(encode(src, fmt))
    assert_rgb(img, (64, 32))
    pixels = np.asarray(img)
    assert 115 < pixels.mean() < 140                    # a ramp is mid-grey
    assert pixels.min() <= 2 and pixels.max() >= 253    # and spans the range


def test_float_image_is_stretched_to_its_range():
    values = np.linspace(0.0, 1.0, 50 * 20, dtype=np.float32).reshape(20, 50)
    img = load_image(encode(Image.fromarray(values), "TIFF"))
    assert_rgb(img, (50, 20))
    assert np.asarray(img).min() == 0 and np.asarray(img).max() == 255


def test_transparent_rgba_pixel_comes_out_white():
    src = Image.new("RGBA", (2, 1), (0, 0, 0, 0))    # black, fully transparent
    src.putpixel((1, 0), (*RED, 255))
    img = load_image(encode(src, "PNG"))
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((1, 0)) == RED


def test_half_transparent_la_is_composited_on_white():
    img = load_image(encode(Image.new("LA", (4, 4), (0, 128)), "PNG"))
    assert np.abs(mean_colour(img) - 127).max() <= 1


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_comes_out_white(fmt):
    src = Image.new("P", (4, 4), 0)
    src.putpalette([0, 0, 0, *RED])
    src.putpixel((0, 0), 1)
    img = load_image(encode(src, fmt, transparency=0))
    assert img.getpixel((0, 0)) == RED
    assert img.getpixel((3, 3)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[274] = 6                                      # rotate 90 degrees
    img = load_image(encode(Image.new("RGB", (40, 20), RED), "JPEG", exif=exif))
    assert img.size == (20, 40)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, GREEN, BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert np.abs(mean_colour(load_image(data)) - RED).max() < 12


@pytest.mark.parametrize("size", [(1, 1), (3000, 2), (2, 3000)])
def test_tiny_and_extreme_aspect_ratios(size):
    assert_rgb(load_image(encode(Image.new("RGB", size, GREEN), "PNG")), size)


# --- sources -------------------------------------------------------------------

def test_path_str_and_file_object_give_the_same_image(tmp_path):
    path = tmp_path / "cat.png"
    path.write_bytes(encode(Image.new("RGB", (5, 3), BLUE), "PNG"))
    with path.open("rb") as f:
        from_file = load_image(f)
    for img in (load_image(path), load_image(str(path)), from_file):
        assert_rgb(img, (5, 3))
        assert img.getpixel((0, 0)) == BLUE


def test_missing_path_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="nope.png cannot be read"):
        load_image(tmp_path / "nope.png")


# --- refusals ------------------------------------------------------------------

def truncated(fmt: str) -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    return data[: len(data) // 2]


@pytest.mark.parametrize("data, message", [
    (b"", "x.png is an empty file"),
    (np.random.default_rng(1).bytes(5000), "x.png is not an image"),
    (b"hello, I am a text file\n" * 20, "x.png is not an image"),
    (truncated("PNG"), "x.png is truncated"),
    (truncated("JPEG"), "x.png is truncated"),
])
def test_bad_files_raise_a_clear_error(data, message):
    with pytest.raises(ImageError, match=message):
        load_image(data, name="x.png")


def test_text_file_on_disk_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ImageError, match="notes.png is not an image"):
        load_image(path)


def test_oversized_file_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(images, "MAX_BYTES", 100)
    with pytest.raises(ImageError, match="big.png is over"):
        load_image(io.BytesIO(bytes(101)), name="big.png")


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any pixel data is decoded."""
    def refuse(self):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.parametrize("width, height, message", [
    (30000, 30000, "bomb.png is far too large"),           # Pillow's own limit
    (8000, 6000, "bomb.png is 8000x6000 = 48 megapixels"),  # ours, below Pillow's
])
def test_decompression_bombs_are_refused_from_the_header(width, height, message,
                                                         no_decoding):
    data = png_of_zeros(width, height)
    assert len(data) < 1_000_000
    filters = list(warnings.filters)
    start = time.perf_counter()
    with pytest.raises(ImageError, match=message):
        load_image(data, name="bomb.png")
    assert time.perf_counter() - start < 0.5
    assert warnings.filters == filters      # process-wide: a call never changes them


def test_an_image_pillow_only_warns_about_is_refused_too(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 10**9)   # leave it to Pillow
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.warns(Image.DecompressionBombWarning), \
            pytest.raises(ImageError, match=r"w.png is far too large \(40x30 = 1,200 pixels, over Pillow's limit"):
        load_image(encode(Image.new("L", (40, 30)), "PNG"), name="w.png")
    with warnings.catch_warnings():               # a caller that makes the warning an error gets the same refusal
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match="w.png is far too large"):
            load_image(encode(Image.new("L", (40, 30)), "PNG"), name="w.png")


# --- the network's view ------------------------------------------------------

@pytest.mark.parametrize("size", [(1, 1), (3000, 2), (2, 3000), (451, 300)])
def test_to_cifar_array_shape(size):
    array = to_cifar_array(Image.new("RGB", size, GREEN))
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8
    assert np.abs(array.astype(int) - GREEN).max() <= 1


def test_to_cifar_array_keeps_the_central_square():
    thirds = np.zeros((100, 300, 3), dtype=np.uint8)
    thirds[:, :100], thirds[:, 100:200], thirds[:, 200:] = RED, GREEN, BLUE
    array = to_cifar_array(Image.fromarray(thirds), size=16)
    assert array.shape == (16, 16, 3)
    assert np.abs(array.astype(int) - GREEN).max() <= 1


def test_a_small_image_enlarged_for_people_keeps_its_pixels_and_the_models_input_does_not_change():
    rng = np.random.default_rng(0)
    tiny = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)             # a CIFAR-10 test image
    shown = to_cifar_array(Image.fromarray(tiny), size=224, sharp_enlargement=True)
    assert np.array_equal(shown, tiny.repeat(7, axis=0).repeat(7, axis=1))  # 7x7 blocks of each pixel
    assert not np.array_equal(to_cifar_array(Image.fromarray(tiny), size=224), shown)  # Lanczos blurs it
    assert np.array_equal(to_cifar_array(Image.fromarray(tiny), 32, sharp_enlargement=True), tiny)
    photo = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))  # larger: shrunk as before
    assert np.array_equal(to_cifar_array(photo, 224, sharp_enlargement=True), to_cifar_array(photo, 224))


def test_to_cifar_array_wants_rgb():
    with pytest.raises(ValueError, match="RGB"):
        to_cifar_array(Image.new("L", (4, 4)))


def test_to_tensor_layout():
    array = np.zeros((32, 32, 3), dtype=np.uint8)
    array[..., 2] = 255
    tensor = to_tensor(array)
    assert tensor.shape == (1, 3, 32, 32) and tensor.dtype == torch.uint8
    assert tensor[0, 2].min() == 255 and tensor[0, :2].max() == 0


# --- the examples shipped with the app --------------------------------------------

def test_examples_load_and_are_documented():
    files = sorted(p for p in EXAMPLES.iterdir() if p.suffix in {".png", ".jpg"})
    assert 4 <= len(files) <= 6
    readme = (EXAMPLES / "README.md").read_text()
    for path in files:
        assert path.stat().st_size < 300_000
        assert path.name in readme
        img = load_image(path)
        assert img.mode == "RGB" and max(img.size) <= 512
        assert to_cifar_array(img).shape == (32, 32, 3)
