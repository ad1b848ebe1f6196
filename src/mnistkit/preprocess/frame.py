"""MNIST's framing: crop the kept ink, scale it into the 20x20 box (area-averaged, aspect kept) and
paste it into 28x28 with its centre of mass at (14, 14), as MNIST's digits were made."""

from __future__ import annotations

import numpy as np

#: Output side length and the box the digit is scaled into, in pixels (MNIST's numbers).
SIDE = 28
BOX = 20
#: Where the centre of mass goes, in 0-based pixel-index coordinates (MNIST's mean is 13.99, 14.01).
CENTER = 14.0
#: After stretching the digit's ink to 0..255, grown-edge values below this are noise, not ink.
FAINT = 48


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


def box_fill(digit: np.ndarray) -> float:
    return float((digit >= 128).mean())
