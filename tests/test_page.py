"""The served pages in headless Chromium with no network: ``/docs`` (Swagger UI from the package)
and the drawing page's controls at a desktop width.

Needs Playwright and a Chromium binary (``/usr/bin/chromium`` or ``$MNISTKIT_CHROMIUM``), as
tests/test_browser_draw.py; the server runs the bundled model, so no training is needed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import free_port, stop_process
from serve_helpers import chromium_browser, wait_until_serving

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def base_url():
    """``mnistkit serve`` (bundled model) on a free 127.0.0.1 port; yields its base URL."""

    port = free_port()
    command = [sys.executable, "-m", "mnistkit", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, base + "/healthz")
        yield base
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


def offline_page(browser, base_url, width: int):
    """A page whose requests to anywhere but the server are refused (and listed in ``page.outside``)."""
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.outside = []

    def only_the_server(route):
        if route.request.url.startswith(base_url + "/"):
            route.continue_()
        else:
            page.outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    return page


def test_docs_render_the_operations_with_no_network(browser, base_url):
    page = offline_page(browser, base_url, 1200)
    try:
        page.goto(base_url + "/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=20_000)
        paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent.trim())")
        assert {"/predict", "/healthz", "/model"} <= set(paths), paths
        assert page.outside == []  # nothing was asked of a CDN
    finally:
        page.close()


def test_the_file_button_is_on_the_line_of_its_neighbours_at_1200_px(browser, base_url):
    page = offline_page(browser, base_url, 1200)
    try:
        page.goto(base_url + "/")
        boxes = {
            name: page.locator(selector).bounding_box()
            for name, selector in {
                "clear": "#clear",
                "predict": "#predict",
                "photo": "label.file:has(#photo)",
                "file": "label.file:has(#file)",
            }.items()
        }
        tops = {name: round(box["y"]) for name, box in boxes.items()}
        assert len(set(tops.values())) == 1, f"the buttons are on more than one line: {tops}"
        photo, file = boxes["photo"], boxes["file"]
        assert file["x"] >= photo["x"] + photo["width"], (photo, file)  # beside Photo..., not over it
        assert page.outside == []
    finally:
        page.close()
