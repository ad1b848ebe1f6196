"""IDX reader/writer: round trips, every malformed-file fault, and a fuzz test."""

from __future__ import annotations

import gzip
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnistkit.data import read_idx, write_idx
from mnistkit.data.idx import decode_idx
from mnistkit.errors import DataFormatError


def header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
def test_round_trip_every_dtype(tmp_path, dtype, name):
    tensor = (torch.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).to(dtype)
    if dtype == torch.uint8:
        tensor = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / name, tensor)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == dtype and torch.equal(back, tensor)


def test_big_endian_on_disk(tmp_path):
    path = write_idx(tmp_path / "x.idx", torch.tensor([1, 258], dtype=torch.int32))
    assert path.read_bytes() == header(0x0C, (2,)) + b"\x00\x00\x00\x01\x00\x00\x01\x02"


def test_empty_first_dimension_is_valid():
    assert read_shape(header(0x08, (0, 28, 28))) == (0, 28, 28)


def read_shape(data: bytes) -> tuple[int, ...]:
    return tuple(decode_idx(data, "t").shape)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "file is empty"),
        (b"\x00\x00", "too short"),
        (b"\x12\x34\x08\x01" + b"\x00\x00\x00\x01" + b"\x00", "bad magic number 0x12340801"),
        (header(0x07, (1,)) + b"\x00", "unknown IDX dtype code 0x07"),
        (bytes([0, 0, 8, 0]), "0 dimensions"),
        (bytes([0, 0, 8, 3]) + b"\x00\x00\x00\x02", "declares 3 dimensions"),
        (
            header(0x08, (2, 28, 28)) + bytes(28 * 28),
            "payload is 784 bytes but the header \\(2x28x28 of uint8\\) needs 1568",
        ),
        (header(0x08, (1, 2, 2)) + bytes(5), "payload is 5 bytes"),
        (header(0x0C, (3,)) + bytes(11), "needs 12"),
        (header(0x08, (0xFFFFFFFF, 0xFFFFFFFF)), "implausibly large"),
        (b"\x1f\x8b\x08\x00garbage", "gzip data is truncated or corrupt"),
        (gzip.compress(b"", mtime=0), "decompressed data is empty"),
    ],
)
def test_malformed_bytes_name_the_fault(data, message):
    with pytest.raises(DataFormatError, match=message):
        decode_idx(data, "some.idx")


def test_truncated_gzip_file_names_the_file(tmp_path):
    good = write_idx(tmp_path / "good.gz", torch.zeros(10, 28, 28, dtype=torch.uint8)).read_bytes()
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte\.gz: gzip data is truncated"):
        read_idx(bad)


def test_truncated_payload_inside_valid_gzip(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(header(0x08, (100,)) + bytes(99)))
    with pytest.raises(DataFormatError, match=r"labels\.gz: payload is 99 bytes .* needs 100; .*truncated"):
        read_idx(path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_bytes(b"\x00" * 3 + b"garbage bytes here"), "unknown IDX dtype code|dimensions"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: None, "no such IDX file"),
    ],
)
def test_file_level_faults(tmp_path, make, message):
    path = tmp_path / "data.idx"
    make(path)
    with pytest.raises(DataFormatError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_gz_name_without_gzip_content(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(header(0x08, (1,)) + b"\x05")
    with pytest.raises(DataFormatError, match="not gzip-compressed"):
        read_idx(path)


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(TypeError, match="IDX cannot store torch.int64"):
        write_idx(tmp_path / "x.idx", torch.zeros(3, dtype=torch.int64))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64), as_gzip=st.booleans(), keep_header=st.booleans())
def test_fuzz_only_data_format_error(data, as_gzip, keep_header):
    """Random bytes (raw, behind a plausible header, or gzipped) never raise anything else."""
    if keep_header and len(data) >= 2:
        data = bytes([0, 0, 8, data[0] % 4]) + data[1:]
    if as_gzip:
        data = gzip.compress(data)[: max(2, len(data))]
    try:
        tensor = decode_idx(data, "fuzz")
    except DataFormatError:
        return
    assert isinstance(tensor, torch.Tensor)
