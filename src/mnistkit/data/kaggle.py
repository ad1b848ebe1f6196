"""Kaggle "Digit Recognizer" CSV files: the one reader used by training and prediction.

``train.csv`` has ``label,pixel0..pixel783``; ``test.csv`` has only the pixel
columns. Columns are matched by name, so their order does not matter. Pixels
are already MNIST-framed (28x28, bright ink on dark), so they skip the image
pipeline and go straight to normalisation.
"""

from __future__ import annotations

import io
import itertools
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from mnistkit.errors import DataFormatError
from mnistkit.fileio import BoundedStream, open_stream

KAGGLE_PIXELS = tuple(f"pixel{i}" for i in range(784))
#: Largest CSV text read (after gunzip): Kaggle's train.csv is 73 MB; this allows ~150,000 rows.
MAX_CSV_BYTES = 256 * 1024**2
#: CSV text is parsed this many bytes at a time (whole lines): about 600 rows of MNIST digits, so the
#: text, its float32 table and their copies stay a few MB beside the uint8 array they become.
BLOCK_BYTES = 1024**2
#: Longest line read (bytes): a row of 785 numbers is at most about 3 kB, the header about 8 kB.
MAX_LINE_BYTES = 1024**2


def read_kaggle_csv(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``pixel0..pixel783`` (+ optional ``label``) rows -> uint8 ``[N, 28, 28]`` and int64 labels or None.

    Accepts Kaggle's ``test.csv`` (no labels) as well as ``train.csv``, plain or
    gzipped. The pixels are MNIST-framed already, so they skip the image pipeline.
    The text is parsed in blocks of whole lines (:data:`BLOCK_BYTES`), each checked and kept
    as uint8 at once, so memory follows the parsed array (784 bytes a row), not the text.
    """
    path = Path(path)
    with open_stream(path, MAX_CSV_BYTES, DataFormatError, "CSV file") as stream:
        blocks = _text_blocks(stream, path)
        header_line, _, body = next(blocks, "").partition("\n")
        header = [h.strip().strip('"') for h in header_line.strip().split(",")]
        pixel_cols, label_col = _kaggle_columns(header, path)
        pixels, labels, rows = [], [], 0
        for text in itertools.chain([body], blocks):
            if not text.strip():
                continue
            table = _parse_rows(text, len(header), path, rows)
            pixels.append(_pixel_block(table[:, pixel_cols], path, rows))
            if label_col is not None:
                labels.append(_label_column(table[:, label_col], path, rows))
            rows += len(table)
    if not rows:
        raise DataFormatError(f"{path}: no data rows after the header")
    images = torch.from_numpy(np.concatenate(pixels).reshape(-1, 28, 28))
    return images, torch.from_numpy(np.concatenate(labels)) if label_col is not None else None


def _parse_rows(text: str, columns: int, path: Path, before: int) -> np.ndarray:
    """One block of whole CSV lines -> float32 ``[rows, columns]``; ``before`` data rows came earlier."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a block of blank lines: checked by the caller
            table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as exc:  # NumPy counts rows from the block's start: count from the file's
        message = re.sub(
            r"at row (\d+)", lambda m: f"at data row {before + int(m.group(1))}", " ".join(str(exc).split())
        )
        raise DataFormatError(f"{path}: malformed CSV row ({message})") from None
    if table.shape[1] != columns:
        raise DataFormatError(f"{path}: rows have {table.shape[1]} values, the header has {columns} columns")
    return table


def _pixel_block(pixels: np.ndarray, path: Path, before: int) -> np.ndarray:
    """float32 pixels -> uint8 ``[rows, 784]``; the first value that is not a whole 0..255 is named."""
    bad = ~np.isfinite(pixels) | (pixels < 0) | (pixels > 255) | (pixels != np.round(pixels))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataFormatError(
            f"{path}: pixel{col} in data row {before + row + 1} is {pixels[row, col]:g}; allowed whole numbers 0..255"
        )
    return pixels.astype(np.uint8)


def _label_column(raw: np.ndarray, path: Path, before: int = 0) -> np.ndarray:
    """Class indices 0..MAX_CLASSES-1 as int64; the first bad one is named with its row."""
    from mnistkit.data.dataset import MAX_CLASSES

    bad = ~np.isfinite(raw) | (raw != np.round(raw)) | (raw < 0) | (raw >= MAX_CLASSES)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataFormatError(
            f"{path}: label {raw[row]:g} in data row {before + row + 1} is not a class index; "
            f"allowed whole numbers 0..{MAX_CLASSES - 1}"
        )
    return raw.astype(np.int64)


def _text_blocks(stream: BoundedStream, path: Path) -> Iterator[str]:
    """The CSV's text (gunzipped by the stream) in blocks of whole lines of about :data:`BLOCK_BYTES`,
    decoded as UTF-8 (a leading byte-order mark dropped). A line over :data:`MAX_LINE_BYTES` is
    refused: it is no Digit Recognizer row, and carrying it from block to block would copy it
    over and over."""
    data, offset = stream.read(BLOCK_BYTES), 0
    while data:
        following = stream.read(BLOCK_BYTES)  # read ahead: the last block keeps its unfinished line
        cut = data.rfind(b"\n") + 1 if following else len(data)
        if len(data) - cut > MAX_LINE_BYTES:
            raise DataFormatError(
                f"{path}: a line of over {MAX_LINE_BYTES:,} bytes at byte {offset + cut:,}; a Digit Recognizer "
                "row is 785 numbers"
            )
        if cut:
            yield _decode(data[:cut], path, offset)
        data, offset = data[cut:] + following, offset + cut


def _decode(block: bytes, path: Path, offset: int) -> str:
    try:
        return block.decode("utf-8-sig" if offset == 0 else "utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            f"{path}: cannot read the CSV (not UTF-8 text: {exc.reason} at byte {offset + exc.start})"
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
