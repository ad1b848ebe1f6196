"""The sequence reader: an image in, the number written in it out (or unsure, with a reason).

:func:`read_lines_of` finds the candidate lines of writing (:mod:`.find`), reads them all in one
batch with the line model, and keeps the surest reading that has digits. The reading is unsure
when its confidence (the best CTC path's probability after the model's temperature) is under the
threshold, or when no line holds digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from mnistkit.ctc import greedy_decode
from mnistkit.data.lines import LINE_NORM
from mnistkit.errors import CheckpointError
from mnistkit.preprocess.tensor import Normalization, normalize
from mnistkit.reading.find import FoundLine, find_lines
from mnistkit.reading.line import pad_lines

#: A line holding this share of the image's writing, read with at least this confidence, is the
#: answer at once (the other lines are not read). Fixed, not the user's unsure threshold: a lower
#: threshold must not let a doubtful first line stand in for a surer one.
MAIN_WRITING = 0.5
SURE_FIRST = 0.5
#: Weight of a line's share of the writing against its reading's confidence, in :func:`_line_score`.
INK_WEIGHT = 1.0
#: Each line is read at these widths (times its own) and the surest reading is kept. Handwriting is
#: often narrower for its height than the MNIST digits the reader learnt from, and a reading that is
#: wrong at one width is rarely sure at another (how they were chosen: bench/README.md, "The line
#: reader").
WIDTH_FACTORS = (1.0, 1.15, 1.3, 1.5)
#: The main line read at its own width with at least this confidence is the answer without the
#: other widths (most clean scans: a quarter of the work).
SURE_AT_ONCE = 0.9


@dataclass
class LineReading:
    """What was read in one image: ``text`` (digits, empty when none), ``confidence`` (0-1),
    per-digit highest probabilities, ``unsure`` and its ``reason``, and the line image read."""

    text: str
    confidence: float
    digit_probs: list[float]
    unsure: bool
    reason: str | None
    line: np.ndarray | None = field(default=None, repr=False)
    box: tuple[int, int, int, int] | None = None
    path: str = "<image>"

    def to_dict(self) -> dict:
        """The reading as JSON-ready values (``--json``, the server)."""
        return {
            "path": self.path,
            "number": self.text,
            "confidence": self.confidence,
            "unsure": self.unsure,
            "reason": self.reason,
            "digits": [{"label": d, "probability": p} for d, p in zip(self.text, self.digit_probs)],
        }

    def line_text(self) -> str:
        """``path  2026  0.9912  2 0.9981  0 0.9954 ...``; ``path  ?  ...  (reason)`` when unsure."""
        digits = "  ".join(f"{d} {p:.4f}" for d, p in zip(self.text, self.digit_probs))
        if self.unsure:
            shown = self.text or "?"
            return f"{self.path}  ?  {shown}  {self.confidence:.4f}  {digits}  ({self.reason})".replace("    ", "  ")
        return f"{self.path}  {self.text}  {self.confidence:.4f}  {digits}"


#: One line read at one width: its digits, the reading's confidence and each digit's probability.
Read = tuple[str, float, list[float]]


@torch.inference_mode()
def read_line_images(
    model: torch.nn.Module,
    lines: list[np.ndarray],
    class_names: list[str],
    temperature: float = 1.0,
    norm: Normalization = LINE_NORM,
    widths: tuple[float, ...] = (1.0,),
) -> list[list[Read]]:
    """Read line images with ``model`` (in eval mode), each at every width factor, in one batch:
    ``reads[line][width]`` is ``(text, confidence, digit_probs)``."""
    if not lines:
        return []
    model.eval()
    variants = [stretch(line, f) for line in lines for f in widths]
    logits = model(normalize(torch.from_numpy(pad_lines(variants)), norm))
    if not bool(torch.isfinite(logits).all()):  # a NaN is never an answer (nor valid JSON)
        raise CheckpointError("the line model gives non-finite scores (NaN or infinity): its weights are broken")
    decoded = greedy_decode(logits, temperature)
    flat = [
        ("".join(class_names[c] for c in labels), conf, probs)
        for labels, conf, probs in zip(decoded.labels, decoded.confidence, decoded.digit_probs)
    ]
    k = len(widths)
    return [flat[i * k : i * k + k] for i in range(len(lines))]


def read_lines(
    model: torch.nn.Module,
    lines: list[np.ndarray],
    class_names: list[str],
    temperature: float = 1.0,
    norm: Normalization = LINE_NORM,
    batch: int = 256,
) -> list[Read]:
    """Each line read as :func:`read_image` reads a main line: its own width first, when sure
    enough that reading, else the surest of :data:`WIDTH_FACTORS` (used to set the unsure
    threshold on the synthetic validation lines, which are single lines already)."""
    out: list[Read] = []
    for start in range(0, len(lines), batch):
        for reads in read_line_images(
            model, lines[start : start + batch], class_names, temperature, norm, WIDTH_FACTORS
        ):
            out.append(_surest(reads))
    return out


def _surest(reads: list[Read]) -> Read:
    """Of one line's readings at :data:`WIDTH_FACTORS`: the first when sure at once, else the surest."""
    if reads[0][0] and reads[0][1] >= SURE_AT_ONCE:
        return reads[0]
    return max(reads, key=lambda r: r[1])


def stretch(line: np.ndarray, factor: float) -> np.ndarray:
    """``line`` (a line image) ``factor`` times as wide, same height."""
    if factor == 1.0:
        return line
    width = max(1, round(line.shape[1] * factor))
    return np.asarray(Image.fromarray(line).resize((width, line.shape[0]), Image.Resampling.BILINEAR))


def read_image(
    model: torch.nn.Module,
    gray: np.ndarray,
    class_names: list[str],
    min_confidence: float,
    temperature: float = 1.0,
    norm: Normalization = LINE_NORM,
    widths: tuple[float, ...] = WIDTH_FACTORS,
) -> LineReading:
    """The number in ``gray`` (uint8 ``[H, W]``).

    At each width factor the image is read as one reading: the line holding most of the writing
    first, and when it reads as a sure number that is the answer (the common case: one number in
    the image); otherwise every candidate line, keeping the likeliest (:func:`_line_score`) with
    digits. The surest of the widths' answers is the reading.
    """
    found = find_lines(gray)
    if not found:
        return LineReading("", 0.0, [], True, "no ink found")
    main = found[0].ink_share >= MAIN_WRITING
    first = read_line_images(model, [found[0].image], class_names, temperature, norm, widths[:1])[0]
    if main and first[0][0] and first[0][1] >= SURE_AT_ONCE:
        return _reading(found[0], *first[0], min_confidence)
    first += read_line_images(model, [found[0].image], class_names, temperature, norm, widths[1:])[0]
    sure = [main and bool(r[0]) and r[1] >= SURE_FIRST for r in first]
    picks: list[tuple[int, Read]] = [(0, r) for r, ok in zip(first, sure) if ok]
    rest = tuple(f for f, ok in zip(widths, sure) if not ok)
    if rest:
        reads = read_line_images(model, [f.image for f in found], class_names, temperature, norm, rest)
        for k in range(len(rest)):
            picks.append(max(((i, r[k]) for i, r in enumerate(reads)), key=lambda p: _pick_score(p, found)))
    line, (text, confidence, probs) = max(picks, key=lambda p: p[1][1])
    return _reading(found[line], text, confidence, probs, min_confidence)


def _pick_score(pick: tuple[int, Read], found: list[FoundLine]) -> tuple[bool, float]:
    line, (text, confidence, _) = pick
    return bool(text), _line_score(confidence, found[line].ink_share)


def _line_score(confidence: float, ink_share: float) -> float:
    """How likely a line is the number: its reading's log confidence plus the log of its share of
    the image's writing, so a sure "1" read in a speck of a ruling line loses to the main writing."""
    return math.log(max(confidence, 1e-30)) + INK_WEIGHT * math.log(max(ink_share, 1e-6))


def _reading(line: FoundLine, text: str, confidence: float, probs: list[float], min_confidence: float) -> LineReading:
    if not text:
        reason: str | None = "no digits found (writing that is not a number?)"
    elif confidence < min_confidence:
        reason = f"low confidence {confidence:.3f} < {min_confidence:.3f}"
    else:
        reason = None
    return LineReading(
        text,
        round(float(confidence), 6),
        [round(float(p), 6) for p in probs],
        reason is not None,
        reason,
        line.image,
        line.box,
    )
