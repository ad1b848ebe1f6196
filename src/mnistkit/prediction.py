"""Predict labels for image files, folders, stdin, arrays, or a Kaggle "Digit Recognizer" CSV.

Images go through :func:`mnistkit.preprocess.image.analyze_image` (the one
image path), CSV rows are already MNIST-framed uint8 pixels and skip it; both
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

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnistkit.errors import ConfigError, DataFormatError, InputImageError
from mnistkit.unsure import min_confidence_for, unsure_reason

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mnistkit.checkpoint import Checkpoint
    from mnistkit.preprocess.image import DigitAnalysis

#: The name ``-`` stands for one image read from standard input.
STDIN = "-"


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


def decode_input(name: str, stdin: bytes | None, max_pixels: int | None = None):
    from mnistkit.preprocess.image import MAX_PIXELS, load_image

    source = (stdin if stdin is not None else b"") if name == STDIN else name
    return load_image(source, max_pixels or MAX_PIXELS, name="<stdin>" if name == STDIN else name)


def analyze_inputs(
    names: Sequence[str], stdin: bytes | None = None
) -> tuple[list[str], list[DigitAnalysis], list[tuple[str, str]]]:
    """Decode and analyse each named input -> (names that worked, their analyses, failures)."""
    from mnistkit.preprocess.image import analyze_image

    ok, analyses, failures = [], [], []
    for name in names:
        try:
            analyses.append(analyze_image(decode_input(name, stdin)))
            ok.append(name)
        except InputImageError as exc:
            failures.append((name, str(exc)))
    return ok, analyses, failures


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
    proba = probabilities(checkpoint, images, bf16)
    order = np.argsort(-proba, axis=1, kind="stable")[:, :top_k]
    novelty = novelty_ratios(checkpoint, images) if analyses is not None else None
    preds = []
    for i, name in enumerate(names):
        top = [(names_by_index[k], round(float(proba[i, k]), 6)) for k in order[i]]
        ratio = float(novelty[i]) if novelty is not None else None
        reason = unsure_reason(analyses[i], proba[i], min_confidence, ratio) if analyses is not None else None
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
    names, analyses, failures = analyze_inputs(names, stdin)
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


def input_stem(path: str) -> str:
    return "stdin" if path == STDIN else Path(path).stem or "input"


def save_pngs(items: Sequence[tuple[str, np.ndarray]], folder: str | Path) -> list[Path]:
    from PIL import Image

    from mnistkit.fileio import write_new_file

    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--save-input {folder}: cannot create the folder ({exc.strerror or exc})") from None
    written = []
    for stem, digit in items:
        buf = io.BytesIO()
        Image.fromarray(digit).save(buf, format="PNG")
        written.append(write_new_file(out, stem, ".png", buf.getvalue()))
    return written


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
