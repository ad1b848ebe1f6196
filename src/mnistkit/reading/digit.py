"""One digit read by the line reader: the line a number would be read from (:mod:`.find`, then the
pick of :func:`~mnistkit.reading.reader.read_image`), read as exactly one digit.

The digit classifier frames one piece of ink; on a real scan that piece is often the wrong one (a
ruling line, a full stop, half a broken stroke). The line reader sees the whole line, so a digit
in pieces or beside a mark is still one digit to it. The probability of each digit sums every CTC
path that reads exactly that one symbol (:func:`mnistkit.ctc.one_symbol_log_probs`), taken at the
line's own width (how this was chosen: bench/README.md, "One digit by the line reader").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mnistkit.ctc import one_symbol_log_probs
from mnistkit.preprocess.tensor import normalize
from mnistkit.reading.line import pad_lines
from mnistkit.reading.reader import LineReading


@dataclass(frozen=True)
class OneDigit:
    """A line read as one digit: ``probs`` over the line model's classes (the probability of each
    digit given that the line holds one; they sum to 1), and the number reading of the same line
    (its ``text`` says how many digits the line seems to hold)."""

    probs: np.ndarray
    reading: LineReading


@torch.inference_mode()
def read_one_digit(reader, gray: np.ndarray) -> OneDigit | None:
    """The digit written in ``gray`` (uint8 ``[H, W]``, any polarity and size) as ``reader`` (a
    :class:`mnistkit.reading.model.LineReader`) reads it; None when no line of ink is found."""
    reading = reader.read(gray)
    if reading.line is None:
        return None
    reader.model.eval()
    logits = reader.model(normalize(torch.from_numpy(pad_lines([reading.line])), reader.norm))
    single = one_symbol_log_probs(logits, reader.temperature)[0].double()
    return OneDigit(torch.softmax(single, 0).float().numpy(), reading)
