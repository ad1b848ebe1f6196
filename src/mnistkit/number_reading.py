"""Reading a written number ("2026", a house number, a postcode) digit by digit.

Preprocessing (:func:`mnistkit.preprocess.image.number_ink`) cuts the ink into its
finest left-to-right units; pieces of one digit may still be apart (the bar of a 5,
the strokes of a 4, a wide 2 cut where digits seemed to touch). Geometry alone cannot
tell "11" from a broken 4, but the model can: every run of up to :data:`MAX_JOIN`
neighbouring units that could be one digit is read, and the segmentation whose digits
the model is most sure of (the largest product of top-class probabilities) wins,
found by dynamic programming over the units (segmentation by recognition).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnistkit.errors import InputImageError
from mnistkit.fileio import input_stem, save_pngs
from mnistkit.prediction import decode_input, probabilities, stack_digits
from mnistkit.unsure import min_confidence_for, unsure_reason

if TYPE_CHECKING:
    from mnistkit.checkpoint import Checkpoint
    from mnistkit.preprocess.image import DigitAnalysis, NumberInk

#: At most this many neighbouring units are tried as one digit (a digit cut in three is the worst seen).
MAX_JOIN = 3
#: Joining k units into one digit costs ``JOIN_COST * (k - 1)`` in log probability: when the
#: model is as sure of the pieces apart as together (a 4 and a narrow 1 side by side read
#: "4" at 1.000), the pieces stay apart, as the ink had them.
JOIN_COST = 0.05


@dataclass
class NumberReading:
    """A written number read digit by digit, left to right.

    ``text``: the most likely digits (empty when no ink); ``digits``: ``(label, probability, unsure)``
    per digit; ``unsure``: any digit unsure, or no digit found.
    """

    path: str
    text: str
    digits: list[tuple[str, float, bool]]
    images: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def unsure(self) -> bool:
        return not self.digits or any(u for _, _, u in self.digits)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "number": self.text,
            "unsure": self.unsure,
            "digits": [{"label": lab, "probability": p, "unsure": u} for lab, p, u in self.digits],
        }


def read_number(
    checkpoint: Checkpoint, image, name: str = "<image>", min_confidence: float | None = None
) -> NumberReading:
    """Read a photographed or scanned number (a PIL image or a 2-D array) digit by digit
    (``min_confidence`` None: the checkpoint's own)."""
    from mnistkit.preprocess.image import number_ink

    min_confidence = min_confidence_for(checkpoint, min_confidence)
    analyses, proba = best_segmentation(checkpoint, number_ink(image))
    digits = []
    for a, p in zip(analyses, proba):
        k = int(np.argmax(p))
        digits.append(
            (checkpoint.class_names[k], round(float(p[k]), 6), unsure_reason(a, p, min_confidence) is not None)
        )
    return NumberReading(name, "".join(lab for lab, _, _ in digits), digits, [a.digit for a in analyses])


def best_segmentation(checkpoint: Checkpoint, number: NumberInk) -> tuple[list[DigitAnalysis], np.ndarray]:
    """The digits of ``number`` (and their probabilities) under the segmentation the model reads best.

    Candidates are single units and runs of up to :data:`MAX_JOIN` units that
    :meth:`~mnistkit.preprocess.image.NumberInk.joinable` allows; all are read in one batch.
    ``best[j]`` is the highest sum of log top-class probabilities over segmentations of
    the first ``j`` units.
    """
    n = len(number.units)
    spans = [(i, j) for i in range(n) for j in range(i + 1, min(n, i + MAX_JOIN) + 1)]
    spans = [(i, j) for i, j in spans if j == i + 1 or number.joinable(i, j)]
    analyses = {span: number.digit(*span) for span in spans}
    proba = dict(zip(spans, probabilities(checkpoint, stack_digits([analyses[s].digit for s in spans]))))
    best, came_from = [0.0] + [-math.inf] * n, [0] * (n + 1)
    for i, j in spans:  # sorted by start, so best[i] is final when span (i, j) is scored
        score = best[i] + math.log(max(float(proba[i, j].max()), 1e-12)) - JOIN_COST * (j - i - 1)
        if score > best[j]:
            best[j], came_from[j] = score, i
    chosen, j = [], n
    while j > 0:
        chosen.append((came_from[j], j))
        j = came_from[j]
    chosen.reverse()
    rows = np.stack([proba[s] for s in chosen]) if chosen else np.zeros((0, len(checkpoint.class_names)), np.float32)
    return [analyses[s] for s in chosen], rows


def read_number_files(
    checkpoint: Checkpoint,
    names: Sequence[str],
    stdin: bytes | None = None,
    min_confidence: float | None = None,
    failures: list[tuple[str, str]] | None = None,
) -> list[NumberReading]:
    """:func:`read_number` for each file; unreadable files go to ``failures`` (raise when it is None)."""
    readings = []
    for name in names:
        try:
            readings.append(read_number(checkpoint, decode_input(name, stdin), name, min_confidence))
        except InputImageError as exc:
            if failures is None:
                raise
            failures.append((name, str(exc)))
    return readings


def format_number_line(reading: NumberReading) -> str:
    """``path  2026  2 0.9981  0 0.9954 ...``; a ``?`` after each unsure digit, ``?`` alone for no ink."""
    if not reading.digits:
        return f"{reading.path}  ?  (no ink found)"
    per_digit = "  ".join(f"{lab} {p:.4f}{'?' if u else ''}" for lab, p, u in reading.digits)
    return f"{reading.path}  {reading.text}{'  ?' if reading.unsure else ''}  {per_digit}"


def save_number_inputs(readings: Sequence[NumberReading], folder: str | Path) -> list[Path]:
    """Write each number's digits as the model saw them: ``<stem>-1.png``, ``<stem>-2.png``, ... left to right."""
    return save_pngs([(f"{input_stem(r.path)}-{k}", d) for r in readings for k, d in enumerate(r.images, 1)], folder)
