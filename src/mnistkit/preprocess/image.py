"""Any photo, scan or drawing -> a 28x28 uint8 digit made the way MNIST was made.

MNIST's digits were size-normalised to fit a 20x20 box (keeping the aspect
ratio, anti-aliased) and then placed in a 28x28 field so that their centre of
mass sits at the centre, white ink on black. A model trained on that only works
on input framed the same way, so every path that turns an image into model input
(image-folder training, ``mnistkit predict``, ``mnistkit serve``) calls
:func:`preprocess_image` (or :func:`analyze_image`, which also says what it
found; :func:`analyze_number` for a written number); normalisation then happens
once, in :func:`mnistkit.preprocess.normalize`, with the checkpoint's own statistics.

Steps, each a small function below::

    load_image       read at most MAX_FILE_BYTES of a regular file, decode (PNG, JPEG, BMP,
                     GIF frame 0, TIFF, WebP, PNM) at reduced size where the format allows
                     (JPEG: ``Image.draft``), EXIF orientation, refuse over-``max_pixels`` input
    to_grayscale     alpha composited on white, 16-bit and float modes rescaled, -> uint8
    shrink           at most WORK_SIDE px on the long side (whole-factor box reduction)
    ink_contrast     the paper's brightness estimated *locally* (max-filter + blur on a coarse
                     grid, so vignettes, light gradients and shadows are flattened), each
                     pixel's ink = how much darker than its local paper it is, 0..255
    ink_mask         Otsu's threshold on that contrast (never below MIN_INK)
    find_pieces      connected components; specks dropped, pieces touching the border (page
                     edge, shadows) dropped when anything else is left, the rest grouped
                     into digits by horizontal overlap (the two strokes of a 4 are one digit)
    fit_box          crop to the kept ink's bounding box, scale into 20x20 (area-averaged)
    center_by_mass   paste into 28x28 with the centre of mass at (14, 14)

A 28x28 input is taken to be framed already (MNIST, Kaggle CSV, the server's
JSON pixels): it is only made grayscale and bright-on-dark, so MNIST images
pass through byte-identical.

Needs Pillow and SciPy (the ``images`` or ``serve`` extra); they are imported on first use.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

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
#: Refuse image files (and standard input) larger than this, in bytes, before reading them whole.
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Formats we agree to decode; Pillow's other plugins (EPS, ...) are never tried on user input.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
#: A border median above this (0..255) means a light background: the image is inverted.
LIGHT_BACKGROUND = 127
#: Photos are analysed with at most this many pixels on the long side: a digit 60 px tall in a
#: 640 px frame keeps ~60 px, far more than the 20 px it ends as. JPEGs decode straight to it.
WORK_SIDE = 320
#: The paper's brightness is estimated on a copy about this many px on the long side, with a
#: closing window of 1/PAPER_WINDOW of it: wider than any pen stroke of a digit that fits the frame.
PAPER_SIDE = 160
PAPER_WINDOW = 8
#: A patch vote (:func:`_dark_ink_votes`, grey levels summed over patches) this far from 0 settles
#: the polarity of a dark-bordered image; a closer one is settled by comparing both readings.
SURE_VOTE = 32
#: Paper darker than this (0..255) is treated as this bright when measuring ink contrast.
DARK_PAPER = 64
#: Even light: the brightest pixels of an EVEN_GRID x EVEN_GRID grid of cells differ by at most
#: EVEN_LIGHT levels (0..255). Then one paper level serves the whole image (a drawing, a flat scan).
EVEN_GRID = 8
EVEN_LIGHT = 12
#: Ink is at least this much darker than its local paper (0..255 of the paper's brightness):
#: the floor under Otsu's threshold, so paper grain and JPEG noise on a blank page are not ink.
MIN_INK = 40
#: Number reading: ink at least this share of Otsu's threshold (and MIN_INK) is kept where it
#: joins ink above the threshold (hysteresis).
WEAK_INK = 0.6
#: After stretching the digit's ink to 0..255, grown-edge values below this are noise, not ink.
FAINT = 48
#: Pieces smaller than this share of the largest piece (in pixels) are specks, not ink.
SPECK = 0.03
#: Two pieces belong to one digit when their columns overlap by this share of the narrower one.
SAME_DIGIT_OVERLAP = 0.5
#: Up to this many connected pieces, their sizes are counted box by box (else in one image pass).
FEW_PIECES = 16
#: A separate ink group at least this share of the digit's size (pixels) counts as another digit.
OTHER_DIGIT = 0.25
#: A group shorter than this share of the tallest group is part of a digit, not a digit.
SHORT = 0.5
#: In a number, a group under this share of the largest group's pixels is a speck (a thin 1 or
#: 7 in a grey pen can be a quarter of a bold 8).
NUMBER_SPECK = 0.1
#: In a number, neighbouring groups closer than DIGIT_GAP of their height and together no wider
#: than ONE_DIGIT_WIDTH of it are one digit (digits are ~0.5-0.8 as wide as tall, and written apart).
DIGIT_GAP = 0.02
ONE_DIGIT_WIDTH = 0.8
#: A group wider than this many times its height is taken to be touching digits (numbers):
#: "clearly two wide"; wide single digits (a flat 0 or 2) reach ~1.5.
TOUCHING_WIDTH = 1.6

ImageSource = str | Path | bytes | bytearray


@dataclass(frozen=True)
class DigitAnalysis:
    """What :func:`analyze_image` made of one image: the model input and what it found on the way.

    ``digit``: uint8 ``(28, 28)``, bright ink on black (all zero when no ink was found).
    ``digits_found``: separate digit-sized ink groups (0: blank; 1: one digit; 2+: several).
    ``ink_share``: share of the whole (working-size) image that is ink; near 1 when ink fills it.
    ``box_fill``: share of the 28x28 frame's pixels that are solid ink (>= 128); MNIST digits
    rarely pass 0.4, a photographed object or a filled blob does.
    ``framed``: the input was already 28x28 and passed through untouched.
    """

    digit: np.ndarray
    digits_found: int
    ink_share: float
    box_fill: float
    framed: bool = False

    def to_dict(self) -> dict:
        return {
            "digits_found": self.digits_found,
            "ink_share": round(self.ink_share, 4),
            "box_fill": round(self.box_fill, 4),
            "framed": self.framed,
        }


# --- reading and decoding -------------------------------------------------------------------------


def load_image(
    source: ImageSource, max_pixels: int = MAX_PIXELS, *, name: str | None = None, max_bytes: int = MAX_FILE_BYTES
) -> PILImage.Image:
    """Decode an image file (a path, or its bytes) into an upright PIL image, reduced in size.

    ``name`` is what error messages call the input (default: the path, or
    ``"<bytes>"``). Only regular files are read, and at most ``max_bytes`` of
    them. The size is checked from the header before any pixel is decoded, so a
    small file that would decode to gigabytes is refused cheaply; JPEGs are then
    decoded at 1/2, 1/4 or 1/8 scale when that still leaves :data:`WORK_SIDE`
    pixels (the DCT does the shrinking: a 12-megapixel photo costs a fraction
    of a full decode). Any failure raises :class:`~mnistkit.errors.InputImageError`
    whose message starts with the input's name.
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
                scale = min(1.0, WORK_SIDE / max(width, height))
                img.draft("L", (int(width * scale) + 1, int(height * scale) + 1))
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


# --- the one preprocessing path -------------------------------------------------------------------


def preprocess_image(img: PILImage.Image | np.ndarray) -> np.ndarray:
    """A PIL image (or a 2-D array of 0..255 values) -> uint8 ``(28, 28)``, bright ink on black.

    The single function every image goes through before normalisation. A blank
    image (no ink) gives an all-zero 28x28 array rather than an error.
    """
    return analyze_image(img).digit


def analyze_image(img: PILImage.Image | np.ndarray) -> DigitAnalysis:
    """:func:`preprocess_image`'s work, also saying what it found (see :class:`DigitAnalysis`).

    The unsure rule (:func:`mnistkit.prediction.unsure_reason`) reads the findings.
    """
    gray = to_grayscale(img)
    paper_is_light = _border_median(gray) > LIGHT_BACKGROUND
    if gray.shape == (SIDE, SIDE):
        digit = 255 - gray if paper_is_light else gray  # already framed like MNIST: touch nothing else
        return _framed_analysis(digit)
    ink = ink_map(shrink(gray), paper_is_light)
    groups, ink_share = find_pieces(ink_mask(ink))
    if not groups:
        return DigitAnalysis(np.zeros((SIDE, SIDE), np.uint8), 0, ink_share, 0.0)
    main = max(groups, key=lambda g: g.area)
    digit = frame_digit(ink, main.mask)
    return DigitAnalysis(digit, _count_digits(groups), ink_share, _box_fill(digit))


def analyze_number(img: PILImage.Image | np.ndarray) -> list[DigitAnalysis]:
    """A written number -> one analysis (and MNIST-framed 28x28 digit) per digit, left to right.

    Ink pieces are grouped by column overlap (the strokes of a 4 or a 5 are one
    digit), faint strokes joined to bold ink kept (:func:`ink_mask`'s hysteresis),
    specks and border-touching shadows dropped as for single digits, and
    a group much wider than tall is cut at its thinnest columns into as many
    digit-wide parts as its width suggests (digits that touch). Empty when no ink.
    """
    gray = to_grayscale(img)
    ink = ink_map(shrink(gray), _border_median(gray) > LIGHT_BACKGROUND)
    groups, ink_share = find_pieces(ink_mask(ink, keep_faint=True))
    if groups:
        largest, tallest = max(g.area for g in groups), max(g.height for g in groups)
        groups = [g for g in groups if g.area >= NUMBER_SPECK * largest and g.height >= SHORT * tallest]
    masks = []
    for group in _merge_narrow_neighbours(sorted(groups, key=lambda g: g.left)):
        masks.extend(split_touching(group.mask))
    digits = [frame_digit(ink, m) for m in masks]
    return [DigitAnalysis(d, 1, ink_share, _box_fill(d)) for d in digits]


def _merge_narrow_neighbours(groups: list[_Group]) -> list[_Group]:
    """Left-to-right groups -> the same, with neighbours that touch or overlap in columns (no
    gap of :data:`DIGIT_GAP` of the height between them) joined when together they are still
    no wider than one digit (:data:`ONE_DIGIT_WIDTH` of their height): the two strokes of a 4,
    or the bar and body of a 5, that the column-overlap rule left apart."""
    out: list[_Group] = []
    for group in groups:
        if out:
            prev = out[-1]
            left, right = min(prev.left, group.left), max(prev.right, group.right)
            top, bottom = min(prev.top, group.top), max(prev.bottom, group.bottom)
            if group.left - prev.right <= DIGIT_GAP * (bottom - top) and right - left <= ONE_DIGIT_WIDTH * (
                bottom - top
            ):
                out[-1] = _Group(prev.mask | group.mask, prev.area + group.area, left, right, top, bottom)
                continue
        out.append(group)
    return out


def image_to_tensor(source: ImageSource, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Convenience: :func:`load_image` + :func:`preprocess_image` -> ``torch.uint8 [28, 28]``."""
    import torch

    return torch.from_numpy(preprocess_image(load_image(source, max_pixels)))


def _framed_analysis(digit: np.ndarray) -> DigitAnalysis:
    """Findings for an already-framed 28x28 digit (the server's canvas pixels, MNIST itself)."""
    groups, _ = find_pieces(digit >= 128)
    if not groups:
        return DigitAnalysis(digit, 0, 0.0, 0.0, framed=True)
    fill = _box_fill(digit)
    return DigitAnalysis(digit, _count_digits(groups), fill, fill, framed=True)


def _count_digits(groups: list[_Group]) -> int:
    """The largest group, plus every other group at least :data:`OTHER_DIGIT` of its size and
    :data:`SHORT` of its height (a far-off dash or underline is not another digit)."""
    main = max(groups, key=lambda g: g.area)
    return sum(1 for g in groups if g.area >= OTHER_DIGIT * main.area and g.height >= SHORT * main.height)


def _box_fill(digit: np.ndarray) -> float:
    return float((digit >= 128).mean())


# --- grayscale ------------------------------------------------------------------------------------


def to_grayscale(img: PILImage.Image | np.ndarray) -> np.ndarray:
    """Any PIL mode (or an array) -> uint8 ``(H, W)``; transparency is composited on white paper."""
    if isinstance(img, np.ndarray):
        return _array_to_uint8(img)
    from PIL import Image

    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _array_to_uint8(np.asarray(img), sixteen_bit=img.mode != "F")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")  # convert() would copy an RGBA image
        if rgba.getchannel("A").getextrema()[0] < 255:  # canvases send opaque RGBA: skip the work
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


def shrink(gray: np.ndarray) -> np.ndarray:
    """At most :data:`WORK_SIDE` px on the long side, by a whole-factor box reduction (each output
    pixel the mean of its block: strokes stay anti-aliased, no ringing)."""
    factor = -(-max(gray.shape) // WORK_SIDE)  # ceiling division
    if factor <= 1:
        return gray
    from PIL import Image

    return np.asarray(Image.fromarray(gray).reduce(factor))


# --- finding the ink ------------------------------------------------------------------------------


def ink_map(gray: np.ndarray, paper_is_light: bool) -> np.ndarray:
    """:func:`ink_contrast` in the right polarity.

    A light border means dark ink on paper. A dark border is either light ink
    on a dark ground (a chalkboard, an MNIST-style drawing) or a dark photo of
    paper (dim light, a vignette, a shadow over the edges). Ink is the minority
    of the pixels near it, so a vote over patches (:func:`_dark_ink_votes`)
    says which. Shadow edges in a dim photo can sway a close vote towards
    light ink (under :data:`SURE_VOTE`), so then both readings are made and
    the one whose digit looks drawn wins: read the wrong way round, the ink
    is the space *between* strokes (a lit wedge between shadows, the hole of a
    0), which frames as a solid blob, where pen strokes fill little of their
    box (:func:`_solidity`).
    """
    if paper_is_light:
        return ink_contrast(gray, True)
    votes = _dark_ink_votes(gray)
    if votes >= 0 or votes <= -SURE_VOTE:
        return ink_contrast(gray, votes >= 0)
    dark, light = ink_contrast(gray, True), ink_contrast(gray, False)
    return dark if _solidity(dark) < _solidity(light) else light


def _solidity(ink: np.ndarray) -> float:
    """Box fill (:func:`_box_fill`) of the largest digit one contrast reading finds; 2.0 when none."""
    groups, _ = find_pieces(ink_mask(ink))
    if not groups:
        return 2.0
    return _box_fill(frame_digit(ink, max(groups, key=lambda g: g.area).mask))


def _dark_ink_votes(gray: np.ndarray, patches: int = 8) -> float:
    """Sum over patches (a ``patches`` x ``patches`` grid) holding ink-like contrast of
    (median - mean): positive when dark marks are the minority, negative for light marks."""
    h, w = gray.shape
    ph, pw = max(1, h // patches), max(1, w // patches)
    grid = gray[: ph * patches, : pw * patches].reshape(patches, ph, patches, pw).swapaxes(1, 2)
    grid = grid.reshape(patches * patches, ph * pw)
    lo, med, hi = np.percentile(grid, (1, 50, 99), axis=1)
    mean = grid.mean(axis=1, dtype=np.float32)
    inked = (hi - lo) >= MIN_INK
    return float((med - mean)[inked].sum())


def ink_contrast(gray: np.ndarray, paper_is_light: bool = True) -> np.ndarray:
    """uint8 ``(H, W)``: how much darker than its *local* paper each pixel is, 0 (paper) .. 255 (black).

    The paper's brightness is a grey-level *closing* (max-filter, then min-filter)
    with a square 1/:data:`PAPER_WINDOW` of the long side, on a copy reduced to
    about :data:`PAPER_SIDE` px: it erases dark marks narrower than the square
    (pen strokes) but follows anything wider or smooth (a vignette, light from
    one side, the edge of a soft shadow: a closing leaves a monotone ramp
    unchanged, where a plain max-filter would carry the lit side into the
    shadow). Dividing by it cancels the light, which scales paper and ink alike.
    Light-on-dark images (a chalkboard, MNIST-style drawings) are inverted first.
    """
    from PIL import Image
    from scipy import ndimage

    paper_up = gray if paper_is_light else 255 - gray
    smooth = ndimage.uniform_filter(paper_up, size=3)  # sensor noise down ~3x; strokes stay
    level = _even_paper_level(smooth)
    if level is not None:  # even light (a drawing, a flat scan): one paper level, a lookup table
        return _contrast_table(level)[smooth]
    h, w = paper_up.shape
    factor = max(1, -(-max(h, w) // PAPER_SIDE))  # ceiling: at most PAPER_SIDE px
    small = np.asarray(Image.fromarray(paper_up).reduce(factor)) if factor > 1 else paper_up
    window = max(3, max(small.shape) // PAPER_WINDOW) | 1
    # Pad by a window first: the closing must see the page continue past the frame, or the darker
    # edge of a vignette would be measured against the brighter inside (scipy pads each pass alone).
    padded = np.pad(small, window, mode="edge")
    closed = ndimage.grey_closing(padded, size=(window, window))[window:-window, window:-window]
    closed = ndimage.uniform_filter(closed, size=3, mode="nearest")  # soften the square's corners
    if factor > 1:
        closed = np.asarray(Image.fromarray(closed).resize((w, h), Image.Resampling.BILINEAR))
    paper = closed.astype(np.uint16)
    darker = paper - np.minimum(smooth, paper)  # uint16: no negative wrap-around
    # Relative to the paper (shadows scale ink and paper alike), but in near-black corners
    # relative to DARK_PAPER: there the noise, not the ink, would be amplified.
    return ((darker * 255) // np.maximum(paper, DARK_PAPER)).astype(np.uint8)


def _even_paper_level(smooth: np.ndarray) -> int | None:
    """The paper's one brightness when the light is even, else None (then it is estimated locally).

    The brightest pixel of each cell of an :data:`EVEN_GRID` x :data:`EVEN_GRID` grid is
    paper wherever a cell holds any paper; when those maxima differ by at most
    :data:`EVEN_LIGHT` levels the light is even enough that one level serves the whole image
    (the error stays far below :data:`MIN_INK`). A cell filled by ink, a vignette or a
    shadow spreads them, and the local estimate is used.
    """
    h, w = smooth.shape
    ch, cw = h // EVEN_GRID, w // EVEN_GRID
    if ch < 2 or cw < 2:
        return None
    cells = smooth[: ch * EVEN_GRID, : cw * EVEN_GRID].reshape(EVEN_GRID, ch, EVEN_GRID, cw)
    peaks = cells.max(axis=(1, 3))
    low, high = int(peaks.min()), int(peaks.max())
    return high if high - low <= EVEN_LIGHT else None


def _contrast_table(level: int) -> np.ndarray:
    """uint8[256]: ink contrast of each grey value on paper of brightness ``level`` (the local
    path's formula with one paper value: darker share of the paper, 0..255)."""
    values = np.arange(256, dtype=np.int32)
    darker = np.maximum(level - values, 0)
    return ((darker * 255) // max(level, DARK_PAPER)).astype(np.uint8)


def ink_mask(ink: np.ndarray, keep_faint: bool = False) -> np.ndarray:
    """Boolean ``(H, W)``: Otsu's threshold on the contrast histogram, never below :data:`MIN_INK`.

    ``keep_faint`` (the number reader): hysteresis, so fainter ink (down to :data:`WEAK_INK` of
    the threshold) joined to ink above it is kept: a thin stroke in a grey pen beside bold
    digits that pulled the threshold up. Single digits skip it (a second labelling pass).
    """
    from PIL import Image

    hist = np.array(Image.fromarray(ink).histogram(), np.float64)  # 256 bins, in C: no image-sized copy
    high = max(MIN_INK, _otsu(hist))
    strong = ink >= high
    low = max(MIN_INK, int(high * WEAK_INK))
    if not keep_faint or low >= high:
        return strong
    from scipy import ndimage

    labels, count = ndimage.label(ink >= low, structure=np.ones((3, 3), bool))
    joined = np.zeros(count + 1, bool)
    joined[labels[strong]] = True
    joined[0] = False
    return joined[labels]


def _otsu(hist: np.ndarray) -> int:
    """The threshold (first level of the upper class) that maximises between-class variance."""
    levels = np.arange(256)
    weight0 = np.cumsum(hist)
    mass0 = np.cumsum(hist * levels)
    total, mass = weight0[-1], mass0[-1]
    weight1 = total - weight0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mass0 * total - mass * weight0) ** 2 / (weight0 * weight1)
    between[~np.isfinite(between)] = 0
    return int(np.argmax(between)) + 1


@dataclass
class _Group:
    """Ink pieces taken to be one digit: their joint mask, size in pixels, and bounding box."""

    mask: np.ndarray
    area: int
    left: int
    right: int
    top: int
    bottom: int

    @property
    def height(self) -> int:
        return self.bottom - self.top


def find_pieces(mask: np.ndarray, min_share: float = SPECK) -> tuple[list[_Group], float]:
    """The ink's digit groups and the share of the image that is ink.

    Connected pieces (8-connectivity) smaller than ``min_share`` of the largest
    are specks; pieces touching the image border (a page edge, a shadow, the
    table) are dropped when any piece not touching it is left. The rest are
    grouped into digits: pieces whose columns overlap belong together (the two
    strokes of a 4), and a short piece (under :data:`SHORT` of the tallest
    group's height: the bar of a 5, a broken stroke) joins its nearest neighbour.
    """
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    ink_share = float(np.count_nonzero(mask)) / mask.size
    if count == 0:
        return [], ink_share
    boxes = ndimage.find_objects(labels)
    if count <= FEW_PIECES:  # counted inside each box: cheaper than a pass over the whole image
        areas = np.array([np.count_nonzero(labels[box] == i) for i, box in enumerate(boxes, 1)])
    else:
        areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    h, w = mask.shape
    touching = np.array([s[0].start == 0 or s[1].start == 0 or s[0].stop == h or s[1].stop == w for s in boxes])
    keep = areas >= min_share * areas.max()
    if (keep & ~touching).any():
        keep &= ~touching
        keep &= areas >= min_share * areas[keep].max()
    # [left, right, top, bottom, [label ids]], left to right
    merged: list[list] = []
    for i in sorted(np.flatnonzero(keep), key=lambda i: boxes[i][1].start):
        rows, cols = boxes[i]
        piece = [cols.start, cols.stop, rows.start, rows.stop, [i + 1]]
        if merged and _column_overlap(merged[-1], piece) >= SAME_DIGIT_OVERLAP * min(
            merged[-1][1] - merged[-1][0], piece[1] - piece[0]
        ):
            _absorb(merged[-1], piece)
        else:
            merged.append(piece)
    merged = _join_short(merged)
    groups = []
    for left, right, top, bottom, labs in merged:
        group_mask = np.isin(labels, labs) if len(labs) > 1 else labels == labs[0]
        groups.append(_Group(group_mask, int(areas[np.array(labs) - 1].sum()), left, right, top, bottom))
    return groups, ink_share


def _column_overlap(a: list, b: list) -> int:
    return min(a[1], b[1]) - max(a[0], b[0])


def _absorb(into: list, other: list) -> None:
    into[0], into[1] = min(into[0], other[0]), max(into[1], other[1])
    into[2], into[3] = min(into[2], other[2]), max(into[3], other[3])
    into[4].extend(other[4])


def _join_short(groups: list[list]) -> list[list]:
    """Short groups join the horizontally nearest group within half the tallest height."""
    if len(groups) < 2:
        return groups
    tallest = max(g[3] - g[2] for g in groups)
    for g in sorted(groups, key=lambda g: g[3] - g[2]):
        if g[3] - g[2] >= SHORT * tallest or len(groups) < 2:
            break
        others = [o for o in groups if o is not g]
        nearest = min(others, key=lambda o: -_column_overlap(g, o))
        if -_column_overlap(g, nearest) <= 0.5 * tallest:
            _absorb(nearest, g)
            groups = [o for o in groups if o is not g]
    return groups


def split_touching(mask: np.ndarray) -> list[np.ndarray]:
    """One group's mask -> one mask per digit: a group wider than :data:`TOUCHING_WIDTH` times its
    height is cut into ``round(width / (0.8 * height))`` parts at the columns with least ink
    near the even cut points (handwritten digits are ~0.5-0.8 as wide as tall). When a part would
    be under :data:`SHORT` of the height (a flat bar or tail, not a digit), the group stays whole."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    if width <= TOUCHING_WIDTH * height:
        return [mask]
    parts = max(2, round(width / (0.8 * height)))
    column_ink = mask[:, cols[0] : cols[-1] + 1].sum(axis=0)
    cuts = [cols[0]]
    for k in range(1, parts):
        centre = k * width // parts
        lo, hi = max(1, centre - width // (3 * parts)), min(width - 1, centre + width // (3 * parts) + 1)
        cuts.append(cols[0] + lo + int(np.argmin(column_ink[lo:hi])))
    cuts.append(cols[-1] + 1)
    out = []
    for a, b in itertools.pairwise(cuts):
        part = np.zeros_like(mask)
        part[:, a:b] = mask[:, a:b]
        part_rows = np.flatnonzero(part.any(axis=1))
        if part_rows.size == 0:
            continue
        if part_rows[-1] - part_rows[0] + 1 < SHORT * height:
            return [mask]  # a flat part is the long bar of a 5 or tail of a 2, not a digit
        out.append(part)
    return out


def frame_digit(ink: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The contrast image inside ``mask`` (grown by 1 px, to keep the anti-aliased edges that fell
    under the threshold) -> the MNIST-framed uint8 28x28 digit."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1 = max(0, rows[0] - 1), rows[-1] + 2
    c0, c1 = max(0, cols[0] - 1), cols[-1] + 2
    inside = mask[r0:r1, c0:c1]
    crop = np.where(_grow(inside), ink[r0:r1, c0:c1], 0).astype(np.float32)
    peak = _percentile(crop[inside], 95)  # robust "full ink": 255 after stretching
    if peak <= 0:
        return np.zeros((SIDE, SIDE), np.uint8)
    crop = np.minimum(crop * (255.0 / peak), 255.0)
    crop[crop < FAINT] = 0.0  # JPEG ringing and paper grain beside the strokes
    return center_by_mass(fit_box(crop))


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` dilated by one pixel in all 8 directions (a 3x3 square), as two 1-D passes."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    out = rows.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


def _percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) from a partial sort of two elements."""
    pos = (values.size - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, values.size - 1)
    part = np.partition(values, (lo, hi))
    return float(part[lo] + (pos - lo) * (part[hi] - part[lo]))


def fit_box(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink's bounding box and scale so the longer side is 20 px (aspect kept).

    Resampling in float mode keeps the anti-aliased grey levels MNIST's size
    normalisation produced; the result is re-stretched so thin strokes from
    large photos stay bright.
    """
    from PIL import Image

    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
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
    out[top : top + h, left : left + w] = digit
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
