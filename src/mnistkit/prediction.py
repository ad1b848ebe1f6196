"""Predict labels for image files, folders, stdin, arrays, or a Kaggle "Digit Recognizer" CSV.

Images go through :func:`analyze_digit` (the one image path: :func:`mnistkit.preprocess.image.analyze_image`,
and with the bundled models the line reader's reading of the image as one digit), CSV rows are
already MNIST-framed uint8 pixels and skip it; both
then meet :func:`mnistkit.inference.checkpoint_proba`, which normalises with the
checkpoint's own statistics and applies its calibration temperature. A bad input
file is reported and skipped, so one broken image never costs the predictions
for the rest. Whether a prediction is unsure is :mod:`mnistkit.unsure`'s rule; the
Python API's ``mnistkit.predict`` (:func:`mnistkit.api.predict`) is built on :func:`top_predictions`.

>>> result = predict_files(ckpt, ["digits/"], top_k=3)        # doctest: +SKIP
>>> result.predictions[0].label, result.failures              # doctest: +SKIP
('7', [])
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnistkit.errors import CheckpointError, ConfigError, DataFormatError, InputImageError
from mnistkit.fileio import STDIN, input_stem, save_pngs
from mnistkit.unsure import min_confidence_for, unsure_reason

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mnistkit.checkpoint import Checkpoint
    from mnistkit.preprocess.image import DigitAnalysis
    from mnistkit.reading.model import LineReader

#: A photo or scan read with the bundled models: each digit's probability is the line reader's
#: one-digit reading times the digit classifier's to a power, renormalised. Where the ink the
#: classifier framed lies on the line the reader read, the two are equal partners; where it does
#: not (the classifier framed a ruling line, a gutter or a full stop), the classifier only breaks
#: near-ties (how they were chosen: bench/README.md, "One digit by the line reader").
CLASSIFIER_WEIGHT = 1.0
CLASSIFIER_WEIGHT_OTHER_INK = 0.3
#: The framed ink lies on the read line when its box, grown by this share of the line's height on
#: every side, holds it and it spans at least SAME_INK_SPAN of the line's width.
SAME_INK_MARGIN = 0.3
SAME_INK_SPAN = 0.5


@dataclass
class Prediction:
    """One input's prediction: the best label, its probability, the ``top`` (label, p) pairs, and
    whether it is unsure (with the reason, from :func:`unsure_reason`). An image with no ink has
    no label, no probability and an empty ``top``: there is nothing to read."""

    path: str
    label: str | None
    probability: float | None
    top: list[tuple[str, float]]
    unsure: bool = False
    reason: str | None = None
    digit: np.ndarray | None = field(default=None, repr=False)  #: the 28x28 uint8 the model saw

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "probability": self.probability,
            "top": [[lab, p] for lab, p in self.top],
            "unsure": self.unsure,
            "reason": self.reason,
        }


@dataclass
class PredictResult:
    """Predictions for the inputs that could be read, and ``(name, message)`` for those that could not."""

    predictions: list[Prediction] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class CsvResult:
    """Predicted class indices for every CSV row, and the accuracy when the CSV had labels."""

    predicted: torch.Tensor
    labels: torch.Tensor | None
    accuracy: float | None


def expand_inputs(inputs: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files stay as given, folders become their image files (recursive, sorted), ``-`` is stdin.

    Folders are searched for the suffixes image-folder training reads; a folder
    with none is returned as a failure. Missing paths are kept: they fail later,
    one line each, like any unreadable file.
    """
    from mnistkit.data.custom import IMAGE_SUFFIXES  # the suffixes image-folder training reads

    if sum(1 for i in inputs if i == STDIN) > 1:
        raise ConfigError("'-' (standard input) can be given only once")
    names: list[str] = []
    failures: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if item != STDIN and p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                failures.append((item, f"{item}: folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"))
            names.extend(found)
        else:
            names.append(item)
    return names, failures


def decode_input(name: str, stdin: bytes | None, max_pixels: int | None = None, work_side: int | None = None):
    """Decode one named input (``-``: ``stdin``), reduced to about ``work_side`` px (:func:`decode_side`)."""
    from mnistkit.preprocess.decode import MAX_PIXELS, WORK_SIDE, load_image

    source = (stdin if stdin is not None else b"") if name == STDIN else name
    label = "<stdin>" if name == STDIN else name
    return load_image(source, max_pixels or MAX_PIXELS, name=label, work_side=work_side or WORK_SIDE)


def decode_side(reader: LineReader | None) -> int:
    """How large a digit's image is decoded: the classifier's working size, or with a line reader
    the size lines of writing are looked for in (:data:`mnistkit.reading.NUMBER_DECODE_SIDE`)."""
    from mnistkit.preprocess.decode import WORK_SIDE
    from mnistkit.reading import NUMBER_DECODE_SIDE

    return WORK_SIDE if reader is None else NUMBER_DECODE_SIDE


def analyze_inputs(
    names: Sequence[str], stdin: bytes | None = None, checkpoint: Checkpoint | None = None
) -> tuple[list[str], list[DigitAnalysis], list[tuple[str, str]]]:
    """Decode and analyse each named input (:func:`analyze_digit`, for ``checkpoint``)
    -> (names that worked, their analyses, failures)."""
    reader = digit_line_reader(checkpoint)
    ok, analyses, failures = [], [], []
    for name in names:
        try:
            image = decode_input(name, stdin, work_side=decode_side(reader))
            analyses.append(analyze_digit(image, checkpoint, reader))
            ok.append(name)
        except InputImageError as exc:
            failures.append((name, str(exc)))
    return ok, analyses, failures


def digit_line_reader(checkpoint: Checkpoint | None) -> LineReader | None:
    """The bundled line reader for the bundled digit model, which answers together with it on photos
    and scans (:func:`analyze_digit`); None for any other model, which answers alone."""
    from mnistkit.bundled import bundled_model_path

    if checkpoint is None or checkpoint.path is None:
        return None
    try:
        if Path(checkpoint.path).resolve() != bundled_model_path().resolve():
            return None
    except CheckpointError:  # an install without the bundled files
        return None
    return _bundled_line_reader()


@functools.cache
def _bundled_line_reader() -> LineReader:
    from mnistkit.reading.model import load_line_reader

    return load_line_reader(None)


def analyze_digit(image, checkpoint: Checkpoint | None = None, reader: LineReader | None = None) -> DigitAnalysis:
    """The one image path of a single digit: what :func:`mnistkit.preprocess.image.analyze_image`
    finds, and, given a line ``reader``, its reading of a photo or scan as one digit (in
    ``checkpoint``'s class order: ``line_probs``). The line reader also counts the digits: marks
    beside a digit are not digits to it. An already framed 28x28 digit, a blank image and writing
    in which the line reader sees no digit are left to the classifier (and its unsure rule)."""
    from mnistkit.preprocess.image import analyze_image, to_grayscale
    from mnistkit.reading.digit import read_one_digit

    analysis = analyze_image(image)
    if reader is None or checkpoint is None or analysis.framed or analysis.digits_found == 0:
        return analysis
    one = read_one_digit(reader, to_grayscale(image))
    if one is None or not one.reading.text:  # no digit to the line reader: the classifier answers alone
        return analysis
    order = [reader.class_names.index(name) for name in checkpoint.class_names]
    return replace(
        analysis,
        line_probs=one.probs[order],
        digits_found=len(one.reading.text),
        same_ink=same_ink(analysis.box, one.reading.box),
    )


def same_ink(framed: tuple[int, int, int, int] | None, line: tuple[int, int, int, int] | None) -> bool:
    """Whether the classifier's framed ink (its box) lies on the line the line reader read (its box):
    inside it grown by :data:`SAME_INK_MARGIN` of its height, spanning :data:`SAME_INK_SPAN` of its width."""
    if framed is None or line is None:
        return False
    fx0, fy0, fx1, fy1 = framed
    lx0, ly0, lx1, ly1 = line
    grow = SAME_INK_MARGIN * (ly1 - ly0)
    inside = fx0 >= lx0 - grow and fy0 >= ly0 - grow and fx1 <= lx1 + grow and fy1 <= ly1 + grow
    return inside and min(fx1, lx1) - max(fx0, lx0) >= SAME_INK_SPAN * max(1, lx1 - lx0)


def with_line_readings(proba: np.ndarray, analyses: Sequence[DigitAnalysis] | None) -> np.ndarray:
    """The classifier's probabilities, joined with the line reader's one-digit reading for each
    analysis that has one (:data:`CLASSIFIER_WEIGHT`, :data:`CLASSIFIER_WEIGHT_OTHER_INK`)."""
    if analyses is None or all(a.line_probs is None for a in analyses):
        return proba
    out = proba.copy()
    for i, a in enumerate(analyses):
        if a.line_probs is not None:
            weight = CLASSIFIER_WEIGHT if a.same_ink else CLASSIFIER_WEIGHT_OTHER_INK
            joint = weight * np.log(np.clip(proba[i], 1e-12, 1)) + np.log(np.clip(a.line_probs, 1e-12, 1))
            joint = np.exp(joint - joint.max())
            out[i] = joint / joint.sum()
    return out


def stack_digits(digits: Sequence[np.ndarray]) -> torch.Tensor:
    """28x28 uint8 digits -> one uint8 ``[N, 28, 28]`` tensor (``[0, 28, 28]`` for none)."""
    import torch

    return torch.from_numpy(np.stack(digits)) if len(digits) else torch.empty(0, 28, 28, dtype=torch.uint8)


def probabilities(checkpoint: Checkpoint, digits: np.ndarray | torch.Tensor, bf16: bool = False) -> np.ndarray:
    """Calibrated class probabilities, float32 ``[N, classes]``, for uint8 ``[N, 28, 28]`` digits."""
    import torch

    from mnistkit.inference import checkpoint_proba

    images = digits if isinstance(digits, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(digits))
    if len(images) == 0:
        return np.zeros((0, len(checkpoint.class_names)), np.float32)
    return checkpoint_proba(checkpoint, images, bf16=bf16).float().numpy()


def top_predictions(
    checkpoint: Checkpoint,
    images: torch.Tensor,
    names: Sequence[str],
    top_k: int = 1,
    bf16: bool = False,
    analyses: Sequence[DigitAnalysis] | None = None,
    min_confidence: float | None = None,
) -> list[Prediction]:
    """Run the model on uint8 ``[N, 28, 28]`` images; the ``top_k`` most likely labels for each.

    With ``analyses`` (what preprocessing found), each prediction also says whether it is unsure
    (the checkpoint's novelty model, when it has one, is asked too; ``min_confidence`` None: the
    checkpoint's own).
    """
    from mnistkit.novelty import novelty_ratios

    min_confidence = min_confidence_for(checkpoint, min_confidence)

    names_by_index = checkpoint.class_names
    _check_top_k(top_k, len(names_by_index))
    if len(images) == 0:
        return []
    own = probabilities(checkpoint, images, bf16)
    proba = with_line_readings(own, analyses)
    order = np.argsort(-proba, axis=1, kind="stable")[:, :top_k]
    novelty = novelty_ratios(checkpoint, images) if analyses is not None else None
    preds = []
    for i, name in enumerate(names):
        top = [(names_by_index[k], round(float(proba[i, k]), 6)) for k in order[i]]
        ratio = float(novelty[i]) if novelty is not None else None
        reason = unsure_reason(analyses[i], proba[i], min_confidence, ratio, own[i]) if analyses is not None else None
        digit = analyses[i].digit if analyses is not None else None
        if analyses is not None and analyses[i].digits_found == 0:  # a blank page: no answer at all
            preds.append(Prediction(name, None, None, [], True, reason, digit))
            continue
        preds.append(Prediction(name, top[0][0], top[0][1], top, reason is not None, reason, digit))
    return preds


def _check_top_k(top_k: int, num_classes: int) -> None:
    if not 1 <= top_k <= num_classes:
        raise ConfigError(f"--top-k must be between 1 and the number of classes ({num_classes}), got {top_k}")


def predict_files(
    checkpoint: Checkpoint,
    inputs: Sequence[str],
    top_k: int = 1,
    stdin: bytes | None = None,
    bf16: bool = False,
    min_confidence: float | None = None,
) -> PredictResult:
    """Predict every image among ``inputs`` (files, folders, ``-``); unreadable ones become failures."""
    _check_top_k(top_k, len(checkpoint.class_names))
    names, folder_failures = expand_inputs(inputs)
    names, analyses, failures = analyze_inputs(names, stdin, checkpoint)
    preds = top_predictions(
        checkpoint, stack_digits([a.digit for a in analyses]), names, top_k, bf16, analyses, min_confidence
    )
    return PredictResult(preds, folder_failures + failures)


def format_line(pred: Prediction) -> str:
    """``path  label  probability`` (then further ``label  probability`` pairs for ``--top-k``);
    an unsure prediction reads ``path  ?  label  probability  (reason)``."""
    pairs = "  ".join(f"{label}  {p:.4f}" for label, p in pred.top)
    if pred.unsure:
        return f"{pred.path}  ?  {pairs}  ({pred.reason})".replace("    ", "  ")
    return f"{pred.path}  {pairs}"


def save_inputs(predictions: Sequence[Prediction], folder: str | Path) -> list[Path]:
    """Write the 28x28 image each input became, as ``<folder>/<input's stem>.png``, or ``<stem>~2.png``...
    when that name is taken: nothing that exists is replaced, so an input in ``folder`` is never overwritten."""
    return save_pngs([(input_stem(p.path), p.digit) for p in predictions if p.digit is not None], folder)


# --- Kaggle "Digit Recognizer" CSV --------------------------------------------------------------


def predict_csv(checkpoint: Checkpoint, path: str | Path, bf16: bool = False) -> CsvResult:
    """Predict every row of a Digit Recognizer CSV; score it when it has a ``label`` column."""
    from mnistkit.data.kaggle import read_kaggle_csv
    from mnistkit.inference import checkpoint_proba

    images, labels = read_kaggle_csv(path)
    predicted = checkpoint_proba(checkpoint, images, bf16=bf16).argmax(dim=1)
    accuracy = None
    if labels is not None:
        if int(labels.max()) >= len(checkpoint.class_names):
            raise DataFormatError(
                f"{path}: label {int(labels.max())} is out of range for a model "
                f"with {len(checkpoint.class_names)} classes"
            )
        accuracy = float((predicted == labels).float().mean()) * 100
    return CsvResult(predicted, labels, accuracy)


def submission_csv(predicted: torch.Tensor, class_names: Sequence[str]) -> str:
    """Kaggle's submission format: ``ImageId,Label`` with ImageId counting from 1."""
    buf = io.StringIO()
    buf.write("ImageId,Label\n")
    for i, k in enumerate(predicted.tolist(), start=1):
        buf.write(f"{i},{class_names[k]}\n")
    return buf.getvalue()
