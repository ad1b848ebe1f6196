"""``/docs`` works offline: every script, style and icon it names is served by the app itself."""

from __future__ import annotations

import re

import pytest


@pytest.fixture(scope="module")
def client():
    from fastapi.testclient import TestClient

    from mnistkit.serving.app import create_app

    with TestClient(create_app()) as c:  # the bundled model
        yield c


def test_every_url_the_docs_page_loads_is_served_by_the_app(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    urls += re.findall(r"""url:\s*["']([^"']+)["']""", page.text)  # the OpenAPI document SwaggerUIBundle reads
    kinds = {}
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"/docs loads {url} from elsewhere"
        answer = client.get(url)
        assert answer.status_code == 200, url
        kinds[url.split("?")[0].rsplit(".", 1)[-1]] = answer.headers["content-type"].split(";")[0]
    assert kinds == {"js": "text/javascript", "css": "text/css", "png": "image/png", "json": "application/json"}


def test_only_the_docs_files_are_served_under_their_path(client):
    from mnistkit.serving.docs import ASSETS_PATH

    assert client.get(f"{ASSETS_PATH}/index.html").status_code == 404
    assert client.get(f"{ASSETS_PATH}/..%2Fstatic%2Findex.html").status_code == 404
    assert client.get(f"{ASSETS_PATH}/swagger-ui.css").headers["cache-control"].startswith("public")
