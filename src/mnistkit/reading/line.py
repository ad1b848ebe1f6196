"""The line image a sequence reader sees: ink bright on black, LINE_HEIGHT px tall, its width
following the writing's aspect. Training lines (:mod:`.synth`) and found lines (:mod:`.find`) both
pass through :func:`line_image`, so the reader is trained on what it later reads.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: Height of every line image (px). Digits fill most of it; ascenders of a slanted digit the rest.
LINE_HEIGHT = 32
#: Width of the training canvas (px): eight digits side by side at LINE_HEIGHT fit in it.
LINE_WIDTH = 160
#: A found line wider than this is squeezed to it (a very long line is no number we read).
MAX_LINE_WIDTH = 4 * LINE_WIDTH
#: Ink at or above this percentile of the inked pixels becomes full white (255).
INK_PERCENTILE = 95
#: Pixels under this share of the line's ink level are background (set to 0).
BACKGROUND_SHARE = 0.12


def line_image(ink: np.ndarray, height: int = LINE_HEIGHT, max_width: int = MAX_LINE_WIDTH) -> np.ndarray:
    """``ink`` (a 2-D array, ink bright, any scale) as a uint8 line image ``[height, w]``.

    The contrast is stretched so the line's strong ink is 255 whatever the pen (a grey pencil and
    a black pen look alike), faint background is cut to 0, and the height is scaled to ``height``
    keeping the aspect (``w`` between ``height // 4`` and ``max_width``).
    """
    a = np.asarray(ink, dtype=np.float32)
    if a.ndim != 2 or a.size == 0:
        return np.zeros((height, height // 4), np.uint8)
    inked = a[a > 0]
    level = float(np.percentile(inked, INK_PERCENTILE)) if inked.size else 0.0
    if level <= 0:
        stretched = np.zeros_like(a)
    else:
        stretched = np.clip((a - BACKGROUND_SHARE * level) / ((1 - BACKGROUND_SHARE) * level), 0, 1) * 255
    h, w = a.shape
    width = int(min(max_width, max(height // 4, round(w * height / h))))
    img = Image.fromarray(stretched.astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def pad_lines(lines: list[np.ndarray], width: int | None = None, multiple: int = 4) -> np.ndarray:
    """Line images side by side in one uint8 batch ``[N, LINE_HEIGHT, W]``, each left-aligned on
    black; ``W`` is ``width`` or the widest line rounded up to ``multiple`` (the reader's stride)."""
    widest = max((ln.shape[1] for ln in lines), default=multiple)
    w = width if width is not None else -(-widest // multiple) * multiple
    out = np.zeros((len(lines), LINE_HEIGHT, w), np.uint8)
    for i, ln in enumerate(lines):
        out[i, :, : min(w, ln.shape[1])] = ln[:, :w]
    return out
