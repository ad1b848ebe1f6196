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


@torch.inference_mode()
def read_line_images(
    model: torch.nn.Module,
    lines: list[np.ndarray],
    class_names: list[str],
    temperature: float = 1.0,
    norm: Normalization = LINE_NORM,
):
    """Read line images with ``model`` (in eval mode): ``(texts, confidences, digit_probs)``."""
    if not lines:
        return [], [], []
    model.eval()
    logits = model(normalize(torch.from_numpy(pad_lines(lines)), norm))
    if not bool(torch.isfinite(logits).all()):  # a NaN is never an answer (nor valid JSON)
        raise CheckpointError("the line model gives non-finite scores (NaN or infinity): its weights are broken")
    decoded = greedy_decode(logits, temperature)
    texts = ["".join(class_names[k] for k in row) for row in decoded.labels]
    return texts, decoded.confidence, decoded.digit_probs


def read_image(
    model: torch.nn.Module,
    gray: np.ndarray,
    class_names: list[str],
    min_confidence: float,
    temperature: float = 1.0,
    norm: Normalization = LINE_NORM,
) -> LineReading:
    """The number in ``gray`` (uint8 ``[H, W]``).

    The line holding most of the writing is read first; when it reads as a sure number that is the
    answer (the common case: one number in the image). Otherwise every candidate line is read and
    the likeliest (:func:`_line_score`) with digits is kept.
    """
    found = find_lines(gray)
    if not found:
        return LineReading("", 0.0, [], True, "no ink found")
    texts, conf, probs = read_line_images(model, [found[0].image], class_names, temperature, norm)
    if texts[0] and conf[0] >= SURE_FIRST and found[0].ink_share >= MAIN_WRITING:
        return _reading(found[0], texts[0], conf[0], probs[0], min_confidence)
    texts, conf, probs = read_line_images(model, [f.image for f in found], class_names, temperature, norm)
    best = max(range(len(found)), key=lambda i: (bool(texts[i]), _line_score(conf[i], found[i].ink_share)))
    return _reading(found[best], texts[best], conf[best], probs[best], min_confidence)


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
