"""Predict labels for image files, folders, stdin, or a Kaggle "Digit Recognizer" CSV.

Images go through :func:`mnistkit.preprocess.image.preprocess_image` (the one
image path), CSV rows are already MNIST-framed uint8 pixels and skip it; both
then meet :func:`mnistkit.inference.predict_proba`, which normalises with the
checkpoint's own statistics. A bad input file is reported and skipped, so one
broken image never costs the predictions for the rest.

>>> from mnistkit.checkpoint import load_checkpoint           # doctest: +SKIP
>>> ckpt = load_checkpoint("runs/mlp/model.safetensors")      # doctest: +SKIP
>>> result = predict_files(ckpt, ["digits/"], top_k=3)        # doctest: +SKIP
>>> result.predictions[0].label, result.failures              # doctest: +SKIP
('7', [])
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from mnistkit.data.kaggle import KAGGLE_PIXELS, read_kaggle_csv  # noqa: F401  (re-exported)
from mnistkit.errors import ConfigError, DataFormatError, InputImageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mnistkit.checkpoint import Checkpoint

#: The name ``-`` stands for one image read from standard input.
STDIN = "-"
#: Kaggle Digit Recognizer columns: ``label`` (train.csv only) and ``pixel0`` .. ``pixel783``.


@dataclass
class Prediction:
    """One input's prediction: the best label, its probability, and the ``top`` (label, p) pairs."""

    path: str
    label: str
    probability: float
    top: list[tuple[str, float]]

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "probability": self.probability,
                "top": [[lab, p] for lab, p in self.top]}


@dataclass
class PredictResult:
    """Predictions for the inputs that could be read, and ``(name, message)`` for those that could not."""

    predictions: list[Prediction] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class CsvResult:
    """Predicted class indices for every CSV row, and the accuracy when the CSV had labels."""

    predicted: "torch.Tensor"
    labels: "torch.Tensor | None"
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


def load_images(names: Sequence[str], stdin: bytes | None = None) -> tuple[list[str], "torch.Tensor", list[tuple[str, str]]]:
    """Decode and preprocess each named input -> (names that worked, uint8 ``[N, 28, 28]``, failures)."""
    import torch

    from mnistkit.preprocess.image import load_image, preprocess_image

    ok, arrays, failures = [], [], []
    for name in names:
        try:
            source = (stdin if stdin is not None else b"") if name == STDIN else name
            img = load_image(source, name="<stdin>" if name == STDIN else name)
            arrays.append(preprocess_image(img))
            ok.append(name)
        except InputImageError as exc:
            failures.append((name, str(exc)))
    images = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, 28, 28, dtype=torch.uint8)
    return ok, images, failures


def top_predictions(checkpoint: "Checkpoint", images: "torch.Tensor", names: Sequence[str],
                    top_k: int = 1, bf16: bool = False) -> list[Prediction]:
    """Run the model on uint8 ``[N, 28, 28]`` images; the ``top_k`` most likely labels for each."""
    from mnistkit.inference import checkpoint_proba

    names_by_index = checkpoint.class_names
    _check_top_k(top_k, len(names_by_index))
    if len(images) == 0:
        return []
    proba = checkpoint_proba(checkpoint, images, bf16=bf16)
    values, indices = proba.topk(top_k, dim=1)
    preds = []
    for name, vals, idxs in zip(names, values.tolist(), indices.tolist()):
        top = [(names_by_index[i], round(float(v), 6)) for v, i in zip(vals, idxs)]
        preds.append(Prediction(name, top[0][0], top[0][1], top))
    return preds


def _check_top_k(top_k: int, num_classes: int) -> None:
    if not 1 <= top_k <= num_classes:
        raise ConfigError(f"--top-k must be between 1 and the number of classes ({num_classes}), got {top_k}")


def predict_files(checkpoint: "Checkpoint", inputs: Sequence[str], top_k: int = 1,
                  stdin: bytes | None = None, bf16: bool = False) -> PredictResult:
    """Predict every image among ``inputs`` (files, folders, ``-``); unreadable ones become failures."""
    _check_top_k(top_k, len(checkpoint.class_names))
    names, folder_failures = expand_inputs(inputs)
    names, images, failures = load_images(names, stdin)
    return PredictResult(top_predictions(checkpoint, images, names, top_k, bf16), folder_failures + failures)


def format_line(pred: Prediction) -> str:
    """``path  label  probability`` (then further ``label  probability`` pairs for ``--top-k``)."""
    pairs = "  ".join(f"{label}  {p:.4f}" for label, p in pred.top)
    return f"{pred.path}  {pairs}"


# --- Kaggle "Digit Recognizer" CSV --------------------------------------------------------------

def predict_csv(checkpoint: "Checkpoint", path: str | Path, bf16: bool = False) -> CsvResult:
    """Predict every row of a Digit Recognizer CSV; score it when it has a ``label`` column."""
    from mnistkit.inference import checkpoint_proba

    images, labels = read_kaggle_csv(path)
    predicted = checkpoint_proba(checkpoint, images, bf16=bf16).argmax(dim=1)
    accuracy = None
    if labels is not None:
        if int(labels.max()) >= len(checkpoint.class_names):
            raise DataFormatError(f"{path}: label {int(labels.max())} is out of range for a model "
                                  f"with {len(checkpoint.class_names)} classes")
        accuracy = float((predicted == labels).float().mean()) * 100
    return CsvResult(predicted, labels, accuracy)


def submission_csv(predicted: "torch.Tensor", class_names: Sequence[str]) -> str:
    """Kaggle's submission format: ``ImageId,Label`` with ImageId counting from 1."""
    buf = io.StringIO()
    buf.write("ImageId,Label\n")
    for i, k in enumerate(predicted.tolist(), start=1):
        buf.write(f"{i},{class_names[k]}\n")
    return buf.getvalue()
