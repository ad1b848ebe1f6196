"""End to end: ``mnistkit serve`` in a subprocess, digits drawn with the mouse and photos uploaded
in headless Chromium.

Needs Playwright (Python package) and a Chromium binary (``/usr/bin/chromium`` or
``$MNISTKIT_CHROMIUM``); skips saying which is missing. Screenshots go to
``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import free_port, stop_process
from serve_helpers import ARTIFACTS, chromium_browser, wait_until_serving
from synthetic import quick_train

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, mnist_root) -> Path:
    from mnistkit.checkpoint import save_checkpoint
    from mnistkit.data.idx import read_idx
    from mnistkit.preprocess import Normalization

    raw = mnist_root / "MNIST" / "raw"
    images = read_idx(raw / "train-images-idx3-ubyte.gz")
    labels = read_idx(raw / "train-labels-idx1-ubyte.gz").long()
    norm = Normalization(0.1307, 0.3081)
    model = quick_train(
        "mlp", images, labels, norm, steps=len(images) // 128, batch_size=128, lr=1e-3
    )  # 1 epoch, ~96 %
    return save_checkpoint(
        tmp_path_factory.mktemp("browser") / "mlp.safetensors",
        model,
        {"dataset": "mnist", "norm": norm.to_dict(), "class_names": [str(i) for i in range(10)]},
    )


@pytest.fixture(scope="module")
def server(trained_checkpoint):
    """``mnistkit serve`` on a free 127.0.0.1 port; yields its base URL, stops it afterwards."""

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnistkit",
            "serve",
            str(trained_checkpoint),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(proc, base + "healthz")
        yield base
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def page(server):
    with chromium_browser() as browser:
        # bypass_csp: Playwright evaluates its wait predicates with eval(), which the page's CSP forbids.
        pg = browser.new_page(viewport={"width": 820, "height": 520}, bypass_csp=True)
        pg.requests_seen = []
        pg.on("request", lambda r: pg.requests_seen.append(r.url))
        pg.goto(server)
        pg.wait_for_selector("#chart .bar")
        yield pg


def stroke(page, points) -> None:
    """Press the mouse at the first point (canvas pixels), drag through the rest, release."""
    box = page.locator("#pad").bounding_box()
    sx, sy = box["width"] / 280, box["height"] / 280
    x0, y0 = points[0]
    page.mouse.move(box["x"] + x0 * sx, box["y"] + y0 * sy)
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * sx, box["y"] + y * sy, steps=3)
    page.mouse.up()


def one() -> list[tuple[float, float]]:
    return [(140, 40 + 10 * i) for i in range(21)]  # one vertical stroke, 200 px long


def zero() -> list[tuple[float, float]]:
    return [(140 + 55 * math.sin(t), 140 - 90 * math.cos(t)) for t in (2 * math.pi * i / 48 for i in range(50))]


def predicted(page) -> tuple[str, str]:
    """(label shown, label of the highest bar) after pressing Predict."""
    page.click("#predict")
    page.wait_for_function(
        "document.querySelector('#chart .bar.top') !== null "
        "&& document.getElementById('label').textContent !== '\\u2013'"
    )
    page.wait_for_load_state("networkidle")
    shown = page.text_content("#label")
    bars = page.eval_on_selector_all("#chart .bar", "bs => bs.map(b => [b.dataset.label, +b.dataset.p])")
    return shown, max(bars, key=lambda b: b[1])[0]


@pytest.mark.parametrize("digit,path", [("1", one), ("0", zero)])
def test_drawn_digit_is_recognised(page, server, digit, path):
    page.click("#clear")
    stroke(page, path())
    shown, top_bar = predicted(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-draw-{digit}.png"))
    assert (shown, top_bar) == (digit, digit)
    assert page.text_content("#error") == ""
    assert all(url.startswith(server) for url in page.requests_seen), page.requests_seen


def predict_requests(page) -> int:
    return sum("/predict" in url for url in page.requests_seen)


def test_prediction_waits_until_the_pen_rests(page):
    """Three quick strokes of a 4: no request between them, one request once the pen has rested."""
    page.click("#clear")
    page.wait_for_load_state("networkidle")
    before = predict_requests(page)
    stroke(page, [(110, 40 + 10 * i) for i in range(12)])  # the left arm
    stroke(page, [(110 + 8 * i, 150) for i in range(12)])  # the bar
    assert predict_requests(page) == before, "a prediction was sent between strokes"
    stroke(page, [(170, 40 + 10 * i) for i in range(21)])  # the stem
    page.wait_for_function("document.getElementById('label').textContent !== '\\u2013'", timeout=10_000)
    page.wait_for_timeout(1000)  # long enough for any further request to show up
    page.wait_for_load_state("networkidle")
    assert predict_requests(page) == before + 1
    assert page.text_content("#label") in "0123456789" and page.text_content("#error") == ""
    assert int(page.get_attribute("#preview", "data-ink")) > 0


def photo_of(digit, path: Path) -> Path:
    """An MNIST test digit as a phone might see it: dark ink on slightly tinted paper, off-centre, JPEG."""
    import numpy as np
    from PIL import Image

    ink = np.zeros((480, 640))
    ink[150:370, 300:520] = np.asarray(Image.fromarray(digit.numpy()).resize((220, 220), Image.BILINEAR)) / 255
    paper = np.array([235, 228, 212]) * (1 - 0.8 * ink[..., None])  # the pen darkens the tinted paper
    noisy = np.clip(paper + np.random.default_rng(0).integers(-6, 7, paper.shape), 0, 255)
    Image.fromarray(noisy.astype(np.uint8)).save(path, quality=85)
    return path


def test_photo_upload_shows_a_prediction_and_the_preview(page, mnist_root, tmp_path):
    from mnistkit.data.idx import read_idx

    raw = mnist_root / "MNIST" / "raw"
    images, labels = read_idx(raw / "t10k-images-idx3-ubyte.gz")[:3], read_idx(raw / "t10k-labels-idx1-ubyte.gz")[:3]
    for i, (digit, label) in enumerate(zip(images, labels)):
        page.click("#clear")
        before = predict_requests(page)
        page.set_input_files("#file" if i % 2 else "#photo", str(photo_of(digit, tmp_path / f"photo{i}.jpg")))
        page.wait_for_function("document.getElementById('label').textContent !== '\\u2013'", timeout=15_000)
        page.wait_for_load_state("networkidle")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"browser-photo-{i}.png"))
        assert predict_requests(page) == before + 1
        assert page.text_content("#error") == ""
        assert page.text_content("#label") == str(int(label))
        assert int(page.get_attribute("#preview", "data-ink")) > 20  # the 28x28 input shown has a digit in it


def test_blank_photo_is_shown_as_unsure(page, tmp_path):
    from PIL import Image

    blank = tmp_path / "blank.jpg"
    Image.new("RGB", (640, 480), (235, 228, 212)).save(blank, quality=90)
    page.click("#clear")
    page.set_input_files("#file", str(blank))
    page.wait_for_function("!document.getElementById('unsure').hidden", timeout=15_000)
    assert "unsure" in page.text_content("#unsure") and "no ink" in page.text_content("#unsure")
    assert page.get_attribute("#preview", "data-ink") == "0"
    page.click("#clear")
    assert page.is_hidden("#unsure")
