"""Written numbers on the server: ``POST /predict?number=1`` reads the number in an uploaded image
with a line reader, through :func:`mnistkit.reading.read_number_file`, the function
``mnistkit predict --number`` uses, so both give the same answer for the same file.

The server reads numbers only when it has a line reader: the one given with ``--line-model``, else
the bundled one. An install without the bundled file still serves digits; its number requests get
:data:`NO_LINE_READER`.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

from mnistkit.errors import CheckpointError, InputImageError
from mnistkit.serving.bodies import ApiError

if TYPE_CHECKING:  # pragma: no cover
    from mnistkit.reading.model import LineReader
    from mnistkit.reading.reader import LineReading

#: What ``?number=1`` answers (501) on a server without a line reader. Retrying cannot help, and no
#: path of this machine is named: the client cannot fix it, whoever runs the server can.
NO_LINE_READER = (
    "this server has no line reader, so it cannot read numbers: the bundled one is not installed. "
    "Whoever runs it can start it with `mnistkit serve --line-model CHECKPOINT|RUN_DIR` "
    "(a line model, e.g. trained with --model crnn). Single digits (without ?number=1) are read as usual"
)
#: Prefix of ``line_image``: a PNG a page can show as it is (``<img src=...>``).
PNG_DATA_URL = "data:image/png;base64,"


#: The 500 for a line reader whose answer is not finite.
BROKEN_READER = (
    "the line reader gave a non-finite probability for this input: its checkpoint is broken; no answer is given"
)


def load_number_reader(source: str | Path | None = None) -> LineReader | None:
    """The line reader the server reads numbers with: ``source`` (a line checkpoint or run directory),
    else the bundled one; ``None`` when no source is given and this install has no bundled reader.

    A ``source`` that cannot be loaded raises :class:`~mnistkit.errors.CheckpointError`: it was asked
    for, so the server must not start without it. So does a bundled file that is there but broken.
    """
    from mnistkit.bundled import bundled_line_model_path
    from mnistkit.reading.model import load_line_reader

    if source is None:
        try:
            source = bundled_line_model_path()
        except CheckpointError:  # not installed: digits still work
            return None
    return load_line_reader(source)


def read_number_bytes(
    reader: LineReader, data: bytes, name: str, min_confidence: float | None = None, preview: bool = False
) -> dict:
    """Decode + find the line + read one uploaded image of a number (runs in a worker thread)."""
    from mnistkit.reading import read_number_file

    try:
        reading = read_number_file(reader, data, name, min_confidence)
    except InputImageError as exc:
        raise ApiError(400, str(exc)) from None
    except CheckpointError:  # the reader refuses non-finite scores: the model's fault, not the request's
        raise ApiError(500, BROKEN_READER) from None
    return number_body(reading, preview)


def number_body(reading: LineReading, preview: bool = False) -> dict:
    """The response body for a reading: ``{number, confidence, unsure, reason, digits: [{label,
    probability}]}`` (as ``mnistkit predict --number --json``, less the path), and with ``preview``
    ``line_image``, the line the reader saw as a PNG data URL (``None`` when no line was found)."""
    body = reading.to_dict()
    del body["path"]  # the client's own file name: nothing the client does not know
    values = [body["confidence"], *(d["probability"] for d in body["digits"])]
    if not all(math.isfinite(v) for v in values):
        # JSON has no NaN, and a NaN confidence judges nothing. The model's fault, not the request's.
        raise ApiError(500, BROKEN_READER)
    if preview:
        body["line_image"] = png_data_url(reading.line) if reading.line is not None else None
    return body


def png_data_url(image) -> str:
    """A uint8 ``[H, W]`` image as ``data:image/png;base64,...`` (a line image: a few KB)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return PNG_DATA_URL + base64.b64encode(buf.getvalue()).decode("ascii")
