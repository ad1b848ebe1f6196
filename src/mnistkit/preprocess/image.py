"""Any photo, scan or drawing -> a 28x28 uint8 digit made the way MNIST was made.

MNIST's digits were size-normalised to fit a 20x20 box (keeping the aspect
ratio, anti-aliased) and then placed in a 28x28 field so that their centre of
mass sits at the centre, white ink on black. A model trained on that only works
on input framed the same way, so every path that turns an image into model input
(image-folder training, ``mnistkit predict``, ``mnistkit serve``) calls
:func:`preprocess_image` (or :func:`analyze_image`, which also says what it
found; :func:`number_ink` for a written number); normalisation then happens
once, in :func:`mnistkit.preprocess.normalize`, with the checkpoint's own statistics.

Steps, each a small function (decode: :mod:`.decode`; finding the ink: :mod:`.ink`; framing:
:mod:`.frame`)::

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

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mnistkit.preprocess.decode import (  # noqa: F401  (re-exported: the public names live here)
    ALLOWED_FORMATS,
    LIGHT_BACKGROUND,
    MAX_FILE_BYTES,
    MAX_PIXELS,
    ImageSource,
    border_median,
    load_image,
    read_limited,
    shrink,
    shrink_factor,
    to_grayscale,
)
from mnistkit.preprocess.frame import SIDE, box_fill, frame_digit
from mnistkit.preprocess.ink import SHORT, Group, find_pieces, ink_map, ink_mask, split_touching

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image as PILImage


#: A separate ink group at least this share of the digit's size (pixels) counts as another digit.
OTHER_DIGIT = 0.25
#: In a number, a group under this share of the largest group's pixels is a speck (a thin 1 or
#: 7 in a grey pen can be a quarter of a bold 8).
NUMBER_SPECK = 0.1
#: Reading a number with a model (:class:`NumberInk`): separate neighbouring pieces at most JOIN_GAP
#: of their height apart, together at most JOINED_WIDTH times as wide as tall, may be tried as one
#: digit (parts of one ink group cut by :func:`split_touching` may always be rejoined).
JOIN_GAP = 0.2
JOINED_WIDTH = 1.0


@dataclass(frozen=True)
class DigitAnalysis:
    """What :func:`analyze_image` made of one image: the model input and what it found on the way.

    ``digit``: uint8 ``(28, 28)``, bright ink on black (all zero when no ink was found).
    ``digits_found``: separate digit-sized ink groups (0: blank; 1: one digit; 2+: several).
    ``ink_share``: share of the whole (working-size) image that is ink; near 1 when ink fills it.
    ``box_fill``: share of the 28x28 frame's pixels that are solid ink (>= 128); MNIST digits
    rarely pass 0.4, a photographed object or a filled blob does.
    ``framed``: the input was already 28x28 and passed through untouched.
    ``box``: the framed ink's box (x0, y0, x1, y1) in the analysed image's pixels; None when framed
    already or blank.
    ``line_probs``: the line reader's probability of each class when it read the image as one digit
    (:func:`mnistkit.prediction.analyze_digit`), in the model's class order; None when not asked.
    ``same_ink``: whether the framed ink lies on the line the line reader read (when it read one).
    """

    digit: np.ndarray
    digits_found: int
    ink_share: float
    box_fill: float
    framed: bool = False
    box: tuple[int, int, int, int] | None = None
    line_probs: np.ndarray | None = field(default=None, repr=False, compare=False)
    same_ink: bool = True

    def to_dict(self) -> dict:
        return {
            "digits_found": self.digits_found,
            "ink_share": round(self.ink_share, 4),
            "box_fill": round(self.box_fill, 4),
            "framed": self.framed,
        }


def preprocess_image(img: PILImage.Image | np.ndarray) -> np.ndarray:
    """A PIL image (or a 2-D array of 0..255 values) -> uint8 ``(28, 28)``, bright ink on black.

    The single function every image goes through before normalisation. A blank
    image (no ink) gives an all-zero 28x28 array rather than an error.
    """
    return analyze_image(img).digit


def analyze_image(img: PILImage.Image | np.ndarray) -> DigitAnalysis:
    """:func:`preprocess_image`'s work, also saying what it found (see :class:`DigitAnalysis`).

    The unsure rule (:func:`mnistkit.unsure.unsure_reason`) reads the findings.
    """
    gray = to_grayscale(img)
    paper_is_light = border_median(gray) > LIGHT_BACKGROUND
    if gray.shape == (SIDE, SIDE):
        digit = 255 - gray if paper_is_light else gray  # already framed like MNIST: touch nothing else
        return _framed_analysis(digit)
    ink = ink_map(shrink(gray), paper_is_light)
    groups, ink_share = find_pieces(ink_mask(ink))
    if not groups:
        return DigitAnalysis(np.zeros((SIDE, SIDE), np.uint8), 0, ink_share, 0.0)
    main = max(groups, key=lambda g: g.area)
    digit = frame_digit(ink, main.mask)
    f = shrink_factor(gray.shape)
    box = (main.left * f, main.top * f, main.right * f, main.bottom * f)
    return DigitAnalysis(digit, _count_digits(groups), ink_share, box_fill(digit), box=box)


@dataclass(frozen=True)
class NumberInk:
    """A written number's ink (at working size) cut into its finest left-to-right units.

    Units are the digit groups of :func:`number_groups`, with groups much wider than tall
    already cut where digits touch. Pieces of one digit can still be separate units (the
    bar of a 5, the two strokes of a 4, a 2 cut in three); a reader with a model decides
    which neighbours to join (:mod:`mnistkit.number_reading`), where geometry alone cannot.
    """

    ink: np.ndarray
    ink_share: float
    units: tuple[Group, ...]
    #: For each unit, the ink group it was cut from (units of one group touch: they were one piece).
    sources: tuple[int, ...] = ()

    def joinable(self, start: int, stop: int) -> bool:
        """Units ``start..stop-1`` could be one digit: cut from one ink group, or neighbours at most
        :data:`JOIN_GAP` of the joint height apart and together at most :data:`JOINED_WIDTH` times
        as wide as tall."""
        if len(set(self.sources[start:stop])) == 1:
            return True
        parts = self.units[start:stop]
        top, bottom = min(u.top for u in parts), max(u.bottom for u in parts)
        height = bottom - top
        gaps_ok = all(b.left - a.right <= JOIN_GAP * height for a, b in itertools.pairwise(parts))
        return gaps_ok and parts[-1].right - parts[0].left <= JOINED_WIDTH * height

    def digit(self, start: int, stop: int) -> DigitAnalysis:
        """Units ``start..stop-1`` framed as one MNIST digit."""
        mask = np.logical_or.reduce([u.mask for u in self.units[start:stop]])
        framed = frame_digit(self.ink, mask)
        return DigitAnalysis(framed, 1, self.ink_share, box_fill(framed))


def number_ink(img: PILImage.Image | np.ndarray) -> NumberInk:
    """A written number -> its ink and finest digit units, left to right (none when no ink)."""
    gray = to_grayscale(img)
    ink = ink_map(shrink(gray), border_median(gray) > LIGHT_BACKGROUND)
    groups, ink_share = find_pieces(ink_mask(ink, keep_faint=True))
    cut = [(g, _bounded(part)) for g, group in enumerate(number_groups(groups)) for part in split_touching(group.mask)]
    return NumberInk(ink, ink_share, tuple(u for _, u in cut), tuple(g for g, _ in cut))


def number_groups(groups: list[Group]) -> list[Group]:
    """Digit groups of a number, left to right: specks and short marks (under :data:`NUMBER_SPECK`
    of the largest group's pixels or :data:`SHORT` of the tallest group's height) dropped."""
    if not groups:
        return []
    largest, tallest = max(g.area for g in groups), max(g.height for g in groups)
    kept = [g for g in groups if g.area >= NUMBER_SPECK * largest and g.height >= SHORT * tallest]
    return sorted(kept, key=lambda g: g.left)


def _bounded(mask: np.ndarray) -> Group:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return Group(mask, int(mask.sum()), int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1)


def _framed_analysis(digit: np.ndarray) -> DigitAnalysis:
    """Findings for an already-framed 28x28 digit (the server's canvas pixels, MNIST itself)."""
    groups, _ = find_pieces(digit >= 128)
    if not groups:
        return DigitAnalysis(digit, 0, 0.0, 0.0, framed=True)
    fill = box_fill(digit)
    return DigitAnalysis(digit, _count_digits(groups), fill, fill, framed=True)


def _count_digits(groups: list[Group]) -> int:
    """The largest group, plus every other group at least :data:`OTHER_DIGIT` of its size and
    :data:`SHORT` of its height (a far-off dash or underline is not another digit)."""
    main = max(groups, key=lambda g: g.area)
    return sum(1 for g in groups if g.area >= OTHER_DIGIT * main.area and g.height >= SHORT * main.height)
