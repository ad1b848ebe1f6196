"""Helpers shared by the server's tests: a briefly trained checkpoint with a temperature and
path-laden config, drawings and PNG bytes, and the reference every answer is held to
(``checkpoint_proba`` on the same pixels). Its fixtures are registered by ``conftest.py``."""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from helpers import require_or_skip
from synthetic import quick_train

from mnistkit.checkpoint import save_checkpoint
from mnistkit.config import TrainConfig
from mnistkit.inference import checkpoint_proba
from mnistkit.preprocess import Normalization

NORM = Normalization(0.1307, 0.3081)
CLASSES = [str(i) for i in range(10)]
#: Not 1.0, so a server that forgot the calibration temperature gives other probabilities.
TEMPERATURE = 1.7
#: Where the checkpoint claims it was trained: /model must not show these.
SECRET_DIRS = ("/home/alice/secret-data", "/srv/private/runs/digits")


def mnist_digits(mnist_root, split: str, count: int):
    """The first ``count`` real MNIST digits of ``split`` (uint8 images, int64 labels)."""
    from mnistkit.data.idx import read_idx

    raw = mnist_root / "MNIST" / "raw"
    prefix = "train" if split == "train" else "t10k"
    return (
        read_idx(raw / f"{prefix}-images-idx3-ubyte.gz")[:count],
        read_idx(raw / f"{prefix}-labels-idx1-ubyte.gz")[:count].long(),
    )


def save_trained(path, mnist_root):
    """A logreg trained briefly on 20k real MNIST digits (~90 %), with a temperature and path-laden config."""
    images, labels = mnist_digits(mnist_root, "train", 20000)
    model = quick_train("logreg", images, labels, NORM, steps=300, batch_size=256, lr=3e-3)
    config = TrainConfig(data_dir=SECRET_DIRS[0], out=SECRET_DIRS[1]).to_dict()
    return save_checkpoint(
        path,
        model,
        {
            "dataset": "mnist",
            "norm": NORM.to_dict(),
            "class_names": CLASSES,
            "temperature": TEMPERATURE,
            "config": config,
        },
    )


def png_bytes(img, **kw) -> bytes:
    """A PIL image as PNG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def drawing():
    """Black ink on white, as the page's canvas sends it: a zero."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(img).ellipse((90, 50, 190, 230), outline="black", width=18)
    return img


def expected(ckpt, digit: np.ndarray) -> dict:
    """What the library says for these 28x28 pixels: the reference every response is held to."""
    proba = checkpoint_proba(ckpt, torch.from_numpy(np.ascontiguousarray(digit, np.uint8)).unsqueeze(0))[0]
    return {name: float(p) for name, p in zip(ckpt.class_names, proba)}


def assert_matches_library(r, ckpt, digit: np.ndarray | None = None) -> dict:
    """200, and probabilities equal to ``checkpoint_proba`` on the preview (or on ``digit``) to 1e-6."""
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) <= {"label", "probability", "probabilities", "unsure", "reason", "preview"}
    seen = np.array(body["preview"], np.uint8) if "preview" in body else digit
    if digit is not None:
        assert np.array_equal(seen, digit)
    want = expected(ckpt, seen)
    assert list(body["probabilities"]) == CLASSES
    assert all(abs(body["probabilities"][k] - want[k]) <= 1e-6 for k in CLASSES), (body["probabilities"], want)
    assert body["label"] == max(want, key=want.get)
    assert body["probability"] == body["probabilities"][body["label"]]
    assert isinstance(body["unsure"], bool) and ("reason" in body) == body["unsure"]
    return body


# --------------------------------------------------------------------------- a real server and a browser

#: The server's --request-timeout in the real-server tests: short, so the slow-client tests take seconds.
TIMEOUT_S = 1.0
#: Where browser tests leave their screenshots.
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("MNISTKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def served_run(tmp_path_factory, mnist_root) -> Path:
    """A run directory holding a trained model, served with ``--model RUN_DIR``."""
    folder = tmp_path_factory.mktemp("run")
    save_trained(folder / "model.safetensors", mnist_root)
    return folder


@pytest.fixture(scope="module")
def served_ckpt(served_run):
    """The checkpoint of :func:`served_run`, loaded: the reference for the server's answers."""
    from mnistkit.checkpoint import load_checkpoint

    return load_checkpoint(served_run / "model.safetensors")


def wait_until_serving(proc, healthz: str, timeout: float = 60.0) -> None:
    """Poll ``healthz`` until it answers 200; fail the test when the server exits first or never answers."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mnistkit serve exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(healthz, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"mnistkit serve did not answer /healthz within {timeout:.0f} s")
        time.sleep(0.3)


@contextlib.contextmanager
def chromium_browser():
    """Debian's Chromium driven by Playwright (the test is skipped, or fails under CI, without them)."""
    try:
        import playwright.sync_api as playwright_api
    except ImportError:
        require_or_skip("the playwright package is not installed")
    if not Path(CHROMIUM).is_file():
        require_or_skip(f"no Chromium at {CHROMIUM} (set MNISTKIT_CHROMIUM)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
