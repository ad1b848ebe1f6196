"""Any photo, scan or drawing -> a 28x28 uint8 digit made the way MNIST was made.

MNIST's digits were size-normalised to fit a 20x20 box (keeping the aspect
ratio, anti-aliased) and then placed in a 28x28 field so that their centre of
mass sits at the centre, white ink on black. A model trained on that only works
on input framed the same way, so every path that turns an image into model input
(image-folder training, ``mnistkit predict``, ``mnistkit serve``) calls
:func:`preprocess_image`; normalisation then happens once, in
:func:`mnistkit.preprocess.normalize`, with the checkpoint's own statistics.

Steps, each a small function below::

    load_image       decode (PNG, JPEG, BMP, GIF frame 0, TIFF, WebP, PNM), EXIF orientation,
                     refuse empty / undecodable / over-``max_pixels`` input
    to_grayscale     alpha composited on white, 16-bit and float modes rescaled, -> uint8
    ink_on_dark      invert when the border (the background) is brighter than the ink
    isolate_ink      subtract the background level, stretch to 0..255, zero faint noise
    fit_box          crop to the ink's bounding box, scale into 20x20 (area-averaged)
    center_by_mass   paste into 28x28 with the centre of mass at (14, 14)

A 28x28 input is taken to be framed already (MNIST, Kaggle CSV, the server's
JSON pixels): it is only made grayscale and bright-on-dark, so MNIST images
pass through byte-identical.

Needs Pillow (the ``images`` or ``serve`` extra); it is imported on first use.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from mnistkit.errors import InputImageError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image as PILImage

#: Output side length and the box the digit is scaled into, in pixels (MNIST's numbers).
SIDE = 28
BOX = 20
#: Where the centre of mass goes, in 0-based pixel-index coordinates (MNIST's mean is 13.99, 14.01).
CENTER = 14.0
#: Refuse images with more pixels than this before decoding them (decompression bombs).
MAX_PIXELS = 50_000_000
#: Formats we agree to decode; Pillow's other plugins (EPS, ...) are never tried on user input.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
#: A border median above this (0..255) means a light background: the image is inverted.
LIGHT_BACKGROUND = 127
#: Less contrast than this between ink and background (0..255) counts as a blank image.
MIN_CONTRAST = 32
#: After stretching ink to 0..255, values below this are paper texture / JPEG noise, not ink.
INK_THRESHOLD = 48

ImageSource = Union[str, Path, bytes, bytearray]


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS, *, name: str | None = None) -> "PILImage.Image":
    """Decode an image file (a path, or its bytes) into an upright PIL image.

    ``name`` is what error messages call the input (default: the path, or
    ``"<bytes>"``). The size is checked from the header before any pixel is
    decoded, so a small file that would decode to gigabytes is refused cheaply.
    Any failure raises :class:`~mnistkit.errors.InputImageError` naming the input.
    """
    from PIL import Image, ImageOps

    label = name or (str(source) if isinstance(source, (str, Path)) else "<bytes>")
    data = _read_bytes(source, label)
    if not data:
        raise InputImageError(f"{label}: empty file, not an image")
    # Decoding is where hostile or broken input shows up, as any of a dozen
    # exception types (OSError, SyntaxError, struct.error, ...): all mean "bad image".
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise InputImageError(
                    f"{label}: image is {width}x{height} = {width * height:,} pixels, "
                    f"over the limit of {max_pixels:,}")
            img.seek(0)  # animated GIF / multi-page TIFF: the first frame
            img.load()  # pixels now in memory: the image outlives the closed buffer
            ImageOps.exif_transpose(img, in_place=True)  # in place: no copy when upright
            return img
    except InputImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputImageError(f"{label}: image is over the limit of {max_pixels:,} pixels "
                              f"(a decompression bomb?): {exc}") from None
    except Image.UnidentifiedImageError:
        raise InputImageError(
            f"{label}: not an image (or not one of {', '.join(ALLOWED_FORMATS)})") from None
    except Exception as exc:
        raise InputImageError(f"{label}: cannot decode image ({type(exc).__name__}: {exc})") from None


def _read_bytes(source: ImageSource, label: str) -> bytes:
    """The file's bytes; a missing or unreadable file is an :class:`InputImageError`."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    try:
        return Path(source).read_bytes()
    except FileNotFoundError:
        raise InputImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise InputImageError(f"{label}: is a directory, not an image") from None
    except OSError as exc:
        raise InputImageError(f"{label}: cannot read ({exc.strerror or exc})") from None


def preprocess_image(img: "PILImage.Image | np.ndarray") -> np.ndarray:
    """A PIL image (or a 2-D array of 0..255 values) -> uint8 ``(28, 28)``, bright ink on black.

    The single function every image goes through before normalisation. A blank
    image (no ink) gives an all-zero 28x28 array rather than an error.
    """
    gray = to_grayscale(img)
    gray = ink_on_dark(gray)
    if gray.shape == (SIDE, SIDE):
        return gray  # already framed like MNIST: touch nothing
    ink = isolate_ink(gray)
    if ink is None:
        return np.zeros((SIDE, SIDE), np.uint8)
    return center_by_mass(fit_box(ink))


def image_to_tensor(source: ImageSource, max_pixels: int = MAX_PIXELS) -> "torch.Tensor":
    """Convenience: :func:`load_image` + :func:`preprocess_image` -> ``torch.uint8 [28, 28]``."""
    import torch

    return torch.from_numpy(preprocess_image(load_image(source, max_pixels)))


def to_grayscale(img: "PILImage.Image | np.ndarray") -> np.ndarray:
    """Any PIL mode (or an array) -> uint8 ``(H, W)``; transparency is composited on white paper."""
    if isinstance(img, np.ndarray):
        return _array_to_uint8(img)
    from PIL import Image

    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _array_to_uint8(np.asarray(img), sixteen_bit=img.mode != "F")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] < 255:  # canvases send opaque RGBA: skip the work
            paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgba = Image.alpha_composite(paper, rgba)
        img = rgba
    if img.mode not in ("L", "RGB", "RGBA"):
        img = img.convert("RGB")  # palette, CMYK, YCbCr, 1-bit, ...
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.uint8).copy()


def _array_to_uint8(arr: np.ndarray, sixteen_bit: bool = False) -> np.ndarray:
    """A 2-D numeric array on the 0..255 scale -> uint8 (16-bit data is scaled down first)."""
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.size == 0:
        raise InputImageError(f"expected a 2-D grayscale image, got shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        return arr.copy()
    a = arr.astype(np.float64)
    if not np.isfinite(a).all():
        raise InputImageError("image has NaN or infinite pixel values")
    if sixteen_bit and a.max() > 255:
        a = a / 257.0  # 65535 -> 255
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def ink_on_dark(gray: np.ndarray) -> np.ndarray:
    """Invert dark-ink-on-paper images so the ink is bright, as in MNIST.

    The background is judged by the median of the outermost ring of pixels:
    the digit rarely covers most of the border, the paper does.
    """
    if _border_median(gray) > LIGHT_BACKGROUND:
        return 255 - gray
    return gray


def _border_median(gray: np.ndarray) -> float:
    ring = np.concatenate([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]])
    return float(np.median(ring))


def isolate_ink(gray: np.ndarray) -> np.ndarray | None:
    """Background level -> 0, brightest ink -> 255, faint noise -> 0; float ``(H, W)``.

    Returns ``None`` when there is no ink (a blank page: the brightest pixel is
    within :data:`MIN_CONTRAST` of the background).
    """
    background = _border_median(gray)
    ink = np.clip(gray.astype(np.float32) - background, 0, None)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        return None
    ink *= 255.0 / peak
    ink[ink < INK_THRESHOLD] = 0.0
    return ink


def fit_box(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink's bounding box and scale so the longer side is 20 px (aspect kept).

    Resampling in float mode keeps the anti-aliased grey levels MNIST's size
    normalisation produced; the result is re-stretched so thin strokes from
    large photos stay bright.
    """
    from PIL import Image

    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL wants (width, height)
    # Shrinking: BOX averages each output pixel's footprint (anti-aliased, no ringing
    # halos); enlarging a tiny crop: BILINEAR, since BOX would just copy pixels.
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    scaled = np.asarray(Image.fromarray(crop.astype(np.float32)).resize(size, resample))
    scaled = np.clip(scaled, 0, None)
    peak = float(scaled.max())
    if peak > 0:
        scaled = scaled * (255.0 / peak)
    return scaled


def center_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste a <=20x20 float digit into 28x28 uint8 with its centre of mass at (14, 14).

    The shift is a whole number of pixels (no second resampling), clamped so
    that no ink falls off the edge.
    """
    h, w = digit.shape
    total = float(digit.sum())
    if total <= 0:
        return np.zeros((SIDE, SIDE), np.uint8)
    cy = float((digit.sum(axis=1) * np.arange(h)).sum() / total)
    cx = float((digit.sum(axis=0) * np.arange(w)).sum() / total)
    # Halves round down: a symmetric 20 px digit then fills rows 4..23, the central box.
    top = int(np.clip(np.ceil(CENTER - cy - 0.5 - 1e-6), 0, SIDE - h))
    left = int(np.clip(np.ceil(CENTER - cx - 0.5 - 1e-6), 0, SIDE - w))
    out = np.zeros((SIDE, SIDE), np.float32)
    out[top:top + h, left:left + w] = digit
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
