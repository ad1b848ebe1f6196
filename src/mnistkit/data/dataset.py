"""In-memory splits: each split is one uint8 image tensor and one int64 label tensor.

Batches are index slices of these tensors (no per-sample Python ``Dataset``);
normalisation happens later, once, in :func:`mnistkit.preprocess.normalize`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnistkit.errors import DataFormatError
from mnistkit.preprocess.tensor import PIXEL_MAX, Normalization

#: Every image in mnistkit is 28x28 pixels, as in MNIST.
IMAGE_SIZE = 28
#: Most classes a dataset may have (EMNIST ByClass, the largest we know, has 62). A label of
#: 2,000,000,000 would otherwise make two billion class names.
MAX_CLASSES = 1000
#: Longest class name (characters). Names are printed in every prediction line and JSON answer, so
#: a long one multiplies every answer's size; EMNIST's and folder names in practice are a few characters.
MAX_CLASS_NAME = 64


def class_name_problem(name: object) -> str | None:
    """What is wrong with ``name`` as a class name, or None when it is fine.

    A class name is a non-empty printable string of at most :data:`MAX_CLASS_NAME` characters:
    a newline in a name would forge an output line, an escape sequence would drive the terminal.
    """
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a string"
    if not name:
        return "is empty"
    if len(name) > MAX_CLASS_NAME:
        return f"has {len(name):,} characters, over the limit of {MAX_CLASS_NAME}"
    if not name.isprintable():
        return "holds control characters (a newline, a tab or a terminal escape)"
    return None


@dataclass
class Split:
    """One split: ``images`` uint8 ``[N, 28, 28]`` and ``labels`` int64 ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> Split:
        """The rows at ``index`` (a 1-D index tensor), as a new split."""
        return Split(self.images[index], self.labels[index])


@dataclass
class Dataset:
    """A train and a test split plus what a model needs to know about them.

    ``norm`` holds the dataset's own mean/std; ``source`` says where it came from
    (a folder, file or package), for logs and checkpoints.
    """

    name: str
    train: Split
    test: Split
    class_names: list[str]
    norm: Normalization
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def make_split(images: torch.Tensor, labels: torch.Tensor, num_classes: int, source: str) -> Split:
    """Validate shapes, dtypes and label range at the boundary; return a :class:`Split`.

    ``source`` names the files in the error message, so a user knows which to fix.
    """
    if images.dim() != 3 or tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataFormatError(
            f"{source}: images have shape {tuple(images.shape)}; expected [N, {IMAGE_SIZE}, {IMAGE_SIZE}]"
        )
    if images.dtype != torch.uint8:
        raise DataFormatError(f"{source}: images are {images.dtype}; expected uint8 pixels 0-255")
    if labels.dim() != 1:
        raise DataFormatError(f"{source}: labels have shape {tuple(labels.shape)}; expected [N]")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise DataFormatError(f"{source}: labels are {labels.dtype}; expected integers")
    if labels.shape[0] != images.shape[0]:
        raise DataFormatError(f"{source}: {labels.shape[0]} labels for {images.shape[0]} images; the counts must match")
    labels = labels.to(torch.int64)
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataFormatError(
            f"{source}: labels range {int(labels.min())}..{int(labels.max())}; "
            f"allowed 0..{num_classes - 1} for {num_classes} classes"
        )
    return Split(images.contiguous(), labels.contiguous())


def numbered_class_names(labels: list[torch.Tensor], source: str, at_least: int = 10) -> list[str]:
    """Class names "0".."max label" (at least ``at_least``) for data that names no classes;
    a label outside 0..MAX_CLASSES-1 is refused, named, before any name is made."""
    top, low = 0, 0
    for t in labels:
        if t.numel() and t.dim() == 1 and not t.dtype.is_floating_point:
            top, low = max(top, int(t.max())), min(low, int(t.min()))
    if low < 0 or top >= MAX_CLASSES:
        bad = low if low < 0 else top
        raise DataFormatError(
            f"{source}: label {bad} is out of range; labels are class indices "
            f"0..{MAX_CLASSES - 1} (at most {MAX_CLASSES} classes)"
        )
    return [str(i) for i in range(max(at_least, top + 1))]


def compute_normalization(images: torch.Tensor) -> Normalization:
    """Mean/std of uint8 images on the [0, 1] scale (for data without published constants)."""
    if images.numel() == 0:
        return Normalization(0.5, 0.5)
    x = images.to(torch.float64) / PIXEL_MAX
    std = float(x.std())
    return Normalization(round(float(x.mean()), 4), round(std, 4) if std > 0 else 1.0)


def seeded_permutation(n: int, seed: int) -> torch.Tensor:
    """A permutation of ``range(n)`` that depends only on ``seed`` (torch's CPU generator)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)
