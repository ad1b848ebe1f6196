"""Finding the ink on a photo: the paper's brightness estimated locally (so uneven light is
flattened), ink contrast, Otsu's threshold, connected pieces grouped into digits, and
touching digits split apart."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from mnistkit.preprocess.frame import box_fill, frame_digit

#: The paper's brightness is estimated on a copy about this many px on the long side, with a
#: closing window of 1/PAPER_WINDOW of it: wider than any pen stroke of a digit that fits the frame.
PAPER_SIDE = 160
PAPER_WINDOW = 8
#: A patch vote (:func:`dark_ink_votes`, grey levels summed over patches) this far from 0 settles
#: the polarity of a dark-bordered image; a closer one is settled by comparing both readings.
SURE_VOTE = 32
#: Paper darker than this (0..255) is treated as this bright when measuring ink contrast.
DARK_PAPER = 64
#: A dark border whose middle 96 % of pixels lie within this many levels is a drawing's ground (:func:`flat_ground`).
FLAT_GROUND = 8
#: Even light: the brightest pixels of an EVEN_GRID x EVEN_GRID grid of cells differ by at most
#: EVEN_LIGHT levels (0..255). Then one paper level serves the whole image (a drawing, a flat scan).
EVEN_GRID = 8
EVEN_LIGHT = 12
#: Ink is at least this much darker than its local paper (0..255 of the paper's brightness):
#: the floor under Otsu's threshold, so paper grain and JPEG noise on a blank page are not ink.
MIN_INK = 40
#: Number reading: ink at least WEAK_INK of Otsu's threshold (and at least WEAK_FLOOR) is kept
#: where it joins ink above the threshold (hysteresis). The floor may sit under MIN_INK because
#: only ink touching a sure stroke is kept: the thin, grey parts of a digit in a grey pen (a 6's
#: loop, a 7's bar) fall there. Chosen on numbers made of validation digits (2,000, seed 7:
#: 0.6 and MIN_INK read 96.7 % exactly, these 97.65 %; `bench/photo_numbers.py --digits val`).
WEAK_INK = 0.4
WEAK_FLOOR = 20
#: Pieces smaller than this share of the largest piece (in pixels) are specks, not ink.
SPECK = 0.03
#: Two pieces belong to one digit when their columns overlap by this share of the narrower one.
SAME_DIGIT_OVERLAP = 0.5
#: Up to this many connected pieces, their sizes are counted box by box (else in one image pass).
FEW_PIECES = 16
#: A group shorter than this share of the tallest group is part of a digit, not a digit.
SHORT = 0.5
#: A group wider than this many times its height is taken to be touching digits (numbers):
#: "clearly two wide"; wide single digits (a flat 0 or 2) reach ~1.5.
TOUCHING_WIDTH = 1.6


def ink_map(gray: np.ndarray, paper_is_light: bool) -> np.ndarray:
    """:func:`ink_contrast` in the right polarity.

    A light border means dark ink on paper. A dark border is either light ink
    on a dark ground (a chalkboard, an MNIST-style drawing) or a dark photo of
    paper (dim light, a vignette, a shadow over the edges). Ink is the minority
    of the pixels near it, so a vote over patches (:func:`dark_ink_votes`)
    says which. Shadow edges in a dim photo can sway a close vote towards
    light ink (under :data:`SURE_VOTE`), so then both readings are made and
    the one whose digit looks drawn wins: read the wrong way round, the ink
    is the space *between* strokes (a lit wedge between shadows, the hole of a
    0), which frames as a solid blob, where pen strokes fill little of their
    box (:func:`_solidity`).
    """
    if paper_is_light:
        return ink_contrast(gray, True)
    if flat_ground(gray):
        return ink_contrast(gray, False)
    votes = dark_ink_votes(gray)
    if votes >= 0 or votes <= -SURE_VOTE:
        return ink_contrast(gray, votes >= 0)
    dark, light = ink_contrast(gray, True), ink_contrast(gray, False)
    return dark if _solidity(dark) < _solidity(light) else light


def flat_ground(gray: np.ndarray) -> bool:
    """A dark border as even as a drawing's ground (a canvas, an MNIST-style image): all but the
    extreme 2 % of its pixels within :data:`FLAT_GROUND` levels. Then the ink is light whatever the
    patches' vote, which fat strokes can sway (a wide ring of a 0 is most of its patches). A dark
    photo of paper is not this even: grain, noise and light falloff reach its edges."""
    ring = np.concatenate([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]])
    lo, hi = np.percentile(ring, (2, 98))
    return bool(hi - lo <= FLAT_GROUND)


def _solidity(ink: np.ndarray) -> float:
    """Box fill (:func:`box_fill`) of the largest digit one contrast reading finds; 2.0 when none."""
    groups, _ = find_pieces(ink_mask(ink))
    if not groups:
        return 2.0
    return box_fill(frame_digit(ink, max(groups, key=lambda g: g.area).mask))


def dark_ink_votes(gray: np.ndarray, patches: int = 8) -> float:
    """Sum over patches (a ``patches`` x ``patches`` grid) holding ink-like contrast of
    (median - mean): positive when dark marks are the minority, negative for light marks.
    An image under ``patches`` px on a side has fewer patches that way (one per pixel)."""
    h, w = gray.shape
    patches = min(patches, h, w)
    ph, pw = max(1, h // patches), max(1, w // patches)
    blocks = gray[: ph * patches, : pw * patches].reshape(patches, ph, patches, pw).swapaxes(1, 2)
    grid = blocks.reshape(patches * patches, ph * pw)
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
    smooth = mean3x3(paper_up)  # sensor noise down ~3x; strokes stay
    level = _even_paper_level(smooth)
    if level is not None:  # even light (a drawing, a flat scan): one paper level, a lookup table
        return np.take(_contrast_table(level), smooth)  # take: half the time of fancy indexing
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


def mean3x3(gray: np.ndarray) -> np.ndarray:
    """uint8 3x3 box mean (edges mirrored), rounded: ``ndimage.uniform_filter(gray, 3)`` without its
    two rounded 1-D passes, in a quarter of the time (six whole-array adds in uint16: no overflow)."""
    padded = np.pad(gray, 1, mode="symmetric").astype(np.uint16)
    rows = padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]
    total = rows[:-2] + rows[1:-1] + rows[2:]
    return ((total + 4) // 9).astype(np.uint8)


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
    the threshold, not under :data:`WEAK_FLOOR`) joined to ink above it is kept: a thin stroke in a grey pen beside bold
    digits that pulled the threshold up. Single digits skip it (a second labelling pass).
    """
    from PIL import Image

    hist = np.array(Image.fromarray(ink).histogram(), np.float64)  # 256 bins, in C: no image-sized copy
    high = max(MIN_INK, _otsu(hist))
    strong = ink >= high
    low = max(WEAK_FLOOR, int(high * WEAK_INK))
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
class Group:
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


def find_pieces(mask: np.ndarray, min_share: float = SPECK) -> tuple[list[Group], float]:
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
        groups.append(Group(group_mask, int(areas[np.array(labs) - 1].sum()), left, right, top, bottom))
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
        if hi > lo:  # a group a pixel or two tall has fewer columns than cuts: no window there
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
