"""Reading and decoding images: bounded reads, format allow-list, reduced-size JPEG decoding,
EXIF orientation, grayscale, and the working-size shrink. The first steps of
:func:`mnistkit.preprocess.image.analyze_image`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from mnistkit.errors import InputImageError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image as PILImage


#: Refuse images with more pixels than this before decoding them (decompression bombs).
MAX_PIXELS = 50_000_000
#: Refuse images whose pixels, as Pillow holds them in memory, take more than this many bytes,
#: checked from the header (after JPEG's reduced-size setup) before any pixel is decoded. The
#: pixel limit alone let a 304 KB float TIFF of 50 MP (4 bytes a pixel, then float copies while
#: converting) take 1.3 GB. 64 MiB holds 50 MP of 8-bit grey or palette, 16 MP of colour, float or alpha;
#: the steps after decoding make a few copies of it at most.
MAX_DECODED_BYTES = 64 * 1024**2
#: Bytes a pixel takes in Pillow's memory, by mode (Pillow keeps 2 and 3 bands in 4 bytes).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
#: Refuse image files (and standard input) larger than this, in bytes, before reading them whole.
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Formats we agree to decode; Pillow's other plugins (EPS, ...) are never tried on user input.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
#: A border median above this (0..255) means a light background: the image is inverted.
LIGHT_BACKGROUND = 127
#: Photos are analysed with at most this many pixels on the long side: a digit 60 px tall in a
#: 640 px frame keeps ~60 px, far more than the 20 px it ends as. JPEGs decode straight to it.
WORK_SIDE = 320

ImageSource = str | Path | bytes | bytearray


def load_image(
    source: ImageSource,
    max_pixels: int = MAX_PIXELS,
    *,
    name: str | None = None,
    max_bytes: int = MAX_FILE_BYTES,
    work_side: int = WORK_SIDE,
) -> PILImage.Image:
    """Decode an image file (a path, or its bytes) into an upright PIL image, reduced in size.

    ``name`` is what error messages call the input (default: the path, or
    ``"<bytes>"``). Only regular files are read, and at most ``max_bytes`` of
    them. The size is checked from the header before any pixel is decoded, so a
    small file that would decode to gigabytes is refused cheaply; JPEGs are then
    decoded at 1/2, 1/4 or 1/8 scale when that still leaves :data:`WORK_SIDE`
    pixels (the DCT does the shrinking: a 12-megapixel photo costs a fraction
    of a full decode; ``work_side`` asks for more, as number reading does). What the pixels will
    take in memory, by mode (float, 16-bit, colour, alpha), is checked against
    :data:`MAX_DECODED_BYTES` before they are decoded. Any failure raises
    :class:`~mnistkit.errors.InputImageError` whose message starts with the input's name.
    """
    from PIL import Image, ImageOps

    label = name or (str(source) if isinstance(source, (str, Path)) else "<bytes>")
    data = _read_bytes(source, label, max_bytes)
    if not data:
        raise InputImageError(f"{label}: empty file, not an image")
    # Decoding is where hostile or broken input shows up, as any of a dozen
    # exception types (OSError, SyntaxError, struct.error, ...): all mean "bad image".
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise InputImageError(
                    f"{label}: image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
                )
            img.seek(0)  # animated GIF / multi-page TIFF: the first frame
            if img.format == "JPEG" and img.mode in ("L", "RGB"):
                # Luma only (the model reads grey; no colour conversion), at 1/2, 1/4 or 1/8 scale
                # when that still leaves WORK_SIDE px: draft keeps at least the size asked for.
                scale = min(1.0, work_side / max(width, height))
                img.draft("L", (int(width * scale) + 1, int(height * scale) + 1))
            _check_decoded_size(img, label)
            img.load()  # pixels now in memory: the image outlives the closed buffer
            ImageOps.exif_transpose(img, in_place=True)  # in place: no copy when upright
            return img
    except InputImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputImageError(
            f"{label}: image is over the limit of {max_pixels:,} pixels (a decompression bomb?): {exc}"
        ) from None
    except Image.UnidentifiedImageError:
        raise InputImageError(f"{label}: not an image (or not one of {', '.join(ALLOWED_FORMATS)})") from None
    except Exception as exc:
        raise InputImageError(f"{label}: cannot decode image ({type(exc).__name__}: {exc})") from None


def _check_decoded_size(img: PILImage.Image, label: str) -> None:
    """Refuse an image whose pixels would take over :data:`MAX_DECODED_BYTES` in memory (known
    from the header: size and mode; a JPEG's after :meth:`~PIL.Image.Image.draft`)."""
    width, height = img.size
    decoded = width * height * _PIXEL_BYTES.get(img.mode, 4)
    if decoded > MAX_DECODED_BYTES:
        raise InputImageError(
            f"{label}: image is {width}x{height} in mode {img.mode}: {decoded:,} bytes once decoded, over the "
            f"limit of {MAX_DECODED_BYTES:,}; scale it down or save it as 8-bit grey or JPEG"
        )


def _read_bytes(source: ImageSource, label: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The file's bytes: regular files only (a FIFO or device is refused without waiting on it),
    at most ``max_bytes`` (:func:`mnistkit.fileio.read_bytes`, the one bounded reader)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > max_bytes:
            raise InputImageError(f"{label}: {len(source):,} bytes, over the limit of {max_bytes:,}")
        return bytes(source)
    from mnistkit.fileio import read_bytes

    try:
        return read_bytes(source, max_bytes, InputImageError)
    except InputImageError as exc:
        if label != str(source):  # the caller's name for it (e.g. an upload's file name)
            raise InputImageError(str(exc).replace(str(source), label, 1)) from None
        raise


def read_limited(stream: IO[bytes], label: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """At most ``max_bytes`` from a stream (standard input, an upload): one byte more is an error,
    so an endless stream (``< /dev/zero``) costs bounded memory and ends in one clear line."""
    try:
        data = stream.read(max_bytes + 1)
    except OSError as exc:
        raise InputImageError(f"{label}: cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise InputImageError(f"{label}: more than {max_bytes:,} bytes, over the limit")
    return data


def to_grayscale(img: PILImage.Image | np.ndarray) -> np.ndarray:
    """Any PIL mode (or an array) -> uint8 ``(H, W)``; transparency is composited on white paper."""
    if isinstance(img, np.ndarray):
        return _array_to_uint8(img)
    from PIL import Image

    if img.width == 0 or img.height == 0:  # a PIL image built in code can be empty; no file decodes to one
        raise InputImageError(f"image is {img.width}x{img.height}: no pixels")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _array_to_uint8(np.asarray(img), sixteen_bit=img.mode != "F")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")  # convert() would copy an RGBA image
        lowest_alpha = int(np.asarray(rgba.getchannel("A")).min())  # faster than getextrema
        if lowest_alpha < 255:  # canvases send opaque RGBA: skip the work
            paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgba = Image.alpha_composite(paper, rgba)
        img = rgba
    if img.mode not in ("L", "RGB", "RGBA"):
        img = img.convert("RGB")  # palette, CMYK, YCbCr, 1-bit, ...
    if img.mode != "L":
        img = img.convert("L")
    return np.array(img, dtype=np.uint8)


def _array_to_uint8(arr: np.ndarray, sixteen_bit: bool = False) -> np.ndarray:
    """A 2-D numeric array on the 0..255 scale -> uint8 (16-bit data is scaled down first).

    Works in float32 (half the memory of float64; 0..65535 is exact in it).
    """
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.size == 0:
        raise InputImageError(f"expected a 2-D grayscale image, got shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        return arr.copy()
    if arr.dtype.kind in "iub":
        if sixteen_bit and int(arr.max()) > 255:
            # The high byte: 65535 -> 255, and 8-bit data stored as v * 257 comes back exactly.
            return (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
        return np.clip(arr, 0, 255).astype(np.uint8)
    a = arr.astype(np.float32)
    if not np.isfinite(a).all():
        raise InputImageError("image has NaN or infinite pixel values")
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def border_median(gray: np.ndarray) -> float:
    ring = np.concatenate([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]])
    return float(np.median(ring))


def shrink_factor(shape: tuple[int, ...]) -> int:
    """By how much :func:`shrink` reduces an image of ``shape`` (1: not at all)."""
    return max(1, -(-max(shape) // WORK_SIDE))  # ceiling division


def shrink(gray: np.ndarray) -> np.ndarray:
    """At most :data:`WORK_SIDE` px on the long side, by a whole-factor box reduction (each output
    pixel the mean of its block: strokes stay anti-aliased, no ringing)."""
    factor = shrink_factor(gray.shape)
    if factor <= 1:
        return gray
    from PIL import Image

    return np.asarray(Image.fromarray(gray).reduce(factor))
