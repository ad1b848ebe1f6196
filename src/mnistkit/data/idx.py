"""The IDX file format (LeCun's MNIST format), read and written without surprises.

An IDX file is ``00 00 <dtype code> <ndim>`` followed by ``ndim`` big-endian
uint32 dimensions and then the payload, row-major and big-endian. Files may be
gzip-compressed; we detect that from the gzip magic bytes, not the file name.

Files are read as a stream (:func:`mnistkit.fileio.open_stream`): the header,
then exactly the payload it declares (at most :data:`MAX_PAYLOAD_BYTES`), then
one byte to prove the file ends there. A small ``.gz`` that would expand to
gigabytes is stopped as soon as it passes its declared size (or expands more than
:data:`mnistkit.fileio.MAX_EXPANSION` times), having cost a few MB.

Every fault (missing file, directory, empty, truncated gzip, bad magic, unknown
dtype code, wrong payload length) becomes a :class:`DataFormatError` that names
the file and the fault, so no numpy/struct/gzip/zlib traceback reaches a user.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from mnistkit.errors import DataFormatError
from mnistkit.fileio import CHUNK, EXPANSION_ALLOWANCE, MAX_EXPANSION, open_stream

#: IDX dtype code -> big-endian numpy dtype (from the format's specification).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF: dict[torch.dtype, int] = {
    torch.uint8: 0x08,
    torch.int8: 0x09,
    torch.int16: 0x0B,
    torch.int32: 0x0C,
    torch.float32: 0x0D,
    torch.float64: 0x0E,
}
_GZIP_MAGIC = b"\x1f\x8b"
#: More dimensions than this is certainly garbage, not a dataset.
MAX_NDIM = 8
#: Refuse a payload larger than this (EMNIST ByClass train images, the largest we know, are 547 MB).
MAX_PAYLOAD_BYTES = 1024**3


def read_idx(path: str | os.PathLike, max_bytes: int = MAX_PAYLOAD_BYTES) -> torch.Tensor:
    """Read a raw or gzip-compressed IDX file into a tensor of its own dtype and shape.

    The file is read as a stream: the header first, then exactly the payload it
    declares (at most ``max_bytes``), then one more byte to prove the file ends
    there. So a small ``.gz`` that would expand to gigabytes costs only what its
    header honestly declares. Raises :class:`DataFormatError` (naming ``path``)
    for anything that is not a well-formed IDX file, a FIFO or a device included.
    """
    path = Path(path)
    source = str(path)
    with open_stream(path, max_bytes + 4 + 4 * MAX_NDIM, DataFormatError, "IDX file") as stream:
        if not stream.gzipped and path.name.endswith(".gz") and stream.compressed_size:
            raise DataFormatError(f"{source}: name ends in .gz but the file is not gzip-compressed")
        head = stream.read(4)
        if not head:
            raise DataFormatError(
                f"{source}: {'decompressed data' if stream.gzipped else 'file'} is empty, expected an IDX file"
            )
        ndim = head[3] if len(head) == 4 else 0
        head += stream.read(4 * ndim) if 1 <= ndim <= MAX_NDIM else b""
        dtype, dims, _offset = _parse_header(head, source, max_bytes)
        expected = _payload_bytes(dtype, dims)
        payload, got = stream.read_buffer(expected)
        if got != expected or not stream.at_end():
            raise _payload_error(source, dtype, dims, got if got != expected else f"over {expected}", expected)
    return _to_tensor(payload, dtype, dims, 0, copy=False)


def decode_idx(data: bytes, source: str = "<bytes>", max_bytes: int = MAX_PAYLOAD_BYTES) -> torch.Tensor:
    """Decode IDX bytes (gzip-compressed or not); ``source`` names them in error messages."""
    if len(data) == 0:
        raise DataFormatError(f"{source}: file is empty, expected an IDX file")
    if data[:2] == _GZIP_MAGIC:
        data = _gunzip(data, source, max_bytes + 4 + 4 * MAX_NDIM)
    elif source.endswith(".gz"):
        raise DataFormatError(f"{source}: name ends in .gz but the file is not gzip-compressed")
    dtype, dims, offset = _parse_header(data, source, max_bytes)
    expected = _payload_bytes(dtype, dims)
    actual = len(data) - offset
    if actual != expected:
        raise _payload_error(source, dtype, dims, actual, expected)
    return _to_tensor(data, dtype, dims, offset)


def _payload_bytes(dtype: np.dtype, dims: tuple[int, ...]) -> int:
    return (int(np.prod(dims, dtype=np.int64)) if dims else 0) * dtype.itemsize


def _payload_error(source: str, dtype: np.dtype, dims: tuple[int, ...], actual, expected: int) -> DataFormatError:
    shape = "x".join(map(str, dims))
    fault = "longer than its header declares" if isinstance(actual, str) else "truncated or corrupt"
    return DataFormatError(
        f"{source}: payload is {actual} bytes but the header ({shape} of "
        f"{dtype.name}) needs {expected}; the file is {fault}"
    )


def _gunzip(data: bytes, source: str, limit: int) -> bytes:
    """Decompress in bounded pieces, turning every gzip/zlib failure into a DataFormatError."""
    out = bytearray()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            while piece := f.read(CHUNK):
                out += piece
                if len(out) > limit:
                    raise DataFormatError(
                        f"{source}: gzip data expands to more than {limit:,} bytes; not a plausible IDX file"
                    )
                if len(out) > EXPANSION_ALLOWANCE and len(out) > MAX_EXPANSION * len(data):
                    raise DataFormatError(
                        f"{source}: gzip data expands more than {MAX_EXPANSION}x; refusing a decompression bomb"
                    )
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{source}: gzip data is truncated or corrupt ({exc})") from None
    return bytes(out)


def _parse_header(
    data: bytes, source: str, max_bytes: int = MAX_PAYLOAD_BYTES
) -> tuple[np.dtype, tuple[int, ...], int]:
    """Validate the magic number and dimensions; return (dtype, dims, payload offset)."""
    if len(data) == 0:
        raise DataFormatError(f"{source}: decompressed data is empty, expected an IDX file")
    if len(data) < 4:
        raise DataFormatError(f"{source}: only {len(data)} bytes, too short for an IDX header (4 bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataFormatError(
            f"{source}: bad magic number 0x{data[:4].hex()}; an IDX file starts "
            "with two zero bytes (e.g. 0x00000803 for images)"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        allowed = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataFormatError(f"{source}: unknown IDX dtype code 0x{code:02X}; allowed: {allowed}")
    if not 1 <= ndim <= MAX_NDIM:
        raise DataFormatError(f"{source}: {ndim} dimensions in the header; allowed 1 to {MAX_NDIM}")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataFormatError(f"{source}: header declares {ndim} dimensions but the file ends after {len(data)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    if np.prod(dims, dtype=np.float64) * dtype.itemsize > max_bytes:
        raise DataFormatError(
            f"{source}: header dimensions {dims} need more than {max_bytes:,} bytes; "
            "implausibly large for an IDX dataset"
        )
    return dtype, dims, offset


def _to_tensor(data, dtype: np.dtype, dims: tuple[int, ...], offset: int, copy: bool = True) -> torch.Tensor:
    """One vectorised conversion: big-endian payload -> native-endian tensor (at most one copy;
    none for byte-sized dtypes when ``data`` is a writable buffer we own, ``copy=False``)."""
    array = np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=copy))


def encode_idx(tensor: torch.Tensor) -> bytes:
    """Tensor -> uncompressed IDX bytes (big-endian), the inverse of :func:`decode_idx`."""
    tensor = torch.as_tensor(tensor)
    if tensor.dtype not in _CODE_OF:
        allowed = ", ".join(str(d) for d in _CODE_OF)
        raise TypeError(f"IDX cannot store {tensor.dtype}; allowed: {allowed}")
    if not 1 <= tensor.dim() <= MAX_NDIM:
        raise ValueError(f"IDX stores 1 to {MAX_NDIM} dimensions, got {tensor.dim()}")
    code = _CODE_OF[tensor.dtype]
    header = bytes([0, 0, code, tensor.dim()]) + np.asarray(tensor.shape, dtype=">u4").tobytes()
    payload = tensor.detach().cpu().contiguous().numpy().astype(IDX_DTYPES[code], copy=False).tobytes()
    return header + payload


def write_idx(path: str | os.PathLike, tensor: torch.Tensor) -> Path:
    """Write ``tensor`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    Used by tests and for synthetic datasets; ``mtime=0`` keeps output reproducible.
    """
    path = Path(path)
    data = encode_idx(tensor)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
