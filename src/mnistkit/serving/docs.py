"""``GET /docs``: FastAPI's Swagger UI page, with its script, style and icon served by this app.

FastAPI's own ``/docs`` loads Swagger UI from a CDN, so offline (or behind a firewall) it is a
blank page. Here the files ship in the package (``static/swagger-ui/``, Apache 2.0, copied
unchanged from ``swagger-ui-dist``) and are served under :data:`ASSETS_PATH`, read once.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

DOCS_PATH = "/docs"
#: where the page's files are served from (the app's own, so the page needs no network)
ASSETS_PATH = "/docs-assets"
#: the version of swagger-ui-dist copied into static/swagger-ui/ (its README says how to update)
SWAGGER_UI_VERSION = "5.36.0"
#: file name -> content type: the only files served under ASSETS_PATH
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
#: a day: the files change only with the package
CACHE_CONTROL = "public, max-age=86400"


@cache
def asset(name: str) -> bytes:
    """One of :data:`ASSETS`, read from the package on first use."""
    return resources.files("mnistkit.serving").joinpath("static/swagger-ui", name).read_bytes()


def add_docs(app: FastAPI) -> None:
    """Register ``/docs`` and its files on ``app`` (built with ``docs_url=None``, so FastAPI adds
    no CDN page of its own)."""

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js?v={SWAGGER_UI_VERSION}",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css?v={SWAGGER_UI_VERSION}",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        )

    @app.get(ASSETS_PATH + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        if name not in ASSETS:
            return Response(status_code=404)
        return Response(asset(name), media_type=ASSETS[name], headers={"Cache-Control": CACHE_CONTROL})
