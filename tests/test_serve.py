"""``mnistkit serve``'s app, in process: every answer checked against ``checkpoint_proba`` on the same
pixels with a trained model, and a JSON 4xx for every kind of bad input. The real uvicorn process
is tested in ``test_serve_uvicorn.py``."""

from __future__ import annotations

import asyncio
import json
import re
import struct
import threading
import zlib

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient
from helpers import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from serve_helpers import (
    CLASSES,
    SECRET_DIRS,
    TEMPERATURE,
    assert_matches_library,
    drawing,
    mnist_digits,
    png_bytes,
    save_trained,
)

import mnistkit.inference
import mnistkit.serving.app as app_module
from mnistkit.checkpoint import load_checkpoint
from mnistkit.preprocess.image import load_image, preprocess_image
from mnistkit.serving.app import ApiError, create_app, parse_pixels_json, public_metadata
from mnistkit.serving.limits import MAX_BODY_BYTES, MAX_JSON_BYTES, SERVE_MAX_PIXELS, Limits
from mnistkit.unsure import DEFAULT_MIN_CONFIDENCE


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory, mnist_root):
    return save_trained(tmp_path_factory.mktemp("ckpt") / "m.safetensors", mnist_root)


@pytest.fixture(scope="module")
def ckpt(ckpt_path):
    return load_checkpoint(ckpt_path)


@pytest.fixture(scope="module")
def client(ckpt_path):
    with TestClient(create_app(ckpt_path)) as c:
        yield c


@pytest.fixture(scope="module")
def test_digits(mnist_root):
    return mnist_digits(mnist_root, "test", 20)


def as_scan(digit: torch.Tensor) -> bytes:
    """An MNIST digit as a 'scan': dark ink on white, 10x larger, off-centre on a wider page."""
    ink = Image.fromarray(255 - digit.numpy()).resize((280, 280), Image.BILINEAR)
    page = Image.new("L", (400, 320), 255)
    page.paste(ink, (90, 20))
    return png_bytes(page)


def header_only_png(width: int, height: int, bit_depth: int = 8) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def test_uploads_raw_bodies_and_json_give_the_library_probabilities(client, ckpt, test_digits):
    """Twenty real test digits, each sent three ways; every answer is the library's, and mostly right."""
    images, labels = test_digits
    right = 0
    for digit, label in zip(images, labels):
        scan = as_scan(digit)
        reference = preprocess_image(load_image(scan))
        up = assert_matches_library(
            client.post("/predict?preview=1", files={"file": ("d.png", scan, "image/png")}), ckpt, reference
        )
        raw = assert_matches_library(
            client.post("/predict?preview=true", content=scan, headers={"Content-Type": "image/png"}), ckpt, reference
        )
        as_json = assert_matches_library(client.post("/predict", json={"pixels": digit.tolist()}), ckpt, digit.numpy())
        assert up["label"] == raw["label"]
        right += as_json["label"] == str(int(label))
    assert right >= 16, f"{right}/20 MNIST test digits right: the trained model or the served path is broken"


def test_the_calibration_temperature_is_applied(client, ckpt, test_digits):
    digit = test_digits[0][0]
    body = client.post("/predict", json={"pixels": digit.tolist()}).json()
    plain = mnistkit.inference.class_probabilities(ckpt.model, digit.unsqueeze(0), ckpt.norm, ckpt.task)[0]
    assert ckpt.temperature == TEMPERATURE
    assert abs(body["probability"] - float(plain.max())) > 1e-3  # the uncalibrated value is not what we serve


def test_preview_is_the_28x28_input_and_round_trips_as_json(client, ckpt):
    body = client.post("/predict?preview=1", files={"file": ("d.png", png_bytes(drawing()), "image/png")}).json()
    preview = np.array(body["preview"])
    assert preview.shape == (28, 28) and preview.min() >= 0 and preview.max() == 255
    assert np.array_equal(preview, preprocess_image(load_image(png_bytes(drawing()))))
    again = client.post("/predict", json={"pixels": body["preview"]}).json()
    assert again["probabilities"] == body["probabilities"]
    assert "preview" not in client.post("/predict", json={"pixels": body["preview"]}).json()
    r = client.post("/predict?preview=maybe", json={"pixels": body["preview"]})
    assert r.status_code == 422 and "preview" in r.json()["error"]


def _digits_and_blends(test_digits) -> list[torch.Tensor]:
    """Real test digits, and the mean of each with the next one of another class: ambiguous inputs
    that a model answers with less confidence."""
    images, labels = test_digits
    blends = [
        ((images[i].int() + images[j].int()) // 2).to(torch.uint8)
        for i in range(len(images))
        for j in range(i + 1, len(images))
        if labels[i] != labels[j]
    ][:20]
    return [*images, *blends]


def test_unsure_for_no_ink_and_below_the_confidence_threshold(ckpt_path, ckpt, test_digits):
    with TestClient(create_app(ckpt_path)) as c:
        blank = c.post("/predict", files={"file": ("b.png", png_bytes(Image.new("L", (280, 280), 255)), "image/png")})
        body = blank.json()
        assert blank.status_code == 200 and body["label"] is None and body["probability"] is None
        assert body["probabilities"] == {} and body["unsure"] is True and "no ink" in body["reason"]
        answers = [c.post("/predict", json={"pixels": d.tolist()}).json() for d in _digits_and_blends(test_digits)]
        below = [b["probability"] < DEFAULT_MIN_CONFIDENCE for b in answers]
        assert 0 < sum(below) < len(answers), "the inputs must fall on both sides of the threshold"
        assert all(b["unsure"] for b, low in zip(answers, below, strict=True) if low)
        by_confidence = ["below --min-confidence" in (b.get("reason") or "") for b in answers]
        assert any(by_confidence) and all(low for low, why in zip(below, by_confidence, strict=True) if why)
    with TestClient(create_app(ckpt_path, min_confidence=1.0)) as c:
        body = c.post("/predict", json={"pixels": test_digits[0][0].tolist()}).json()
        assert body["unsure"] is True and "below --min-confidence 1" in body["reason"]


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_create_app_refuses_a_min_confidence_that_is_no_probability(bad):
    """The check is the server's boundary, from the CLI or from Python, before any model loads."""
    from mnistkit.errors import ConfigError

    with pytest.raises(ConfigError, match=f"--min-confidence must be between 0 and 1, got {bad}"):
        create_app("no-such-model.safetensors", min_confidence=bad)


def test_healthz_model_docs_and_page(client, ckpt_path):
    assert client.get("/healthz").json() == {"status": "ok", "model": "logreg"}
    meta = client.get("/model").json()
    assert meta["class_names"] == CLASSES and meta["temperature"] == TEMPERATURE
    assert meta == public_metadata(load_checkpoint(ckpt_path).meta)
    text = json.dumps(meta)
    assert not any(secret in text for secret in SECRET_DIRS) and str(ckpt_path.parent) not in text
    assert meta["config"]["data_dir"] == "secret-data" and meta["config"]["out"] == "digits"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    assert set(spec["requestBody"]["content"]) >= {"multipart/form-data", "application/json"}
    assert [p["name"] for p in spec["parameters"]] == ["preview"]
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "pointerdown" in page.text
    assert 'accept="image/*"' in page.text and "capture=" in page.text and 'id="preview"' in page.text
    assert "://" not in page.text  # no external requests: no absolute URLs at all
    assert "connect-src 'self'" in page.headers["content-security-policy"]


def test_public_metadata_cuts_absolute_paths_everywhere():
    meta = {
        "a": "/x/y/z.csv",
        "b": ["C:\\Users\\me\\d", "relative/kept", "https://example.org/x"],
        "cmd": "mnistkit train --out /srv/runs/r1 --data-dir=/data/mnist",
        "n": 3,
        "slash": "a / b",
    }
    assert public_metadata(meta) == {
        "a": "z.csv",
        "b": ["d", "relative/kept", "https://example.org/x"],
        "cmd": "mnistkit train --out r1 --data-dir=mnist",
        "n": 3,
        "slash": "a / b",
    }


def _too_big_stream():
    for _ in range(3):
        yield b"\0" * (MAX_BODY_BYTES // 2 + 1)


def _json_body(text: str) -> dict:
    return dict(content=text.encode(), headers={"Content-Type": "application/json"})


BAD_REQUESTS = {
    "not-an-image": (dict(files={"file": ("x.png", b"plain text, no pixels", "image/png")}), 400, "not an image"),
    "empty-upload": (dict(files={"file": ("x.png", b"", "image/png")}), 400, "empty file"),
    "empty-body": (dict(content=b"", headers={"Content-Type": "image/png"}), 400, "empty request body"),
    "no-file-field": (dict(data={"other": "1"}, files={"nope": ("a", b"x")}), 400, "field named 'file'"),
    "too-big": (
        dict(content=b"\0" * (MAX_BODY_BYTES + 1), headers={"Content-Type": "image/png"}),
        413,
        "over the limit",
    ),
    "too-big-chunked": (dict(content=_too_big_stream, headers={"Content-Type": "image/png"}), 413, "over the limit"),
    "pixel-bomb": (
        dict(files={"file": ("bomb.png", header_only_png(9000, 9000), "image/png")}),
        400,
        f"81,000,000 pixels, over the limit of {SERVE_MAX_PIXELS:,}",
    ),
    "big-16-bit": (
        dict(files={"file": ("big.png", header_only_png(7000, 7000, 16), "image/png")}),
        400,
        f"over the limit of {SERVE_MAX_PIXELS:,}",
    ),
    "just-over-the-server-limit": (
        dict(content=header_only_png(2001, 2000), headers={"Content-Type": "image/png"}),
        400,
        "4,002,000 pixels",
    ),
    "truncated": (dict(files={"file": ("t.png", png_bytes(drawing())[:300], "image/png")}), 400, "cannot decode"),
    "bad-json": (_json_body("{not json"), 400, "not valid JSON"),
    "json-list": (dict(json=[1, 2, 3]), 422, "field 'pixels'"),
    "wrong-shape": (dict(json={"pixels": [[0] * 28] * 27}), 422, "28 rows of 28"),
    "ragged": (dict(json={"pixels": [[0] * 28] * 27 + [[0] * 27]}), 422, "28 rows of 28"),
    "nan": (_json_body('{"pixels": [' + ",".join(["[" + ",".join(["NaN"] * 28) + "]"] * 28) + "]}"), 422, "no NaN"),
    "out-of-range": (dict(json={"pixels": [[300] * 28] * 28}), 422, "between 0 and 255"),
    "negative": (dict(json={"pixels": [[-1] * 28] * 28}), 422, "between 0 and 255"),
    "strings": (dict(json={"pixels": [["0"] * 28] * 28}), 422, "must be numbers"),
    "huge-int": (dict(json={"pixels": [[10**400] * 28] + [[0] * 28] * 27}), 422, "a number of 401 characters"),
    "5000-digit-int": (_json_body('{"pixels": ' + "9" * 5000 + "}"), 422, "5,000 characters"),
    "long-float": (_json_body('{"pixels": [[0.' + "1" * 40 + "]]}"), 422, "42 characters"),
    "deep-nesting": (_json_body("[" * 100_000 + "]" * 100_000), 413, "over the limit"),
    "deep-but-small": (_json_body('{"pixels": ' + "[" * 9 + "]" * 9 + "}"), 422, "nested 10 levels deep"),
    "deep-objects": (_json_body('{"a":' * 5000 + "1" + "}" * 5000), 422, "nested 5,000 levels deep"),
    "json-too-big": (_json_body(" " * (MAX_JSON_BYTES + 1)), 413, "over the limit of 65,536"),
    "null": (dict(json={"pixels": None}), 422, "28 rows of 28"),
    "booleans": (dict(json={"pixels": [[True] * 28] * 28}), 422, "must be numbers"),
    "wrong-type": (dict(content=b"hello", headers={"Content-Type": "text/plain"}), 415, "unsupported Content-Type"),
    "no-type": (dict(content=b"hello"), 415, "unsupported Content-Type"),
    "bad-multipart": (
        dict(content=b"--xx\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=xx"}),
        400,
        "field named 'file'|malformed multipart",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_json_4xx_and_the_next_request_works(client, ckpt, case):
    kwargs, status, message = BAD_REQUESTS[case]
    if callable(kwargs.get("content")):
        kwargs = {**kwargs, "content": kwargs["content"]()}
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"] and re.search(message, r.json()["error"]), r.json()
    assert_matches_library(
        client.post("/predict?preview=1", files={"file": ("d.png", png_bytes(drawing()), "image/png")}), ckpt
    )


def test_framework_errors_use_the_same_json_shape(client):
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    r = client.get("/predict")
    assert r.status_code == 405 and list(r.json()) == ["error"]


def test_one_preprocessing_path_for_predict_serve_and_folder_training(client, tmp_path, monkeypatch):
    """The same PNG reaches the model as the same uint8 tensor via predict, serve and an image folder."""
    from mnistkit.data import load_dataset
    from mnistkit.prediction import predict_files

    seen = []
    real = mnistkit.inference.class_probabilities

    def spy(model, images, *args, **kwargs):
        seen.append(images.clone())
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(mnistkit.inference, "class_probabilities", spy)
    data = png_bytes(drawing())
    for split in ("train", "test"):
        (tmp_path / "folder" / split / "0").mkdir(parents=True)
        (tmp_path / "folder" / split / "0" / "d.png").write_bytes(data)
    ckpt = client.app.state.checkpoint
    predict_files(ckpt, [str(tmp_path / "folder" / "train" / "0" / "d.png")])
    client.post("/predict", files={"file": ("d.png", data, "image/png")})
    trained_on = load_dataset(str(tmp_path / "folder")).train.images
    assert len(seen) == 2 and seen[0].shape == (1, 28, 28) and seen[0].any()
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[0], trained_on)


def test_json_pixels_reach_the_model_unchanged(client, monkeypatch):
    seen = []
    real = mnistkit.inference.class_probabilities
    monkeypatch.setattr(
        mnistkit.inference,
        "class_probabilities",
        lambda m, images, *a, **k: (seen.append(images.clone()), real(m, images, *a, **k))[1],
    )
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:22, 12:16] = 255
    pixels[6:22, 16] = 128
    r = client.post("/predict", json={"pixels": pixels.tolist()})
    assert r.status_code == 200
    assert torch.equal(seen[0][0], torch.from_numpy(pixels))


pixel_values = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
json_values = st.recursive(
    pixel_values,
    lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=60,
)


def _check_parse(body: bytes) -> None:
    """Either a valid (28, 28) array in 0..255, or the server's own 4xx error: nothing else."""
    try:
        pixels = parse_pixels_json(body)
    except ApiError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    assert pixels.shape == (28, 28) and np.isfinite(pixels).all() and 0 <= pixels.min() <= pixels.max() <= 255


def _grid_with(cells) -> dict:
    """28x28 valid pixels with a few cells replaced by arbitrary values: near-valid bodies, cheaply."""
    grid = [[0] * 28 for _ in range(28)]
    for row, col, value in cells:
        grid[row][col] = value
    return {"pixels": grid}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries({"pixels": json_values}),
        st.lists(st.tuples(st.integers(0, 27), st.integers(0, 27), pixel_values), max_size=4).map(_grid_with),
    )
)
def test_json_pixel_parser_property_structured(doc):
    _check_parse(json.dumps(doc).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.text(alphabet='[]{}",:0123456789.eE+-nulNaIfity \\', max_size=400).map(str.encode))
def test_json_pixel_parser_property_raw_bytes(body):
    _check_parse(body)


def test_large_images_cannot_starve_small_requests(ckpt_path, ckpt, monkeypatch):
    """While the one large-image thread is busy and its queue full, another large image gets 503 at once
    and drawings and JSON pixels keep being answered."""
    import httpx

    release, started = threading.Event(), threading.Event()
    real_load = app_module.load_image

    def slow_for_big(data, max_pixels, name=None, **kw):
        img = real_load(data, max_pixels, name=name, **kw)
        if img.width * img.height > 300_000:
            started.set()
            assert release.wait(30)
        return img

    monkeypatch.setattr(app_module, "load_image", slow_for_big)
    # the lanes alone: these ten requests come from one client, over its share of requests in progress
    app = create_app(ckpt_path, limits=Limits(heavy_workers=1, heavy_queue=0, client_requests=0))
    big = png_bytes(Image.new("L", (800, 800), 255))
    small = png_bytes(drawing())

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as c:
            heavy = asyncio.create_task(c.post("/predict", content=big, headers={"Content-Type": "image/png"}))
            while not started.is_set():
                await asyncio.sleep(0.01)
            refused = await c.post("/predict", content=big, headers={"Content-Type": "image/png"})
            light = await asyncio.gather(
                *(c.post("/predict?preview=1", files={"file": ("d.png", small, "image/png")}) for _ in range(8))
            )
            release.set()
            return refused, light, await heavy

    refused, light, heavy = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "busy with large images" in refused.json()["error"]
    for r in light:
        assert_matches_library(r, ckpt)
    assert heavy.status_code == 200 and heavy.json()["unsure"] is True  # a blank page: no ink


def test_serve_without_fastapi_says_how_to_install(ckpt_path, capsys, monkeypatch):
    import builtins
    import sys

    from mnistkit.cli import main

    real_import = builtins.__import__

    def no_uvicorn(name, *args, **kwargs):
        if name == "uvicorn" or name.startswith("uvicorn."):
            raise ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "uvicorn", raising=False)
    monkeypatch.delitem(sys.modules, "mnistkit.serving.server", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    with pytest.raises(SystemExit) as info:
        main(["serve", str(ckpt_path)])
    assert info.value.code == 2
    assert capsys.readouterr().err == "mnistkit: error: mnistkit serve needs uvicorn: pip install 'mnistkit[serve]'\n"


def test_serve_without_a_checkpoint_uses_the_bundled_model_or_says_it_is_missing(capsys, monkeypatch):
    import mnistkit.bundled

    monkeypatch.setattr(mnistkit.bundled, "MODEL_FILE", "no-such-model.safetensors")
    code, _, err = run_cli(["serve", "--port", "1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "no bundled model" in err and "serving" not in err


def test_serve_checkpoint_given_twice_or_broken_is_one_line_exit_2(ckpt_path, tmp_path, capsys):
    code, _, err = run_cli(["serve", ckpt_path, "--model", ckpt_path], capsys)
    assert code == 2 and err.count("\n") == 1 and "give the checkpoint once" in err
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(ckpt_path.read_bytes()[:1000])
    for bad in (broken, tmp_path / "missing.safetensors", tmp_path):
        code, _, err = run_cli(["serve", "--model", bad], capsys)
        assert code == 2 and err.startswith("mnistkit: error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err and "serving" not in err
