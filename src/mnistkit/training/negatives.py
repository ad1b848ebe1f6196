"""Generated non-digits, so that a digit model learns to say "none of these" (``--negatives``).

A classifier trained on digits alone has no way to answer "not a digit": a letter or a scribble
comes back as some digit, often at high confidence. Outlier exposure (Hendrycks et al., ICLR
2019) adds examples of what is *not* any class to training, with a loss that pulls their
prediction toward the uniform distribution (:func:`mnistkit.losses.outlier_exposure_loss`), so
a low confidence (``--min-confidence``) and the novelty score both separate them better.

The non-digits are generated here, from the batch itself and from pen strokes, never taken
from a benchmark's sets; each batch gets ``NEGATIVE_SHARE`` of its size in negatives, each made
one of these ways, chosen at random:

- ``mirror``: a digit flipped left-right (2 3 4 5 6 7 9: shapes like an epsilon, d, p, S);
- ``turn``: a digit turned a quarter either way (1-7 and 9: a dash, L, V, N, C-like shapes);
- ``overlay``: two digits drawn over each other, the second shifted by 3-6 pixels;
- ``strokes``: 2-4 random straight or curved pen strokes, a letter's worth of ink;
- ``letters``: a letter of the Hershey vector fonts (simplex sans, roman and script: single pen
  strokes, as a hand draws them), each point jittered and the whole slanted, stretched and turned
  a little, so no two are alike. Letters that handwriting makes into digits (O o Q D I i l S s Z z
  B b G g q) are left out.

The drawn kinds are rendered once per run and framed as ``mnistkit predict`` frames a digit.

0 and 8 are never mirrored or turned (they stay digits), 1 is never mirrored: a digit whose class
cannot be mirrored or turned becomes an overlay instead. Which classes may be mirrored or turned
goes by class name, so this needs classes named after digits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mnistkit.errors import ConfigError
from mnistkit.losses import NEGATIVE
from mnistkit.training.augment import shift_by

#: Negatives per batch, as a share of its real images (64 for a batch of 128).
NEGATIVE_SHARE = 0.5
#: Digits that are not a digit once flipped left-right, or turned a quarter.
MIRRORABLE = frozenset("2345679")
TURNABLE = frozenset("12345679")
#: How an overlay's second digit is shifted, in pixels per axis (and at least OVERLAY_MIN_SHIFT in all)
OVERLAY_MAX_SHIFT, OVERLAY_MIN_SHIFT = 6, 3
#: Drawings (strokes, letters) generated once per run, of each kind; each batch samples from them.
STROKE_BANK = 4096
KINDS = ("mirror", "turn", "overlay", "strokes", "letters")
#: Hershey fonts drawn with one pen stroke per line (the package's names), and the letters drawn.
LETTER_FONTS = ("futural", "rowmans", "scripts")
LETTERS = "".join(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in "OoQDIilSsZzBbGgq")


@dataclass
class Negatives:
    """Makes a batch's generated non-digits; built once per run by :meth:`for_task`."""

    weight: float  # their loss weight (TrainConfig.negatives)
    mirrorable: torch.Tensor  # [C] bool: class c may be mirrored
    turnable: torch.Tensor  # [C] bool: class c may be turned
    strokes: torch.Tensor  # [N, 1, 28, 28] normalised pen-stroke drawings
    letters: torch.Tensor  # [N, 1, 28, 28] normalised drawn letters
    share: float = NEGATIVE_SHARE

    @classmethod
    def for_task(
        cls,
        weight: float,
        class_names: Sequence[str],
        normalise: Callable,
        seed: int,
        device: torch.device,
        train_size: int = STROKE_BANK,
    ) -> Negatives:
        """For a task with these classes; ``normalise`` maps uint8 images to the run's pixel values.
        The stroke bank has ``STROKE_BANK`` drawings, fewer for a smaller training split."""
        names = [str(n) for n in class_names]
        if not names or not all(n in "0123456789" and len(n) == 1 for n in names):
            raise ConfigError(
                "--negatives makes non-digits by mirroring and turning digits, so it needs classes named 0-9; "
                f"this dataset's classes are {', '.join(names[:6])}{'...' if len(names) > 6 else ''}"
            )
        bank_size = max(1, min(STROKE_BANK, train_size))
        rng = np.random.default_rng(seed + 7_919)

        def bank(drawings: np.ndarray) -> torch.Tensor:
            return normalise(torch.from_numpy(drawings).to(device)).view(len(drawings), 1, *drawings.shape[1:])

        return cls(
            weight=weight,
            mirrorable=torch.tensor([n in MIRRORABLE for n in names], device=device),
            turnable=torch.tensor([n in TURNABLE for n in names], device=device),
            strokes=bank(stroke_drawings(bank_size, rng)),
            letters=bank(letter_drawings(bank_size, rng)),
        )

    def count(self, batch: int) -> int:
        """Negatives added to a batch of ``batch`` real images."""
        return max(1, round(batch * self.share))

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        fill: float,
        generator: torch.Generator,
        augment: Callable | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, 1, H, W]`` (normalised, augmented), ``y [B]`` -> the batch with its negatives appended,
        their targets :data:`~mnistkit.losses.NEGATIVE`. Every draw comes from ``generator``."""
        k = self.count(len(x))
        dev = x.device
        kind = torch.randint(0, len(KINDS), (k,), generator=generator).to(dev)
        src = torch.randint(0, len(x), (k,), generator=generator).to(dev)
        other = torch.randint(0, len(x), (k,), generator=generator).to(dev)
        plus = torch.randint(0, 2, (k,), generator=generator).to(dev).bool().view(k, 1, 1, 1)  # +90 degrees, else -90
        pick = torch.randint(0, len(self.strokes), (k,), generator=generator).to(dev)
        pick_letter = torch.randint(0, len(self.letters), (k,), generator=generator).to(dev)
        base, cls = x.index_select(0, src), y.index_select(0, src)
        # a digit that cannot be mirrored or turned becomes an overlay
        kind = torch.where((kind == 0) & ~self.mirrorable[cls], 2, kind)
        kind = torch.where((kind == 1) & ~self.turnable[cls], 2, kind)
        mirrored = base.flip(-1)
        # +-90 degrees, both turns made for the whole batch: one kernel each, no per-image loop
        turned = torch.where(plus, base.rot90(1, dims=(-2, -1)), base.rot90(-1, dims=(-2, -1)))
        over = torch.maximum(
            base, shift_by(x.index_select(0, other), overlay_offsets(k, generator), OVERLAY_MAX_SHIFT, fill)
        )
        drawn = torch.cat([self.strokes.index_select(0, pick), self.letters.index_select(0, pick_letter)])
        if augment is not None:
            drawn = augment(drawn, fill, generator)
        made = torch.stack([mirrored, turned, over, drawn[:k], drawn[k:]])  # [kinds, k, 1, H, W]
        negatives = made[kind, torch.arange(k, device=dev)]
        targets = torch.full((k,), NEGATIVE, dtype=y.dtype, device=dev)
        return torch.cat([x, negatives]), torch.cat([y, targets])


def overlay_offsets(k: int, generator: torch.Generator) -> torch.Tensor:
    """``[k, 2]`` integer shifts in ``[-OVERLAY_MAX_SHIFT, OVERLAY_MAX_SHIFT]`` per axis whose
    city-block length is at least ``OVERLAY_MIN_SHIFT``: the two digits never coincide."""
    off = torch.randint(-OVERLAY_MAX_SHIFT, OVERLAY_MAX_SHIFT + 1, (k, 2), generator=generator)
    short = off.abs().sum(1) < OVERLAY_MIN_SHIFT
    push = torch.where(off[:, 1] < 0, -OVERLAY_MIN_SHIFT, OVERLAY_MIN_SHIFT)
    off[:, 1] = torch.where(short, push, off[:, 1])
    return off


def stroke_drawings(n: int, rng: np.random.Generator, canvas: int = 64) -> np.ndarray:
    """``[n, 28, 28]`` uint8: 2-4 pen strokes each (straight, or a quadratic curve through a random
    control point), 4-8 px wide on a ``canvas``-pixel square, framed as ``mnistkit predict`` frames ink."""
    t = np.linspace(0.0, 1.0, 12)[:, None]

    def one() -> list[np.ndarray]:
        lines = []
        for _ in range(int(rng.integers(2, 5))):
            a, b = rng.uniform(6, canvas - 6, (2, 2))
            bend = (a + b) / 2 + rng.normal(0, canvas / 5, 2) * float(rng.random() < 0.5)
            lines.append((1 - t) ** 2 * a + 2 * (1 - t) * t * bend + t**2 * b)
        return lines

    return np.stack([draw_framed(one(), int(rng.integers(4, 9)), canvas) for _ in range(n)])


def letter_drawings(n: int, rng: np.random.Generator, canvas: int = 64) -> np.ndarray:
    """``[n, 28, 28]`` uint8: letters of :data:`LETTERS` in the :data:`LETTER_FONTS`, each point moved
    by 1.5 % of the letter's size, then slanted (+-0.3), stretched (0.8-1.25) and turned (+-10 deg)."""
    glyphs = hershey_glyphs()
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        lines = glyphs[int(rng.integers(len(glyphs)))]
        size = max(np.ptp(np.concatenate(lines), axis=0).max(), 1.0)
        angle = np.deg2rad(rng.uniform(-10, 10))
        shape = np.array([[1.0, rng.uniform(-0.3, 0.3)], [0.0, rng.uniform(0.8, 1.25)]])
        turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        warp = turn @ shape
        moved = [(line + rng.normal(0, 0.015 * size, line.shape)) @ warp.T for line in lines]
        out[i] = draw_framed(moved, int(rng.integers(4, 9)), canvas)
    return out


def hershey_glyphs() -> list[list[np.ndarray]]:
    """Every (font, letter) of :data:`LETTER_FONTS` x :data:`LETTERS` as its pen strokes ``[points, 2]``
    (x right, y down). Needs the Hershey-Fonts package (the ``negatives`` extra)."""
    try:
        from HersheyFonts import HersheyFonts
    except ImportError:
        raise ConfigError("--negatives draws letters with Hershey-Fonts: pip install 'mnistkit[negatives]'") from None
    glyphs = []
    for font in LETTER_FONTS:
        fonts = HersheyFonts()
        fonts.load_default_font(font)
        for letter in LETTERS:
            lines = [np.array(s, dtype=np.float64) for s in fonts.strokes_for_text(letter) if len(s) > 1]
            if lines:
                glyphs.append(lines)
    return glyphs


def draw_framed(lines: list[np.ndarray], width: int, canvas: int) -> np.ndarray:
    """Polylines (any coordinates) scaled into a ``canvas``-pixel square, drawn ``width`` px wide with
    round joints, then framed like a digit (:func:`mnistkit.preprocess.frame.frame_digit`)."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise ConfigError("--negatives draws with Pillow: pip install 'mnistkit[negatives]'") from None
    from mnistkit.preprocess.frame import frame_digit

    points = np.concatenate(lines)
    low, span = points.min(0), max(float(np.ptp(points, axis=0).max()), 1e-6)
    margin = width + 2
    scale = (canvas - 2 * margin) / span
    img = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(img)
    for line in lines:
        xy = (line - low) * scale + margin
        draw.line([(float(x), float(y)) for x, y in xy], fill=255, width=width, joint="curve")
    ink = np.asarray(img)
    return frame_digit(ink, ink > 0)
