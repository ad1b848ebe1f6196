"""The line model as a reader: a sequence checkpoint (``--model crnn``) with its class names,
temperature and unsure threshold, and the bundled one shipped beside the digit CNN."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnistkit.errors import CheckpointError
from mnistkit.preprocess.tensor import Normalization
from mnistkit.reading.reader import LINE_NORM, LineReading, read_image
from mnistkit.unsure import min_confidence_for, model_min_confidence

#: The unsure threshold of a line model that carries none: a reading's best-path probability under it.
DEFAULT_LINE_CONFIDENCE = 0.5


@dataclass
class LineReader:
    """A loaded line model and how to judge its readings."""

    model: torch.nn.Module
    class_names: list[str]
    temperature: float
    min_confidence: float
    norm: Normalization = LINE_NORM
    path: Path | None = None

    def read(self, gray: np.ndarray, min_confidence: float | None = None) -> LineReading:
        """The number written in ``gray`` (uint8 ``[H, W]``, any polarity and size)."""
        threshold = min_confidence_for(self, min_confidence)
        return read_image(self.model, gray, self.class_names, threshold, self.temperature, self.norm)


def load_line_reader(source: str | Path | None = None) -> LineReader:
    """A :class:`LineReader` from a checkpoint or run directory of a sequence model (None: the bundled one)."""
    from mnistkit.bundled import bundled_line_model_path
    from mnistkit.checkpoint import load_checkpoint

    path = bundled_line_model_path() if source is None else Path(source)
    ckpt = load_checkpoint(path)
    if ckpt.task != "sequence":
        raise CheckpointError(f"{path}: a {ckpt.task} model reads single digits, not lines; give a line model (crnn)")
    return LineReader(
        ckpt.model,
        ckpt.class_names,
        ckpt.temperature,
        model_min_confidence(ckpt.meta, DEFAULT_LINE_CONFIDENCE),
        ckpt.norm,
        ckpt.path,
    )
