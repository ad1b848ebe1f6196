"""The public face of the package: what ``mnistkit.predict`` and the commands that work on
checkpoints call. Re-exports and small functions only; the work lives in the modules below,
and none of them imports this one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mnistkit.card import model_card
from mnistkit.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint_path
from mnistkit.errors import ConfigError
from mnistkit.evaluation import evaluate_checkpoint
from mnistkit.prediction import analyze_digit, decode_side, digit_line_reader, stack_digits, top_predictions
from mnistkit.preprocess.image import load_image
from mnistkit.reading import read_numbers
from mnistkit.unsure import check_min_confidence

__all__ = ["evaluate_checkpoint", "load_checkpoint", "model_card", "predict", "resolve_checkpoint_path"]


def predict(
    images: Any, model: Any = None, *, top_k: int = 1, min_confidence: float | None = None, number: bool = False
) -> list:
    """Predict digits in photos, scans, drawings or arrays: ``mnistkit.predict``.

    Parameters
    ----------
    images
        One input or a list of them: a path (str or ``Path``), encoded file bytes, a PIL
        image, or a 2-D NumPy array of 0..255 values (a 3-D ``[N, H, W]`` array is N images).
        Every input goes through the same preprocessing as ``mnistkit predict``.
    model
        ``None`` for the bundled digit model, a checkpoint file or run directory, or a
        loaded :class:`~mnistkit.checkpoint.Checkpoint`.
    top_k, min_confidence
        As the CLI's ``--top-k`` and ``--min-confidence`` (None: the model's own threshold).
    number
        As ``--number``: each input is a written number, read whole by a line reader (``model``:
        None for the bundled one, or a line checkpoint or run directory).

    Returns
    -------
    list of :class:`Prediction`
        One per input, in order: ``label``, ``probability`` (calibrated), ``top``,
        ``unsure`` and ``reason``, and ``digit`` (the 28x28 image the model saw). With
        ``number=True``, :class:`~mnistkit.reading.reader.LineReading` objects: ``text``,
        ``confidence``, ``digit_probs``, ``unsure``, ``reason`` and ``line`` (what was read).

    Examples
    --------
    >>> import mnistkit                                                   # doctest: +SKIP
    >>> p = mnistkit.predict("my-digit.jpg")[0]                           # doctest: +SKIP
    >>> p.label, round(p.probability, 3), p.unsure                        # doctest: +SKIP
    ('7', 0.998, False)
    """
    check_min_confidence(min_confidence)
    items, names = _as_items(images)
    if number:
        return read_numbers(items, names, model, min_confidence)
    checkpoint = _as_checkpoint(model)
    reader = digit_line_reader(checkpoint)
    analyses = []
    for item, name in zip(items, names):
        if isinstance(item, (str, Path, bytes, bytearray)):
            item = load_image(item, name=name, work_side=decode_side(reader))
        analyses.append(analyze_digit(item, checkpoint, reader))
    return top_predictions(
        checkpoint,
        stack_digits([a.digit for a in analyses]),
        names,
        top_k,
        analyses=analyses,
        min_confidence=min_confidence,
    )


def _as_checkpoint(model: Any) -> Checkpoint:
    """A loaded checkpoint as it is; a path, a run directory or None (the bundled model) loaded."""
    return model if isinstance(model, Checkpoint) else load_checkpoint(model)


def _as_items(images: Any) -> tuple[list, list[str]]:
    """One input or a sequence of them -> (items, names for messages)."""
    if (isinstance(images, np.ndarray) and images.ndim == 3) or isinstance(images, (list, tuple)):
        items = list(images)
    else:
        items = [images]
    names = []
    for i, item in enumerate(items):
        if isinstance(item, (str, Path)):
            names.append(str(item))
        elif isinstance(item, (bytes, bytearray, np.ndarray)) or hasattr(item, "mode"):
            names.append(f"<image {i}>")
        else:
            raise ConfigError(
                f"cannot predict a {type(item).__name__}: give paths, file bytes, PIL images or 2-D NumPy arrays"
            )
    return items, names
