"""Predict labels for image files, folders, stdin, arrays, or a Kaggle "Digit Recognizer" CSV.

Images go through :func:`mnistkit.preprocess.image.analyze_image` (the one
image path), CSV rows are already MNIST-framed uint8 pixels and skip it; both
then meet :func:`mnistkit.inference.checkpoint_proba`, which normalises with the
checkpoint's own statistics and applies its calibration temperature. A bad input
file is reported and skipped, so one broken image never costs the predictions
for the rest. :func:`unsure_reason` is the one rule for "this is not a readable
digit"; the CLI and the server both ask it.

This module was ``mnistkit.predict`` until that name became the top-level
function :func:`predict` (``mnistkit.predict(...)``).

>>> import mnistkit                                            # doctest: +SKIP
>>> [p.label for p in mnistkit.predict(["photo.jpg"])]         # doctest: +SKIP
['7']
>>> result = predict_files(ckpt, ["digits/"], top_k=3)        # doctest: +SKIP
>>> result.predictions[0].label, result.failures              # doctest: +SKIP
('7', [])
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnistkit.errors import ConfigError, DataFormatError, InputImageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mnistkit.checkpoint import Checkpoint
    from mnistkit.preprocess.image import DigitAnalysis

#: The name ``-`` stands for one image read from standard input.
STDIN = "-"
#: Below this top probability a prediction is unsure, for a checkpoint without a threshold of its own
#: (:attr:`Checkpoint.min_confidence`). Chosen on bench/photos.py: the highest tried value that flags
#: at most ~2 % of photographed true digits in every lighting condition (0.5: 1.0 %, 0.7: 2.8 % in
#: the worst condition, a calibrated 2-epoch CNN; see the README).
DEFAULT_MIN_CONFIDENCE = 0.6
#: The share of true digits the whole unsure rule may flag, when a model's own thresholds are chosen
#: (``scripts/build_bundled_model.py``: on photographed validation digits); issue 12 allows 2 %. The
#: margin is for the test split's writers: 1.5 % on 2,000 validation photos (threshold 0.923) flagged
#: 1.7-2.6 % of the photo benchmark's test digits (1,000 per condition); 1 % of all 5,000 leaves room.
UNSURE_FLAG_RATE = 0.01
#: A digit whose 28x28 frame is more than this share solid ink is a blob or an object, not a digit
#: (0.1 % of MNIST's training digits pass 0.36).
MAX_BOX_FILL = 0.4
#: Ink over more than this share of the whole picture: a texture or a dark photo, not a written digit.
MAX_INK_SHARE = 0.35


@dataclass
class Prediction:
    """One input's prediction: the best label, its probability, the ``top`` (label, p) pairs, and
    whether it is unsure (with the reason, from :func:`unsure_reason`)."""

    path: str
    label: str
    probability: float
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


def unsure_reason(
    analysis: DigitAnalysis,
    probabilities: Sequence[float],
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    novelty: float | None = None,
) -> str | None:
    """Why this input is not a confidently read single digit, or ``None`` when it is.

    ``analysis`` is what preprocessing found (:func:`mnistkit.preprocess.image.analyze_image`),
    ``probabilities`` the model's calibrated probabilities for it, ``novelty`` its distance from
    the training digits over the checkpoint's threshold (:func:`mnistkit.novelty.novelty_ratios`;
    ``None`` for checkpoints without a novelty model). In order: no ink at all; several separate
    digits; ink filling the picture or the digit's frame (an object, a texture, a blot); the top
    probability below ``min_confidence``; features unlike the training digits' (``novelty > 1``:
    a shirt or a letter the model is sure of).
    """
    if analysis.digits_found == 0:
        return "no ink found"
    if analysis.digits_found > 1:
        return f"{analysis.digits_found} separate digits (read numbers with --number)"
    if analysis.ink_share > MAX_INK_SHARE or analysis.box_fill > MAX_BOX_FILL:
        return "ink fills the frame: not a written digit"
    top = float(np.max(probabilities))
    if top < min_confidence:
        return f"top probability {top:.2f} is below --min-confidence {min_confidence:g}"
    if novelty is not None and novelty > 1:
        from mnistkit.novelty import REASON

        return REASON
    return None


def check_min_confidence(value: float | None) -> float | None:
    """``--min-confidence``: a probability, or None for the model's own (:func:`min_confidence_for`)."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise ConfigError(f"--min-confidence must be between 0 and 1, got {value}")
    return value


def min_confidence_for(checkpoint: Checkpoint, given: float | None) -> float:
    """The ``--min-confidence`` in force: the one given, else the checkpoint's own."""
    return checkpoint.min_confidence if given is None else given


def choose_min_confidence(top: np.ndarray, flagged_otherwise: np.ndarray, flag_rate: float = UNSURE_FLAG_RATE) -> float:
    """The highest ``--min-confidence`` (3 decimals, rounded down) at which the whole unsure rule flags at
    most ``flag_rate`` of a set of true digits: ``top`` their top calibrated probabilities, and
    ``flagged_otherwise`` whether another part of the rule (no ink, several digits, novelty...) flags
    each already. 0 when those alone are over the budget.

    A model trained with ``--negatives`` gives low probabilities to what is not a digit, so its
    threshold is worth choosing for it rather than taking :data:`DEFAULT_MIN_CONFIDENCE`.
    """
    top, other = np.asarray(top, np.float64), np.asarray(flagged_otherwise, bool)
    spare = int(np.floor(flag_rate * len(top) + 1e-9)) - int(other.sum())
    if spare < 0:
        return 0.0
    candidates = np.sort(top[~other])
    if spare >= len(candidates):
        return 1.0
    return float(np.floor(candidates[spare] * 1000) / 1000)  # below it: at most `spare` digits


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


def analyze_files(paths: Sequence[str]) -> list[DigitAnalysis]:
    """Analyses of image files that must all be readable (benchmarks, scripts): the first bad one raises."""
    from mnistkit.preprocess.image import analyze_image

    return [analyze_image(decode_input(str(p), None)) for p in paths]


def _stack(digits: Sequence[np.ndarray]) -> torch.Tensor:
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
    min_confidence = min_confidence_for(checkpoint, min_confidence)
    from mnistkit.novelty import novelty_ratios

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
    check_min_confidence(min_confidence)
    names, folder_failures = expand_inputs(inputs)
    names, analyses, failures = analyze_inputs(names, stdin)
    preds = top_predictions(
        checkpoint, _stack([a.digit for a in analyses]), names, top_k, bf16, analyses, min_confidence
    )
    return PredictResult(preds, folder_failures + failures)


def format_line(pred: Prediction) -> str:
    """``path  label  probability`` (then further ``label  probability`` pairs for ``--top-k``);
    an unsure prediction reads ``path  ?  label  probability  (reason)``."""
    pairs = "  ".join(f"{label}  {p:.4f}" for label, p in pred.top)
    if pred.unsure:
        return f"{pred.path}  ?  {pairs}  ({pred.reason})"
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


# --- the Python API --------------------------------------------------------------------------------


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
    from mnistkit.preprocess.image import analyze_image

    check_min_confidence(min_confidence)
    items, names = _as_items(images)
    if number:
        from mnistkit.reading import read_numbers

        return read_numbers(items, names, model, min_confidence)
    checkpoint = _as_checkpoint(model)
    analyses = []
    for item, name in zip(items, names):
        if isinstance(item, (str, Path, bytes, bytearray)):
            from mnistkit.preprocess.image import load_image

            item = load_image(item, name=name)
        analyses.append(analyze_image(item))
    return top_predictions(
        checkpoint, _stack([a.digit for a in analyses]), names, top_k, analyses=analyses, min_confidence=min_confidence
    )


def _as_checkpoint(model: Any) -> Checkpoint:
    from mnistkit.api import resolve_checkpoint_path
    from mnistkit.checkpoint import Checkpoint, load_checkpoint

    if isinstance(model, Checkpoint):
        return model
    return load_checkpoint(resolve_checkpoint_path(model))


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
