"""Kaggle "Digit Recognizer" CSV files: the one reader used by training and prediction.

``train.csv`` has ``label,pixel0..pixel783``; ``test.csv`` has only the pixel
columns. Columns are matched by name, so their order does not matter. Pixels
are already MNIST-framed (28x28, bright ink on dark), so they skip the image
pipeline and go straight to normalisation.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from mnistkit.errors import DataFormatError
from mnistkit.fileio import open_stream

KAGGLE_PIXELS = tuple(f"pixel{i}" for i in range(784))
#: Largest CSV text read (after gunzip): Kaggle's train.csv is 73 MB; this allows ~150,000 rows.
MAX_CSV_BYTES = 256 * 1024**2


def read_kaggle_csv(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``pixel0..pixel783`` (+ optional ``label``) rows -> uint8 ``[N, 28, 28]`` and int64 labels or None.

    Accepts Kaggle's ``test.csv`` (no labels) as well as ``train.csv``, plain or
    gzipped. The pixels are MNIST-framed already, so they skip the image pipeline.
    """
    path = Path(path)
    text = _read_csv_text(path)
    header_line, _, body = text.partition("\n")
    header = [h.strip().strip('"') for h in header_line.strip().split(",")]
    pixel_cols, label_col = _kaggle_columns(header, path)
    if not body.strip():  # checked here: numpy would print a warning for an empty body
        raise DataFormatError(f"{path}: no data rows after the header")
    try:
        table = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise DataFormatError(f"{path}: malformed CSV row ({' '.join(str(exc).split())})") from None
    if table.shape[1] != len(header):
        raise DataFormatError(f"{path}: rows have {table.shape[1]} values, the header has {len(header)} columns")
    pixels = table[:, pixel_cols]
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255 or (pixels != np.round(pixels)).any():
        bad = ~np.isfinite(pixels) | (pixels < 0) | (pixels > 255) | (pixels != np.round(pixels))
        row, col = np.argwhere(bad)[0]
        raise DataFormatError(
            f"{path}: pixel{col} in data row {row + 1} is {pixels[row, col]:g}; allowed whole numbers 0..255"
        )
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 28, 28))
    labels = None
    if label_col is not None:
        labels = torch.from_numpy(_label_column(table[:, label_col], path))
    return images, labels


def _label_column(raw: np.ndarray, path: Path) -> np.ndarray:
    """Class indices 0..MAX_CLASSES-1 as int64; the first bad one is named with its row."""
    from mnistkit.data.dataset import MAX_CLASSES

    bad = ~np.isfinite(raw) | (raw != np.round(raw)) | (raw < 0) | (raw >= MAX_CLASSES)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataFormatError(
            f"{path}: label {raw[row]:g} in data row {row + 1} is not a class index; "
            f"allowed whole numbers 0..{MAX_CLASSES - 1}"
        )
    return raw.astype(np.int64)


def _read_csv_text(path: Path) -> str:
    """The CSV's text (gunzipped as a bounded stream when it starts with the gzip magic bytes)."""
    with open_stream(path, MAX_CSV_BYTES, DataFormatError, "CSV file") as stream:
        raw = stream.read(MAX_CSV_BYTES)
        if not stream.at_end():
            raise DataFormatError(f"{path}: holds more than {MAX_CSV_BYTES:,} bytes of CSV; split it or use IDX files")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            f"{path}: cannot read the CSV (not UTF-8 text: {exc.reason} at byte {exc.start})"
        ) from None


def _kaggle_columns(header: list[str], path: Path) -> tuple[np.ndarray, int | None]:
    """Column indices of pixel0..pixel783 (in pixel order) and of ``label`` if present."""
    where = {name: i for i, name in enumerate(header)}
    missing = [c for c in KAGGLE_PIXELS if c not in where]
    if missing:
        raise DataFormatError(
            f"{path}: not a Digit Recognizer CSV: header lacks {missing[0]!r}"
            f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}; "
            "expected columns pixel0..pixel783 and optionally label"
        )
    return np.array([where[c] for c in KAGGLE_PIXELS]), where.get("label")
