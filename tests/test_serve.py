"""``mnistkit serve``'s app: predictions, metadata, and a JSON 4xx for every kind of bad input."""

from __future__ import annotations

import asyncio
import io
import re
import struct
import zlib

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

import mnistkit.inference  # noqa: E402
from mnistkit.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from mnistkit.models import build_model  # noqa: E402
from mnistkit.preprocess import Normalization  # noqa: E402
from mnistkit.serving.app import MAX_BODY_BYTES, create_app  # noqa: E402

NORM = Normalization(0.1307, 0.3081)
CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.safetensors", build_model("logreg"),
                           {"dataset": "mnist", "norm": NORM.to_dict(), "class_names": CLASSES})


@pytest.fixture(scope="module")
def client(ckpt_path):
    with TestClient(create_app(ckpt_path)) as c:
        yield c


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def drawing() -> Image.Image:
    """Black ink on white, as the page's canvas sends it."""
    img = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(img).ellipse((90, 50, 190, 230), outline="black", width=18)
    return img


def header_only_png(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IEND", b""))


def assert_good_prediction(r):
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"label", "probability", "probabilities"}
    assert list(body["probabilities"]) == CLASSES
    assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["probability"] == body["probabilities"][body["label"]]
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4


def test_predict_from_upload_json_and_raw_body(client):
    data = png_bytes(drawing())
    assert_good_prediction(client.post("/predict", files={"file": ("d.png", data, "image/png")}))
    assert_good_prediction(client.post("/predict", content=data, headers={"Content-Type": "image/png"}))
    assert_good_prediction(client.post("/predict", json={"pixels": [[0] * 28] * 10 + [[255] * 28] * 4 + [[0] * 28] * 14}))


def test_healthz_model_docs_and_page(client, ckpt_path):
    assert client.get("/healthz").json() == {"status": "ok", "model": "logreg"}
    assert client.get("/model").json() == load_checkpoint(ckpt_path).meta
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]["/predict"]["post"]["requestBody"]["content"]) >= {"multipart/form-data", "application/json"}
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "pointerdown" in page.text
    assert "://" not in page.text  # no external requests: no absolute URLs at all
    assert "connect-src 'self'" in page.headers["content-security-policy"]


def _too_big_stream():
    for _ in range(3):
        yield b"\0" * (MAX_BODY_BYTES // 2 + 1)


BAD_REQUESTS = {
    "not-an-image": (dict(files={"file": ("x.png", b"plain text, no pixels", "image/png")}), 400, "not an image"),
    "empty-upload": (dict(files={"file": ("x.png", b"", "image/png")}), 400, "empty file"),
    "empty-body": (dict(content=b"", headers={"Content-Type": "image/png"}), 400, "empty request body"),
    "no-file-field": (dict(data={"other": "1"}, files={"nope": ("a", b"x")}), 400, "field named 'file'"),
    "too-big": (dict(content=b"\0" * (MAX_BODY_BYTES + 1), headers={"Content-Type": "image/png"}), 413, "over the limit"),
    "too-big-chunked": (dict(content=_too_big_stream, headers={"Content-Type": "image/png"}), 413, "over the limit"),
    "pixel-bomb": (dict(files={"file": ("bomb.png", header_only_png(9000, 9000), "image/png")}), 400,
                   "81,000,000 pixels, over the limit of 50,000,000"),
    "truncated": (dict(files={"file": ("t.png", png_bytes(drawing())[:300], "image/png")}), 400, "cannot decode"),
    "bad-json": (dict(content=b"{not json", headers={"Content-Type": "application/json"}), 400, "not valid JSON"),
    "json-list": (dict(json=[1, 2, 3]), 422, "field 'pixels'"),
    "wrong-shape": (dict(json={"pixels": [[0] * 28] * 27}), 422, "28 rows of 28"),
    "ragged": (dict(json={"pixels": [[0] * 28] * 27 + [[0] * 27]}), 422, "28 rows of 28"),
    "nan": (dict(content=b'{"pixels": [' + b",".join([b"[" + b",".join([b"NaN"] * 28) + b"]"] * 28) + b"]}",
                 headers={"Content-Type": "application/json"}), 422, "no NaN"),
    "out-of-range": (dict(json={"pixels": [[300] * 28] * 28}), 422, "between 0 and 255"),
    "negative": (dict(json={"pixels": [[-1] * 28] * 28}), 422, "between 0 and 255"),
    "strings": (dict(json={"pixels": [["0"] * 28] * 28}), 422, "must be numbers"),
    "huge-int": (dict(json={"pixels": [[10 ** 400] * 28] * 28}), 422, "between 0 and 255"),
    "null": (dict(json={"pixels": None}), 422, "28 rows of 28"),
    "booleans": (dict(json={"pixels": [[True] * 28] * 28}), 422, "must be numbers"),
    "wrong-type": (dict(content=b"hello", headers={"Content-Type": "text/plain"}), 415, "unsupported Content-Type"),
    "no-type": (dict(content=b"hello"), 415, "unsupported Content-Type"),
    "bad-multipart": (dict(content=b"--xx\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=xx"}),
                      400, "field named 'file'|malformed multipart"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_json_4xx_and_the_next_request_works(client, case):
    kwargs, status, message = BAD_REQUESTS[case]
    if callable(kwargs.get("content")):
        kwargs = {**kwargs, "content": kwargs["content"]()}
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert list(r.json()) == ["error"] and re.search(message, r.json()["error"])
    assert_good_prediction(client.post("/predict", files={"file": ("d.png", png_bytes(drawing()), "image/png")}))


def test_framework_errors_use_the_same_json_shape(client):
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    r = client.get("/predict")
    assert r.status_code == 405 and list(r.json()) == ["error"]


def test_one_preprocessing_path_for_predict_serve_and_folder_training(client, tmp_path, monkeypatch):
    """The same PNG reaches the model as the same uint8 tensor via predict, serve and an image folder."""
    from mnistkit.data import load_dataset
    from mnistkit.predict import predict_files

    seen = []
    real = mnistkit.inference.predict_proba

    def spy(model, images, *args, **kwargs):
        seen.append(images.clone())
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(mnistkit.inference, "predict_proba", spy)
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
    real = mnistkit.inference.predict_proba
    monkeypatch.setattr(mnistkit.inference, "predict_proba",
                        lambda m, images, *a, **k: (seen.append(images.clone()), real(m, images, *a, **k))[1])
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:22, 12:16] = 255
    pixels[6:22, 16] = 128
    assert_good_prediction(client.post("/predict", json={"pixels": pixels.tolist()}))
    assert torch.equal(seen[0][0], torch.from_numpy(pixels))


def test_200_concurrent_requests_all_succeed(ckpt_path):
    """Inference runs in worker threads: 16 at a time, no errors, no wedged server (no timing asserts)."""
    import httpx

    app = create_app(ckpt_path)
    data = png_bytes(drawing())

    async def hammer():
        limit = asyncio.Semaphore(16)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            async def one(i):
                async with limit:
                    if i % 2:
                        return await c.post("/predict", files={"file": ("d.png", data, "image/png")})
                    return await c.post("/predict", json={"pixels": [[i % 256] * 28] * 28})
            return await asyncio.gather(*(one(i) for i in range(200)))

    responses = asyncio.run(asyncio.wait_for(hammer(), timeout=120))
    assert [r.status_code for r in responses] == [200] * 200


def test_serve_without_fastapi_says_how_to_install(ckpt_path, capsys, monkeypatch):
    import builtins
    import sys

    from mnistkit.cli import main

    real_import = builtins.__import__

    def no_uvicorn(name, *args, **kwargs):
        if name == "uvicorn":
            raise ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "uvicorn", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    with pytest.raises(SystemExit) as info:
        main(["serve", str(ckpt_path)])
    assert info.value.code == 2
    assert capsys.readouterr().err == "mnistkit: error: mnistkit serve needs uvicorn: pip install 'mnistkit[serve]'\n"
