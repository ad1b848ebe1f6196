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

KAGGLE_PIXELS = tuple(f"pixel{i}" for i in range(784))


def read_kaggle_csv(path: str | Path) -> tuple["torch.Tensor", "torch.Tensor | None"]:
    """``pixel0..pixel783`` (+ optional ``label``) rows -> uint8 ``[N, 28, 28]`` and int64 labels or None.

    Accepts Kaggle's ``test.csv`` (no labels) as well as ``train.csv``, plain or
    gzipped. The pixels are MNIST-framed already, so they skip the image pipeline.
    """
    path = Path(path)
    text = _read_csv_text(path)
    header_line, _, body = text.partition("\n")
    header = [h.strip().strip('"') for h in header_line.strip().split(",")]
    pixel_cols, label_col = _kaggle_columns(header, path)
    try:
        table = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise DataFormatError(f"{path}: malformed CSV row ({' '.join(str(exc).split())})") from None
    if table.size == 0:
        raise DataFormatError(f"{path}: no data rows after the header")
    if table.shape[1] != len(header):
        raise DataFormatError(f"{path}: rows have {table.shape[1]} values, the header has {len(header)} columns")
    pixels = table[:, pixel_cols]
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255 or (pixels != np.round(pixels)).any():
        lo, hi = np.nanmin(pixels), np.nanmax(pixels)
        raise DataFormatError(f"{path}: pixel values range {lo:g}..{hi:g}; allowed 0..255 (whole numbers, no NaN)")
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 28, 28))
    labels = None
    if label_col is not None:
        raw = table[:, label_col]
        if not np.isfinite(raw).all() or (raw != np.round(raw)).any() or raw.min() < 0:
            raise DataFormatError(f"{path}: the label column must hold class indices 0, 1, 2, ...")
        labels = torch.from_numpy(raw.astype(np.int64))
    return images, labels


def _read_csv_text(path: Path) -> str:
    """The CSV's text (gunzipped when it starts with the gzip magic bytes)."""
    import gzip
    import zlib

    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8-sig")
    except FileNotFoundError:
        raise DataFormatError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot read the CSV ({getattr(exc, 'strerror', None) or exc})") from None


def _kaggle_columns(header: list[str], path: Path) -> tuple[np.ndarray, int | None]:
    """Column indices of pixel0..pixel783 (in pixel order) and of ``label`` if present."""
    where = {name: i for i, name in enumerate(header)}
    missing = [c for c in KAGGLE_PIXELS if c not in where]
    if missing:
        raise DataFormatError(f"{path}: not a Digit Recognizer CSV: header lacks {missing[0]!r}"
                              f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}; "
                              "expected columns pixel0..pixel783 and optionally label")
    return np.array([where[c] for c in KAGGLE_PIXELS]), where.get("label")
