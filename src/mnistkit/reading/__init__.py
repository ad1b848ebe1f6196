"""Reading written numbers: where the writing is (:mod:`.find`), the line image a recogniser sees
(:mod:`.line`), synthetic training lines (:mod:`.synth`) and the sequence reader (:mod:`.sequence`).

The digit classifier reads one 28x28 digit; the sequence reader reads a whole line of digits with a
CTC head, so digits that touch or overlap need not be cut apart first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mnistkit.reading.model import LineReader
    from mnistkit.reading.reader import LineReading

#: Numbers are looked for on a decoded copy at least this many px on the long side (a JPEG is decoded
#: at 1/2, 1/4 or 1/8 scale down to it: a 4000 px photo at 1/4, 1000 px): a number a tenth of a
#: 12 MP photo wide keeps ~100 px.
NUMBER_DECODE_SIDE = 960


def read_number_file(
    reader: LineReader, source, name: str | None = None, min_confidence: float | None = None
) -> LineReading:
    """Decode ``source`` (a path or bytes) and read the number written in it."""
    from mnistkit.preprocess.decode import load_image, to_grayscale

    label = name or str(source)
    image = load_image(source, name=label, work_side=NUMBER_DECODE_SIDE)
    reading = reader.read(to_grayscale(image), min_confidence)
    reading.path = label
    return reading


def read_number_files(
    reader: LineReader,
    names: list[str],
    stdin: bytes | None = None,
    min_confidence: float | None = None,
    failures: list[tuple[str, str]] | None = None,
) -> list[LineReading]:
    """:func:`read_number_file` for each name (``-``: ``stdin``); unreadable files go to ``failures``
    (raised when it is None), and the others are still read."""
    from mnistkit.errors import InputImageError
    from mnistkit.fileio import STDIN

    readings = []
    for name in names:
        try:
            source = stdin if name == STDIN and stdin is not None else name
            readings.append(read_number_file(reader, source, name, min_confidence))
        except InputImageError as exc:
            if failures is None:
                raise
            failures.append((name, str(exc)))
    return readings


def save_line_inputs(readings: list[LineReading], folder) -> list:
    """Write each reading's line image (what the reader saw) as ``<stem>-line.png``."""
    from mnistkit.fileio import input_stem, save_pngs

    return save_pngs([(f"{input_stem(r.path)}-line", r.line) for r in readings if r.line is not None], folder)


def read_numbers(items: list, names: list[str], model=None, min_confidence: float | None = None) -> list[LineReading]:
    """``mnistkit.predict(..., number=True)``: each item (a path, file bytes, a PIL image or a 2-D
    array) read as a written number by the line reader ``model`` (None: the bundled one)."""
    from mnistkit.preprocess.decode import to_grayscale
    from mnistkit.reading.model import load_line_reader

    reader = load_line_reader(model)
    readings = []
    for item, name in zip(items, names):
        if isinstance(item, (str, bytes, bytearray)) or hasattr(item, "__fspath__"):
            readings.append(read_number_file(reader, item, name, min_confidence))
            continue
        reading = reader.read(to_grayscale(item), min_confidence)
        reading.path = name
        readings.append(reading)
    return readings
