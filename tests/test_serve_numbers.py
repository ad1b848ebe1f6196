"""``POST /predict?number=1`` and the page's number mode: written numbers read by the line reader.

The line model is a crnn trained for a few steps on synthetic lines: its readings are random, so
every answer is held to what :func:`mnistkit.reading.read_number_file` (``mnistkit predict --number``)
says for the same bytes, not to a true number. Also here: phone-sized JPEG photos (over the image
body limit) accepted, other large bodies refused with a hint, and a server without a line reader
that says so and still reads digits. The browser test uploads a photo of a number in Chromium.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from helpers import require_or_skip, stop_process  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from serve_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS  # noqa: E402

from mnistkit.reading import read_number_file  # noqa: E402
from mnistkit.reading.line import LINE_HEIGHT  # noqa: E402
from mnistkit.serving.app import create_app  # noqa: E402
from mnistkit.serving.limits import MAX_BODY_BYTES, Limits  # noqa: E402
from mnistkit.serving.numbers import PNG_DATA_URL  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import load_test  # noqa: E402

#: The keys of a number answer (``line_image`` only with ``?preview=1``).
NUMBER_KEYS = {"number", "confidence", "unsure", "reason", "digits"}


@pytest.fixture(scope="module")
def line_run(tmp_path_factory) -> Path:
    """A run directory of a line model trained for a few steps (seconds), its synthetic lines cached once."""
    from mnistkit.training import fit

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNISTKIT_CACHE_DIR", str(tmp_path_factory.mktemp("lines-cache")))
        result = fit(
            model="crnn",
            dataset="digit-lines-sample",
            val_size=200,
            dry_run=True,
            epochs=1,
            out=str(tmp_path_factory.mktemp("line-run") / "run"),
            echo=False,
            plots=False,
        )
    return Path(result.run_dir)


@pytest.fixture(scope="module")
def client(line_run):
    """The bundled digit model beside the line model."""
    with TestClient(create_app(line_model=line_run)) as c:
        yield c


@pytest.fixture
def no_bundled_reader(monkeypatch):
    """This install without the bundled line reader, whether or not the real one is there."""
    import mnistkit.bundled

    monkeypatch.setattr(mnistkit.bundled, "LINE_MODEL_FILE", "no-such-reader.safetensors")


def number_photo(size=(900, 600), text="1010", noise=0, quality=90) -> bytes:
    """Dark pen strokes ("1" a bar, "0" an ellipse) on tinted paper, as a JPEG; ``noise`` grain
    makes the file as large as a phone's."""
    img = Image.new("RGB", size, (232, 226, 210))
    draw = ImageDraw.Draw(img)
    w, h = int(size[0] * 0.09), int(size[1] * 0.2)
    x0, y0, pen = int(size[0] * 0.25), int(size[1] * 0.4), max(3, int(h * 0.12))
    for i, ch in enumerate(text):
        x = x0 + i * int(w * 1.4)
        if ch == "1":
            draw.line((x + w // 2, y0, x + w // 2, y0 + h), fill=(30, 30, 60), width=pen)
        else:
            draw.ellipse((x, y0, x + w, y0 + h), outline=(30, 30, 60), width=pen)
    if noise:
        grain = np.random.default_rng(0).integers(-noise, noise + 1, (size[1], size[0], 3))
        img = Image.fromarray(np.clip(np.asarray(img, np.int16) + grain, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def decode_line_image(url: str) -> np.ndarray:
    assert url.startswith(PNG_DATA_URL)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url[len(PNG_DATA_URL) :]))))


def assert_well_formed_number(body: dict) -> dict:
    assert set(body) - {"line_image"} == NUMBER_KEYS, body
    assert isinstance(body["number"], str) and re.fullmatch(r"\d*", body["number"])
    assert 0.0 <= body["confidence"] <= 1.0
    assert [d["label"] for d in body["digits"]] == list(body["number"])
    assert all(0.0 <= d["probability"] <= 1.0 for d in body["digits"])
    assert isinstance(body["unsure"], bool) and body["unsure"] == (body["reason"] is not None)
    return body


def test_a_number_is_read_as_predict_number_reads_it_with_the_line_it_saw(client):
    """Sent as a form and as a raw body: the answer is read_number_file's for the same bytes, and
    line_image is exactly the line image that reading saw."""
    data = number_photo()
    reading = read_number_file(client.app.state.line_reader, data, "n.jpg")
    want = {k: v for k, v in reading.to_dict().items() if k != "path"}
    for r in (
        client.post("/predict?number=1&preview=1", files={"file": ("n.jpg", data, "image/jpeg")}),
        client.post("/predict?number=true&preview=1", content=data, headers={"Content-Type": "image/jpeg"}),
    ):
        assert r.status_code == 200, r.text
        body = assert_well_formed_number(r.json())
        assert {k: v for k, v in body.items() if k != "line_image"} == want
        line = decode_line_image(body["line_image"])
        assert line.shape[0] == LINE_HEIGHT and np.array_equal(line, reading.line) and line.max() == 255
    plain = client.post("/predict?number=1", files={"file": ("n.jpg", data, "image/jpeg")}).json()
    assert set(plain) == NUMBER_KEYS
    digit = client.post("/predict", files={"file": ("n.jpg", data, "image/jpeg")}).json()
    assert "label" in digit and "number" not in digit  # without ?number=1: the digit model, as before


def test_blank_pages_and_a_strict_threshold_are_unsure_with_a_reason(line_run, client):
    blank = png_bytes(Image.new("L", (600, 400), 235))
    body = assert_well_formed_number(
        client.post("/predict?number=1&preview=1", files={"file": ("b.png", blank, "image/png")}).json()
    )
    assert body["unsure"] is True and body["number"] == "" and "no ink" in body["reason"]
    assert body["line_image"] is None
    with TestClient(create_app(line_model=line_run, min_confidence=1.0)) as strict:
        body = strict.post("/predict?number=1", files={"file": ("n.jpg", number_photo(), "image/jpeg")}).json()
    assert_well_formed_number(body)
    assert body["unsure"] is True and re.search("low confidence|no digits found", body["reason"])


def test_without_a_line_reader_numbers_get_a_clear_501_and_digits_still_work(no_bundled_reader):
    with TestClient(create_app()) as c:
        r = c.post("/predict?number=1", files={"file": ("n.jpg", number_photo(), "image/jpeg")})
        assert r.status_code == 501 and list(r.json()) == ["error"]
        error = r.json()["error"]
        assert "no line reader" in error and "--line-model" in error and "/" not in error  # no path of ours
        assert c.get("/line-model").status_code == 501
        digit = c.post("/predict", files={"file": ("n.jpg", number_photo(text="1"), "image/jpeg")})
        assert digit.status_code == 200 and digit.json()["label"] in "0123456789"


def test_serve_with_a_line_model_that_is_not_one_is_one_line_exit_2(tmp_path, capsys):
    from mnistkit.bundled import bundled_model_path
    from mnistkit.cli import main

    for bad, message in ((tmp_path / "missing", ""), (bundled_model_path(), "reads single digits")):
        with pytest.raises(SystemExit) as info:
            main(["serve", "--line-model", str(bad), "--port", str(load_test.free_port())])
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.startswith("mnistkit: error: ") and err.count("\n") == 1, err
        assert message in err and "serving" not in err


def _chunked(data: bytes):
    yield data[: len(data) // 2]
    yield data[len(data) // 2 :]


def hostile_number_requests(big_jpeg: bytes) -> dict:
    big_png = png_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 256, (1500, 1500), np.uint8)))
    assert len(big_png) > MAX_BODY_BYTES
    return {
        "not-an-image": (dict(files={"file": ("x.jpg", b"plain text", "image/jpeg")}), 400, "not an image"),
        "empty-body": (dict(content=b"", headers={"Content-Type": "image/jpeg"}), 400, "empty request body"),
        "truncated": (dict(files={"file": ("t.jpg", number_photo()[:400], "image/jpeg")}), 400, "cannot decode"),
        "json-pixels": (dict(json={"pixels": [[0] * 28] * 28}), 422, "reads a written number from an image"),
        "pixel-bomb-png": (
            dict(files={"file": ("b.png", png_bytes(Image.new("L", (2100, 2000), 255)), "image/png")}),
            400,
            "4,200,000 pixels, over the limit of 4,000,000; send it as a JPEG",
        ),
        "big-png-form": (dict(files={"file": ("b.png", big_png, "image/png")}), 413, "images other than JPEG"),
        "big-png-raw": (dict(content=big_png, headers={"Content-Type": "image/png"}), 413, "send photos as JPEG"),
        "big-jpeg-chunked": (
            dict(content=_chunked(big_jpeg), headers={"Content-Type": "image/jpeg"}),
            413,
            "with a Content-Length",
        ),
        "bad-flag": (dict(files={"file": ("n.jpg", number_photo(), "image/jpeg")}), 422, "number='maybe'"),
    }


def test_hostile_number_requests_are_json_4xx_and_the_next_request_works(client):
    big_jpeg = number_photo((4032, 3024), noise=40, quality=95)
    for case, (kwargs, status, message) in hostile_number_requests(big_jpeg).items():
        query = "number=maybe" if case == "bad-flag" else "number=1"
        r = client.post(f"/predict?{query}", **kwargs)
        assert r.status_code == status, (case, r.text)
        assert list(r.json()) == ["error"] and message in r.json()["error"], (case, r.json())
        ok = client.post("/predict?number=1", files={"file": ("n.jpg", number_photo(), "image/jpeg")})
        assert ok.status_code == 200, (case, ok.text)


def test_a_phone_sized_jpeg_over_the_image_limit_is_read(line_run):
    """A 12-megapixel JPEG of 2.5+ MB (over the 2 MiB image limit) is read as a digit and as a number;
    over the photo limit, or with no photo slot free, it is refused saying what to do."""
    data = number_photo((4032, 3024), noise=40, quality=95)
    assert len(data) > MAX_BODY_BYTES + 400_000
    with TestClient(create_app(line_model=line_run)) as c:
        for query in ("", "?number=1"):
            r = c.post(f"/predict{query}", files={"file": ("phone.jpg", data, "image/jpeg")})
            assert r.status_code == 200, r.text
    small = Limits(max_photo_bytes=MAX_BODY_BYTES + 1000, max_jpeg_pixels=10_000_000)
    with TestClient(create_app(line_model=line_run, limits=small)) as c:
        r = c.post("/predict", files={"file": ("phone.jpg", data, "image/jpeg")})
        assert r.status_code == 413 and "for a JPEG photo; shrink it" in r.json()["error"]
        r = c.post("/predict?number=1", files={"file": ("n.jpg", number_photo((4032, 3024)), "image/jpeg")})
        assert r.status_code == 400 and "over the limit of 10,000,000; shrink it" in r.json()["error"]
    with TestClient(create_app(line_model=line_run, limits=Limits(large_uploads=0))) as c:
        r = c.post("/predict", files={"file": ("phone.jpg", data, "image/jpeg")})
        assert r.status_code == 503 and "busy with large photos" in r.json()["error"]
        assert r.headers["retry-after"] == "1"


# ---------------------------------------------------------------------- a real server: curl, Chromium


@pytest.fixture(scope="module")
def server(line_run, tmp_path_factory):
    """``mnistkit serve --line-model RUN`` (the bundled digit model) on a free port; yields its base URL."""
    from mnistkit.bundled import bundled_model_path

    port = load_test.free_port()
    log_path = tmp_path_factory.mktemp("log") / "serve.log"
    with open(log_path, "wb") as log:
        proc = load_test.start_server(bundled_model_path(), port, log, ("--line-model", str(line_run)))
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop_process(proc)
        assert "Traceback" not in log_path.read_text()


def test_the_readmes_curl_command_reads_a_phone_photo(server, tmp_path):
    """``curl -s -F file=@photo.jpg .../predict`` with a 2.5+ MB phone JPEG: a digit, and with ?number=1 a number."""
    if shutil.which("curl") is None:
        require_or_skip("curl is not installed")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(number_photo((4032, 3024), noise=40, quality=95))
    assert photo.stat().st_size > MAX_BODY_BYTES
    for query, key in (("", "label"), ("?number=1", "number")):
        out = subprocess.run(
            ["curl", "-s", "-F", f"file=@{photo}", f"{server}predict{query}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert key in json.loads(out.stdout), out.stdout


@pytest.mark.browser
def test_a_photo_of_a_number_is_read_on_the_page_with_the_line_it_saw(server, tmp_path):
    """Tick "a number", upload a photo: the page shows the number the server read (the same answer
    the API gives for the request the page sent), its confidence, and the line image as the preview."""

    try:
        import playwright.sync_api as playwright_api
    except ImportError:
        require_or_skip("the playwright package is not installed")
    if not Path(CHROMIUM).is_file():
        require_or_skip(f"no Chromium at {CHROMIUM} (set MNISTKIT_CHROMIUM)")
    photo = tmp_path / "number.jpg"
    photo.write_bytes(number_photo((1600, 1200)))
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            # bypass_csp: Playwright evaluates its wait predicates with eval(), which the page's CSP forbids.
            page = browser.new_page(viewport={"width": 820, "height": 900}, bypass_csp=True)
            urls: list[str] = []
            page.on("request", lambda r: urls.append(r.url))
            page.goto(server)
            page.wait_for_selector("#chart .bar")
            page.wait_for_load_state("networkidle")
            assert page.is_enabled("#number-mode")  # the server has a line reader
            page.check("#number-mode")
            with page.expect_response(lambda r: "/predict" in r.url) as answered:
                page.set_input_files("#file", str(photo))
            response = answered.value
            assert "number=1" in response.url and response.status == 200
            body = assert_well_formed_number(response.json())
            page.wait_for_function("document.getElementById('label').textContent !== '\\u2013'", timeout=15_000)
            page.wait_for_function("document.getElementById('line').naturalHeight > 0", timeout=15_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser-number.png"))
            assert page.text_content("#error") == ""
            assert page.text_content("#label") == (body["number"] or "?")
            assert page.text_content("#prob") == f"({body['confidence'] * 100:.1f}%)"
            assert page.is_hidden("#unsure") != body["unsure"]
            assert page.is_visible("#line") and page.is_hidden("#preview")
            assert page.get_attribute("#line", "src") == body["line_image"]
            assert page.evaluate("document.getElementById('line').naturalHeight") == LINE_HEIGHT
            shown = page.eval_on_selector_all("#chart .bar", "bs => bs.map(b => b.dataset.label).join('')")
            assert shown == body["number"]
            assert all(url.startswith(server) for url in urls), urls
        finally:
            browser.close()


def test_a_line_reader_answering_nan_gets_a_json_500_naming_it(line_run):
    import torch

    with TestClient(create_app(line_model=line_run)) as c:
        with torch.no_grad():
            for p in c.app.state.line_reader.model.parameters():
                p.fill_(float("nan"))
        r = c.post("/predict?number=1", files={"file": ("n.jpg", number_photo(), "image/jpeg")})
        assert r.status_code == 500 and "line reader gave a non-finite probability" in r.json()["error"]
        assert c.post("/predict", files={"file": ("n.jpg", number_photo(text="1"), "image/jpeg")}).status_code == 200
