"""Numbers read by geometry alone: the baseline that ``bench/photo_numbers.py`` sets beside the
readers with a model (:mod:`mnistkit.number_reading`, the line reader).

Ink groups are split by column overlap (:func:`mnistkit.preprocess.image.number_groups`),
neighbours narrow enough to be one digit joined, and groups much wider than tall cut where
digits touch; each piece is then framed as one MNIST digit. Nothing asks the model which
pieces belong together, which is why the package reads numbers another way.
"""

from __future__ import annotations

from mnistkit.preprocess.decode import LIGHT_BACKGROUND, border_median, shrink, to_grayscale
from mnistkit.preprocess.frame import box_fill, frame_digit
from mnistkit.preprocess.image import DigitAnalysis, number_groups
from mnistkit.preprocess.ink import Group, find_pieces, ink_map, ink_mask, split_touching

#: Neighbouring groups closer than DIGIT_GAP of their height and together no wider than
#: ONE_DIGIT_WIDTH of it are one digit (digits are ~0.5-0.8 as wide as tall, and written apart).
DIGIT_GAP = 0.02
ONE_DIGIT_WIDTH = 0.8


def analyze_number(img) -> list[DigitAnalysis]:
    """A written number -> one analysis (and MNIST-framed 28x28 digit) per digit, left to right.

    Ink pieces are grouped by column overlap (the strokes of a 4 or a 5 are one
    digit), faint strokes joined to bold ink kept (:func:`ink_mask`'s hysteresis),
    specks and border-touching shadows dropped as for single digits, and
    a group much wider than tall is cut at its thinnest columns into as many
    digit-wide parts as its width suggests (digits that touch). Empty when no ink.
    """
    gray = to_grayscale(img)
    ink = ink_map(shrink(gray), border_median(gray) > LIGHT_BACKGROUND)
    groups, ink_share = find_pieces(ink_mask(ink, keep_faint=True))
    masks = []
    for group in merge_narrow_neighbours(number_groups(groups)):
        masks.extend(split_touching(group.mask))
    digits = [frame_digit(ink, m) for m in masks]
    return [DigitAnalysis(d, 1, ink_share, box_fill(d)) for d in digits]


def merge_narrow_neighbours(groups: list[Group]) -> list[Group]:
    """Left-to-right groups -> the same, with neighbours that touch or overlap in columns (no
    gap of :data:`DIGIT_GAP` of the height between them) joined when together they are still
    no wider than one digit (:data:`ONE_DIGIT_WIDTH` of their height): the two strokes of a 4,
    or the bar and body of a 5, that the column-overlap rule left apart."""
    out: list[Group] = []
    for group in groups:
        if out:
            prev = out[-1]
            left, right = min(prev.left, group.left), max(prev.right, group.right)
            top, bottom = min(prev.top, group.top), max(prev.bottom, group.bottom)
            if group.left - prev.right <= DIGIT_GAP * (bottom - top) and right - left <= ONE_DIGIT_WIDTH * (
                bottom - top
            ):
                out[-1] = Group(prev.mask | group.mask, prev.area + group.area, left, right, top, bottom)
                continue
        out.append(group)
    return out
