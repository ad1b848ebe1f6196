"""Fuzzing the readers of untrusted files: IDX, checkpoints, the EMNIST archive.

Inputs are valid files mutated by byte flips, truncations, insertions and
deletions, plus plain random bytes and random safetensors-shaped headers. The
only allowed outcomes are a successful read or a :class:`MnistkitError`
subclass; any other exception (or a hang, bounded by the timeout) is a bug.
Example counts are bounded so the module runs in seconds.
"""

from __future__ import annotations

import gzip
import json
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistkit.checkpoint import load_checkpoint, load_tensors, save_checkpoint
from mnistkit.data.idx import decode_idx, encode_idx
from mnistkit.data.spec import DIGITS
from mnistkit.errors import CheckpointError, DataFormatError, MnistkitError
from mnistkit.models import build_model

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
WORK = Path(tempfile.mkdtemp(prefix="mnistkit-fuzz-"))

#: (kind, position as a fraction of the length, byte value, count)
mutation = st.tuples(
    st.sampled_from(["flip", "set", "truncate", "insert", "delete"]),
    st.floats(0, 1, allow_nan=False),
    st.integers(0, 255),
    st.integers(1, 16),
)


def mutate(data: bytes, ops) -> bytes:
    """Apply mutations in order; positions scale with the current length so every region gets hit."""
    buf = bytearray(data)
    for kind, where, value, count in ops:
        i = min(int(where * len(buf)), max(len(buf) - 1, 0))
        if kind == "flip" and buf:
            buf[i] ^= 1 << (value % 8)
        elif kind == "set" and buf:
            buf[i] = value
        elif kind == "truncate":
            del buf[i:]
        elif kind == "insert":
            buf[i:i] = bytes([value]) * count
        elif kind == "delete":
            del buf[i : i + count]
    return bytes(buf)


# ----------------------------------------------------------------------------- IDX

IMAGES = encode_idx(torch.arange(3 * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(3, 28, 28))
LABELS = encode_idx(torch.tensor([3, 1, 4], dtype=torch.uint8))
FLOATS = encode_idx(torch.linspace(-1, 1, 12).reshape(3, 4))


def _decode_or_format_error(data: bytes, source: str) -> None:
    """Either a DataFormatError, or a tensor that is exactly what the bytes say: re-encoded, it gives
    back the (decompressed) input byte for byte (header, shape, dtype and payload)."""
    try:
        tensor = decode_idx(data, source)
    except DataFormatError:
        return
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    assert encode_idx(tensor) == raw


@pytest.mark.timeout(120)
@FUZZ
@given(
    base=st.sampled_from([IMAGES, LABELS, FLOATS]),
    compress=st.booleans(),
    ops=st.lists(mutation, min_size=1, max_size=4),
)
def test_mutated_idx_gives_a_tensor_or_a_data_format_error(base, compress, ops):
    data = gzip.compress(base, mtime=0) if compress else base
    _decode_or_format_error(mutate(data, ops), "fuzz.gz" if compress else "fuzz")


@pytest.mark.timeout(60)
@FUZZ
@given(data=st.binary(max_size=512), name=st.sampled_from(["x", "x.gz"]))
def test_random_bytes_as_idx(data, name):
    _decode_or_format_error(data, name)


@pytest.mark.timeout(60)
@FUZZ
@given(
    code=st.integers(0, 255),
    ndim=st.integers(0, 255),
    dims=st.lists(st.integers(0, 2**32 - 1), max_size=9),
    payload=st.binary(max_size=64),
)
def test_random_idx_headers(code, ndim, dims, payload):
    header = bytes([0, 0, code, ndim]) + b"".join(struct.pack(">I", d) for d in dims)
    _decode_or_format_error(header + payload, "header")


# ----------------------------------------------------------------------------- checkpoints


def _good_checkpoint() -> bytes:
    torch.manual_seed(0)
    path = save_checkpoint(
        WORK / "good.safetensors",
        build_model("mlp", hidden=[4]),
        {"dataset": "mnist", "norm": {"mean": 0.5, "std": 0.5}, "class_names": list(DIGITS)},
    )
    return path.read_bytes()


GOOD = _good_checkpoint()


def _load_or_checkpoint_error(data: bytes) -> None:
    path = WORK / "fuzzed.safetensors"
    path.write_bytes(data)
    try:
        load_checkpoint(path)
    except CheckpointError:
        return
    assert data == GOOD, "a changed checkpoint was accepted"


@pytest.mark.timeout(120)
@FUZZ
@given(ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_checkpoint_is_refused_with_a_checkpoint_error(ops):
    _load_or_checkpoint_error(mutate(GOOD, ops))


@pytest.mark.timeout(60)
@FUZZ
@given(data=st.binary(max_size=256))
def test_random_bytes_as_checkpoint(data):
    _load_or_checkpoint_error(data)


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
tensor_entry = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "X9"]) | json_value,
        "shape": st.lists(st.integers(-2, 2**40), max_size=3) | json_value,
        "data_offsets": st.lists(st.integers(-1, 2**40), min_size=0, max_size=3) | json_value,
    }
)


@pytest.mark.timeout(60)
@FUZZ
@given(
    entries=st.dictionaries(st.text(max_size=6), tensor_entry | json_value, max_size=3),
    meta=st.one_of(json_value, st.dictionaries(st.sampled_from(["mnistkit", "mnistkit_sha256", "x"]), json_value)),
    payload=st.binary(max_size=64),
)
def test_random_safetensors_headers(entries, meta, payload):
    header = json.dumps({**entries, "__metadata__": meta}).encode()
    data = struct.pack("<Q", len(header)) + header + payload
    path = WORK / "header.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError):
        load_tensors(path)


def test_deeply_nested_header_is_a_checkpoint_error():
    header = b"[" * 100_000 + b"]" * 100_000
    path = WORK / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(CheckpointError):
        load_tensors(path)


# ----------------------------------------------------------------------------- the EMNIST archive


@pytest.mark.timeout(120)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(ops=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_emnist_archive_gives_only_mnistkit_errors(ops):
    from synthetic import emnist_members, write_zip

    from mnistkit.data import load_dataset

    good = write_zip(
        WORK / "src" / "gzip.zip",
        emnist_members(splits=("digits",), n_train=20, n_test=10),
    ).read_bytes()
    root = WORK / "emnist"
    root.mkdir(exist_ok=True)
    (root / "gzip.zip").write_bytes(mutate(good, ops))
    try:
        load_dataset("emnist-digits", root, download=False)
    except MnistkitError:
        pass
