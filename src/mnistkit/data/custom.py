"""Your own data, accepted anywhere a dataset name is.

Three kinds, chosen from what is on disk:

- a folder of IDX files: ``train-images*`` / ``train-labels*`` and ``t10k-*`` or
  ``test-*`` images/labels, ``.gz`` or raw (e.g. ``train-images-idx3-ubyte.gz``);
- a Kaggle "Digit Recognizer" CSV (``.csv`` or ``.csv.gz``): a header
  ``label,pixel0,...,pixel783`` then one row per image. It has one split, so a
  test split of :data:`CARVED_TEST_FRACTION` is carved with the permutation
  seeded by :data:`CARVED_SPLIT_SEED`. A CSV without a ``label`` column (Kaggle's
  ``test.csv``) cannot be trained on and is refused;
- an image folder with one sub-folder per class (class names = sorted sub-folder
  names), optionally under ``train/`` and ``test/``; without them a test split is
  carved as for the CSV. Every image goes through
  :func:`mnistkit.preprocess.image.preprocess_image`, the same path prediction uses.
  A file that cannot be decoded refuses the whole folder in one line naming it, rather
  than being skipped: training on fewer images than the folder holds would hide the
  broken file and shift the classes' balance. Every decodable image is used, even a
  tiny or blank one (preprocessing frames it as it would for prediction). Sub-folder
  names must be valid class names (:func:`mnistkit.data.dataset.class_name_problem`),
  since the checkpoint stores them and every prediction prints them.

Normalisation constants are computed from the training split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mnistkit.data.dataset import (
    MAX_CLASSES,
    Dataset,
    Split,
    class_name_problem,
    compute_normalization,
    make_split,
    numbered_class_names,
    seeded_permutation,
)
from mnistkit.data.files import read_idx_splits
from mnistkit.errors import DataFormatError, DatasetNotFoundError, InputImageError
from mnistkit.fileio import regular_file_size

#: Share of a single-split source (CSV, image folder without train/test) held out as test.
CARVED_TEST_FRACTION = 0.1
#: Seed of the permutation that picks the carved test rows (same split on every run).
CARVED_SPLIT_SEED = 0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm")
_IDX_PREFIXES = (("train-images", "train-labels"), ("t10k-images", "t10k-labels"), ("test-images", "test-labels"))


def looks_like_path(name: str) -> bool:
    """A dataset argument is a path when it exists or looks like one (separator, .csv)."""
    text = str(name)
    return Path(text).expanduser().exists() or "/" in text or "\\" in text or text.endswith((".csv", ".csv.gz"))


def load_custom(path: str | Path) -> Dataset:
    """Load a user-supplied IDX folder, Kaggle CSV or image folder (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(
            f"{path}: no such file or folder; expected a dataset name, a folder "
            "of IDX files, a Kaggle-style CSV or an image folder"
        )
    if not path.is_dir():
        regular_file_size(path, DataFormatError, "dataset file")  # refuses FIFOs and devices by name
        if path.name.endswith((".csv", ".csv.gz")):
            return load_kaggle_csv(path)
        raise DataFormatError(
            f"{path}: unsupported file; expected a .csv (label,pixel0..pixel783) "
            "or a folder of IDX files or class sub-folders"
        )
    idx = find_idx_files(path)
    if idx is not None:
        return read_idx_splits(path.name, idx)
    return load_image_folder(path)


def carve_test(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks (train, test) holding out CARVED_TEST_FRACTION by a seeded permutation."""
    n = len(labels)
    n_test = max(1, round(n * CARVED_TEST_FRACTION)) if n > 1 else 0
    is_test = torch.zeros(n, dtype=torch.bool)
    is_test[seeded_permutation(n, CARVED_SPLIT_SEED)[:n_test]] = True
    return ~is_test, is_test


# --- folder of IDX files -------------------------------------------------------------------


def _first_match(folder: Path, prefix: str) -> Path | None:
    matches = sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.startswith(prefix) and not p.name.startswith(".")
    )
    gz = [p for p in matches if p.name.endswith(".gz")]
    return (gz or matches)[0] if matches else None


def find_idx_files(folder: Path) -> list[Path] | None:
    """[train images, train labels, test images, test labels] in ``folder`` (t10k-* or test-*), or None."""
    train = [_first_match(folder, p) for p in _IDX_PREFIXES[0]]
    if not all(train):
        return None
    for images_prefix, labels_prefix in _IDX_PREFIXES[1:]:
        test = [_first_match(folder, images_prefix), _first_match(folder, labels_prefix)]
        if all(test):
            return train + test  # type: ignore[return-value]
    raise DataFormatError(f"{folder}: has train-images/train-labels but no t10k-* or test-* images and labels files")


# --- Kaggle CSV ----------------------------------------------------------------------------


def load_kaggle_csv(path: Path) -> Dataset:
    """Kaggle Digit Recognizer CSV -> Dataset with a carved test split (module docstring)."""
    from mnistkit.data.kaggle import read_kaggle_csv

    images, labels = read_kaggle_csv(path)
    if labels is None:
        raise DataFormatError(
            f"{path}: no 'label' column; a CSV without labels (like Kaggle's test.csv) "
            "cannot be trained on; expected label,pixel0,...,pixel783"
        )
    if len(labels) < 2:
        raise DataFormatError(
            f"{path}: {len(labels)} data row; at least 2 are needed (one to train on, one held out as the test split)"
        )
    classes = numbered_class_names([labels], str(path))
    train_mask, test_mask = carve_test(images, labels)
    train = make_split(images[train_mask], labels[train_mask], len(classes), str(path))
    test = make_split(images[test_mask], labels[test_mask], len(classes), str(path))
    return _dataset(path, train, test, classes)


# --- image folder --------------------------------------------------------------------------


def _entries(folder: Path) -> list[os.DirEntry]:
    """A folder's entries; a folder we cannot list is an error, never silently empty."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as exc:
        raise DataFormatError(
            f"{folder}: cannot list this folder ({exc.strerror or exc}); fix its permissions or remove it"
        ) from None


def _class_folders(folder: Path) -> list[Path]:
    found = sorted(Path(e.path) for e in _entries(folder) if e.is_dir() and not e.name.startswith("."))
    if len(found) > MAX_CLASSES:
        raise DataFormatError(f"{folder}: {len(found)} class sub-folders; at most {MAX_CLASSES} classes are allowed")
    for sub in found:
        problem = class_name_problem(sub.name)
        if problem:
            raise DataFormatError(f"{folder}: the class sub-folder name {sub.name[:64]!r} {problem}; rename it")
    return found


def _image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursively, hidden entries skipped); unreadable sub-folders
    are errors. FIFOs and devices are not image files (``is_file`` is False for them)."""
    files, pending = [], [folder]
    while pending:
        for entry in _entries(pending.pop()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                pending.append(Path(entry.path))
            elif entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                files.append(Path(entry.path))
    return sorted(files)


def _read_class_folders(folder: Path, classes: list[str]) -> Split:
    """Every image under ``folder/<class>/`` -> a split, labels = index in ``classes``."""
    from mnistkit.preprocess.image import load_image, preprocess_image

    images, labels = [], []
    for class_dir in _class_folders(folder):
        if class_dir.name not in classes:
            raise DataFormatError(f"{class_dir}: class {class_dir.name!r} is not among the training classes {classes}")
        for file in _image_files(class_dir):
            try:
                array = preprocess_image(load_image(file))
            except InputImageError as exc:  # its message already starts with the file's name
                raise DataFormatError(str(exc)) from None
            images.append(torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8)))
            labels.append(classes.index(class_dir.name))
    if not images:
        raise DataFormatError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class sub-folders")
    return make_split(torch.stack(images), torch.tensor(labels, dtype=torch.int64), len(classes), str(folder))


def load_image_folder(folder: Path) -> Dataset:
    """Class sub-folders (optionally under train/ and test/) -> Dataset (module docstring)."""
    has_split = (folder / "train").is_dir() and (folder / "test").is_dir()
    class_root = folder / "train" if has_split else folder
    classes = [p.name for p in _class_folders(class_root)]
    if not classes:
        raise DataFormatError(
            f"{folder}: not a dataset; expected IDX files (train-images-idx3-ubyte.gz, ...), "
            "or one sub-folder of images per class (optionally under train/ and test/)"
        )
    try:
        import mnistkit.preprocess.image  # noqa: F401  (fail early with a clear message)
    except ImportError as exc:
        raise DataFormatError(f"{folder}: image folders need Pillow: pip install 'mnistkit[images]' ({exc})") from None
    train = _read_class_folders(class_root, classes)
    if has_split:
        test = _read_class_folders(folder / "test", classes)
    else:
        train_mask, test_mask = carve_test(train.images, train.labels)
        train, test = train.subset(train_mask), train.subset(test_mask)
    return _dataset(folder, train, test, classes)


def _dataset(where: Path, train: Split, test: Split, classes: list[str]) -> Dataset:
    """A user's dataset (CSV file or image folder): named after it, normalised by its own training split."""
    return Dataset(
        name=where.name,
        train=train,
        test=test,
        class_names=classes,
        norm=compute_normalization(train.images),
        source=str(where),
    )
