"""Synthetic lines of handwritten digits for training the sequence reader.

Each line is 1-:data:`MAX_DIGITS` MNIST digits written side by side, touching, overlapping or far
apart, with what real numbers carry beside them: a full stop, comma, dash, ``=`` or ``/-`` after the
digits, an underline, pieces of ruling lines and box edges at the sides, specks; then slant, a thinner
or thicker pen, low resolution, blur, a grey pencil, paper texture and JPEG. A share of lines hold
letters or pen strokes instead of digits (label: no digits), so the reader learns to answer nothing.

Every line goes through :func:`mnistkit.reading.line.line_image`, as a found line does.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mnistkit.ctc import PAD
from mnistkit.reading.line import LINE_HEIGHT, LINE_WIDTH, line_image

#: Most digits in one line; labels are padded to this length with :data:`NO_DIGIT`.
MAX_DIGITS = 8
#: Padding of a line's label beyond its last digit.
NO_DIGIT = PAD
#: Share of lines of each digit count 1..MAX_DIGITS (short numbers are the common case).
COUNT_WEIGHTS = (0.22, 0.24, 0.14, 0.1, 0.08, 0.08, 0.07, 0.07)
#: A digit's height (px) while a line is composed; the line is then scaled to its final resolution.
WORK_HEIGHT = 40


@dataclass(frozen=True)
class Recipe:
    """The probabilities and ranges of each part of a synthetic line (what the reader learns to ignore).

    Each ``*_p`` is the share of lines that get that part; ranges are (low, high) uniform draws.
    """

    rejection_p: float = 0.06  # letters or strokes instead of a number: the label is empty
    separator_p: float = 0.35  # ".", ",", "-", "=" or "/-" after the digits
    underline_p: float = 0.35
    side_line_p: float = 0.3  # a piece of a vertical ruling line or box edge beside the digits
    ruling_p: float = 0.12  # a horizontal line above or below, the width of the crop
    specks_p: float = 0.3
    thin_p: float = 0.45  # a finer pen than MNIST's (2-4 px thinner at WORK_HEIGHT)
    thick_p: float = 0.1
    flag_one_p: float = 0.35  # a 1 with the lead-in stroke of European hands
    blur_p: float = 0.3
    jpeg_p: float = 0.25
    gap: tuple[float, float] = (-0.22, 0.45)  # space between digits, in digit widths (negative: overlap)
    wide_gap_p: float = 0.1  # a gap of 0.5-1.2 digit widths instead
    slant: tuple[float, float] = (-0.35, 0.35)  # horizontal shear per unit of height
    digit_height: tuple[float, float] = (10.0, 44.0)  # the digits' height (px) at the scan's resolution
    pencil: tuple[float, float] = (0.3, 1.0)  # ink strength (1: black pen)
    noise: tuple[float, float] = (0.0, 14.0)  # paper grain, levels of 255
    texture: tuple[float, float] = (0.0, 30.0)  # slow changes of the paper's shade, levels of 255


def synth_lines(
    images: np.ndarray, labels: np.ndarray, n: int, seed: int, recipe: Recipe | None = None, width: int = LINE_WIDTH
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic lines from the digits ``images`` (uint8 ``[M, 28, 28]``) with ``labels`` ``[M]``.

    Returns uint8 ``[n, LINE_HEIGHT, width]`` line images (left-aligned on black) and int64
    ``[n, MAX_DIGITS]`` labels padded with :data:`NO_DIGIT`. The same seed gives the same lines.
    """
    recipe = recipe or Recipe()
    rng = np.random.default_rng(seed)
    pool = DigitPool(images, labels)
    glyphs = _letter_glyphs()
    x = np.zeros((n, LINE_HEIGHT, width), np.uint8)
    y = np.full((n, MAX_DIGITS), NO_DIGIT, np.int64)
    for i in range(n):
        if rng.random() < recipe.rejection_p:
            canvas, digits = _rejection_canvas(rng, glyphs), []
        else:
            count = int(rng.choice(MAX_DIGITS, p=np.asarray(COUNT_WEIGHTS) / sum(COUNT_WEIGHTS))) + 1
            digits = [int(d) for d in rng.integers(0, 10, count)]
            canvas = _number_canvas(rng, pool, digits, recipe)
        line = _degrade(rng, canvas, recipe, width)
        x[i, :, : line.shape[1]] = line
        y[i, : len(digits)] = digits
    return x, y


class DigitPool:
    """The digits to draw from, each cut to its ink's box, by class."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images = images
        self.by_class = [np.flatnonzero(labels == d) for d in range(10)]

    def draw(self, rng: np.random.Generator, digit: int) -> np.ndarray:
        """One random image of ``digit``, cut to the box of its ink."""
        choices = self.by_class[digit]
        img = self.images[int(choices[rng.integers(len(choices))])]
        rows, cols = np.flatnonzero(img.max(1) > 30), np.flatnonzero(img.max(0) > 30)
        if not rows.size:
            return img
        return img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _number_canvas(rng: np.random.Generator, pool: DigitPool, digits: list[int], r: Recipe) -> Image.Image:
    """The digits composed at WORK_HEIGHT with the pen, spacing and marks of one writer."""
    scale = rng.uniform(0.85, 1.15)
    pen = _pen(rng, r)
    pieces = []
    for d in digits:
        cut = Image.fromarray(pool.draw(rng, d))
        h = max(4, round(WORK_HEIGHT * scale * rng.uniform(0.9, 1.1)))
        aspect = cut.width / max(cut.height, 1) * rng.uniform(0.85, 1.15)
        w = max(2, round(h * aspect))
        piece = cut.resize((w, h), Image.Resampling.BILINEAR)
        if d == 1 and rng.random() < r.flag_one_p:
            piece = _flagged_one(rng, piece)
        pieces.append(pen(piece) if pen else piece)
    height = round(WORK_HEIGHT * 2.2)
    mean_w = float(np.mean([p.width for p in pieces]))
    gaps = [_gap(rng, r) * mean_w for _ in pieces]
    total = int(sum(p.width for p in pieces) + sum(gaps[1:]) + 6 * WORK_HEIGHT)
    canvas = Image.new("L", (max(total, 8), height), 0)
    x = 2.0 * WORK_HEIGHT
    top = (height - WORK_HEIGHT) // 2
    for k, piece in enumerate(pieces):
        if k:
            x += gaps[k]
        y = top + int(rng.normal(0, 0.05 * WORK_HEIGHT)) + (WORK_HEIGHT - piece.height) // 2
        _paste_max(canvas, piece, int(x), y)
        x += piece.width
    left, right = 2.0 * WORK_HEIGHT, x
    _marks(rng, canvas, left, right, top, r)
    return _slanted(canvas, rng.uniform(*r.slant))


def _flagged_one(rng: np.random.Generator, piece: Image.Image) -> Image.Image:
    """A 1 with a lead-in stroke from the top of its stem down to the left (as many Europeans write it)."""
    ink = np.asarray(piece)
    top_cols = np.flatnonzero(ink[: max(1, ink.shape[0] // 6)].max(0) > 60)
    h = piece.height
    reach = int(h * rng.uniform(0.25, 0.45))
    out = Image.new("L", (piece.width + reach, h), 0)
    out.paste(piece, (reach, 0))
    x_top = reach + (int(top_cols.mean()) if top_cols.size else piece.width // 2)
    width = max(2, round(h / rng.uniform(7, 11)))
    end = (x_top - reach, h * rng.uniform(0.25, 0.5))
    ImageDraw.Draw(out).line([(x_top, 1), end], fill=255, width=width)
    return out


def _pen(rng: np.random.Generator, r: Recipe):
    """A finer or thicker pen than MNIST's for the whole line, or None for MNIST's own."""
    u = rng.random()
    if u < r.thin_p:
        size = 3 if rng.random() < 0.6 else 5
        return lambda im: im.filter(ImageFilter.MinFilter(size))
    if u < r.thin_p + r.thick_p:
        return lambda im: im.filter(ImageFilter.MaxFilter(3))
    return None


def _gap(rng: np.random.Generator, r: Recipe) -> float:
    if rng.random() < r.wide_gap_p:
        return rng.uniform(0.5, 1.2)
    return rng.uniform(*r.gap)


def _paste_max(canvas: Image.Image, piece: Image.Image, x: int, y: int) -> None:
    """Ink over ink: the brighter of the two, so overlapping digits keep both strokes."""
    box = (x, y, x + piece.width, y + piece.height)
    under = np.asarray(canvas.crop(box))
    canvas.paste(Image.fromarray(np.maximum(under, np.asarray(piece))), box)


def _marks(rng: np.random.Generator, canvas: Image.Image, left: float, right: float, top: int, r: Recipe) -> None:
    """Separators, an underline and specks drawn beside the digits (ink 255, a pen 2-5 px wide)."""
    draw = ImageDraw.Draw(canvas)
    h = WORK_HEIGHT
    bottom = top + h
    pen = int(rng.integers(2, 6))
    if rng.random() < r.separator_p:
        x = right + rng.uniform(0.05, 0.4) * h
        _separator(rng, draw, x, top, bottom, pen)
    if rng.random() < r.underline_p:
        x0 = left - rng.uniform(-0.1, 0.3) * (right - left)
        x1 = right + rng.uniform(-0.1, 0.4) * (right - left)
        y0 = bottom + rng.uniform(0.05, 0.3) * h
        bend = rng.uniform(-0.15, 0.15) * h
        ts = np.linspace(0, 1, 12)
        ys = y0 + rng.uniform(-0.1, 0.1) * h * ts + bend * 4 * ts * (1 - ts)
        draw.line([(float(x0 + (x1 - x0) * t), float(yy)) for t, yy in zip(ts, ys)], fill=255, width=pen)
    if rng.random() < r.specks_p:
        for _ in range(int(rng.integers(1, 5))):
            cx, cy = rng.uniform(left - h, right + h), rng.uniform(top - 0.5 * h, bottom + 0.5 * h)
            rad = rng.uniform(1, 2.5)
            draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), fill=int(rng.integers(120, 256)))


def _separator(rng: np.random.Generator, draw: ImageDraw.ImageDraw, x: float, top: int, bottom: int, pen: int) -> None:
    kind = rng.choice([".", ",", "-", "=", "/-"])
    h = bottom - top
    if kind == ".":
        rad = pen * rng.uniform(0.7, 1.3)
        draw.ellipse((x, bottom - 2 * rad, x + 2 * rad, bottom), fill=255)
    elif kind == ",":
        draw.line([(x + 3, bottom - 4), (x, bottom + 0.25 * h)], fill=255, width=pen)
    elif kind == "-":
        y = top + h * rng.uniform(0.4, 0.6)
        draw.line([(x, y), (x + rng.uniform(0.3, 0.6) * h, y)], fill=255, width=pen)
    elif kind == "=":
        for y in (top + 0.38 * h, top + 0.62 * h):
            draw.line([(x, y), (x + 0.45 * h, y)], fill=255, width=pen)
    else:
        draw.line([(x, bottom), (x + 0.35 * h, top + 0.1 * h)], fill=255, width=pen)
        draw.line([(x + 0.35 * h, top + 0.5 * h), (x + 0.75 * h, top + 0.5 * h)], fill=255, width=pen)


def _slanted(canvas: Image.Image, shear: float) -> Image.Image:
    """The canvas sheared by ``shear`` (x moves by shear * y), about its middle row."""
    mid = canvas.height / 2
    return canvas.transform(
        canvas.size, Image.Transform.AFFINE, (1, shear, -shear * mid, 0, 1, 0), resample=Image.Resampling.BILINEAR
    )


def _rejection_canvas(rng: np.random.Generator, glyphs: list[list[np.ndarray]] | None) -> Image.Image:
    """A word of letters (Hershey fonts, when installed) or a few pen strokes: writing that is no number."""
    height = round(WORK_HEIGHT * 2.2)
    canvas = Image.new("L", (WORK_HEIGHT * 10, height), 0)
    draw = ImageDraw.Draw(canvas)
    pen = int(rng.integers(2, 6))
    top = (height - WORK_HEIGHT) // 2
    x = WORK_HEIGHT * 1.0
    if glyphs:
        for _ in range(int(rng.integers(2, 7))):
            lines = glyphs[int(rng.integers(len(glyphs)))]
            pts = np.concatenate(lines)
            low, span = pts.min(0), max(float(np.ptp(pts, axis=0).max()), 1e-6)
            size = WORK_HEIGHT * rng.uniform(0.6, 1.0)
            for line in lines:
                xy = (line - low) / span * size + (x, top)
                draw.line([(float(a), float(b)) for a, b in xy], fill=255, width=pen)
            x += size * rng.uniform(0.6, 1.0)
    else:
        for _ in range(int(rng.integers(2, 6))):
            a = (x + rng.uniform(0, WORK_HEIGHT), top + rng.uniform(0, WORK_HEIGHT))
            b = (a[0] + rng.uniform(-0.5, 1) * WORK_HEIGHT, top + rng.uniform(0, WORK_HEIGHT))
            draw.line([a, b], fill=255, width=pen)
            x += WORK_HEIGHT * 0.8
    return _slanted(canvas, rng.uniform(-0.3, 0.3))


def _letter_glyphs() -> list[list[np.ndarray]] | None:
    try:
        from mnistkit.training.negatives import hershey_glyphs

        return hershey_glyphs()
    except Exception:  # the negatives extra is not installed: strokes stand in for letters
        return None


def _degrade(rng: np.random.Generator, canvas: Image.Image, r: Recipe, width: int) -> np.ndarray:
    """Crop the ink with a margin, add ruling pieces, then scan it: resolution, blur, pencil,
    paper and JPEG; the result as a line image at most ``width`` wide."""
    ink = np.asarray(canvas)
    rows, cols = np.flatnonzero(ink.max(1) > 20), np.flatnonzero(ink.max(0) > 20)
    if not rows.size:
        return line_image(ink, max_width=width)
    m = rng.uniform(0.05, 0.3, 4) * WORK_HEIGHT
    y0, y1 = max(0, int(rows[0] - m[0])), min(ink.shape[0], int(rows[-1] + m[1]) + 1)
    x0, x1 = max(0, int(cols[0] - m[2])), min(ink.shape[1], int(cols[-1] + m[3]) + 1)
    crop = Image.fromarray(ink[y0:y1, x0:x1].copy())
    _rulings(rng, crop, r)
    scale = rng.uniform(*r.digit_height) / WORK_HEIGHT
    low = crop.resize((max(2, round(crop.width * scale)), max(2, round(crop.height * scale))), Image.Resampling.BOX)
    if rng.random() < r.blur_p:
        low = low.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.1)))
    a = np.asarray(low, np.float32) * rng.uniform(*r.pencil)
    a = a + _paper(rng, a.shape, r)
    page = np.clip(255 - a, 0, 255).astype(np.uint8)  # dark ink on light paper, as scanned
    if rng.random() < r.jpeg_p:
        page = _jpeg(page, int(rng.integers(20, 75)))
    return line_image(np.maximum(0, np.median(page) - page.astype(np.float32)), max_width=width)


def _rulings(rng: np.random.Generator, crop: Image.Image, r: Recipe) -> None:
    draw = ImageDraw.Draw(crop)
    w, h = crop.size
    if rng.random() < r.side_line_p:
        x = rng.uniform(0, 0.08) * w if rng.random() < 0.5 else w - 1 - rng.uniform(0, 0.08) * w
        y0, y1 = sorted(rng.uniform(0, h, 2)) if rng.random() < 0.3 else (0, h)
        draw.line(
            [(x, y0), (x + rng.normal(0, 1), y1)], fill=int(rng.integers(100, 256)), width=int(rng.integers(1, 5))
        )
    if rng.random() < r.ruling_p:
        y = rng.uniform(0, 0.08) * h if rng.random() < 0.5 else h - 1 - rng.uniform(0, 0.08) * h
        draw.line([(0, y), (w, y + rng.normal(0, 1))], fill=int(rng.integers(100, 256)), width=int(rng.integers(1, 4)))


def _paper(rng: np.random.Generator, shape: tuple[int, ...], r: Recipe) -> np.ndarray:
    """Paper seen as ink: grain plus a slow change of shade (both levels of 255, >= 0 on average)."""
    grain = rng.normal(0, rng.uniform(*r.noise), shape)
    coarse = rng.uniform(0, 1, (3, 5)).astype(np.float32)
    shade = np.asarray(Image.fromarray(coarse, mode="F").resize((shape[1], shape[0]), Image.Resampling.BILINEAR))
    return grain + shade * rng.uniform(*r.texture)


def _jpeg(page: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(page).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
