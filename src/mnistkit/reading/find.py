"""Where the writing is: the lines of ink in a photo or scan that may hold a number.

The ink is found on a reduced copy (:data:`FIND_SIDE`): the paper's light is taken out
(:func:`mnistkit.preprocess.ink.ink_contrast`), long straight lines (ruling, underlines across the
page, box edges) and large masses touching the border (a book's gutter, a dark page edge) are
removed, and the remaining pieces are grouped into lines of writing. Each line is then cut from the
image at its own resolution (not the reduced copy's), so a small number in a large photo keeps
its detail, and turned into a line image (:func:`mnistkit.reading.line.line_image`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from mnistkit.preprocess.ink import MIN_INK, dark_ink_votes, ink_contrast, ink_mask
from mnistkit.reading.line import line_image

#: The ink is looked for on a copy at most this many px on the long side.
FIND_SIDE = 400
#: A straight run at least this share of the image's width (height) is a ruling line or box edge...
LINE_SHARE = 0.6
#: ... when it is also at least this many times as long as the tallest piece of writing.
LINE_VS_WRITING = 2.5
#: A piece touching the border and covering this share of the image's height or width, and at
#: least this share of its box, is a mass (a gutter, a page edge, a shadow), not writing.
MASS_SPAN = 0.5
MASS_FILL = 0.35
#: A piece spanning this share of the image's height (width) and this many times taller than wide
#: (wider than tall) is a piece of a ruling line or an edge.
LINE_PIECE_SPAN = 0.35
LINE_PIECE_ASPECT = 4
#: The dark of a gutter or a table beside the page: under this share of the paper's level, wider
#: than 1/MASS_WINDOW of the image's short side, touching the border.
DARK_SHARE = 0.5
GUTTER_LEVEL = 60
MASS_WINDOW = 12
#: A band of 3 columns (rows) inked over this share of the image's height (width) is a ruling line.
RULED_SHARE = 0.4
RULED_PEAK = 2.5
#: Pieces under this share of the largest piece's pixels are specks.
SPECK_SHARE = 0.02
#: Two pieces are in one line when their rows overlap by this share of the shorter one.
SAME_LINE = 0.3
#: A piece joins a line at most this many times taller than itself (digits of a line are alike).
SAME_HEIGHT = 2.5
#: A line image's margin around the ink, as a share of the line's height.
MARGIN = 0.15
#: At most this many candidate lines are returned, the likeliest first.
MAX_LINES = 3


@dataclass
class FoundLine:
    """One line of writing: its box in the image (x0, y0, x1, y1 in the decoded image's pixels),
    its line image (uint8 ``[LINE_HEIGHT, w]``) and the share of the image's ink it holds."""

    box: tuple[int, int, int, int]
    image: np.ndarray
    ink_share: float


def find_lines(gray: np.ndarray, max_lines: int = MAX_LINES) -> list[FoundLine]:
    """The lines of writing in ``gray`` (uint8 ``[H, W]``), likeliest first; empty when there is no ink.

    "Likeliest" is the most ink: the number is usually the main writing of what is shown.
    The reader (:mod:`mnistkit.reading.reader`) reads each and keeps the surest reading.
    """
    if gray.ndim != 2 or min(gray.shape) < 2:
        return []
    light = paper_is_light(gray)
    factor = max(1, -(-max(gray.shape) // FIND_SIDE))
    small = np.asarray(Image.fromarray(gray).reduce(factor)) if factor > 1 else gray
    paper_up = small if light else 255 - small
    ink = ink_contrast(paper_up)
    mask = ink_mask(ink, keep_faint=True) & ~dark_masses(paper_up)
    writing = remove_lines_and_masses(mask & ~ruled(mask, remove_lines_and_masses(mask)))
    groups = group_lines(writing)
    if not groups:
        return []
    total = float(sum(int(writing[g].sum()) for g in groups)) or 1.0
    ground = gray if light else 255 - gray
    lines = [_cut(ground, ink, writing, g, factor, float(writing[g].sum()) / total) for g in groups]
    lines.sort(key=lambda ln: -ln.ink_share)
    return lines[:max_lines]


def runs(mask: np.ndarray, length: int, axis: int) -> np.ndarray:
    """The pixels of ``mask`` in straight runs of at least ``length`` along ``axis``: a binary
    opening by a line of ``length`` pixels, in two passes of cumulative sums (linear time)."""
    m = np.moveaxis(mask, axis, -1).astype(np.int32)
    n = m.shape[-1]
    if length > n:
        return np.zeros_like(mask)
    pad = np.zeros((*m.shape[:-1], 1), np.int32)
    cs = np.concatenate([pad, np.cumsum(m, axis=-1)], axis=-1)
    starts = (cs[..., length:] - cs[..., :-length]) == length  # a full run starts at i: [n - length + 1]
    cs2 = np.concatenate([pad, np.cumsum(starts, axis=-1, dtype=np.int32)], axis=-1)
    idx = np.arange(n)
    lo, hi = np.clip(idx - length + 1, 0, n - length + 1), np.clip(idx + 1, 0, n - length + 1)
    covered = (cs2[..., hi] - cs2[..., lo]) > 0  # some run starting in [i - length + 1, i] covers i
    return np.moveaxis(covered, -1, axis)


def ruled(mask: np.ndarray, writing: np.ndarray) -> np.ndarray:
    """The columns (rows) of a ruling line, even a broken or faint one: thin bands of columns (rows)
    inked over at least :data:`RULED_SHARE` of the image's height (width), where the image is
    several times taller (wider) than the tallest piece of ``writing`` (so a tight crop of a 1 is
    no ruling line). Pieces of such lines are too short for :func:`remove_lines_and_masses`.
    The rows through a long number are inked as much, but so are the rows around them."""
    from scipy import ndimage

    h, w = mask.shape
    labels, _ = ndimage.label(writing, structure=np.ones((3, 3), bool))
    boxes = [b for b in ndimage.find_objects(labels) if b is not None]
    tallest = max((b[0].stop - b[0].start for b in boxes), default=h)
    out = np.zeros_like(mask)
    if h > LINE_VS_WRITING * tallest:
        columns = _peaks(ndimage.maximum_filter1d(mask, 3, axis=1).mean(0), max(4, tallest // 5))
        out[:, ndimage.maximum_filter1d(columns, 3)] = True
    if w > LINE_VS_WRITING * tallest:
        rows = _peaks(ndimage.maximum_filter1d(mask, 3, axis=0).mean(1), max(4, tallest // 5))
        out[ndimage.maximum_filter1d(rows, 3), :] = True
    return out & mask


def _peaks(cover: np.ndarray, away: int) -> np.ndarray:
    """Rows (columns) inked over :data:`RULED_SHARE` of the image and :data:`RULED_PEAK` times more
    than the rows ``away`` above and below: a thin line, where writing covers a band of rows."""
    padded = np.pad(cover, away)
    around = np.maximum(padded[: len(cover)], padded[2 * away :])
    return (cover >= RULED_SHARE) & (cover >= RULED_PEAK * around)


def dark_masses(paper_up: np.ndarray) -> np.ndarray:
    """Where the image is dark over an area wider than any pen stroke and touches the border (a
    book's gutter, the table beside a page, a shadow at the edge), with a fringe around it.

    Dark is under :data:`DARK_SHARE` of the paper's level and under :data:`GUTTER_LEVEL` (a shadow on
    the page is lighter: the writing in it stays); an opening with a square of
    1/:data:`MASS_WINDOW` of the short side erases strokes and keeps masses.
    """
    from scipy import ndimage

    h, w = paper_up.shape
    window = max(5, min(h, w) // MASS_WINDOW)
    dark = paper_up < min(DARK_SHARE * float(np.percentile(paper_up, 90)), GUTTER_LEVEL)
    wide = runs(runs(dark, window, axis=0), window, axis=1)  # whole window x window squares of dark
    labels, count = ndimage.label(wide)
    if count == 0:
        return wide
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border = np.isin(labels, edge[edge > 0])
    return ndimage.maximum_filter(border, size=2 * max(2, window // 2) + 1)


def paper_is_light(gray: np.ndarray) -> bool:
    """Whether the ground is lighter than the writing. The border is no guide here (it can be mostly
    a dark gutter or table): the ground is light when the image's median is nearer its light end
    (most pixels are ground), or when the patches holding ink say the ink is the dark minority
    (:func:`mnistkit.preprocess.ink.dark_ink_votes`: a page beside a wide dark gutter)."""
    step = (max(1, gray.shape[0] // 200), max(1, gray.shape[1] // 200))
    low, mid, high = np.percentile(gray[:: step[0], :: step[1]], (1, 50, 99))
    if high - low < MIN_INK:  # no ink at all (a blank page): nothing to invert
        return True
    return bool(mid - low >= high - mid) or dark_ink_votes(gray) > 0


def remove_lines_and_masses(mask: np.ndarray) -> np.ndarray:
    """``mask`` without ruling lines, box edges, border-touching masses and specks: the writing.

    Long straight runs are cut out first (an underline across the page that touches the digits),
    then each remaining piece is judged by its box: a mass (:func:`_is_mass`) or a tall or wide
    thin piece (a broken ruling line, the ragged edge of a gutter) goes. When that leaves no
    writing at all, the straight strokes clear of the edges were the writing (a big "11"). (Keeping
    line pieces no longer than the writing beside them read 4 points fewer development numbers:
    they are mostly the rest of a broken ruling line.)
    """
    h, w = mask.shape
    horizontal = runs(mask, max(3, int(w * LINE_SHARE)), axis=1)
    vertical = runs(mask, max(3, int(h * LINE_SHARE)), axis=0)
    writing = _judge_pieces(mask & ~horizontal & ~vertical)
    if writing.any() or not (horizontal | vertical).any():
        return writing
    return _judge_pieces(mask)


def _judge_pieces(rest: np.ndarray) -> np.ndarray:
    """The pieces of ``rest`` that are writing (see :func:`remove_lines_and_masses`)."""
    from scipy import ndimage

    h, w = rest.shape
    labels, count = ndimage.label(rest, structure=np.ones((3, 3), bool))
    if count == 0:
        return rest
    boxes = ndimage.find_objects(labels)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    kind = np.zeros(count + 1, np.int8)  # 0 writing, 1 mass, 2 thin line piece
    for k, box in enumerate(boxes, start=1):
        if box is not None:
            kind[k] = 1 if _is_mass(box, int(sizes[k]), h, w) else 2 if _is_line_piece(box, h, w) else 0
    writing_sizes = np.where(kind == 0, sizes, 0)
    writing_sizes[0] = 0
    speck = writing_sizes < SPECK_SHARE * max(1, writing_sizes.max())
    tallest = max(
        (_long_side(b) for k, b in enumerate(boxes, 1) if b is not None and kind[k] == 0 and not speck[k]), default=0
    )
    if not tallest:  # the only ink is straight strokes: those clear of the edges are writing (a big "11")
        for k, box in enumerate(boxes, start=1):
            if box is not None and kind[k] == 2 and not _touches(box, h, w):
                kind[k], speck[k] = 0, False
    drop = (kind != 0) | (speck & (kind == 0))
    drop[0] = True
    return ~drop[labels]


def _touches(box: tuple[slice, slice], h: int, w: int) -> bool:
    return box[0].start == 0 or box[1].start == 0 or box[0].stop == h or box[1].stop == w


def _long_side(box: tuple[slice, slice]) -> int:
    return max(box[0].stop - box[0].start, box[1].stop - box[1].start)


def _is_line_piece(box: tuple[slice, slice], h: int, w: int) -> bool:
    """A tall thin or wide flat piece spanning much of the image: a broken ruling line or an edge."""
    bh, bw = box[0].stop - box[0].start, box[1].stop - box[1].start
    return (bh >= LINE_PIECE_SPAN * h and bw * LINE_PIECE_ASPECT <= bh) or (
        bw >= LINE_PIECE_SPAN * w and bh * LINE_PIECE_ASPECT <= bw
    )


def _is_mass(box: tuple[slice, slice], size: int, h: int, w: int) -> bool:
    """A piece that touches the border, spans much of the image and fills its box: not writing."""
    ys, xs = box
    touches = _touches(box, h, w)
    bh, bw = ys.stop - ys.start, xs.stop - xs.start
    spans = bh >= MASS_SPAN * h or bw >= MASS_SPAN * w
    return touches and spans and size >= MASS_FILL * bh * bw


def group_lines(writing: np.ndarray) -> list[tuple[slice, slice]]:
    """The boxes of the lines of writing (in no particular order).

    Pieces whose rows overlap are one line (the tallest pieces first), unless the line's tallest
    piece is over :data:`SAME_HEIGHT` times taller than the piece (the line's box may be taller
    still, when its digits do not sit on one baseline): the rest of a ruling line or a box's corner
    beside a number is no part of it (and a full stop after it is a line of its own). An underline below the digits stays apart too: read with them, it makes the digits
    small in the line image (measured on the development numbers: bench/README.md).
    """
    from scipy import ndimage

    labels, _ = ndimage.label(writing, structure=np.ones((3, 3), bool))
    boxes = [b for b in ndimage.find_objects(labels) if b is not None]
    lines: list[list[int]] = []  # [y0, y1, x0, x1, tallest piece's height]
    for ys, xs in sorted(boxes, key=lambda b: -(b[0].stop - b[0].start)):
        h = ys.stop - ys.start
        for line in lines:
            overlap = min(line[1], ys.stop) - max(line[0], ys.start)
            if overlap >= SAME_LINE * min(line[1] - line[0], h) and line[4] <= SAME_HEIGHT * h:
                _extend(line, [ys.start, ys.stop, xs.start, xs.stop])
                break
        else:
            lines.append([ys.start, ys.stop, xs.start, xs.stop, h])
    return [(slice(y0, y1), slice(x0, x1)) for y0, y1, x0, x1, _ in lines]


def _extend(line: list[int], box: list[int]) -> None:
    line[:4] = [min(line[0], box[0]), max(line[1], box[1]), min(line[2], box[2]), max(line[3], box[3])]


def _cut(
    ground: np.ndarray, ink: np.ndarray, writing: np.ndarray, box: tuple[slice, slice], factor: int, share: float
) -> FoundLine:
    """The line in ``box`` (the reduced copy's pixels) cut from the decoded image ``ground`` (paper
    light) with a margin. Its ink is measured on the cut itself at full resolution (``ink``, the
    reduced copy's, serves when there was no reduction); ink that is not writing (removed lines,
    masses, other lines' pieces) is blanked."""
    from scipy import ndimage

    ys, xs = box
    h, w = ground.shape
    margin = MARGIN * (ys.stop - ys.start) * factor
    y0, y1 = max(0, int(ys.start * factor - margin)), min(h, int(ys.stop * factor + margin) + 1)
    x0, x1 = max(0, int(xs.start * factor - margin)), min(w, int(xs.stop * factor + margin) + 1)
    if factor == 1:
        crop, keep = ink[y0:y1, x0:x1], writing[y0:y1, x0:x1]
    else:
        crop = ink_contrast(ground[y0:y1, x0:x1])
        sy, sx = y0 // factor, x0 // factor
        small = writing[sy : -(-y1 // factor), sx : -(-x1 // factor)]
        keep = np.repeat(np.repeat(small, factor, axis=0), factor, axis=1)
        keep = keep[y0 - sy * factor : y1 - sy * factor, x0 - sx * factor : x1 - sx * factor]
    near = ndimage.maximum_filter(keep, size=2 * factor + 1)
    return FoundLine((x0, y0, x1, y1), line_image(crop.astype(np.float32) * near), share)
